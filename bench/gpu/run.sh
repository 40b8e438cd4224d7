#!/usr/bin/env bash
# run.sh - every GPU measurement in one call on the device machine (a bare
# CUDA machine: nvcc, the CUDA libraries and python3 with torch, none of our
# Debian packages). Build HERE first with bench/gpu/prepare.sh (it packs the
# binaries and the libraries they need into .devcarry/), then on the device,
# from the repository root, with .devcarry carried (the device tool: command
# "bench/gpu/run.sh", carry [".devcarry"], timeout_s 600; it sets OUT):
#
#   OUT=... bench/gpu/run.sh
#
# bench/gpu/env.sh (sourced here) unpacks .devcarry and sets LD_LIBRARY_PATH.
# The defaults take about 7-9 minutes (BUDGET caps them): most of it the 16 GB model's synthesis,
# two uploads of it, and one prefill of 256 x 1000 tokens.
#
# Stages, each under `timeout`, each one's output appended to $OUT/logs.txt; a
# failed stage does not stop the next:
#   env      GPU, driver, glibc; the carried libraries the system lacks are put
#            on LD_LIBRARY_PATH (through a folder of symlinks), with the CUDA
#            library folder (libcublas.so.13)
#   synth    (in the background from the start) a random-weight $PRESET model,
#            $N_ADAPTERS rank-16 adapters on all 7 projections, and one adapter
#            per rank in $MIXED_RANKS
#   test     test_cuda on the conformance fixtures
#   reference  Qwen3 and Mistral conformance fixtures made by torch +
#            transformers + PEFT (tests/tools/make_conform.py), checked at once
#            with test_conform (CPU backend) and test_cuda; they come back as
#            $OUT/conform.tar.gz, to unpack into tests/data/conform/ and commit
#   eval     the task evals on the GPU: test_task_eval (engine, mixed batches)
#            and bench/gpu/serve-eval.sh (HTTP server, 24 concurrent clients)
#   machine  gpu_bench machine: device, SMs, copy bandwidth
#   decode   gpu_bench decode, one process: base, one adapter, 8 and
#            $N_ADAPTERS distinct adapters, the mixed ranks, at $BATCHES
#            (each step: forward + greedy sampling on the GPU; first a
#            sample_check of GPU sampling against the host on real logits)
#   hostlogits gpu_bench decode, base, with --sample host: every step copies
#            all logits to the host (the path before GPU sampling), to compare
#   nographs gpu_bench decode at batch 1 with LORAPLEX_CUDA_GRAPHS=0
#   attn     gpu_bench decode, base, at batches 1, 4, 16 with each attention
#            kernel forced (LORAPLEX_CUDA_ATTN=few, =tile), against the
#            default choice in the decode stage
#   profile  decode steps at batch 1 and 32 (base, one adapter) under ncu: GPU time per kernel
#            (caches kept warm and clocks not locked, as in a served step)
#   sanitize (only when named in STAGES) test_cuda --quick on the llama fixture under compute-sanitizer
#   ttft     gpu_bench ttft: cold (staged / unstaged) vs warm adapter time to first token
#   kernels  bench_lora_kernels, when it was built
#   gemmex   (last: with the time left) gpu_bench decode, base and one
#            adapter, with LORAPLEX_CUDA_GEMM=ex: cublasGemmEx instead of
#            the cuBLASLt plans, against the decode stage
# Files under $OUT (the device tool brings back at most 8): results.jsonl (every
# JSON line of gpu_bench), logs.txt (every stage's output), summary.txt (the
# table printed last), conform.tar.gz (stage reference).
#
# Knobs (environment): BUDGET=510 (seconds for everything; later stages get what
# is left), STAGES=env,synth,test,reference,eval,machine,decode,hostlogits,
# nographs,attn,profile,ttft,kernels,gemmex (and sanitize), PRESET=llama3-8b,
# MODEL_DIR=/tmp/l3 (reused when already complete), BATCHES=1,32,128,256,
# ISL=1000, OSL=200, STEPS=64, WARMUP=2, N_ADAPTERS=32, MIXED_RANKS="8 16 32 64",
# MODES (default base,one,distinct:8,distinct:N,distinct:N-(N+3)), TRIALS=10,
# TEST_CUDA_ARGS (default: the ARGS of test_cuda in tests/unit/backend/tests.cmake),
# BENCH_DEVICE=cuda (cpu runs decode and ttft on the CPU backend: a check of
# this script on a machine without a GPU), KERNELS_ARGS (bench_lora_kernels'
# options; default none: its Llama-3-8B q_proj at batches 1-256).
# bench/gpu/dryrun.sh runs this script here on the emulated device (tests/cuemu).
# A smoke run: BATCHES=1,32 STEPS=8 TRIALS=3 N_ADAPTERS=8 PRESET=1b bench/gpu/run.sh
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
root=$(pwd)
t_start=$(date +%s)

