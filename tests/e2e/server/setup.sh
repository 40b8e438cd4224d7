#!/usr/bin/env bash
# setup.sh DIR - install the e2e test clients (the official openai npm package)
# into DIR/node_modules, once.
set -euo pipefail
dir=$1
src=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
if [ -f "$dir/node_modules/openai/package.json" ] && cmp -s "$src/package.json" "$dir/package.json"; then
  exit 0
fi
cp "$src/package.json" "$dir/package.json"
cd "$dir"
npm install --no-audit --no-fund --loglevel=error >/dev/null
test -f node_modules/openai/package.json
