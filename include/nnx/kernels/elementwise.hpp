// nnx/kernels/elementwise.hpp — elementwise arithmetic on raw buffers: bias rows and sums, in
// the best tier the CPU has (nnx/kernels/isa.hpp).
//
//   nnx::kernels::add_bias_rows(y, b, T, N);   // y[T, N] += b[N]   (Linear's bias)
//   nnx::kernels::add_f32(x, h, x, T * C);     // x += h            (residual)
//
// One float rounding per element on every tier (ref and avx2; avx512 runs avx2's), so every
// tier, thread count and split gives the same bits.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/elementwise.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/elementwise.hpp"

namespace nnx::kernels {

using AddF32Fn = void (*)(const float* a, const float* b, float* out, std::int64_t n) noexcept;
using AddBiasRowsFn = void (*)(float* y, const float* bias, std::int64_t rows, std::int64_t cols) noexcept;

inline constexpr TierTable<AddF32Fn> kAddF32{&ref::add_f32, NNX_X86_ENTRY(avx2::add_f32)};
inline constexpr TierTable<AddBiasRowsFn> kAddBiasRows{&ref::add_bias_rows, NNX_X86_ENTRY(avx2::add_bias_rows)};

namespace detail {
// Elements per block when threads split a sum (a whole number of any tier's vectors). An
// addition is cheap next to handing out work, so only long buffers (prefill) are split.
inline constexpr std::int64_t kElementwiseBlock = 4096;
inline constexpr double kElementwiseWork = 0.25;
}  // namespace detail

// y[r, j] += bias[j] for r < rows, j < cols.
inline void add_bias_rows(float* y, const float* bias, std::int64_t rows, std::int64_t cols) noexcept {
  const AddBiasRowsFn f = select(kAddBiasRows, active_isa());
  parallel_blocks(rows, 1, detail::kElementwiseWork * double(rows) * double(cols),
                  [&](std::int64_t r0, std::int64_t r1) noexcept { f(y + r0 * cols, bias, r1 - r0, cols); });
}

// out[i] = a[i] + b[i]; out may be a or b.
inline void add_f32(const float* a, const float* b, float* out, std::int64_t n) noexcept {
  const AddF32Fn f = select(kAddF32, active_isa());
  parallel_blocks(n, detail::kElementwiseBlock, detail::kElementwiseWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept { f(a + i0, b + i0, out + i0, i1 - i0); });
}

// acc[j] += sum_r x[r, j] (a bias's gradient), each column summed over rows in ascending
// order whatever the threads. Never throws.
inline void add_column_sums(const float* x, std::int64_t rows, std::int64_t cols, float* acc) noexcept {
  parallel_blocks(cols, 64, double(rows) * double(cols), [&](std::int64_t j0, std::int64_t j1) noexcept {
    ref::add_column_sums(x, rows, cols, j0, j1, acc);
  });
}

// table[ids[r], :] += x[r, :] (an embedding's gradient), each element's additions in row
// order whatever the threads; ids must lie in the table (callers check). Never throws.
inline void scatter_add_rows(const float* x, const std::int32_t* ids, std::int64_t rows, std::int64_t cols,
                             float* table) noexcept {
  parallel_blocks(cols, 64, double(rows) * double(cols), [&](std::int64_t j0, std::int64_t j1) noexcept {
    ref::scatter_add_rows(x, ids, rows, cols, j0, j1, table);
  });
}

}  // namespace nnx::kernels
