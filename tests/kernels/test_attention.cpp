// Tests for nnx/kernels/attention.hpp: every tier's kernel against a double-precision reference
// at odd head sizes, key counts, group sizes and runs of KV heads, over interleaved heads
// (strides > D), and NaN; a query head's result does not depend on the heads beside it; the
// avx512 kernel gives avx2's bits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/kernels/attention.hpp"
#include "../support/numeric.hpp"
#include "../support/tier.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::random_floats;

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

// A kernel (a tier's attend) over f32 rows kv_stride apart.
auto f32_kernel(k::AttendFn fn) {
  return [fn](const float* q, i64 q_row_stride, i64 q_stride, i64 R, const i64* n, i64 G, i64 Hk, const float* keys,
              const float* values, i64 kv_stride, i64 D, float scale, float* out, i64 out_row_stride, i64 out_stride) {
    fn(q, q_row_stride, q_stride, R, n, G, Hk, {keys, k::KvType::f32, kv_stride}, {values, k::KvType::f32, kv_stride},
       D, scale, out, out_row_stride, out_stride);
  };
}

// Key counts of R query rows over S cached keys: a causal prompt's diagonal for R = 64,
// scattered counts otherwise.
std::vector<i64> key_counts(i64 R, i64 S, i64 D, i64 G) {
  std::vector<i64> n(static_cast<std::size_t>(R));
  for (i64 r = 0; r < R; ++r) n[static_cast<std::size_t>(r)] = R == 64 ? 80 + r : (r * 41 + 3 * D + G) % S + 1;
  return n;
}

}  // namespace

// The kernel with its online softmax: every tier against the double reference, for every
// query head of every KV head of the run, over key counts crossing the block sizes (64, 256)
// and groups larger than the heads done in one pass (16); nothing written outside the heads'
// outputs.
TEST_CASE("attend_f32 on every tier matches a double reference", "[kernels][attention]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto fn = f32_kernel(k::select(k::kAttend, isa));
    double worst = 0;
    std::uint32_t seed = 100;
    for (i64 D : {1, 7, 8, 13, 32, 64, 67, 80, 128})
      for (i64 n : {1, 5, 63, 64, 65, 130, 517})
        for (i64 G : {1, 2, 4, 5, 17})
          for (i64 Hk : {1, 3}) {
            if (D * n * G * Hk > 400000) continue;
            // KV heads 1..Hk of Hk + 2 interleaved ones, so the run starts and ends inside a row.
            const i64 kv_heads = Hk + 2, kv_stride = kv_heads * D, H = G * Hk;
            const i64 q_stride = D + 3, out_stride = D + 5;
            const auto q = random_floats(static_cast<std::size_t>(H * q_stride), seed++, -2.0f, 2.0f);
            const auto keys = random_floats(static_cast<std::size_t>(n * kv_stride), seed++, -2.0f, 2.0f);
            const auto values = random_floats(static_cast<std::size_t>(n * kv_stride), seed++, -1.0f, 1.0f);
            std::vector<float> out(static_cast<std::size_t>(H * out_stride), 7.0f);
            const float scale = 1.0f / std::sqrt(static_cast<float>(D));
            fn(q.data(), 0, q_stride, 1, &n, G, Hk, keys.data() + D, values.data() + D, kv_stride, D, scale, out.data(),
               0, out_stride);
            INFO(k::isa_name(isa) << " D=" << D << " n=" << n << " G=" << G << " Hk=" << Hk);
            for (i64 f = 0; f < H; ++f) {
              const i64 kv = (1 + f / G) * D;
              const auto ref = attend_double(q.data() + f * q_stride, keys.data() + kv, values.data() + kv, kv_stride,
                                             n, D, scale);
              for (i64 d = 0; d < D; ++d)
                worst = std::max(worst, std::fabs(out[static_cast<std::size_t>(f * out_stride + d)] -
                                                  ref[static_cast<std::size_t>(d)]));
              for (i64 d = D; d < out_stride; ++d) REQUIRE(out[static_cast<std::size_t>(f * out_stride + d)] == 7.0f);
            }
            // Each KV head alone gives the same bits as in the run (threads split runs anywhere).
            if (Hk > 1) {
              std::vector<float> alone(out.size(), 7.0f);
              for (i64 h = 0; h < Hk; ++h)
                fn(q.data() + h * G * q_stride, 0, q_stride, 1, &n, G, 1, keys.data() + (1 + h) * D,
                   values.data() + (1 + h) * D, kv_stride, D, scale, alone.data() + h * G * out_stride, 0, out_stride);
              REQUIRE(alone == out);
            }
          }
    INFO(k::isa_name(isa) << " worst error " << worst);
    CHECK(worst < 1e-6);
    // A NaN in one key makes that KV head's outputs NaN (every head of the group reads it)
    // and leaves the other KV head's finite.
    const i64 D = 16, n = 70, G = 2;
    auto keys = random_floats(static_cast<std::size_t>(n * 2 * D), 7, -1.0f, 1.0f);
    const auto values = random_floats(static_cast<std::size_t>(n * 2 * D), 8, -1.0f, 1.0f);
    const auto q = random_floats(static_cast<std::size_t>(2 * G * D), 9, -1.0f, 1.0f);
    keys[static_cast<std::size_t>(66 * 2 * D + 3)] = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> out(static_cast<std::size_t>(2 * G * D));
    fn(q.data(), 0, D, 1, &n, G, 2, keys.data(), values.data(), 2 * D, D, 0.25f, out.data(), 0, D);
    for (i64 i = 0; i < G * D; ++i) CHECK(std::isnan(out[static_cast<std::size_t>(i)]));
    for (i64 i = G * D; i < 2 * G * D; ++i) CHECK(std::isfinite(out[static_cast<std::size_t>(i)]));
  }
}

