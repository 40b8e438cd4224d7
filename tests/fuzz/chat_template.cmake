# Chat template interpreter: libFuzzer driver + seed corpus (the real
# templates of tests/data/chat-templates and small ones exercising each
# construct); replayed as a test in every build.
lp_add_fuzz(chat_template ${CMAKE_CURRENT_LIST_DIR}/chat_template.c ${CMAKE_CURRENT_LIST_DIR}/corpus/chat_template)
