// nnx/kernels/avx2/attention.hpp — AVX2+FMA attention of the query heads of one KV group over a
// run of keys, with an online softmax over key blocks (the contract of
// nnx/kernels/ref/attention.hpp).
//
// Compiled with per-function target attributes (no -mavx2 needed to include it); call only
// where isa_supported(Isa::avx2) (nnx/kernels/attention.hpp does). On other platforms the
// header declares nothing.
//
// Against ref the order of additions within a block differs: each score sums 8 lanes of FMA
// products then the lanes in hsum's tree; the exp is a degree-7 polynomial after Cody-Waite
// reduction (<= 2 ulp from std::exp); block sums 8 lanes then hsum. The test holds every tier
// within 1e-6 * max |v| of a double-precision reference. Cross-tier class: within that bound
// of ref; the avx512 tier runs this kernel (bit-identical to avx2 by construction). Each
// (row, group) is computed alone, so results depend on neither the thread count nor the other
// rows.
//
// Why it is faster: the portable dot product is one dependent chain of scalar adds (ISO C++
// forbids reassociating it); here 8 lanes run per FMA, the exps run 8 wide, and the weighted
// sum of values keeps 32 output floats in registers across a block of keys.
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/ref/attention.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace nnx::kernels::avx2 {

// The query heads of one KV group over keys [0, n) with an online softmax over key blocks;
// same contract and order of blocks as ref::attend_group_f32. Within a block: each score is
// one 8-lane FMA chain over d summed by hsum, the exponentials are exp_nonpositive (2 ulp),
// their sum 8 lanes then hsum, and each output float an FMA chain over j. Each key and value
// row is read once per block for all the group's heads.
NNX_TARGET_AVX2_FMA inline void attend_group_f32(const float* q, std::int64_t q_stride, std::int64_t G,
                                                 const float* keys, const float* values, std::int64_t kv_stride,
                                                 std::int64_t n, std::int64_t D, float scale, float* out,
                                                 std::int64_t out_stride) noexcept {
  constexpr std::int64_t kBlock = ref::kAttnKeyBlock, kGroup = ref::kAttnMaxGroup;
  const std::int64_t full = D / 8 * 8;
  const __m256i d_tail = lane_mask(D - full);
  for (std::int64_t g0 = 0; g0 < G; g0 += kGroup) {
    const std::int64_t gn = std::min(kGroup, G - g0);
    alignas(32) float p[kGroup][kBlock];
    float m[kGroup], l[kGroup];
    for (std::int64_t g = 0; g < gn; ++g) {
      m[g] = -std::numeric_limits<float>::infinity();
      l[g] = 0.0f;
      std::fill_n(out + (g0 + g) * out_stride, D, 0.0f);
    }
    for (std::int64_t j0 = 0; j0 < n; j0 += kBlock) {
      const std::int64_t jn = std::min(kBlock, n - j0);
      // Scores, four keys at a time (four independent FMA chains), then the rest one by one.
      std::int64_t j = 0;
      for (; j + 4 <= jn; j += 4) {
        const float* k0 = keys + (j0 + j) * kv_stride;
        const float* k1 = k0 + kv_stride;
        const float* k2 = k1 + kv_stride;
        const float* k3 = k2 + kv_stride;
        for (std::int64_t g = 0; g < gn; ++g) {
          const float* qg = q + (g0 + g) * q_stride;
          __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
          std::int64_t d = 0;
          for (; d < full; d += 8) {
            const __m256 qv = _mm256_loadu_ps(qg + d);
            a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
          }
          if (d < D) {
            const __m256 qv = _mm256_maskload_ps(qg + d, d_tail);
            a0 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k0 + d, d_tail), a0);
            a1 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k1 + d, d_tail), a1);
            a2 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k2 + d, d_tail), a2);
            a3 = _mm256_fmadd_ps(qv, _mm256_maskload_ps(k3 + d, d_tail), a3);
          }
          p[g][j] = hsum(a0) * scale;
          p[g][j + 1] = hsum(a1) * scale;
          p[g][j + 2] = hsum(a2) * scale;
          p[g][j + 3] = hsum(a3) * scale;
        }
      }
      for (; j < jn; ++j) {
        const float* k = keys + (j0 + j) * kv_stride;
        for (std::int64_t g = 0; g < gn; ++g) {
          const float* qg = q + (g0 + g) * q_stride;
          __m256 acc = _mm256_setzero_ps();
          std::int64_t d = 0;
          for (; d < full; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qg + d), _mm256_loadu_ps(k + d), acc);
          if (d < D) acc = _mm256_fmadd_ps(_mm256_maskload_ps(qg + d, d_tail), _mm256_maskload_ps(k + d, d_tail), acc);
          p[g][j] = hsum(acc) * scale;
        }
      }
      const std::int64_t jfull = jn / 8 * 8;
      const __m256i j_tail = lane_mask(jn - jfull);
      for (std::int64_t g = 0; g < gn; ++g) {
        float* pg = p[g];
        __m256 mx = _mm256_set1_ps(m[g]), bad = _mm256_setzero_ps();
        for (std::int64_t j = 0; j < jn; j += 8) {
          const __m256i mask = j < jfull ? lane_mask(8) : j_tail;
          // Masked-off lanes read as -inf: they change neither the maximum nor the sum.
          const __m256 sv = _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()),
                                             _mm256_maskload_ps(pg + j, mask), _mm256_castsi256_ps(mask));
          mx = _mm256_max_ps(sv, mx);
          bad = _mm256_or_ps(bad, _mm256_cmp_ps(sv, sv, _CMP_UNORD_Q));
        }
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, mx);
        float mnew = lanes[0];
        for (int i = 1; i < 8; ++i) mnew = lanes[i] > mnew ? lanes[i] : mnew;
        const bool nan = _mm256_movemask_ps(bad) != 0;
        const float c = std::exp(m[g] - mnew);
        const __m256 vm = _mm256_set1_ps(mnew);
        __m256 sum = _mm256_setzero_ps();
        for (std::int64_t j = 0; j < jn; j += 8) {
          const __m256i mask = j < jfull ? lane_mask(8) : j_tail;
          __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(pg + j, mask), vm)),
                                   _mm256_castsi256_ps(mask));
          if (nan) e = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
          _mm256_maskstore_ps(pg + j, mask, e);
          sum = _mm256_add_ps(sum, e);
        }
        l[g] = l[g] * c + hsum(sum);
        m[g] = mnew;
        // o = o c + sum_j p_j v_j, 32 output floats (4 registers) at a time, then 8.
        float* og = out + (g0 + g) * out_stride;
        const __m256 vc = _mm256_set1_ps(c);
        std::int64_t d = 0;
        for (; d + 32 <= D; d += 32) {
          __m256 o0 = _mm256_mul_ps(_mm256_loadu_ps(og + d), vc), o1 = _mm256_mul_ps(_mm256_loadu_ps(og + d + 8), vc);
          __m256 o2 = _mm256_mul_ps(_mm256_loadu_ps(og + d + 16), vc);
          __m256 o3 = _mm256_mul_ps(_mm256_loadu_ps(og + d + 24), vc);
          for (std::int64_t j = 0; j < jn; ++j) {
            const __m256 pj = _mm256_broadcast_ss(pg + j);
            const float* v = values + (j0 + j) * kv_stride + d;
            o0 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v), o0);
            o1 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8), o1);
            o2 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 16), o2);
            o3 = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 24), o3);
          }
          _mm256_storeu_ps(og + d, o0);
          _mm256_storeu_ps(og + d + 8, o1);
          _mm256_storeu_ps(og + d + 16, o2);
          _mm256_storeu_ps(og + d + 24, o3);
        }
        for (; d < D; d += 8) {
          const __m256i mask = lane_mask(D - d);
          __m256 o0 = _mm256_mul_ps(_mm256_maskload_ps(og + d, mask), vc);
          for (std::int64_t j = 0; j < jn; ++j)
            o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pg + j), _mm256_maskload_ps(values + (j0 + j) * kv_stride + d, mask), o0);
          _mm256_maskstore_ps(og + d, mask, o0);
        }
      }
    }
    for (std::int64_t g = 0; g < gn; ++g) {
      const __m256 inv = _mm256_set1_ps(1.0f / l[g]);
      float* og = out + (g0 + g) * out_stride;
      for (std::int64_t d = 0; d < D; d += 8) {
        const __m256i mask = lane_mask(D - d);
        _mm256_maskstore_ps(og + d, mask, _mm256_mul_ps(_mm256_maskload_ps(og + d, mask), inv));
      }
    }
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