// Query rows with their own key counts (a causal prompt, and rows of a batch), more rows than
// one pass holds: every tier against the double reference, and each row alone gives the same
// bits as in the run (prefill chunking and batching change nothing).
TEST_CASE("attend_f32 over many query rows on every tier", "[kernels][attention]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto fn = f32_kernel(k::select(k::kAttend, isa));
    std::uint32_t seed = 500;
    for (i64 D : {13, 64})
      for (i64 G : {1, 4})
        for (i64 Hk : {1, 3, 12})  // 12: an MHA decode's full and partial groups of 8 (head, row) pairs
          for (i64 R : {1, 7, 100}) {
            const i64 H = G * Hk, S = 300, kv_stride = Hk * D;
            const auto q = random_floats(static_cast<std::size_t>(R * H * D), seed++, -2.0f, 2.0f);
            const auto keys = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -2.0f, 2.0f);
            const auto values = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -1.0f, 1.0f);
            std::vector<i64> n(static_cast<std::size_t>(R));
            for (i64 r = 0; r < R; ++r) n[static_cast<std::size_t>(r)] = (r * 37 + 11) % S + 1;  // 1..S, unordered
            std::vector<float> out(q.size());
            const float scale = 1.0f / std::sqrt(static_cast<float>(D));
            fn(q.data(), H * D, D, R, n.data(), G, Hk, keys.data(), values.data(), kv_stride, D, scale, out.data(),
               H * D, D);
            INFO(k::isa_name(isa) << " D=" << D << " G=" << G << " Hk=" << Hk << " R=" << R);
            double worst = 0;
            for (i64 r = 0; r < R; ++r) {
              std::vector<float> alone(static_cast<std::size_t>(H * D));
              fn(q.data() + r * H * D, 0, D, 1, &n[static_cast<std::size_t>(r)], G, Hk, keys.data(), values.data(),
                 kv_stride, D, scale, alone.data(), 0, D);
              REQUIRE(std::equal(alone.begin(), alone.end(), out.begin() + r * H * D));
              for (i64 f = 0; f < H; ++f) {
                const auto ref = attend_double(q.data() + (r * H + f) * D, keys.data() + (f / G) * D,
                                               values.data() + (f / G) * D, kv_stride, n[static_cast<std::size_t>(r)],
                                               D, scale);
                for (i64 d = 0; d < D; ++d)
                  worst = std::max(worst, std::fabs(out[static_cast<std::size_t>((r * H + f) * D + d)] -
                                                    ref[static_cast<std::size_t>(d)]));
              }
            }
            CHECK(worst < 1e-6);
          }
  }
}

