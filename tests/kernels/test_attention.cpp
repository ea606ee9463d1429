// Tests for nnx/kernels/attention.hpp: the portable and AVX2 kernels against a double-precision
// reference at odd head sizes and key counts, over interleaved heads (stride > D), and NaN.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nnx/kernels/attention.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using AttendFn = void (*)(const float*, const float*, const float*, i64, i64, i64, float, float*, float*);

std::vector<float> random_floats(std::size_t n, std::uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// softmax(scale q.k_j) . v_j in double.
std::vector<double> attend_double(const float* q, const float* keys, const float* values, i64 stride, i64 n, i64 D,
                                  float scale) {
  std::vector<double> s(static_cast<std::size_t>(n));
  double m = -INFINITY;
  for (i64 j = 0; j < n; ++j) {
    double dot = 0;
    for (i64 d = 0; d < D; ++d) dot += static_cast<double>(q[d]) * keys[j * stride + d];
    s[static_cast<std::size_t>(j)] = dot * scale;
    m = std::max(m, s[static_cast<std::size_t>(j)]);
  }
  double total = 0;
  for (auto& x : s) total += (x = std::exp(x - m));
  std::vector<double> out(static_cast<std::size_t>(D), 0.0);
  for (i64 j = 0; j < n; ++j)
    for (i64 d = 0; d < D; ++d) out[static_cast<std::size_t>(d)] += s[static_cast<std::size_t>(j)] / total * values[j * stride + d];
  return out;
}

// Largest |out - double reference| over random problems, relative to max |v| (the outputs
// are convex combinations of the values).
double worst_error(AttendFn fn) {
  double worst = 0;
  std::uint32_t seed = 1;
  for (i64 D : {1, 5, 8, 13, 32, 36, 64, 67, 128})
    for (i64 n : {1, 3, 4, 7, 9, 33, 130, 517}) {
      const i64 heads = 3, stride = heads * D;  // the middle of three interleaved heads
      const auto q = random_floats(static_cast<std::size_t>(D), seed++, -2.0f, 2.0f);
      const auto keys = random_floats(static_cast<std::size_t>(n * stride), seed++, -2.0f, 2.0f);
      const auto values = random_floats(static_cast<std::size_t>(n * stride), seed++, -1.0f, 1.0f);
      std::vector<float> scores(static_cast<std::size_t>(n)), out(static_cast<std::size_t>(D) + 1, 7.0f);
      const float scale = 1.0f / std::sqrt(static_cast<float>(D));
      fn(q.data(), keys.data() + D, values.data() + D, stride, n, D, scale, scores.data(), out.data());
      const auto ref = attend_double(q.data(), keys.data() + D, values.data() + D, stride, n, D, scale);
      for (i64 d = 0; d < D; ++d)
        worst = std::max(worst, std::fabs(out[static_cast<std::size_t>(d)] - ref[static_cast<std::size_t>(d)]));
      REQUIRE(out[static_cast<std::size_t>(D)] == 7.0f);  // nothing written past D
    }
  return worst;
}

}  // namespace

TEST_CASE("attend_f32 (portable) matches a double reference", "[kernels][attention]") {
  const double err = worst_error(&k::ref::attend_f32);
  INFO("worst error " << err);
  CHECK(err < 1e-6);
}

TEST_CASE("attend_f32 (AVX2) matches a double reference and the portable kernel", "[kernels][attention][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (!k::isa_supported(k::Isa::avx2)) {
    WARN("CPU without AVX2+FMA: AVX2 attention not tested");
    return;
  }
  const double err = worst_error(&k::avx2::attend_f32);
  INFO("worst error " << err);
  CHECK(err < 1e-6);
#else
  WARN("not an x86-64 GCC/Clang build: no AVX2 attention");
#endif
}

TEST_CASE("attend_f32: a NaN score makes the output NaN; one key returns its value", "[kernels][attention]") {
  for (AttendFn fn : {&k::ref::attend_f32, &k::attend_f32}) {
    const i64 D = 11, n = 20;
    auto q = random_floats(D, 3, -1.0f, 1.0f);
    auto keys = random_floats(n * D, 4, -1.0f, 1.0f);
    const auto values = random_floats(n * D, 5, -1.0f, 1.0f);
    std::vector<float> scores(n), out(D);
    keys[13 * D + 2] = std::numeric_limits<float>::quiet_NaN();
    fn(q.data(), keys.data(), values.data(), D, n, D, 0.3f, scores.data(), out.data());
    for (float o : out) CHECK(std::isnan(o));
    // One key: softmax weight exactly 1, so the output is the value row.
    fn(q.data(), keys.data(), values.data(), D, 1, D, 0.3f, scores.data(), out.data());
    for (i64 d = 0; d < D; ++d) CHECK(out[static_cast<std::size_t>(d)] == values[static_cast<std::size_t>(d)]);
  }
}
