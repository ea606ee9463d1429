// Tests for nnx/kernels/norm.hpp: LayerNorm and RMSNorm against double-precision references
// with error bounds derived from the stated float order, at odd sizes, with and without
// scale / bias, and in place.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nnx/kernels/norm.hpp"
#include "nnx/kernels/parallel.hpp"

#include "../support/numeric.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
using test_support::random_floats;
const i64 kNormCols[] = {1, 3, 7, 17, 33, 65, 129, 768, 1025};

// Largest |y - ref| / bound for LayerNorm. With mean computed in float (error dm <= (cols+1)
// u mean|x|), the deviations carry dm, the variance (cols + 2) u relative error, r half of
// that plus two roundings, and the affine step two more:
//   bound_j = 2 [ |s_j| r dm + (cols/2 + 6) u |x̂_j s_j| + 2 u (|x̂_j s_j| + |b_j|) ]
double layer_norm_error_ratio(const std::vector<float>& x, const float* scale, const float* bias, float eps,
                              const std::vector<float>& y, i64 rows, i64 cols) {
  double worst = 0.0;
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    double mean = 0.0, mean_abs = 0.0;
    for (i64 j = 0; j < cols; ++j) {
      mean += xr[j];
      mean_abs += std::fabs(xr[j]);
    }
    mean /= static_cast<double>(cols);
    mean_abs /= static_cast<double>(cols);
    double var = 0.0;
    for (i64 j = 0; j < cols; ++j) var += (xr[j] - mean) * (xr[j] - mean);
    var /= static_cast<double>(cols);
    const double rstd = 1.0 / std::sqrt(var + static_cast<double>(eps));
    const double dm = static_cast<double>(cols + 1) * kUnit * mean_abs;
    for (i64 j = 0; j < cols; ++j) {
      const double s = scale ? scale[j] : 1.0, b = bias ? bias[j] : 0.0;
      const double xhat_s = (xr[j] - mean) * rstd * s;
      const double ref = xhat_s + b;
      const double bound =
          2.0 * (std::fabs(s) * rstd * dm + (static_cast<double>(cols) / 2.0 + 6.0) * kUnit * std::fabs(xhat_s) +
                 2.0 * kUnit * (std::fabs(xhat_s) + std::fabs(b))) +
          1e-30;
      worst = std::max(worst, std::fabs(y[static_cast<std::size_t>(r * cols + j)] - ref) / bound);
    }
  }
  return worst;
}

// RMSNorm: relative error <= ((cols + 1) / 2 + 6) u, doubled for margin.
double rms_norm_error_ratio(const std::vector<float>& x, const float* scale, float eps, const std::vector<float>& y,
                            i64 rows, i64 cols) {
  double worst = 0.0;
  for (i64 r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    double ms = 0.0;
    for (i64 j = 0; j < cols; ++j) ms += static_cast<double>(xr[j]) * xr[j];
    ms /= static_cast<double>(cols);
    const double rs = 1.0 / std::sqrt(ms + static_cast<double>(eps));
    for (i64 j = 0; j < cols; ++j) {
      const double ref = xr[j] * rs * (scale ? scale[j] : 1.0);
      const double bound = 2.0 * ((static_cast<double>(cols) + 1.0) / 2.0 + 6.0) * kUnit * std::fabs(ref) + 1e-30;
      worst = std::max(worst, std::fabs(y[static_cast<std::size_t>(r * cols + j)] - ref) / bound);
    }
  }
  return worst;
}

}  // namespace

TEST_CASE("layer_norm_rows matches a double reference at odd sizes on every tier", "[kernels][norm]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto layer_norm = k::select(k::kLayerNormRows, isa);
    for (i64 rows : {1, 3, 7})
      for (i64 cols : kNormCols) {
        // An offset mean (as in real activations) exercises the two-pass variance.
        const auto x =
            random_floats(static_cast<std::size_t>(rows * cols), static_cast<std::uint32_t>(cols), -2.0f, 3.0f);
        const auto scale = random_floats(static_cast<std::size_t>(cols), 2, 0.5f, 1.5f);
        const auto bias = random_floats(static_cast<std::size_t>(cols), 3, -0.5f, 0.5f);
        std::vector<float> y(x.size()), y_ref(x.size());
        layer_norm(x.data(), scale.data(), bias.data(), 1e-5f, y.data(), rows, cols);
        k::ref::layer_norm_rows(x.data(), scale.data(), bias.data(), 1e-5f, y_ref.data(), rows, cols);
        INFO(k::isa_name(isa) << " rows=" << rows << " cols=" << cols);
        REQUIRE(layer_norm_error_ratio(x, scale.data(), bias.data(), 1e-5f, y, rows, cols) <= 1.0);
        if (isa == k::Isa::ref) REQUIRE(y == y_ref);
        // Without scale and bias.
        std::vector<float> plain(x.size());
        layer_norm(x.data(), nullptr, nullptr, 1e-5f, plain.data(), rows, cols);
        REQUIRE(layer_norm_error_ratio(x, nullptr, nullptr, 1e-5f, plain, rows, cols) <= 1.0);
        // In place gives the same bits as out of place.
        std::vector<float> z = x;
        layer_norm(z.data(), scale.data(), bias.data(), 1e-5f, z.data(), rows, cols);
        REQUIRE(z == y);
      }
  }
}

