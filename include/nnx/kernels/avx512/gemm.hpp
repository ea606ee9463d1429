// nnx/kernels/avx512/gemm.hpp — AVX-512 single-precision matrix product C (+)= A · B with B
// stored [K, N] (a Linear's [in, out] kernel).
//
// Compiled with per-function target attributes (no -mavx512f needed to include it); call only
// where isa_supported(Isa::avx512) (nnx/kernels/gemm.hpp does). On other platforms the header
// declares nothing. gemm_f32_bt has no avx512 version: its TierTable entry falls back to avx2.
//
// Cross-tier class: BIT-IDENTICAL to avx2::gemm_f32 (and, like it, to itself at any M and
// thread count). Each C[i][j] is the same single chain of fused multiply-adds over k ascending,
// started from 0 (or from C when accumulating) and resumed from C after each K block, which is
// exact: a 16-lane register computes sixteen such chains side by side exactly as an 8-lane one
// computes eight. Padding lanes and rows are computed but never stored.
//
// Why it is faster: twice the lanes per FMA and 32 registers, so a 12 x 32 register tile (24
// accumulators) reuses each loaded B vector 12 times and each broadcast A value twice, against
// avx2's 6 x 16; and AVX-512 masks make the last partial vector as cheap as a full one.
#pragma once

#include "nnx/kernels/avx2/gemm.hpp"
#include "nnx/kernels/avx512/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace nnx::kernels::avx512 {

namespace detail {

// One MR x (16 * NV) tile of C: for k in [0, kc), C[i][j] = fma(A[i][k], B[k][j], C[i][j]).
// A is read from rows with stride lda, or (kPackedA) from a panel [kc][MR_PACK]; B from rows
// with stride ldb. Only the `last` lanes of the last vector are loaded from C or stored.
// `prefetch`: lines of the next panel to prefetch at each step (see avx2::detail::Prefetch).
template <int MR, int NV, bool kPackedA, int kPackStride = 12>
NNX_TARGET_AVX512 inline void tile(std::int64_t kc, const float* a, std::int64_t lda, const float* b,
                                   std::int64_t ldb, float* c, std::int64_t ldc, bool load_c, __mmask16 last,
                                   const avx2::detail::Prefetch& prefetch = {}) noexcept {
  __m512 acc[MR][NV];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v == NV - 1 ? last : __mmask16(0xffff);
      acc[i][v] = load_c ? _mm512_maskz_loadu_ps(m, c + i * ldc + 16 * v) : _mm512_setzero_ps();
    }
  }
  for (std::int64_t k = 0; k < kc; ++k) {
    const float* bk = b + k * ldb;
    avx2::detail::prefetch_step(prefetch, k, NV);
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, bk + 16 * v) : _mm512_loadu_ps(bk + 16 * v);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 av = _mm512_set1_ps(kPackedA ? a[k * kPackStride + i] : a[i * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(av, bv[v], acc[i][v]);
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1)
        _mm512_mask_storeu_ps(c + i * ldc + 16 * v, last, acc[i][v]);
      else
        _mm512_storeu_ps(c + i * ldc + 16 * v, acc[i][v]);
    }
  }
}

// mr (1..MAX) rows of a tile of 16 * NV columns: picks the instantiation.
template <int NV, bool kPackedA, int kMaxRows>
NNX_TARGET_AVX512 inline void tile_rows(int mr, std::int64_t kc, const float* a, std::int64_t lda, const float* b,
                                        std::int64_t ldb, float* c, std::int64_t ldc, bool load_c, __mmask16 last,
                                        const avx2::detail::Prefetch& prefetch = {}) noexcept {
#define NNX_AVX512_TILE_CASE(R) \
  case R:                       \
    if constexpr (R <= kMaxRows)  \
      return tile<R, NV, kPackedA>(kc, a, lda, b, ldb, c, ldc, load_c, last, prefetch); \
    else                          \
      break;
  switch (mr) {
    NNX_AVX512_TILE_CASE(1)
    NNX_AVX512_TILE_CASE(2)
    NNX_AVX512_TILE_CASE(3)
    NNX_AVX512_TILE_CASE(4)
    NNX_AVX512_TILE_CASE(5)
    NNX_AVX512_TILE_CASE(6)
    NNX_AVX512_TILE_CASE(7)
    NNX_AVX512_TILE_CASE(8)
    NNX_AVX512_TILE_CASE(9)
    NNX_AVX512_TILE_CASE(10)
    NNX_AVX512_TILE_CASE(11)
    NNX_AVX512_TILE_CASE(12)
    default:
      break;
  }
#undef NNX_AVX512_TILE_CASE
}

