// nnx/kernels/avx512/gemm_i8_amx.hpp — the W8A8 product on AMX tiles (tdpbssd), inside the
// avx512 tier on CPUs that have AMX-INT8 (Sapphire Rapids and later Xeons; cpu_has_amx_int8()).
//
// The tile instructions are inline assembly inside avx512-target functions (no -mamx needed);
// call only where cpu_has_amx_int8() is true (avx512::gemm_i8_i8 does, see amx_takes). On
// other platforms the header declares nothing.
//
// Cross-tier class: BIT-IDENTICAL to ref, avx2 and avx512's VNNI tiles. tdpbssd multiplies
// signed bytes by signed bytes and adds them into int32 exactly (modulo 2^32, as the portable
// sum), and the epilogue is the same (float(acc) * xscale[m]) * wscale[n].
//
// Layout: the weights q[N, K] are the tiles' A operand as stored, 16 output channels x 64
// bytes of K per tile, so nothing about QTensor changes. The activations are the B operand,
// which AMX wants with groups of four K bytes interleaved across its columns ([K/4][rows][4]):
// up to 16 activation rows are packed that way once per pass (a few KiB, on the stack), and the
// product comes out transposed, channels x rows, which the epilogue writes back as rows.
//
// Why: one tdpbssd does 16 x 16 x 64 multiply-adds, a VNNI vpdpbusd 64, so products of many
// rows, which the VNNI tiles run at the multiply-add port's rate, become several times faster
// (a Xeon, one thread, M 128 x K 768 x N 3072: 1855-1905 -> 460-468 us; a Llama-162M W8A8
// prefill of 128 tokens 121-128 -> 56-57 ms; benchmarks/RESULTS.md). K must be a multiple of
// 64 (every Llama and GPT width is); the channels past the last multiple of 16 go to the VNNI
// tiles.
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace nnx::kernels::avx512::detail::amx {

// The tile instructions as inline assembly (T: a tile number, 0-7; AT&T | Intel syntax):
// GCC's intrinsics paste the tile number in as text, so it cannot be a template parameter,
// their loads lack the memory clobber that orders them after the packing stores, and they
// need the amx target on every caller.
template <int T>
inline void tile_zero() noexcept {
  asm volatile("tilezero %%tmm%c0" ::"i"(T));
}
template <int T>
inline void tile_load(const void* base, std::int64_t stride) noexcept {
  asm volatile("{tileloadd (%0,%1,1), %%tmm%c2|tileloadd %%tmm%c2, [%0+%1*1]}" ::"r"(base), "r"(stride), "i"(T)
               : "memory");
}
template <int T>
inline void tile_store(void* base, std::int64_t stride) noexcept {
  asm volatile("{tilestored %%tmm%c2, (%0,%1,1)|tilestored [%0+%1*1], %%tmm%c2}" ::"r"(base), "r"(stride), "i"(T)
               : "memory");
}
// C += A · B, signed bytes by signed bytes into int32.
template <int C, int A, int B>
inline void tile_dot_i8() noexcept {
  asm volatile("{tdpbssd %%tmm%c0, %%tmm%c1, %%tmm%c2|tdpbssd %%tmm%c2, %%tmm%c1, %%tmm%c0}" ::"i"(B), "i"(A),
               "i"(C));
}
inline void tile_release() noexcept { asm volatile("tilerelease" ::: "memory"); }

// The tile configuration ldtilecfg reads (palette 1: eight tiles of up to 16 rows x 64 bytes).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1;
  std::uint8_t start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t bytes_per_row[16] = {};
  std::uint8_t rows[16] = {};
};

