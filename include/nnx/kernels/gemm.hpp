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
#include "nnx/kernels/cpu.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/gemm.hpp"

namespace nnx::kernels {

namespace detail {

// Splits columns [0, N) of a product with work M N K into blocks of `width` columns (the
// kernels' register-tile width, so only the last block has a partial tile) and calls
// run(j0, j1) for each thread's range; one thread: run(0, N) inline.
template <class Run>
void split_columns(std::int64_t M, std::int64_t N, std::int64_t K, std::int64_t width, Run&& run) noexcept {
  const int threads = threads_for_work(static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K));
  const std::int64_t blocks = (N + width - 1) / width;
  if (threads <= 1 || blocks <= 1) return run(0, N);
  parallel_for(blocks, threads, [&](std::int64_t b0, std::int64_t b1) noexcept {
    run(b0 * width, std::min(N, b1 * width));
  });
}

}  // namespace detail

// C[M, N] (+)= A[M, K] · B[K, N]. Row-major with row strides lda >= K, ldb >= N, ldc >= N;
// C must not overlap A or B. accumulate = false overwrites C; true starts each element's
// sum from C's value (one rounding chain, so C + A·B is not rounded twice).
inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) noexcept {
  if (M <= 0 || N <= 0) return;
  const bool avx2 = cpu_has_avx2_fma();
  // 32 columns: the widest AVX2 tile (one or two rows); also a multiple of a cache line of C.
  detail::split_columns(M, N, K, 32, [&](std::int64_t j0, std::int64_t j1) noexcept {
#if NNX_KERNELS_X86_DISPATCH
    if (avx2) return avx2::gemm_f32(M, j1 - j0, K, A, lda, B + j0, ldb, C + j0, ldc, accumulate);
#endif
    (void)avx2;
    ref::gemm_f32(M, j1 - j0, K, A, lda, B + j0, ldb, C + j0, ldc, accumulate);
  });
}

// C[M, N] = A[M, K] · B[N, K]ᵀ (B holds one row per column of C). Row-major with lda >= K,
// ldb >= K, ldc >= N; C must not overlap A or B. C is overwritten.
inline void gemm_f32_bt(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                        const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept {
  if (M <= 0 || N <= 0) return;
  const bool avx2 = cpu_has_avx2_fma();
  // 24 rows of B: a whole number of the AVX2 tiles (8 rows for up to 3 rows of A, 3 beyond).
  detail::split_columns(M, N, K, 24, [&](std::int64_t j0, std::int64_t j1) noexcept {
#if NNX_KERNELS_X86_DISPATCH
    if (avx2) return avx2::gemm_f32_bt(M, j1 - j0, K, A, lda, B + j0 * ldb, ldb, C + j0, ldc);
#endif
    (void)avx2;
    ref::gemm_f32_bt(M, j1 - j0, K, A, lda, B + j0 * ldb, ldb, C + j0, ldc);
  });
}

}  // namespace nnx::kernels
