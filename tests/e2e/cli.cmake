# End-to-end: the loraplex binary as users run it.
add_test(NAME e2e_cli COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_cli.sh $<TARGET_FILE:loraplex> ${CMAKE_SOURCE_DIR})
set_tests_properties(e2e_cli PROPERTIES LABELS e2e)
