// nnx/kernels/avx512/quantize.hpp — AVX-512 AQT absmax int8 quantization (activations every
// step, dequantization at load time).
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/quantize.hpp does). On other platforms the header declares nothing. Column
// quantization (load time only) has no avx512 version: its TierTable entry runs avx2's.
//
// Cross-tier class: BIT-IDENTICAL to ref and avx2 (nnx/kernels/ref/quantize.hpp states the
// numerics). The maximum is an integer max over |x|'s bit patterns (exact in any order and
// lane split), the division is the IEEE division, rounding is the instruction's
// round-to-nearest-even (embedded, so independent of MXCSR; std::nearbyint's in the default
// mode), NaN quotients become 0 through a mask, and tails are masked loads and stores of the
// same per-element arithmetic. dequantize_rows is one exact conversion and one rounded
// product per element on every tier. Single-threaded.
#pragma once

#include "nnx/kernels/avx512/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>

#include "nnx/kernels/ref/quantize.hpp"

namespace nnx::kernels::avx512 {

namespace detail::q8 {

NNX_TARGET_AVX512 inline __m512i max_epu32(__m512i a, __m512i b) noexcept {
  return _mm512_maskz_max_epu32(kAll16, a, b);
}

// |x| as bit patterns (see ref: the integer order of these is the float order, NaN on top).
NNX_TARGET_AVX512 inline __m512i abs_bits(__m512 x) noexcept {
  return _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF));
}

// The largest of sixteen lanes holding values in [0, 2^31).
NNX_TARGET_AVX512 inline std::uint32_t hmax_epu31(__m512i v) noexcept {
  const __m256i h =
      _mm256_max_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0), _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
}

// q = clip(round_half_even(x / scale), -127, 127) as int32 lanes, NaN quotients 0. Clipping
// first leaves a NaN at -127 (max_ps returns its second operand), which the mask then zeroes.
NNX_TARGET_AVX512 inline __m512i quantize_epi32(__m512 x, __m512 scale) noexcept {
  const __m512 v = _mm512_div_ps(x, scale);
  const __mmask16 ord = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
  const __m512 c = _mm512_maskz_min_ps(kAll16, _mm512_maskz_max_ps(kAll16, v, _mm512_set1_ps(-127.0f)),
                                       _mm512_set1_ps(127.0f));
  return _mm512_maskz_cvt_roundps_epi32(ord, c, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

}  // namespace detail::q8

// Same contract and bits as nnx::kernels::ref::quantize_rows_absmax. Requires the avx512 tier.
NNX_TARGET_AVX512 inline void quantize_rows_absmax(std::int64_t M, std::int64_t K, const float* x, std::int64_t ldx,
                                                   std::int8_t* q, std::int64_t ldq, float* scale) noexcept {
  namespace d = detail::q8;
  const std::int64_t k64 = K - K % 64;
  for (std::int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    std::int64_t k = 0;
    for (; k < k64; k += 64) {
      a0 = d::max_epu32(a0, d::abs_bits(_mm512_loadu_ps(xr + k)));
      a1 = d::max_epu32(a1, d::abs_bits(_mm512_loadu_ps(xr + k + 16)));
      a2 = d::max_epu32(a2, d::abs_bits(_mm512_loadu_ps(xr + k + 32)));
      a3 = d::max_epu32(a3, d::abs_bits(_mm512_loadu_ps(xr + k + 48)));
    }
    // Masked-off lanes load as +0.0, which adds nothing to a maximum of |x|.
    for (; k < K; k += 16) a0 = d::max_epu32(a0, d::abs_bits(_mm512_maskz_loadu_ps(lanes16(K - k), xr + k)));
    const std::uint32_t amax = d::hmax_epu31(d::max_epu32(d::max_epu32(a0, a1), d::max_epu32(a2, a3)));
    const float s = ref::detail::i8::absmax_scale(amax);
    scale[m] = s;

    const __m512 sv = _mm512_set1_ps(s);
    std::int8_t* qr = q + m * ldq;
    for (k = 0; k < k64; k += 64) {
      // Two saturating packs (in range, so exact) interleave 128-bit lanes; the permutation
      // puts the 4-byte groups back in order for one 64-byte store.
      const __m512i ab = _mm512_packs_epi32(d::quantize_epi32(_mm512_loadu_ps(xr + k), sv),
                                            d::quantize_epi32(_mm512_loadu_ps(xr + k + 16), sv));
      const __m512i cd = _mm512_packs_epi32(d::quantize_epi32(_mm512_loadu_ps(xr + k + 32), sv),
                                            d::quantize_epi32(_mm512_loadu_ps(xr + k + 48), sv));
      const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
      const __m512i v = _mm512_maskz_permutexvar_epi32(kAll16, order, _mm512_packs_epi16(ab, cd));
      _mm512_storeu_si512(qr + k, v);
    }
    for (; k < K; k += 16) {
      const __mmask16 mk = lanes16(K - k);
      _mm512_mask_cvtsepi32_storeu_epi8(qr + k, mk, d::quantize_epi32(_mm512_maskz_loadu_ps(mk, xr + k), sv));
    }
  }
}

// Same contract and bits as nnx::kernels::ref::dequantize_rows. Requires the avx512 tier.
NNX_TARGET_AVX512 inline void dequantize_rows(std::int64_t N, std::int64_t K, const std::int8_t* q, std::int64_t ldq,
                                              const float* scale, float* w, std::int64_t ldw) noexcept {
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int8_t* qr = q + n * ldq;
    float* wr = w + n * ldw;
    const __m512 sv = _mm512_set1_ps(scale[n]);
    for (std::int64_t k = 0; k < K; k += 16) {
      const __mmask16 mk = lanes16(K - k);
      const __m128i b = _mm_maskz_loadu_epi8(mk, qr + k);
      const __m512 v = _mm512_maskz_cvtepi32_ps(kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, b));
      _mm512_mask_storeu_ps(wr + k, mk, _mm512_mul_ps(v, sv));
    }
  }
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
