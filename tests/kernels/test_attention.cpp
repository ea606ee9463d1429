// Tests for nnx/kernels/attention.hpp: every tier's grouped kernel against a double-precision
// reference at odd head sizes, key counts and group sizes, over interleaved heads (strides
// > D), and NaN.
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

}  // namespace

// The grouped kernel with its online softmax: every tier against the double reference, for
// every head of a group, over key counts crossing the block size (256) and head groups larger
// than the heads done in one pass (16); nothing written outside the heads' outputs.
TEST_CASE("attend_group_f32 on every tier matches a double reference", "[kernels][attention]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto fn = k::select(k::kAttendGroupF32, isa);
    double worst = 0;
    std::uint32_t seed = 100;
    for (i64 D : {1, 7, 8, 13, 32, 64, 67, 80, 128})
      for (i64 n : {1, 5, 63, 64, 65, 130, 517})
        for (i64 G : {1, 2, 4, 5, 17}) {
          if (D * n * G > 400000) continue;
          const i64 kv_heads = 2, kv_stride = kv_heads * D;  // the second of two interleaved KV heads
          const i64 q_stride = D + 3, out_stride = D + 5;
          const auto q = random_floats(static_cast<std::size_t>(G * q_stride), seed++, -2.0f, 2.0f);
          const auto keys = random_floats(static_cast<std::size_t>(n * kv_stride), seed++, -2.0f, 2.0f);
          const auto values = random_floats(static_cast<std::size_t>(n * kv_stride), seed++, -1.0f, 1.0f);
          std::vector<float> out(static_cast<std::size_t>(G * out_stride), 7.0f);
          const float scale = 1.0f / std::sqrt(static_cast<float>(D));
          fn(q.data(), q_stride, G, keys.data() + D, values.data() + D, kv_stride, n, D, scale, out.data(), out_stride);
          INFO(k::isa_name(isa) << " D=" << D << " n=" << n << " G=" << G);
          for (i64 g = 0; g < G; ++g) {
            const auto ref = attend_double(q.data() + g * q_stride, keys.data() + D, values.data() + D, kv_stride, n, D,
                                           scale);
            for (i64 d = 0; d < D; ++d)
              worst = std::max(worst, std::fabs(out[static_cast<std::size_t>(g * out_stride + d)] -
                                                ref[static_cast<std::size_t>(d)]));
            for (i64 d = D; d < out_stride; ++d) REQUIRE(out[static_cast<std::size_t>(g * out_stride + d)] == 7.0f);
          }
        }
    INFO(k::isa_name(isa) << " worst error " << worst);
    CHECK(worst < 1e-6);
    // A NaN in one key makes that head's output NaN (every head of the group reads it).
    const i64 D = 16, n = 70, G = 2;
    auto keys = random_floats(static_cast<std::size_t>(n * D), 7, -1.0f, 1.0f);
    const auto values = random_floats(static_cast<std::size_t>(n * D), 8, -1.0f, 1.0f);
    const auto q = random_floats(static_cast<std::size_t>(G * D), 9, -1.0f, 1.0f);
    keys[static_cast<std::size_t>(66 * D + 3)] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(static_cast<std::size_t>(G * D));
    fn(q.data(), D, G, keys.data(), values.data(), D, n, D, 0.25f, out.data(), D);
    for (float o : out) CHECK(std::isnan(o));
  }
}
