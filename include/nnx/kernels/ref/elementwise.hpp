// nnx/kernels/ref/elementwise.hpp — portable elementwise arithmetic: a bias added to every
// row, and the sum of two buffers (residual connections).
//
//   nnx::kernels::ref::add_bias_rows(y, b, T, N);   // y[T, N] += b[N]
//   nnx::kernels::ref::add_f32(x, h, x, T * C);     // x += h
#pragma once

#include <cstdint>

namespace nnx::kernels::ref {

// y[r, j] += bias[j] for r < rows, j < cols. Never throws.
inline void add_bias_rows(float* y, const float* bias, std::int64_t rows, std::int64_t cols) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* yr = y + r * cols;
    for (std::int64_t j = 0; j < cols; ++j) yr[j] += bias[j];
  }
}

// out[i] = a[i] + b[i] for i < n; out may be a or b. Never throws.
inline void add_f32(const float* a, const float* b, float* out, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

}  // namespace nnx::kernels::ref
