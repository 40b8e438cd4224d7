#!/usr/bin/env bash
# test.sh - quick start, command 2: build and run every test. Installs what is
# missing, then runs the suite under ASan+UBSan and in a -Werror Release
# build (CTest's summary of the Release run is the last thing printed); with
# nvcc present, the CUDA backend is compiled in between.
# LORAPLEX_TEST_QUICK=1 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
jobs=$(nproc)

if [ "${LORAPLEX_TEST_QUICK:-0}" != 1 ]; then
  echo "== sanitizer build (address,undefined)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLORAPLEX_WERROR=ON \
        -DLORAPLEX_SANITIZE=address,undefined >/dev/null
  cmake --build build-asan -j"$jobs" >/dev/null
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 LORAPLEX_SANITIZER_BUILD=1 \
     ctest -j"$jobs" --output-on-failure)
fi

# The CUDA backend is compiled (sm_80 + sm_90a) wherever nvcc is, but not
# run: CI has no GPU. Only the binary and the GPU test are built; the GPU test
# runs on a GPU machine (ctest -L gpu in build-cuda) and skips elsewhere.
nvcc_bin=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
if [ -n "$nvcc_bin" ]; then
  echo "== CUDA build (compile only)"
  cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DLORAPLEX_CUDA=ON -DLORAPLEX_WERROR=ON \
        -DCMAKE_CUDA_COMPILER="$nvcc_bin" >/dev/null
  cmake --build build-cuda -j"$jobs" --target loraplex test_cuda gpu_bench bench_lora_kernels >/dev/null
fi

echo "== release build (-Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLORAPLEX_WERROR=ON >/dev/null
cmake --build build -j"$jobs" >/dev/null
cd build && ctest -j"$jobs" --output-on-failure
