// nnx/kernels/gemm.hpp — single-precision matrix products on raw row-major buffers: the
// entry points the ops layer calls. Each call runs the AVX2+FMA kernel when the CPU has it,
// else the portable one (see nnx/kernels/isa.hpp).
//
//   // y[T, 3C] = x[T, C] · w[C, 3C]          (fused QKV projection)
//   nnx::kernels::gemm_f32(T, 3 * C, C, x, C, w, 3 * C, y, 3 * C);
//   // logits[T, V] = h[T, C] · wte[V, C]ᵀ     (tied embedding)
//   nnx::kernels::gemm_f32_bt(T, V, C, h, C, wte, C, logits, V);
//
// Determinism: each element of C is reduced in an order fixed by K alone (see
// nnx/kernels/<tier>/gemm.hpp for the orders), so a row of C is bitwise identical whether it
// is computed alone (M = 1) or within any batch, and on any thread count. Tiers differ from
// each other by rounding only (the header of each tier says which are bit-identical).
//
// Threads (nnx::set_num_threads, nnx/kernels/parallel.hpp): a product large enough to pay
// for it is split into blocks of columns of C, one per thread; each block is an ordinary
// single-threaded product over all of K, so every element keeps its chain and its bits.
// Safe to call from several threads at once (scratch buffers are per-thread and kept, so
// repeated calls of one shape do not allocate). Never throw: callers check shapes
// (nnx/ops/matmul.hpp does).
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/avx2/gemm.hpp"
#include "nnx/kernels/avx512/gemm.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/gemm.hpp"

namespace nnx::kernels {

using GemmF32Fn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                           const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate) noexcept;
using GemmF32BtFn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                             const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept;

inline constexpr TierTable<GemmF32Fn> kGemmF32{&ref::gemm_f32, NNX_X86_ENTRY(avx2::gemm_f32),
                                                NNX_X86_ENTRY(avx512::gemm_f32)};
using GemmF32TFn = void (*)(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                            const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                            std::int64_t ldc, bool accumulate) noexcept;
inline constexpr TierTable<GemmF32TFn> kGemmF32T{&ref::gemm_f32_t, NNX_X86_ENTRY(avx2::gemm_f32_t),
                                                  NNX_X86_ENTRY(avx512::gemm_f32_t)};
inline constexpr TierTable<GemmF32BtFn> kGemmF32Bt{&ref::gemm_f32_bt, NNX_X86_ENTRY(avx2::gemm_f32_bt)};

// Columns per block when threads split a product: a whole number of every tier's register
// tiles (avx2: 16 or 32 columns, 24 rows of B for the transposed form; avx512: 32, 48 or 64),
// so only the last block has a partial tile; also a multiple of a cache line of C.
inline constexpr std::int64_t kGemmColumnBlock = 192;

// C[M, N] (+)= A[M, K] · B[K, N]. Row-major with row strides lda >= K, ldb >= N, ldc >= N;
// C must not overlap A or B. accumulate = false overwrites C; true starts each element's
// sum from C's value (one rounding chain, so C + A·B is not rounded twice).
inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) noexcept {
  if (M <= 0 || N <= 0) return;
  const GemmF32Fn f = select(kGemmF32, active_isa());
  parallel_blocks(N, kGemmColumnBlock, double(M) * double(N) * double(K), [&](std::int64_t j0, std::int64_t j1) noexcept {
    f(M, j1 - j0, K, A, lda, B + j0, ldb, C + j0, ldc, accumulate);
  });
}

// C[M, N] (+)= op(A) · op(B), either operand given transposed: op(A) = A [M, K], or Aᵀ of A
// stored [K, M] (trans_a, lda >= M); op(B) = B [K, N], or Bᵀ of B stored [N, K] (trans_b,
// ldb >= K). Each element is gemm_f32's chain, so the result is bit-identical to gemm_f32 on
// transposed copies; the packing does the transposing (training's xᵀ · dy and dy · Wᵀ).
inline void gemm_f32_t(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                       std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                       bool accumulate = false) noexcept {
  if (M <= 0 || N <= 0) return;
  const GemmF32TFn f = select(kGemmF32T, active_isa());
  parallel_blocks(N, kGemmColumnBlock, double(M) * double(N) * double(K), [&](std::int64_t j0, std::int64_t j1) noexcept {
    f(trans_a, trans_b, M, j1 - j0, K, A, lda, trans_b ? B + j0 * ldb : B + j0, ldb, C + j0, ldc, accumulate);
  });
}

// C[M, N] = A[M, K] · B[N, K]ᵀ (B holds one row per column of C). Row-major with lda >= K,
// ldb >= K, ldc >= N; C must not overlap A or B. C is overwritten.
inline void gemm_f32_bt(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                        const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept {
  if (M <= 0 || N <= 0) return;
  const GemmF32BtFn f = select(kGemmF32Bt, active_isa());
  parallel_blocks(N, kGemmColumnBlock, double(M) * double(N) * double(K), [&](std::int64_t j0, std::int64_t j1) noexcept {
    f(M, j1 - j0, K, A, lda, B + j0 * ldb, ldb, C + j0, ldc);
  });
}

}  // namespace nnx::kernels
