// nnx/kernels/avx2/gemm_i8.hpp — AVX2+FMA products with narrow weights: weight-only int8 and
// bf16 / f16 weights served as stored (float activations; one tile code, templated over how
// eight weights are widened), and W8A8. Contracts, layout and the portable orders are in
// nnx/kernels/ref/gemm_i8.hpp and nnx/kernels/ref/gemm_w16.hpp.
//
// Compiled with per-function target attributes, so including this header needs no -mavx2;
// call these only when nnx::kernels::isa_supported(nnx::kernels::Isa::avx2) is true (nnx/kernels/gemm_i8.hpp
// does that for you). On other platforms the header declares nothing.
//
// Orders (fixed by K alone: independent of M, of the tiling and of the other rows):
// - gemm_f32_w8: y[m][n] = wscale[n] * s, s from eight lane chains of fused multiply-adds,
//   lane l over k = l, l+8, l+16, ... ascending (a partial last group adds 0 * 0 in the
//   missing lanes), combined as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)). Every tile computes
//   each element with this same chain, so a row alone equals the row in a batch, bit for bit.
//   gemm_f32_bf16 / gemm_f32_f16: the same chain and tree over the exactly widened weights,
//   without the scale.
// - gemm_i8_i8: exact int32 sums (modulo 2^32 past K = 133143), bitwise equal to the portable
//   path. Products use the sign trick: maddubs(|x|, sign(w, x)) multiplies unsigned |x| by w
//   with x's sign moved onto it, and adds pairs into int16; with values in [-127, 127] a pair
//   is at most 2 * 127 * 127 = 32258, so the int16 never saturates (an input of -128 would
//   break this: the quantizers never produce it). madd with ones then widens to int32.
//
// Decoding (small M) is bound by reading the weights: they are streamed once, in blocks of
// about 128 KiB; tiles of up to 4 rows x several output channels pass over each block (the
// first from memory, the others from L2), so a batch of 8 reads the weights from memory
// once, and each FMA chain has independent neighbours to overlap with. One row (batch-1
// decode) reads the weights as kRegions streams side by side (see in_regions). Prefill uses
// the same tiles, hence the same per-element arithmetic. Single-threaded: the caller
// (nnx/kernels/gemm_i8.hpp) splits output channels between threads, which changes no sum.
#pragma once

#include "nnx/kernels/avx2/simd.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace nnx::kernels::avx2 {

