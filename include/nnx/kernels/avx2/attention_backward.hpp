// nnx/kernels/avx2/attention_backward.hpp — AVX2+FMA backward of causal self-attention for the
// query heads of one KV head (the contract of ref::attend_backward_group in
// nnx/kernels/ref/attention.hpp).
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2)
// (nnx/kernels/attention.hpp does). On other platforms the header declares nothing.
//
// Against ref the order differs: dot products over d sum 8 lanes of FMA products, then the
// lanes in hsum's tree, four keys at a time (independent chains); the exps are
// exp_nonpositive, 8 keys at a time, summed in 8 lanes then hsum. Each (head, position)'s order
// is fixed by T, D and G alone, so results never depend on threads. The avx512 tier runs this.
#pragma once

#include "nnx/kernels/avx2/simd.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace nnx::kernels::avx2 {

namespace detail::attn_bwd {

// dot(a, b_j) for the rows b, b + stride, b + 2 stride, b + 3 stride (4 chains at once).
NNX_TARGET_AVX2_FMA inline void dot4(const float* a, const float* b, std::int64_t stride, std::int64_t D,
                                     float* out) noexcept {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
  std::int64_t d = 0;
  for (; d + 8 <= D; d += 8) {
    const __m256 x = _mm256_loadu_ps(a + d);
    acc0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + d), acc0);
    acc1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + stride + d), acc1);
    acc2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 2 * stride + d), acc2);
    acc3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 3 * stride + d), acc3);
  }
  if (d < D) {
    const __m256i mask = lane_mask(D - d);
    const __m256 x = _mm256_maskload_ps(a + d, mask);
    acc0 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + d, mask), acc0);
    acc1 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + stride + d, mask), acc1);
    acc2 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + 2 * stride + d, mask), acc2);
    acc3 = _mm256_fmadd_ps(x, _mm256_maskload_ps(b + 3 * stride + d, mask), acc3);
  }
  out[0] = hsum(acc0);
  out[1] = hsum(acc1);
  out[2] = hsum(acc2);
  out[3] = hsum(acc3);
}

NNX_TARGET_AVX2_FMA inline float dot(const float* a, const float* b, std::int64_t D) noexcept {
  __m256 acc = _mm256_setzero_ps();
  for (std::int64_t d = 0; d < D; d += 8) {
    const __m256i mask = lane_mask(D - d);
    acc = _mm256_fmadd_ps(_mm256_maskload_ps(a + d, mask), _mm256_maskload_ps(b + d, mask), acc);
  }
  return hsum(acc);
}

// out[j] = dot(a, rows[j]) for j < n (rows `stride` apart).
NNX_TARGET_AVX2_FMA inline void dots(const float* a, const float* rows, std::int64_t stride, std::int64_t n,
                                     std::int64_t D, float* out) noexcept {
  std::int64_t j = 0;
  for (; j + 4 <= n; j += 4) dot4(a, rows + j * stride, stride, D, out + j);
  for (; j < n; ++j) out[j] = dot(a, rows + j * stride, D);
}

// y += a x over D floats.
NNX_TARGET_AVX2_FMA inline void axpy(float a, const float* x, float* y, std::int64_t D) noexcept {
  const __m256 av = _mm256_set1_ps(a);
  for (std::int64_t d = 0; d < D; d += 8)
    store_lanes(y + d, _mm256_fmadd_ps(av, load_lanes(x + d, D - d), load_lanes(y + d, D - d)), D - d);
}

}  // namespace detail::attn_bwd

NNX_TARGET_AVX2_FMA inline void attend_backward_group(const float* q, const float* k, const float* v,
                                                      const float* dout, std::int64_t T, std::int64_t G,
                                                      std::int64_t D, std::int64_t q_row, std::int64_t kv_row,
                                                      float scale, float* dq, float* dk, float* dv,
                                                      float* scratch) noexcept {
  using namespace detail::attn_bwd;
  float* p = scratch;
  float* dp = scratch + T;
  for (std::int64_t j = 0; j < T; ++j) {
    std::fill_n(dk + j * kv_row, D, 0.0f);
    std::fill_n(dv + j * kv_row, D, 0.0f);
  }
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t i = 0; i < T; ++i) {
      const float* qi = q + i * q_row + g * D;
      const float* doi = dout + i * q_row + g * D;
      float* dqi = dq + i * q_row + g * D;
      const std::int64_t n = i + 1;
      dots(qi, k, kv_row, n, D, p);
      __m256 mv = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
      const __m256 sv = _mm256_set1_ps(scale);
      for (std::int64_t j = 0; j < n; j += 8) {
        const __m256i mask = lane_mask(n - j);
        const __m256 s = _mm256_mul_ps(_mm256_maskload_ps(p + j, mask), sv);
        store_lanes(p + j, s, n - j);
        mv = _mm256_max_ps(mv, _mm256_blendv_ps(mv, s, _mm256_castsi256_ps(mask)));
      }
      float m = -std::numeric_limits<float>::infinity();
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, mv);
      for (float x : lanes) m = x > m ? x : m;
      const __m256 mb = _mm256_set1_ps(m);
      __m256 lv = _mm256_setzero_ps();
      for (std::int64_t j = 0; j < n; j += 8) {
        const __m256i mask = lane_mask(n - j);
        const __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(p + j, mask), mb)),
                                       _mm256_castsi256_ps(mask));
        store_lanes(p + j, e, n - j);
        lv = _mm256_add_ps(lv, e);
      }
      const float inv = 1.0f / hsum(lv);
      dots(doi, v, kv_row, n, D, dp);
      float dsum = 0.0f;
      for (std::int64_t j = 0; j < n; ++j) {
        p[j] *= inv;
        dsum += p[j] * dp[j];
        axpy(p[j], doi, dv + j * kv_row, D);
      }
      std::fill_n(dqi, D, 0.0f);
      for (std::int64_t j = 0; j < n; ++j) {
        const float ds = (p[j] * (dp[j] - dsum)) * scale;
        axpy(ds, k + j * kv_row, dqi, D);
        axpy(ds, qi, dk + j * kv_row, D);
      }
    }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
