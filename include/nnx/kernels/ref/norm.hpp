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

}  // namespace nnx::kernels::ref
