// Tests for nnx/kernels/gemm_w16.hpp (and ref/, avx2/): f32 activations times bf16 and f16
// weights on every path, within the summation error bound of a double-precision reference
// that widens the weights with core's conversions (independent of the kernels' own);
// subnormal, infinite and NaN weights; leading dimensions; and the properties the engine
// relies on: a row is bitwise the same alone or in a batch, and on any thread count.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/kernels/gemm_w16.hpp"
#include "nnx/ops/threads.hpp"

#include "../support/numeric.hpp"
#include "../support/tier.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
using test_support::same_bits;

enum class Half { bf16, f16 };

float half_value(Half h, std::uint16_t b) {
  return h == Half::bf16 ? nnx::bf16_bits_to_f32(b) : nnx::f16_bits_to_f32(b);
}

std::uint16_t half_bits(Half h, float f) { return h == Half::bf16 ? nnx::f32_to_bf16_bits(f) : nnx::f32_to_f16_bits(f); }

struct W16Path {
  std::string name;
  k::GemmF32W16Fn fn;
};

// The dispatching entry point and every tier this CPU runs.
std::vector<W16Path> w16_paths(Half h) {
  const auto& table = h == Half::bf16 ? k::kGemmF32Bf16 : k::kGemmF32F16;
  std::vector<W16Path> p{{"dispatch", h == Half::bf16 ? &k::gemm_f32_bf16 : &k::gemm_f32_f16}};
  for (k::Isa isa : k::kAllIsas)
    if (k::isa_supported(isa)) p.push_back({std::string(k::isa_name(isa)), k::select(table, isa)});
  return p;
}

// x[M, K] and w[N, K] with row strides padded by `pad`; weights spread over many binades,
// with a few f16 subnormals (|w| < 2^-14).
struct W16Problem {
  i64 M, N, K, ldx, ldw, ldy;
  Half half;
  std::vector<float> x;
  std::vector<std::uint16_t> w;
  W16Problem(Half h, i64 M_, i64 N_, i64 K_, std::uint32_t seed, i64 pad = 0)
      : M(M_), N(N_), K(K_), ldx(K_ + pad), ldw(K_ + pad), ldy(N_ + pad), half(h) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
    std::uniform_int_distribution<int> binade(-20, 2);
    x.resize(static_cast<std::size_t>(M * ldx));
    for (auto& v : x) v = unit(gen);
    w.resize(static_cast<std::size_t>(N * ldw));
    for (auto& v : w) v = half_bits(h, std::ldexp(unit(gen), binade(gen)));
  }
  std::vector<float> run(k::GemmF32W16Fn f) const {
    std::vector<float> y(static_cast<std::size_t>(M * ldy), 7.0f);
    f(M, N, K, x.data(), ldx, w.data(), ldw, y.data(), ldy);
    return y;
  }
  // |y - exact| / bound for element (m, n): (K + 4) u Σ|x w| covers the lane chains and tree.
  double error_ratio(i64 m, i64 n, float y) const {
    double exact = 0.0, mag = 0.0;
    for (i64 kk = 0; kk < K; ++kk) {
      const double t = double(x[static_cast<std::size_t>(m * ldx + kk)]) *
                       double(half_value(half, w[static_cast<std::size_t>(n * ldw + kk)]));
      exact += t;
      mag += std::fabs(t);
    }
    return std::fabs(double(y) - exact) / (double(K + 4) * kUnit * mag + 1e-30);
  }
};

const Half kHalves[] = {Half::bf16, Half::f16};
const char* half_name(Half h) { return h == Half::bf16 ? "bf16" : "f16"; }

}  // namespace

TEST_CASE("gemm_f32_bf16 and gemm_f32_f16 are within the summation error bound of a double reference on every path",
          "[kernels][gemm_w16]") {
  for (Half h : kHalves)
    for (const W16Path& p : w16_paths(h))
      for (i64 M : {1, 2, 3, 5, 9})
        for (i64 N : {1, 7, 25, 130})
          for (i64 K : {1, 7, 8, 31, 33, 100, 257}) {
            const W16Problem pr(h, M, N, K, 100u + static_cast<std::uint32_t>(M * 1000 + N * 10 + K), 3);
            const auto y = pr.run(p.fn);
            INFO(half_name(h) << " " << p.name << " M=" << M << " N=" << N << " K=" << K);
            double worst = 0.0;
            for (i64 m = 0; m < M; ++m) {
              for (i64 n = 0; n < N; ++n)
                worst = std::max(worst, pr.error_ratio(m, n, y[static_cast<std::size_t>(m * pr.ldy + n)]));
              for (i64 n = N; n < pr.ldy; ++n) REQUIRE(y[static_cast<std::size_t>(m * pr.ldy + n)] == 7.0f);
            }
            REQUIRE(worst <= 1.0);
          }
}

