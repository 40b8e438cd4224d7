# Backend tests: the CPU kernels against a double-precision reference on every
# ISA the machine runs; bench/kernels.c (target bench_kernels, not a test) measures them.
lp_add_unit_test(test_cpu_kernels
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_cpu_kernels.c
  LABELS backend)

# The CUDA backend against the reference fixtures and the CPU backend (logits,
# greedy, mixed batches, error paths). Exits 77 = skipped without a CUDA
# device, so it passes as skipped in CI; `ctest -L gpu` runs it on a GPU machine.
lp_add_unit_test(test_cuda
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_cuda.c ${CMAKE_SOURCE_DIR}/tests/unit/model/conform.c
  ARGS ${LP_TEST_DATA}/conform/llama ${LP_TEST_DATA}/conform/qwen2 ${LP_TEST_DATA}/conform/qwen3 ${LP_TEST_DATA}/conform/mistral
  LABELS backend gpu)
set_tests_properties(test_cuda PROPERTIES SKIP_RETURN_CODE 77)

# The same test with the CUDA backend's sources built against the CPU
# emulation of the device (tests/cuemu/): every kernel, copy, graph capture
# and GEMM of the backend runs in CI, without a GPU. Under the sanitizers
# (several times slower) the synthetic models are cut to one per head size.
if(LORAPLEX_SANITIZE)
  set(lp_cuda_emu_scope --quick)
endif()
lp_cuemu_test(test_cuda_emu
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_cuda.c ${CMAKE_SOURCE_DIR}/tests/unit/model/conform.c
  ARGS ${lp_cuda_emu_scope} ${LP_TEST_DATA}/conform/llama ${LP_TEST_DATA}/conform/qwen2 ${LP_TEST_DATA}/conform/qwen3 ${LP_TEST_DATA}/conform/mistral
  LABELS backend cuemu)
# ... and on a device like an sm_86 card (84 SMs, 99 KB of shared memory per
# block: the tensor-core prefill at head size 256 does not fit, other LoRA
# splits), in the Release build only
if(TARGET test_cuda_emu AND NOT LORAPLEX_SANITIZE)
  add_test(NAME test_cuda_emu_sm86 COMMAND test_cuda_emu --quick ${LP_TEST_DATA}/conform/llama)
  set_tests_properties(test_cuda_emu_sm86 PROPERTIES LABELS "backend;cuemu"
    ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;CUEMU_SMS=84;CUEMU_SMEM_OPTIN=101376")
  # A small GPU (16 SMs) with the few-token attention kernel for every token:
  # the mixed batch's rows split their attention into more parts than alone.
  # A short range cut into slivers by the call's split count made a row's
  # result depend on its batch (2e-3 relative L2 vs alone, over SELF_TOL);
  # parts are now never shorter than the kernel's least split length.
  add_test(NAME test_cuda_emu_few16 COMMAND test_cuda_emu --quick ${LP_TEST_DATA}/conform/llama)
  set_tests_properties(test_cuda_emu_few16 PROPERTIES LABELS "backend;cuemu"
    ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;CUEMU_SMS=16;LORAPLEX_CUDA_ATTN=few")
endif()

# The token grouping of the CUDA multi-LoRA kernels (host code), without a GPU.
lp_add_unit_test(test_lora_groups
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_lora_groups.c
  LABELS backend)

# The sampling op and the sampler without a GPU: the host selection against a
# full sort, the GPU kernels' block algorithm (src/backend/select.h) run on one
# thread against the host, and tokens independent of the candidate count.
lp_add_unit_test(test_sample
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_sample.c
  LABELS backend)

# The device layout of adapters (src/backend/lora_layout.c) that the CUDA
# backend stages in pinned memory and copies as is, checked without a GPU.
lp_add_unit_test(test_lora_layout
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_lora_layout.c
  ARGS ${LP_TEST_DATA}/conform/llama
  LABELS backend)

# The pool of pinned chunks the CUDA backend stages adapters in
# (src/backend/hostpool.c), with malloc'd chunks.
lp_add_unit_test(test_hostpool
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_hostpool.c
  LABELS backend)
