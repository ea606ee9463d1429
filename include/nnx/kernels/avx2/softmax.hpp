// nnx/kernels/avx2/softmax.hpp — AVX2+FMA row-wise softmax (nnx/kernels/softmax.hpp
// dispatches here).
//
// ref's order with vector parts: the maximum (exact in any order), e_j = exp(x_j - m) by
// simd.hpp's exp_nonpositive (within 2 ulp; e_j below about 1e-38 flush to 0), their sum in
// 8 lanes combined by hsum's fixed tree, y_j = e_j / s. Cross-tier class: WITHIN ref's
// relative bound plus 4 u per element; avx512 runs this, bit-identical to avx2. A row's
// result depends only on the row. cross_entropy_rows and the tiled pair are ref's with the same vector parts.
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/softmax.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace nnx::kernels::avx2 {

namespace detail::softmax {

// The largest of the eight lanes.
NNX_TARGET_AVX2_FMA inline float hmax(__m256 v) noexcept {
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  return _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
}

// row[j] <- exp(row[j] - m) for j < cols (exp_nonpositive), returning their sum in 8 lanes
// combined by hsum's tree.
NNX_TARGET_AVX2_FMA inline float exp_in_place_sum(float* row, std::int64_t cols, float m) noexcept {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < cols; j += 8) {
    const __m256i mk = lane_mask(cols - j);
    const __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(row + j, mk), vm)),
                                   _mm256_castsi256_ps(mk));
    store_lanes(row + j, e, cols - j);
    sum = _mm256_add_ps(sum, e);
  }
  return hsum(sum);
}

}  // namespace detail::softmax

// As ref::softmax_rows.
NNX_TARGET_AVX2_FMA inline void softmax_rows(float* x, std::int64_t rows, std::int64_t cols) noexcept {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    __m256 vmax = _mm256_set1_ps(-kInf), nan = _mm256_setzero_ps();
    for (std::int64_t j = 0; j < cols; j += 8) {
      const __m256i m = lane_mask(cols - j);
      const __m256 v = _mm256_blendv_ps(_mm256_set1_ps(-kInf), _mm256_maskload_ps(row + j, m), _mm256_castsi256_ps(m));
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      vmax = _mm256_max_ps(vmax, v);
    }
    if (_mm256_movemask_ps(nan)) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float m = detail::softmax::hmax(vmax);
    if (m == -kInf) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = 0.0f;
      continue;
    }
    const __m256 s = _mm256_set1_ps(detail::softmax::exp_in_place_sum(row, cols, m));
    for (std::int64_t j = 0; j < cols; j += 8)
      store_lanes(row + j, _mm256_div_ps(load_lanes(row + j, cols - j), s), cols - j);
  }
}

// As ref::cross_entropy_rows: the row maximum, e_j by exp_nonpositive with their sum in 8
// lanes (hsum's tree), loss = (m - x_t) + log(s), then e_j * (w / s) and w taken off at t.
NNX_TARGET_AVX2_FMA inline void cross_entropy_rows(float* logits, const std::int32_t* targets, std::int64_t rows,
                                                   std::int64_t cols, float w, std::int32_t ignore,
                                                   float* row_loss) noexcept {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = logits + r * cols;
    const std::int32_t t = targets[r];
    if (t == ignore) {
      for (std::int64_t j = 0; j < cols; j += 8) store_lanes(row + j, _mm256_setzero_ps(), cols - j);
      row_loss[r] = 0.0f;
      continue;
    }
    __m256 vmax = _mm256_set1_ps(-kInf);
    for (std::int64_t j = 0; j < cols; j += 8) {
      const __m256i m = lane_mask(cols - j);
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(vmax, _mm256_maskload_ps(row + j, m), _mm256_castsi256_ps(m)));
    }
    const float mx = detail::softmax::hmax(vmax);
    const float xt = row[t];
    const float s = detail::softmax::exp_in_place_sum(row, cols, mx);
    row_loss[r] = (mx - xt) + std::log(s);
    const __m256 ws = _mm256_set1_ps(w / s);
    for (std::int64_t j = 0; j < cols; j += 8)
      store_lanes(row + j, _mm256_mul_ps(load_lanes(row + j, cols - j), ws), cols - j);
    row[t] -= w;
  }
}

// As ref::cross_entropy_tile_stats: the tile's maximum, e_j by exp_nonpositive summed in 8
// lanes, merged as ref merges.
NNX_TARGET_AVX2_FMA inline void cross_entropy_tile_stats(float* x, const std::int32_t* targets, std::int64_t rows,
                                                         std::int64_t cols, std::int32_t ignore, float* row_max,
                                                         float* row_sum) noexcept {
  constexpr float kInf = std::numeric_limits<float>::infinity();
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore) continue;
    float* row = x + r * cols;
    __m256 vmax = _mm256_set1_ps(-kInf);
    for (std::int64_t j = 0; j < cols; j += 8) {
      const __m256i m = lane_mask(cols - j);
      vmax = _mm256_max_ps(vmax, _mm256_blendv_ps(vmax, _mm256_maskload_ps(row + j, m), _mm256_castsi256_ps(m)));
    }
    const float mx = detail::softmax::hmax(vmax);
    if (mx == -kInf) continue;
    ref::detail::merge_exp_sum(mx, detail::softmax::exp_in_place_sum(row, cols, mx), row_max[r], row_sum[r]);
  }
}

// As ref::cross_entropy_tile_grad, e_j by exp_nonpositive.
NNX_TARGET_AVX2_FMA inline void cross_entropy_tile_grad(float* x, const std::int32_t* targets, std::int64_t rows,
                                                        std::int64_t cols, std::int64_t col0, float w,
                                                        std::int32_t ignore, const float* row_max,
                                                        const float* row_sum) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    const std::int32_t t = targets[r];
    if (t == ignore) {
      for (std::int64_t j = 0; j < cols; j += 8) store_lanes(row + j, _mm256_setzero_ps(), cols - j);
      continue;
    }
    (void)detail::softmax::exp_in_place_sum(row, cols, row_max[r]);
    const __m256 ws = _mm256_set1_ps(w / row_sum[r]);
    for (std::int64_t j = 0; j < cols; j += 8)
      store_lanes(row + j, _mm256_mul_ps(load_lanes(row + j, cols - j), ws), cols - j);
    if (t >= col0 && t < col0 + cols) row[t - col0] -= w;
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
