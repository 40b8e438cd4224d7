# Engine: continuous batching, preemption, prefix caching, abort, sampling.
lp_add_unit_test(test_engine SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_engine.c ARGS ${LP_MODELS})
