#!/usr/bin/env bash
# run.sh - quick start, command 1: install what is missing, build, and run the
# main job on the bundled demo model and adapters.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
echo "== base model (models/tinylm)"
build/loraplex generate --prompt "The computer" --max-tokens 40
for a in math reverse sort; do
  case $a in
    math) p=$'Q: What is 153 + 612?\nA:' ;;
    reverse) p=$'Reverse the letters: s t o n e\nAnswer:' ;;
    sort) p=$'Sort: 9 1 3 3\nSorted:' ;;
  esac
  echo "== adapter $a: $(printf '%q' "$p")"
  build/loraplex generate --lora "models/tinylm-adapters/$a" --prompt "$p" --max-tokens 16
done
