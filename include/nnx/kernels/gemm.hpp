// nnx/kernels/gemm.hpp — single-precision matrix products on raw row-major buffers: the
// entry points the ops layer calls. Each call runs the AVX2+FMA kernel when the CPU has it,
// else the portable one (see nnx/kernels/cpu.hpp).
//
//   // y[T, 3C] = x[T, C] · w[C, 3C]          (fused QKV projection)
//   nnx::kernels::gemm_f32(T, 3 * C, C, x, C, w, 3 * C, y, 3 * C);
//   // logits[T, V] = h[T, C] · wte[V, C]ᵀ     (tied embedding)
//   nnx::kernels::gemm_f32_bt(T, V, C, h, C, wte, C, logits, V);
//
// Determinism: each element of C is reduced in an order fixed by K alone (see
// nnx/kernels/avx2/gemm.hpp and nnx/kernels/ref/gemm.hpp for the two orders), so a row of C
// is bitwise identical whether it is computed alone (M = 1) or within any batch, and on any
// thread count. The two paths differ from each other by rounding only.
// Single-threaded; safe to call from several threads at once (scratch buffers are
// per-thread and kept, so repeated calls of one shape do not allocate). Never throw:
// callers check shapes (nnx/ops/matmul.hpp does).
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/gemm.hpp"
#include "nnx/kernels/cpu.hpp"
#include "nnx/kernels/ref/gemm.hpp"

namespace nnx::kernels {

// C[M, N] (+)= A[M, K] · B[K, N]. Row-major with row strides lda >= K, ldb >= N, ldc >= N;
// C must not overlap A or B. accumulate = false overwrites C; true starts each element's
// sum from C's value (one rounding chain, so C + A·B is not rounded twice).
inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) noexcept {
#if NNX_KERNELS_X86_DISPATCH
  if (cpu_has_avx2_fma()) return avx2::gemm_f32(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
#endif
  ref::gemm_f32(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
}

// C[M, N] = A[M, K] · B[N, K]ᵀ (B holds one row per column of C). Row-major with lda >= K,
// ldb >= K, ldc >= N; C must not overlap A or B. C is overwritten.
inline void gemm_f32_bt(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                        const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept {
#if NNX_KERNELS_X86_DISPATCH
  if (cpu_has_avx2_fma()) return avx2::gemm_f32_bt(M, N, K, A, lda, B, ldb, C, ldc);
#endif
  ref::gemm_f32_bt(M, N, K, A, lda, B, ldb, C, ldc);
}

}  // namespace nnx::kernels
