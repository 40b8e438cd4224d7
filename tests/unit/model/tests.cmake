# Model and forward-pass tests against the reference fixtures.
foreach(family llama qwen2 qwen3 mistral)
  lp_add_unit_test(test_conform_${family}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_conform.c ${CMAKE_CURRENT_LIST_DIR}/conform.c
    ARGS ${LP_TEST_DATA}/conform/${family})
endforeach()
lp_add_unit_test(test_model_load
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_model_load.c ${CMAKE_CURRENT_LIST_DIR}/conform.c
  ARGS ${LP_MODELS})
lp_add_unit_test(test_threads
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_threads.c ${CMAKE_CURRENT_LIST_DIR}/conform.c
  ARGS ${LP_MODELS})