OUT=${OUT:-/tmp/loraplex-gpu-out}
BUDGET=${BUDGET:-510}
STAGES=${STAGES:-env,synth,test,reference,eval,machine,decode,hostlogits,nographs,attn,profile,ttft,kernels,gemmex}
PRESET=${PRESET:-llama3-8b}
MODEL_DIR=${MODEL_DIR:-/tmp/l3}
ADAPTER_ROOT=${ADAPTER_ROOT:-$MODEL_DIR-adapters}
BATCHES=${BATCHES:-1,32,128,256}
ISL=${ISL:-1000}
OSL=${OSL:-200}
STEPS=${STEPS:-64}
WARMUP=${WARMUP:-2}
N_ADAPTERS=${N_ADAPTERS:-32}
MIXED_RANKS=${MIXED_RANKS:-8 16 32 64}
TRIALS=${TRIALS:-10}
SYNTH_JOBS=${SYNTH_JOBS:-8}
BENCH_DEVICE=${BENCH_DEVICE:-cuda} # cpu: check this script's flow on a machine without a GPU
n_mixed=$(wc -w <<<"$MIXED_RANKS")
if [ -z "${MODES:-}" ] && [ "$N_ADAPTERS" -lt 1 ]; then
  MODES=base
  [ "$n_mixed" -gt 0 ] && MODES+=,distinct
elif [ -z "${MODES:-}" ]; then
  MODES=base,one
  [ "$N_ADAPTERS" -gt 8 ] && MODES+=,distinct:8
  [ "$N_ADAPTERS" -gt 1 ] && MODES+=,distinct:$N_ADAPTERS
  [ "$n_mixed" -gt 0 ] && MODES+=,distinct:$N_ADAPTERS-$((N_ADAPTERS + n_mixed - 1))
fi

tmp=/tmp/loraplex-gpu-run
rm -rf "$tmp"
mkdir -p "$OUT" "$tmp"
: >"$OUT/logs.txt"
: >"$OUT/results.jsonl"

want() { [[ ",$STAGES," == *",$1,"* ]]; }
elapsed() { echo $(($(date +%s) - t_start)); }
left() { echo $((BUDGET - $(elapsed))); }
say() { echo "[$(printf '%3d' "$(elapsed)")s] $*"; }

summary=()
note() { summary+=("$(printf '%-8s %-30s %s' "$1" "$2" "$3")"); }

