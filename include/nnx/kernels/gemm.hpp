// nnx/kernels/gemm.hpp — single-precision matrix products on raw row-major buffers: the
// entry points the ops layer calls. Each call runs the AVX2+FMA kernel when the CPU has it,
// else the portable one (see nnx/kernels/isa.hpp).
//
//   // y[T, 3C] = x[T, C] · w[C, 3C]          (fused QKV projection)
//   nnx::kernels::gemm_f32(T, 3 * C, C, x, C, w, 3 * C, y, 3 * C);
//   // logits[T, V] = h[T, C] · wte[V, C]ᵀ     (tied embedding)
//   nnx::kernels::gemm_f32_bt(T, V, C, h, C, wte, C, logits, V);
//
// Determinism: each element of C is reduced in an order fixed by K alone, so a row of C is
// bitwise identical whether it is computed alone (M = 1) or within any batch, and on any
// thread count. From kSplitDepth on, K is cut in two halves at K0 = K / 2 and
// C = chain(0, K0) + chain(K0, K): two chains of fused multiply-adds (each as the tier
// kernels order it, see nnx/kernels/<tier>/gemm.hpp; the first started from C when
// accumulating, the second from 0) and one rounded addition. Tiers differ from each other by
// rounding only (the header of each tier says which are bit-identical).
//
// Threads (nnx::set_num_threads, nnx/kernels/parallel.hpp): a product large enough to pay
// for it is split into blocks of columns of C and, when K is halved, into its two halves;
// each piece is an ordinary single-threaded product, so every element keeps its chains and
// its bits. The halves are why: a decode step's row of A times a weight matrix (M = 1) on
// two threads then reads the matrix as two contiguous halves, one per thread, at the read
// bandwidth of two cores, where strided half-rows of every row were served no faster than
// one core's stream (Zen 4, M = 1, two threads, K 768 x N 768: 22 -> 30 GB/s; a 162M Llama f32
// decode step on two threads: 23.0 -> 19.7 ms on the Zen 4, 24.5 -> 21.9 ms on an AVX-512 Xeon;
// benchmarks/RESULTS.md).
// Safe to call from several threads at once (scratch buffers are per-thread and kept, so
// repeated calls of one shape do not allocate). Never throw: callers check shapes
// (nnx/ops/matmul.hpp does).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <new>

#include "nnx/kernels/avx2/gemm.hpp"
#include "nnx/kernels/avx512/gemm.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/gemm.hpp"

namespace nnx::kernels {

using GemmF32Fn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                           const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate,
                           const KSplit& split) noexcept;
