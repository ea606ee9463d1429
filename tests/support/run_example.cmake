# Runs an example program as a CTest smoke test (examples/CMakeLists.txt):
#
#   cmake -DPROGRAM=<path> -DEXPECT_FILE=<file> -P run_example.cmake
#
# Passes when the program exits with 0, writes nothing to stderr, and its stdout matches
# every regular expression of EXPECT_FILE (a CMake file that sets the list EXPECT) in order:
# each one is searched for after the end of the previous match.
cmake_minimum_required(VERSION 3.25)

include("${EXPECT_FILE}")
execute_process(COMMAND "${PROGRAM}" OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
message("${out}")
if(NOT rc STREQUAL "0")
  message(FATAL_ERROR "${PROGRAM} exited with ${rc}; stderr:\n${err}")
endif()
if(NOT err STREQUAL "")
  message(FATAL_ERROR "${PROGRAM} wrote to stderr:\n${err}")
endif()

set(rest "${out}")
foreach(re IN LISTS EXPECT)
  string(REGEX MATCH "${re}" found "${rest}")
  if(found STREQUAL "")
    message(FATAL_ERROR "${PROGRAM}: no match for the expected line\n  ${re}\nafter the previous one, in:\n${rest}")
  endif()
  string(FIND "${rest}" "${found}" at)
  string(LENGTH "${found}" length)
  math(EXPR at "${at} + ${length}")
  string(SUBSTRING "${rest}" ${at} -1 rest)
endforeach()
