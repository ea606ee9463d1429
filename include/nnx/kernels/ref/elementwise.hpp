// nnx/kernels/ref/elementwise.hpp — portable elementwise arithmetic: a bias added to every
// row, and the sum of two buffers (residual connections).
//
//   nnx::kernels::ref::add_bias_rows(y, b, T, N);   // y[T, N] += b[N]
//   nnx::kernels::ref::add_f32(x, h, x, T * C);     // x += h
//
// and the gradient side of those and of lookups (training): column sums (a bias's gradient),
// rows scattered into a table (an embedding's gradient) and a transpose (for x^T dy).
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

// acc[j] += sum_r x[r, j] for columns [j0, j1), rows ascending. Never throws.
inline void add_column_sums(const float* x, std::int64_t rows, std::int64_t cols, std::int64_t j0, std::int64_t j1,
                            float* acc) noexcept {
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = j0; j < j1; ++j) acc[j] += x[r * cols + j];
}

// table[ids[r], j] += x[r, j] for columns [j0, j1), rows ascending (ids in range: callers
// check). Never throws.
inline void scatter_add_rows(const float* x, const std::int32_t* ids, std::int64_t rows, std::int64_t cols,
                             std::int64_t j0, std::int64_t j1, float* table) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* dst = table + static_cast<std::int64_t>(ids[r]) * cols;
    for (std::int64_t j = j0; j < j1; ++j) dst[j] += x[r * cols + j];
  }
}

}  // namespace nnx::kernels::ref
