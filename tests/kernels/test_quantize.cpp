// Tests for nnx/kernels/quantize.hpp (and ref/, avx2/, avx512/): AQT absmax numerics against a scalar
// reference written here (float division as specified, an explicit half-to-even rounding),
// exact ties and clipping, all-zero and non-finite rows, the columns variant against the
// rows one on the transpose, the AVX2 path bit for bit against the portable one, leading
// dimensions, and thread-count independence.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nnx/kernels/quantize.hpp"
#include "nnx/ops/threads.hpp"

#include "../support/numeric.hpp"
#include "../support/thread_settings.hpp"
#include "../support/tier.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::ThreadSettings;
using test_support::bits;
using test_support::random_floats;
using test_support::same_bits;

// Rows whose magnitudes differ wildly (as activations do): row r scaled by 10^(r % 7 - 3).
std::vector<float> random_rows(i64 rows, i64 ld, std::uint32_t seed) {
  auto v = random_floats(static_cast<std::size_t>(rows * ld), seed);
  for (i64 r = 0; r < rows; ++r)
    for (i64 c = 0; c < ld; ++c) v[static_cast<std::size_t>(r * ld + c)] *= std::pow(10.0f, float(r % 7 - 3));
  return v;
}

// Half-to-even written without nearbyint, so the kernels are not checked against themselves.
double round_half_even(double v) {
  const double f = std::floor(v), d = v - f;
  if (d > 0.5) return f + 1.0;
  if (d < 0.5) return f;
  return std::fmod(f, 2.0) == 0.0 ? f : f + 1.0;
}

// The specification, one row: scale = amax / 127.5f in float (1 for zero), q from the float
// quotient x / scale, rounded half to even and clipped.
void reference_row(i64 K, const float* x, i64 stride, std::int8_t* q, float* scale) {
  float amax = 0.0f;
  for (i64 kk = 0; kk < K; ++kk) amax = std::max(amax, std::fabs(x[kk * stride]));
  const float s = amax == 0.0f ? 1.0f : amax / 127.5f;
  *scale = s;
  for (i64 kk = 0; kk < K; ++kk) {
    const float v = x[kk * stride] / s;
    q[kk] = static_cast<std::int8_t>(std::clamp(round_half_even(v), -127.0, 127.0));
  }
}

using RowsFn = void (*)(i64, i64, const float*, i64, std::int8_t*, i64, float*);
using ColsFn = void (*)(i64, i64, const float*, i64, std::int8_t*, i64, float*);
using DequantFn = void (*)(i64, i64, const std::int8_t*, i64, const float*, float*, i64);

struct QuantizePath {
  const char* name;
  RowsFn rows;
  ColsFn cols;
  DequantFn dequant;
};

// The dispatching entry points and every tier this CPU runs, with the kernels it dispatches to
// (its own, or the tier's below where it has none).
std::vector<QuantizePath> quantize_paths() {
  std::vector<QuantizePath> p{{"dispatch", &k::quantize_rows_absmax, &k::quantize_columns_absmax, &k::dequantize_rows}};
  for (k::Isa isa : k::kAllIsas)
    if (k::isa_supported(isa))
      p.push_back({k::isa_name(isa).data(), k::select(k::kQuantizeRowsAbsmax, isa),
                   k::select(k::kQuantizeColumnsAbsmax, isa), k::select(k::kDequantizeRows, isa)});
  return p;
}

const i64 kRows[] = {1, 2, 3, 7, 9, 33};
const i64 kCols[] = {1, 5, 17, 63, 130};
const i64 kDepths[] = {1, 3, 31, 32, 33, 100, 257};

}  // namespace