TEST_CASE("16-bit weights are widened exactly, subnormals, infinities and NaN included", "[kernels][gemm_w16]") {
  // One x = 1 against single weights: y is the weight's own value, bit for bit (a NaN stays NaN).
  for (Half h : kHalves) {
    std::vector<std::uint16_t> w;
    const std::uint16_t exp_mask = h == Half::bf16 ? 0x7f80 : 0x7c00;
    for (std::uint32_t b = 0; b < 0x10000; b += 97) w.push_back(static_cast<std::uint16_t>(b));
    w.push_back(exp_mask);                                    // +inf
    w.push_back(static_cast<std::uint16_t>(exp_mask | 1));   // NaN
    w.push_back(1);                                           // smallest subnormal
    const i64 N = static_cast<i64>(w.size());
    const float one = 1.0f;
    for (const W16Path& p : w16_paths(h)) {
      std::vector<float> y(static_cast<std::size_t>(N));
      p.fn(1, N, 1, &one, 1, w.data(), 1, y.data(), N);
      INFO(half_name(h) << " " << p.name);
      for (i64 n = 0; n < N; ++n) {
        const float want = half_value(h, w[static_cast<std::size_t>(n)]);
        INFO("bits " << w[static_cast<std::size_t>(n)]);
        if (std::isnan(want))
          REQUIRE(std::isnan(y[static_cast<std::size_t>(n)]));
        else
          REQUIRE(y[static_cast<std::size_t>(n)] == want);
      }
    }
  }
}

TEST_CASE("the AVX2 16-bit weight kernels against the portable ones", "[kernels][gemm_w16][avx2]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx2", k::isa_supported(k::Isa::avx2))) return;
  for (Half h : kHalves)
    for (i64 M : {1, 4, 8, 9})
      for (auto [N, K] : {std::pair<i64, i64>{130, 257}, {77, 768}, {24, 31}}) {
        const W16Problem pr(h, M, N, K, 300u + static_cast<std::uint32_t>(M + N + K));
        const auto ya = pr.run(h == Half::bf16 ? &k::avx2::gemm_f32_bf16 : &k::avx2::gemm_f32_f16);
        const auto yr = pr.run(h == Half::bf16 ? &k::ref::gemm_f32_bf16 : &k::ref::gemm_f32_f16);
        INFO(half_name(h) << " M=" << M << " N=" << N << " K=" << K);
        // Same lanes and tree; AVX2 fuses each multiply-add, so they differ by rounding only.
        for (i64 m = 0; m < M; ++m)
          for (i64 n = 0; n < N; ++n) {
            double mag = 0.0;
            for (i64 kk = 0; kk < K; ++kk)
              mag += std::fabs(double(pr.x[static_cast<std::size_t>(m * K + kk)]) *
                               half_value(h, pr.w[static_cast<std::size_t>(n * K + kk)]));
            const std::size_t i = static_cast<std::size_t>(m * N + n);
            REQUIRE(std::fabs(double(ya[i]) - yr[i]) <= 2.0 * (K / 8.0 + 5.0) * kUnit * mag + 1e-30);
          }
      }
#else
  test_support::skip_tier("avx2", false);  // AVX2 kernels not compiled on this platform
#endif
}

