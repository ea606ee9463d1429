// nnx/kernels/norm.hpp — LayerNorm (GPT-2) and RMSNorm (Llama) over the rows of a raw
// row-major buffer.
//
//   nnx::kernels::layer_norm_rows(x, gamma, beta, 1e-5f, y, T, C);   // x, y: [T, C]
//   nnx::kernels::rms_norm_rows(x, weight, 1e-6f, y, T, C);
//
// Portable on every CPU for now (nnx/kernels/ref/norm.hpp states the order of operations);
// a vectorized path will plug in here without changing callers. Each row is independent.
#pragma once

#include <cstdint>

#include "nnx/kernels/ref/norm.hpp"

namespace nnx::kernels {

// out = (x - mean) / sqrt(var + eps) * scale + bias per row, var the mean of squared
// deviations (biased, as PyTorch and Flax). scale / bias may be nullptr (1 / 0); out may be
// x (in place). Never throws.
inline void layer_norm_rows(const float* x, const float* scale, const float* bias, float eps, float* out,
                            std::int64_t rows, std::int64_t cols) noexcept {
  ref::layer_norm_rows(x, scale, bias, eps, out, rows, cols);
}

// out = x / sqrt(mean(x²) + eps) * scale per row. scale may be nullptr (1); out may be x.
// Never throws.
inline void rms_norm_rows(const float* x, const float* scale, float eps, float* out, std::int64_t rows,
                          std::int64_t cols) noexcept {
  ref::rms_norm_rows(x, scale, eps, out, rows, cols);
}

}  // namespace nnx::kernels