using GemmF32BtFn = void (*)(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                             const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept;

inline constexpr TierTable<GemmF32Fn> kGemmF32{&ref::gemm_f32_split, NNX_X86_ENTRY(avx2::gemm_f32_split),
                                                NNX_X86_ENTRY(avx512::gemm_f32_split)};
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

// Depth from which K is reduced in two halves (see the header comment).
inline constexpr std::int64_t kSplitDepth = 256;

// Floats of the buffers holding the second half's partial products: one or two rows (decode)
// keep C's whole rows there (4 MiB at most); more rows keep one run of C per thread (512 KiB,
// while it is in L2).
inline constexpr std::int64_t kSplitBufferFloats = std::int64_t{1} << 20;
inline constexpr std::int64_t kSplitRunFloats = std::int64_t{1} << 17;

// Floats of C one tier kernel call covers at most (256 KiB, rows x columns): a call passes
// over C once per panel of K, and with a few rows of C on a 32000-wide head C must stay in L2
// between passes (8 rows x 32000 is 1 MiB; M = 8, K 768 x N 32000, one thread: 14.5 -> 16.2
// GB/s). At least kGemmWideBlock columns.
inline constexpr std::int64_t kCallFloats = std::int64_t{1} << 16;

// Columns of the packed paths' blocks of B (avx512 kNc; avx2's is a divisor): pieces of C this
// wide or a multiple of it pack A no more often than one call over all of C would.
inline constexpr std::int64_t kGemmWideBlock = 4 * kGemmColumnBlock;

namespace detail {

// Whole column blocks of C, or whole wide blocks where there is room for one, in at most
// `floats` floats of `rows` rows (at least one column block).
inline std::int64_t columns_within(std::int64_t floats, std::int64_t rows) noexcept {
  const std::int64_t fit = floats / std::max<std::int64_t>(rows, 1);
  const std::int64_t unit = fit >= kGemmWideBlock ? kGemmWideBlock : kGemmColumnBlock;
  return std::max(kGemmColumnBlock, fit / unit * unit);
}

// Columns of the runs in_column_runs cuts: at most kCallFloats of C's `rows` rows.
inline std::int64_t run_columns(std::int64_t rows) noexcept {
  return std::max(kGemmWideBlock, columns_within(kCallFloats, rows));
}

// Calls call(j0, j1) over [c0, c1) in runs of `width` columns.
template <class Call>
void in_column_runs(std::int64_t width, std::int64_t c0, std::int64_t c1, const Call& call) noexcept {
  for (std::int64_t j = c0; j < c1; j += width) call(j, std::min(c1, j + width));
}

// Where the second half of K starts, or 0 when K is reduced in one chain.
constexpr std::int64_t split_point(std::int64_t K) noexcept { return K >= kSplitDepth ? K / 2 : 0; }

// This thread's buffer for at least min(wanted, kSplitBufferFloats) floats, grown once and kept;
// `got` says how many it holds. When memory is exhausted, a static block of one column block
// (pieces of C then get smaller, never different bits).
inline float* split_buffer(std::int64_t wanted, std::int64_t& got) noexcept {
  struct Buffer {
    float* data = nullptr;
    std::int64_t size = 0;
    ~Buffer() { ::operator delete(data, std::align_val_t{64}); }
  };
  static thread_local Buffer buffer;
  static thread_local float fallback[kGemmColumnBlock];
  wanted = std::min(wanted, kSplitBufferFloats);
  if (buffer.size < wanted) {
    ::operator delete(buffer.data, std::align_val_t{64});
    buffer.data = static_cast<float*>(
        ::operator new(static_cast<std::size_t>(wanted) * sizeof(float), std::align_val_t{64}, std::nothrow));
    buffer.size = buffer.data ? wanted : 0;
  }
  if (!buffer.data) {
    got = kGemmColumnBlock;
    return fallback;
  }
  got = buffer.size;
  return buffer.data;
}

// C[M, N] (+)= the product in two halves of K (K0 = split_point(K) > 0), piece by piece of C:
// product(i0, rows, j0, cols, half0, half1, partial, ldp) computes rows [i0, i0 + rows) and
// columns [j0, j0 + cols) of the first half into C (half0) and of the second into partial
// (half1, stride ldp), which is then added to C. One or two rows (decode) give each thread
// one half of K over all columns, so the weights are read as two contiguous halves; more rows
// give each thread columns over both halves (one call, so one pass over B: the tier kernels
// go on from one half into the other without a break), a run of C at a time, whose partial
// products are added while they are still in cache.
template <class Product>
void gemm_halves(std::int64_t M, std::int64_t N, std::int64_t K, float* C, std::int64_t ldc,
                 const Product& product) noexcept {
  const std::int64_t blocks = (N + kGemmColumnBlock - 1) / kGemmColumnBlock;
  const auto block_end = [&](std::int64_t b) { return std::min(N, b * kGemmColumnBlock); };
  const auto add_partial = [&](std::int64_t i0, std::int64_t rows, std::int64_t j0, std::int64_t j1,
                               const float* partial, std::int64_t ldp) noexcept {
    for (std::int64_t i = 0; i < rows; ++i) {
      float* c = C + (i0 + i) * ldc;
      const float* p = partial + i * ldp - j0;
      for (std::int64_t j = j0; j < j1; ++j) c[j] += p[j];
    }
  };
  const int threads = threads_for_work(double(M) * double(N) * double(K));
  std::int64_t capacity = 0;
  float* partial = M <= 2 ? split_buffer(M * N, capacity) : nullptr;
  if (capacity >= M * N) {
    // Shared partial products of whole rows. Items: the first half's column blocks, then the
    // second's.
    const auto call = [&](std::int64_t c0, std::int64_t c1, bool half0, bool half1) noexcept {
      in_column_runs(run_columns(M), c0, c1, [&](std::int64_t j0, std::int64_t j1) noexcept {
        product(0, M, j0, j1 - j0, half0, half1, partial + j0, N);
      });
    };
    parallel_for(2 * blocks, threads, [&](std::int64_t item0, std::int64_t item1) noexcept {
      if (item0 == 0 && item1 == 2 * blocks) return call(0, N, true, true);
      for (std::int64_t half = 0; half < 2; ++half) {
        const std::int64_t b0 = std::max(item0 - half * blocks, std::int64_t{0});
        const std::int64_t b1 = std::min(item1 - half * blocks, blocks);
        if (b0 < b1) call(block_end(b0), block_end(b1), half == 0, half == 1);
      }
    });
    return parallel_blocks(N, kGemmColumnBlock, double(M) * double(N), [&](std::int64_t j0, std::int64_t j1) noexcept {
      add_partial(0, M, j0, j1, partial + j0, N);
    });
  }
  // More rows (or one or two rows wider than the shared buffer): runs per thread.
  parallel_for(blocks, threads, [&](std::int64_t b0, std::int64_t b1) noexcept {
    std::int64_t run_capacity = 0;
    float* run_partial = split_buffer(kSplitRunFloats, run_capacity);
    // Without the buffer (memory exhausted): one column block of one row at a time.
    const std::int64_t width = run_capacity < kSplitRunFloats ? kGemmColumnBlock : run_columns(M);
    const std::int64_t floats = std::min(run_capacity, kSplitRunFloats);
    in_column_runs(width, block_end(b0), block_end(b1), [&](std::int64_t j0, std::int64_t j1) noexcept {
      const std::int64_t piece_rows = floats / (j1 - j0);
      for (std::int64_t i0 = 0; i0 < M; i0 += piece_rows) {
        const std::int64_t rows = std::min(piece_rows, M - i0);
        product(i0, rows, j0, j1 - j0, true, true, run_partial, j1 - j0);
        add_partial(i0, rows, j0, j1, run_partial, j1 - j0);
      }
    });
  });
}

}  // namespace detail

// C[M, N] (+)= A[M, K] · B[K, N]. Row-major with row strides lda >= K, ldb >= N, ldc >= N;
// C must not overlap A or B. accumulate = false overwrites C; true starts each element's
// sum from C's value (one rounding chain, so C + A·B is not rounded twice).
inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) noexcept {
  if (M <= 0 || N <= 0) return;
  const GemmF32Fn f = select(kGemmF32, active_isa());
  if (const std::int64_t K0 = detail::split_point(K); K0 > 0)
    return detail::gemm_halves(M, N, K, C, ldc,
                               [&](std::int64_t i0, std::int64_t rows, std::int64_t j0, std::int64_t cols, bool half0,
                                   bool half1, float* partial, std::int64_t ldp) noexcept {
                                 const float* a = A + i0 * lda;
                                 float* c = C + i0 * ldc + j0;
                                 if (half0 && half1)
                                   f(rows, cols, K, a, lda, B + j0, ldb, c, ldc, accumulate, {K0, partial, ldp});
                                 else if (half0)
                                   f(rows, cols, K0, a, lda, B + j0, ldb, c, ldc, accumulate, {});
                                 else
                                   f(rows, cols, K - K0, a + K0, lda, B + K0 * ldb + j0, ldb, partial, ldp, false, {});
                               });
  parallel_blocks(N, kGemmColumnBlock, double(M) * double(N) * double(K), [&](std::int64_t c0, std::int64_t c1) noexcept {
    detail::in_column_runs(detail::run_columns(M), c0, c1, [&](std::int64_t j0, std::int64_t j1) noexcept {
      f(M, j1 - j0, K, A, lda, B + j0, ldb, C + j0, ldc, accumulate, {});
    });
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
  if (const std::int64_t K0 = detail::split_point(K); K0 > 0)
    return detail::gemm_halves(
        M, N, K, C, ldc,
        [&](std::int64_t i0, std::int64_t rows, std::int64_t j0, std::int64_t cols, bool half0, bool half1,
            float* partial, std::int64_t ldp) noexcept {
          const float* a = trans_a ? A + i0 : A + i0 * lda;
          const float* b = trans_b ? B + j0 * ldb : B + j0;
          if (half0) f(trans_a, trans_b, rows, cols, K0, a, lda, b, ldb, C + i0 * ldc + j0, ldc, accumulate);
          if (half1)
            f(trans_a, trans_b, rows, cols, K - K0, trans_a ? a + K0 * lda : a + K0, lda,
              trans_b ? b + K0 : b + K0 * ldb, ldb, partial, ldp, false);
        });
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
