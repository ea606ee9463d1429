// Tests for nnx/kernels/gemm_i8.hpp (and ref/, avx2/): gemm_i8_i8 bit for bit against an
// exact int64 reference on every path, gemm_f32_w8 within the summation error bound of a
// double-precision reference, leading dimensions, the saturation-prone extremes of the
// sign trick, quantize-then-multiply against the float product, and the properties the
// engine relies on: a row is bitwise the same alone (M = 1) or in a batch, and on any
// thread count.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nnx/kernels/gemm_i8.hpp"
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
using test_support::kUnit;
using test_support::random_floats;
using test_support::same_bits;

// Uniform in [-127, 127], the quantizers' range.
std::vector<std::int8_t> random_i8(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(-127, 127);
  std::vector<std::int8_t> v(n);
  for (auto& x : v) x = static_cast<std::int8_t>(dist(gen));
  return v;
}

using W8Fn = void (*)(i64, i64, i64, const float*, i64, const std::int8_t*, i64, const float*, float*, i64);
using I8Fn = void (*)(i64, i64, i64, const std::int8_t*, i64, const float*, const std::int8_t*, i64, const float*,
                      float*, i64);

struct I8Path {
  const char* name;
  W8Fn w8;
  I8Fn i8;
};

// The dispatching entry points and every tier this CPU runs, with the kernels it dispatches to
// (its own, or the tier's below where it has none).
std::vector<I8Path> i8_paths() {
  std::vector<I8Path> p{{"dispatch", &k::gemm_f32_w8, &k::gemm_i8_i8}};
  for (k::Isa isa : k::kAllIsas)
    if (k::isa_supported(isa))
      p.push_back({k::isa_name(isa).data(), k::select(k::kGemmF32W8, isa), k::select(k::kGemmI8I8, isa)});
#if NNX_KERNELS_X86_DISPATCH
  // The GEMV avx512 runs on AMD CPUs at one or two rows (kernels/gemm_i8.hpp).
  if (k::isa_supported(k::Isa::avx2))
    p.push_back({"avx2 one-stream", k::select(k::kGemmF32W8, k::Isa::avx2), &k::avx2::gemm_i8_i8_one_stream});
#endif
  return p;
}

// The W8A8 specification with an exact int64 sum: (float(acc) * xs[m]) * ws[n].
float i8_reference(i64 K, const std::int8_t* x, const std::int8_t* q, float xs, float ws) {
  std::int64_t acc = 0;
  for (i64 kk = 0; kk < K; ++kk) acc += std::int64_t{x[kk]} * std::int64_t{q[kk]};
  return (static_cast<float>(acc) * xs) * ws;
}

// |y - exact| / bound for one element of gemm_f32_w8: the exact value in double and the bound
// (K + 5) u Σ_k |x_k q_k ws| covers lane chains, the tree, the products and the final scaling.
double w8_error_ratio(i64 K, const float* x, const std::int8_t* q, float ws, float y) {
  double exact = 0.0, mag = 0.0;
  for (i64 kk = 0; kk < K; ++kk) {
    const double t = static_cast<double>(x[kk]) * static_cast<double>(q[kk]);
    exact += t;
    mag += std::fabs(t);
  }
  exact *= ws;
  mag *= std::fabs(ws);
  const double bound = static_cast<double>(K + 5) * kUnit * mag + 1e-30;
  return std::fabs(static_cast<double>(y) - exact) / bound;
}

const i64 kI8Rows[] = {1, 2, 3, 7, 9, 33};
const i64 kI8Cols[] = {1, 5, 17, 63, 130};
const i64 kI8Depths[] = {1, 3, 31, 32, 33, 100, 257};

