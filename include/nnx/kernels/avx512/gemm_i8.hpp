// nnx/kernels/avx512/gemm_i8.hpp — W8A8 int8 matrix product with AVX-512 VNNI (vpdpbusd),
// and on AMX tiles (nnx/kernels/avx512/gemm_i8_amx.hpp) where the CPU has them, from 9 rows
// up (from 5 when rows are long: amx_takes).
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/gemm_i8.hpp does). On other platforms the header declares nothing. The
// weight-only product (gemm_f32_w8) has no avx512 version: its TierTable entry runs avx2's.
//
// Cross-tier class: BIT-IDENTICAL to ref and avx2. vpdpbusd multiplies unsigned bytes by
// signed bytes and adds each group of four products to an int32 lane. The weights are made
// unsigned by adding 128 (u = q ^ 0x80, in registers as they are loaded), so a lane gathers
// Σ (q + 128) x = Σ x q + 128 Σ x; the Σ x of each activation row is computed once per call (by
// the same instruction against bytes of 1) and 128 Σ x subtracted at the end. All of it is
// exact modulo 2^32, as the portable sum is, so the int32 result and the float epilogue —
// (float(acc) * xscale[m]) * wscale[n] — are the same bits on every tier. (Offsetting the
// activations instead needs Σ q per output channel: a second pass over every weight block,
// which left a batch-8 step's weight reads unoverlapped with its multiply-adds.)
//
// Why it is faster: one vpdpbusd does 64 multiply-adds where avx2 needs vpmaddubsw, vpmaddwd
// and vpaddd for 32 (and a sign fix-up), so compute-bound shapes (prefill, batched decode) run
// several times faster (measured at K 768, N 3072: M = 128 3.8x avx2, 3.1x the avx512 f32
// GEMM; M = 8 3.1x avx2 from memory). On a Xeon with AMX-INT8, tdpbssd takes 16 x 64 bytes
// of weights at once and prefill's products run ~4x faster again.
#pragma once

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/gemm_i8_amx.hpp"
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
  const __m256i h =
      _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xff, v, 0), _mm512_maskz_extracti64x4_epi64(0xff, v, 1));
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(s));
}


// Rows of x per tile and output channels per tile for it: MR * NR accumulators, NR weight
// vectors and an activation vector fit the 32 registers.
constexpr int channels_for(int mr) noexcept { return mr == 1 ? 8 : mr == 2 ? 6 : mr <= 4 ? 5 : 3; }
inline constexpr std::int64_t kRowTile = 8;

// acc[i][j] = Σ_k (q[j][k] + 128) xq[i][k] over K (mod 2^32), then y[i][j] from the exact sum
// (acc - 128 rowsum[i]).
template <int MR, int NR>
NNX_TARGET_AVX512 inline void tile(std::int64_t K, const std::int8_t* xq, std::int64_t ldx, const float* xs,
                                   const std::uint32_t* rowsum, const std::int8_t* q, std::int64_t ldq,
                                   const float* ws, float* y, std::int64_t ldy) noexcept {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  for (std::int64_t k = 0; k < K; k += 64) {
    const __mmask64 m = bytes64(K - k);
    avx2::prefetch_ahead<NR>(q, k);
    __m512i w[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      w[j] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, q + j * ldq + k), flip);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      // Masked-off activation bytes are 0, so the masked-off weight lanes (128) add nothing.
      const __m512i x = _mm512_maskz_loadu_epi8(m, xq + i * ldx + k);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], w[j], x);
    }
  }
  if constexpr (MR == 1) {
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const std::uint32_t s = hsum_epi32(acc[0][j]) - 128u * rowsum[0];
      y[j] = (static_cast<float>(static_cast<std::int32_t>(s)) * xs[0]) * ws[j];
    }
  } else {
    // Channel j's sums of every row at once (lane i: row i), then the same epilogue 8 wide: a
    // sixteen-lane sum per accumulator was 40 % of a K = 768 tile.
    const __mmask8 rows = static_cast<__mmask8>((1u << MR) - 1u);
    const __m256 vxs = _mm256_maskz_loadu_ps(rows, xs);
    const __m256i offset = _mm256_slli_epi32(_mm256_maskz_loadu_epi32(rows, rowsum), 7);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      __m256i h[8] = {};
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i)
        h[i] = _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xff, acc[i][j], 0),
                                _mm512_maskz_extracti64x4_epi64(0xff, acc[i][j], 1));
      const __m256i s = _mm256_sub_epi32(avx2::hsum8_epi32(h), offset);
      alignas(32) float out[8];
      _mm256_store_ps(out, _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(s), vxs), _mm256_set1_ps(ws[j])));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) y[i * ldy + j] = out[i];
    }
  }
}

