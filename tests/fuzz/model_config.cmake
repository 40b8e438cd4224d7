lp_add_fuzz(model_config ${CMAKE_CURRENT_LIST_DIR}/model_config.c ${CMAKE_CURRENT_LIST_DIR}/corpus/model_config)
