# bench_lora_kernels: multi-LoRA shrink+expand microbenchmark and correctness
# check (bench/lora_kernels.md). Included from bench/CMakeLists.txt; builds
# only when LORAPLEX_CUDA=ON (the guard is here, not around the include, so
# that bench/CMakeLists.txt needs one line: CMake wants if() and endif() on
# lines of their own). The top-level CMakeLists.txt enables the CUDA language.
# lora.cu is compiled into the target itself, so the benchmark does not need
# the rest of loraplex_core.
if(NOT LORAPLEX_CUDA)
  return()
endif()
if(NOT CMAKE_CUDA_COMPILER)
  message(WARNING "bench_lora_kernels: the CUDA language is not enabled; skipping the target")
  return()
endif()
if(NOT TARGET CUDA::cublas)
  find_package(CUDAToolkit REQUIRED)
endif()
add_executable(bench_lora_kernels ${CMAKE_CURRENT_LIST_DIR}/lora_kernels.cu
                                  ${CMAKE_SOURCE_DIR}/src/backend/cuda/lora.cu)
target_include_directories(bench_lora_kernels PRIVATE ${CMAKE_SOURCE_DIR}/src ${CMAKE_SOURCE_DIR}/include)
set_target_properties(bench_lora_kernels PROPERTIES CUDA_ARCHITECTURES OFF CUDA_STANDARD 17
                                                    CUDA_STANDARD_REQUIRED ON)
target_compile_options(bench_lora_kernels PRIVATE
  "$<$<COMPILE_LANGUAGE:CUDA>:-gencode=arch=compute_80,code=sm_80;-gencode=arch=compute_90a,code=sm_90a;-lineinfo>")
target_link_libraries(bench_lora_kernels PRIVATE CUDA::cublas CUDA::cudart)
