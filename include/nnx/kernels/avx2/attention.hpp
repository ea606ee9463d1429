// nnx/kernels/avx2/attention.hpp — AVX2+FMA attention of one query row over a run of keys.
//
// Compiled with per-function target attributes (no -mavx2 needed to include it); call only
// when nnx::kernels::isa_supported(nnx::kernels::Isa::avx2) is true (nnx/kernels/attention.hpp does). On other
// platforms the header declares nothing.
//
// Against the portable path (nnx/kernels/ref/attention.hpp) the order of additions differs:
// each score sums 8 lanes of FMA products then the lanes pairwise; the exp is a degree-7
// polynomial after Cody-Waite reduction (<= 2 ulp from std::exp); the normalization
// multiplies by 1/sum. The test holds both paths within 1e-6 * max |v| of a double-precision
// reference (measured: 2.4e-7 portable, 1.7e-7 AVX2); each path is deterministic, and every
// row is computed alone, so results depend on neither the thread count nor the other rows.
//
// Why it is faster: the portable dot product is one dependent chain of scalar adds (ISO C++
// forbids reassociating it), four keys at a time keep four FMA chains in flight; and the
// exps, one per cached position and head, run 8 wide.
#pragma once

#include "nnx/kernels/avx2/simd.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>
#include <limits>

namespace nnx::kernels::avx2 {

// out[D] = sum_j softmax_j(scale * q . k_j) v_j over j in [0, n), n >= 1 (as
// ref::attend_f32, which defines the arguments). scores: scratch for n floats.
NNX_TARGET_AVX2_FMA inline void attend_f32(const float* q, const float* keys, const float* values,
                                           std::int64_t stride, std::int64_t n, std::int64_t D, float scale,
                                           float* scores, float* out) noexcept {
  const std::int64_t full = D / 8 * 8;
  const __m256i tail = lane_mask(D - full);

  // Scores, four keys at a time (independent FMA chains), then the rest one by one.
  std::int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float* k0 = keys + j * stride;
    const float* k1 = k0 + stride;
    const float* k2 = k1 + stride;
    const float* k3 = k2 + stride;
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    std::int64_t d = 0;
    for (; d < full; d += 8) {
      const __m256 qv = _mm256_loadu_ps(q + d);
      s0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), s0);
      s1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), s1);
      s2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), s2);
      s3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), s3);
    }
    if (d < D) {
      const __m256 qv = _mm256_maskload_ps(q + d, tail);
      s0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k0 + d, tail), s0);
      s1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k1 + d, tail), s1);
      s2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k2 + d, tail), s2);
      s3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k3 + d, tail), s3);
    }
    scores[j] = hsum(s0) * scale;
    scores[j + 1] = hsum(s1) * scale;
    scores[j + 2] = hsum(s2) * scale;
    scores[j + 3] = hsum(s3) * scale;
  }
  for (; j < n; ++j) {
    const float* k0 = keys + j * stride;
    __m256 s0 = _mm256_setzero_ps();
    std::int64_t d = 0;
    for (; d < full; d += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(k0 + d), s0);
    if (d < D) s0 = _mm256_fmadd_ps(_mm256_maskload_ps(q + d, tail), _mm256_maskload_ps(k0 + d, tail), s0);
    scores[j] = hsum(s0) * scale;
  }

  // Softmax: max (a NaN anywhere makes out NaN, as in the portable path), exp, 1/sum.
  const std::int64_t n8 = n / 8 * 8;
  const __m256i n_tail = lane_mask(n - n8);
  __m256 mx = _mm256_set1_ps(-std::numeric_limits<float>::infinity()), bad = _mm256_setzero_ps();
  for (j = 0; j < n8; j += 8) {
    const __m256 s = _mm256_loadu_ps(scores + j);
    mx = _mm256_max_ps(s, mx);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
  }
  float m = -std::numeric_limits<float>::infinity();
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  for (float l : lanes) m = l > m ? l : m;
  bool nan = _mm256_movemask_ps(bad) != 0;
  for (j = n8; j < n; ++j) {
    nan |= scores[j] != scores[j];
    m = scores[j] > m ? scores[j] : m;
  }
  if (nan) {
    for (std::int64_t d = 0; d < D; ++d) out[d] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (j = 0; j < n8; j += 8) {
    const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(scores + j), vm));
    _mm256_storeu_ps(scores + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (j < n) {
    const __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(scores + j, n_tail), vm)),
                                   _mm256_castsi256_ps(n_tail));
    _mm256_maskstore_ps(scores + j, n_tail, e);
    sum = _mm256_add_ps(sum, e);
  }
  const __m256 inv = _mm256_set1_ps(1.0f / hsum(sum));

  // out = sum_j p_j v_j, 32 output floats (4 registers) at a time, then 8, then a tail.
  std::int64_t d = 0;
  for (; d + 32 <= D; d += 32) {
    __m256 o0 = _mm256_setzero_ps(), o1 = o0, o2 = o0, o3 = o0;
    for (j = 0; j < n; ++j) {
      const __m256 p = _mm256_broadcast_ss(scores + j);
      const float* v = values + j * stride + d;
      o0 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v), o0);
      o1 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8), o1);
      o2 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 16), o2);
      o3 = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 24), o3);
    }
    _mm256_storeu_ps(out + d, _mm256_mul_ps(o0, inv));
    _mm256_storeu_ps(out + d + 8, _mm256_mul_ps(o1, inv));
    _mm256_storeu_ps(out + d + 16, _mm256_mul_ps(o2, inv));
    _mm256_storeu_ps(out + d + 24, _mm256_mul_ps(o3, inv));
  }
  for (; d < D; d += 8) {
    const __m256i mask = lane_mask(D - d);  // all lanes but in the last chunk
    __m256 o0 = _mm256_setzero_ps();
    for (j = 0; j < n; ++j)
      o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(scores + j), _mm256_maskload_ps(values + j * stride + d, mask), o0);
    _mm256_maskstore_ps(out + d, mask, _mm256_mul_ps(o0, inv));
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
