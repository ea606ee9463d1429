// Tests for nnx/kernels/elementwise.hpp: bias rows and sums are exactly one float rounding
// of the exact result (computed in double, which rounds to the same float).
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "nnx/kernels/elementwise.hpp"

namespace {

std::vector<float> random_floats(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-100.0f, 100.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace

TEST_CASE("add_bias_rows adds the bias to every row", "[kernels][elementwise]") {
  for (std::int64_t rows : {1, 3, 7})
    for (std::int64_t cols : {1, 17, 129}) {
      const auto y0 = random_floats(static_cast<std::size_t>(rows * cols), 1);
      const auto b = random_floats(static_cast<std::size_t>(cols), 2);
      std::vector<float> y = y0;
      nnx::kernels::add_bias_rows(y.data(), b.data(), rows, cols);
      for (std::int64_t r = 0; r < rows; ++r)
        for (std::int64_t j = 0; j < cols; ++j) {
          const auto i = static_cast<std::size_t>(r * cols + j);
          REQUIRE(y[i] == static_cast<float>(static_cast<double>(y0[i]) + b[static_cast<std::size_t>(j)]));
        }
    }
}

TEST_CASE("add_f32 sums elementwise, also in place", "[kernels][elementwise]") {
  const auto a = random_floats(1001, 3), b = random_floats(1001, 4);
  std::vector<float> out(a.size());
  nnx::kernels::add_f32(a.data(), b.data(), out.data(), 1001);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(out[i] == static_cast<float>(static_cast<double>(a[i]) + b[i]));
  std::vector<float> c = a;
  nnx::kernels::add_f32(c.data(), b.data(), c.data(), 1001);
  CHECK(c == out);
}