struct I8Problem {
  i64 M, N, K, ldx, ldq, ldy;
  std::vector<float> x, xs, ws;
  std::vector<std::int8_t> xq, q;
  I8Problem(i64 M_, i64 N_, i64 K_, std::uint32_t seed, i64 pad = 0)
      : M(M_),
        N(N_),
        K(K_),
        ldx(K_ + pad),
        ldq(K_ + 2 * pad),
        ldy(N_ + pad),
        x(random_floats(static_cast<std::size_t>(M_ * (K_ + pad)), seed)),
        xs(random_floats(static_cast<std::size_t>(M_), seed + 1, 0.001f, 0.02f)),
        ws(random_floats(static_cast<std::size_t>(N_), seed + 2, 0.001f, 0.02f)),
        xq(random_i8(static_cast<std::size_t>(M_ * (K_ + pad)), seed + 3)),
        q(random_i8(static_cast<std::size_t>(N_ * (K_ + 2 * pad)), seed + 4)) {}
  std::vector<float> run_w8(W8Fn f) const {
    std::vector<float> y(static_cast<std::size_t>(M * ldy), 7.0f);
    f(M, N, K, x.data(), ldx, q.data(), ldq, ws.data(), y.data(), ldy);
    return y;
  }
  std::vector<float> run_i8(I8Fn f) const {
    std::vector<float> y(static_cast<std::size_t>(M * ldy), 7.0f);
    f(M, N, K, xq.data(), ldx, xs.data(), q.data(), ldq, ws.data(), y.data(), ldy);
    return y;
  }
};

}  // namespace

TEST_CASE("gemm_i8_i8 equals the exact int64 reference bit for bit on every path", "[kernels][gemm_i8]") {
  for (const I8Path& p : i8_paths())
    for (i64 M : kI8Rows)
      for (i64 N : kI8Cols)
        for (i64 K : kI8Depths) {
          const I8Problem pr(M, N, K, 100u + static_cast<std::uint32_t>(M * 1000 + N * 10 + K), 3);
          const auto y = pr.run_i8(p.i8);
          INFO(p.name << " M=" << M << " N=" << N << " K=" << K);
          for (i64 m = 0; m < M; ++m) {
            for (i64 n = 0; n < N; ++n) {
              const float want = i8_reference(K, pr.xq.data() + m * pr.ldx, pr.q.data() + n * pr.ldq,
                                              pr.xs[static_cast<std::size_t>(m)], pr.ws[static_cast<std::size_t>(n)]);
              REQUIRE(bits(y[static_cast<std::size_t>(m * pr.ldy + n)]) == bits(want));
            }
            for (i64 n = N; n < pr.ldy; ++n) REQUIRE(y[static_cast<std::size_t>(m * pr.ldy + n)] == 7.0f);
          }
        }
}

TEST_CASE("gemm_f32_w8 is within the summation error bound of a double reference on every path", "[kernels][gemm_i8]") {
  for (const I8Path& p : i8_paths())
    for (i64 M : kI8Rows)
      for (i64 N : kI8Cols)
        for (i64 K : kI8Depths) {
          const I8Problem pr(M, N, K, 200u + static_cast<std::uint32_t>(M * 1000 + N * 10 + K), 2);
          const auto y = pr.run_w8(p.w8);
          INFO(p.name << " M=" << M << " N=" << N << " K=" << K);
          double worst = 0.0;
          for (i64 m = 0; m < M; ++m) {
            for (i64 n = 0; n < N; ++n)
              worst = std::max(worst, w8_error_ratio(K, pr.x.data() + m * pr.ldx, pr.q.data() + n * pr.ldq,
                                                     pr.ws[static_cast<std::size_t>(n)],
                                                     y[static_cast<std::size_t>(m * pr.ldy + n)]));
            for (i64 n = N; n < pr.ldy; ++n) REQUIRE(y[static_cast<std::size_t>(m * pr.ldy + n)] == 7.0f);
          }
          REQUIRE(worst <= 1.0);
        }
}

TEST_CASE("the AVX2 int8 kernels against the portable ones", "[kernels][gemm_i8][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx2", k::isa_supported(k::Isa::avx2))) return;
  for (i64 M : {1, 4, 8, 9, 33, 130})
    for (auto [N, K] : {std::pair<i64, i64>{130, 257}, {77, 768}, {50, 1000}, {24, 31}}) {
      const I8Problem pr(M, N, K, 300u + static_cast<std::uint32_t>(M + N + K));
      INFO("M=" << M << " N=" << N << " K=" << K);
      // W8A8: integer sums, so the same bits.
      REQUIRE(same_bits(pr.run_i8(&k::avx2::gemm_i8_i8), pr.run_i8(&k::ref::gemm_i8_i8)));
      // Weight-only: same lanes and tree, the AVX2 path fuses each multiply-add, so the two
      // differ by a few units in the last place of the larger terms only.
      const auto ya = pr.run_w8(&k::avx2::gemm_f32_w8), yr = pr.run_w8(&k::ref::gemm_f32_w8);
      for (i64 m = 0; m < M; ++m)
        for (i64 n = 0; n < N; ++n) {
          double mag = 0.0;
          for (i64 kk = 0; kk < K; ++kk)
            mag += std::fabs(static_cast<double>(pr.x[static_cast<std::size_t>(m * K + kk)]) *
                             pr.q[static_cast<std::size_t>(n * K + kk)]);
          mag *= pr.ws[static_cast<std::size_t>(n)];
          const std::size_t i = static_cast<std::size_t>(m * N + n);
          REQUIRE(std::fabs(static_cast<double>(ya[i]) - yr[i]) <= 2.0 * (K / 8.0 + 5.0) * kUnit * mag + 1e-30);
        }
    }