// The avx512 kernel lays the work out in tiles of (row, head) pairs but keeps avx2's order for
// every pair: the same bits at odd head sizes (8-lane tails), key counts inside and across
// blocks (a causal prompt's diagonal, unordered rows), groups (GQA tiles of one KV head) and
// runs of KV heads (a decode's tiles across heads), with prefill-sized runs of rows.
TEST_CASE("the avx512 attention gives avx2's bits", "[kernels][attention][avx512]") {
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
#if NNX_KERNELS_X86_DISPATCH
  std::uint32_t seed = 900;
  for (i64 D : {1, 7, 8, 13, 64, 67, 80, 128, 300})
    for (i64 G : {1, 3, 4})
      for (i64 Hk : {1, 2, 5})
        for (i64 R : {1, 2, 5, 64}) {
          const i64 H = G * Hk, S = 200, kv_stride = (Hk + 1) * D;
          const auto q = random_floats(static_cast<std::size_t>(R * H * D), seed++, -2.0f, 2.0f);
          const auto keys = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -2.0f, 2.0f);
          const auto values = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -1.0f, 1.0f);
          std::vector<i64> n(static_cast<std::size_t>(R));
          for (i64 r = 0; r < R; ++r)  // a causal diagonal for R = 64, scattered counts otherwise
            n[static_cast<std::size_t>(r)] = R == 64 ? 100 + r : (r * 61 + 7 * D + G) % S + 1;
          std::vector<float> out2(q.size()), out5(q.size());
          const float scale = 1.0f / std::sqrt(static_cast<float>(D));
          f32_kernel(&k::avx2::attend)(q.data(), H * D, D, R, n.data(), G, Hk, keys.data() + D, values.data() + D,
                                       kv_stride, D, scale, out2.data(), H * D, D);
          f32_kernel(&k::avx512::attend)(q.data(), H * D, D, R, n.data(), G, Hk, keys.data() + D, values.data() + D,
                                         kv_stride, D, scale, out5.data(), H * D, D);
          INFO("D=" << D << " G=" << G << " Hk=" << Hk << " R=" << R);
          REQUIRE(std::memcmp(out2.data(), out5.data(), out2.size() * sizeof(float)) == 0);
        }
#endif
}

