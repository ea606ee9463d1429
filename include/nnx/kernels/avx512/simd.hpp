// nnx/kernels/avx512/simd.hpp — the AVX-512 helpers every avx512 kernel shares: tail masks, the
// all-lanes mask for GCC-12-clean maskz forms, a lane maximum and exp.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512).
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>

namespace nnx::kernels::avx512 {

// Lanes [0, n) of 16 set; n may lie outside 0..16 (a tail computed as `width - 16` is negative
// for a narrow panel), which clamps to no lanes or all lanes.
NNX_TARGET_AVX512 inline __mmask16 lanes16(std::int64_t n) noexcept {
  if (n <= 0) return 0;
  return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Bytes [0, n) of 64 set, clamped like lanes16.
NNX_TARGET_AVX512 inline __mmask64 bytes64(std::int64_t n) noexcept {
  if (n <= 0) return 0;
  return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

// The unmasked forms of max, min, permutexvar and some conversions warn under GCC 12
// (-Wmaybe-uninitialized on the undefined vector they pass on as the merge source); the
// all-lanes maskz forms are the same instructions without it.
constexpr __mmask16 kAll16 = 0xFFFF;

// The largest of the 16 lanes (none NaN).
NNX_TARGET_AVX512 inline float hmax16(__m512 v) noexcept {
  const __m256 h = _mm256_max_ps(_mm512_maskz_extractf32x8_ps(0xFF, v, 0), _mm512_maskz_extractf32x8_ps(0xFF, v, 1));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// exp(x) for x <= 0, 16 wide: avx2::exp_nonpositive's reduction and polynomial (the same value
// in every lane as that function gives), 0 below -87.3, NaN for NaN.
NNX_TARGET_AVX512 inline __m512 exp_nonpositive(__m512 x) noexcept {
  const __m512 cut = _mm512_set1_ps(-87.3f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, cut, _CMP_NLT_UQ);  // x >= cut, or NaN
  x = _mm512_maskz_max_ps(kAll16, cut, x);
  const __m512 k = _mm512_maskz_roundscale_ps(kAll16, _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);  // ln2 split: hi exact in k * hi
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  const __m512i biased = _mm512_add_epi32(_mm512_maskz_cvtps_epi32(kAll16, k), _mm512_set1_epi32(127));
  const __m512i e = _mm512_maskz_slli_epi32(kAll16, biased, 23);
  return _mm512_maskz_mul_ps(keep, p, _mm512_castsi512_ps(e));
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