TEST_CASE("quantize_rows_absmax matches the specification at odd sizes on every path", "[kernels][quantize]") {
  for (const QuantizePath& p : quantize_paths())
    for (i64 M : kRows)
      for (i64 K : kDepths) {
        const i64 ldx = K + 3, ldq = K + 5;
        const auto x = random_rows(M, ldx, 11u + static_cast<std::uint32_t>(M * 31 + K));
        std::vector<std::int8_t> q(static_cast<std::size_t>(M * ldq), std::int8_t{99});
        std::vector<float> scale(static_cast<std::size_t>(M), -1.0f);
        p.rows(M, K, x.data(), ldx, q.data(), ldq, scale.data());
        INFO(p.name << " M=" << M << " K=" << K);
        std::vector<std::int8_t> want(static_cast<std::size_t>(K));
        for (i64 m = 0; m < M; ++m) {
          float s = 0.0f;
          reference_row(K, x.data() + m * ldx, 1, want.data(), &s);
          REQUIRE(bits(scale[static_cast<std::size_t>(m)]) == bits(s));
          for (i64 kk = 0; kk < K; ++kk)
            REQUIRE(q[static_cast<std::size_t>(m * ldq + kk)] == want[static_cast<std::size_t>(kk)]);
          for (i64 kk = K; kk < ldq; ++kk)
            REQUIRE(q[static_cast<std::size_t>(m * ldq + kk)] == 99);  // padding untouched
        }
      }
}

TEST_CASE("quantize_columns_absmax matches the specification and the rows variant on the transpose",
          "[kernels][quantize]") {
  for (const QuantizePath& p : quantize_paths())
    for (i64 N : kCols)
      for (i64 K : kDepths) {
        const i64 ldw = N + 2, ldq = K + 7;
        const auto w =
            random_floats(static_cast<std::size_t>(K * ldw), 21u + static_cast<std::uint32_t>(N * 17 + K), -3.0f, 3.0f);
        std::vector<std::int8_t> q(static_cast<std::size_t>(N * ldq), std::int8_t{99});
        std::vector<float> scale(static_cast<std::size_t>(N), -1.0f);
        p.cols(K, N, w.data(), ldw, q.data(), ldq, scale.data());
        // The transpose, quantized per row.
        std::vector<float> wt(static_cast<std::size_t>(N * K));
        for (i64 n = 0; n < N; ++n)
          for (i64 kk = 0; kk < K; ++kk)
            wt[static_cast<std::size_t>(n * K + kk)] = w[static_cast<std::size_t>(kk * ldw + n)];
        std::vector<std::int8_t> qt(static_cast<std::size_t>(N * K));
        std::vector<float> st(static_cast<std::size_t>(N));
        p.rows(N, K, wt.data(), K, qt.data(), K, st.data());
        INFO(p.name << " N=" << N << " K=" << K);
        REQUIRE(same_bits(scale, st));
        std::vector<std::int8_t> want(static_cast<std::size_t>(K));
        for (i64 n = 0; n < N; ++n) {
          float s = 0.0f;
          reference_row(K, w.data() + n, ldw, want.data(), &s);
          REQUIRE(bits(scale[static_cast<std::size_t>(n)]) == bits(s));
          for (i64 kk = 0; kk < K; ++kk) {
            REQUIRE(q[static_cast<std::size_t>(n * ldq + kk)] == want[static_cast<std::size_t>(kk)]);
            REQUIRE(qt[static_cast<std::size_t>(n * K + kk)] == want[static_cast<std::size_t>(kk)]);
          }
          for (i64 kk = K; kk < ldq; ++kk) REQUIRE(q[static_cast<std::size_t>(n * ldq + kk)] == 99);
        }
      }
}

