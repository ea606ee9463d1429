// nnx/kernels/softmax.hpp — row-wise softmax on a raw row-major buffer, in the best tier the
// CPU has (nnx/kernels/isa.hpp).
//
//   nnx::kernels::softmax_rows(scores, T, S);   // scores[T, S] in place
//
// ref (nnx/kernels/ref/softmax.hpp) states the order and error bound; avx2
// (nnx/kernels/avx2/softmax.hpp) keeps it within 4 u more; avx512 runs avx2's. Each row is
// computed on its own, so a row's result never depends on the other rows or on threads.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/softmax.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/softmax.hpp"

namespace nnx::kernels {

using SoftmaxRowsFn = void (*)(float* x, std::int64_t rows, std::int64_t cols) noexcept;

inline constexpr TierTable<SoftmaxRowsFn> kSoftmaxRows{&ref::softmax_rows, NNX_X86_ENTRY(avx2::softmax_rows)};

using CrossEntropyRowsFn = void (*)(float* logits, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                    float w, std::int32_t ignore, float* row_loss) noexcept;
inline constexpr TierTable<CrossEntropyRowsFn> kCrossEntropyRows{&ref::cross_entropy_rows,
                                                                 NNX_X86_ENTRY(avx2::cross_entropy_rows)};

// Softmax of each row of x[rows, cols] in place (max-subtracted). A row of all -inf becomes
// zeros; a NaN makes its row NaN. Never throws.
inline void softmax_rows(float* x, std::int64_t rows, std::int64_t cols) noexcept {
  const SoftmaxRowsFn f = select(kSoftmaxRows, active_isa());
  parallel_blocks(rows, 1, 24.0 * double(rows) * double(cols),
                  [&](std::int64_t r0, std::int64_t r1) noexcept { f(x + r0 * cols, r1 - r0, cols); });
}

// Softmax cross-entropy per row (ref::cross_entropy_rows): row_loss[r] = -log softmax(x_r)[t_r],
// and the logits overwritten by (softmax - onehot) * w; rows with target `ignore` get loss 0
// and a zero gradient. Other targets must be in [0, cols). Rows are independent, so threads
// never change a bit. Never throws.
inline void cross_entropy_rows(float* logits, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                               float w, std::int32_t ignore, float* row_loss) noexcept {
  const CrossEntropyRowsFn f = select(kCrossEntropyRows, active_isa());
  parallel_blocks(rows, 1, 24.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    f(logits + r0 * cols, targets + r0, r1 - r0, cols, w, ignore, row_loss + r0);
  });
}

using CrossEntropyTileStatsFn = void (*)(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                         std::int32_t ignore, float* row_max, float* row_sum) noexcept;
inline constexpr TierTable<CrossEntropyTileStatsFn> kCrossEntropyTileStats{
    &ref::cross_entropy_tile_stats, NNX_X86_ENTRY(avx2::cross_entropy_tile_stats)};

using CrossEntropyTileGradFn = void (*)(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                        std::int64_t col0, float w, std::int32_t ignore, const float* row_max,
                                        const float* row_sum) noexcept;
inline constexpr TierTable<CrossEntropyTileGradFn> kCrossEntropyTileGrad{
    &ref::cross_entropy_tile_grad, NNX_X86_ENTRY(avx2::cross_entropy_tile_grad)};

// The softmax cross-entropy over column tiles of the logits (ref::cross_entropy_tile_stats and
// _grad): pass 1 merges each tile x[rows, cols] (overwritten) into the rows' running maximum
// and exp-sum; pass 2 overwrites each tile, columns [col0, col0 + cols), with its gradient
// scaled by w. Rows are independent, so threads never change a bit. Never throw.
inline void cross_entropy_tile_stats(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                     std::int32_t ignore, float* row_max, float* row_sum) noexcept {
  const CrossEntropyTileStatsFn f = select(kCrossEntropyTileStats, active_isa());
  parallel_blocks(rows, 1, 16.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    f(x + r0 * cols, targets + r0, r1 - r0, cols, ignore, row_max + r0, row_sum + r0);
  });
}
inline void cross_entropy_tile_grad(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                    std::int64_t col0, float w, std::int32_t ignore, const float* row_max,
                                    const float* row_sum) noexcept {
  const CrossEntropyTileGradFn f = select(kCrossEntropyTileGrad, active_isa());
  parallel_blocks(rows, 1, 16.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    f(x + r0 * cols, targets + r0, r1 - r0, cols, col0, w, ignore, row_max + r0, row_sum + r0);
  });
}

}  // namespace nnx::kernels
