// Tests for nnx/kernels/elementwise.hpp: bias rows and sums are exactly one float rounding
// of the exact result (computed in double, which rounds to the same float).
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <vector>

#include "nnx/kernels/elementwise.hpp"

#include "../support/numeric.hpp"

namespace {

std::vector<float> wide_floats(std::size_t n, std::uint32_t seed) {
  return test_support::random_floats(n, seed, -100.0f, 100.0f);
}

}  // namespace

TEST_CASE("add_bias_rows adds the bias to every row", "[kernels][elementwise]") {
  for (std::int64_t rows : {1, 3, 7})
    for (std::int64_t cols : {1, 17, 129}) {
      const auto y0 = wide_floats(static_cast<std::size_t>(rows * cols), 1);
      const auto b = wide_floats(static_cast<std::size_t>(cols), 2);
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
  const auto a = wide_floats(1001, 3), b = wide_floats(1001, 4);
  std::vector<float> out(a.size());
  nnx::kernels::add_f32(a.data(), b.data(), out.data(), 1001);
  for (std::size_t i = 0; i < a.size(); ++i) REQUIRE(out[i] == static_cast<float>(static_cast<double>(a[i]) + b[i]));
  std::vector<float> c = a;
  nnx::kernels::add_f32(c.data(), b.data(), c.data(), 1001);
  CHECK(c == out);
}

TEST_CASE("add_f32 and add_bias_rows: every tier and thread count rounds each sum once", "[kernels][elementwise]") {
  namespace k = nnx::kernels;
  for (std::int64_t n : {1, 7, 8, 31, 33, 4097, 9001}) {
    const auto a = wide_floats(static_cast<std::size_t>(n), 5), b = wide_floats(static_cast<std::size_t>(n), 6);
    std::vector<float> want(a.size());
    for (std::size_t i = 0; i < a.size(); ++i) want[i] = static_cast<float>(static_cast<double>(a[i]) + b[i]);
    for (k::Isa isa : k::kAllIsas) {
      if (!k::isa_supported(isa)) continue;
      INFO(k::isa_name(isa) << " n=" << n);
      std::vector<float> out(a.size());
      k::select(k::kAddF32, isa)(a.data(), b.data(), out.data(), n);
      CHECK(out == want);
      // One row of n columns: the bias is b.
      std::vector<float> y = a;
      k::select(k::kAddBiasRows, isa)(y.data(), b.data(), 1, n);
      CHECK(y == want);
    }
  }
  const int threads_before = nnx::num_threads();
  const auto work_before = k::parallel_min_work();
  k::set_thread_count(2);
  k::set_parallel_min_work(1);
  const std::int64_t rows = 5, cols = 9001;
  const auto a = wide_floats(static_cast<std::size_t>(rows * cols), 7), b = wide_floats(a.size(), 8);
  std::vector<float> out(a.size()), y = a;
  k::add_f32(a.data(), b.data(), out.data(), rows * cols);
  k::add_bias_rows(y.data(), b.data(), rows, cols);
  k::set_thread_count(threads_before);
  k::set_parallel_min_work(work_before);
  for (std::size_t i = 0; i < a.size(); ++i) {
    REQUIRE(out[i] == static_cast<float>(static_cast<double>(a[i]) + b[i]));
    REQUIRE(y[i] == static_cast<float>(static_cast<double>(a[i]) + b[i % static_cast<std::size_t>(cols)]));
  }
}