TEST_CASE("quantization rounds exact ties half to even and clips the maximum to 127", "[kernels][quantize]") {
  // The row's max is 127.5, so scale = 1 exactly and every value below is its own quotient.
  const std::vector<float> row = {127.5f, 0.5f,    1.5f,        2.5f,  -0.5f, -2.5f, 3.5f,  -1.5f, -127.5f,
                                  126.5f, -126.5f, 4.5f,        2.4f,  -3.5f, 0.0f,  -0.0f, 5.5f,  6.5f,
                                  100.5f, -101.5f, 0.49999997f, 1.0f,  -1.0f, 7.5f,  8.5f,  9.5f,  10.5f,
                                  11.5f,  12.5f,   13.5f,       14.5f, 15.5f, 16.5f, -16.5f};
  const std::vector<std::int8_t> want = {127, 0,   2,    2, -0, -2, 4, -2, -127, 126, -126, 4,  2,  -4, 0,  0,  6,
                                         6,   100, -102, 0, 1,  -1, 8, 8,  10,   10,  12,   12, 14, 14, 16, 16, -16};
  REQUIRE(row.size() == want.size());
  const i64 K = static_cast<i64>(row.size());
  // Also as a column of a [K, 9] matrix (the other columns random), to cover the strips.
  const i64 N = 9, col = 4;
  auto w = random_floats(static_cast<std::size_t>(K * N), 5);
  for (i64 kk = 0; kk < K; ++kk) w[static_cast<std::size_t>(kk * N + col)] = row[static_cast<std::size_t>(kk)];
  for (const QuantizePath& p : quantize_paths()) {
    INFO(p.name);
    std::vector<std::int8_t> q(static_cast<std::size_t>(K));
    float scale = 0.0f;
    p.rows(1, K, row.data(), K, q.data(), K, &scale);
    REQUIRE(scale == 1.0f);
    CHECK(q == want);

    std::vector<std::int8_t> qc(static_cast<std::size_t>(N * K));
    std::vector<float> sc(static_cast<std::size_t>(N));
    p.cols(K, N, w.data(), N, qc.data(), K, sc.data());
    REQUIRE(sc[col] == 1.0f);
    CHECK(std::vector<std::int8_t>(qc.begin() + col * K, qc.begin() + (col + 1) * K) == want);
  }
}

TEST_CASE("quantization ties are exact in every vector lane", "[kernels][quantize]") {
  // Rows of 40 values, each a multiple of 0.5 (ties at odd multiples), shifted so that each
  // position of the 32-wide loop and the scalar tail sees ties; one 127.5 per row sets scale 1.
  const i64 M = 5, K = 40;
  std::vector<float> x(static_cast<std::size_t>(M * K));
  for (i64 m = 0; m < M; ++m)
    for (i64 kk = 0; kk < K; ++kk)
      x[static_cast<std::size_t>(m * K + kk)] = kk == m ? 127.5f : 0.5f * static_cast<float>(((kk + 3 * m) % 61) - 30);
  for (const QuantizePath& p : quantize_paths()) {
    std::vector<std::int8_t> q(static_cast<std::size_t>(M * K));
    std::vector<float> s(static_cast<std::size_t>(M));
    p.rows(M, K, x.data(), K, q.data(), K, s.data());
    INFO(p.name);
    for (i64 m = 0; m < M; ++m) {
      REQUIRE(s[static_cast<std::size_t>(m)] == 1.0f);
      for (i64 kk = 0; kk < K; ++kk) {
        const double v = x[static_cast<std::size_t>(m * K + kk)];
        REQUIRE(q[static_cast<std::size_t>(m * K + kk)] ==
                static_cast<std::int8_t>(std::min(127.0, round_half_even(v))));
      }
    }
  }
}

TEST_CASE("all-zero rows and columns get scale 1 and zero q", "[kernels][quantize]") {
  const i64 M = 3, K = 37;
  auto x = random_floats(static_cast<std::size_t>(M * K), 7);
  for (i64 kk = 0; kk < K; ++kk) x[static_cast<std::size_t>(K + kk)] = (kk % 2) ? 0.0f : -0.0f;  // row 1
  for (const QuantizePath& p : quantize_paths()) {
    INFO(p.name);
    std::vector<std::int8_t> q(static_cast<std::size_t>(M * K), std::int8_t{5});
    std::vector<float> s(static_cast<std::size_t>(M));
    p.rows(M, K, x.data(), K, q.data(), K, s.data());
    REQUIRE(s[1] == 1.0f);
    for (i64 kk = 0; kk < K; ++kk) REQUIRE(q[static_cast<std::size_t>(K + kk)] == 0);
    REQUIRE(s[0] != 1.0f);

    // As columns: column 1 of a [K, 3] matrix is all zero.
    std::vector<float> w(static_cast<std::size_t>(K * M));
    for (i64 kk = 0; kk < K; ++kk)
      for (i64 m = 0; m < M; ++m) w[static_cast<std::size_t>(kk * M + m)] = x[static_cast<std::size_t>(m * K + kk)];
    std::vector<std::int8_t> qc(static_cast<std::size_t>(M * K), std::int8_t{5});
    std::vector<float> sc(static_cast<std::size_t>(M));
    p.cols(K, M, w.data(), M, qc.data(), K, sc.data());
    REQUIRE(sc == s);
    REQUIRE(qc == q);
  }
}