// Rows of a register tile (packed path) and columns of a B panel: 12 x 32 (24 accumulators,
// two B vectors and a broadcast of the 32 registers).
inline constexpr int kMr = 12;
inline constexpr std::int64_t kPanelCols = 32;

// Block sizes of the packed path: a kKc x 32 panel of B (32 KiB) stays in L1 while a packed
// block of kMc rows of A (kMc x kKc floats, 96 KiB) is read from L2; a kKc x kNc block of
// packed B (768 KiB) is shared by every row block of A.
inline constexpr std::int64_t kKc = 256;
inline constexpr std::int64_t kMc = 96;
inline constexpr std::int64_t kNc = 768;

// A per-thread buffer for packed panels, grown once and kept (no allocation per call after
// the first). nullptr when memory is exhausted: callers then use the unpacked path, which
// gives the same bits.
struct PackTag;
inline float* pack_buffer(std::size_t floats) noexcept { return avx2::thread_floats<PackTag>(floats); }

// B[0:kc, 0:nc] into panels of 32 columns, each [kc][32] contiguous, the last zero-padded.
// With kTransB, b holds Bᵀ (row j is column j of B, stride ldb), read row by row.
template <bool kTransB = false>
NNX_TARGET_AVX512 inline void pack_b(std::int64_t kc, std::int64_t nc, const float* b, std::int64_t ldb,
                                     float* out) noexcept {
  for (std::int64_t j = 0; j < nc; j += kPanelCols) {
    const std::int64_t w = std::min(kPanelCols, nc - j);
    float* dst = out + (j / kPanelCols) * kc * kPanelCols;
    if constexpr (kTransB) {
      avx2::detail::pack_transposed_panels<kPanelCols>(kc, w, b + j * ldb, ldb, dst);
    } else {
      const __mmask16 m0 = lanes16(w), m1 = lanes16(w - 16);
      for (std::int64_t k = 0; k < kc; ++k) {
        const float* src = b + k * ldb + j;
        _mm512_storeu_ps(dst + k * kPanelCols, _mm512_maskz_loadu_ps(m0, src));
        _mm512_storeu_ps(dst + k * kPanelCols + 16, _mm512_maskz_loadu_ps(m1, src + 16));
      }
    }
  }
}

// A[0:mc, 0:kc] into panels of kMr rows, each [kc][kMr] contiguous, the last zero-padded. With
// kTransA, a holds Aᵀ (row k is column k of A), so each k's kMr values are one masked load.
template <bool kTransA = false>
NNX_TARGET_AVX512 inline void pack_a(std::int64_t mc, std::int64_t kc, const float* a, std::int64_t lda,
                                     float* out) noexcept {
  for (std::int64_t i0 = 0; i0 < mc; i0 += kMr) {
    const std::int64_t mr = std::min<std::int64_t>(kMr, mc - i0);
    float* dst = out + (i0 / kMr) * kc * kMr;
    if constexpr (kTransA) {
      const __mmask16 load = lanes16(mr), store = lanes16(kMr);
      for (std::int64_t k = 0; k < kc; ++k)
        _mm512_mask_storeu_ps(dst + k * kMr, store, _mm512_maskz_loadu_ps(load, a + k * lda + i0));
    } else {
      // Rows 0-7 and 8-11 of the panel, 8 k at a time, transposed in registers.
      const float* src = a + i0 * lda;
      const std::int64_t k8 = kc - kc % 8;
      __m256 lo[8], hi[8];
      for (std::int64_t k = 0; k < k8; k += 8) {
        avx2::detail::load_transposed_8x8(src + k, lda, std::min<std::int64_t>(mr, 8), lo);
        avx2::detail::load_transposed_8x8(src + 8 * lda + k, lda, std::max<std::int64_t>(mr - 8, 0), hi);
        for (int kk = 0; kk < 8; ++kk) {
          _mm256_storeu_ps(dst + (k + kk) * kMr, lo[kk]);
          _mm_storeu_ps(dst + (k + kk) * kMr + 8, _mm256_castps256_ps128(hi[kk]));
        }
      }
      for (std::int64_t k = k8; k < kc; ++k)
        for (std::int64_t i = 0; i < kMr; ++i) dst[k * kMr + i] = i < mr ? src[i * lda + k] : 0.0f;
    }
  }
}

inline constexpr std::size_t packed_floats() noexcept { return std::size_t(kKc * (kNc + kPanelCols + kMc + kMr)); }

