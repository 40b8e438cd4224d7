#!/usr/bin/env bash
# run.sh - quick start, command 1: install what is missing, build, and run the
# main job: the server on the bundled demo model and adapters
# (127.0.0.1:8000; extra arguments go to `loraplex serve`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
exec build/loraplex serve "$@"