# stage NAME LIMIT_S KIND CMD...: run CMD under timeout with at most LIMIT_S
# seconds (less when the budget has less left). KIND json: stdout is JSON
# lines, appended to results.jsonl; stderr to logs.txt. KIND log: both to
# logs.txt. Prints the stage's stderr (json) or its last lines (log).
stage() {
  local name=$1 limit=$2 kind=$3
  shift 3
  local rest
  rest=$(($(left) - 5))
  [ "$rest" -lt "$limit" ] && limit=$rest
  if [ "$limit" -lt 10 ]; then
    say "$name: SKIPPED (out of time)"
    note "$name" "skipped (out of time)" ""
    return 0
  fi
  local off t0 rc
  off=$(stat -c %s "$OUT/logs.txt")
  t0=$(date +%s)
  echo "==== $name (limit ${limit}s): $*" >>"$OUT/logs.txt"
  say "$name: start (limit ${limit}s)"
  if [ "$kind" = json ]; then
    timeout -k 10 "$limit" "$@" >>"$OUT/results.jsonl" 2>>"$OUT/logs.txt"
  else
    timeout -k 10 "$limit" "$@" >>"$OUT/logs.txt" 2>&1
  fi
  rc=$?
  local dt=$(($(date +%s) - t0)) status=ok
  [ $rc -ne 0 ] && status="FAILED rc=$rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT after ${limit}s"
  [ $rc -eq 77 ] && status="skipped (rc 77: no device)"
  echo "==== $name: $status in ${dt}s" >>"$OUT/logs.txt"
  tail -c +"$((off + 1))" "$OUT/logs.txt" >"$tmp/$name.log"
  if [ "$kind" = json ] || [ $rc -ne 0 ]; then
    grep -v '^====' "$tmp/$name.log" | tail -n 40 | sed 's/^/  /'
  else
    grep -v '^====' "$tmp/$name.log" | tail -n "${SHOW:-6}" | sed 's/^/  /'
  fi
  say "$name: $status in ${dt}s"
  note "$name" "$status" "${dt}s"
  return $rc
}

# ---- env: the GPU, and the libraries the carried binaries need ----
if want env; then
  {
    echo "==== env"
    date -u +%Y-%m-%dT%H:%M:%SZ
    uname -a
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1
    nvcc --version 2>&1 | tail -n 1
    ldd --version 2>&1 | head -n 1
    nproc
    free -g | head -n 2
  } >>"$OUT/logs.txt" 2>&1
  if command -v nvidia-smi >/dev/null; then
    say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -n 1)"
  else
    say "gpu: no nvidia-smi on this machine"
  fi
fi
# unpacks .devcarry/devcarry.tar.gz, sets LD_LIBRARY_PATH and LP_BIN
# shellcheck source=bench/gpu/env.sh
export LP_LIBSHIM=$tmp/libshim
. bench/gpu/env.sh >"$tmp/env.out" 2>&1
sed 's/^/  /' "$tmp/env.out"
bin=${LP_BIN:-$root/.devcarry/bin}
if [ ! -x "$bin/loraplex" ] || [ ! -x "$bin/gpu_bench" ]; then
  say "ERROR: no $bin/loraplex or gpu_bench: run bench/gpu/prepare.sh on the build machine and carry .devcarry"
fi
{ echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; echo "carried: ${LP_CARRIED:-}"; echo "${LP_UNRESOLVED:-}"; } >>"$OUT/logs.txt"
if want env; then
  note env "$([ "${LP_ENV_OK:-0}" = 1 ] && echo ok || echo 'FAILED (libraries)')" "${LP_CARRIED:+carried: $LP_CARRIED}"
fi

