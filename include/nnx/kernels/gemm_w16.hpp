// nnx/kernels/gemm_w16.hpp — matrix products with 16-bit float weights served as stored: f32
// activations times bf16 or f16 weights, each weight widened exactly in registers, so a
// model in bf16 reads half the bytes of its f32 copy and computes the same products of the
// same values. Each call runs the best tier the CPU has (nnx/kernels/isa.hpp).
//
//   // w: a bf16 nn.Linear weight [F, C] ([out, in]) as its bits, e.g. mmap'ed from safetensors
//   nnx::kernels::gemm_f32_bf16(T, F, C, x, C, w, C, y, F);   // y[T, F] = x[T, C] · wᵀ
//
// Layout: w[N, K] one row per output channel, K contiguous; x[M, K], y[M, N]; row strides
// given, y overlapping nothing. Order and determinism: each tier's order is fixed by K alone,
// so a row of y is bitwise the same alone or in any batch and on any thread count (threads
// split the output channels, never K). ref and avx2 sum in eight lanes
// (nnx/kernels/ref/gemm_w16.hpp); avx512 gives avx2's bits for f16 and sums bf16 in 32 chains
// of its own, within the same error bound (nnx/kernels/avx512/gemm_w16.hpp says why).
// AVX512_BF16's vdpbf16ps is not used, as it would round the activations to bf16.
// Safe to call from several threads at once; never throws; allocates nothing per call (the
// avx512 bf16 path keeps one buffer per thread for the permuted activations, grown once).
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/gemm_w16.hpp"
#include "nnx/kernels/gemm_i8.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/gemm_w16.hpp"

namespace nnx::kernels {

using GemmF32W16Fn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                              const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept;

inline constexpr TierTable<GemmF32W16Fn> kGemmF32Bf16{&ref::gemm_f32_bf16, NNX_X86_ENTRY(avx2::gemm_f32_bf16),
                                                     NNX_X86_ENTRY(avx512::gemm_f32_bf16)};
inline constexpr TierTable<GemmF32W16Fn> kGemmF32F16{&ref::gemm_f32_f16, NNX_X86_ENTRY(avx2::gemm_f32_f16),
                                                    NNX_X86_ENTRY(avx512::gemm_f32_f16)};

namespace detail {

inline void gemm_f32_w16(const TierTable<GemmF32W16Fn>& table, std::int64_t M, std::int64_t N, std::int64_t K,
                         const float* x, std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                         std::int64_t ldy) noexcept {
  if (M <= 0 || N <= 0) return;
  const auto f = select(table, active_isa());
  parallel_blocks(N, kGemmI8ChannelBlock, double(M) * double(N) * double(K), [&](std::int64_t n0, std::int64_t n1) noexcept {
    f(M, n1 - n0, K, x, ldx, w + n0 * ldw, ldw, y + n0, ldy);
  });
}

}  // namespace detail

// y[m][n] = Σ_k x[m][k] * bf16_value(w[n][k]). x[M, K] (ldx >= K), w[N, K] bf16 bits
// (ldw >= K), y[M, N] (ldy >= N) overwritten.
inline void gemm_f32_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                          const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  detail::gemm_f32_w16(kGemmF32Bf16, M, N, K, x, ldx, w, ldw, y, ldy);
}

// The same with f16 weights.
inline void gemm_f32_f16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                         const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  detail::gemm_f32_w16(kGemmF32F16, M, N, K, x, ldx, w, ldw, y, ldy);
}

}  // namespace nnx::kernels