#else
  test_support::skip_tier("avx2", false);  // AVX2 kernels not compiled on this platform
#endif
}

TEST_CASE("gemm_i8_i8 stays exact at the extremes of the int8 range", "[kernels][gemm_i8]") {
  // ±127 everywhere: every maddubs pair is ±2 * 127 * 127 = ±32258, the worst case that must
  // not saturate int16; K chosen to leave a scalar tail too.
  const i64 M = 3, N = 5, K = 4096 + 21;
  std::vector<std::int8_t> xq(static_cast<std::size_t>(M * K)), q(static_cast<std::size_t>(N * K));
  for (i64 m = 0; m < M; ++m)
    for (i64 kk = 0; kk < K; ++kk)
      xq[static_cast<std::size_t>(m * K + kk)] = static_cast<std::int8_t>(m == 1 ? -127 : (kk % 3 == 0 ? -127 : 127));
  for (i64 n = 0; n < N; ++n)
    for (i64 kk = 0; kk < K; ++kk)
      q[static_cast<std::size_t>(n * K + kk)] = static_cast<std::int8_t>(n % 2 ? 127 : (kk % 3 == 0 ? -127 : 127));
  const std::vector<float> xs(M, 1.0f), ws(N, 1.0f);
  for (const I8Path& p : i8_paths()) {
    std::vector<float> y(static_cast<std::size_t>(M * N));
    p.i8(M, N, K, xq.data(), K, xs.data(), q.data(), K, ws.data(), y.data(), N);
    INFO(p.name);
    for (i64 m = 0; m < M; ++m)
      for (i64 n = 0; n < N; ++n) {
        const float want = i8_reference(K, xq.data() + m * K, q.data() + n * K, 1.0f, 1.0f);
        REQUIRE(y[static_cast<std::size_t>(m * N + n)] == want);
      }
  }
}

TEST_CASE("a row of an int8 product is bitwise the same alone or in any batch", "[kernels][gemm_i8][determinism]") {
  for (const I8Path& p : i8_paths())
    for (i64 M : {6, 9, 33})
      // On a CPU with AMX-INT8 the batch runs on the tiles, the lone row not: K 128 and 768
      // from 9 rows, K 3072 from 5 (amx_takes).
      for (auto [N, K] : {std::pair<i64, i64>{63, 100}, {130, 257}, {17, 33}, {50, 128}, {97, 768}, {40, 3072}}) {
        const I8Problem batch(M, N, K, 400u + static_cast<std::uint32_t>(N + K + M));
        const auto yb_w8 = batch.run_w8(p.w8);
        const auto yb_i8 = batch.run_i8(p.i8);
        INFO(p.name << " M=" << M << " N=" << N << " K=" << K);
        for (i64 r : {i64{0}, M / 2, M - 1}) {
          // Row r alone, from its own buffers (no neighbours to read).
          const std::vector<float> x(batch.x.begin() + r * K, batch.x.begin() + (r + 1) * K);
          const std::vector<std::int8_t> xq(batch.xq.begin() + r * K, batch.xq.begin() + (r + 1) * K);
          std::vector<float> y_w8(static_cast<std::size_t>(N)), y_i8(static_cast<std::size_t>(N));
          p.w8(1, N, K, x.data(), K, batch.q.data(), K, batch.ws.data(), y_w8.data(), N);
          p.i8(1, N, K, xq.data(), K, &batch.xs[static_cast<std::size_t>(r)], batch.q.data(), K, batch.ws.data(),
               y_i8.data(), N);
          INFO("row " << r);
          REQUIRE(same_bits(y_w8, std::vector<float>(yb_w8.begin() + r * N, yb_w8.begin() + (r + 1) * N)));
          REQUIRE(same_bits(y_i8, std::vector<float>(yb_i8.begin() + r * N, yb_i8.begin() + (r + 1) * N)));
        }
      }
}

