// Tests for nnx/kernels/softmax.hpp: against a double-precision softmax with the stated
// relative error bound at odd sizes, masked (-inf) entries and rows, NaN, and inputs that
// would overflow exp without the max subtraction.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nnx/kernels/softmax.hpp"

#include "../support/numeric.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
using test_support::random_floats;
constexpr float kInf = std::numeric_limits<float>::infinity();

using SoftmaxFn = void (*)(float*, i64, i64);

// Largest error / bound over the rows, bound = (cols + |x_j - m| + max_k |x_k - m| + 4 +
// extra) u relative (the float subtraction, exp, sum and division; see ref/softmax.hpp);
// the vector tiers' exp adds extra = 4 (avx2/softmax.hpp).
double softmax_error_ratio(SoftmaxFn fn, const std::vector<float>& x, i64 rows, i64 cols, double extra) {
  std::vector<float> y = x;
  fn(y.data(), rows, cols);
  double worst = 0.0;
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    double m = -INFINITY;
    for (i64 j = 0; j < cols; ++j) m = std::max(m, static_cast<double>(xr[j]));
    double s = 0.0, maxdev = 0.0;
    for (i64 j = 0; j < cols; ++j) {
      s += std::exp(xr[j] - m);
      maxdev = std::max(maxdev, m - xr[j]);
    }
    for (i64 j = 0; j < cols; ++j) {
      const double ref = std::exp(xr[j] - m) / s;
      const double bound = (static_cast<double>(cols) + (m - xr[j]) + maxdev + 4.0 + extra) * kUnit * ref + 1e-45;
      worst = std::max(worst, std::fabs(y[static_cast<std::size_t>(r * cols + j)] - ref) / bound);
    }
  }
  return worst;
}

}  // namespace

TEST_CASE("softmax_rows matches a double reference at odd sizes on every tier", "[kernels][softmax]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const SoftmaxFn fn = k::select(k::kSoftmaxRows, isa);
    for (i64 rows : {1, 3, 7})
      for (i64 cols : {1, 3, 7, 17, 33, 65, 129, 1001}) {
        const auto x = random_floats(static_cast<std::size_t>(rows * cols),
                                     static_cast<std::uint32_t>(rows * 1000 + cols), -8.0f, 8.0f);
        INFO(k::isa_name(isa) << " rows=" << rows << " cols=" << cols);
        REQUIRE(softmax_error_ratio(fn, x, rows, cols, isa == k::Isa::ref ? 0.0 : 4.0) <= 1.0);
      }
  }
}

TEST_CASE("softmax_rows does not overflow on large inputs on every tier", "[kernels][softmax]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    INFO(k::isa_name(isa));
    std::vector<float> x{1000.0f, 1001.0f, -1000.0f, 3e38f, 3e38f, 0.0f};
    k::select(k::kSoftmaxRows, isa)(x.data(), 2, 3);
    CHECK(x[0] == Approx(1.0 / (1.0 + std::exp(1.0))).epsilon(1e-6));
    CHECK(x[1] == Approx(1.0 / (1.0 + std::exp(-1.0))).epsilon(1e-6));
    CHECK(x[2] == 0.0f);
    CHECK(x[3] == 0.5f);
    CHECK(x[4] == 0.5f);
    CHECK(x[5] == 0.0f);
  }
}

TEST_CASE("softmax_rows on every tier: -inf entries get zero weight, all -inf rows become zeros, NaN spreads",
          "[kernels][softmax]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    INFO(k::isa_name(isa));
    std::vector<float> x{0.5f,  -kInf,         1.5f,  -kInf,  // causal-mask style row
                         -kInf, -kInf,         -kInf, -kInf,  // fully masked row
                         1.0f,  std::nanf(""), 2.0f,  3.0f};
    k::select(k::kSoftmaxRows, isa)(x.data(), 3, 4);
    CHECK(x[1] == 0.0f);
    CHECK(x[3] == 0.0f);
    CHECK(x[0] == Approx(1.0 / (1.0 + std::exp(1.0))).epsilon(1e-6));
    CHECK(x[0] + x[2] == Approx(1.0f).epsilon(1e-6));
    for (int j = 4; j < 8; ++j) CHECK(x[static_cast<std::size_t>(j)] == 0.0f);
    for (int j = 8; j < 12; ++j) CHECK(std::isnan(x[static_cast<std::size_t>(j)]));
  }
}

TEST_CASE("softmax_rows: each row independent of the others, empty inputs are no-ops", "[kernels][softmax]") {
  const auto x = random_floats(5 * 33, 7, -3.0f, 3.0f);
  std::vector<float> all = x;
  k::softmax_rows(all.data(), 5, 33);
  for (i64 r = 0; r < 5; ++r) {
    std::vector<float> one(x.begin() + r * 33, x.begin() + (r + 1) * 33);
    k::softmax_rows(one.data(), 1, 33);
    CHECK(std::equal(one.begin(), one.end(), all.begin() + r * 33));
  }
  float z = 1.0f;
  k::softmax_rows(&z, 0, 1);
  k::softmax_rows(&z, 1, 0);
  CHECK(z == 1.0f);
}
