// nnx/kernels/avx2/quantize.hpp — AVX2 AQT absmax int8 quantization, bitwise identical to
// the portable path (nnx/kernels/ref/quantize.hpp, which states the numerics).
//
// Compiled with per-function target attributes, so including this header needs no -mavx2;
// call these only when nnx::kernels::isa_supported(nnx::kernels::Isa::avx2) is true (nnx/kernels/quantize.hpp
// does that for you). On other platforms the header declares nothing.
//
// Why the bits match: the maximum is an integer max over |x|'s bit patterns (exact in any
// order), the division is the IEEE division in both paths, and rounding uses
// _MM_FROUND_TO_NEAREST_INT, which is std::nearbyint's half-to-even in the default rounding
// mode. Elements the vectors do not cover call the portable element function. Single-threaded.
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/ref/quantize.hpp"

namespace nnx::kernels::avx2 {

namespace detail::i8 {

NNX_TARGET_AVX2_FMA inline __m256i abs_bits(__m256 x) noexcept {
  return _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7FFFFFFF));
}

NNX_TARGET_AVX2_FMA inline std::uint32_t hmax_epu31(__m256i v) noexcept {
  __m128i m = _mm_max_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epi32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
}

// x / scale, NaN -> 0, clipped to [-127, 127], rounded half to even: integral floats.
NNX_TARGET_AVX2_FMA inline __m256 quantize_ps(__m256 x, __m256 scale) noexcept {
  __m256 v = _mm256_div_ps(x, scale);
  v = _mm256_and_ps(v, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
  v = _mm256_min_ps(_mm256_max_ps(v, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
  return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// Four vectors of integral floats in [-127, 127] -> 32 int8 in order a, b, c, d. The packs
// work within 128-bit lanes, the final permutation puts the 4-byte groups back in order;
// the values are in range, so the saturating packs never saturate.
NNX_TARGET_AVX2_FMA inline __m256i pack_i8(__m256 a, __m256 b, __m256 c, __m256 d) noexcept {
  const __m256i ab = _mm256_packs_epi32(_mm256_cvtps_epi32(a), _mm256_cvtps_epi32(b));
  const __m256i cd = _mm256_packs_epi32(_mm256_cvtps_epi32(c), _mm256_cvtps_epi32(d));
  return _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

// Stores the four 8-byte groups of v (from pack_i8) at p0..p3.
NNX_TARGET_AVX2_FMA inline void store_8x4(__m256i v, std::int8_t* p0, std::int8_t* p1, std::int8_t* p2,
                                          std::int8_t* p3) noexcept {
  const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p0), lo);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p1), _mm_unpackhi_epi64(lo, lo));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p2), hi);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(p3), _mm_unpackhi_epi64(hi, hi));
}