TEST_CASE("int8 products give the same bits on any thread count", "[kernels][gemm_i8][determinism]") {
  ThreadSettings restore;
  for (auto [M, N, K] : {std::tuple<i64, i64, i64>{1, 130, 257}, {9, 131, 100}, {33, 63, 33}, {2, 1000, 768},
                            {33, 1000, 768}}) {
    const I8Problem pr(M, N, K, 500u + static_cast<std::uint32_t>(M + N + K), 1);
    nnx::set_num_threads(1);
    const auto w8_one = pr.run_w8(&k::gemm_f32_w8);
    const auto i8_one = pr.run_i8(&k::gemm_i8_i8);
    for (int threads : {2, 3}) {
      nnx::set_num_threads(threads);
      k::set_parallel_min_work(1);
      INFO("threads=" << threads << " M=" << M << " N=" << N << " K=" << K);
      REQUIRE(same_bits(pr.run_w8(&k::gemm_f32_w8), w8_one));
      REQUIRE(same_bits(pr.run_i8(&k::gemm_i8_i8), i8_one));
    }
    k::set_parallel_min_work(restore.min_work);
  }
}

TEST_CASE("quantize then multiply approximates the float product", "[kernels][gemm_i8]") {
  // A float Linear: y = x[M, K] · w[K, N]. Weight-only and W8A8 results must lie within the
  // rounding of the quantized operands: |Δ| <= Σ_k |x| ws/2 (+ |w| xs/2 + xs ws/4 for W8A8).
  const i64 M = 7, N = 45, K = 200;
  const auto x = random_floats(static_cast<std::size_t>(M * K), 601);
  const auto w = random_floats(static_cast<std::size_t>(K * N), 602, -0.2f, 0.2f);
  std::vector<std::int8_t> q(static_cast<std::size_t>(N * K)), xq(static_cast<std::size_t>(M * K));
  std::vector<float> ws(static_cast<std::size_t>(N)), xs(static_cast<std::size_t>(M));
  k::quantize_columns_absmax(K, N, w.data(), N, q.data(), K, ws.data());
  k::quantize_rows_absmax(M, K, x.data(), K, xq.data(), K, xs.data());
  std::vector<float> y_w8(static_cast<std::size_t>(M * N)), y_i8(y_w8.size());
  k::gemm_f32_w8(M, N, K, x.data(), K, q.data(), K, ws.data(), y_w8.data(), N);
  k::gemm_i8_i8(M, N, K, xq.data(), K, xs.data(), q.data(), K, ws.data(), y_i8.data(), N);
  for (i64 m = 0; m < M; ++m)
    for (i64 n = 0; n < N; ++n) {
      double exact = 0.0, bound_w8 = 0.0, bound_i8 = 0.0;
      const double dx = xs[static_cast<std::size_t>(m)] / 2.0, dw = ws[static_cast<std::size_t>(n)] / 2.0;
      for (i64 kk = 0; kk < K; ++kk) {
        const double a = x[static_cast<std::size_t>(m * K + kk)], b = w[static_cast<std::size_t>(kk * N + n)];
        exact += a * b;
        bound_w8 += std::fabs(a) * dw;
        bound_i8 += std::fabs(a) * dw + std::fabs(b) * dx + dx * dw;
      }
      const std::size_t i = static_cast<std::size_t>(m * N + n);
      REQUIRE(std::fabs(y_w8[i] - exact) <= bound_w8 * 1.001 + 1e-6);
      REQUIRE(std::fabs(y_i8[i] - exact) <= bound_i8 * 1.001 + 1e-6);
    }
}