inline constexpr std::int64_t kChannels = 16;   // output channels per accumulator tile
inline constexpr std::int64_t kDepth = 64;      // bytes of K per tile product
inline constexpr std::int64_t kMaxRows = 16;    // activation rows per pass (a B tile's 64 bytes)
inline constexpr int kTilesPerGroup = 3;        // accumulators 0-2, weights 3-5, activations 6
inline constexpr std::int64_t kPackedBytes = 64 * 1024;  // the packed activations, on the stack
// Weights per block when more than one pass of activation rows reads them (prefill): the
// block stays in L2 (2 MiB a core on every AMX Xeon) while every pass reads it, and each pass
// packs its rows once per block, so small blocks cost packing: at 256 KiB, M 128 x K 3072 x
// N 768 took 1.51 ms on one thread, at 1 MiB 0.54 (K 768 x N 3072: 0.54 -> 0.46).
inline constexpr std::int64_t kWeightBlockBytes = 1024 * 1024;

// Activation rows per pass: a B tile's 16 columns, and K x rows packed bytes on the stack.
constexpr std::int64_t rows_per_pass(std::int64_t K) noexcept {
  return K <= 0 ? 0 : std::min(kMaxRows, kPackedBytes / K);
}

// Whether the tiles can take a product of this shape: K a whole number of tile depths (and
// small enough for one packed row), at least one tile of channels.
constexpr bool shape_fits(std::int64_t N, std::int64_t K) noexcept {
  return K > 0 && K % kDepth == 0 && rows_per_pass(K) >= 1 && N >= kChannels;
}

// Tiles 0..2 accumulate channels x rows (int32), 3..5 hold 16 weight rows x 64 bytes, 6 the
// packed activations: 16 groups of four K bytes x rows.
inline void configure(std::int64_t mr) noexcept {
  TileConfig c;
  const auto row_bytes = static_cast<std::uint16_t>(4 * mr);
  for (int t = 0; t < kTilesPerGroup; ++t) {
    c.rows[t] = kChannels;
    c.bytes_per_row[t] = row_bytes;
    c.rows[kTilesPerGroup + t] = kChannels;
    c.bytes_per_row[kTilesPerGroup + t] = kDepth;
  }
  c.rows[6] = kDepth / 4;
  c.bytes_per_row[6] = row_bytes;
  asm volatile("ldtilecfg %0" ::"m"(c) : "memory");
}

// Lane i holds i * stride: the offsets of the 16 lanes of a scatter or gather.
NNX_TARGET_AVX512 inline __m512i lane_offsets(std::int64_t stride) noexcept {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(static_cast<int>(stride)));
}

// xp[g][m][0..4) = xq[m][4g..4g+4) for m < mr, g < K/4: each 64-byte stretch of a row is 16
// groups, scattered mr groups apart.
NNX_TARGET_AVX512 inline void pack_rows(std::int64_t mr, std::int64_t K, const std::int8_t* xq, std::int64_t ldx,
                                        std::int8_t* xp) noexcept {
  const __m512i group_offsets = lane_offsets(mr);
  for (std::int64_t m = 0; m < mr; ++m)
    for (std::int64_t k = 0; k < K; k += kDepth)
      _mm512_i32scatter_epi32(xp + (k * mr + 4 * m), group_offsets, _mm512_loadu_si512(xq + m * ldx + k), 4);
}

// y[m][0, 16) for m < mr from an accumulator tile stored as acc[channel][row].
NNX_TARGET_AVX512 inline void write_rows(const std::int32_t* acc, std::int64_t mr, const float* xs, const float* ws,
                                         float* y, std::int64_t ldy) noexcept {
  const __m512i column = lane_offsets(kChannels);
  const __m512 w = _mm512_loadu_ps(ws);
  // The masked forms: GCC 12 warns inside the plain ones (an "uninitialized" undefined vector).
  constexpr __mmask16 all = 0xffff;
  for (std::int64_t m = 0; m < mr; ++m) {
    const __m512i index = _mm512_add_epi32(column, _mm512_set1_epi32(static_cast<int>(m)));
    const __m512i a = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), all, index, acc, 4);
    const __m512 scaled = _mm512_mul_ps(_mm512_maskz_cvtepi32_ps(all, a), _mm512_set1_ps(xs[m]));
    _mm512_storeu_ps(y + m * ldy, _mm512_mul_ps(scaled, w));
  }
}

