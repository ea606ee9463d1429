// nnx/kernels/ref/gemm.hpp — portable single-precision matrix products: the fallback on CPUs
// without AVX2+FMA and the oracle the AVX2 kernels are tested against.
//
//   // C[M, N] = A[M, K] · B[K, N], all row-major with leading dimensions (row strides)
//   nnx::kernels::ref::gemm_f32(M, N, K, A, K, B, N, C, N);
//
// Reduction order (what makes results reproducible): every C[i][j] is one running float sum
// over k = 0, 1, ..., K-1, each product rounded and then added:
//   c = (accumulate ? C[i][j] : 0);  for k ascending: c = c + A[i][k] * B[k][j]
// The blocking below changes which elements are computed together, never that order, so a
// row of C is bitwise the same whatever M and whatever the other rows are. (A compiler
// allowed to contract a*b+c into an FMA, e.g. with -mfma, still does so in every block.)
// Single-threaded. Use nnx/kernels/gemm.hpp, which dispatches to the fastest path and splits
// columns of C between threads (each element's order stays as above); call these directly
// only to test or to pin the portable path.
#pragma once

#include <algorithm>
#include <cstdint>

namespace nnx::kernels {

// The second half of a product whose K is reduced in two halves (nnx/kernels/gemm.hpp): from
// row `at` of K on, chains start again from 0 and go to `out` (row stride ld) instead of C.
// out == nullptr: no split.
struct KSplit {
  std::int64_t at = 0;
  float* out = nullptr;
  std::int64_t ld = 0;
};

// The depth of each block when `rows` of K go in blocks of at most `max_depth`, all equal but
// the last (K 384 at most 256: 192 + 192, not 256 + 128). Block boundaries never change a
// chain, so the tiers use this freely: equal blocks keep every block's tiles and prefetches
// whole.
constexpr std::int64_t even_depth(std::int64_t rows, std::int64_t max_depth) noexcept {
  const std::int64_t blocks = std::max<std::int64_t>(1, (rows + max_depth - 1) / max_depth);
  return (rows + blocks - 1) / blocks;
}

// One panel of K rows [k0, k0 + kb): its chains go to c (row stride ldc), resuming from what c
// holds when load_c.
struct KPanel {
  std::int64_t k0, kb;
  float* c;
  std::int64_t ldc;
  bool load_c;
};

// K in panels of at most max_depth rows for C (+)= A · B, with an optional split: a split's two
// halves each go in panels of equal depth (a short panel would leave the next one prefetched
// only in part), the second half's chains starting from 0 in split.out. Without a split, full
// panels and a short last one. Usage:
//   for (KPanels p(K, depth, C, ldc, accumulate, split); !p.done(); p.next()) { KPanel x = p.panel(); ... }
class KPanels {
 public:
  KPanels(std::int64_t K, std::int64_t max_depth, float* C, std::int64_t ldc, bool accumulate,
          const KSplit& split) noexcept
      : K_(K), max_depth_(max_depth), C_(C), ldc_(ldc), accumulate_(accumulate), split_(split) {
    start(0);
  }
  bool done() const noexcept { return panel_.k0 >= K_; }
  void next() noexcept { start(panel_.k0 + panel_.kb); }
  const KPanel& panel() const noexcept { return panel_; }

 private:
  void start(std::int64_t k0) noexcept {
    const bool second = split_.out && k0 >= split_.at;
    const std::int64_t half_begin = second ? split_.at : 0;
    const std::int64_t half_end = split_.out && !second ? split_.at : K_;
    if (k0 == half_begin) depth_ = split_.out ? even_depth(half_end - half_begin, max_depth_) : max_depth_;
    panel_ = {k0, std::min(depth_, half_end - k0), second ? split_.out : C_, second ? split_.ld : ldc_,
              second ? k0 > split_.at : accumulate_ || k0 > 0};
  }

  std::int64_t K_, max_depth_;
  float* C_;
  std::int64_t ldc_;
  bool accumulate_;
  KSplit split_;
  std::int64_t depth_ = 0;
  KPanel panel_{};
};

}  // namespace nnx::kernels

