# tests/cuemu/: the CUDA backend's own sources (src/backend/cuda/*.cu) built
# as C++ against a CPU emulation of the device (cuemu.h, cuemu.cpp), so that
# CI runs every kernel without a GPU. Needs a C++ compiler, an x86-64 CPU and
# the CUDA toolkit's headers (neither its libraries nor nvcc nor a GPU).
# lp_cuemu_test(NAME SOURCES... ARGS...) builds a test against it.
set(LP_CUEMU OFF)
find_package(CUDAToolkit QUIET)
if(CMAKE_CXX_COMPILER AND CUDAToolkit_FOUND AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(LP_CUEMU ON)
else()
  message(STATUS "cuemu: no C++ compiler, CUDA headers or x86-64: the emulated CUDA tests are not built")
endif()

if(LP_CUEMU)
  file(GLOB lp_cu_sources CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/src/backend/cuda/*.cu)
  set(lp_cuemu_sources ${CMAKE_CURRENT_LIST_DIR}/cuemu.cpp)
  foreach(cu ${lp_cu_sources})
    get_filename_component(n ${cu} NAME)
    set(out ${CMAKE_CURRENT_BINARY_DIR}/cuemu-${n}.cpp)
    add_custom_command(OUTPUT ${out}
      COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/transform.sh ${cu} ${out}
      DEPENDS ${cu} ${CMAKE_CURRENT_LIST_DIR}/transform.sed ${CMAKE_CURRENT_LIST_DIR}/transform.sh
      COMMENT "cuemu: ${n} as C++")
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

function(lp_cuemu_test name)
  if(NOT LP_CUEMU)
    return()
  endif()
  cmake_parse_arguments(T "" "" "SOURCES;ARGS;LABELS" ${ARGN})
  add_executable(${name} ${T_SOURCES} ${CMAKE_SOURCE_DIR}/tests/unit/testlib.c $<TARGET_OBJECTS:lp_cuemu>)
  # the emulator's definitions of the CUDA entry points come first, so the
  # library's src/backend/cuda_absent.c is never linked in
  target_link_libraries(${name} PRIVATE loraplex_core OpenMP::OpenMP_CXX)
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit)
  set_target_properties(${name} PROPERTIES LINKER_LANGUAGE CXX)
  add_test(NAME ${name} COMMAND ${name} ${T_ARGS})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE" LABELS "${T_LABELS}")
endfunction()
