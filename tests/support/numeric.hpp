// Inputs and comparisons the numeric tests share: seeded uniform random floats (random, never
// zeros, so that a wrong lane, order or stride shows), float's unit roundoff for error
// bounds, and bitwise equality of results.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace test_support {

// Unit roundoff of float: the tests' error bounds are multiples of it.
inline constexpr double kUnit = 0x1p-24;

// n values uniform in [lo, hi) from a mt19937 seeded with `seed`.
inline std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// A float's bits, to compare results exactly.
inline std::uint32_t bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

// The same values bit for bit (NaNs included, and -0 apart from +0).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace test_support