// kTransA / kTransB: A / B given transposed (see pack_a, pack_b); the products are the same.
template <bool kTransA = false, bool kTransB = false>
NNX_TARGET_AVX512 inline void gemm_packed(std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                                          std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                                          std::int64_t ldc, bool accumulate, float* buf) noexcept {
  float* abuf = buf + kKc * (kNc + kPanelCols);
  // K in blocks of equal depth (even_depth); each chain resumes from C at a block boundary.
  const std::int64_t kc_even = even_depth(K, kKc);
  for (std::int64_t jc = 0; jc < N; jc += kNc) {
    const std::int64_t nc = std::min(kNc, N - jc);
    for (std::int64_t pc = 0, kc = 0; pc < K; pc += kc) {
      kc = std::min(kc_even, K - pc);
      pack_b<kTransB>(kc, nc, kTransB ? B + jc * ldb + pc : B + pc * ldb + jc, ldb, buf);
      const bool load_c = accumulate || pc > 0;  // later K blocks resume each chain from C
      for (std::int64_t ic = 0; ic < M; ic += kMc) {
        const std::int64_t mc = std::min(kMc, M - ic);
        pack_a<kTransA>(mc, kc, kTransA ? A + pc * lda + ic : A + ic * lda + pc, lda, abuf);
        for (std::int64_t jr = 0; jr < nc; jr += kPanelCols) {
          const std::int64_t w = std::min(kPanelCols, nc - jr);
          const float* panel = buf + (jr / kPanelCols) * kc * kPanelCols;
          for (std::int64_t ir = 0; ir < mc; ir += kMr) {
            const int mr = static_cast<int>(std::min<std::int64_t>(kMr, mc - ir));
            float* c = C + (ic + ir) * ldc + jc + jr;
            if (w > 16)
              tile_rows<2, true, kMr>(mr, kc, abuf + ir * kc, 0, panel, kPanelCols, c, ldc, load_c,
                                      lanes16(w - 16));
            else
              tile_rows<1, true, kMr>(mr, kc, abuf + ir * kc, 0, panel, kPanelCols, c, ldc, load_c, lanes16(w));
          }
        }
      }
    }
  }
}

// As avx2::detail::gemv_row_stream (one row of A over whole rows of B, read as one stream),
// 16 lanes at a time; the same chains, so the same bits.
NNX_TARGET_AVX512 inline void gemv_row_stream(std::int64_t N, std::int64_t K, const float* a, const float* B,
                                              std::int64_t ldb, float* c, bool accumulate,
                                              const KSplit& split = {}) noexcept {
  if (!accumulate) std::fill(c, c + N, 0.0f);
  const std::int64_t n16 = N - N % 16;
  const __mmask16 tail = lanes16(N - n16);
  for (std::int64_t k = 0; k < K; ++k) {
    if (split.out && k == split.at) std::fill(c = split.out, split.out + N, 0.0f);
    const __m512 ak = _mm512_set1_ps(a[k]);
    const float* bk = B + k * ldb;
#pragma GCC unroll 4
    for (std::int64_t j = 0; j < n16; j += 16)
      _mm512_storeu_ps(c + j, _mm512_fmadd_ps(ak, _mm512_loadu_ps(bk + j), _mm512_loadu_ps(c + j)));
    if (n16 < N) {
      const __m512 b_tail = _mm512_maskz_loadu_ps(tail, bk + n16);
      _mm512_mask_storeu_ps(c + n16, tail, _mm512_fmadd_ps(ak, b_tail, _mm512_maskz_loadu_ps(tail, c + n16)));
    }
  }
}

