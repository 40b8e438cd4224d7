# End-to-end tests of `loraplex serve` with the official openai npm client
# (installed once into the build dir by the e2e_npm_setup fixture).
set(LP_E2E_NODE ${CMAKE_BINARY_DIR}/e2e-node)
add_test(NAME e2e_npm_setup COMMAND ${CMAKE_CURRENT_LIST_DIR}/server/setup.sh ${LP_E2E_NODE})
set_tests_properties(e2e_npm_setup PROPERTIES FIXTURES_SETUP e2e_npm LABELS e2e)
foreach(t api admin eval bench)
  add_test(NAME e2e_server_${t} COMMAND node --test ${CMAKE_CURRENT_LIST_DIR}/server/${t}.test.cjs)
  set_tests_properties(e2e_server_${t} PROPERTIES FIXTURES_REQUIRED e2e_npm LABELS e2e TIMEOUT 600
    ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;NODE_PATH=${LP_E2E_NODE}/node_modules;LORAPLEX_BIN=$<TARGET_FILE:loraplex>;LORAPLEX_REPO=${CMAKE_SOURCE_DIR}")
endforeach()

# The same servers on the emulated CUDA device (tests/cuemu/): the CUDA
# backend's code under the real engine, store and HTTP server (CUDA graphs,
# sampling on the device, adapters loaded and evicted by the store). The
# emulated device is given 2 GiB, so the KV cache it sizes stays small.
if(TARGET loraplex_cuemu)
  foreach(t api admin eval)
    add_test(NAME e2e_server_${t}_cuemu COMMAND node --test ${CMAKE_CURRENT_LIST_DIR}/server/${t}.test.cjs)
    set_tests_properties(e2e_server_${t}_cuemu PROPERTIES FIXTURES_REQUIRED e2e_npm LABELS "e2e;cuemu" TIMEOUT 900
      ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;CUEMU_MEM_MB=2048;LORAPLEX_TEST_DEVICE=cuda;NODE_PATH=${LP_E2E_NODE}/node_modules;LORAPLEX_BIN=$<TARGET_FILE:loraplex_cuemu>;LORAPLEX_REPO=${CMAKE_SOURCE_DIR}")
  endforeach()
endif()