TEST_CASE("non-finite input gives a non-finite scale and zero q without harming other rows", "[kernels][quantize]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const i64 M = 4, K = 45;
  auto x = random_floats(static_cast<std::size_t>(M * K), 9);
  x[static_cast<std::size_t>(0 * K + 40)] = nan;  // row 0: NaN in the scalar tail
  x[static_cast<std::size_t>(1 * K + 3)] = inf;   // row 1: +inf
  x[static_cast<std::size_t>(1 * K + 20)] = -inf;
  x[static_cast<std::size_t>(2 * K + 7)] = -nan;  // row 2: NaN and inf
  x[static_cast<std::size_t>(2 * K + 8)] = inf;
  std::vector<std::vector<std::int8_t>> qs;
  std::vector<std::vector<float>> ss;
  for (const QuantizePath& p : quantize_paths()) {
    INFO(p.name);
    std::vector<std::int8_t> q(static_cast<std::size_t>(M * K), std::int8_t{5});
    std::vector<float> s(static_cast<std::size_t>(M));
    p.rows(M, K, x.data(), K, q.data(), K, s.data());
    CHECK(std::isnan(s[0]));
    CHECK(std::isinf(s[1]));
    CHECK(std::isnan(s[2]));
    for (i64 m = 0; m < 3; ++m)
      for (i64 kk = 0; kk < K; ++kk) REQUIRE(q[static_cast<std::size_t>(m * K + kk)] == 0);
    std::vector<std::int8_t> want(static_cast<std::size_t>(K));
    float s3 = 0.0f;
    reference_row(K, x.data() + 3 * K, 1, want.data(), &s3);
    CHECK(s[3] == s3);
    CHECK(std::vector<std::int8_t>(q.begin() + 3 * K, q.end()) == want);
    qs.push_back(q);
    ss.push_back(s);
  }
  for (std::size_t i = 1; i < qs.size(); ++i) {
    CHECK(qs[i] == qs[0]);
    CHECK(same_bits(ss[i], ss[0]));
  }
}

