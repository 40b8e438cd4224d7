#!/usr/bin/env bash
# serve-eval.sh - the shared task evals (tests/data/evals) through the HTTP
# server on a given device, with many concurrent requests so that rows of
# the three adapters and of the base model share batches. Only bash and curl:
# it runs on the GPU machine, which has no node. Passes when every adapter
# answers >= MIN_PCT percent of its prompts exactly.
#   usage: bench/gpu/serve-eval.sh LORAPLEX_BIN [DEVICE] [MIN_PCT]
set -u
BIN=${1:?usage: serve-eval.sh LORAPLEX_BIN [DEVICE] [MIN_PCT]}
DEVICE=${2:-cuda}
MIN_PCT=${3:-97}
PORT=${PORT:-18123}
CONC=${CONC:-24}
root=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'kill $srv 2>/dev/null; wait $srv 2>/dev/null; rm -rf "$work"' EXIT

"$BIN" serve --model "$root/models/tinylm" --lora-dir "$root/models/tinylm-adapters" --device "$DEVICE" \
    --port "$PORT" --max-loras 2 --max-cpu-loras 4 --max-num-seqs 32 >"$work/server.log" 2>&1 &
srv=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/health" >/dev/null || { echo "server did not start:"; cat "$work/server.log"; exit 1; }

# one request line per prompt: adapter <TAB> JSON-escaped prompt <TAB> JSON-escaped expected
n=0
for f in "$root"/tests/data/evals/tinylm-*-shared.jsonl; do
    while IFS= read -r line; do
        ad=$(sed -E 's/.*"adapter": "([^"]*)".*/\1/' <<<"$line")
        pr=$(sed -E 's/.*"prompt": "(([^"\\]|\\.)*)".*/\1/' <<<"$line")
        ex=$(sed -E 's/.*"expected": "(([^"\\]|\\.)*)".*/\1/' <<<"$line")
        printf '%s\t%s\t%s\t%d\n' "$ad" "$pr" "$ex" "$n"
        n=$((n + 1))
    done <"$f"
done | shuf --random-source=<(yes) >"$work/reqs"

ask() { # adapter prompt expected idx
    local body out got
    body=$(printf '{"model":"%s","prompt":"%s","max_tokens":24,"temperature":0}' "$1" "$2")
    out=$(curl -s -m 60 "http://127.0.0.1:$PORT/v1/completions" -H 'Content-Type: application/json' -d "$body")
    got=$(sed -E 's/.*"text": ?"(([^"\\]|\\.)*)".*/\1/' <<<"$out")
    if [ "$got" = "$3" ]; then echo "$1 ok"; else echo "$1 FAIL $4 want[$3] got[$got]"; fi
}
export -f ask
export PORT
t0=$(date +%s.%N)
tr '\t' '\037' <"$work/reqs" | xargs -P "$CONC" -d '\n' -I{} bash -c 'IFS=$'"'"'\037'"'"' read -r a p e i <<<"{}"; ask "$a" "$p" "$e" "$i"' >"$work/results"
t1=$(date +%s.%N)
grep FAIL "$work/results" | head -5
fail=0
for ad in math reverse sort; do
    tot=$(grep -c "^$ad " "$work/results")
    ok=$(grep -c "^$ad ok" "$work/results")
    pct=$(( tot ? ok * 100 / tot : 0 ))
    echo "serve-eval device=$DEVICE adapter=$ad correct=$ok/$tot (${pct}%)"
    [ "$tot" -gt 0 ] && [ "$pct" -ge "$MIN_PCT" ] || fail=1
done
grep -E "cuda backend|device" "$work/server.log" | head -3
echo "serve-eval: $(wc -l <"$work/results") requests, concurrency $CONC, $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') s"
[ $fail = 0 ] && echo "serve-eval: PASS" || echo "serve-eval: FAIL"
exit $fail
