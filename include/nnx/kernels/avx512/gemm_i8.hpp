// nnx/kernels/avx512/gemm_i8.hpp — W8A8 int8 matrix product with AVX-512 VNNI (vpdpbusd).
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/gemm_i8.hpp does). On other platforms the header declares nothing. The
// weight-only product (gemm_f32_w8) has no avx512 version: its TierTable entry runs avx2's.
//
// Cross-tier class: BIT-IDENTICAL to ref and avx2. vpdpbusd multiplies unsigned bytes by
// signed bytes and adds each group of four products to an int32 lane. The activations are made
// unsigned by adding 128 (u = x ^ 0x80), so a lane gathers Σ (x + 128) q = Σ x q + 128 Σ q;
// the per-channel Σ q of each block of weights is computed once (by the same instruction
// against bytes of 1) and 128 Σ q subtracted at the end. All of it is exact modulo 2^32, as the
// portable sum is, so the int32 result and the float epilogue — (float(acc) * xscale[m]) *
// wscale[n] — are the same bits on every tier.
//
// Why it is faster: one vpdpbusd does 64 multiply-adds where avx2 needs vpmaddubsw, vpmaddwd
// and vpaddd for 32 (and a sign fix-up), so compute-bound shapes (prefill, batched decode) run
// several times faster (measured at K 768, N 3072: M = 128 3.8x avx2, 3.1x the avx512 f32
// GEMM; M = 8 2.6x). Batch-1 decode is bound by reading the weights: one or two rows run
// avx2's kernel, whose single pass reads them faster.
#pragma once

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace nnx::kernels::avx512 {

namespace detail::i8 {

// The sixteen int32 lanes summed (mod 2^32). Not _mm512_reduce_add_epi32: GCC 12 warns inside
// it and in _mm512_castsi512_si256 (an "uninitialized" undefined vector in their extraction).
NNX_TARGET_AVX512 inline std::uint32_t hsum_epi32(__m512i v) noexcept {
  const __m256i h = _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0), _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(s));
}

// Weight rows prefetched ahead of the row a tile reads (see avx2/gemm_i8.hpp, where the
// distance was measured): a tile's rows are short streams the hardware prefetcher does not
// lock on to.
inline constexpr std::int64_t kPrefetchRows = 8;

// Rows of x per tile and output channels per tile for it: MR * NR accumulators, NR weight
// vectors and an activation vector fit the 32 registers.
constexpr int channels_for(int mr) noexcept { return mr == 1 ? 8 : mr == 2 ? 6 : mr <= 4 ? 5 : 3; }
inline constexpr std::int64_t kRowTile = 8;

// acc[i][j] = Σ_k (xq[i][k] + 128) q[j][k] over K (mod 2^32), then y[i][j] from the exact sum
// (acc - 128 colsum[j]).
template <int MR, int NR>
NNX_TARGET_AVX512 inline void tile(std::int64_t K, const std::int8_t* xq, std::int64_t ldx, const float* xs,
                                   const std::int8_t* q, std::int64_t ldq, const std::uint32_t* colsum,
                                   const float* ws, float* y, std::int64_t ldy) noexcept {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  for (std::int64_t k = 0; k < K; k += 64) {
    const __mmask64 m = bytes64(K - k);
    __m512i w[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const std::int8_t* row = q + j * ldq + k;
      _mm_prefetch(reinterpret_cast<const char*>(row + kPrefetchRows * ldq), _MM_HINT_T0);
      // Masked-off weight bytes are 0, so whatever the activation lanes hold adds nothing.
      w[j] = _mm512_maskz_loadu_epi8(m, row);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xq + i * ldx + k), flip);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], u, w[j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const std::uint32_t s = hsum_epi32(acc[i][j]) - 128u * colsum[j];
      y[i * ldy + j] = (static_cast<float>(static_cast<std::int32_t>(s)) * xs[i]) * ws[j];
    }
}

