// nnx/kernels/ref/gemm_w16.hpp — portable matrix products with 16-bit float weights (bf16 or
// f16, as a checkpoint stores them) and f32 activations: the fallback on CPUs without AVX2 and
// the oracle the AVX2 kernels (nnx/kernels/avx2/gemm_i8.hpp) are tested against. Use
// nnx/kernels/gemm_w16.hpp, which dispatches and splits output channels between threads.
//
// Layout: weights w[N, K] as their 16-bit patterns, one row per output channel with the
// contraction axis K contiguous (nn.Linear's [out, in], an embedding table [V, C]); x[M, K]
// and y[M, N] row-major.
//
// Order: each weight is widened exactly to f32 and y[m][n] is the eight-lane sum of
// gemm_f32_w8 (nnx/kernels/ref/gemm_i8.hpp) without the scale: fixed by K alone, so a row of y
// is the same whatever M and the other rows. The AVX2 path fuses each multiply-add, so the
// two differ by rounding only.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "nnx/kernels/ref/gemm_i8.hpp"

namespace nnx::kernels::ref {

namespace detail::w16 {

inline float bf16_value(std::uint16_t h) noexcept {
  const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// From the definition (sign, 5-bit exponent biased by 15, 10-bit mantissa), not from bit
// tricks, so that it checks F16C's conversion independently. Every f16 is exact in f32.
inline float f16_value(std::uint16_t h) noexcept {
  const int exponent = (h >> 10) & 31;
  const int mantissa = h & 1023;
  float magnitude;
  if (exponent == 31)
    magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  else if (exponent == 0)
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  else
    magnitude = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  return (h & 0x8000) ? -magnitude : magnitude;
}

template <class Widen>
inline void gemm_f32_w16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                         const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy, Widen widen) noexcept {
  // Channel-major: a weight row is read from memory once and reused from L1 by every row of x.
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t m = 0; m < M; ++m)
      y[m * ldy + n] = detail::i8::dot_f32_narrow(K, x + m * ldx, w + n * ldw, widen);
}

}  // namespace detail::w16

// y[M, N] = x[M, K] · w[N, K]ᵀ, w bf16 bits. ldx >= K, ldw >= K, ldy >= N; y must not overlap
// the inputs and is overwritten. Never throws.
inline void gemm_f32_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                          const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  detail::w16::gemm_f32_w16(M, N, K, x, ldx, w, ldw, y, ldy, detail::w16::bf16_value);
}

// The same with f16 weights.
inline void gemm_f32_f16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                         const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  detail::w16::gemm_f32_w16(M, N, K, x, ldx, w, ldw, y, ldy, detail::w16::f16_value);
}

}  // namespace nnx::kernels::ref
