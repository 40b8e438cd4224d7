# safetensors parser: libFuzzer driver + seed corpus (valid files written by
# lp_st_writer, and a few invalid ones); replayed as a test in every build.
lp_add_fuzz(safetensors ${CMAKE_CURRENT_LIST_DIR}/safetensors.c ${CMAKE_CURRENT_LIST_DIR}/corpus/safetensors)
