// nnx/kernels/avx2/rope.hpp — AVX2 rotate-half RoPE (nnx/kernels/rope.hpp dispatches here).
//
// cos and sin are ref's (the same scalar calls, once per row and frequency, shared by the
// heads); the rotation runs 8 frequencies at a time with ref's roundings: each product
// rounded, then the sum, never a fused multiply-add (the empty asm keeps the compiler from
// contracting them). Cross-tier class: BIT-IDENTICAL to ref (avx512 runs this).
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/rope.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace nnx::kernels::avx2 {

namespace detail::rope {

// a * b rounded to float, kept apart from the addition that consumes it.
NNX_TARGET_AVX2_FMA inline __m256 product(__m256 a, __m256 b) noexcept {
  __m256 p = _mm256_mul_ps(a, b);
  asm("" : "+x"(p));
  return p;
}

}  // namespace detail::rope

// Same contract and bits as nnx::kernels::ref::rope_rotate_slice.
NNX_TARGET_AVX2_FMA inline void rope_rotate_slice(float* x, const std::int32_t* positions, std::int64_t T,
                                                  std::int64_t H, std::int64_t D, std::int64_t i0, std::int64_t nb,
                                                  const float* inv) noexcept {
  namespace d = detail::rope;
  constexpr std::int64_t kChunk = ref::detail::kRopeChunk;
  const std::int64_t half = D / 2;
  alignas(32) float c[kChunk], s[kChunk];
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t k0 = 0; k0 < nb; k0 += kChunk) {
      const std::int64_t kb = std::min(kChunk, nb - k0);
      ref::detail::rope_cos_sin(positions[t], inv + k0, kb, c, s);
      for (std::int64_t h = 0; h < H; ++h) {
        float* lo = x + (t * H + h) * D + i0 + k0;
        float* hi = lo + half;
        for (std::int64_t k = 0; k < kb; k += 8) {
          const __m256 x1 = load_lanes(lo + k, kb - k), x2 = load_lanes(hi + k, kb - k);
          const __m256 ck = _mm256_load_ps(c + k), sk = _mm256_load_ps(s + k);
          store_lanes(lo + k, _mm256_sub_ps(d::product(x1, ck), d::product(x2, sk)), kb - k);
          store_lanes(hi + k, _mm256_add_ps(d::product(x2, ck), d::product(x1, sk)), kb - k);
        }
      }
    }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
