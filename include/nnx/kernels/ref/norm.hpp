// nnx/kernels/ref/norm.hpp — portable LayerNorm and RMSNorm over the rows of a buffer.
//
//   nnx::kernels::ref::layer_norm_rows(x, gamma, beta, 1e-5f, y, T, C);   // GPT-2
//   nnx::kernels::ref::rms_norm_rows(x, weight, 1e-6f, y, T, C);          // Llama
//
// Orders (floats throughout, sums over j ascending):
//   layer_norm: mean = Σx / cols; var = Σ(x - mean)² / cols (two passes: no cancellation);
//               r = 1 / sqrt(var + eps); y_j = ((x_j - mean) * r) * scale_j + bias_j
//   rms_norm:   ms = Σx² / cols; r = 1 / sqrt(ms + eps); y_j = (x_j * r) * scale_j
//               (Hugging Face Llama's order: hidden * rsqrt(var + eps), then weight * it)
//
// Backward (training): each row's statistics are recomputed from x in the forward's order and
// kept as (mean, r) pairs (mean 0 for RMSNorm) for the parameter gradients, which sum over
// rows per column (norm_param_grads) so that a column's sum runs over rows in ascending order
// whatever the split between threads. With g = dy * scale and x̂ = (x - mean) r:
//   layer_norm: dx = r (g - mean(g) - x̂ mean(g x̂))
//   rms_norm:   dx = r (g - x̂ mean(g x̂))
#pragma once

#include <cmath>
#include <cstdint>

namespace nnx::kernels::ref {

// out[r, :] = LayerNorm(x[r, :]) for r < rows; x, out: [rows, cols]; scale, bias: [cols] or
// nullptr (1 and 0). out may be x itself (in place) but must not overlap it otherwise.
// Never throws.
inline void layer_norm_rows(const float* x, const float* scale, const float* bias, float eps, float* out,
                            std::int64_t rows, std::int64_t cols) noexcept {
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    float sum = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) sum += xr[j];
    const float mean = sum / n;
    float sq = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) {
      const float d = xr[j] - mean;
      sq += d * d;
    }
    const float rstd = 1.0f / std::sqrt(sq / n + eps);
    for (std::int64_t j = 0; j < cols; ++j) {
      float y = (xr[j] - mean) * rstd;
      if (scale) y = y * scale[j];
      if (bias) y = y + bias[j];
      yr[j] = y;
    }
  }
}

// out[r, :] = RMSNorm(x[r, :]); x, out: [rows, cols]; scale: [cols] or nullptr (1). out may
// be x itself but must not overlap it otherwise. Never throws.
inline void rms_norm_rows(const float* x, const float* scale, float eps, float* out, std::int64_t rows,
                          std::int64_t cols) noexcept {
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    float sq = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) sq += xr[j] * xr[j];
    const float rs = 1.0f / std::sqrt(sq / n + eps);
    for (std::int64_t j = 0; j < cols; ++j) {
      const float y = xr[j] * rs;
      yr[j] = scale ? y * scale[j] : y;
    }
  }
}

namespace detail {
// dx of one normalized row from g = dy * scale, x̂ = (x - mean) r; means over j ascending.
inline void norm_backward_row(const float* x, const float* scale, const float* dy, float mean, float r, bool centered,
                              float* dx, std::int64_t cols) noexcept {
  const float n = static_cast<float>(cols);
  float sum_g = 0.0f, sum_gx = 0.0f;
  for (std::int64_t j = 0; j < cols; ++j) {
    const float g = scale ? dy[j] * scale[j] : dy[j];
    sum_g += g;
    sum_gx += g * ((x[j] - mean) * r);
  }
  const float mean_g = centered ? sum_g / n : 0.0f, mean_gx = sum_gx / n;
  for (std::int64_t j = 0; j < cols; ++j) {
    const float g = scale ? dy[j] * scale[j] : dy[j];
    dx[j] = r * (g - mean_g - ((x[j] - mean) * r) * mean_gx);
  }
}
}  // namespace detail

// dx[rows, cols] of layer_norm_rows given dy, and each row's (mean, r) in stats[2 * row + {0, 1}].
// scale may be nullptr (1); dx may be dy (each row reads its dy before writing). Never throws.
inline void layer_norm_backward_rows(const float* x, const float* scale, const float* dy, float eps, float* dx,
                                     float* stats, std::int64_t rows, std::int64_t cols) noexcept {
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float sum = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) sum += xr[j];
    const float mean = sum / n;
    float sq = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) {
      const float d = xr[j] - mean;
      sq += d * d;
    }
    const float rstd = 1.0f / std::sqrt(sq / n + eps);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
    detail::norm_backward_row(xr, scale, dy + r * cols, mean, rstd, true, dx + r * cols, cols);
  }
}

// dx[rows, cols] of rms_norm_rows given dy; stats as layer_norm_backward_rows (mean 0).
inline void rms_norm_backward_rows(const float* x, const float* scale, const float* dy, float eps, float* dx,
                                   float* stats, std::int64_t rows, std::int64_t cols) noexcept {
  if (cols <= 0) return;
  const float n = static_cast<float>(cols);
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float sq = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) sq += xr[j] * xr[j];
    const float rs = 1.0f / std::sqrt(sq / n + eps);
    stats[2 * r] = 0.0f;
    stats[2 * r + 1] = rs;
    detail::norm_backward_row(xr, scale, dy + r * cols, 0.0f, rs, false, dx + r * cols, cols);
  }
}

// For columns [j0, j1): dscale[j] += sum_r dy[r, j] x̂[r, j] and, when dbias is not nullptr,
// dbias[j] += sum_r dy[r, j], rows ascending; x, dy: [rows, cols], stats from the backward
// above. Never throws.
inline void norm_param_grads(const float* x, const float* dy, const float* stats, std::int64_t rows,
                             std::int64_t cols, std::int64_t j0, std::int64_t j1, float* dscale, float* dbias) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    const float mean = stats[2 * r], rstd = stats[2 * r + 1];
    for (std::int64_t j = j0; j < j1; ++j) dscale[j] += gr[j] * ((xr[j] - mean) * rstd);
    if (dbias)
      for (std::int64_t j = j0; j < j1; ++j) dbias[j] += gr[j];
  }
}

}  // namespace nnx::kernels::ref