TEST_CASE("layer_norm_rows: a constant row gives the bias (eps keeps it finite)", "[kernels][norm]") {
  std::vector<float> x(16, 3.25f), y(16);
  const auto bias = random_floats(16, 5, -1.0f, 1.0f);
  const auto scale = random_floats(16, 6, 0.5f, 1.5f);
  k::layer_norm_rows(x.data(), scale.data(), bias.data(), 1e-5f, y.data(), 1, 16);
  CHECK(y == bias);
}

TEST_CASE("rms_norm_rows matches a double reference at odd sizes on every tier", "[kernels][norm]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto rms_norm = k::select(k::kRmsNormRows, isa);
    for (i64 rows : {1, 3, 7})
      for (i64 cols : kNormCols) {
        const auto x =
            random_floats(static_cast<std::size_t>(rows * cols), static_cast<std::uint32_t>(cols) + 9, -2.0f, 3.0f);
        const auto scale = random_floats(static_cast<std::size_t>(cols), 10, 0.5f, 1.5f);
        std::vector<float> y(x.size()), y_ref(x.size());
        rms_norm(x.data(), scale.data(), 1e-6f, y.data(), rows, cols);
        k::ref::rms_norm_rows(x.data(), scale.data(), 1e-6f, y_ref.data(), rows, cols);
        INFO(k::isa_name(isa) << " rows=" << rows << " cols=" << cols);
        REQUIRE(rms_norm_error_ratio(x, scale.data(), 1e-6f, y, rows, cols) <= 1.0);
        if (isa == k::Isa::ref) REQUIRE(y == y_ref);
        std::vector<float> plain(x.size());
        rms_norm(x.data(), nullptr, 1e-6f, plain.data(), rows, cols);
        REQUIRE(rms_norm_error_ratio(x, nullptr, 1e-6f, plain, rows, cols) <= 1.0);
        std::vector<float> z = x;
        rms_norm(z.data(), scale.data(), 1e-6f, z.data(), rows, cols);
        REQUIRE(z == y);
      }
  }
}

TEST_CASE("norms: the dispatched entry is the active tier's, on 1 or 2 threads", "[kernels][norm]") {
  const i64 rows = 37, cols = 129;
  const auto x = random_floats(static_cast<std::size_t>(rows * cols), 21, -2.0f, 3.0f);
  const auto scale = random_floats(static_cast<std::size_t>(cols), 22, 0.5f, 1.5f);
  const auto bias = random_floats(static_cast<std::size_t>(cols), 23, -0.5f, 0.5f);
  std::vector<float> ln(x.size()), rms(x.size());
  k::select(k::kLayerNormRows, k::active_isa())(x.data(), scale.data(), bias.data(), 1e-5f, ln.data(), rows, cols);
  k::select(k::kRmsNormRows, k::active_isa())(x.data(), scale.data(), 1e-6f, rms.data(), rows, cols);
  const int threads_before = nnx::num_threads();
  const auto work_before = k::parallel_min_work();
  for (int threads : {1, 2}) {
    k::set_thread_count(threads);
    k::set_parallel_min_work(1);  // split even these small rows between the threads
    std::vector<float> y(x.size());
    k::layer_norm_rows(x.data(), scale.data(), bias.data(), 1e-5f, y.data(), rows, cols);
    CHECK(y == ln);
    k::rms_norm_rows(x.data(), scale.data(), 1e-6f, y.data(), rows, cols);
    CHECK(y == rms);
  }
  k::set_thread_count(threads_before);
  k::set_parallel_min_work(work_before);
}

TEST_CASE("rms_norm_rows: a zero row stays zero; rows are independent", "[kernels][norm]") {
  std::vector<float> x(2 * 8, 0.0f), y(16, 1.0f);
  const auto tail = random_floats(8, 11, -1.0f, 1.0f);
  std::copy(tail.begin(), tail.end(), x.begin() + 8);
  const auto scale = random_floats(8, 12, 0.5f, 1.5f);
  k::rms_norm_rows(x.data(), scale.data(), 1e-6f, y.data(), 2, 8);
  for (int j = 0; j < 8; ++j) CHECK(y[static_cast<std::size_t>(j)] == 0.0f);
  std::vector<float> one(8);
  k::rms_norm_rows(tail.data(), scale.data(), 1e-6f, one.data(), 1, 8);
  CHECK(std::equal(one.begin(), one.end(), y.begin() + 8));
}