namespace nnx::kernels::ref {

namespace detail {

// C rows [i, i + MR) over columns [j0, j0 + nb): MR rows share every load of a B row.
template <int MR>
inline void gemm_rows(std::int64_t nb, std::int64_t K, const float* a, std::int64_t lda, const float* b,
                      std::int64_t ldb, float* c, std::int64_t ldc, bool accumulate) noexcept {
  float* cr[MR];
  for (int r = 0; r < MR; ++r) {
    cr[r] = c + r * ldc;
    if (!accumulate) std::fill(cr[r], cr[r] + nb, 0.0f);
  }
  for (std::int64_t k = 0; k < K; ++k) {
    const float* bk = b + k * ldb;
    for (int r = 0; r < MR; ++r) {
      const float ar = a[r * lda + k];
      float* out = cr[r];
      for (std::int64_t j = 0; j < nb; ++j) out[j] += ar * bk[j];
    }
  }
}

}  // namespace detail

// C[M, N] (+)= A[M, K] · B[K, N]. Row-major; lda >= K, ldb >= N, ldc >= N. C must not
// overlap A or B. With accumulate, C's values start each sum (see the order above);
// otherwise C is overwritten (K == 0 gives zeros). Never throws.
inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda, const float* B,
                     std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate = false) noexcept {
  if (M <= 0 || N <= 0) return;
  // 256 columns of 4 C rows (4 KiB) stay in L1 while a B strip streams past them.
  constexpr std::int64_t kCols = 256;
  for (std::int64_t j0 = 0; j0 < N; j0 += kCols) {
    const std::int64_t nb = std::min(kCols, N - j0);
    std::int64_t i = 0;
    for (; i + 4 <= M; i += 4)
      detail::gemm_rows<4>(nb, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc, accumulate);
    for (; i < M; ++i) detail::gemm_rows<1>(nb, K, A + i * lda, lda, B + j0, ldb, C + i * ldc + j0, ldc, accumulate);
  }
}

// As gemm_f32, with K reduced in two halves when split.out is given: k < split.at into C, the
// rest from 0 into split.out (nnx/kernels/gemm.hpp adds them).
inline void gemm_f32_split(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                           const float* B, std::int64_t ldb, float* C, std::int64_t ldc, bool accumulate,
                           const KSplit& split) noexcept {
  if (!split.out) return gemm_f32(M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  gemm_f32(M, N, split.at, A, lda, B, ldb, C, ldc, accumulate);
  gemm_f32(M, N, K - split.at, A + split.at, lda, B + split.at * ldb, ldb, split.out, split.ld);
}

// C[M, N] (+)= op(A) · op(B): op(A) = A [M, K], or Aᵀ of A stored [K, M] when trans_a (lda >=
// M); op(B) = B [K, N], or Bᵀ of B stored [N, K] when trans_b (ldb >= K). gemm_f32's order, so
// bit-identical to gemm_f32 on transposed copies. Never throws.
inline void gemm_f32_t(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                       std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                       bool accumulate) noexcept {
  for (std::int64_t i = 0; i < M; ++i)
    for (std::int64_t j = 0; j < N; ++j) {
      float c = accumulate ? C[i * ldc + j] : 0.0f;
      for (std::int64_t k = 0; k < K; ++k) {
        const float p = (trans_a ? A[k * lda + i] : A[i * lda + k]) * (trans_b ? B[j * ldb + k] : B[k * ldb + j]);
        c = c + p;
      }
      C[i * ldc + j] = c;
    }
}

// C[M, N] = A[M, K] · B[N, K]ᵀ: B is stored with one row per output column (a tied
// embedding table [V, D] gives logits). Row-major; lda >= K, ldb >= K, ldc >= N; C must not
// overlap A or B. Order: C[i][j] = one running float sum over k ascending of
// A[i][k] * B[j][k], starting from 0. Never throws.
inline void gemm_f32_bt(std::int64_t M, std::int64_t N, std::int64_t K, const float* A, std::int64_t lda,
                        const float* B, std::int64_t ldb, float* C, std::int64_t ldc) noexcept {
  for (std::int64_t i = 0; i < M; ++i) {
    const float* a = A + i * lda;
    std::int64_t j = 0;
    // Four independent sums at once, for instruction-level parallelism; each is still
    // its own k-ascending chain.
    for (; j + 4 <= N; j += 4) {
      const float* b0 = B + j * ldb;
      const float* b1 = b0 + ldb;
      const float* b2 = b1 + ldb;
      const float* b3 = b2 + ldb;
      float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
      for (std::int64_t k = 0; k < K; ++k) {
        s0 += a[k] * b0[k];
        s1 += a[k] * b1[k];
        s2 += a[k] * b2[k];
        s3 += a[k] * b3[k];
      }
      C[i * ldc + j] = s0;
      C[i * ldc + j + 1] = s1;
      C[i * ldc + j + 2] = s2;
      C[i * ldc + j + 3] = s3;
    }
    for (; j < N; ++j) {
      const float* b = B + j * ldb;
      float s = 0.0f;
      for (std::int64_t k = 0; k < K; ++k) s += a[k] * b[k];
      C[i * ldc + j] = s;
    }
  }
}

}  // namespace nnx::kernels::ref
