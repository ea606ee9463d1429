// nnx/kernels/avx512/gemm_w16.hpp — f32 activations times bf16 / f16 weights with AVX-512.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/gemm_w16.hpp does). On other platforms the header declares nothing.
//
// - f16: avx2's eight-lane chains, two output channels per 512-bit register. BIT-IDENTICAL to
//   avx2: a register holds channel j in its low eight lanes and channel j + 1 in its high
//   eight, against the same eight elements of x in both halves (broadcast), so each lane runs
//   exactly avx2's fused multiply-add chain over k = l, l+8, ...; each half is summed with
//   avx2's tree (avx2::hsum). An odd last channel runs avx2's tile. Why: one instruction
//   does the work of two, with the widening (vcvtph2ps) as wide.
// - bf16: an order of its own, 32 chains per output (below, dot_bf16_chains); NOT
//   bit-identical to avx2 and ref (eight lanes): within the same summation bound of the exact
//   sum, tested. Why: a bf16 weight is the top half of an f32, so the 32-bit lanes of 32 loaded
//   bf16 give the even-indexed weights as floats by a shift and the odd-indexed ones by a
//   mask, with no shuffle; x is permuted to match once per call (each block of 32 as its even
//   then its odd elements), and every output gets two independent chains. Against the
//   channel pairs (one chain per pair, a zero-extension and an insert per eight weights),
//   measured on a Xeon (one thread; "from DRAM" rotates over 192 MiB): one row 14.6-17.1 ->
//   18.3-19.4 GB/s from DRAM, two threads 29.4-32.3 -> 36.0-36.6; 8 rows at K 768 +10-23 %,
//   128 rows at K 768 +20-28 %, at K 3072 within +-4 %. Keeping avx2's bits instead would
//   cost that, and the same order on avx2 (four 256-bit chains per output: three outputs fit
//   the 16 registers against twelve) made its batches 17-25 % slower: past the 10 % at which
//   the tiers give up identity. The order is fixed by K alone, so the avx512 tier is still
//   bitwise the same at any M, slot and thread count.
//
// AVX512_BF16's vdpbf16ps is not used: it rounds the activations to bf16, which the portable
// and avx2 paths do not do.
#pragma once

#include "nnx/kernels/avx2/gemm_i8.hpp"
#include "nnx/kernels/avx512/simd.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/gemm_w16.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace nnx::kernels::avx512 {