# ---- synth (background: CPU work beside the GPU stages that need no model) ----
export MODEL_DIR ADAPTER_ROOT PRESET N_ADAPTERS MIXED_RANKS SYNTH_JOBS bin
synth_all() {
  set -e
  t=$(date +%s)
  if [ -e "$MODEL_DIR/config.json" ] && ls "$MODEL_DIR"/*.safetensors >/dev/null 2>&1 &&
    { [ -e "$MODEL_DIR/model.safetensors.index.json" ] || [ -e "$MODEL_DIR/model.safetensors" ]; }; then
    echo "reusing $MODEL_DIR"
  else
    rm -rf "$MODEL_DIR"
    "$bin/loraplex" synth --preset "$PRESET" --out "$MODEL_DIR"
    echo "model: $(du -sh "$MODEL_DIR" | cut -f1) in $(($(date +%s) - t)) s"
  fi
  t=$(date +%s)
  mkdir -p "$ADAPTER_ROOT"
  {
    for i in $(seq 1 "$N_ADAPTERS"); do echo "r16-$(printf %02d "$i") 16 $i"; done
    for r in $MIXED_RANKS; do echo "mixed-r$r $r $((1000 + r))"; done
  } | xargs -P "$SYNTH_JOBS" -n 3 sh -c '
    d="$ADAPTER_ROOT/$0"
    [ -e "$d/adapter_config.json" ] && exit 0
    rm -rf "$d"
    OMP_NUM_THREADS=2 "$bin/loraplex" synth --adapter --model "$MODEL_DIR" --out "$d" --rank "$1" \
      --targets q,k,v,o,gate,up,down --seed "$2" >/dev/null'
  echo "adapters: $(ls "$ADAPTER_ROOT" | wc -l) in $(($(date +%s) - t)) s ($(du -sh "$ADAPTER_ROOT" | cut -f1))"
}
export -f synth_all
synth_pid=""
if want synth; then
  synth_limit=$(($(left) - 60))
  [ "$synth_limit" -gt 300 ] && synth_limit=300
  say "synth: start in the background (limit ${synth_limit}s): $PRESET -> $MODEL_DIR, $N_ADAPTERS + $n_mixed adapters"
  synth_t0=$(date +%s)
  (OMP_NUM_THREADS=12 timeout -k 10 "$synth_limit" bash -c synth_all >"$tmp/synth.out" 2>&1) &
  synth_pid=$!
fi

# ---- test ----
if want test; then
  targs=${TEST_CUDA_ARGS:-}
  if [ -z "$targs" ] && [ -e tests/unit/backend/tests.cmake ]; then
    targs=$(awk '/lp_add_unit_test\(test_cuda/ {on = 1} on && /^[ \t]*ARGS/ {sub(/^[ \t]*ARGS[ \t]*/, ""); print; exit}
                 on && /\)[ \t]*$/ {on = 0}' tests/unit/backend/tests.cmake | sed 's#\${LP_TEST_DATA}#tests/data#g')
  fi
  targs=${targs:-tests/data/conform/llama tests/data/conform/qwen2}
  if [ -x "$bin/test_cuda" ]; then
    # shellcheck disable=SC2086
    stage test 200 log "$bin/test_cuda" $targs
  else
    say "test: SKIPPED (no .devcarry/bin/test_cuda)"
    note test "skipped (not built)" ""
  fi
fi

# ---- reference: fixtures for the families the shared ones lack, made by the
# reference stack this machine has (no torch where we build) ----
if want reference; then
  if python3 -c 'import torch, transformers, peft, safetensors' 2>/dev/null; then
    for fam in qwen3 mistral; do
      rm -rf "$OUT/conform/$fam"
      stage "ref-$fam" 90 log python3 tests/tools/make_conform.py "$fam" "$OUT/conform/$fam"
      if [ -x "$bin/test_conform_llama" ]; then
        stage "conform-$fam" 30 log "$bin/test_conform_llama" "$OUT/conform/$fam"
      fi
    done
    if [ -x "$bin/test_cuda" ]; then
      stage test-ref 90 log "$bin/test_cuda" "$OUT/conform/qwen3" "$OUT/conform/mistral"
    fi
    (cd "$OUT" && tar czf conform.tar.gz conform && rm -rf conform)
  else
    say "reference: SKIPPED (no torch, transformers, peft and safetensors for python3)"
    note reference "skipped (no torch/transformers/peft)" ""
  fi
fi

# ---- eval: the task evals in mixed batches on the GPU, through the engine
# (test_task_eval) and through the HTTP server (serve-eval.sh) ----
if want eval; then
  if [ -x "$bin/test_task_eval" ]; then
    LORAPLEX_TEST_DEVICE=cuda stage eval-engine 120 log "$bin/test_task_eval" models tests/data/evals
  fi
  stage eval-server 150 log bench/gpu/serve-eval.sh "$bin/loraplex" cuda 97
