# tests/cuemu/: the CUDA backend's own sources (src/backend/cuda/*.cu) built
# as C++ against a CPU emulation of the device (cuemu.h, cuemu.cpp), so that
# CI runs every kernel without a GPU. Needs a C++ compiler, an x86-64 CPU and
# the CUDA toolkit's headers (neither its libraries nor nvcc nor a GPU).
# lp_cuemu_test() (below) builds a test against it.
set(LP_CUEMU OFF)
find_package(CUDAToolkit QUIET)
if(CMAKE_CXX_COMPILER AND CUDAToolkit_FOUND AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(LP_CUEMU ON)
else()
  message(STATUS "cuemu: no C++ compiler, CUDA headers or x86-64: the emulated CUDA tests are not built")
endif()

if(LP_CUEMU)
  # lp_cuemu_transform(OUT_VAR CU): CU as C++ for cuemu.h (transform.sh)
  function(lp_cuemu_transform out_var cu)
    get_filename_component(n ${cu} NAME)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/cuemu-${n}.cpp)
    add_custom_command(OUTPUT ${out}
      COMMAND sh ${LP_CUEMU_DIR}/transform.sh ${cu} ${out}
      DEPENDS ${cu} ${LP_CUEMU_DIR}/transform.sed ${LP_CUEMU_DIR}/transform.sh
      COMMENT "cuemu: ${n} as C++")
    set(${out_var} ${out} PARENT_SCOPE)
  endfunction()
  set(LP_CUEMU_DIR ${CMAKE_CURRENT_LIST_DIR})
  file(GLOB lp_cu_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu)
  set(lp_cuemu_sources ${CMAKE_CURRENT_LIST_DIR}/cuemu.cpp)
  foreach(cu ${lp_cu_sources})
    lp_cuemu_transform(out ${cu})
    list(APPEND lp_cuemu_sources ${out})
  endforeach()
  add_library(lp_cuemu OBJECT ${lp_cuemu_sources})
  set_target_properties(lp_cuemu PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON CXX_EXTENSIONS OFF)
  target_include_directories(lp_cuemu PRIVATE ${CMAKE_CURRENT_LIST_DIR} ${CMAKE_SOURCE_DIR}/src
                             ${CMAKE_SOURCE_DIR}/include ${CUDAToolkit_INCLUDE_DIRS})
  target_compile_options(lp_cuemu PRIVATE -include ${CMAKE_CURRENT_LIST_DIR}/cuemu.h -O2)
  find_package(OpenMP REQUIRED COMPONENTS CXX)
  target_link_libraries(lp_cuemu PUBLIC OpenMP::OpenMP_CXX)
  # The sanitizers watch the backend's code (kernels included), not the
  # emulator itself, whose GEMM and fiber switches would only slow them
  # down; it still tells ASan of each fiber switch.
  if(LORAPLEX_SANITIZE)
    foreach(cu ${lp_cuemu_sources})
      if(NOT cu MATCHES "/cuemu\\.cpp$")
        set_source_files_properties(${cu} PROPERTIES COMPILE_OPTIONS
          "-fsanitize=${LORAPLEX_SANITIZE};-fno-omit-frame-pointer;-fno-sanitize-recover=all")
      endif()
    endforeach()
    if(LORAPLEX_SANITIZE MATCHES "address")
      set_source_files_properties(${CMAKE_CURRENT_LIST_DIR}/cuemu.cpp PROPERTIES COMPILE_DEFINITIONS CUEMU_ASAN=1)
    endif()
  endif()
endif()

# lp_cuemu_test(NAME SOURCES... [ARGS ...] [LABELS ...]): a test linked with
# the emulated backend; .cu sources among SOURCES are emulated too.
function(lp_cuemu_test name)
  if(NOT LP_CUEMU)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;ARGS;LABELS" ${ARGN})
  set(srcs)
  foreach(src ${T_SOURCES})
    if(src MATCHES "\\.cu$")
      lp_cuemu_transform(out ${src})
      set_source_files_properties(${out} PROPERTIES COMPILE_OPTIONS "-include;${LP_CUEMU_DIR}/cuemu.h")
      list(APPEND srcs ${out})
    else()
      list(APPEND srcs ${src})
    endif()
  endforeach()
  add_executable(${name} ${srcs} ${CMAKE_SOURCE_DIR}/tests/unit/testlib.c $<TARGET_OBJECTS:lp_cuemu>)
  # the emulator's definitions of the CUDA entry points come first, so the
  # library's src/backend/cuda_absent.c is never linked in
  target_link_libraries(${name} PRIVATE loraplex_core OpenMP::OpenMP_CXX)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit ${LP_CUEMU_DIR}
                             ${CUDAToolkit_INCLUDE_DIRS})
  set_target_properties(${name} PROPERTIES LINKER_LANGUAGE CXX CXX_STANDARD 17)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE" LABELS "${T_LABELS}")