namespace detail::w16 {

using avx2::detail::i8::Narrow;

// (The maskz forms with all lanes set are the plain instructions without GCC 12's
// -Wmaybe-uninitialized; see simd.hpp.)
// Eight f16 weights of each of two rows (v: row a in the low 128 bits, row b in the high) as
// exact floats, row a in lanes 0..7.
template <Narrow W>
NNX_TARGET_AVX512 inline __m512 widen16(__m256i v) noexcept {
  static_assert(W == Narrow::f16);
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
// bf16 weights (which this kernel served then) from DRAM, K 768 / 3072: 21-23 -> 25 GB/s in
// 4 KiB pages, 22-25 -> 23-28 in 2 MiB pages (read probe 25 and 29).
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

// bf16's order: K in blocks of 32, the last padded with zero weights and zero activations;
// chain p (0..31) is s[p] = fma(x[k], w[k], s[p]) over the k of position p in their blocks,
// ascending, from +0; then t[i] = s[2i] + s[2i+1] (i < 16), u[i] = t[i] + t[i+8] (i < 8) and
// y = ((u0+u4)+(u2+u6)) + ((u1+u5)+(u3+u7)). The scalar form here is the tests' oracle and
// the fallback when the permuted rows cannot be allocated.
inline constexpr std::int64_t kBf16Block = 32;

inline float dot_bf16_chains(std::int64_t K, const float* x, const std::uint16_t* w) noexcept {
  float s[kBf16Block] = {};
  const std::int64_t blocks = (K + kBf16Block - 1) / kBf16Block;
  for (std::int64_t k = 0; k < blocks * kBf16Block; ++k)
    s[k % kBf16Block] =
        std::fma(k < K ? x[k] : 0.0f, k < K ? ref::detail::w16::bf16_value(w[k]) : 0.0f, s[k % kBf16Block]);
  float t[16], u[8];
  for (int i = 0; i < 16; ++i) t[i] = s[2 * i] + s[2 * i + 1];
  for (int i = 0; i < 8; ++i) u[i] = t[i] + t[i + 8];
  return ((u[0] + u[4]) + (u[2] + u[6])) + ((u[1] + u[5]) + (u[3] + u[7]));
}

// K rounded up to whole blocks: the length of a permuted row.
constexpr std::int64_t bf16_padded(std::int64_t K) noexcept {
  return (K + kBf16Block - 1) / kBf16Block * kBf16Block;
}

// x[0, K) into xp[0, bf16_padded(K)): each block of 32 as its even-indexed elements, then
// its odd-indexed ones; zeros past K.
inline void bf16_permute_x(std::int64_t K, const float* x, float* xp) noexcept {
  for (std::int64_t b = 0; b < bf16_padded(K); b += kBf16Block)
    for (std::int64_t i = 0; i < 16; ++i) {
      const std::int64_t k = b + 2 * i;
      xp[b + i] = k < K ? x[k] : 0.0f;
      xp[b + 16 + i] = k + 1 < K ? x[k + 1] : 0.0f;
    }
}

struct Bf16Tag;  // the permuted rows' thread_floats buffer

// Floats of permuted x a call holds at once (2 MiB): a longer batch is taken in pieces of
// rows, each of which reads the weights again.
inline constexpr std::int64_t kBf16PermutedFloats = std::int64_t{1} << 19;

// bf16 tiles: up to kBf16Rows rows of x and kBf16Channels weight rows, each widened weight
// vector used by every row and each x vector by every channel.
inline constexpr std::int64_t kBf16Rows = 4;
inline constexpr std::int64_t kBf16Channels = 3;

// One block of 32 (n of them real) of NC weight rows into the MR x NC chains: register 0 of
// a (row, channel) holds the even-indexed elements, register 1 the odd-indexed ones.
template <int MR, int NC>
NNX_TARGET_AVX512 inline void bf16_block(__m512 (&acc)[MR][NC][2], const float* xp, std::int64_t ldxp,
                                         const std::uint16_t* w, std::int64_t ldw, std::int64_t n) noexcept {
  const __mmask32 real = n >= 32 ? ~__mmask32{0} : (__mmask32{1} << n) - 1;
  __m512 even[NC], odd[NC];
#pragma GCC unroll 4
  for (int j = 0; j < NC; ++j) {
    const __m512i v = _mm512_maskz_loadu_epi16(real, w + j * ldw);
    even[j] = _mm512_castsi512_ps(_mm512_maskz_slli_epi32(kAll16, v, 16));
    odd[j] = _mm512_castsi512_ps(_mm512_maskz_and_epi32(kAll16, v, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  }
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    const __m512 xe = _mm512_loadu_ps(xp + i * ldxp);
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) acc[i][j][0] = _mm512_fmadd_ps(even[j], xe, acc[i][j][0]);
    const __m512 xo = _mm512_loadu_ps(xp + i * ldxp + 16);
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) acc[i][j][1] = _mm512_fmadd_ps(odd[j], xo, acc[i][j][1]);
  }
}

// y[i * ldy + j] for MR rows of permuted x and NC weight rows.
template <int MR, int NC>
NNX_TARGET_AVX512 inline void bf16_tile(std::int64_t K, const float* xp, std::int64_t ldxp, const std::uint16_t* w,
                                        std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  __m512 acc[MR][NC][2];
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) acc[i][j][0] = acc[i][j][1] = _mm512_setzero_ps();
  std::int64_t k = 0;
  for (; k + kBf16Block <= K; k += kBf16Block) {
    avx2::prefetch_ahead<NC>(w, 2 * k);  // the tile's rows as one region read front to back
    bf16_block<MR, NC>(acc, xp + k, ldxp, w + k, ldw, kBf16Block);
  }
  if (k < K) bf16_block<MR, NC>(acc, xp + k, ldxp, w + k, ldw, K - k);
  // t = even + odd is t[i] = s[2i] + s[2i+1]; its halves added give u; avx2's tree the rest.
#pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int j = 0; j < NC; ++j) {
      const __m512 t = _mm512_add_ps(acc[i][j][0], acc[i][j][1]);
      y[i * ldy + j] = avx2::hsum(
          _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xFF, t, 0), _mm512_maskz_extractf32x8_ps(0xFF, t, 1)));
    }
}