// mr rows of x against weight rows [0, nb): full tiles, then single channels.
template <int MR>
NNX_TARGET_AVX512 inline void rows(std::int64_t nb, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                                   const float* xs, const std::int8_t* q, std::int64_t ldq, const std::uint32_t* colsum,
                                   const float* ws, float* y, std::int64_t ldy) noexcept {
  constexpr int NR = channels_for(MR);
  std::int64_t n = 0;
  for (; n + NR <= nb; n += NR) tile<MR, NR>(K, xq, ldx, xs, q + n * ldq, ldq, colsum + n, ws + n, y + n, ldy);
  for (; n < nb; ++n) tile<MR, 1>(K, xq, ldx, xs, q + n * ldq, ldq, colsum + n, ws + n, y + n, ldy);
}

NNX_TARGET_AVX512 inline void rows_any(int mr, std::int64_t nb, std::int64_t K, const std::int8_t* xq,
                                       std::int64_t ldx, const float* xs, const std::int8_t* q, std::int64_t ldq,
                                       const std::uint32_t* colsum, const float* ws, float* y,
                                       std::int64_t ldy) noexcept {
  switch (mr) {
    case 1: return rows<1>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 2: return rows<2>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 3: return rows<3>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 4: return rows<4>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 5: return rows<5>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 6: return rows<6>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    case 7: return rows<7>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
    default: return rows<8>(nb, K, xq, ldx, xs, q, ldq, colsum, ws, y, ldy);
  }
}

// Σ_k q[n][k] (mod 2^32) for weight rows [0, nb).
NNX_TARGET_AVX512 inline void column_sums(std::int64_t nb, std::int64_t K, const std::int8_t* q, std::int64_t ldq,
                                          std::uint32_t* colsum) noexcept {
  const __m512i ones = _mm512_set1_epi8(1);
  for (std::int64_t n = 0; n < nb; ++n) {
    __m512i acc = _mm512_setzero_si512();
    for (std::int64_t k = 0; k < K; k += 64)
      acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(bytes64(K - k), q + n * ldq + k));
    colsum[n] = hsum_epi32(acc);
  }
}

// Weight rows per block: about 128 KiB of weights, which the row tiles after the first read
// from L2; at most kMaxBlockRows (the column sums live on the stack).
inline constexpr std::int64_t kWeightBlockBytes = 128 * 1024;
inline constexpr std::int64_t kMaxBlockRows = 1024;
inline std::int64_t weight_block_rows(std::int64_t K) noexcept {
  return std::clamp<std::int64_t>(kWeightBlockBytes / std::max<std::int64_t>(K, 1), 8, kMaxBlockRows);
}

}  // namespace detail::i8

// W8A8: y[m][n] = (float(Σ_k xq[m][k] * q[n][k]) * xscale[m]) * wscale[n], the sum exact in
// int32; same contract and bits as nnx::kernels::ref::gemm_i8_i8 (values in [-127, 127]).
// Requires the avx512 tier. Never throws.
NNX_TARGET_AVX512 inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                         std::int64_t ldx, const float* xscale, const std::int8_t* q, std::int64_t ldq,
                                         const float* wscale, float* y, std::int64_t ldy) noexcept {
  namespace d = detail::i8;
  if (M <= 0 || N <= 0) return;
  // One or two rows (decode) are bound by reading the weights, not by multiply-adds: avx2's
  // kernel reads them faster (no second pass for the column sums), with the same bits.
  if (M <= 2) return avx2::gemm_i8_i8(M, N, K, xq, ldx, xscale, q, ldq, wscale, y, ldy);
  std::uint32_t colsum[d::kMaxBlockRows];
  const std::int64_t nb = d::weight_block_rows(K);
  for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
    const std::int64_t n1 = std::min(N, n0 + nb);
    d::column_sums(n1 - n0, K, q + n0 * ldq, ldq, colsum);
    for (std::int64_t m0 = 0; m0 < M; m0 += d::kRowTile) {
      const int mr = static_cast<int>(std::min(d::kRowTile, M - m0));
      d::rows_any(mr, n1 - n0, K, xq + m0 * ldx, ldx, xscale + m0, q + n0 * ldq, ldq, colsum, wscale + n0,
                  y + m0 * ldy + n0, ldy);
    }
  }
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
