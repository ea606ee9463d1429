// nnx/kernels/elementwise.hpp — elementwise arithmetic on raw buffers: bias rows and sums.
//
//   nnx::kernels::add_bias_rows(y, b, T, N);   // y[T, N] += b[N]   (Linear's bias)
//   nnx::kernels::add_f32(x, h, x, T * C);     // x += h            (residual)
//
// Portable on every CPU (compilers vectorize these loops; a single rounding per element, so
// every path gives the same bits).
#pragma once

#include <cstdint>

#include "nnx/kernels/ref/elementwise.hpp"

namespace nnx::kernels {

// y[r, j] += bias[j] for r < rows, j < cols.
inline void add_bias_rows(float* y, const float* bias, std::int64_t rows, std::int64_t cols) noexcept {
  ref::add_bias_rows(y, bias, rows, cols);
}

// out[i] = a[i] + b[i]; out may be a or b.
inline void add_f32(const float* a, const float* b, float* out, std::int64_t n) noexcept { ref::add_f32(a, b, out, n); }

}  // namespace nnx::kernels
