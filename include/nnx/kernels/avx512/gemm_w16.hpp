// nnx/kernels/avx512/gemm_w16.hpp — f32 activations times bf16 / f16 weights with AVX-512:
// avx2's eight-lane chains, two output channels per 512-bit register.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/gemm_w16.hpp does). On other platforms the header declares nothing.
//
// Cross-tier class: BIT-IDENTICAL to avx2. A register holds channel j in its low eight lanes
// and channel j + 1 in its high eight, against the same eight elements of x in both halves
// (broadcast), so each lane runs exactly avx2's fused multiply-add chain over k = l, l+8, ...
// and each half is summed with avx2's tree (avx2::hsum). An odd last channel runs avx2's tile.
//
// Why: one instruction does the work of two, with the widening (vpmovzxwd + shift for bf16,
// vcvtph2ps for f16) as wide; compute-bound shapes (prefill, batched decode) gain, decoding at
// batch 1 reads weights at the memory bandwidth on either tier. AVX512_BF16's vdpbf16ps is not
// used: it rounds the activations to bf16, which the portable and avx2 paths do not do.
#pragma once

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace nnx::kernels::avx512 {

namespace detail::w16 {

using avx2::detail::i8::Narrow;

// (The maskz forms with all lanes set are the plain instructions without GCC 12's
// -Wmaybe-uninitialized; see simd.hpp.)
// Eight weights of each of two rows (v: row a in the low 128 bits, row b in the high) as
// exact floats, row a in lanes 0..7.
template <Narrow W>
NNX_TARGET_AVX512 inline __m512 widen16(__m256i v) noexcept {
  if constexpr (W == Narrow::bf16)
    return _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll16, _mm512_maskz_cvtepu16_epi32(kAll16, v), 16));
  else
    return _mm512_maskz_cvtph_ps(kAll16, v);
}

