# torch.save reader (zip + restricted unpickler): libFuzzer driver + seed corpus
# (small valid archives and a few hostile ones, written by
# tests/unit/format-pickle/make_bad_pickles.py); replayed as a test in every build.
lp_add_fuzz(torch_pickle ${CMAKE_CURRENT_LIST_DIR}/torch_pickle.c ${CMAKE_CURRENT_LIST_DIR}/corpus/torch_pickle)