namespace detail::i8 {

// v, forced into a register. Tuned for a particular CPU (-march=native, -mtune=znver3 or
// haswell), GCC folds the load of a row of x into every FMA that uses it, reloading it once
// per output channel; at 4 x 3 the loads then became the bottleneck (about 50 against 90
// GOP/s, measured). The empty asm hides where the value came from, so it is loaded once.
template <class V>
NNX_TARGET_AVX2_FMA inline V in_register(V v) noexcept {
  asm("" : "+x"(v));
  return v;
}

// The narrow weight types a float-activation product reads: int8 (with a scale per output
// channel), bf16 and f16 (as stored, no scale). Each is widened exactly in registers.
enum class Narrow : std::uint8_t { i8, bf16, f16 };
template <Narrow W>
using narrow_t = std::conditional_t<W == Narrow::i8, std::int8_t, std::uint16_t>;

// The first eight weights of v (its low 8 or 16 bytes) as exact floats: bf16 is the top half
// of an f32, f16 goes through F16C.
template <Narrow W>
NNX_TARGET_AVX2_FMA inline __m256 widen8(__m128i v) noexcept {
  if constexpr (W == Narrow::i8)
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  else if constexpr (W == Narrow::bf16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
  else
    return _mm256_cvtph_ps(v);
}

template <Narrow W>
NNX_TARGET_AVX2_FMA inline __m256 load8_ps(const narrow_t<W>* p) noexcept {
  if constexpr (W == Narrow::i8) return widen8<W>(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return widen8<W>(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The last r (1..7) weights of a row, zeros after them; reads only those r weights.
template <Narrow W>
NNX_TARGET_AVX2_FMA inline __m256 load8_ps_partial(const narrow_t<W>* p, int r) noexcept {
  __m128i v = _mm_setzero_si128();
  std::memcpy(&v, p, static_cast<std::size_t>(r) * sizeof(narrow_t<W>));
  return widen8<W>(v);
}

// Bytes of each weight row a tile reads per iteration of its main loop: a cache line, so
// that each row is a stream of whole lines.
inline constexpr std::int64_t kRowBytesPerIter = 64;

// One row of x (a batch-1 decode) reads its weights as kRegions long streams: the output
// channels split into that many contiguous regions, and each tile takes the same channel of
// every region, so each region's weight rows are read front to back beside the others'. A
// Zen 3 core (AVX2 its best tier) reads several such streams faster than one. Measured there,
// one thread, weights from DRAM in 2 MiB pages, W8A8 at K 768 x N 3072 / K 3072 x N 768 /
// K 768 x N 2304: one channel at a time 14-17 GB/s, two regions 17-21, four 19-26, eight
// 18-24. Each channel's sum is its own, so the bits are those of any other order.
inline constexpr int kRegions = 4;

// tile(n, stride) for n in [0, N / kRegions) with stride = N / kRegions (the tile's channels
// are n, n + stride, ...), then one(n) for the channels past kRegions whole regions.
template <class Tile, class One>
NNX_TARGET_AVX2_FMA inline void in_regions(std::int64_t N, const Tile& tile, const One& one) noexcept {
  const std::int64_t per = N / kRegions;
  for (std::int64_t n = 0; n < per; ++n) tile(n, per);
  for (std::int64_t n = per * kRegions; n < N; ++n) one(n);
}

// One step of 8 along k for an MR x NR tile: acc[i][j] = fma(x[i][k..k+8), q[j][k..k+8), acc).
// The smaller side is held in registers and the other streamed past it, so that the
// accumulators and the held vectors fit the 16 registers; both orders compute each
// element's chain identically.
template <Narrow W, int MR, int NR>
NNX_TARGET_AVX2_FMA inline void narrow_step_at(__m256 (&acc)[MR][NR], std::int64_t k, const float* x,
                                               std::int64_t ldx, const narrow_t<W>* q, std::int64_t ldq) noexcept {
  if constexpr (MR < NR) {
    __m256 xv[MR];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) xv[i] = in_register(_mm256_loadu_ps(x + i * ldx + k));
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const __m256 w = load8_ps<W>(q + j * ldq + k);
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm256_fmadd_ps(xv[i], w, acc[i][j]);
    }
  } else {
    __m256 w[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) w[j] = load8_ps<W>(q + j * ldq + k);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = in_register(_mm256_loadu_ps(x + i * ldx + k));
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, w[j], acc[i][j]);
    }
  }
}

// y[i][j * ldc] for MR rows of x and NR weight rows (each element its own eight-lane
// accumulator, so MR * NR independent FMA chains per step of 8), times ws[j * ldc] for int8
// weights. kPrefetch: the NR rows are one region, read front to back (see prefetch_ahead).
template <Narrow W, int MR, int NR, bool kPrefetch = true>
NNX_TARGET_AVX2_FMA inline void narrow_tile(std::int64_t K, const float* x, std::int64_t ldx, const narrow_t<W>* q,
                                            std::int64_t ldq, const float* ws, float* y, std::int64_t ldy,
                                            std::int64_t ldc = 1) noexcept {
  constexpr std::int64_t kPerIter = kRowBytesPerIter / static_cast<std::int64_t>(sizeof(narrow_t<W>));
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  std::int64_t k = 0;
  for (; k + kPerIter <= K; k += kPerIter) {
    if constexpr (kPrefetch) prefetch_ahead<NR>(q, k * static_cast<std::int64_t>(sizeof(narrow_t<W>)));
#pragma GCC unroll 8
    for (std::int64_t u = 0; u < kPerIter; u += 8) narrow_step_at<W, MR, NR>(acc, k + u, x, ldx, q, ldq);
  }
  for (; k + 8 <= K; k += 8) narrow_step_at<W, MR, NR>(acc, k, x, ldx, q, ldq);
  if (k < K) {
    const int r = static_cast<int>(K - k);
    const __m256i mask = lane_mask(r);
    __m256 w[NR];
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) w[j] = load8_ps_partial<W>(q + j * ldq + k, r);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m256 xv = _mm256_maskload_ps(x + i * ldx + k, mask);
#pragma GCC unroll 8
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(xv, w[j], acc[i][j]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      if constexpr (W == Narrow::i8)
        y[i * ldy + j * ldc] = ws[j * ldc] * hsum(acc[i][j]);
      else
        y[i * ldy + j * ldc] = hsum(acc[i][j]);
    }
}

// Output channels per tile of MR (1..4) rows: 8 to 12 accumulators, enough independent
// chains to hide the FMA latency, few enough to leave registers for the held operands
// (measured best on a Zen 5 EPYC among 1..12 channels).
constexpr int narrow_channels(int mr) noexcept { return mr == 1 ? 8 : mr <= 3 ? 4 : 3; }

// MR rows of x against output channels [0, N): full tiles, then single channels.
template <Narrow W, int MR>
NNX_TARGET_AVX2_FMA inline void narrow_rows(std::int64_t N, std::int64_t K, const float* x, std::int64_t ldx,
                                            const narrow_t<W>* q, std::int64_t ldq, const float* ws, float* y,
                                            std::int64_t ldy) noexcept {
  constexpr int NR = narrow_channels(MR);
  auto scales = [&](std::int64_t n) { return W == Narrow::i8 ? ws + n : nullptr; };
  std::int64_t n = 0;
  for (; n + NR <= N; n += NR) narrow_tile<W, MR, NR>(K, x, ldx, q + n * ldq, ldq, scales(n), y + n, ldy);
  if constexpr (NR > 1)
    for (; n < N; ++n) narrow_tile<W, MR, 1>(K, x, ldx, q + n * ldq, ldq, scales(n), y + n, ldy);
}

template <Narrow W>
NNX_TARGET_AVX2_FMA inline void narrow_rows_any(int mr, std::int64_t N, std::int64_t K, const float* x,
                                                std::int64_t ldx, const narrow_t<W>* q, std::int64_t ldq,
                                                const float* ws, float* y, std::int64_t ldy) noexcept {
  switch (mr) {
    case 1: narrow_rows<W, 1>(N, K, x, ldx, q, ldq, ws, y, ldy); break;
    case 2: narrow_rows<W, 2>(N, K, x, ldx, q, ldq, ws, y, ldy); break;
    case 3: narrow_rows<W, 3>(N, K, x, ldx, q, ldq, ws, y, ldy); break;
    default: narrow_rows<W, 4>(N, K, x, ldx, q, ldq, ws, y, ldy); break;
  }
}

// One step of 32 along k: acc[i][j] += the products of xq[i][k..k+32) and q[j][k..k+32),
// summed in pairs (maddubs, int16) and then in quadruples (madd, int32).
template <int MR, int NR>
NNX_TARGET_AVX2_FMA inline void i8_step_at(__m256i (&acc)[MR][NR], std::int64_t k, const std::int8_t* xq,
                                           std::int64_t ldx, const std::int8_t* q, std::int64_t ldq) noexcept {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i w[NR];
#pragma GCC unroll 8
  for (int j = 0; j < NR; ++j) w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + j * ldq + k));
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const __m256i xv = in_register(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + i * ldx + k)));
    const __m256i ax = _mm256_abs_epi8(xv);
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const __m256i pairs = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(w[j], xv));
      acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
    }
  }
}

