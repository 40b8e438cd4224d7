# Backend tests: the CPU kernels against a double-precision reference on every
# ISA the machine runs; bench/kernels.c (target bench_kernels, not a test) measures them.
lp_add_unit_test(test_cpu_kernels
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/backend/test_cpu_kernels.c
  LABELS backend)

