# Adapter loading (src/lora/adapter.c): fixtures, PEFT matching rules, bad
# inputs (bad-inputs.md items 5, 6, 10, 12).
lp_add_unit_test(test_adapter_load
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_adapter_load.c
  ARGS ${LP_TEST_DATA} ${LP_MODELS}
  LABELS unit)
