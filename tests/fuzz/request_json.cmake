lp_add_fuzz(request_json ${CMAKE_CURRENT_LIST_DIR}/request_json.c ${CMAKE_CURRENT_LIST_DIR}/corpus/request_json)
set_tests_properties(fuzz_replay_request_json PROPERTIES WORKING_DIRECTORY ${CMAKE_SOURCE_DIR})
