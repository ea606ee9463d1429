// nnx/kernels/norm.hpp — LayerNorm (GPT-2) and RMSNorm (Llama) over the rows of a raw
// row-major buffer, in the best tier the CPU has (nnx/kernels/isa.hpp).
//
//   nnx::kernels::layer_norm_rows(x, gamma, beta, 1e-5f, y, T, C);   // x, y: [T, C]
//   nnx::kernels::rms_norm_rows(x, weight, 1e-6f, y, T, C);
//
// ref (nnx/kernels/ref/norm.hpp) states the order of operations and the error bound every
// tier keeps; avx2 (nnx/kernels/avx2/norm.hpp) sums in vector lanes; avx512 runs avx2's. Each
// row is computed on its own, so rows may be split between threads without changing a bit.
//
// Backward (training): layer_norm_backward / rms_norm_backward give dx and add the scale (and
// bias) gradients; rows split between threads for dx, columns for the parameter sums, so every
// result is the same on any thread count.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/norm.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/norm.hpp"

namespace nnx::kernels {

using LayerNormRowsFn = void (*)(const float* x, const float* scale, const float* bias, float eps, float* out,
                                 std::int64_t rows, std::int64_t cols) noexcept;
using RmsNormRowsFn = void (*)(const float* x, const float* scale, float eps, float* out, std::int64_t rows,
                               std::int64_t cols) noexcept;

inline constexpr TierTable<LayerNormRowsFn> kLayerNormRows{&ref::layer_norm_rows,
                                                          NNX_X86_ENTRY(avx2::layer_norm_rows)};
inline constexpr TierTable<RmsNormRowsFn> kRmsNormRows{&ref::rms_norm_rows, NNX_X86_ENTRY(avx2::rms_norm_rows)};

// out = (x - mean) / sqrt(var + eps) * scale + bias per row, var the mean of squared
// deviations (biased, as PyTorch and Flax). scale / bias may be nullptr (1 / 0); out may be
// x (in place). Never throws.
inline void layer_norm_rows(const float* x, const float* scale, const float* bias, float eps, float* out,
                            std::int64_t rows, std::int64_t cols) noexcept {
  const LayerNormRowsFn f = select(kLayerNormRows, active_isa());
  parallel_blocks(rows, 1, 4.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    f(x + r0 * cols, scale, bias, eps, out + r0 * cols, r1 - r0, cols);
  });
}

// out = x / sqrt(mean(x²) + eps) * scale per row. scale may be nullptr (1); out may be x.
// Never throws.
inline void rms_norm_rows(const float* x, const float* scale, float eps, float* out, std::int64_t rows,
                          std::int64_t cols) noexcept {
  const RmsNormRowsFn f = select(kRmsNormRows, active_isa());
  parallel_blocks(rows, 1, 3.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    f(x + r0 * cols, scale, eps, out + r0 * cols, r1 - r0, cols);
  });
}

using NormBackwardRowsFn = void (*)(const float* x, const float* scale, const float* dy, float eps, float* dx,
                                    float* stats, std::int64_t rows, std::int64_t cols) noexcept;
using NormParamGradsFn = void (*)(const float* x, const float* dy, const float* stats, std::int64_t rows,
                                  std::int64_t cols, std::int64_t j0, std::int64_t j1, float* dscale,
                                  float* dbias) noexcept;

inline constexpr TierTable<NormBackwardRowsFn> kLayerNormBackwardRows{&ref::layer_norm_backward_rows,
                                                                      NNX_X86_ENTRY(avx2::layer_norm_backward_rows)};
inline constexpr TierTable<NormBackwardRowsFn> kRmsNormBackwardRows{&ref::rms_norm_backward_rows,
                                                                    NNX_X86_ENTRY(avx2::rms_norm_backward_rows)};
inline constexpr TierTable<NormParamGradsFn> kNormParamGrads{&ref::norm_param_grads,
                                                            NNX_X86_ENTRY(avx2::norm_param_grads)};

namespace detail {
inline void norm_backward(const TierTable<NormBackwardRowsFn>& rows_table, const float* x, const float* scale,
                          const float* dy, float eps, float* dx, float* stats, float* dscale, float* dbias,
                          std::int64_t rows, std::int64_t cols) noexcept {
  const NormBackwardRowsFn rows_fn = select(rows_table, active_isa());
  parallel_blocks(rows, 1, 8.0 * double(rows) * double(cols), [&](std::int64_t r0, std::int64_t r1) noexcept {
    rows_fn(x + r0 * cols, scale, dy + r0 * cols, eps, dx + r0 * cols, stats + 2 * r0, r1 - r0, cols);
  });
  if (!dscale) return;
  const NormParamGradsFn sums_fn = select(kNormParamGrads, active_isa());
  parallel_blocks(cols, 64, 3.0 * double(rows) * double(cols), [&](std::int64_t j0, std::int64_t j1) noexcept {
    sums_fn(x, dy, stats, rows, cols, j0, j1, dscale, dbias);
  });
}
}  // namespace detail

// Backward of layer_norm_rows: dx[rows, cols] from dy (dx overlapping neither x nor dy), and
// dscale[j] += sum_r dy x̂, dbias[j] += sum_r dy (each nullptr to skip). stats: scratch of
// 2 * rows floats (each row's mean and 1 / std). Never throws.
inline void layer_norm_backward(const float* x, const float* scale, const float* dy, float eps, float* dx,
                                float* stats, float* dscale, float* dbias, std::int64_t rows,
                                std::int64_t cols) noexcept {
  detail::norm_backward(kLayerNormBackwardRows, x, scale, dy, eps, dx, stats, dscale, dbias, rows, cols);
}

// Backward of rms_norm_rows, as layer_norm_backward without a bias.
inline void rms_norm_backward(const float* x, const float* scale, const float* dy, float eps, float* dx, float* stats,
                              float* dscale, std::int64_t rows, std::int64_t cols) noexcept {
  detail::norm_backward(kRmsNormBackwardRows, x, scale, dy, eps, dx, stats, dscale, nullptr, rows, cols);
}

}  // namespace nnx::kernels