// N weight rows against MR (1..kBf16Rows) rows of permuted x.
template <int MR>
NNX_TARGET_AVX512 inline void bf16_rows(std::int64_t N, std::int64_t K, const float* xp, std::int64_t ldxp,
                                        const std::uint16_t* w, std::int64_t ldw, float* y, std::int64_t ldy) noexcept {
  std::int64_t n = 0;
  for (; n + kBf16Channels <= N; n += kBf16Channels)
    bf16_tile<MR, kBf16Channels>(K, xp, ldxp, w + n * ldw, ldw, y + n, ldy);
  for (; n < N; ++n) bf16_tile<MR, 1>(K, xp, ldxp, w + n * ldw, ldw, y + n, ldy);
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

// y[M, N] = x[M, K] · w[N, K]ᵀ, w bf16 bits: the contract of nnx::kernels::ref::gemm_f32_bf16
// in this tier's order (detail::w16::dot_bf16_chains; the header comment says why). Weights in
// blocks of about 128 KiB, which every tile of rows of x passes over (the first from memory,
// the others from L2). Requires AVX-512 (F, BW, VL, DQ). Never throws.
NNX_TARGET_AVX512 inline void gemm_f32_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                            std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                            std::int64_t ldy) noexcept {
  namespace t = detail::w16;
  if (M <= 0 || N <= 0) return;
  const std::int64_t k32 = t::bf16_padded(K);
  const std::int64_t rows = std::clamp<std::int64_t>(t::kBf16PermutedFloats / std::max<std::int64_t>(k32, 1), 1, M);
  const std::int64_t nb = avx2::detail::i8::weight_block_rows(2 * K);
  float* xp = avx2::thread_floats<t::Bf16Tag>(static_cast<std::size_t>(std::max<std::int64_t>(rows * k32, 1)));
  if (!xp) {
    for (std::int64_t n = 0; n < N; ++n)
      for (std::int64_t m = 0; m < M; ++m) y[m * ldy + n] = t::dot_bf16_chains(K, x + m * ldx, w + n * ldw);
    return;
  }
  for (std::int64_t m0 = 0; m0 < M; m0 += rows) {
    const std::int64_t mr = std::min(rows, M - m0);
    for (std::int64_t i = 0; i < mr; ++i) t::bf16_permute_x(K, x + (m0 + i) * ldx, xp + i * k32);
    for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
      const std::int64_t nn = std::min(N - n0, nb);
      for (std::int64_t i0 = 0; i0 < mr; i0 += t::kBf16Rows) {
        const float* xt = xp + i0 * k32;
        float* yt = y + (m0 + i0) * ldy + n0;
        switch (std::min(t::kBf16Rows, mr - i0)) {
          case 1: t::bf16_rows<1>(nn, K, xt, k32, w + n0 * ldw, ldw, yt, ldy); break;
          case 2: t::bf16_rows<2>(nn, K, xt, k32, w + n0 * ldw, ldw, yt, ldy); break;
          case 3: t::bf16_rows<3>(nn, K, xt, k32, w + n0 * ldw, ldw, yt, ldy); break;
          default: t::bf16_rows<4>(nn, K, xt, k32, w + n0 * ldw, ldw, yt, ldy); break;
        }
      }
    }
  }
}

// The same with f16 weights.
NNX_TARGET_AVX512 inline void gemm_f32_f16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                           std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                           std::int64_t ldy) noexcept {
  detail::w16::gemm_f32_w16<detail::w16::Narrow::f16>(M, N, K, x, ldx, w, ldw, y, ldy);
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
