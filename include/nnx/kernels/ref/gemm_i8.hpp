// nnx/kernels/ref/gemm_i8.hpp — portable int8-weight matrix products: the fallback on CPUs
// without AVX2 and the oracle the AVX2 kernels (nnx/kernels/avx2/gemm_i8.hpp) are tested
// against. Use nnx/kernels/gemm_i8.hpp, which dispatches and splits output channels between
// threads; call these directly only to test or to pin the portable path.
//
// Layout: weights q[N, K], one row per output channel with the contraction axis K contiguous
// (nn.Linear's [out, in]; what nnx::kernels::quantize_columns_absmax produces from a float
// [in, out] kernel), one float scale per output channel; y[M, N] row-major.
//
// Orders (fixed by K alone, so a row of y is the same whatever M and the other rows):
// - gemm_f32_w8: y[m][n] = wscale[n] * s, where s is the sum of eight lane sums, lane l
//   summing x[m][k] * float(q[n][k]) over k = l, l+8, l+16, ... ascending (each product
//   rounded, then added), combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). The AVX2 path
//   has the same lanes and tree but fuses each multiply-add, so the two differ by rounding.
//   (A compiler allowed to contract a*b+c into an FMA, e.g. -mfma with GNU extensions, may
//   fuse them here too; the result still depends on K alone.)
// - gemm_i8_i8: the sum of products is exact in int32 (wrapping modulo 2^32, as the AVX2
//   path does, if K > 133143 lets it overflow), then y[m][n] = (float(acc) * xscale[m]) *
//   wscale[n]; the AVX2 path gives the same bits.
#pragma once

#include <algorithm>
#include <cstdint>

namespace nnx::kernels::ref {

namespace detail::i8 {

// Dot product of x[0:K) with widen(q[0:K)) in the eight-lane order of the header comment;
// widen turns one stored weight into its exact float value.
template <class E, class Widen>
inline float dot_f32_narrow(std::int64_t K, const float* x, const E* q, Widen widen) noexcept {
  float lane[8] = {};
  const std::int64_t k8 = K - K % 8;
  for (std::int64_t k = 0; k < k8; k += 8)
    for (int l = 0; l < 8; ++l) lane[l] += x[k + l] * widen(q[k + l]);
  for (std::int64_t k = k8; k < K; ++k) lane[k - k8] += x[k] * widen(q[k]);
  return ((lane[0] + lane[4]) + (lane[2] + lane[6])) + ((lane[1] + lane[5]) + (lane[3] + lane[7]));
}

inline float dot_f32_w8(std::int64_t K, const float* x, const std::int8_t* q) noexcept {
  return dot_f32_narrow(K, x, q, [](std::int8_t v) { return static_cast<float>(v); });
}

// Exact int32 dot product; unsigned arithmetic so that an overflow wraps (defined) instead
// of being undefined behaviour.
inline std::int32_t dot_i8_i8(std::int64_t K, const std::int8_t* x, const std::int8_t* q) noexcept {
  std::uint32_t acc = 0;
  for (std::int64_t k = 0; k < K; ++k)
    acc += static_cast<std::uint32_t>(static_cast<std::int32_t>(x[k]) * static_cast<std::int32_t>(q[k]));
  return static_cast<std::int32_t>(acc);
}

}  // namespace detail::i8

// y[M, N] = x[M, K] · dequant(q)ᵀ with dequant(q)[n][k] = wscale[n] * q[n][k], applied after
// the sum: y[m][n] = wscale[n] * Σ_k x[m][k] * q[n][k] (order in the header comment).
// Row-major: ldx >= K, ldq >= K, ldy >= N; y must not overlap the inputs and is overwritten
// (K == 0 gives wscale[n] * 0). Never throws.
inline void gemm_f32_w8(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                        const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                        std::int64_t ldy) noexcept {
  // Channel-major: a weight row is read from memory once and reused from L1 by every row of x.
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t m = 0; m < M; ++m)
      y[m * ldy + n] = wscale[n] * detail::i8::dot_f32_w8(K, x + m * ldx, q + n * ldq);
}

// W8A8: y[m][n] = (float(Σ_k int32(xq[m][k]) * int32(q[n][k])) * xscale[m]) * wscale[n], the
// sum exact in int32. xq[M, K] (ldx >= K) and q[N, K] (ldq >= K) hold values in [-127, 127]
// (what the quantizers produce; the AVX2 path relies on it), ldy >= N; y is overwritten.
// Never throws.
inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                       const float* xscale, const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                       std::int64_t ldy) noexcept {
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t m = 0; m < M; ++m) {
      const std::int32_t acc = detail::i8::dot_i8_i8(K, xq + m * ldx, q + n * ldq);
      y[m * ldy + n] = (static_cast<float>(acc) * xscale[m]) * wscale[n];
    }
}

}  // namespace nnx::kernels::ref