TEST_CASE("the AVX2 quantizers give the portable bits on wide-ranging data", "[kernels][quantize][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx2", k::isa_supported(k::Isa::avx2))) return;
  for (i64 M : {1, 7, 33})
    for (i64 K : {8, 31, 64, 257, 768, 1000}) {
      // Values spread over many binades, denormals and exact multiples of scale / 2.
      auto x = random_floats(static_cast<std::size_t>(M * K), 31u + static_cast<std::uint32_t>(K));
      std::mt19937 gen(static_cast<std::uint32_t>(M * K));
      for (auto& v : x) v = std::ldexp(v, static_cast<int>(gen() % 60) - 30);
      x[0] = 1e-40f;  // a denormal
      if (M > 1)      // a row of denormals: its scale underflows to 0 or nearly
        for (i64 kk = 0; kk < K; ++kk)
          x[static_cast<std::size_t>(K + kk)] = std::ldexp(x[static_cast<std::size_t>(K + kk)], -140);
      std::vector<std::int8_t> qr(static_cast<std::size_t>(M * K)), qa(qr.size());
      std::vector<float> sr(static_cast<std::size_t>(M)), sa(sr.size());
      k::ref::quantize_rows_absmax(M, K, x.data(), K, qr.data(), K, sr.data());
      k::avx2::quantize_rows_absmax(M, K, x.data(), K, qa.data(), K, sa.data());
      INFO("rows M=" << M << " K=" << K);
      REQUIRE(qa == qr);
      REQUIRE(same_bits(sa, sr));
      // The same buffer as a [M, K] float kernel quantized per column (N = K, depth M).
      std::vector<std::int8_t> cr(static_cast<std::size_t>(M * K)), ca(cr.size());
      std::vector<float> tr(static_cast<std::size_t>(K)), ta(tr.size());
      k::ref::quantize_columns_absmax(M, K, x.data(), K, cr.data(), M, tr.data());
      k::avx2::quantize_columns_absmax(M, K, x.data(), K, ca.data(), M, ta.data());
      INFO("columns");
      REQUIRE(ca == cr);
      REQUIRE(same_bits(ta, tr));
      std::vector<float> dr(static_cast<std::size_t>(M * K)), da(dr.size());
      k::ref::dequantize_rows(M, K, qr.data(), K, sr.data(), dr.data(), K);
      k::avx2::dequantize_rows(M, K, qr.data(), K, sr.data(), da.data(), K);
      REQUIRE(same_bits(da, dr));
    }
#else
  test_support::skip_tier("avx2", false);  // AVX2 kernels not compiled on this platform
#endif
}

TEST_CASE("the avx512 quantizers give avx2's bits at every tail length and on special values",
          "[kernels][quantize][avx512]") {
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
#if NNX_KERNELS_X86_DISPATCH
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  // K of every length mod 64 up to 130 (the 64-wide loop, 16-wide masked tails), and long rows.
  std::vector<i64> depths;
  for (i64 K = 1; K <= 130; ++K) depths.push_back(K);
  for (i64 K : {768, 1000, 3072, 4096 + 17}) depths.push_back(K);
  for (i64 K : depths) {
    const i64 M = 6, ldx = K + 5, ldq = K + 3;
    auto x = random_floats(static_cast<std::size_t>(M * ldx), 51u + static_cast<std::uint32_t>(K));
    std::mt19937 gen(static_cast<std::uint32_t>(K));
    for (auto& v : x) v = std::ldexp(v, static_cast<int>(gen() % 60) - 30);  // many binades
    const auto at = [&](i64 m, i64 kk) -> float& { return x[static_cast<std::size_t>(m * ldx + kk)]; };
    // Row 1: ties at scale 1 (max 127.5 in the last element, the tail); row 2: a NaN last;
    // row 3: an inf and a -0.0; row 4: all zeros and -0.0; row 5: denormals.
    for (i64 kk = 0; kk < K; ++kk) {
      at(1, kk) = 0.5f * static_cast<float>((kk * 7) % 255 - 127);
      at(4, kk) = (kk % 2) ? 0.0f : -0.0f;
      at(5, kk) = std::ldexp(at(5, kk), -120);
    }
    at(1, K - 1) = -127.5f;
    at(2, K - 1) = nan;
    at(3, K / 2) = -inf;
    at(3, 0) = -0.0f;
    std::vector<std::int8_t> qa(static_cast<std::size_t>(M * ldq), std::int8_t{99}), qb = qa;
    std::vector<float> sa(static_cast<std::size_t>(M)), sb(sa.size());
    k::avx2::quantize_rows_absmax(M, K, x.data(), ldx, qa.data(), ldq, sa.data());
    k::avx512::quantize_rows_absmax(M, K, x.data(), ldx, qb.data(), ldq, sb.data());
    INFO("K=" << K);
    REQUIRE(qb == qa);  // padding bytes included: both leave them at 99
    REQUIRE(same_bits(sb, sa));
    REQUIRE(sb[1] == 1.0f);
    REQUIRE(std::isnan(sb[2]));

    std::vector<float> da(static_cast<std::size_t>(M * ldx), 7.0f), db = da;
    k::avx2::dequantize_rows(M, K, qa.data(), ldq, sa.data(), da.data(), ldx);
    k::avx512::dequantize_rows(M, K, qa.data(), ldq, sa.data(), db.data(), ldx);
    REQUIRE(same_bits(db, da));
  }
#endif
}

