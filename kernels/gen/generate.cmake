# Runs kernels/gen/generate.py at build time and declares what it emits (included by
# kernels/CMakeLists.txt). Sets:
#   PENG_GEN_CPU_OBJECTS   object files of every CPU instance, once per ISA
#   PENG_GEN_SRCS          the dispatch tables
#   PENG_GEN_CUDA_SRCS     CUDA instances (PENG_CUDA only)
#   PENG_GEN_CPU_TEST / PENG_GEN_CUDA_TEST   generated test sources
set(PENG_ATTENTION_VARIANTS "default" CACHE STRING
    "Attention variants to generate: default (configs + tests) or all (every combination)")
find_package(Python3 REQUIRED COMPONENTS Interpreter)

set(_gen_dir ${PROJECT_BINARY_DIR}/kernels/gen)
set(_gen_py ${CMAKE_CURRENT_SOURCE_DIR}/gen/generate.py)
set(_gen_spec ${CMAKE_CURRENT_SOURCE_DIR}/gen/spec.yaml)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(_gen_isas portable avx2 avx512)
else()
  set(_gen_isas portable)
endif()
string(REPLACE ";" "," _gen_isa_list "${_gen_isas}")
set(_gen_args --spec ${_gen_spec} --out ${_gen_dir} --set ${PENG_ATTENTION_VARIANTS} --isas ${_gen_isa_list})
if(PENG_CUDA)
  list(APPEND _gen_args --cuda)
endif()

execute_process(COMMAND ${Python3_EXECUTABLE} ${_gen_py} ${_gen_args} --list
                OUTPUT_VARIABLE _gen_files ERROR_VARIABLE _gen_err RESULT_VARIABLE _gen_rc)
if(NOT _gen_rc EQUAL 0)
  message(FATAL_ERROR "kernels/gen/generate.py failed: ${_gen_err}")
endif()
string(STRIP "${_gen_files}" _gen_files)
string(REPLACE "\n" ";" _gen_files "${_gen_files}")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_gen_spec} ${_gen_py})

# The generator rewrites only files whose text changed; the stamp carries the dependency.
add_custom_command(OUTPUT ${_gen_dir}/generated.stamp
                   BYPRODUCTS ${_gen_files}
                   COMMAND ${Python3_EXECUTABLE} ${_gen_py} ${_gen_args}
                   COMMAND ${CMAKE_COMMAND} -E touch ${_gen_dir}/generated.stamp
                   DEPENDS ${_gen_py} ${_gen_spec}
                   COMMENT "Generating attention kernels (${PENG_ATTENTION_VARIANTS})")
add_custom_target(peng_kernels_gen DEPENDS ${_gen_dir}/generated.stamp)

set(_gen_cpu_srcs ${_gen_files})
list(FILTER _gen_cpu_srcs INCLUDE REGEX "/cpu/[^/]+\\.cc$")
set(PENG_GEN_CUDA_SRCS ${_gen_files})
list(FILTER PENG_GEN_CUDA_SRCS INCLUDE REGEX "/cuda/[^/]+\\.cu$")
set(PENG_GEN_SRCS ${_gen_dir}/cpu_table.cc ${_gen_dir}/cuda_table.cc)
set(PENG_GEN_CPU_TEST ${_gen_dir}/attention_cpu_test.cc)
set(PENG_GEN_CUDA_TEST ${_gen_dir}/attention_cuda_test.cc)

# Every CPU instance compiles once per ISA; the later -march overrides PENG_NATIVE's.
set(_isa_flags_portable -march=x86-64 -mtune=generic)
set(_isa_flags_avx2 -march=x86-64-v3 -mtune=generic)
set(_isa_flags_avx512 -march=x86-64-v4 -mtune=generic -Wno-uninitialized -Wno-maybe-uninitialized)
if(NOT CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64")
  set(_isa_flags_portable)
endif()
set(PENG_GEN_CPU_OBJECTS)
set(_isa_id_portable 1)
set(_isa_id_avx2 2)
set(_isa_id_avx512 3)
foreach(isa ${_gen_isas})
  add_library(peng_attn_cpu_${isa} OBJECT ${_gen_cpu_srcs})
  add_dependencies(peng_attn_cpu_${isa} peng_kernels_gen)
  target_include_directories(peng_attn_cpu_${isa} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_definitions(peng_attn_cpu_${isa} PRIVATE PENG_GEN_ISA=${_isa_id_${isa}})
  target_compile_options(peng_attn_cpu_${isa} PRIVATE ${PENG_CXX_WARNINGS} ${_isa_flags_${isa}})
  list(APPEND PENG_GEN_CPU_OBJECTS $<TARGET_OBJECTS:peng_attn_cpu_${isa}>)
endforeach()