// mr rows of x against weight rows [0, nb): full tiles, then single channels.
template <int MR>
NNX_TARGET_AVX512 inline void rows(std::int64_t nb, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                                   const float* xs, const std::uint32_t* rowsum, const std::int8_t* q,
                                   std::int64_t ldq, const float* ws, float* y, std::int64_t ldy) noexcept {
  constexpr int NR = channels_for(MR);
  std::int64_t n = 0;
  for (; n + NR <= nb; n += NR) tile<MR, NR>(K, xq, ldx, xs, rowsum, q + n * ldq, ldq, ws + n, y + n, ldy);
  for (; n < nb; ++n) tile<MR, 1>(K, xq, ldx, xs, rowsum, q + n * ldq, ldq, ws + n, y + n, ldy);
}

NNX_TARGET_AVX512 inline void rows_any(int mr, std::int64_t nb, std::int64_t K, const std::int8_t* xq,
                                       std::int64_t ldx, const float* xs, const std::uint32_t* rowsum,
                                       const std::int8_t* q, std::int64_t ldq, const float* ws, float* y,
                                       std::int64_t ldy) noexcept {
  switch (mr) {
    case 1: return rows<1>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 2: return rows<2>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 3: return rows<3>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 4: return rows<4>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 5: return rows<5>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 6: return rows<6>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    case 7: return rows<7>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
    default: return rows<8>(nb, K, xq, ldx, xs, rowsum, q, ldq, ws, y, ldy);
  }
}

// Σ_k xq[m][k] (mod 2^32) for activation rows [0, mr).
NNX_TARGET_AVX512 inline void row_sums(std::int64_t mr, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                                       std::uint32_t* rowsum) noexcept {
  const __m512i ones = _mm512_set1_epi8(1);
  for (std::int64_t i = 0; i < mr; ++i) {
    __m512i acc = _mm512_setzero_si512();
    for (std::int64_t k = 0; k < K; k += 64)
      acc = _mm512_dpbusd_epi32(acc, ones, _mm512_maskz_loadu_epi8(bytes64(K - k), xq + i * ldx + k));
    rowsum[i] = hsum_epi32(acc);
  }
}

// Weight rows per block: about 128 KiB of weights, which the row tiles after the first read
// from L2.
inline constexpr std::int64_t kWeightBlockBytes = 128 * 1024;
inline std::int64_t weight_block_rows(std::int64_t K) noexcept {
  return std::max<std::int64_t>(kWeightBlockBytes / std::max<std::int64_t>(K, 1), 8);
}

}  // namespace detail::i8