// In-place transpose of an 8 x 8 block of floats held as 8 row vectors.
NNX_TARGET_AVX2_FMA inline void transpose_8x8(__m256 r[8]) noexcept {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Columns [n0, n0 + 8 * G) of w[K, N] (G = 1 or 2 groups of 8; 16 columns use whole cache
// lines of w): their scales, then q[n, :] for each. Both passes walk down the same strip,
// so the second one reads it from L2.
template <int G>
NNX_TARGET_AVX2_FMA inline void quantize_column_strip(std::int64_t K, const float* w, std::int64_t ldw, std::int8_t* q,
                                                      std::int64_t ldq, float* scale) noexcept {
  __m256i amax[G];
  for (int g = 0; g < G; ++g) amax[g] = _mm256_setzero_si256();
  for (std::int64_t k = 0; k < K; ++k)
    for (int g = 0; g < G; ++g) amax[g] = _mm256_max_epi32(amax[g], abs_bits(_mm256_loadu_ps(w + k * ldw + 8 * g)));
  alignas(32) std::uint32_t bits[8 * G];
  for (int g = 0; g < G; ++g) _mm256_store_si256(reinterpret_cast<__m256i*>(bits + 8 * g), amax[g]);
  for (int j = 0; j < 8 * G; ++j) scale[j] = ref::detail::i8::absmax_scale(bits[j]);

  __m256 sv[G];
  for (int g = 0; g < G; ++g) sv[g] = _mm256_loadu_ps(scale + 8 * g);
  const std::int64_t k8 = K - K % 8;
  for (std::int64_t k0 = 0; k0 < k8; k0 += 8) {
    for (int g = 0; g < G; ++g) {
      // Quantize 8 rows x 8 columns as rows (one scale per lane), transpose, and each column
      // becomes 8 consecutive k of one q row.
      __m256 r[8];
      for (int i = 0; i < 8; ++i) r[i] = quantize_ps(_mm256_loadu_ps(w + (k0 + i) * ldw + 8 * g), sv[g]);
      transpose_8x8(r);
      std::int8_t* dst = q + (8 * g) * ldq + k0;
      store_8x4(pack_i8(r[0], r[1], r[2], r[3]), dst, dst + ldq, dst + 2 * ldq, dst + 3 * ldq);
      dst += 4 * ldq;
      store_8x4(pack_i8(r[4], r[5], r[6], r[7]), dst, dst + ldq, dst + 2 * ldq, dst + 3 * ldq);
    }
  }
  for (std::int64_t k = k8; k < K; ++k)
    for (int j = 0; j < 8 * G; ++j) q[j * ldq + k] = ref::detail::i8::quantize_value(w[k * ldw + j], scale[j]);
}

}  // namespace detail::i8

// Same contract and bits as nnx::kernels::ref::quantize_rows_absmax. Requires AVX2.
NNX_TARGET_AVX2_FMA inline void quantize_rows_absmax(std::int64_t M, std::int64_t K, const float* x, std::int64_t ldx,
                                                     std::int8_t* q, std::int64_t ldq, float* scale) noexcept {
  const std::int64_t k8 = K - K % 8, k32 = K - K % 32;
  for (std::int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    std::int64_t k = 0;
    for (; k < k32; k += 32) {
      a0 = _mm256_max_epi32(a0, detail::i8::abs_bits(_mm256_loadu_ps(xr + k)));
      a1 = _mm256_max_epi32(a1, detail::i8::abs_bits(_mm256_loadu_ps(xr + k + 8)));
      a2 = _mm256_max_epi32(a2, detail::i8::abs_bits(_mm256_loadu_ps(xr + k + 16)));
      a3 = _mm256_max_epi32(a3, detail::i8::abs_bits(_mm256_loadu_ps(xr + k + 24)));
    }
    for (; k < k8; k += 8) a0 = _mm256_max_epi32(a0, detail::i8::abs_bits(_mm256_loadu_ps(xr + k)));
    std::uint32_t amax = detail::i8::hmax_epu31(_mm256_max_epi32(_mm256_max_epi32(a0, a1), _mm256_max_epi32(a2, a3)));
    for (; k < K; ++k) amax = std::max(amax, ref::detail::i8::abs_bits(xr[k]));
    const float s = ref::detail::i8::absmax_scale(amax);
    scale[m] = s;

    const __m256 sv = _mm256_set1_ps(s);
    std::int8_t* qr = q + m * ldq;
    for (k = 0; k < k32; k += 32) {
      const __m256i v = detail::i8::pack_i8(detail::i8::quantize_ps(_mm256_loadu_ps(xr + k), sv),
                                            detail::i8::quantize_ps(_mm256_loadu_ps(xr + k + 8), sv),
                                            detail::i8::quantize_ps(_mm256_loadu_ps(xr + k + 16), sv),
                                            detail::i8::quantize_ps(_mm256_loadu_ps(xr + k + 24), sv));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qr + k), v);
    }
    for (; k < K; ++k) qr[k] = ref::detail::i8::quantize_value(xr[k], s);
  }
}

// Same contract and bits as nnx::kernels::ref::quantize_columns_absmax. Requires AVX2.
NNX_TARGET_AVX2_FMA inline void quantize_columns_absmax(std::int64_t K, std::int64_t N, const float* w,
                                                        std::int64_t ldw, std::int8_t* q, std::int64_t ldq,
                                                        float* scale) noexcept {
  std::int64_t n = 0;
  for (; n + 16 <= N; n += 16) detail::i8::quantize_column_strip<2>(K, w + n, ldw, q + n * ldq, ldq, scale + n);
  if (n + 8 <= N) {
    detail::i8::quantize_column_strip<1>(K, w + n, ldw, q + n * ldq, ldq, scale + n);
    n += 8;
  }
  if (n < N) ref::quantize_columns_absmax(K, N - n, w + n, ldw, q + n * ldq, ldq, scale + n);
}

// Same contract and bits as nnx::kernels::ref::dequantize_rows. Requires AVX2.
NNX_TARGET_AVX2_FMA inline void dequantize_rows(std::int64_t N, std::int64_t K, const std::int8_t* q, std::int64_t ldq,
                                                const float* scale, float* w, std::int64_t ldw) noexcept {
  const std::int64_t k8 = K - K % 8;
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int8_t* qr = q + n * ldq;
    float* wr = w + n * ldw;
    const __m256 sv = _mm256_set1_ps(scale[n]);
    std::int64_t k = 0;
    for (; k < k8; k += 8) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(qr + k));
      _mm256_storeu_ps(wr + k, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), sv));
    }
    for (; k < K; ++k) wr[k] = static_cast<float>(qr[k]) * scale[n];
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
