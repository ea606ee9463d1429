// nnx/kernels/gemm_i8.hpp — matrix products with int8 weights (AQT-style, per output channel
// scales): weight-only int8 with float activations, and W8A8 with activations quantized per
// row (nnx/kernels/quantize.hpp). Each call runs the best tier the CPU has
// (nnx/kernels/isa.hpp).
//
//   // weights: a float Linear kernel w[C, F] ([in, out]) -> q[F, C] and wscale[F], once
//   nnx::kernels::quantize_columns_absmax(C, F, w, F, q, C, wscale);
//   // weight-only int8: y[T, F] = x[T, C] · dequant(q)ᵀ
//   nnx::kernels::gemm_f32_w8(T, F, C, x, C, q, C, wscale, y, F);
//   // W8A8: quantize the activations per row, then an exact int32 product
//   nnx::kernels::quantize_rows_absmax(T, C, x, C, xq, C, xscale);
//   nnx::kernels::gemm_i8_i8(T, F, C, xq, C, xscale, q, C, wscale, y, F);
//
// Layout: q[N, K] holds one row per output channel with the contraction axis K contiguous
// (nn.Linear's [out, in], the QTensor layout), wscale[N] one scale per output channel,
// xq[M, K] and xscale[M] one scale per activation row, y[M, N]; all row-major with row
// strides given, none overlapping y. int8 values must lie in [-127, 127] (the quantizers'
// range).
//
// Numerics and determinism: gemm_f32_w8 reduces each element in an order fixed by K alone
// (nnx/kernels/avx2/gemm_i8.hpp and nnx/kernels/ref/gemm_i8.hpp give the two orders, which
// differ by rounding only); gemm_i8_i8 sums exactly in int32 and both paths give the same
// bits. Either way a row of y is bitwise identical whether computed alone or in any batch,
// and on any thread count: threads (nnx::set_num_threads) split the output channels, never
// K. Safe to call from several threads at once; allocate nothing; never throw (callers check
// shapes).
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/gemm_i8.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/gemm_i8.hpp"

namespace nnx::kernels {

using GemmF32W8Fn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                             const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                             std::int64_t ldy) noexcept;
using GemmI8I8Fn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                            const float* xscale, const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                            std::int64_t ldy) noexcept;

inline constexpr TierTable<GemmF32W8Fn> kGemmF32W8{&ref::gemm_f32_w8, NNX_X86_ENTRY(avx2::gemm_f32_w8)};
inline constexpr TierTable<GemmI8I8Fn> kGemmI8I8{&ref::gemm_i8_i8, NNX_X86_ENTRY(avx2::gemm_i8_i8),
                                                 NNX_X86_ENTRY(avx512::gemm_i8_i8)};

// The W8A8 entry for `isa` at M rows. One or two rows (batch-1 decode) only stream the weights,
// and which of two same-bits GEMVs streams them faster is a matter of the core, not of the
// ISA: inside a Llama-162M W8A8 decode step an AMD Zen 4 ran avx2's one-stream GEMV faster
// than avx512's row tile (5.0 against 6.6 ms per token), an Intel Xeon (AVX-512, AMX) ran
// avx512's faster (11.7 against 14.3 ms on one thread, 6.1 against 8.1 on two). So avx512 on
// an AMD CPU keeps avx2's one-stream GEMV for M <= 2 (the avx2 tier's own entry reads one row
// as four streams, measured faster on a Zen 3, not measured on a Zen 4); everywhere else
// each tier runs its own kernel.
inline GemmI8I8Fn gemm_i8_i8_entry(Isa isa, std::int64_t M) noexcept {
  if (isa == Isa::avx512 && M <= 2 && cpu_vendor() == CpuVendor::amd)
    return NNX_X86_ENTRY(avx2::gemm_i8_i8_one_stream);
  return select(kGemmI8I8, isa);
}

// Output channels per block when threads split a product: a multiple of every tier's tile
// width, so only the last block has a partial tile.
inline constexpr std::int64_t kGemmI8ChannelBlock = 48;

// Weight-only int8: y[m][n] = wscale[n] * Σ_k x[m][k] * float(q[n][k]), float accumulation.
// x[M, K] (ldx >= K), q[N, K] (ldq >= K), wscale[N], y[M, N] (ldy >= N) overwritten.
inline void gemm_f32_w8(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                        const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                        std::int64_t ldy) noexcept {
  if (M <= 0 || N <= 0) return;
  const auto f = select(kGemmF32W8, active_isa());
  parallel_blocks(N, kGemmI8ChannelBlock, double(M) * double(N) * double(K), [&](std::int64_t n0, std::int64_t n1) noexcept {
    f(M, n1 - n0, K, x, ldx, q + n0 * ldq, ldq, wscale + n0, y + n0, ldy);
  });
}

// W8A8: y[m][n] = (float(acc) * xscale[m]) * wscale[n], acc = Σ_k int32(xq[m][k]) *
// int32(q[n][k]) exactly (int32; wraps past K = 133143). xq[M, K] (ldx >= K), xscale[M],
// q[N, K] (ldq >= K), wscale[N], y[M, N] (ldy >= N) overwritten.
inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                       const float* xscale, const std::int8_t* q, std::int64_t ldq, const float* wscale, float* y,
                       std::int64_t ldy) noexcept {
  if (M <= 0 || N <= 0) return;
  const auto f = gemm_i8_i8_entry(active_isa(), M);
  parallel_blocks(N, kGemmI8ChannelBlock, double(M) * double(N) * double(K), [&](std::int64_t n0, std::int64_t n1) noexcept {
    f(M, n1 - n0, K, xq, ldx, xscale, q + n0 * ldq, ldq, wscale + n0, y + n0, ldy);
  });
}

}  // namespace nnx::kernels