TEST_CASE("a row of a 16-bit weight product is bitwise the same alone, in any batch and on any thread count",
          "[kernels][gemm_w16][determinism]") {
  const int threads_before = nnx::num_threads();
  const i64 min_work_before = k::parallel_min_work();
  for (Half h : kHalves)
    for (const W16Path& p : w16_paths(h))
      for (auto [M, N, K] : {std::tuple<i64, i64, i64>{9, 131, 100}, {6, 63, 257}}) {
        const W16Problem batch(h, M, N, K, 400u + static_cast<std::uint32_t>(M + N + K));
        nnx::set_num_threads(1);
        const auto yb = batch.run(p.fn);
        INFO(half_name(h) << " " << p.name << " M=" << M << " N=" << N << " K=" << K);
        for (i64 r : {i64{0}, M / 2, M - 1}) {
          const std::vector<float> x(batch.x.begin() + r * K, batch.x.begin() + (r + 1) * K);
          std::vector<float> y(static_cast<std::size_t>(N));
          p.fn(1, N, K, x.data(), K, batch.w.data(), K, y.data(), N);
          REQUIRE(same_bits(y, std::vector<float>(yb.begin() + r * N, yb.begin() + (r + 1) * N)));
        }
        for (int threads : {2, 3}) {
          nnx::set_num_threads(threads);
          k::set_parallel_min_work(1);
          REQUIRE(same_bits(batch.run(p.fn), yb));
        }
        nnx::set_num_threads(threads_before);
        k::set_parallel_min_work(min_work_before);
      }
}

TEST_CASE("the AVX-512 f16 kernel gives the AVX2 kernel's bits", "[kernels][gemm_w16][avx512]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
  // Odd channel counts (a last single channel), every row tile, K with and without a tail.
  for (i64 M : {1, 2, 3, 4, 5, 9})
    for (auto [N, K] : {std::pair<i64, i64>{131, 257}, {77, 768}, {24, 31}, {1, 40}, {2, 7}, {9, 64}}) {
      const W16Problem pr(Half::f16, M, N, K, 600u + static_cast<std::uint32_t>(M + N + K), 1);
      INFO("M=" << M << " N=" << N << " K=" << K);
      REQUIRE(same_bits(pr.run(&k::avx512::gemm_f32_f16), pr.run(&k::avx2::gemm_f32_f16)));
    }
#else
  test_support::skip_tier("avx512", false);  // AVX-512 kernels not compiled on this platform
#endif
}

#if NNX_KERNELS_X86_DISPATCH
namespace {

// avx512's bf16 order computed one element at a time by its scalar definition.
std::vector<float> bf16_chains_oracle(const W16Problem& pr) {
  std::vector<float> y(static_cast<std::size_t>(pr.M * pr.ldy), 7.0f);
  for (i64 m = 0; m < pr.M; ++m)
    for (i64 n = 0; n < pr.N; ++n)
      y[static_cast<std::size_t>(m * pr.ldy + n)] =
          k::avx512::detail::w16::dot_bf16_chains(pr.K, pr.x.data() + m * pr.ldx, pr.w.data() + n * pr.ldw);
  return y;
}

}  // namespace
#endif

TEST_CASE("the AVX-512 bf16 kernel computes its 32-chain order exactly, at every tile shape and block tail",
          "[kernels][gemm_w16][avx512]") {
#if NNX_KERNELS_X86_DISPATCH
  if (test_support::skip_tier("avx512", k::isa_supported(k::Isa::avx512))) return;
  // Rows 1-9 (every row tile and remainder), channels with and without a last partial group of
  // three, K at every offset around the 32-blocks, padded strides.
  for (i64 M : {1, 2, 3, 4, 5, 7, 9})
    for (i64 N : {1, 2, 3, 7, 14})
      for (i64 K : {1, 2, 15, 16, 17, 31, 32, 33, 47, 63, 64, 65, 97, 200, 770})
        for (i64 pad : {0, 5}) {
          const W16Problem pr(Half::bf16, M, N, K, 700u + static_cast<std::uint32_t>(M * 31 + N * 7 + K + pad), pad);
          INFO("M=" << M << " N=" << N << " K=" << K << " pad=" << pad);
          REQUIRE(same_bits(pr.run(&k::avx512::gemm_f32_bf16), bf16_chains_oracle(pr)));
        }
  // More rows than one piece of permuted activations (2^19 floats: 64 rows at K = 8192).
  const W16Problem big(Half::bf16, 70, 5, 8192, 800u);
  REQUIRE(same_bits(big.run(&k::avx512::gemm_f32_bf16), bf16_chains_oracle(big)));
#else
  test_support::skip_tier("avx512", false);  // AVX-512 kernels not compiled on this platform
#endif
}
