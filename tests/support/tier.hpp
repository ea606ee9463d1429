// Kernel tier tests that report "skipped", not "passed", where the tier cannot run.
//
// Catch2 v2 has no skip, so the skip goes through CTest: a test case of one tier (avx2,
// avx512, ...) carries the tag [<tier>] and starts with
//
//   if (test_support::skip_tier("avx2", k::isa_supported(k::Isa::avx2))) return;
//
// which, when the tier is missing, prints a line "NNX_TIER_SKIPPED: ..." and returns. Each
// tier's cases run as their own CTest test, test_kernels_<tier> (tests/CMakeLists.txt,
// NNX_KERNEL_TIERS), whose SKIP_REGULAR_EXPRESSION turns that line into "skipped" in the
// CTest summary and the CI log; test_kernels runs everything else.
//
// NNX_TEST_SKIP_TIERS=avx2,avx512 (or "all") takes the skip path on a CPU that has the tiers,
// to check the mechanism itself: NNX_TEST_SKIP_TIERS=all ctest -R test_kernels_
#pragma once

#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>

namespace test_support {

// True when NNX_TEST_SKIP_TIERS names `tier` (comma-separated) or is "all".
inline bool tier_skip_forced(std::string_view tier) {
  const char* env = std::getenv("NNX_TEST_SKIP_TIERS");
  if (!env) return false;
  const std::string_view list(env);
  if (list == "all") return true;
  for (std::size_t begin = 0; begin <= list.size();) {
    std::size_t end = list.find(',', begin);
    if (end == std::string_view::npos) end = list.size();
    if (list.substr(begin, end - begin) == tier) return true;
    begin = end + 1;
  }
  return false;
}

// True (after printing the skip line) when the tests of `tier` cannot run here: `available`
// is false (the CPU, its OS or this build lacks the tier) or NNX_TEST_SKIP_TIERS names it.
inline bool skip_tier(std::string_view tier, bool available) {
  const bool forced = tier_skip_forced(tier);
  if (available && !forced) return false;
  std::cout << "NNX_TIER_SKIPPED: " << tier << " ("
            << (forced ? "NNX_TEST_SKIP_TIERS" : "not available on this CPU or build") << ")" << std::endl;
  return true;
}

}  // namespace test_support