// The unpacked path (few rows: decode and small batches): B read in place in panels of kb
// rows; every row tile of up to 8 rows passes over a panel while it is in L2, resuming its
// chains from C. One or two rows use 64-column tiles (four chains per row per k), more rows
// 48-column tiles (up to 24 accumulators). A split is handled as avx2's.
NNX_TARGET_AVX512 inline void gemm_unpacked(std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                                            std::int64_t lda, const float* B, std::int64_t ldb, float* C_first,
                                            std::int64_t ldc_first, bool accumulate,
                                            const KSplit& split = {}) noexcept {
  const std::int64_t kb_max = M <= 2 ? 8 : std::clamp<std::int64_t>(256 * 1024 / 4 / N, 16, 128);
  for (KPanels p(K, kb_max, C_first, ldc_first, accumulate, split); !p.done(); p.next()) {
    const auto [k0, kb, C, ldc, load_c] = p.panel();
    const float* b = B + k0 * ldb;
    // The next panel, prefetched by the first tile row of M > 2 rows as avx2's does (see
    // there). M = 8 from DRAM on a Zen 4, one thread: K 768 x N 3072 9.3 -> 17.5 GB/s, K 3072 x
    // N 768 6.6 -> 19.4 (two threads: 12.3 -> 27.7, 12.6 -> 24.4); a burst of the same
    // prefetches at the start of each tile reached 12 and 8.
    const std::uintptr_t next_panel =
        K - k0 - kb >= kb ? reinterpret_cast<std::uintptr_t>(b + kb * ldb) : std::uintptr_t{0};
    for (std::int64_t i0 = 0; i0 < M;) {
      const int mr = static_cast<int>(std::min<std::int64_t>(8, M - i0));
      const float* a = A + i0 * lda + k0;
      float* c = C + i0 * ldc;
      if (mr <= 2) {
        for (std::int64_t j = 0; j < N; j += 64) {
          const std::int64_t w = std::min<std::int64_t>(64, N - j);
          const __mmask16 last = lanes16(w - 16 * ((w - 1) / 16));
          const int nv = static_cast<int>((w + 15) / 16);
          avx2::detail::prefetch_next_panel(b + kb * ldb + j, ldb, kb, nv);
          if (nv == 4)
            tile_rows<4, false, 2>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last);
          else if (nv == 3)
            tile_rows<3, false, 2>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last);
          else if (nv == 2)
            tile_rows<2, false, 2>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last);
          else
            tile_rows<1, false, 2>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last);
        }
      } else {
        for (std::int64_t j = 0; j < N; j += 48) {
          const std::int64_t w = std::min<std::int64_t>(48, N - j);
          const __mmask16 last = lanes16(w - 16 * ((w - 1) / 16));
          const int nv = static_cast<int>((w + 15) / 16);
          const avx2::detail::Prefetch prefetch{
              i0 == 0 && next_panel != 0 ? next_panel + static_cast<std::uintptr_t>(j) * sizeof(float) : 0,
              ldb * std::int64_t{sizeof(float)}};
          if (nv == 3)
            tile_rows<3, false, 8>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last, prefetch);
          else if (nv == 2)
            tile_rows<2, false, 8>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last, prefetch);
          else
            tile_rows<1, false, 8>(mr, kb, a, lda, b + j, ldb, c + j, ldc, load_c, last, prefetch);
        }
      }
      i0 += mr;
    }
  }
}

// Rows from which packing pays (each packed B panel is then reused by enough row tiles).
inline constexpr std::int64_t kPackMinRows = 16;

}  // namespace detail

// C[M, N] (+)= A[M, K] · B[K, N]; same contract as nnx::kernels::ref::gemm_f32, bits as
// avx2::gemm_f32 (see the header comment). Requires the avx512 tier. Never throws.
// As avx2::gemm_f32_split (K in two halves when split.out is given).
NNX_TARGET_AVX512 inline void gemm_f32_split(std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                                             std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                                             std::int64_t ldc, bool accumulate,
                                             const KSplit& split) noexcept {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (std::int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
    return;
  }
  if (M >= detail::kPackMinRows)
    if (float* buf = detail::pack_buffer(detail::packed_floats())) {
      if (!split.out) return detail::gemm_packed(M, N, K, A, lda, B, ldb, C, ldc, accumulate, buf);
      detail::gemm_packed(M, N, split.at, A, lda, B, ldb, C, ldc, accumulate, buf);
      return detail::gemm_packed(M, N, K - split.at, A + split.at, lda, B + split.at * ldb, ldb, split.out, split.ld,
                                 false, buf);
    }
  if (M == 1 && ldb == N && N <= avx2::detail::row_stream_max_columns())
    return detail::gemv_row_stream(N, K, A, B, ldb, C, accumulate, split);
  detail::gemm_unpacked(M, N, K, A, lda, B, ldb, C, ldc, accumulate, split);
}

NNX_TARGET_AVX512 inline void gemm_f32(std::int64_t M, std::int64_t N, std::int64_t K, const float* A,
                                       std::int64_t lda, const float* B, std::int64_t ldb, float* C, std::int64_t ldc,
                                       bool accumulate = false) noexcept {
  gemm_f32_split(M, N, K, A, lda, B, ldb, C, ldc, accumulate, {});
}

// As avx2::gemm_f32_t (either operand transposed), bits as gemm_f32 on transposed copies.
NNX_TARGET_AVX512 inline void gemm_f32_t(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
                                         const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float* C,
                                         std::int64_t ldc, bool accumulate) noexcept {
  if (M <= 0 || N <= 0) return;
  float* buf = K > 0 ? detail::pack_buffer(detail::packed_floats()) : nullptr;
  if (!buf) return avx2::detail::gemm_fma_chains(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, accumulate);
  if (trans_a && trans_b)
    detail::gemm_packed<true, true>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, buf);
  else if (trans_a)
    detail::gemm_packed<true, false>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, buf);
  else if (trans_b)
    detail::gemm_packed<false, true>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, buf);
  else
    detail::gemm_packed<false, false>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, buf);
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
