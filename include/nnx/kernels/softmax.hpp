// nnx/kernels/softmax.hpp — row-wise softmax on a raw row-major buffer (attention weights).
//
//   nnx::kernels::softmax_rows(scores, T, S);   // scores[T, S] in place
//
// Portable on every CPU for now (nnx/kernels/ref/softmax.hpp, where the order and error
// bound are stated); a vectorized path will plug in here without changing callers. Each row
// is computed on its own, so a row's result never depends on the other rows.
#pragma once

#include <cstdint>

#include "nnx/kernels/ref/softmax.hpp"

namespace nnx::kernels {

// Softmax of each row of x[rows, cols] in place (max-subtracted). A row of all -inf becomes
// zeros; a NaN makes its row NaN. Never throws.
inline void softmax_rows(float* x, std::int64_t rows, std::int64_t cols) noexcept { ref::softmax_rows(x, rows, cols); }

}  // namespace nnx::kernels