// A bf16 cache is read directly: every tier's result over it is bitwise its result over f32
// rows holding the widened values, at odd head sizes, groups, runs of KV heads inside wider
// rows and runs of rows from a decode's one to a prefill's diagonal.
TEST_CASE("attend over bf16 rows gives the bits of their widened f32 values", "[kernels][attention]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const k::AttendFn fn = k::select(k::kAttend, isa);
    std::uint32_t seed = 1300;
    for (i64 D : {1, 7, 8, 13, 64, 67, 128, 256})
      for (i64 G : {1, 4})
        for (i64 Hk : {1, 3, 12})
          for (i64 R : {1, 5, 64}) {
            const i64 kv_heads = Hk + 1, H = G * Hk, S = 150, kv_stride = kv_heads * D;
            const auto q = random_floats(static_cast<std::size_t>(R * H * D), seed++, -2.0f, 2.0f);
            const auto kf = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -2.0f, 2.0f);
            const auto vf = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -1.0f, 1.0f);
            std::vector<std::uint16_t> kb(kf.size()), vb(vf.size());
            std::vector<float> kw(kf.size()), vw(vf.size());  // the same rows widened to f32
            for (std::size_t i = 0; i < kf.size(); ++i) {
              kb[i] = nnx::f32_to_bf16_bits(kf[i]);
              vb[i] = nnx::f32_to_bf16_bits(vf[i]);
              kw[i] = k::KvRows{kb.data(), k::KvType::bf16, 1}.value(static_cast<i64>(i), 0);
              vw[i] = k::KvRows{vb.data(), k::KvType::bf16, 1}.value(static_cast<i64>(i), 0);
            }
            const std::vector<i64> n = key_counts(R, S, D, G);
            const float scale = 1.0f / std::sqrt(static_cast<float>(D));
            const k::KvRows keys{kb.data(), k::KvType::bf16, kv_stride}, values{vb.data(), k::KvType::bf16, kv_stride};
            std::vector<float> want(q.size()), got(q.size());
            f32_kernel(fn)(q.data(), H * D, D, R, n.data(), G, Hk, kw.data() + D, vw.data() + D, kv_stride, D, scale,
                           want.data(), H * D, D);
            fn(q.data(), H * D, D, R, n.data(), G, Hk, keys.at(0, 1, D), values.at(0, 1, D), D, scale, got.data(),
               H * D, D);
            INFO(k::isa_name(isa) << " D=" << D << " G=" << G << " Hk=" << Hk << " R=" << R);
            REQUIRE(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)) == 0);
          }
  }
}

