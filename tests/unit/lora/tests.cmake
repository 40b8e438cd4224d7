# LoRA tests: mixed batches against single-row runs, task evals with the
# trained demo adapters, adapter loading and validation.
foreach(family llama qwen2)
  lp_add_unit_test(test_mixed_batch_${family}
    SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_mixed_batch.c ${CMAKE_SOURCE_DIR}/tests/unit/model/conform.c
    ARGS ${LP_TEST_DATA}/conform/${family})
endforeach()
lp_add_unit_test(test_task_eval
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_task_eval.c
  ARGS ${LP_MODELS} ${LP_TEST_DATA}/evals)
lp_add_unit_test(test_merge
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_merge.c ${CMAKE_SOURCE_DIR}/tests/unit/model/conform.c
  ARGS ${LP_MODELS} ${LP_TEST_DATA})

# The adapter store's staging in device layout (lp_backend_adapter_stage): on
# the loader thread, freed with the host tier, failures reported - with a
# staging wrapper around the CPU backend, as CI has no GPU.
lp_add_unit_test(test_store
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_store.c
  ARGS ${LP_MODELS})
