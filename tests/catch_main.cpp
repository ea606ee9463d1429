// The one translation unit that holds Catch2's main(); every test executable
// links it (target nnx_catch_main), so test files only `#include <catch2/catch.hpp>`.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
