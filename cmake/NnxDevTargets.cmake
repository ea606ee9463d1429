# Helpers for nnxcpp's own targets (tests, examples, benchmarks). Included only
# when nnxcpp is the top-level project; nothing here touches the nnxcpp target.

set(NNX_WARNING_FLAGS -Wall -Wextra -Wpedantic)
set(NNX_SANITIZE_FLAGS
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)

# nnx_dev_target(<target> [SANITIZE]) — our warnings; with SANITIZE and
# NNX_SANITIZE=ON also ASan+UBSan (compile and link).
function(nnx_dev_target target)
  cmake_parse_arguments(PARSE_ARGV 1 arg "SANITIZE" "" "")
  target_compile_options(${target} PRIVATE ${NNX_WARNING_FLAGS})
  if(arg_SANITIZE AND NNX_SANITIZE)
    target_compile_options(${target} PRIVATE ${NNX_SANITIZE_FLAGS})
    get_target_property(_type ${target} TYPE)
    if(NOT _type STREQUAL "OBJECT_LIBRARY" AND NOT _type STREQUAL "STATIC_LIBRARY")
      target_link_options(${target} PRIVATE ${NNX_SANITIZE_FLAGS})
    endif()
  endif()
endfunction()
