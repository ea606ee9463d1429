# run.cmake — CTest driver for nnxcpp's packaging tests (cmake -P).
#
#   NNX_MODE=install : cmake --install the nnxcpp build tree into
#                      <NNX_WORK_DIR>/prefix, then configure + build + run
#                      tests/cmake_consumer (find_package) against that prefix.
#   NNX_MODE=subdir  : configure + build + run tests/cmake_subdir, which does
#                      add_subdirectory(<NNX_SOURCE_DIR>).
#
# Inputs (-D): NNX_MODE, NNX_SOURCE_DIR, NNX_BINARY_DIR, NNX_WORK_DIR,
#   NNX_GENERATOR, NNX_CXX_COMPILER; optional NNX_CONFIG, NNX_CXX_COMPILER_LAUNCHER,
#   NNX_INSTALL_INCLUDEDIR, NNX_INSTALL_CMAKEDIR (relative to the prefix).
# Any failing step is a FATAL_ERROR (non-zero exit, test fails).
cmake_minimum_required(VERSION 3.25)

foreach(_v IN ITEMS NNX_MODE NNX_SOURCE_DIR NNX_BINARY_DIR NNX_WORK_DIR NNX_GENERATOR NNX_CXX_COMPILER)
  if(NOT DEFINED ${_v} OR "${${_v}}" STREQUAL "")
    message(FATAL_ERROR "run.cmake: missing -D${_v}=...")
  endif()
endforeach()

# run(<step name> <command...>): run a command, echo its output, fail on error.
function(run step)
  list(JOIN ARGN " " _cmdline)
  message(STATUS "[${NNX_MODE}] ${step}: ${_cmdline}")
  execute_process(COMMAND ${ARGN}
                  RESULT_VARIABLE _rc
                  OUTPUT_VARIABLE _out
                  ERROR_VARIABLE _out)
  message("${_out}")
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "[${NNX_MODE}] ${step} failed (exit ${_rc})")
  endif()
  set(run_output "${_out}" PARENT_SCOPE)
endfunction()

set(_build_type "${NNX_CONFIG}")
if(_build_type STREQUAL "")
  set(_build_type Release)
endif()

file(REMOVE_RECURSE "${NNX_WORK_DIR}")
file(MAKE_DIRECTORY "${NNX_WORK_DIR}")
set(_consumer_build "${NNX_WORK_DIR}/build")

set(_configure_args
  -G "${NNX_GENERATOR}"
  -DCMAKE_CXX_COMPILER=${NNX_CXX_COMPILER}
  -DCMAKE_BUILD_TYPE=${_build_type})
if(NNX_CXX_COMPILER_LAUNCHER)
  list(APPEND _configure_args -DCMAKE_CXX_COMPILER_LAUNCHER=${NNX_CXX_COMPILER_LAUNCHER})
endif()

if(NNX_MODE STREQUAL "install")
  set(_prefix "${NNX_WORK_DIR}/prefix")
  set(_install_args --install "${NNX_BINARY_DIR}" --prefix "${_prefix}")
  if(NNX_CONFIG)
    list(APPEND _install_args --config "${NNX_CONFIG}")
  endif()
  run("install" "${CMAKE_COMMAND}" ${_install_args})
  if(NOT NNX_INSTALL_INCLUDEDIR)
    set(NNX_INSTALL_INCLUDEDIR include)
  endif()
  if(NOT NNX_INSTALL_CMAKEDIR)
    set(NNX_INSTALL_CMAKEDIR share/cmake/nnxcpp)
  endif()
  foreach(_f IN ITEMS ${NNX_INSTALL_INCLUDEDIR}/nnx/nnx.hpp
                      ${NNX_INSTALL_CMAKEDIR}/nnxcppConfig.cmake
                      ${NNX_INSTALL_CMAKEDIR}/nnxcppConfigVersion.cmake
                      ${NNX_INSTALL_CMAKEDIR}/nnxcppTargets.cmake)
    if(NOT EXISTS "${_prefix}/${_f}")
      message(FATAL_ERROR "[install] ${_prefix}/${_f} was not installed")
    endif()
  endforeach()
  run("configure consumer" "${CMAKE_COMMAND}"
      -S "${NNX_SOURCE_DIR}/tests/cmake_consumer" -B "${_consumer_build}"
      ${_configure_args}
      -DCMAKE_PREFIX_PATH=${_prefix}
      -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
  # The package must come from our prefix, not from some other install.
  file(STRINGS "${_consumer_build}/CMakeCache.txt" _dir_line REGEX "^nnxcpp_DIR:")
  string(REGEX REPLACE "^nnxcpp_DIR:[A-Z]+=" "" _dir "${_dir_line}")
  file(REAL_PATH "${_dir}" _dir)
  file(REAL_PATH "${_prefix}" _real_prefix)
  string(FIND "${_dir}" "${_real_prefix}/" _pos)
  if(NOT _pos EQUAL 0)
    message(FATAL_ERROR "[install] nnxcpp was found in '${_dir}', not under '${_real_prefix}'")
  endif()
elseif(NNX_MODE STREQUAL "subdir")
  run("configure subdir consumer" "${CMAKE_COMMAND}"
      -S "${NNX_SOURCE_DIR}/tests/cmake_subdir" -B "${_consumer_build}"
      ${_configure_args}
      -DNNX_SOURCE_DIR=${NNX_SOURCE_DIR})
else()
  message(FATAL_ERROR "run.cmake: unknown NNX_MODE '${NNX_MODE}' (install|subdir)")
endif()

run("build consumer" "${CMAKE_COMMAND}" --build "${_consumer_build}" --config "${_build_type}")

# Single-config generators put it in the build dir, multi-config in <config>/.
set(_exe "${_consumer_build}/consumer")
if(NOT EXISTS "${_exe}")
  set(_exe "${_consumer_build}/${_build_type}/consumer")
endif()
run("run consumer" "${_exe}")
if(NOT run_output MATCHES "consumer ok")
  message(FATAL_ERROR "[${NNX_MODE}] consumer did not print 'consumer ok'")
endif()
message(STATUS "[${NNX_MODE}] passed")
