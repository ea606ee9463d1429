// nnx/kernels/avx2/norm.hpp — AVX2+FMA LayerNorm and RMSNorm over the rows of a buffer
// (nnx/kernels/norm.hpp dispatches here).
//
// Each row's sums run in 32 lanes (four 8-lane accumulators, tail lanes masked to zero),
// combined in one fixed tree, so a row's result depends only on the row. The per-element
// output step is ref's (no FMA: ((x - mean) * r) * scale + bias), so the tiers differ only
// in the rounding of the mean and variance sums. Cross-tier class: WITHIN the bound the ref
// header states for its sequential sums (a blocked sum's error bound is smaller); avx512 runs
// these (no version of its own), so it is bit-identical to avx2.
// Backward: the row statistics as the forward computes them, dx's two row sums in 8 lanes
// (WITHIN ref's bound), the parameter gradients by ref's operations 8 columns at a time.
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cmath>
#include <cstdint>

namespace nnx::kernels::avx2 {

namespace detail::norm {

// Σ f(x_j) over a row: f(acc, lanes, mask) adds 8 lanes into acc (tail lanes load as zero).
template <class Lanes>
NNX_TARGET_AVX2_FMA inline float row_sum(const float* x, std::int64_t n, Lanes f) noexcept {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const __m256i all = _mm256_set1_epi32(-1);
  std::int64_t j = 0;
  for (; j + 32 <= n; j += 32) {
    a0 = f(a0, _mm256_loadu_ps(x + j), all);
    a1 = f(a1, _mm256_loadu_ps(x + j + 8), all);
    a2 = f(a2, _mm256_loadu_ps(x + j + 16), all);
    a3 = f(a3, _mm256_loadu_ps(x + j + 24), all);
  }
  for (; j < n; j += 8) {
    const __m256i m = lane_mask(n - j);
    a0 = f(a0, _mm256_maskload_ps(x + j, m), m);
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
}

struct AddLanes {
  NNX_TARGET_AVX2_FMA __m256 operator()(__m256 acc, __m256 x, __m256i) const noexcept { return _mm256_add_ps(acc, x); }
};
struct AddSquares {
  NNX_TARGET_AVX2_FMA __m256 operator()(__m256 acc, __m256 x, __m256i) const noexcept {
    return _mm256_fmadd_ps(x, x, acc);
  }
};
// (x - mean)², zero in masked-off lanes (where x was loaded as 0).
struct AddSquaredDeviations {
  __m256 mean;
  NNX_TARGET_AVX2_FMA __m256 operator()(__m256 acc, __m256 x, __m256i m) const noexcept {
    const __m256 d = _mm256_and_ps(_mm256_sub_ps(x, mean), _mm256_castsi256_ps(m));
    return _mm256_fmadd_ps(d, d, acc);
  }
};

}  // namespace detail::norm

// As ref::layer_norm_rows.
NNX_TARGET_AVX2_FMA inline void layer_norm_rows(const float* x, const float* scale, const float* bias, float eps,
                                                float* out, std::int64_t rows, std::int64_t cols) noexcept {
  namespace d = detail::norm;
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    const float mean = d::row_sum(xr, cols, d::AddLanes{}) / n;
    const __m256 vmean = _mm256_set1_ps(mean);
    const float sq = d::row_sum(xr, cols, d::AddSquaredDeviations{vmean});
    const __m256 rstd = _mm256_set1_ps(1.0f / std::sqrt(sq / n + eps));
    for (std::int64_t j = 0; j < cols; j += 8) {
      __m256 y = _mm256_mul_ps(_mm256_sub_ps(load_lanes(xr + j, cols - j), vmean), rstd);
      if (scale) y = _mm256_mul_ps(y, load_lanes(scale + j, cols - j));
      if (bias) y = _mm256_add_ps(y, load_lanes(bias + j, cols - j));
      store_lanes(yr + j, y, cols - j);
    }
  }
}

// As ref::rms_norm_rows.
NNX_TARGET_AVX2_FMA inline void rms_norm_rows(const float* x, const float* scale, float eps, float* out,
                                              std::int64_t rows, std::int64_t cols) noexcept {
  namespace d = detail::norm;
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    const float sq = d::row_sum(xr, cols, d::AddSquares{});
    const __m256 rs = _mm256_set1_ps(1.0f / std::sqrt(sq / n + eps));
    for (std::int64_t j = 0; j < cols; j += 8) {
      __m256 y = _mm256_mul_ps(load_lanes(xr + j, cols - j), rs);
      if (scale) y = _mm256_mul_ps(y, load_lanes(scale + j, cols - j));
      store_lanes(yr + j, y, cols - j);
    }
  }
}

