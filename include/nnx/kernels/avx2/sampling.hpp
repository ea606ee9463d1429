// nnx/kernels/avx2/sampling.hpp — AVX2+FMA versions of the sampling math over a vocabulary row
// (nnx/kernels/sampling.hpp): the row maximum with NaN detection, and exp sums in double.
//
// exp runs 4 lanes wide in double: Cody-Waite reduction to |r| <= ln2/2, a degree-13 Taylor
// polynomial with FMA, the power of two built in the exponent bits; a few ulp from libm.
// Arguments are <= 0 (a logit minus the row maximum); below -708 the result would leave the
// normal range and is 0, which also covers -inf. Cross-tier class: within a few ulp of ref
// (libm) per weight, sums in a fixed order; the avx512 tier runs these (no version of its own).
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace nnx::kernels::avx2 {

namespace detail::sampling {
inline constexpr double cut = -708.0;
inline constexpr double log2e = 1.4426950408889634074;
inline constexpr double magic = 0x1.8p52;               // adding it rounds to an integer held in the low bits
inline constexpr double ln2_hi = 0x1.62e42fee00000p-1;  // k * ln2_hi is exact for |k| < 2^11
inline constexpr double ln2_lo = 0x1.a39ef35793c76p-33;
inline constexpr double c[14] = {
    1.0,        1.0,         1.0 / 2,      1.0 / 6,       1.0 / 24,       1.0 / 120,       1.0 / 720,
    1.0 / 5040, 1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600, 1.0 / 6227020800};
}  // namespace detail::sampling

NNX_TARGET_AVX2_FMA inline __m256d exp_nonpositive_f64(__m256d d) noexcept {
  namespace e = detail::sampling;
  const __m256d keep = _mm256_cmp_pd(d, _mm256_set1_pd(e::cut), _CMP_GE_OQ);
  d = _mm256_max_pd(d, _mm256_set1_pd(e::cut));
  const __m256d magic = _mm256_set1_pd(e::magic);
  const __m256d t = _mm256_fmadd_pd(d, _mm256_set1_pd(e::log2e), magic);
  const __m256d k = _mm256_sub_pd(t, magic);
  __m256d r = _mm256_fnmadd_pd(k, _mm256_set1_pd(e::ln2_hi), d);
  r = _mm256_fnmadd_pd(k, _mm256_set1_pd(e::ln2_lo), r);
  __m256d p = _mm256_set1_pd(e::c[13]);
  for (int i = 12; i >= 0; --i) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(e::c[i]));
  const __m256i kb = _mm256_sub_epi64(_mm256_castpd_si256(t), _mm256_castpd_si256(magic));
  const __m256d scale = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(kb, _mm256_set1_epi64x(1023)), 52));
  return _mm256_and_pd(_mm256_mul_pd(p, scale), keep);
}

// Largest element of x[0, n) (NaNs ignored) and whether any is NaN.
NNX_TARGET_AVX2_FMA inline float max_logit(const float* x, std::int64_t n, bool& has_nan) noexcept {
  __m256 m0 = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), m1 = m0;
  __m256 bad = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    m0 = _mm256_max_ps(a, m0);  // a NaN in the first operand yields the second
    m1 = _mm256_max_ps(b, m1);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q), _mm256_cmp_ps(b, b, _CMP_UNORD_Q)));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
  float m = lanes[0];
  for (int j = 1; j < 8; ++j) m = lanes[j] > m ? lanes[j] : m;
  has_nan = _mm256_movemask_ps(bad) != 0;
  for (; i < n; ++i) {
    if (x[i] > m) m = x[i];
    has_nan |= std::isnan(x[i]);
  }
  return m;
}

// Sum of exp(x[i] - m) over x[0, n), stored into out[0, n) when out is not null.
template <bool Store>
NNX_TARGET_AVX2_FMA double sum_exp_shifted_impl(const float* x, std::int64_t n, double m, double* out) noexcept {
  const __m256d vm = _mm256_set1_pd(m);
  __m256d s0 = _mm256_setzero_pd(), s1 = s0;
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256d e0 = exp_nonpositive_f64(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), vm));
    const __m256d e1 = exp_nonpositive_f64(_mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), vm));
    if constexpr (Store) {
      _mm256_storeu_pd(out + i, e0);
      _mm256_storeu_pd(out + i + 4, e1);
    }
    s0 = _mm256_add_pd(s0, e0);
    s1 = _mm256_add_pd(s1, e1);
  }
  for (; i < n; i += 4) {  // the tail, padded with -inf (weight 0)
    alignas(16) float pad[4];
    const std::int64_t len = std::min<std::int64_t>(4, n - i);
    for (int j = 0; j < 4; ++j) pad[j] = j < len ? x[i + j] : -std::numeric_limits<float>::infinity();
    const __m256d e0 = exp_nonpositive_f64(_mm256_sub_pd(_mm256_cvtps_pd(_mm_load_ps(pad)), vm));
    alignas(32) double w[4];
    _mm256_store_pd(w, e0);
    if constexpr (Store)
      for (std::int64_t j = 0; j < len; ++j) out[i + j] = w[j];
    s0 = _mm256_add_pd(s0, e0);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(s0, s1));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// d[j] = exp(d[j]) over d[0, n); returns the sum.
NNX_TARGET_AVX2_FMA inline double exp_in_place(double* d, std::size_t n) noexcept {
  __m256d s0 = _mm256_setzero_pd();
  std::size_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d e0 = exp_nonpositive_f64(_mm256_loadu_pd(d + j));
    _mm256_storeu_pd(d + j, e0);
    s0 = _mm256_add_pd(s0, e0);
  }
  if (j < n) {
    alignas(32) double pad[4];
    for (std::size_t i = 0; i < 4; ++i) pad[i] = j + i < n ? d[j + i] : -std::numeric_limits<double>::infinity();
    const __m256d e0 = exp_nonpositive_f64(_mm256_load_pd(pad));
    _mm256_store_pd(pad, e0);
    for (std::size_t i = 0; j + i < n; ++i) d[j + i] = pad[i];
    s0 = _mm256_add_pd(s0, e0);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, s0);
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
}

// Sum of exp(x[i] - m) over x[0, n); the weights also stored into out[0, n) when out is
// not null.
NNX_TARGET_AVX2_FMA inline double sum_exp_shifted(const float* x, std::int64_t n, double m, double* out) noexcept {
  return out ? sum_exp_shifted_impl<true>(x, n, m, out) : sum_exp_shifted_impl<false>(x, n, m, out);
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