template <Narrow W>
NNX_TARGET_AVX512 inline __m512 load_pair(const std::uint16_t* a, const std::uint16_t* b) noexcept {
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(a));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b));
  return widen16<W>(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// The last r (1..7) weights of two rows, zeros after them; reads only those.
template <Narrow W>
NNX_TARGET_AVX512 inline __m512 load_pair_partial(const std::uint16_t* a, const std::uint16_t* b, int r) noexcept {
  __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
  std::memcpy(&lo, a, static_cast<std::size_t>(r) * sizeof(std::uint16_t));
  std::memcpy(&hi, b, static_cast<std::size_t>(r) * sizeof(std::uint16_t));
  return widen16<W>(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// Eight elements of x in both halves.
NNX_TARGET_AVX512 inline __m512 both_halves(__m256 x) noexcept { return _mm512_maskz_broadcast_f32x8(kAll16, x); }

// One step of 8 along k: acc[i][p] = fma(x[i][k..k+8) in both halves, rows 2p | 2p+1, acc).
template <Narrow W, int MR, int NP>
NNX_TARGET_AVX512 inline void pair_step(__m512 (&acc)[MR][NP], std::int64_t k, const float* x, std::int64_t ldx,
                                        const std::uint16_t* q, std::int64_t ldq) noexcept {
  __m512 w[NP];
#pragma GCC unroll 8
  for (int p = 0; p < NP; ++p) w[p] = load_pair<W>(q + (2 * p) * ldq + k, q + (2 * p + 1) * ldq + k);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    __m512 xv = both_halves(_mm256_loadu_ps(x + i * ldx + k));
    asm("" : "+v"(xv));  // loaded once per row, not folded into every FMA (see avx2's in_register)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_fmadd_ps(xv, w[p], acc[i][p]);
  }
}

// y[i][2p], y[i][2p+1] for MR rows of x and NP pairs of weight rows.
template <Narrow W, int MR, int NP>
NNX_TARGET_AVX512 inline void pair_tile(std::int64_t K, const float* x, std::int64_t ldx, const std::uint16_t* q,
                                        std::int64_t ldq, float* y, std::int64_t ldy) noexcept {
  constexpr std::int64_t kPerIter = avx2::detail::i8::kRowBytesPerIter / 2;
  __m512 acc[MR][NP];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_setzero_ps();
  std::int64_t k = 0;
  for (; k + kPerIter <= K; k += kPerIter) {
    avx2::prefetch_ahead<2 * NP>(q, 2 * k);
#pragma GCC unroll 8
    for (std::int64_t u = 0; u < kPerIter; u += 8) pair_step<W, MR, NP>(acc, k + u, x, ldx, q, ldq);
  }
  for (; k + 8 <= K; k += 8) pair_step<W, MR, NP>(acc, k, x, ldx, q, ldq);
  if (k < K) {
    const int r = static_cast<int>(K - k);
    const __m256i mask = avx2::lane_mask(r);
    __m512 w[NP];
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) w[p] = load_pair_partial<W>(q + (2 * p) * ldq + k, q + (2 * p + 1) * ldq + k, r);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = both_halves(_mm256_maskload_ps(x + i * ldx + k, mask));
#pragma GCC unroll 8
      for (int p = 0; p < NP; ++p) acc[i][p] = _mm512_fmadd_ps(xv, w[p], acc[i][p]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int p = 0; p < NP; ++p) {
      y[i * ldy + 2 * p] = avx2::hsum(_mm512_maskz_extractf32x8_ps(0xFF, acc[i][p], 0));
      y[i * ldy + 2 * p + 1] = avx2::hsum(_mm512_maskz_extractf32x8_ps(0xFF, acc[i][p], 1));
    }
}

// Channel pairs per tile of MR (1..4) rows: 3 pairs (6 to 12 accumulators) for a batch; one
// pair for a single row, whose tile then reads two weight rows (one 512-bit chain, ~8 bytes
// per cycle) where four pairs read eight short streams. Measured on a Zen 4 EPYC, one thread,
// bf16 weights from DRAM, K 768 / 3072: 21-23 -> 25 GB/s in 4 KiB pages, 22-25 -> 23-28 in
// 2 MiB pages (read probe 25 and 29).
constexpr int pairs(int mr) noexcept { return mr == 1 ? 1 : 3; }

template <Narrow W, int MR>
NNX_TARGET_AVX512 inline void pair_rows(std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                                        const std::uint16_t* q, std::int64_t ldq, float* y, std::int64_t ldy) noexcept {
  constexpr int NP = pairs(MR);
  std::int64_t n = 0;
  for (; n + 2 * NP <= N; n += 2 * NP) pair_tile<W, MR, NP>(K, x, ldx, q + n * ldq, ldq, y + n, ldy);
  for (; n + 2 <= N; n += 2) pair_tile<W, MR, 1>(K, x, ldx, q + n * ldq, ldq, y + n, ldy);
  if (n < N) avx2::detail::i8::narrow_tile<W, MR, 1>(K, x, ldx, q + n * ldq, ldq, nullptr, y + n, ldy);
}

template <Narrow W>
NNX_TARGET_AVX512 inline void gemm_f32_w16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                           std::int64_t ldx, const std::uint16_t* q, std::int64_t ldq, float* y,
                                           std::int64_t ldy) noexcept {
  namespace a2 = avx2::detail::i8;
  if (M <= 0 || N <= 0) return;
  const std::int64_t nb = a2::weight_block_rows(K * 2);
  for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
    const std::int64_t n1 = std::min(N, n0 + nb);
    for (std::int64_t m0 = 0; m0 < M; m0 += a2::kRowTile) {
      const float* xr = x + m0 * ldx;
      const std::uint16_t* qr = q + n0 * ldq;
      float* yr = y + m0 * ldy + n0;
      switch (std::min(a2::kRowTile, M - m0)) {
        case 1: pair_rows<W, 1>(n1 - n0, K, xr, ldx, qr, ldq, yr, ldy); break;
        case 2: pair_rows<W, 2>(n1 - n0, K, xr, ldx, qr, ldq, yr, ldy); break;
        case 3: pair_rows<W, 3>(n1 - n0, K, xr, ldx, qr, ldq, yr, ldy); break;
        default: pair_rows<W, 4>(n1 - n0, K, xr, ldx, qr, ldq, yr, ldy); break;
      }
    }
  }
}

}  // namespace detail::w16

// y[M, N] = x[M, K] · w[N, K]ᵀ, w bf16 bits; the contract of nnx::kernels::ref::gemm_f32_bf16,
// the bits of avx2::gemm_f32_bf16. Requires AVX-512 (F, BW, VL, DQ). Never throws.
NNX_TARGET_AVX512 inline void gemm_f32_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                            std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                            std::int64_t ldy) noexcept {
  detail::w16::gemm_f32_w16<detail::w16::Narrow::bf16>(M, N, K, x, ldx, w, ldw, y, ldy);
}

// The same with f16 weights.
NNX_TARGET_AVX512 inline void gemm_f32_f16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                           std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                           std::int64_t ldy) noexcept {
  detail::w16::gemm_f32_w16<detail::w16::Narrow::f16>(M, N, K, x, ldx, w, ldw, y, ldy);
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
