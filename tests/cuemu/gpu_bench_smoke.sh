#!/usr/bin/env bash
# gpu_bench_smoke.sh - runs every mode of bench/gpu_bench.c, built against the
# emulated device (gpu_bench_cuemu), on a tiny synthetic model with adapters of
# mixed ranks: the benchmark driver of bench/gpu/run.sh runs end to end (its
# sample_check compares GPU sampling with the host's), so a GPU session does
# not spend its minutes on a driver bug. Timings here mean nothing. CTest runs
# it with CUEMU_MEM_MB=1024 (a small emulated device, so the copy-bandwidth
# buffer is small) and GPU_BENCH_FREE_GIB=2 (so decode's memory plan, which
# keeps 1.5 GiB aside, still takes the batches).
#   usage: gpu_bench_smoke.sh LORAPLEX_BIN GPU_BENCH_BIN
set -euo pipefail
lp=${1:?usage: gpu_bench_smoke.sh LORAPLEX_BIN GPU_BENCH_BIN}
gb=${2:?usage: gpu_bench_smoke.sh LORAPLEX_BIN GPU_BENCH_BIN}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$lp" synth --preset tiny --layers 2 --out "$work/m" >/dev/null
ads=""
for r in 4 16 32; do
    "$lp" synth --adapter --model "$work/m" --out "$work/a$r" --rank "$r" --seed "$r" >/dev/null
    ads=${ads:+$ads,}$work/a$r
done

fail=0
check() { # NAME FILE PATTERN MIN: at least MIN lines of FILE match PATTERN
    local n
    n=$(grep -c -- "$3" "$2" || true)
    if [ "$n" -ge "$4" ]; then
        echo "ok   $1 ($n lines)"
    else
        echo "FAIL $1: $n lines match '$3', want >= $4"
        sed 's/^/  /' "$2" | tail -n 20
        fail=1
    fi
}
run() { # NAME ARGS...: gpu_bench ARGS, stdout to NAME.jsonl, stderr shown on failure
    local name=$1
    shift
    local rc=0
    "$gb" "$@" >"$work/$name.jsonl" 2>"$work/$name.err" || rc=$?
    if [ $rc -ne 0 ]; then
        echo "FAIL $name: gpu_bench $* exited $rc"
        sed 's/^/  /' "$work/$name.err" | tail -n 20
        fail=1
    fi
}

run machine machine
check machine "$work/machine.jsonl" '"what":"machine"' 1

run decode decode "$work/m" --batch 1,4 --isl 40 --osl 8 --steps 2 --warmup 1 --adapters "$ads" \
    --mode base,one,distinct:2,distinct:0-2
check sample_check "$work/decode.jsonl" '"what":"sample_check".*"mismatches":0[,}]' 1
check prefill "$work/decode.jsonl" '"what":"prefill"' 1
check decode "$work/decode.jsonl" '"what":"decode"' 8

run hostlogits decode "$work/m" --batch 2 --isl 20 --osl 4 --steps 2 --warmup 0 --mode base --sample host
check hostlogits "$work/hostlogits.jsonl" '"what":"decode".*"sample":"host"' 1

run ttft ttft "$work/m" --adapters "$ads" --isl 24 --trials 3
check ttft "$work/ttft.jsonl" '"what":"ttft"' 1

exit $fail