// W8A8 on the VNNI tiles alone: the contract and bits of gemm_i8_i8 below, at any shape.
NNX_TARGET_AVX512 inline void gemm_i8_i8_vnni(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                              std::int64_t ldx, const float* xscale, const std::int8_t* q,
                                              std::int64_t ldq, const float* wscale, float* y,
                                              std::int64_t ldy) noexcept {
  namespace d = detail::i8;
  if (M <= 0 || N <= 0) return;
  if (M <= d::kRowTile) {  // decode: one pass over the weights, straight from memory
    std::uint32_t rowsum[d::kRowTile];
    d::row_sums(M, K, xq, ldx, rowsum);
    return d::rows_any(static_cast<int>(M), N, K, xq, ldx, xscale, rowsum, q, ldq, wscale, y, ldy);
  }
  // Prefill: a block of weight rows stays in L2 while every row tile of x passes over it.
  const std::int64_t nb = d::weight_block_rows(K);
  for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
    const std::int64_t n1 = std::min(N, n0 + nb);
    for (std::int64_t m0 = 0; m0 < M; m0 += d::kRowTile) {
      const int mr = static_cast<int>(std::min(d::kRowTile, M - m0));
      std::uint32_t rowsum[d::kRowTile];
      d::row_sums(mr, K, xq + m0 * ldx, ldx, rowsum);
      d::rows_any(mr, n1 - n0, K, xq + m0 * ldx, ldx, xscale + m0, rowsum, q + n0 * ldq, ldq, wscale + n0,
                  y + m0 * ldy + n0, ldy);
    }
  }
}

// Rows from which the AMX tiles take a product where the CPU has them. Up to the VNNI row
// tile's 8 rows a product streams its weights from memory once, and whether tdpbssd gains
// depends on the depth K each 48-channel group of weight rows runs through. Short rows read
// slower on the tiles (a Xeon, M 8, K 768 x N 3072 from DRAM: 175-195 us VNNI, 197-214 AMX:
// twelve steps a group over rows 768 bytes apart, which the prefetchers follow poorly); long
// rows faster from 5 rows up, where the VNNI tiles' multiply-adds per weight byte outgrow what
// their port retires at the memory's rate (M 8, K 3072 x N 768: 160-163 -> 140-149 us; K 5632
// x N 2048: 930-966 -> 644-724; the same at 3-6 rows). Beyond 8 rows the VNNI tiles run at the
// multiply-add port's rate and AMX is ~4x faster (M 128: 1855-1905 -> 460-468 us).
// benchmarks/RESULTS.md.
inline constexpr std::int64_t kAmxMinRows = detail::i8::kRowTile + 1;
inline constexpr std::int64_t kAmxMinRowsLongRows = 5;
inline constexpr std::int64_t kAmxLongRowBytes = 3072;

// Whether the AMX tiles take an M-row product of depth K (where its shape fits them).
constexpr bool amx_takes(std::int64_t M, std::int64_t K) noexcept {
  return M >= kAmxMinRows || (M >= kAmxMinRowsLongRows && K >= kAmxLongRowBytes);
}

// W8A8: y[m][n] = (float(Σ_k xq[m][k] * q[n][k]) * xscale[m]) * wscale[n], the sum exact in
// int32; same contract and bits as nnx::kernels::ref::gemm_i8_i8 (values in [-127, 127]).
// On a CPU with AMX-INT8, products amx_takes() gives to the tiles, of a shape they take, run
// there (all but the last N % 16 channels). Requires the avx512 tier. Never throws.
NNX_TARGET_AVX512 inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                         std::int64_t ldx, const float* xscale, const std::int8_t* q, std::int64_t ldq,
                                         const float* wscale, float* y, std::int64_t ldy) noexcept {
  if (amx_takes(M, K) && detail::amx::shape_fits(N, K) && cpu_has_amx_int8()) {
    detail::amx::gemm_i8_i8(M, N, K, xq, ldx, xscale, q, ldq, wscale, y, ldy);
    const std::int64_t done = N / detail::amx::kChannels * detail::amx::kChannels;
    return gemm_i8_i8_vnni(M, N - done, K, xq, ldx, xscale, q + done * ldq, ldq, wscale + done, y + done, ldy);
  }
  gemm_i8_i8_vnni(M, N, K, xq, ldx, xscale, q, ldq, wscale, y, ldy);
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