fi

# ---- sanitize (not in the default STAGES): test_cuda on one fixture under
# compute-sanitizer memcheck ----
if want sanitize; then
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$CS" ] && [ -x "$bin/test_cuda" ]; then
    stage sanitize 240 log "$CS" --tool memcheck --error-exitcode 1 "$bin/test_cuda" --quick tests/data/conform/llama
  else
    note sanitize "skipped (no compute-sanitizer or test_cuda)" ""
  fi
fi

# ---- machine ----
if want machine; then
  stage machine 60 json "$bin/gpu_bench" machine
fi

# ---- wait for synth ----
if [ -n "$synth_pid" ]; then
  say "synth: waiting"
  wait "$synth_pid"
  rc=$?
  dt=$(($(date +%s) - synth_t0))
  { echo "==== synth (background)"; cat "$tmp/synth.out"; echo "==== synth: rc=$rc in ${dt}s"; } >>"$OUT/logs.txt"
  tail -n 4 "$tmp/synth.out" | sed 's/^/  /'
  status=ok
  [ $rc -ne 0 ] && status="FAILED rc=$rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="TIMEOUT after ${synth_limit}s"
  say "synth: $status in ${dt}s"
  note synth "$status" "${dt}s"
fi

r16=$(ls -d "$ADAPTER_ROOT"/r16-* 2>/dev/null | sort | head -n "$N_ADAPTERS" | paste -sd, -)
mixed=""
for r in $MIXED_RANKS; do mixed=${mixed:+$mixed,}$ADAPTER_ROOT/mixed-r$r; done
all_ads=${r16}${mixed:+,$mixed}

# ---- decode: every mode in one process (one upload, one prefill) ----
if want decode; then
  if [ -e "$MODEL_DIR/config.json" ]; then
    # leave ttft and kernels about 100 s (a third, on a small budget)
    l=$(left)
    r=$((l / 3 < 100 ? l / 3 : 100))
    dl=$((l - r))
    [ "$dl" -gt 330 ] && dl=330
    stage decode "$dl" json "$bin/gpu_bench" decode "$MODEL_DIR" --batch "$BATCHES" --isl "$ISL" --osl "$OSL" \
      --steps "$STEPS" --warmup "$WARMUP" ${all_ads:+--adapters "$all_ads"} --mode "$MODES" --device "$BENCH_DEVICE"
  else
    say "decode: SKIPPED (no model at $MODEL_DIR)"
    note decode "skipped (no model)" ""
  fi
fi

# ---- hostlogits: base decode with every row's logits copied to the host ----
if want hostlogits && [ -e "$MODEL_DIR/config.json" ]; then
  stage hostlogits 90 json "$bin/gpu_bench" decode "$MODEL_DIR" --batch "$BATCHES" --isl "$ISL" --osl "$OSL" \
    --steps "$STEPS" --warmup "$WARMUP" --mode base --sample host --device "$BENCH_DEVICE"
fi

# ---- nographs: batch-1 decode again with CUDA graphs off, for the launch
# overhead they remove ----
if want nographs && [ -e "$MODEL_DIR/config.json" ]; then
  LORAPLEX_CUDA_GRAPHS=0 stage nographs 60 json "$bin/gpu_bench" decode "$MODEL_DIR" --batch 1 --isl "$ISL" \
    --osl "$OSL" --steps "$STEPS" --warmup "$WARMUP" ${all_ads:+--adapters "${all_ads%%,*}"} --mode base,one \
    --device "$BENCH_DEVICE"
fi