// acc[i][j] = Σ_k xq[i][k] * q[j][k] for MR rows and NR weight rows, exact (mod 2^32); then
// y[i][j * ldc] = (float(acc) * xs[i]) * ws[j * ldc]. kPrefetch: the NR rows are one region,
// read front to back, which software prefetch streams ahead (see prefetch_ahead).
template <int MR, int NR, bool kPrefetch = (MR > 1 || NR > 1)>
NNX_TARGET_AVX2_FMA inline void i8_tile(std::int64_t K, const std::int8_t* xq, std::int64_t ldx, const float* xs,
                                        const std::int8_t* q, std::int64_t ldq, const float* ws, float* y,
                                        std::int64_t ldy, std::int64_t ldc = 1) noexcept {
  __m256i acc[MR][NR];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  std::int64_t k = 0;
  for (; k + kRowBytesPerIter <= K; k += kRowBytesPerIter) {
    if constexpr (kPrefetch) prefetch_ahead<NR>(q, k);
#pragma GCC unroll 2
    for (std::int64_t u = 0; u < kRowBytesPerIter; u += 32) i8_step_at<MR, NR>(acc, k + u, xq, ldx, q, ldq);
  }
  for (; k + 32 <= K; k += 32) i8_step_at<MR, NR>(acc, k, xq, ldx, q, ldq);
  const std::int64_t k32 = k;
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
    const std::int8_t* xr = xq + i * ldx;
#pragma GCC unroll 8
    for (int j = 0; j < NR; ++j) {
      const std::int8_t* qr = q + j * ldq;
      std::uint32_t s = hsum_epi32(acc[i][j]);
      for (std::int64_t kk = k32; kk < K; ++kk)
        s += static_cast<std::uint32_t>(static_cast<std::int32_t>(xr[kk]) * static_cast<std::int32_t>(qr[kk]));
      y[i * ldy + j * ldc] = (static_cast<float>(static_cast<std::int32_t>(s)) * xs[i]) * ws[j * ldc];
    }
  }
}