// An i8 cache is read as stored (integer scores against the query in int16): every tier
// within 1e-6 of a double-precision attention over the values the kernel reads (the int16
// query times its scale, each int8 row times its scale), each row alone gives the bits it
// gives in the run, and avx512 gives avx2's bits (the integer sums are exact).
TEST_CASE("attend over i8 rows matches a double reference over the stored values", "[kernels][attention]") {
  std::uint32_t seed = 1700;
  for (i64 D : {1, 7, 8, 13, 16, 64, 67, 128, 256})
    for (i64 G : {1, 4})
      for (i64 Hk : {1, 3, 12})  // 12: an MHA decode's full and partial groups of 8 (head, row) pairs
        for (i64 R : {1, 5, 64}) {
          const i64 kv_heads = Hk + 1, H = G * Hk, S = 150, kv_stride = kv_heads * D;
          const auto q = random_floats(static_cast<std::size_t>(R * H * D), seed++, -2.0f, 2.0f);
          const auto kf = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -1.0f, 1.0f);
          const auto vf = random_floats(static_cast<std::size_t>(S * kv_stride), seed++, -1.0f, 1.0f);
          // Keys within ±2 and values within ±1 once scaled, as in the f32 tests.
          auto scales = random_floats(static_cast<std::size_t>(2 * S * kv_heads), seed++, 0.004f, 0.0157f);
          for (std::size_t i = scales.size() / 2; i < scales.size(); ++i) scales[i] /= 2;
          std::vector<std::int8_t> ki(kf.size()), vi(vf.size());
          for (std::size_t i = 0; i < kf.size(); ++i) {
            ki[i] = static_cast<std::int8_t>(std::lround(kf[i] * 127.0f));
            vi[i] = static_cast<std::int8_t>(std::lround(vf[i] * 127.0f));
          }
          const k::KvRows keys{ki.data(), k::KvType::i8, kv_stride, scales.data(), kv_heads};
          const k::KvRows values{vi.data(), k::KvType::i8, kv_stride, scales.data() + S * kv_heads, kv_heads};
          const std::vector<i64> n = key_counts(R, S, D, G);
          const float scale = 1.0f / std::sqrt(static_cast<float>(D));
          // The double reference: every (row, query head) over the widened keys and values of KV
          // heads 1..Hk, with its query as the kernel quantizes it.
          std::vector<float> kw(kf.size()), vw(vf.size());
          for (i64 j = 0; j < S; ++j)
            for (i64 h = 0; h < kv_heads; ++h)
              for (i64 d = 0; d < D; ++d) {
                kw[static_cast<std::size_t>(j * kv_stride + h * D + d)] = keys.at(j, h, D).value(0, d);
                vw[static_cast<std::size_t>(j * kv_stride + h * D + d)] = values.at(j, h, D).value(0, d);
              }
          std::vector<std::vector<double>> want;
          for (i64 r = 0; r < R; ++r)
            for (i64 f = 0; f < H; ++f) {
              std::int16_t q16[k::kMaxCompactHeadDim];
              const float sq = k::ref::quantize_query_i16(q.data() + (r * H + f) * D, D, q16);
              std::vector<float> qq(static_cast<std::size_t>(D));
              for (i64 d = 0; d < D; ++d) qq[static_cast<std::size_t>(d)] = static_cast<float>(q16[d]) * sq;
              const i64 kv = (1 + f / G) * D;
              want.push_back(attend_double(qq.data(), kw.data() + kv, vw.data() + kv, kv_stride,
                                           n[static_cast<std::size_t>(r)], D, scale));
            }
          std::vector<float> avx2_out;
          for (k::Isa isa : k::kAllIsas) {
            if (!k::isa_supported(isa)) continue;
            const k::AttendFn fn = k::select(k::kAttend, isa);
            std::vector<float> got(q.size());
            fn(q.data(), H * D, D, R, n.data(), G, Hk, keys.at(0, 1, D), values.at(0, 1, D), D, scale, got.data(), H * D,
               D);
            INFO(k::isa_name(isa) << " D=" << D << " G=" << G << " Hk=" << Hk << " R=" << R);
            double worst = 0;
            for (i64 i = 0; i < R * H; ++i)
              for (i64 d = 0; d < D; ++d)
                worst = std::max(worst, std::fabs(got[static_cast<std::size_t>(i * D + d)] -
                                                  want[static_cast<std::size_t>(i)][static_cast<std::size_t>(d)]));
            CHECK(worst < 1e-6);
            const i64 r = R / 2;  // a row alone
            std::vector<float> alone(static_cast<std::size_t>(H * D));
            fn(q.data() + r * H * D, 0, D, 1, &n[static_cast<std::size_t>(r)], G, Hk, keys.at(0, 1, D),
               values.at(0, 1, D), D, scale, alone.data(), 0, D);
            REQUIRE(std::equal(alone.begin(), alone.end(), got.begin() + r * H * D));
            if (isa == k::Isa::avx2) avx2_out = got;
            if (isa == k::Isa::avx512)
              REQUIRE(std::memcmp(avx2_out.data(), got.data(), got.size() * sizeof(float)) == 0);
          }
        }
}

// An i8 element widens to float(q) * scale, and a NaN scale (a row quantized from a NaN) makes
// the row NaN; bf16 widens by a shift.
TEST_CASE("KvRows widens bf16 and i8 elements exactly", "[kernels][attention]") {
  const std::int8_t q[3] = {-127, 0, 5};
  const float scales[2] = {0.5f, std::numeric_limits<float>::quiet_NaN()};
  const k::KvRows rows{q, k::KvType::i8, 1, scales, 0};
  CHECK(rows.value(0, 0) == -63.5f);
  CHECK(rows.value(0, 2) == 2.5f);
  const k::KvRows nan_rows{q, k::KvType::i8, 1, scales + 1, 0};
  CHECK(std::isnan(nan_rows.value(0, 1)));
  const std::uint16_t b[2] = {0x3F80, 0xC040};  // 1.0, -3.0
  const k::KvRows bf{b, k::KvType::bf16, 2};
  CHECK(bf.value(0, 0) == 1.0f);
  CHECK(bf.value(0, 1) == -3.0f);
  CHECK(nnx::f32_to_bf16_bits(1.00390625f) == 0x3F80);  // a tie rounds to even
  CHECK(nnx::f32_to_bf16_bits(1.01171875f) == 0x3F82);
}
