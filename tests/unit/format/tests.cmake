# Tests for src/format/.
lp_add_unit_test(test_safetensors
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_safetensors.c
  ARGS ${LP_TEST_DATA} ${LP_MODELS}
  LABELS unit)