// Output channels per tile of MR (1..4) rows: MR * NR accumulators plus NR weight vectors
// and a row's x, |x|, the ones and a temporary fit the 16 registers (measured best).
// One row (decoding a single sequence) takes one channel at a time: the weights are then read
// as a single front-to-back stream, row after row, which the hardware prefetcher follows at
// the machine's one-stream rate without help (int32 adds have no latency to hide). Measured
// on a Zen 4 EPYC, one thread, weights in 2 MiB pages: 31 GB/s, as fast as a plain sum over
// the same bytes, against 21-26 GB/s for four channels with software prefetch (four short
// streams 768 bytes apart defeat the prefetcher: 8-9 GB/s without the prefetch); in 4 KiB
// pages 19-22 against 17-20 GB/s. (The avx2 tier's own entry reads one row as kRegions
// streams instead: gemm_i8_i8 below.)
constexpr int i8_channels(int mr) noexcept { return mr == 1 ? 1 : mr == 2 ? 4 : mr == 3 ? 3 : 2; }

template <int MR>
NNX_TARGET_AVX2_FMA inline void i8_rows(std::int64_t N, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                                        const float* xs, const std::int8_t* q, std::int64_t ldq, const float* ws,
                                        float* y, std::int64_t ldy) noexcept {
  constexpr int NR = i8_channels(MR);
  std::int64_t n = 0;
  for (; n + NR <= N; n += NR) i8_tile<MR, NR>(K, xq, ldx, xs, q + n * ldq, ldq, ws + n, y + n, ldy);
  if constexpr (NR > 1)
    for (; n < N; ++n) i8_tile<MR, 1>(K, xq, ldx, xs, q + n * ldq, ldq, ws + n, y + n, ldy);
}

NNX_TARGET_AVX2_FMA inline void i8_rows_any(int mr, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                            std::int64_t ldx, const float* xs, const std::int8_t* q, std::int64_t ldq,
                                            const float* ws, float* y, std::int64_t ldy) noexcept {
  switch (mr) {
    case 1: i8_rows<1>(N, K, xq, ldx, xs, q, ldq, ws, y, ldy); break;
    case 2: i8_rows<2>(N, K, xq, ldx, xs, q, ldq, ws, y, ldy); break;
    case 3: i8_rows<3>(N, K, xq, ldx, xs, q, ldq, ws, y, ldy); break;
    default: i8_rows<4>(N, K, xq, ldx, xs, q, ldq, ws, y, ldy); break;
  }
}

// Rows of x per pass over a block of weights, and the bytes of weights in a block: the
// first pass streams the block from memory, later passes (M > 4) find it in L2. Four-row
// tiles over blocks beat eight-row tiles over the stream at M = 8 (measured: 8 rows leave
// too few registers for enough output channels).
inline constexpr std::int64_t kRowTile = 4;
inline constexpr std::int64_t kWeightBlockBytes = 128 * 1024;

// Weight rows of row_bytes each per block: about kWeightBlockBytes, a multiple of 24 (of every
// tile width).
inline std::int64_t weight_block_rows(std::int64_t row_bytes) noexcept {
  const std::int64_t rows = kWeightBlockBytes / std::max<std::int64_t>(row_bytes, 1);
  return std::max<std::int64_t>(24, rows / 24 * 24);
}

}  // namespace detail::i8

namespace detail::i8 {

// x[M, K] · (narrow weights q[N, K])ᵀ, blocked as the header comment says; ws: int8 only.
template <Narrow W>
NNX_TARGET_AVX2_FMA inline void gemm_f32_narrow(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                                std::int64_t ldx, const narrow_t<W>* q, std::int64_t ldq,
                                                const float* ws, float* y, std::int64_t ldy) noexcept {
  if (M <= 0 || N <= 0) return;
  auto scales = [&](std::int64_t n) { return W == Narrow::i8 ? ws + n : nullptr; };
  if (M == 1)
    return in_regions(
        N,
        [&](std::int64_t n, std::int64_t per) {
          narrow_tile<W, 1, kRegions, false>(K, x, ldx, q + n * ldq, per * ldq, scales(n), y + n, ldy, per);
        },
        [&](std::int64_t n) { narrow_tile<W, 1, 1>(K, x, ldx, q + n * ldq, ldq, scales(n), y + n, ldy); });
  const std::int64_t nb = weight_block_rows(K * static_cast<std::int64_t>(sizeof(narrow_t<W>)));
  for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
    const std::int64_t n1 = std::min(N, n0 + nb);
    for (std::int64_t m0 = 0; m0 < M; m0 += kRowTile) {
      const int mr = static_cast<int>(std::min(kRowTile, M - m0));
      narrow_rows_any<W>(mr, n1 - n0, K, x + m0 * ldx, ldx, q + n0 * ldq, ldq, scales(n0), y + m0 * ldy + n0, ldy);
    }
  }
}

}  // namespace detail::i8

