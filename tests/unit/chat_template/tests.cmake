# Chat template interpreter: the real templates of tests/data/chat-templates
# (rendered by transformers) must render byte-identically, plus Jinja2
# semantics, limits and hostile inputs.
lp_add_unit_test(test_chat_template
  SOURCES ${CMAKE_SOURCE_DIR}/tests/unit/chat_template/test_chat_template.c
  ARGS ${LP_TEST_DATA}
  LABELS tokenizer)