endfunction()

# The emulator itself, on kernels with known answers.
lp_cuemu_test(test_cuemu SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cuemu.cu LABELS cuemu)

# The server itself on the emulated device: `loraplex_cuemu serve --device
# cuda` runs the CUDA backend's code (graphs, sampling, the device tier fed
# by the store's loader thread) under the real engine and HTTP server.
if(LP_CUEMU)
  add_executable(loraplex_cuemu ${CMAKE_SOURCE_DIR}/src/cli/main.c $<TARGET_OBJECTS:lp_cuemu>)
  target_compile_definitions(loraplex_cuemu PRIVATE LORAPLEX_VERSION="${PROJECT_VERSION}" LORAPLEX_HAVE_CUDA=1)
  target_link_libraries(loraplex_cuemu PRIVATE loraplex_core OpenMP::OpenMP_CXX)
  set_target_properties(loraplex_cuemu PROPERTIES LINKER_LANGUAGE CXX)

  # bench/gpu_bench.c on the emulated device: gpu_bench_smoke runs each of its
  # modes on a tiny synthetic model, so the GPU session's benchmark driver
  # has run before it gets there (its timings mean nothing here).
  add_executable(gpu_bench_cuemu ${CMAKE_SOURCE_DIR}/bench/gpu_bench.c $<TARGET_OBJECTS:lp_cuemu>)
  target_include_directories(gpu_bench_cuemu PRIVATE ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(gpu_bench_cuemu PRIVATE loraplex_core OpenMP::OpenMP_CXX)
  set_target_properties(gpu_bench_cuemu PROPERTIES LINKER_LANGUAGE CXX)
  # bench/lora_kernels.cu likewise: its correctness check of the multi-LoRA
  # kernels against three cuBLAS baselines, at small shapes.
  lp_cuemu_transform(lk_src ${CMAKE_SOURCE_DIR}/bench/lora_kernels.cu)
  set_source_files_properties(${lk_src} PROPERTIES COMPILE_OPTIONS "-include;${LP_CUEMU_DIR}/cuemu.h")
  add_executable(bench_lora_kernels_cuemu ${lk_src} $<TARGET_OBJECTS:lp_cuemu>)
  target_include_directories(bench_lora_kernels_cuemu PRIVATE ${LP_CUEMU_DIR} ${CMAKE_SOURCE_DIR}/src
                             ${CMAKE_SOURCE_DIR}/include ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(bench_lora_kernels_cuemu PRIVATE loraplex_core OpenMP::OpenMP_CXX)
  set_target_properties(bench_lora_kernels_cuemu PROPERTIES CXX_STANDARD 17 CXX_STANDARD_REQUIRED ON)
  add_test(NAME bench_lora_kernels_smoke COMMAND bench_lora_kernels_cuemu --in 512 --out 768 --rank 24
           --batches 1,5,32 --iters 2 --warmup 1 --copy-mib 16)
  set_tests_properties(bench_lora_kernels_smoke PROPERTIES LABELS cuemu TIMEOUT 300
                       ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;CUEMU_MEM_MB=2048")
  add_test(NAME gpu_bench_smoke COMMAND ${LP_CUEMU_DIR}/gpu_bench_smoke.sh $<TARGET_FILE:loraplex>
           $<TARGET_FILE:gpu_bench_cuemu>)
  set_tests_properties(gpu_bench_smoke PROPERTIES LABELS cuemu TIMEOUT 600
                       ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE;CUEMU_MEM_MB=1024;GPU_BENCH_FREE_GIB=2")
endif()