// y[M, N] = wscale[n] * Σ_k x[m][k] * q[n][k]; same contract as nnx::kernels::ref::gemm_f32_w8,
// order as in the header comment. Requires AVX2 and FMA. Never throws.
NNX_TARGET_AVX2_FMA inline void gemm_f32_w8(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                            std::int64_t ldx, const std::int8_t* q, std::int64_t ldq,
                                            const float* wscale, float* y, std::int64_t ldy) noexcept {
  detail::i8::gemm_f32_narrow<detail::i8::Narrow::i8>(M, N, K, x, ldx, q, ldq, wscale, y, ldy);
}

// y[M, N] = x[M, K] · w[N, K]ᵀ with bf16 (or f16) weights w given as their bits; same
// contract as nnx::kernels::ref::gemm_f32_bf16 (gemm_f32_f16), the order of gemm_f32_w8.
// Requires AVX2, FMA and F16C. Never throws.
NNX_TARGET_AVX2_FMA inline void gemm_f32_bf16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                              std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                              std::int64_t ldy) noexcept {
  detail::i8::gemm_f32_narrow<detail::i8::Narrow::bf16>(M, N, K, x, ldx, w, ldw, nullptr, y, ldy);
}
NNX_TARGET_AVX2_FMA inline void gemm_f32_f16(std::int64_t M, std::int64_t N, std::int64_t K, const float* x,
                                             std::int64_t ldx, const std::uint16_t* w, std::int64_t ldw, float* y,
                                             std::int64_t ldy) noexcept {
  detail::i8::gemm_f32_narrow<detail::i8::Narrow::f16>(M, N, K, x, ldx, w, ldw, nullptr, y, ldy);
}

// W8A8: y[m][n] = (float(Σ_k xq[m][k] * q[n][k]) * xscale[m]) * wscale[n], the sum exact in
// int32; same contract and bits as nnx::kernels::ref::gemm_i8_i8 (values in [-127, 127]).
// One row streams its weights one channel at a time (see i8_channels): the avx512 tier's
// GEMV on AMD CPUs. Requires AVX2. Never throws.
NNX_TARGET_AVX2_FMA inline void gemm_i8_i8_one_stream(std::int64_t M, std::int64_t N, std::int64_t K,
                                                      const std::int8_t* xq, std::int64_t ldx, const float* xscale,
                                                      const std::int8_t* q, std::int64_t ldq, const float* wscale,
                                                      float* y, std::int64_t ldy) noexcept {
  if (M <= 0 || N <= 0) return;
  const std::int64_t nb = detail::i8::weight_block_rows(K);
  for (std::int64_t n0 = 0; n0 < N; n0 += nb) {
    const std::int64_t n1 = std::min(N, n0 + nb);
    for (std::int64_t m0 = 0; m0 < M; m0 += detail::i8::kRowTile) {
      const int mr = static_cast<int>(std::min(detail::i8::kRowTile, M - m0));
      detail::i8::i8_rows_any(mr, n1 - n0, K, xq + m0 * ldx, ldx, xscale + m0, q + n0 * ldq, ldq, wscale + n0,
                              y + m0 * ldy + n0, ldy);
    }
  }
}

// The avx2 tier's W8A8: gemm_i8_i8_one_stream's contract and bits, one row read as
// kRegions streams (see in_regions). Requires AVX2. Never throws.
NNX_TARGET_AVX2_FMA inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                           std::int64_t ldx, const float* xscale, const std::int8_t* q,
                                           std::int64_t ldq, const float* wscale, float* y, std::int64_t ldy) noexcept {
  if (M != 1 || N <= 0) return gemm_i8_i8_one_stream(M, N, K, xq, ldx, xscale, q, ldq, wscale, y, ldy);
  detail::i8::in_regions(
      N,
      [&](std::int64_t n, std::int64_t per) {
        detail::i8::i8_tile<1, detail::i8::kRegions, false>(K, xq, ldx, xscale, q + n * ldq, per * ldq, wscale + n,
                                                              y + n, ldy, per);
      },
      [&](std::int64_t n) { detail::i8::i8_tile<1, 1>(K, xq, ldx, xscale, q + n * ldq, ldq, wscale + n, y + n, ldy); });
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