# ---- attn: the two attention kernels forced, at the batches where the
# default switches between them (tokens x KV heads < SMs: the few-token one) ----
if want attn && [ -e "$MODEL_DIR/config.json" ]; then
  for k in few tile; do
    LORAPLEX_CUDA_ATTN=$k stage "attn-$k" 90 json "$bin/gpu_bench" decode "$MODEL_DIR" --batch 1,4,16 \
      --isl "$ISL" --osl "$OSL" --steps "$STEPS" --warmup "$WARMUP" --mode base --device "$BENCH_DEVICE"
  done
fi

# ---- profile: one batch-1 decode step under Nsight Compute (graphs off so
# each kernel is its own launch): GPU time per kernel name, summed ----
if want profile && [ -e "$MODEL_DIR/config.json" ]; then
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -n "$NCU" ]; then
    for bp in 1:base 1:one 32:base 32:one; do
      pb=${bp%%:*} pm=${bp#*:}
      # gpu_bench brackets its timed decode steps with cudaProfilerStart/Stop
      LORAPLEX_CUDA_GRAPHS=0 timeout -k 5 90 "$NCU" --metrics gpu__time_duration.sum --cache-control none --clock-control none --csv --print-units base \
        --profile-from-start off --launch-count 700 "$bin/gpu_bench" decode "$MODEL_DIR" --batch "$pb" --isl "$ISL" --osl 16 --steps 2 \
        --warmup 0 ${all_ads:+--adapters "${all_ads%%,*}"} --mode "$pm" --device "$BENCH_DEVICE" \
        >"$tmp/ncu-$pm.csv" 2>>"$OUT/logs.txt"
      echo "== profile batch $pb $pm: GPU us per kernel name over the profiled launches (2 decode steps with sampling)" >>"$OUT/logs.txt"
      awk -F'","' 'NR > 1 && $0 ~ /gpu__time_duration/ { n = $5; v = $NF; gsub(/"/, "", v); gsub(/,/, "", v);
            t[n] += v; c[n]++; tot += v } END { for (k in t) printf "%10.1f us %5d x  %s\n", t[k] / 1000, c[k], k;
            printf "%10.1f us total\n", tot / 1000 }' "$tmp/ncu-$pm.csv" | sort -rn | head -25 >>"$OUT/logs.txt"
    done
    note profile "ok" "see logs.txt"
  else
    note profile "skipped (no ncu)" ""
  fi
fi

# ---- ttft ----
if want ttft; then
  if [ -e "$MODEL_DIR/config.json" ] && [ -n "$r16" ]; then
    l=$(left)
    r=$((l / 3 < 50 ? l / 3 : 50))
    tl=$((l - r))
    [ "$tl" -gt 120 ] && tl=120
    stage ttft "$tl" json "$bin/gpu_bench" ttft "$MODEL_DIR" --adapters "$r16" --isl "$ISL" --trials "$TRIALS" \
      --device "$BENCH_DEVICE"
  else
    say "ttft: SKIPPED (no model or adapters)"
    note ttft "skipped (no model)" ""
  fi
fi

# ---- kernels ----
if want kernels; then
  if [ -x "$bin/bench_lora_kernels" ]; then
    # shellcheck disable=SC2086
    SHOW=40 stage kernels 90 log "$bin/bench_lora_kernels" ${KERNELS_ARGS:-}
  else
    say "kernels: SKIPPED (no .devcarry/bin/bench_lora_kernels)"
    note kernels "skipped (not built)" ""
  fi
fi

# ---- gemmex: the products through cublasGemmEx instead of cuBLASLt plans ----
if want gemmex && [ -e "$MODEL_DIR/config.json" ]; then
  LORAPLEX_CUDA_GEMM=ex stage gemmex 90 json "$bin/gpu_bench" decode "$MODEL_DIR" --batch "$BATCHES" --isl "$ISL" \
    --osl "$OSL" --steps "$STEPS" --warmup "$WARMUP" ${all_ads:+--adapters "${all_ads%%,*}"} --mode base,one \
    --device "$BENCH_DEVICE"
