# adapter_config.json parser and PEFT matchers (src/lora/adapter.c): libFuzzer
# driver + seed corpus (the fixture configs and variants); replayed as a test
# in every build.
lp_add_fuzz(adapter_config ${CMAKE_CURRENT_LIST_DIR}/adapter_config.c ${CMAKE_CURRENT_LIST_DIR}/corpus/adapter_config)