TEST_CASE("the avx512 VNNI W8A8 product gives avx2's bits at every shape", "[kernels][gemm_i8][avx512]") {
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
#if NNX_KERNELS_X86_DISPATCH
  // Every row-tile height 1..8 (decode's single pass; at 1-2 rows the public entry runs this
  // kernel on an Intel CPU, avx2's on an AMD one) and beyond (blocked), channel tails, K tails,
  // more weight rows than one block, and long K.
  for (i64 M : {1, 2, 3, 5, 7, 8, 9, 17, 130})
    for (auto [N, K] : {std::pair<i64, i64>{13, 1}, {130, 257}, {77, 63}, {50, 1000}, {1100, 129}, {9, 4096 + 21}}) {
      const I8Problem pr(M, N, K, 600u + static_cast<std::uint32_t>(M * 7 + N + K));
      INFO("M=" << M << " N=" << N << " K=" << K);
      REQUIRE(same_bits(pr.run_i8(&k::avx512::gemm_i8_i8), pr.run_i8(&k::avx2::gemm_i8_i8)));
    }
#endif
}

TEST_CASE("the AMX W8A8 product equals the exact reference and the VNNI tiles bit for bit", "[kernels][gemm_i8][amx]") {
  if (test_support::skip_tier("amx", k::isa_supported(k::Isa::avx512) && k::cpu_has_amx_int8())) return;
#if NNX_KERNELS_X86_DISPATCH
  namespace amx = k::avx512::detail::amx;
  // Rows: below and above the public entry's thresholds (amx_takes: 9 rows, 5 at K >= 3072;
  // the tiles run any row count), one pass (<= 16 rows) and several, a pass of fewer rows
  // after full ones (the tiles are configured again). Shapes: one tile of channels, groups of
  // three with a partial last group and channels past the last 16 (the VNNI tiles take those),
  // K of one tile and many, K whose packed rows fill the stack (4160: 15 rows a pass; 16448:
  // 3), weights in several L2 blocks (1100 channels at K 768 with more than one pass), row
  // strides wider than K.
  for (i64 M : {1, 2, 4, 5, 8, 9, 16, 17, 33, 130})
    for (auto [N, K] : {std::pair<i64, i64>{16, 64}, {47, 768}, {50, 128}, {97, 3072}, {40, 4160}, {17, 16448},
                        {1100, 768}}) {
      if (M * N * K > 40'000'000) continue;  // the exact reference is a scalar loop
      REQUIRE(amx::shape_fits(N, K));
      const I8Problem pr(M, N, K, 700u + static_cast<std::uint32_t>(M * 7 + N + K), 3);
      INFO("M=" << M << " N=" << N << " K=" << K);
      const auto tiles = pr.run_i8(&amx::gemm_i8_i8);  // channels [0, N - N % 16)
      const auto vnni = pr.run_i8(&k::avx512::gemm_i8_i8_vnni);
      const auto entry = pr.run_i8(&k::avx512::gemm_i8_i8);
      const i64 tiled = N / amx::kChannels * amx::kChannels;
      for (i64 m = 0; m < M; ++m)
        for (i64 n = 0; n < pr.ldy; ++n) {
          const auto i = static_cast<std::size_t>(m * pr.ldy + n);
          if (n >= tiled) {
            REQUIRE(tiles[i] == 7.0f);  // never written
            continue;
          }
          const float want = i8_reference(K, pr.xq.data() + m * pr.ldx, pr.q.data() + n * pr.ldq,
                                          pr.xs[static_cast<std::size_t>(m)], pr.ws[static_cast<std::size_t>(n)]);
          REQUIRE(bits(tiles[i]) == bits(want));
        }
      REQUIRE(same_bits(entry, vnni));
    }
#endif
}

TEST_CASE("cpu_vendor names the vendor the kernel reports", "[kernels][gemm_i8]") {
  // The one-or-two-row W8A8 kernel is chosen by vendor; check CPUID against Linux's reading.
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line, vendor_id;
  while (vendor_id.empty() && std::getline(cpuinfo, line))
    if (line.rfind("vendor_id", 0) == 0) vendor_id = line.substr(line.find(':') + 2);
  if (vendor_id.empty()) return;  // not Linux on x86
  INFO("vendor_id " << vendor_id);
  const k::CpuVendor expected = vendor_id == "GenuineIntel"   ? k::CpuVendor::intel
                                : vendor_id == "AuthenticAMD" ? k::CpuVendor::amd
                                                              : k::CpuVendor::other;
  CHECK(k::cpu_vendor() == expected);
}