fi

# ---- summary, printed last ----
{
  echo
  echo "================ summary ($(elapsed)s of ${BUDGET}s budget) ================"
  grep '"what":"machine"' "$OUT/results.jsonl" | head -n 1 | awk '
    function get(k,  r) { if (!match($0, "\"" k "\":(\"[^\"]*\"|[^,}]*)")) return "?"; r = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); gsub(/"/, "", r); return r }
    { printf "device: %s, %s SMs, %s GiB; copy bandwidth %s GB/s (read + written); host to device %s GB/s (pinned)\n", get("device"), get("sms"), get("mem_total_GiB"), get("copy_bw_GBps"), get("h2d_pinned_GBps") }'
  nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | sed 's/^/driver: /'
  echo "model: $PRESET ($MODEL_DIR), isl $ISL, osl $OSL, $STEPS timed decode steps, modes $MODES"
  echo
  printf '%-8s %-30s %s\n' stage status time
  for s in "${summary[@]}"; do echo "$s"; done
  grep '"what":"skip"' "$OUT/results.jsonl" | sed 's/^/SKIP /'
  if grep -q '"what":"decode"' "$OUT/results.jsonl"; then
    echo
    awk '
      function get(k,  r) { if (!match($0, "\"" k "\":(\"[^\"]*\"|[^,}]*)")) return "-"; r = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); gsub(/"/, "", r); return r }
      BEGIN { printf "%-14s %6s %4s %9s %9s %10s %8s %9s %7s %7s %6s %9s  %s\n", "mode", "batch", "ads", "itl_ms", "p90_ms", "tokens/s", "GB/step", "roof_ms", "roof/ms", "vs_base", "sample", "sample_ms", "variant" }
      /"what":"sample_check"/ { chk = sprintf("sample_check: %s rows x vocab %s, %s specs: %s mismatches (worst total %s)", get("rows"), get("vocab"), get("specs"), get("mismatches"), get("worst_total_rel")) }
      /"what":"prefill"/ { pre = pre sprintf("prefill: %s rows x %s tokens in %s s (%s tokens/s), %s\n", get("rows"), get("isl"), get("seconds"), get("tokens_per_s"), get("variant")) }
      /"what":"decode"/ { printf "%-14s %6s %4s %9s %9s %10s %8.2f %9s %7s %7s %6s %9s  %s\n", get("mode"), get("batch"), get("adapters"), get("itl_ms"), get("step_ms_p90"), get("tokens_per_s"), get("bytes_per_step") / 1e9, get("roofline_ms"), get("roofline_ratio"), get("ratio_to_base"), get("sample"), get("sample_ms_median"), get("variant") }
      END { if (pre != "") printf "%s", pre; if (chk != "") print chk }' "$OUT/results.jsonl"
  fi
  if grep -q '"what":"ttft"' "$OUT/results.jsonl"; then
    echo
    grep '"what":"ttft"' "$OUT/results.jsonl" | awk '
      function get(k,  r) { if (!match($0, "\"" k "\":(\"[^\"]*\"|[^,}]*)")) return "-"; r = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); gsub(/"/, "", r); return r }
      { printf "ttft (%s tokens, %s trials, ranks %s-%s): cold (staged) p50 %s ms (load call %s ms), unstaged %s ms (load call %s ms), staging %s ms, warm p50 %s ms, cold - warm %s ms, base %s ms\n", get("isl"), get("trials"), get("rank_min"), get("rank_max"), get("cold_p50_ms"), get("load_call_p50_ms"), get("unstaged_p50_ms"), get("unstaged_load_call_p50_ms"), get("stage_p50_ms"), get("warm_p50_ms"), get("cold_minus_warm_ms"), get("base_p50_ms") }'
  fi
  echo
  echo "files: $OUT/results.jsonl (JSON lines), $OUT/logs.txt (all output), $OUT/summary.txt"
} | tee "$OUT/summary.txt"
