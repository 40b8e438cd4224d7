# Fuzz the tokenizer.json loader (and one encode/decode of each file that loads).
lp_add_fuzz(tokenizer_json ${CMAKE_CURRENT_LIST_DIR}/tokenizer_json.c
            ${CMAKE_CURRENT_LIST_DIR}/corpus/tokenizer_json)
