# Fuzz encode/decode on arbitrary text with two compiled-in tokenizers.
lp_add_fuzz(tokenizer_encode ${CMAKE_CURRENT_LIST_DIR}/tokenizer_encode.c
            ${CMAKE_CURRENT_LIST_DIR}/corpus/tokenizer_encode)
