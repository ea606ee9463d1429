// nnx/kernels/quantize.hpp — AQT absmax int8 quantization on raw row-major buffers: the
// entry points the quantization layer calls. Each call runs the best tier the CPU has
// (nnx/kernels/isa.hpp); every tier gives the same bits (nnx/kernels/ref/quantize.hpp states
// the numerics, including what NaN and inf inputs give).
//
//   // activations x[M, K] -> xq[M, K] and one scale per row
//   nnx::kernels::quantize_rows_absmax(M, K, x, K, xq, K, xscale);
//   // a float Linear kernel w[K, N] ([in, out]) -> q[N, K] and one scale per output channel
//   nnx::kernels::quantize_columns_absmax(K, N, w, N, q, K, wscale);
//   // and back: w_t[N, K] = q * scale (the transpose of the float kernel, rounded)
//   nnx::kernels::dequantize_rows(N, K, q, K, wscale, w_t, K);
//
// The int8 matrices use the layout nnx/kernels/gemm_i8.hpp multiplies: one row per output
// channel (or per activation row), the contraction axis K contiguous.
//
// Threads (nnx::set_num_threads): large calls split rows (or column strips) between
// threads; every element is computed by the same arithmetic whoever computes it, so results
// never depend on the thread count. Never throw: callers check shapes and strides.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/avx2/quantize.hpp"
#include "nnx/kernels/avx512/quantize.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/quantize.hpp"

namespace nnx::kernels {

using QuantizeRowsFn = void (*)(std::int64_t M, std::int64_t K, const float* x, std::int64_t ldx, std::int8_t* q,
                                std::int64_t ldq, float* scale) noexcept;
using QuantizeColumnsFn = void (*)(std::int64_t K, std::int64_t N, const float* w, std::int64_t ldw, std::int8_t* q,
                                   std::int64_t ldq, float* scale) noexcept;
using DequantizeRowsFn = void (*)(std::int64_t N, std::int64_t K, const std::int8_t* q, std::int64_t ldq,
                                  const float* scale, float* w, std::int64_t ldw) noexcept;

inline constexpr TierTable<QuantizeRowsFn> kQuantizeRowsAbsmax{&ref::quantize_rows_absmax,
                                                               NNX_X86_ENTRY(avx2::quantize_rows_absmax),
                                                               NNX_X86_ENTRY(avx512::quantize_rows_absmax)};
inline constexpr TierTable<QuantizeColumnsFn> kQuantizeColumnsAbsmax{&ref::quantize_columns_absmax,
                                                                     NNX_X86_ENTRY(avx2::quantize_columns_absmax)};
inline constexpr TierTable<DequantizeRowsFn> kDequantizeRows{&ref::dequantize_rows,
                                                             NNX_X86_ENTRY(avx2::dequantize_rows),
                                                             NNX_X86_ENTRY(avx512::dequantize_rows)};

// Columns per block when threads split quantize_columns_absmax: a multiple of every tier's
// strip width.
inline constexpr std::int64_t kQuantizeColumnBlock = 32;

// Per row of x[M, K] (row stride ldx >= K): scale[m] = max_k |x[m, k]| / 127.5 (1 for an
// all-zero row) and q[m, k] = clip(round_half_even(x[m, k] / scale[m]), -127, 127), q with
// row stride ldq >= K (only K bytes of each row are written). For activations, and for a
// weight already stored [N, K].
inline void quantize_rows_absmax(std::int64_t M, std::int64_t K, const float* x, std::int64_t ldx, std::int8_t* q,
                                 std::int64_t ldq, float* scale) noexcept {
  if (M <= 0) return;
  const QuantizeRowsFn f = select(kQuantizeRowsAbsmax, active_isa());
  // A quantized element costs a division, several multiply-adds' worth.
  parallel_blocks(M, 1, 4.0 * double(M) * double(K), [&](std::int64_t m0, std::int64_t m1) noexcept {
    f(m1 - m0, K, x + m0 * ldx, ldx, q + m0 * ldq, ldq, scale + m0);
  });
}

// Per column of w[K, N] (row stride ldw >= N; the [in, out] layout of a float Linear
// kernel): scale[n] = max_k |w[k, n]| / 127.5 (1 for an all-zero column), and the
// transposed q[N, K] (row stride ldq >= K) with q[n, k] = clip(round_half_even(w[k, n] /
// scale[n]), -127, 127). Bitwise equal to quantize_rows_absmax on the transpose of w.
inline void quantize_columns_absmax(std::int64_t K, std::int64_t N, const float* w, std::int64_t ldw, std::int8_t* q,
                                    std::int64_t ldq, float* scale) noexcept {
  if (N <= 0) return;
  const QuantizeColumnsFn f = select(kQuantizeColumnsAbsmax, active_isa());
  parallel_blocks(N, kQuantizeColumnBlock, 4.0 * double(N) * double(K), [&](std::int64_t n0, std::int64_t n1) noexcept {
    f(K, n1 - n0, w + n0, ldw, q + n0 * ldq, ldq, scale + n0);
  });
}

// w[n, k] = float(q[n, k]) * scale[n] for q[N, K] (row stride ldq >= K) into w[N, K] (row
// stride ldw >= K). Exact up to the one rounding of the product.
inline void dequantize_rows(std::int64_t N, std::int64_t K, const std::int8_t* q, std::int64_t ldq, const float* scale,
                            float* w, std::int64_t ldw) noexcept {
  if (N <= 0) return;
  const DequantizeRowsFn f = select(kDequantizeRows, active_isa());
  parallel_blocks(N, 1, double(N) * double(K), [&](std::int64_t n0, std::int64_t n1) noexcept {
    f(n1 - n0, K, q + n0 * ldq, ldq, scale + n0, w + n0 * ldw, ldw);
  });
}

}  // namespace nnx::kernels