// G x 16 channels (weight rows q[0, 16 G)) against the packed rows, y[m][0, 16 G) written.
template <int G>
NNX_TARGET_AVX512 inline void channel_group(std::int64_t mr, std::int64_t K, const std::int8_t* xp,
                                            const std::int8_t* q, std::int64_t ldq, const float* xs, const float* ws,
                                            float* y, std::int64_t ldy) noexcept {
  static_assert(G >= 1 && G <= kTilesPerGroup);
  tile_zero<0>();
  if constexpr (G > 1) tile_zero<1>();
  if constexpr (G > 2) tile_zero<2>();
  const std::int64_t xp_stride = 4 * mr;
  for (std::int64_t k = 0; k < K; k += kDepth) {
    tile_load<6>(xp + k * mr, xp_stride);
    tile_load<3>(q + k, ldq);
    tile_dot_i8<0, 3, 6>();
    if constexpr (G > 1) {
      tile_load<4>(q + kChannels * ldq + k, ldq);
      tile_dot_i8<1, 4, 6>();
    }
    if constexpr (G > 2) {
      tile_load<5>(q + 2 * kChannels * ldq + k, ldq);
      tile_dot_i8<2, 5, 6>();
    }
  }
  alignas(64) std::int32_t acc[G][kChannels * kChannels];
  tile_store<0>(acc[0], kChannels * 4);
  if constexpr (G > 1) tile_store<1>(acc[1], kChannels * 4);
  if constexpr (G > 2) tile_store<2>(acc[2], kChannels * 4);
  for (int t = 0; t < G; ++t) write_rows(acc[t], mr, xs, ws + t * kChannels, y + t * kChannels, ldy);
}

// The product over channels [0, N - N % 16) (the caller takes the rest): the contract of
// avx512::gemm_i8_i8 where shape_fits(N, K). A pass packs up to rows_per_pass(K) activation
// rows; with more rows than one pass, weights go in blocks that stay in L2 across the passes.
NNX_TARGET_AVX512 inline void gemm_i8_i8(std::int64_t M, std::int64_t N, std::int64_t K, const std::int8_t* xq,
                                         std::int64_t ldx, const float* xscale, const std::int8_t* q, std::int64_t ldq,
                                         const float* wscale, float* y, std::int64_t ldy) noexcept {
  alignas(64) std::int8_t packed[kPackedBytes];
  const std::int64_t rows = rows_per_pass(K);
  const std::int64_t tiled = N / kChannels * kChannels;
  const std::int64_t group = kTilesPerGroup * kChannels;
  const std::int64_t block = M <= rows ? tiled : std::max(group, kWeightBlockBytes / K / group * group);
  std::int64_t configured = 0;  // the rows the tiles are configured for
  for (std::int64_t n0 = 0; n0 < tiled; n0 += block) {
    const std::int64_t n1 = std::min(tiled, n0 + block);
    for (std::int64_t m0 = 0; m0 < M; m0 += rows) {
      const std::int64_t mr = std::min(rows, M - m0);
      pack_rows(mr, K, xq + m0 * ldx, ldx, packed);
      if (mr != configured) {
        configure(mr);
        configured = mr;
      }
      const float* xs = xscale + m0;
      float* yr = y + m0 * ldy;
      std::int64_t n = n0;
      for (; n + group <= n1; n += group)
        channel_group<kTilesPerGroup>(mr, K, packed, q + n * ldq, ldq, xs, wscale + n, yr + n, ldy);
      for (; n < n1; n += kChannels)
        channel_group<1>(mr, K, packed, q + n * ldq, ldq, xs, wscale + n, yr + n, ldy);
    }
  }
  tile_release();
}

}  // namespace nnx::kernels::avx512::detail::amx

#endif  // NNX_KERNELS_X86_DISPATCH
