# Restricted unpickler alone (bare data.pkl, fake storages): libFuzzer driver +
# seed corpus written by tests/unit/format-pickle/make_bad_pickles.py.
lp_add_fuzz(torch_pickle_vm ${CMAKE_CURRENT_LIST_DIR}/torch_pickle_vm.c ${CMAKE_CURRENT_LIST_DIR}/corpus/torch_pickle_vm)