TEST_CASE("dequantize_rows gives q * scale and honours leading dimensions", "[kernels][quantize]") {
  const i64 N = 13, K = 41, ldq = K + 3, ldw = K + 2;
  std::vector<std::int8_t> q(static_cast<std::size_t>(N * ldq));
  std::mt19937 gen(3);
  for (auto& v : q) v = static_cast<std::int8_t>(static_cast<int>(gen() % 255) - 127);
  const auto scale = random_floats(static_cast<std::size_t>(N), 4, 0.001f, 2.0f);
  for (const QuantizePath& p : quantize_paths()) {
    INFO(p.name);
    std::vector<float> w(static_cast<std::size_t>(N * ldw), 7.0f);
    p.dequant(N, K, q.data(), ldq, scale.data(), w.data(), ldw);
    for (i64 n = 0; n < N; ++n) {
      for (i64 kk = 0; kk < K; ++kk)
        REQUIRE(w[static_cast<std::size_t>(n * ldw + kk)] ==
                static_cast<float>(q[static_cast<std::size_t>(n * ldq + kk)]) * scale[static_cast<std::size_t>(n)]);
      for (i64 kk = K; kk < ldw; ++kk) REQUIRE(w[static_cast<std::size_t>(n * ldw + kk)] == 7.0f);
    }
  }
}

TEST_CASE("quantize then dequantize is within half a step of the input", "[kernels][quantize]") {
  const i64 M = 9, K = 300;
  const auto x = random_rows(M, K, 77);
  std::vector<std::int8_t> q(static_cast<std::size_t>(M * K));
  std::vector<float> s(static_cast<std::size_t>(M)), back(static_cast<std::size_t>(M * K));
  k::quantize_rows_absmax(M, K, x.data(), K, q.data(), K, s.data());
  k::dequantize_rows(M, K, q.data(), K, s.data(), back.data(), K);
  for (i64 m = 0; m < M; ++m)
    for (i64 kk = 0; kk < K; ++kk) {
      const std::size_t i = static_cast<std::size_t>(m * K + kk);
      // Half a step, plus the clipping of the top half step, plus float rounding.
      REQUIRE(std::fabs(back[i] - x[i]) <= 0.5001f * s[static_cast<std::size_t>(m)] + 1e-6f * std::fabs(x[i]));
    }
}

TEST_CASE("quantizers give the same bits on any thread count", "[kernels][quantize][determinism]") {
  ThreadSettings restore;
  const i64 M = 37, K = 129, N = 131;
  const auto x = random_rows(M, K, 41);
  const auto w = random_floats(static_cast<std::size_t>(K * N), 42);
  std::vector<std::vector<std::int8_t>> q1, q2;
  std::vector<std::vector<float>> s1, s2;
  for (int threads : {1, 2, 3}) {
    nnx::set_num_threads(threads);
    k::set_parallel_min_work(1);
    std::vector<std::int8_t> qr(static_cast<std::size_t>(M * K)), qc(static_cast<std::size_t>(N * K));
    std::vector<float> sr(static_cast<std::size_t>(M)), sc(static_cast<std::size_t>(N));
    k::quantize_rows_absmax(M, K, x.data(), K, qr.data(), K, sr.data());
    k::quantize_columns_absmax(K, N, w.data(), N, qc.data(), K, sc.data());
    q1.push_back(qr);
    q2.push_back(qc);
    s1.push_back(sr);
    s2.push_back(sc);
  }
  for (std::size_t i = 1; i < q1.size(); ++i) {
    CHECK(q1[i] == q1[0]);
    CHECK(q2[i] == q2[0]);
    CHECK(same_bits(s1[i], s1[0]));
    CHECK(same_bits(s2[i], s2[0]));
  }
}
