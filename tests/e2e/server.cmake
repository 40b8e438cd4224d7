# End-to-end tests of `loraplex serve` with the official openai npm client
# (installed once into the build dir by the e2e_npm_setup fixture).
set(LP_E2E_NODE ${CMAKE_BINARY_DIR}/e2e-node)
add_test(NAME e2e_npm_setup COMMAND ${CMAKE_CURRENT_LIST_DIR}/server/setup.sh ${LP_E2E_NODE})
set_tests_properties(e2e_npm_setup PROPERTIES FIXTURES_SETUP e2e_npm LABELS e2e)

# lp_e2e_server(SUFFIX BIN_TARGET LABELS TIMEOUT EXTRA_ENV TESTS...): one
# CTest test per test file, against the server binary BIN_TARGET.
function(lp_e2e_server suffix bin labels timeout env)
  foreach(t ${ARGN})
    add_test(NAME e2e_server_${t}${suffix} COMMAND node --test ${CMAKE_CURRENT_FUNCTION_LIST_DIR}/server/${t}.test.cjs)
    set_tests_properties(e2e_server_${t}${suffix} PROPERTIES FIXTURES_REQUIRED e2e_npm LABELS "${labels}"
      TIMEOUT ${timeout} ENVIRONMENT
      "OMP_WAIT_POLICY=PASSIVE;${env}NODE_PATH=${LP_E2E_NODE}/node_modules;LORAPLEX_BIN=$<TARGET_FILE:${bin}>;LORAPLEX_REPO=${CMAKE_SOURCE_DIR}")
  endforeach()
endfunction()

lp_e2e_server("" loraplex e2e 600 "" api admin eval bench)

# The same servers on the emulated CUDA device (tests/cuemu/): the CUDA
# backend's code under the real engine, store and HTTP server (CUDA graphs,
# sampling on the device, adapters loaded and evicted by the store). The
# emulated device is given 2 GiB, so the KV cache it sizes stays small.
if(TARGET loraplex_cuemu)
  lp_e2e_server(_cuemu loraplex_cuemu "e2e;cuemu" 900 "CUEMU_MEM_MB=2048;LORAPLEX_TEST_DEVICE=cuda;" api admin eval)
endif()
