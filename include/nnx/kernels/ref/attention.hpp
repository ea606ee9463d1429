// nnx/kernels/ref/attention.hpp — portable attention of query heads over a run of keys, by KV
// group (the fallback and the oracle for vectorized versions).
//
//   nnx::kernels::ref::attend_group_f32(q, D, G, keys, values, Hkv * D, n, D, scale, out, D);
//   nnx::kernels::ref::attend_f32(q, H * D, D, T, n, G, Hkv, keys, values, Hkv * D, D, scale, out, H * D, D);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace nnx::kernels::ref {

// Keys per block of the online softmax, and query heads handled in one pass over the keys:
// the scores of one block for those heads live on the stack.
inline constexpr std::int64_t kAttnKeyBlock = 256;
inline constexpr std::int64_t kAttnMaxGroup = 16;

// The query heads q_g = q + g * q_stride, g < G, that share one KV head, each attending to
// keys and values j in [0, n) (k_j = keys + j * kv_stride, likewise v_j):
//   out_g = sum_j softmax_j(scale * q_g . k_j) v_j   (out_g = out + g * out_stride, D floats)
// with the softmax computed online over blocks of kAttnKeyBlock keys (FlashAttention's
// running maximum m and sum l, the partial output rescaled by exp(m_old - m_new) when m
// grows), so no more than a block of scores exists at a time and each key and value row is
// read once for all G heads. n >= 1. A NaN anywhere makes the output NaN. The order of every
// operation is fixed by n, D and G alone. Never throws.
//
// Order: s_j = (sum over d ascending of q_d k_jd, in float) * scale; per block: m' =
// max(m, max_j s_j); c = exp(m - m'); l = l c + sum_j p_j with p_j = exp(s_j - m'), j
// ascending; o_d = o_d c + sum_j p_j v_jd, j ascending; at the end out_d = o_d * (1 / l).
inline void attend_group_f32(const float* q, std::int64_t q_stride, std::int64_t G, const float* keys,
                             const float* values, std::int64_t kv_stride, std::int64_t n, std::int64_t D, float scale,
                             float* out, std::int64_t out_stride) noexcept {
  for (std::int64_t g0 = 0; g0 < G; g0 += kAttnMaxGroup) {
    const std::int64_t gn = std::min(kAttnMaxGroup, G - g0);
    float p[kAttnMaxGroup][kAttnKeyBlock];
    float m[kAttnMaxGroup], l[kAttnMaxGroup];
    for (std::int64_t g = 0; g < gn; ++g) {
      m[g] = -std::numeric_limits<float>::infinity();
      l[g] = 0.0f;
      std::fill_n(out + (g0 + g) * out_stride, D, 0.0f);
    }
    for (std::int64_t j0 = 0; j0 < n; j0 += kAttnKeyBlock) {
      const std::int64_t jn = std::min(kAttnKeyBlock, n - j0);
      for (std::int64_t g = 0; g < gn; ++g) {
        const float* qg = q + (g0 + g) * q_stride;
        float mx = m[g];
        bool nan = false;
        for (std::int64_t j = 0; j < jn; ++j) {
          const float* k = keys + (j0 + j) * kv_stride;
          float s = 0.0f;
          for (std::int64_t d = 0; d < D; ++d) s += qg[d] * k[d];
          s *= scale;
          p[g][j] = s;
          nan |= s != s;
          mx = s > mx ? s : mx;
        }
        const float c = std::exp(m[g] - mx);  // 0 for the first block (m = -inf)
        float sum = 0.0f;
        for (std::int64_t j = 0; j < jn; ++j) sum += (p[g][j] = nan ? std::numeric_limits<float>::quiet_NaN()
                                                                       : std::exp(p[g][j] - mx));
        l[g] = l[g] * c + sum;
        m[g] = mx;
        float* og = out + (g0 + g) * out_stride;
        for (std::int64_t d = 0; d < D; ++d) og[d] *= c;
        for (std::int64_t j = 0; j < jn; ++j) {
          const float pj = p[g][j];
          const float* v = values + (j0 + j) * kv_stride;
          for (std::int64_t d = 0; d < D; ++d) og[d] += pj * v[d];
        }
      }
    }
    for (std::int64_t g = 0; g < gn; ++g) {
      const float inv = 1.0f / l[g];
      float* og = out + (g0 + g) * out_stride;
      for (std::int64_t d = 0; d < D; ++d) og[d] *= inv;
    }
  }
}

// R query rows, each with the G query heads of each of Hk KV heads; row r attends to keys
// [0, n[r]) (n[r] >= 1). KV head h's keys and values start at keys + h * D and values + h * D
// (rows kv_stride apart, as in a cache row [Hkv, D]); query head (h, g) of row r is
// q + r * q_row_stride + (h * G + g) * q_stride and writes out + r * out_row_stride +
// (h * G + g) * out_stride. Each (row, KV head) is attend_group_f32, so the order is that
// function's. Never throws.
inline void attend_f32(const float* q, std::int64_t q_row_stride, std::int64_t q_stride, std::int64_t R,
                       const std::int64_t* n, std::int64_t G, std::int64_t Hk, const float* keys, const float* values,
                       std::int64_t kv_stride, std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                       std::int64_t out_stride) noexcept {
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t h = 0; h < Hk; ++h)
      attend_group_f32(q + r * q_row_stride + h * G * q_stride, q_stride, G, keys + h * D, values + h * D, kv_stride,
                       n[r], D, scale, out + r * out_row_stride + h * G * out_stride, out_stride);
}

}  // namespace nnx::kernels::ref
