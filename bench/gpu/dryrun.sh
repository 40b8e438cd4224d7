#!/usr/bin/env bash
# dryrun.sh - runs bench/gpu/run.sh HERE, without a GPU, on the emulated
# device of tests/cuemu/ (the Release build's loraplex_cuemu, gpu_bench_cuemu,
# test_cuda_emu and bench_lora_kernels_cuemu stand in for the CUDA binaries),
# with tiny shapes: every stage's flow, the synthesis, the JSON and the
# summary tables are checked before a GPU session spends its minutes on them.
# Timings mean nothing. The reference and profile stages need torch and ncu
# (skipped here), eval-engine a test_task_eval built for CUDA (not run).
# About 5 minutes on 2 cores.
#   bench/gpu/dryrun.sh [BUILD_DIR]    (default build; OUT defaults to /tmp/loraplex-dryrun-out)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
for b in loraplex_cuemu gpu_bench_cuemu test_cuda_emu bench_lora_kernels_cuemu; do
    [ -x "$build/tests/$b" ] || { echo "dryrun: no $build/tests/$b: build the tests first (test.sh)"; exit 1; }
done
tree=$(mktemp -d /tmp/loraplex-dryrun.XXXXXX)
trap 'rm -rf "$tree"' EXIT
(cd "$root" && git ls-files | tar cf - -T -) | (cd "$tree" && tar xf -)
mkdir -p "$tree/.devcarry/bin"
ln -s "$build/tests/loraplex_cuemu" "$tree/.devcarry/bin/loraplex"
ln -s "$build/tests/gpu_bench_cuemu" "$tree/.devcarry/bin/gpu_bench"
ln -s "$build/tests/test_cuda_emu" "$tree/.devcarry/bin/test_cuda"
ln -s "$build/tests/bench_lora_kernels_cuemu" "$tree/.devcarry/bin/bench_lora_kernels"
[ -x "$build/tests/test_conform_llama" ] && ln -s "$build/tests/test_conform_llama" "$tree/.devcarry/bin/"
export OMP_WAIT_POLICY=PASSIVE CUEMU_MEM_MB=${CUEMU_MEM_MB:-4096}
OUT=${OUT:-/tmp/loraplex-dryrun-out} PRESET=tiny MODEL_DIR=$tree/model BATCHES=1,4 ISL=40 OSL=8 STEPS=2 WARMUP=1 \
    N_ADAPTERS=3 MIXED_RANKS="8 16" TRIALS=2 SYNTH_JOBS=2 BUDGET=${BUDGET:-400} \
    TEST_CUDA_ARGS="--quick tests/data/conform/llama" \
    KERNELS_ARGS="--in 512 --out 768 --batches 1,5,32 --iters 2 --warmup 1 --copy-mib 16" \
    STAGES=env,synth,test,eval,machine,decode,hostlogits,nographs,attn,ttft,kernels,gemmex \
    bash "$tree/bench/gpu/run.sh"