namespace detail::norm {

// ref::detail::norm_backward_row with its two sums in 8 lanes (combined by hsum's tree). Tail
// lanes load dy as 0, so they add nothing whatever x̂ is there.
NNX_TARGET_AVX2_FMA inline void backward_row(const float* x, const float* scale, const float* dy, float mean, float r,
                                             bool centered, float* dx, std::int64_t cols) noexcept {
  const __m256 vmean = _mm256_set1_ps(mean), vr = _mm256_set1_ps(r), one = _mm256_set1_ps(1.0f);
  __m256 sum_g = _mm256_setzero_ps(), sum_gx = sum_g;
  for (std::int64_t j = 0; j < cols; j += 8) {
    const __m256 g = _mm256_mul_ps(load_lanes(dy + j, cols - j), scale ? load_lanes(scale + j, cols - j) : one);
    const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load_lanes(x + j, cols - j), vmean), vr);
    sum_g = _mm256_add_ps(sum_g, g);
    sum_gx = _mm256_fmadd_ps(g, xhat, sum_gx);
  }
  const float n = static_cast<float>(cols);
  const __m256 mean_g = _mm256_set1_ps(centered ? hsum(sum_g) / n : 0.0f);
  const __m256 mean_gx = _mm256_set1_ps(hsum(sum_gx) / n);
  for (std::int64_t j = 0; j < cols; j += 8) {
    const __m256 g = _mm256_mul_ps(load_lanes(dy + j, cols - j), scale ? load_lanes(scale + j, cols - j) : one);
    const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load_lanes(x + j, cols - j), vmean), vr);
    const __m256 d = _mm256_sub_ps(_mm256_sub_ps(g, mean_g), _mm256_mul_ps(xhat, mean_gx));
    store_lanes(dx + j, _mm256_mul_ps(vr, d), cols - j);
  }
}

}  // namespace detail::norm

// As ref::layer_norm_backward_rows (the statistics as layer_norm_rows computes them).
NNX_TARGET_AVX2_FMA inline void layer_norm_backward_rows(const float* x, const float* scale, const float* dy, float eps,
                                                         float* dx, float* stats, std::int64_t rows,
                                                         std::int64_t cols) noexcept {
  namespace d = detail::norm;
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float mean = d::row_sum(xr, cols, d::AddLanes{}) / n;
    const float sq = d::row_sum(xr, cols, d::AddSquaredDeviations{_mm256_set1_ps(mean)});
    const float rstd = 1.0f / std::sqrt(sq / n + eps);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
    d::backward_row(xr, scale, dy + r * cols, mean, rstd, true, dx + r * cols, cols);
  }
}

// As ref::rms_norm_backward_rows.
NNX_TARGET_AVX2_FMA inline void rms_norm_backward_rows(const float* x, const float* scale, const float* dy, float eps,
                                                       float* dx, float* stats, std::int64_t rows,
                                                       std::int64_t cols) noexcept {
  namespace d = detail::norm;
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float rs = 1.0f / std::sqrt(d::row_sum(xr, cols, d::AddSquares{}) / n + eps);
    stats[2 * r] = 0.0f;
    stats[2 * r + 1] = rs;
    d::backward_row(xr, scale, dy + r * cols, 0.0f, rs, false, dx + r * cols, cols);
  }
}

// As ref::norm_param_grads, 8 columns at a time with ref's operations in ref's order (multiply,
// then add; no FMA).
NNX_TARGET_AVX2_FMA inline void norm_param_grads(const float* x, const float* dy, const float* stats,
                                                 std::int64_t rows, std::int64_t cols, std::int64_t j0, std::int64_t j1,
                                                 float* dscale, float* dbias) noexcept {
  for (std::int64_t j = j0; j < j1; j += 8) {
    const std::int64_t n = j1 - j;
    __m256 ds = load_lanes(dscale + j, n);
    __m256 db = dbias ? load_lanes(dbias + j, n) : _mm256_setzero_ps();
    for (std::int64_t r = 0; r < rows; ++r) {
      const __m256 g = load_lanes(dy + r * cols + j, n);
      const __m256 xhat = _mm256_mul_ps(_mm256_sub_ps(load_lanes(x + r * cols + j, n),
                                                      _mm256_set1_ps(stats[2 * r])),
                                        _mm256_set1_ps(stats[2 * r + 1]));
      ds = _mm256_add_ps(ds, _mm256_mul_ps(g, xhat));
      if (dbias) db = _mm256_add_ps(db, g);
    }
    store_lanes(dscale + j, ds, n);
    if (dbias) store_lanes(dbias + j, db, n);
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
