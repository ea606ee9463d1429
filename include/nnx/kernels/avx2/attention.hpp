// nnx/kernels/avx2/attention.hpp — AVX2+FMA attention of the query heads of a run of KV heads
// over a run of keys, with an online softmax over key blocks (the contract of
// nnx/kernels/ref/attention.hpp).
//
// Compiled with per-function target attributes (no -mavx2 needed to include it); call only
// where isa_supported(Isa::avx2) (nnx/kernels/attention.hpp does). On other platforms the
// header declares nothing.
//
// Against ref the order differs: blocks of 64 keys instead of 256; each score sums 8 lanes of
// FMA products, then the lanes in hsum8's tree; the exp is a degree-7 polynomial after
// Cody-Waite reduction (<= 2 ulp from std::exp); block sums 8 lanes then hsum. The test holds
// every tier within 1e-6 * max |v| of a double-precision reference. Cross-tier class: within
// that bound of ref; the avx512 tier (nnx/kernels/avx512/attention.hpp) gives these bits.
// Each query head's order is fixed by n, D and G alone, so results depend on neither the
// thread count, nor how the KV heads are split between calls, nor other rows.
//
// Why it is faster: the portable dot product is one dependent chain of scalar adds (ISO C++
// forbids reassociating it); here eight keys' scores run as eight independent FMA chains
// reduced together, the exps run 8 wide, the weighted sum of values keeps 64 output floats in
// registers across a block, rows are prefetched ahead, and a block is taken for every head
// before the next, so the cache's [Hkv, D] rows are read from memory whole (measured on a
// batch-8, 1024-position decode: 18.5 -> 21-25 GB/s of KV read; see benchmarks/RESULTS.md).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/ref/attention.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace nnx::kernels::avx2 {

namespace detail::attn {

// The eight vectors' lane sums, one per lane of the result: lane i = ((v_i0 + v_i1) +
// (v_i2 + v_i3)) + ((v_i4 + v_i5) + (v_i6 + v_i7)). Eight horizontal sums for the price of
// about one and a half of hsum's.
NNX_TARGET_AVX2_FMA inline __m256 hsum8(const __m256 (&v)[8]) noexcept {
  const __m256 s01 = _mm256_hadd_ps(v[0], v[1]), s23 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 s45 = _mm256_hadd_ps(v[4], v[5]), s67 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// The lines of row `j` (rows `stride` elements apart from `base`) into L1 ahead of use. The
// address is formed as an integer (no pointer leaves its array); callers stay within the rows
// that exist, though a prefetch would not fault anyway.
template <class E>
NNX_TARGET_AVX2_FMA inline void prefetch_row(const E* base, std::int64_t j, std::int64_t stride,
                                             std::int64_t bytes) noexcept {
  const auto row = reinterpret_cast<std::uintptr_t>(base) + static_cast<std::uintptr_t>(j * stride) * sizeof(E);
  for (std::int64_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(row + b), _MM_HINT_T0);
}

// l c + s, the product rounded before the sum whatever the build's -ffp-contract (the empty asm
// keeps the compiler from fusing them): the avx512 tier's sums must round as these do.
inline float rescaled_sum(float l, float c, float s) noexcept {
  float product = l * c;
  asm("" : "+x"(product));
  return product + s;
}

// Keys ahead of the one being read whose rows are prefetched: about a microsecond of DRAM
// latency at the rate a key row is consumed.
inline constexpr std::int64_t kPrefetchKeys = 16;

// Eight cache elements from p as floats: f32 as stored, bf16 (given as its bits) and int8
// converted exactly in registers. The partial forms read only the first r (1..7) elements,
// zeros after.
NNX_TARGET_AVX2_FMA inline __m256 load8(const float* p) noexcept { return _mm256_loadu_ps(p); }
NNX_TARGET_AVX2_FMA inline __m256 load8(const std::int8_t* p) noexcept {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
NNX_TARGET_AVX2_FMA inline __m256 load8(const std::uint16_t* p) noexcept {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
NNX_TARGET_AVX2_FMA inline __m256 load8_partial(const float* p, std::int64_t r) noexcept {
  return _mm256_maskload_ps(p, lane_mask(r));
}
NNX_TARGET_AVX2_FMA inline __m256 load8_partial(const std::uint16_t* p, std::int64_t r) noexcept {
  __m128i h = _mm_setzero_si128();
  std::memcpy(&h, p, static_cast<std::size_t>(std::min<std::int64_t>(r, 8)) * sizeof(std::uint16_t));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
NNX_TARGET_AVX2_FMA inline __m256 load8_partial(const std::int8_t* p, std::int64_t r) noexcept {
  std::int64_t bytes = 0;
  std::memcpy(&bytes, p, static_cast<std::size_t>(std::min<std::int64_t>(r, 8)));
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes)));
}

// Scores p[j] = scale * (q . k_j) of 8 keys k_j = rows[j] (rows may repeat: padding), f32 or
// bf16 rows.
template <class E>
NNX_TARGET_AVX2_FMA inline __m256 scores8(const float* q, const E* const (&rows)[8], std::int64_t D,
                                          __m256i d_tail, float scale) noexcept {
  __m256 a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
  const std::int64_t full = D / 8 * 8;
  std::int64_t d = 0;
  for (; d < full; d += 8) {
    const __m256 qv = _mm256_loadu_ps(q + d);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(qv, load8(rows[i] + d), a[i]);
  }
  if (d < D) {
    const __m256 qv = _mm256_maskload_ps(q + d, d_tail);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) a[i] = _mm256_fmadd_ps(qv, load8_partial(rows[i] + d, D - d), a[i]);
  }
  return _mm256_mul_ps(hsum8(a), _mm256_set1_ps(scale));
}

// Scores of 8 (query head, key row) pairs: lane i = scale * (qs[i] . rows[i]), each summed as
// scores8 sums one (one 8-lane FMA chain over d, then hsum8's tree), so a score's bits do
// not depend on which pairs share a call. Only the first W pairs are computed (lanes from W on
// are 0): a row's last group of heads is often narrower than 8 (12 heads: 8 then 4), and
// hsum8 sums each lane from its own vector alone.
template <class E, int W = 8>
NNX_TARGET_AVX2_FMA inline __m256 scores8_pairs(const float* const (&qs)[8], const E* const (&rows)[8],
                                                std::int64_t D, __m256i d_tail, float scale) noexcept {
  __m256 a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_ps();
  const std::int64_t full = D / 8 * 8;
  std::int64_t d = 0;
  for (; d < full; d += 8) {
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i) a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(qs[i] + d), load8(rows[i] + d), a[i]);
  }
  if (d < D) {
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i)
      a[i] = _mm256_fmadd_ps(_mm256_maskload_ps(qs[i] + d, d_tail), load8_partial(rows[i] + d, D - d), a[i]);
  }
  return _mm256_mul_ps(hsum8(a), _mm256_set1_ps(scale));
}

// Calls f(std::integral_constant<int, W>{}) for W = min(live, 8): the scores of a group of
// `live` (head, row) pairs computed as W pairs (12 heads are 8 + 4; on two threads, 6 each).
template <class F>
inline void with_pair_width(std::int64_t live, F&& f) {
  switch (std::min<std::int64_t>(live, 8)) {
    case 1: return f(std::integral_constant<int, 1>{});
    case 2: return f(std::integral_constant<int, 2>{});
    case 3: return f(std::integral_constant<int, 3>{});
    case 4: return f(std::integral_constant<int, 4>{});
    case 5: return f(std::integral_constant<int, 5>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 7: return f(std::integral_constant<int, 7>{});
    default: return f(std::integral_constant<int, 8>{});
  }
}

// o[0, 64) = o c + sum_j p_j v_j[0, 64) over j < jn: eight accumulators in registers, one
// FMA chain per output float over j ascending. The rows kPrefetchKeys ahead are prefetched
// (prefetch_bytes of each) while below prefetch_rows.
template <class E>
NNX_TARGET_AVX2_FMA inline void weighted_values64(float* o, float c, const float* p, const E* values,
                                                  std::int64_t kv_stride, std::int64_t jn, std::int64_t prefetch_rows,
                                                  std::int64_t prefetch_bytes) noexcept {
  __m256 acc[8];
  const __m256 vc = _mm256_set1_ps(c);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) acc[i] = _mm256_mul_ps(_mm256_loadu_ps(o + 8 * i), vc);
  for (std::int64_t j = 0; j < jn; ++j) {
    const E* v = values + j * kv_stride;
    if (j + kPrefetchKeys < prefetch_rows) prefetch_row(values, j + kPrefetchKeys, kv_stride, prefetch_bytes);
    const __m256 pj = _mm256_broadcast_ss(p + j);
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(pj, load8(v + 8 * i), acc[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(o + 8 * i, acc[i]);
}


// Keys per block of the online softmax: one block's rows of every head of a row stay in L2
// while each head reads its part, so the cache row [Hkv, D] of a position is read whole from
// memory (the heads' strided slices, read head after head over all the keys, were half as fast
// from DRAM), and the block's scores for one head's group live on the stack.
inline constexpr std::int64_t kKeyBlock = 64;
// (query row, query head) pairs whose running maximum and sum a pass over the keys keeps: a
// prefill's rows share each block of keys while it is in L1 (FlashAttention's query
// blocking), where one row at a time read every key from L3 again for every row.
inline constexpr std::int64_t kStatesPerPass = 256;
// Head sizes up to which a block of one head's keys and values is copied into contiguous
// buffers when several rows will read it (a GQA group of one row gained nothing): rows of one head sit kv_stride apart in the cache
// (3 KiB for 12 heads of 64), so a block's rows fall into a quarter of L1's sets and evict
// each other before the next row reads them; packed, a block's K and V (32 KiB at D = 64)
// stay in L1 for all the rows.
inline constexpr std::int64_t kMaxPackedD = 128;

// A block of one head's rows (kv_stride apart) into dst, D floats each, contiguous.
NNX_TARGET_AVX2_FMA inline void pack_rows(const float* src, std::int64_t kv_stride, std::int64_t rows, std::int64_t D,
                                          float* dst) noexcept {
  for (std::int64_t j = 0; j < rows; ++j) std::copy_n(src + j * kv_stride, D, dst + j * D);
}

// Rows [0, rows) of bf16 src's first head widened (exactly: a shift) into dst, D floats each,
// contiguous. Row j + kKeyBlock (the same row of the next block, read after every other
// head's part of this one) is prefetched while below prefetch_rows: a head's rows sit a cache
// row apart, a stride the hardware prefetcher follows poorly.
NNX_TARGET_AVX2_FMA inline void widen_bf16_rows(const KvRows& src, std::int64_t rows, std::int64_t D, float* dst,
                                                std::int64_t prefetch_rows) noexcept {
  const std::int64_t full = D / 8 * 8, row_bytes = D * 2;
  const auto* x = static_cast<const std::uint16_t*>(src.data);
  for (std::int64_t j = 0; j < rows; ++j) {
    if (j + kKeyBlock < prefetch_rows)
      for (std::int64_t b = 0; b < row_bytes; b += 64)
        _mm_prefetch(reinterpret_cast<const char*>(x + (j + kKeyBlock) * src.stride) + b, _MM_HINT_T0);
    const std::uint16_t* row = x + j * src.stride;
    float* o = dst + j * D;
    std::int64_t d = 0;
    for (; d < full; d += 8) {
      const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + d)));
      _mm256_storeu_ps(o + d, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; d < D; ++d) o[d] = src.value(j, d);
  }
}

// The online softmax's step for one query head over a block's scores pg[0, jn): the running
// maximum m and sum l updated, pg replaced by the exponentials p_j = exp(s_j - m'); returns
// c = exp(m - m'), by which the output is rescaled.
NNX_TARGET_AVX2_FMA inline float softmax_step(float* pg, std::int64_t jn, float& m, float& l) noexcept {
  const std::int64_t jfull = jn / 8 * 8;
  const __m256i j_tail = lane_mask(jn - jfull);
  __m256 mx = _mm256_set1_ps(m), bad = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < jn; j += 8) {
    const __m256i mask = j < jfull ? lane_mask(8) : j_tail;
    // Masked-off lanes read as -inf: they change neither the maximum nor the sum.
    const __m256 sv = _mm256_blendv_ps(_mm256_set1_ps(-std::numeric_limits<float>::infinity()),
                                       _mm256_maskload_ps(pg + j, mask), _mm256_castsi256_ps(mask));
    mx = _mm256_max_ps(sv, mx);
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(sv, sv, _CMP_UNORD_Q));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, mx);
  float mnew = lanes[0];
  for (int i = 1; i < 8; ++i) mnew = lanes[i] > mnew ? lanes[i] : mnew;
  const bool nan = _mm256_movemask_ps(bad) != 0;
  const float c = std::exp(m - mnew);  // 0 for the first block (m = -inf)
  const __m256 vm = _mm256_set1_ps(mnew);
  __m256 sum = _mm256_setzero_ps();
  for (std::int64_t j = 0; j < jn; j += 8) {
    const __m256i mask = j < jfull ? lane_mask(8) : j_tail;
    __m256 e = _mm256_and_ps(exp_nonpositive(_mm256_sub_ps(_mm256_maskload_ps(pg + j, mask), vm)),
                             _mm256_castsi256_ps(mask));
    if (nan) e = _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN());
    store_lanes(pg + j, e, jn - j);
    sum = _mm256_add_ps(sum, e);
  }
  l = rescaled_sum(l, c, hsum(sum));
  m = mnew;
  return c;
}

// One block of keys [0, jn) (rows kv_stride elements apart, f32 or bf16 bits) for gn <=
// kAttnMaxGroup query heads of one KV head: their running maxima m, sums l and unnormalized
// outputs out + g * out_stride updated as ref's order states per block. Key and value rows
// below `prefetch_rows` (0: none) are prefetched kPrefetchKeys ahead.
template <class E>
NNX_TARGET_AVX2_FMA inline void attend_block(const float* q, std::int64_t q_stride, std::int64_t gn, const E* keys,
                                             const E* values, std::int64_t kv_stride, std::int64_t jn,
                                             std::int64_t prefetch_rows, std::int64_t D, float scale, float* out,
                                             std::int64_t out_stride, float* m, float* l) noexcept {
  alignas(32) float p[ref::kAttnMaxGroup][kKeyBlock];
  const __m256i d_tail = lane_mask(D - D / 8 * 8);
  const std::int64_t row_bytes = D * static_cast<std::int64_t>(sizeof(E));
  for (std::int64_t j = 0; j < jn; j += 8) {
    const E* rows[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) rows[i] = keys + std::min<std::int64_t>(j + i, jn - 1) * kv_stride;
    for (std::int64_t i = j + kPrefetchKeys; i < j + kPrefetchKeys + 8 && i < prefetch_rows; ++i)
      prefetch_row(keys, i, kv_stride, row_bytes);
    for (std::int64_t g = 0; g < gn; ++g) _mm256_store_ps(p[g] + j, scores8(q + g * q_stride, rows, D, d_tail, scale));
  }
  for (std::int64_t g = 0; g < gn; ++g) {
    float* pg = p[g];
    const float c = softmax_step(pg, jn, m[g], l[g]);
    // o = o c + sum_j p_j v_j: 64 output floats in registers at a time, then 8. The group's
    // first head prefetches the value rows; the others find them in cache.
    float* og = out + g * out_stride;
    std::int64_t d = 0;
    for (; d + 64 <= D; d += 64)
      weighted_values64(og + d, c, pg, values + d, kv_stride, jn, g == 0 && d == 0 ? prefetch_rows : 0, row_bytes);
    const __m256 vc = _mm256_set1_ps(c);
    for (; d < D; d += 8) {
      __m256 o0 = _mm256_mul_ps(load_lanes(og + d, D - d), vc);
      for (std::int64_t j = 0; j < jn; ++j)
        o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pg + j), load8_partial(values + j * kv_stride + d, D - d), o0);
      store_lanes(og + d, o0, D - d);
    }
  }
}

// The value pass of attend_rows and attend_rows_i8: out + f * out_stride += p_fj v_j[f * D,
// (f + 1) * D) for value rows j < jn (rows `stride` elements apart) and heads f < H, one FMA
// per output float, rows in order (p_fj = p[f * kKeyBlock + j]). Each output vector is loaded
// and stored once per row (in L1), so that the rows are read front to back. Two or four rows
// per pass over the outputs read slower from DRAM (f32, 8 slots x 288 positions: 16-19 against
// 13-16 ms); prefetching the block's value rows during the key pass, then reading them head by
// head with the outputs in registers, was faster alone but slower inside a model step
// (Llama-162M W8A8, 8 slots: 22.3 against 18.5 ms). DC: D known at compile time (a multiple of
// 8: the loop over d unrolls), or 0 for any D.
template <std::int64_t DC, class E>
NNX_TARGET_AVX2_FMA inline void add_weighted_rows_d(const E* values, std::int64_t stride, std::int64_t jn,
                                                    std::int64_t H, const float* p, std::int64_t D, float* out,
                                                    std::int64_t out_stride) noexcept {
  const std::int64_t full = (DC > 0 ? DC : D) / 8 * 8;
  for (std::int64_t j = 0; j < jn; ++j) {
    const E* row = values + j * stride;
    for (std::int64_t f = 0; f < H; ++f) {
      const __m256 pj = _mm256_broadcast_ss(p + f * kKeyBlock + j);
      const E* v = row + f * D;
      float* o = out + f * out_stride;
#pragma GCC unroll 16
      for (std::int64_t d = 0; d < full; d += 8)
        _mm256_storeu_ps(o + d, _mm256_fmadd_ps(pj, load8(v + d), _mm256_loadu_ps(o + d)));
      if constexpr (DC == 0) {
        const std::int64_t r = D - full;
        if (r > 0) store_lanes(o + full, _mm256_fmadd_ps(pj, load8_partial(v + full, r), load_lanes(o + full, r)), r);
      }
    }
  }
}
template <class E>
NNX_TARGET_AVX2_FMA inline void add_weighted_rows(const E* values, std::int64_t stride, std::int64_t jn,
                                                  std::int64_t H, const float* p, std::int64_t D, float* out,
                                                  std::int64_t out_stride) noexcept {
  switch (D) {  // the common head sizes unrolled: a runtime loop's counter was ~10 % of the i8 kernel
    case 64: return add_weighted_rows_d<64>(values, stride, jn, H, p, D, out, out_stride);
    case 128: return add_weighted_rows_d<128>(values, stride, jn, H, p, D, out, out_stride);
    default: return add_weighted_rows_d<0>(values, stride, jn, H, p, D, out, out_stride);
  }
}

// One block of rows [0, jn) (kv_stride elements apart, f32 or bf16 bits) for the H heads of
// one query row of an MHA decode (query head f reads KV head f, D elements into a row):
// running maxima m, sums l and unnormalized outputs out + f * out_stride updated, with
// attend_block's arithmetic for every score and output float, hence its bits. The order of
// reads differs: each cache row is read front to back for all heads at once (scores of 8
// (head, row) pairs at a time into p [H][kKeyBlock]; then each head's softmax step; then every
// head's output from each value row in turn, the outputs in L1), where attend_block reads a
// head's strided slice of 64 rows, then the next head's. Measured on a Zen 4 EPYC, 8 slots x 288
// positions, 12 heads of 64, caches from DRAM: head after head read f32 rows at 10-12 GB/s
// of a 24-25 GB/s stream rate (the hardware prefetcher follows 256-byte slices 3 KiB apart
// poorly, and software prefetches of the next block did not help); row after row, see
// benchmarks/RESULTS.md.
template <class E>
NNX_TARGET_AVX2_FMA inline void attend_rows(const float* q, std::int64_t q_stride, std::int64_t H, const E* keys,
                                            const E* values, std::int64_t kv_stride, std::int64_t jn, std::int64_t D,
                                            float scale, float* out, std::int64_t out_stride, float* m, float* l,
                                            float* p) noexcept {
  const __m256i d_tail = lane_mask(D - D / 8 * 8);
  for (std::int64_t j = 0; j < jn; ++j) {
    const E* row = keys + j * kv_stride;
    for (std::int64_t f = 0; f < H; f += 8) {
      const float* qs[8];
      const E* rows[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        const std::int64_t g = std::min<std::int64_t>(f + i, H - 1);  // past H: in range, not computed
        qs[i] = q + g * q_stride;
        rows[i] = row + g * D;
      }
      alignas(32) float s[8];
      with_pair_width(H - f, [&](auto w) NNX_TARGET_AVX2_FMA {
        _mm256_store_ps(s, scores8_pairs<E, w>(qs, rows, D, d_tail, scale));
      });
      for (std::int64_t i = 0; i < 8 && f + i < H; ++i) p[(f + i) * kKeyBlock + j] = s[i];
    }
  }
  for (std::int64_t f = 0; f < H; ++f) {
    const __m256 c = _mm256_set1_ps(softmax_step(p + f * kKeyBlock, jn, m[f], l[f]));
    float* o = out + f * out_stride;
    for (std::int64_t d = 0; d < D; d += 8) store_lanes(o + d, _mm256_mul_ps(load_lanes(o + d, D - d), c), D - d);
  }
  add_weighted_rows(values, kv_stride, jn, H, p, D, out, out_stride);
}

// Scores of 8 i8 keys rows[i] (rows may repeat: padding) against the int16 query q16, as
// ref::attend_group_i8 computes them: exact integer dot products (16 products per vpmaddwd),
// then (float(dot) * key_scale[i]) * qscale.
NNX_TARGET_AVX2_FMA inline __m256 scores8_i8(const std::int16_t* q16, const std::int8_t* const (&rows)[8],
                                             const float (&key_scale)[8], std::int64_t D, float qscale) noexcept {
  __m256i a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_si256();
  const std::int64_t full = D / 16 * 16;
  for (std::int64_t d = 0; d < full; d += 16) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q16 + d));
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const __m256i k = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[i] + d)));
      a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(qv, k));
    }
  }
  __m256i dots = hsum8_epi32(a);
  if (full < D) {
    alignas(32) std::int32_t t[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(t), dots);
    for (int i = 0; i < 8; ++i)
      for (std::int64_t d = full; d < D; ++d) t[i] += std::int32_t{q16[d]} * rows[i][d];
    dots = _mm256_load_si256(reinterpret_cast<const __m256i*>(t));
  }
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dots), _mm256_loadu_ps(key_scale)), _mm256_set1_ps(qscale));
}

// The cache lines of an i8 row of D bytes into L1 (kToL1) or L2 ahead of use (its last byte's
// line too, for rows that do not start on a line).
template <bool kToL1 = true>
NNX_TARGET_AVX2_FMA inline void prefetch_i8_row(const std::int8_t* p, std::int64_t D) noexcept {
  const auto* c = reinterpret_cast<const char*>(p);
  const auto fetch = [](const char* line) noexcept {
    if constexpr (kToL1)
      prefetch_l1(line);
    else
      prefetch_l2(line);
  };
  fetch(c);
  for (std::int64_t b = 64; b < D; b += 64) fetch(c + b);
  fetch(c + D - 1);
}
// The i8 rows [0, rows) of one KV head that the next call of attend_block_i8 reads, fetched
// during this one, and with them their scales where they start a block (a block's scales are
// read by its first head, then are in cache). Between two calls lie ~0.4 us of work: the
// lines arrive in time, where a call's own look-ahead left each block's first rows, and the
// first head's scales, to wait on DRAM.
struct I8Prefetch {
  const std::int8_t* keys = nullptr;
  const std::int8_t* values = nullptr;
  const float* key_scales = nullptr;  // null: the scales are in cache already
  const float* value_scales = nullptr;
  std::int64_t rows = 0;
};

// What attend_block_i8 prefetches as it reaches keys [j, j + 8) of its block: its own rows
// kPrefetchKeys ahead while below prefetch_rows, and `next`'s rows [j, j + 8).
NNX_TARGET_AVX2_FMA inline void prefetch_i8_rows(const KvRows& keys, const KvRows& values, std::int64_t j,
                                                 std::int64_t prefetch_rows, const I8Prefetch& next,
                                                 std::int64_t D) noexcept {
  const auto* k8 = static_cast<const std::int8_t*>(keys.data);
  const auto* v8 = static_cast<const std::int8_t*>(values.data);
  for (std::int64_t i = j + kPrefetchKeys; i < j + kPrefetchKeys + 8 && i < prefetch_rows; ++i) {
    prefetch_i8_row(k8 + i * keys.stride, D);
    prefetch_i8_row(v8 + i * values.stride, D);
  }
  for (std::int64_t i = j; i < j + 8 && i < next.rows; ++i) {
    prefetch_i8_row(next.keys + i * keys.stride, D);
    prefetch_i8_row(next.values + i * values.stride, D);
    if (next.key_scales) {
      prefetch_l1(next.key_scales + i * keys.scale_stride);
      prefetch_l1(next.value_scales + i * values.scale_stride);
    }
  }
}

// One block of i8 keys and values [0, jn) for gn <= kAttnMaxGroup query heads of one KV head,
// read as stored (ref::attend_group_i8's order; the values' FMA chains as attend_block's, on
// p_j * sv_j and the int8 values converted in registers). Query head g is q16 + g * D
// (quantize_query_i16, done once per pass) with scale qscale[g] (its own times the softmax
// scale). Rows below prefetch_rows are prefetched kPrefetchKeys ahead, and `next`'s rows
// while this block's are read.
NNX_TARGET_AVX2_FMA inline void attend_block_i8(const std::int16_t* q16, const float* qscale, std::int64_t gn,
                                                const KvRows& keys, const KvRows& values, std::int64_t jn,
                                                std::int64_t prefetch_rows, const I8Prefetch& next, std::int64_t D,
                                                float* out, std::int64_t out_stride, float* m, float* l) noexcept {
  alignas(32) float p[ref::kAttnMaxGroup][kKeyBlock];
  const auto* k8 = static_cast<const std::int8_t*>(keys.data);
  const auto* v8 = static_cast<const std::int8_t*>(values.data);
  for (std::int64_t j = 0; j < jn; j += 8) {
    const std::int8_t* rows[8];
    float key_scale[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const std::int64_t r = std::min<std::int64_t>(j + i, jn - 1);
      rows[i] = k8 + r * keys.stride;
      key_scale[i] = keys.scales[r * keys.scale_stride];
    }
    prefetch_i8_rows(keys, values, j, prefetch_rows, next, D);
    for (std::int64_t g = 0; g < gn; ++g)
      _mm256_store_ps(p[g] + j, scores8_i8(q16 + g * D, rows, key_scale, D, qscale[g]));
  }
  const std::int64_t full = D / 8 * 8;
  for (std::int64_t g = 0; g < gn; ++g) {
    float* pg = p[g];
    const float c = softmax_step(pg, jn, m[g], l[g]);
    for (std::int64_t j = 0; j < jn; ++j) pg[j] *= values.scales[j * values.scale_stride];
    // o = o c + sum_j (p_j sv_j) v_j: 64 output floats in registers at a time, then 8, then
    // single floats (an int8 row's tail is not read past its end).
    float* og = out + g * out_stride;
    std::int64_t d = 0;
    const __m256 vc = _mm256_set1_ps(c);
    for (; d + 64 <= D; d += 64) {
      __m256 acc[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_mul_ps(_mm256_loadu_ps(og + d + 8 * i), vc);
      for (std::int64_t j = 0; j < jn; ++j) {
        const std::int8_t* v = v8 + j * values.stride + d;
        const __m256 pj = _mm256_broadcast_ss(pg + j);
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          const __m256i x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + 8 * i)));
          acc[i] = _mm256_fmadd_ps(pj, _mm256_cvtepi32_ps(x), acc[i]);
        }
      }
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) _mm256_storeu_ps(og + d + 8 * i, acc[i]);
    }
    for (; d < full; d += 8) {
      __m256 o0 = _mm256_mul_ps(_mm256_loadu_ps(og + d), vc);
      for (std::int64_t j = 0; j < jn; ++j) {
        const auto* v = reinterpret_cast<const __m128i*>(v8 + j * values.stride + d);
        const __m256i x = _mm256_cvtepi8_epi32(_mm_loadl_epi64(v));
        o0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pg + j), _mm256_cvtepi32_ps(x), o0);
      }
      _mm256_storeu_ps(og + d, o0);
    }
    for (; d < D; ++d) {
      float o = og[d] * c;
      for (std::int64_t j = 0; j < jn; ++j) o = std::fma(pg[j], static_cast<float>(v8[j * values.stride + d]), o);
      og[d] = o;
    }
  }
}

// Scores of the pairs (query head g[i], key head g[i] of the i8 cache row `row`), i < W (lanes
// from W on are 0): exact integer dot products of the int16 query q16 + g[i] * D with the
// widened key, then (float(dot) * key_scale[i]) * query_scale[i], attend_block_i8's rounding.
template <int W>
NNX_TARGET_AVX2_FMA inline __m256 scores8_i8_pairs(const std::int16_t* q16, const std::int8_t* row,
                                                   const std::int64_t (&g)[8], const float (&key_scale)[8],
                                                   const float (&query_scale)[8], std::int64_t D) noexcept {
  __m256i a[8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) a[i] = _mm256_setzero_si256();
  const std::int64_t full16 = D / 16 * 16;
  for (std::int64_t d = 0; d < full16; d += 16) {
#pragma GCC unroll 8
    for (int i = 0; i < W; ++i) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q16 + g[i] * D + d));
      const __m256i kv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + g[i] * D + d)));
      a[i] = _mm256_add_epi32(a[i], _mm256_madd_epi16(qv, kv));
    }
  }
  alignas(32) std::int32_t dots[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(dots), hsum8_epi32(a));
  if (full16 < D)
    for (int i = 0; i < W; ++i)
      for (std::int64_t d = full16; d < D; ++d) dots[i] += std::int32_t{q16[g[i] * D + d]} * row[g[i] * D + d];
  const __m256 dot = _mm256_cvtepi32_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(dots)));
  return _mm256_mul_ps(_mm256_mul_ps(dot, _mm256_loadu_ps(key_scale)), _mm256_loadu_ps(query_scale));
}

// attend_rows over i8 rows read as stored, with attend_block_i8's arithmetic (hence its
// bits and the avx512 block kernel's): exact integer scores of 8 (head, row) pairs at a time
// against the pass's int16 queries q16 + f * D with scales qscale[f], then each head's softmax
// step and p_j sv_j, then every head's output from each value row in turn. From DRAM (8 slots x
// 288 positions, 16 layers, Zen 4): 6.2-8.4 ms head after head, 4.6-5.0 ms row after row.
// While the keys are read, the key row (and scales) kPrefetchKeys ahead come into L1 if below
// prefetch_rows, and each value row (and scales) into L2 for the value pass: the kernel spends
// more time computing than a row takes to arrive, so the hardware prefetcher alone left it
// waiting (Xeon, 8 slots x 288 positions, 16 layers: 8.5-9.1 -> 4.7-5.3 ms; a Llama-162M
// int8-KV step of 8 slots 20.1-21.0 -> 18.3-18.7 ms). f32 and bf16 rows gained nothing so.
NNX_TARGET_AVX2_FMA inline void attend_rows_i8(const std::int16_t* q16, const float* qscale, std::int64_t H,
                                               const KvRows& keys, const KvRows& values, std::int64_t jn,
                                               std::int64_t prefetch_rows, std::int64_t D, float* out,
                                               std::int64_t out_stride, float* m, float* l, float* p) noexcept {
  const auto* k8 = static_cast<const std::int8_t*>(keys.data);
  const auto* v8 = static_cast<const std::int8_t*>(values.data);
  for (std::int64_t j = 0; j < jn; ++j) {
    const std::int8_t* row = k8 + j * keys.stride;
    const float* row_scales = keys.scales + j * keys.scale_stride;
    if (j + kPrefetchKeys < prefetch_rows) {
      prefetch_i8_row(row + kPrefetchKeys * keys.stride, H * D);
      prefetch_l1(row_scales + kPrefetchKeys * keys.scale_stride);
    }
    prefetch_i8_row<false>(v8 + j * values.stride, H * D);
    prefetch_l2(values.scales + j * values.scale_stride);
    for (std::int64_t f = 0; f < H; f += 8) {
      std::int64_t g[8];
      alignas(32) float key_scale[8], query_scale[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        g[i] = std::min<std::int64_t>(f + i, H - 1);  // past H: in range, not computed
        key_scale[i] = row_scales[g[i]];
        query_scale[i] = qscale[g[i]];
      }
      alignas(32) float s[8];
      with_pair_width(H - f, [&](auto w) NNX_TARGET_AVX2_FMA {
        _mm256_store_ps(s, scores8_i8_pairs<w>(q16, row, g, key_scale, query_scale, D));
      });
      for (std::int64_t i = 0; i < 8 && f + i < H; ++i) p[(f + i) * kKeyBlock + j] = s[i];
    }
  }
  for (std::int64_t f = 0; f < H; ++f) {
    float* pf = p + f * kKeyBlock;
    const __m256 c = _mm256_set1_ps(softmax_step(pf, jn, m[f], l[f]));
    for (std::int64_t j = 0; j < jn; ++j) pf[j] *= values.scales[j * values.scale_stride + f];
    float* o = out + f * out_stride;
    for (std::int64_t d = 0; d < D; d += 8) store_lanes(o + d, _mm256_mul_ps(load_lanes(o + d, D - d), c), D - d);
  }
  add_weighted_rows(v8, values.stride, jn, H, p, D, out, out_stride);
}

}  // namespace detail::attn

// R query rows, each with the G query heads of each of Hk KV heads, row r over keys
// [0, n[r]) with an online softmax; the contract of ref::attend. Blocks of kKeyBlock keys
// are taken for every head and row of a pass before the next block. Within a block: the
// scores of eight keys at a time, each an 8-lane FMA chain over d summed by hsum8's tree (a
// partial group of keys is padded with the block's last key, so a key's score does not depend
// on where group boundaries fall); the exponentials are exp_nonpositive (2 ulp), their sum 8
// lanes then hsum; each output float one FMA chain over j. Key and value rows are prefetched
// kPrefetchKeys ahead by a pass's first row. bf16 rows are widened exactly in registers where
// one row reads a block (decoding), and where several do (a prefill, D <= kMaxCompactHeadDim)
// widened a block of one head at a time into one copy they all read (widen_bf16_rows): either
// way the bits are those of f32 rows holding the widened values. i8 rows are read as stored (attend_block_i8): scores by
// vpmaddwd against the query in int16, values converted in registers.
//
// The driver is shared with the avx512 tier, which passes its own i8 block kernel (the same
// bits, 512 bits wide); attend below runs it with attend_block_i8.
namespace detail::attn {

using AttendBlockI8 = void (*)(const std::int16_t* q16, const float* qscale, std::int64_t gn, const KvRows& keys,
                               const KvRows& values, std::int64_t jn, std::int64_t prefetch_rows,
                               const I8Prefetch& next, std::int64_t D, float* out, std::int64_t out_stride, float* m,
                               float* l) noexcept;

template <AttendBlockI8 BlockI8>
NNX_TARGET_AVX2_FMA inline void attend_with(const float* q, std::int64_t q_row_stride, std::int64_t q_stride,
                                            std::int64_t R, const std::int64_t* n, std::int64_t G, std::int64_t Hk,
                                            const KvRows& keys, const KvRows& values, std::int64_t D, float scale,
                                            float* out, std::int64_t out_row_stride,
                                            std::int64_t out_stride) noexcept {
  namespace a = detail::attn;
  const std::int64_t kv_stride = keys.stride;
  const std::int64_t H = G * Hk;
  const std::int64_t heads_per_pass = std::min(H, a::kStatesPerPass);
  const std::int64_t rows_per_pass = std::max<std::int64_t>(1, a::kStatesPerPass / H);
  float m[a::kStatesPerPass], l[a::kStatesPerPass], qscale[a::kStatesPerPass];
  // Per-thread scratch: f32 copies of a block of one head's keys and values, or (i8 caches)
  // the pass's queries in int16.
  alignas(64) static thread_local union {
    float packed[2][a::kKeyBlock * kMaxCompactHeadDim];
    std::int16_t q16[a::kStatesPerPass * kMaxCompactHeadDim];
  } scratch;
  alignas(64) static thread_local float scores[a::kStatesPerPass * a::kKeyBlock];  // attend_rows's block
  std::int16_t* const q16 = scratch.q16;
  for (std::int64_t r0 = 0; r0 < R; r0 += rows_per_pass) {
    const std::int64_t r1 = std::min(R, r0 + rows_per_pass);
    std::int64_t n_max = 0;
    for (std::int64_t r = r0; r < r1; ++r) n_max = std::max(n_max, n[r]);
    for (std::int64_t f0 = 0; f0 < H; f0 += heads_per_pass) {
      const std::int64_t f1 = std::min(H, f0 + heads_per_pass);
      const auto state = [&](std::int64_t r, std::int64_t f) { return (r - r0) * heads_per_pass + (f - f0); };
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t f = f0; f < f1; ++f) {
          m[state(r, f)] = -std::numeric_limits<float>::infinity();
          l[state(r, f)] = 0.0f;
          std::fill_n(out + r * out_row_stride + f * out_stride, D, 0.0f);
          // i8 keys: each query in int16 once for all blocks (it was once per block: 9 % of a
          // decode's attention).
          if (keys.type == KvType::i8)
            qscale[state(r, f)] =
                ref::quantize_query_i16(q + r * q_row_stride + f * q_stride, D, q16 + state(r, f) * D) * scale;
        }
      for (std::int64_t j0 = 0; j0 < n_max; j0 += a::kKeyBlock) {
        if (G == 1) {
          // One row reads this block (an MHA decode): every head of the pass at once, row by
          // row. (A GQA group shares each key it loads instead, and its rows are shorter:
          // attend_rows measured up to 2x slower there.)
          const std::int64_t* first_reader = std::find_if(n + r0, n + r1, [&](std::int64_t nr) { return j0 < nr; });
          const std::int64_t r = first_reader - n;
          if (std::find_if(first_reader + 1, n + r1, [&](std::int64_t nr) { return j0 < nr; }) == n + r1) {
            const std::int64_t jn = std::min(a::kKeyBlock, n[r] - j0);
            const std::int64_t h = f0;  // G == 1
            float* const o = out + r * out_row_stride + f0 * out_stride;
            const float* const qr = q + r * q_row_stride + f0 * q_stride;
            if (keys.type == KvType::i8)
              a::attend_rows_i8(q16 + state(r, f0) * D, qscale + state(r, f0), f1 - f0, keys.at(j0, h, D),
                                values.at(j0, h, D), jn, n[r] - j0, D, o, out_stride, m + state(r, f0),
                                l + state(r, f0), scores);
            else if (keys.type == KvType::f32)
              a::attend_rows(qr, q_stride, f1 - f0, static_cast<const float*>(keys.at(j0, h, D).data),
                             static_cast<const float*>(values.at(j0, h, D).data), kv_stride, jn, D, scale, o,
                             out_stride, m + state(r, f0), l + state(r, f0), scores);
            else
              a::attend_rows(qr, q_stride, f1 - f0, static_cast<const std::uint16_t*>(keys.at(j0, h, D).data),
                             static_cast<const std::uint16_t*>(values.at(j0, h, D).data), kv_stride, jn, D, scale, o,
                             out_stride, m + state(r, f0), l + state(r, f0), scores);
            continue;
          }
        }
        // Runs of query heads that share a KV head, at most kAttnMaxGroup at a time.
        for (std::int64_t f = f0; f < f1;) {
          const std::int64_t h = f / G;
          const std::int64_t fe = std::min({f1, (h + 1) * G, f + ref::kAttnMaxGroup});
          // Rows that read this block, and the keys the longest of them reads.
          std::int64_t readers = 0, jmax = 0;
          for (std::int64_t r = r0; r < r1; ++r)
            if (j0 < n[r]) {
              ++readers;
              jmax = std::max(jmax, std::min(a::kKeyBlock, n[r] - j0));
            }
          if (keys.type == KvType::i8) {  // read as stored, no copy
            // The next call's rows: the next KV head's part of this block, else the pass's
            // first head's part of the next block.
            a::I8Prefetch next;
            if (fe < f1 && fe / G != h) {
              next = {static_cast<const std::int8_t*>(keys.at(j0, fe / G, D).data),
                      static_cast<const std::int8_t*>(values.at(j0, fe / G, D).data), nullptr, nullptr, jmax};
            } else if (fe == f1 && j0 + a::kKeyBlock < n_max) {
              const KvRows nk = keys.at(j0 + a::kKeyBlock, f0 / G, D), nv = values.at(j0 + a::kKeyBlock, f0 / G, D);
              next = {static_cast<const std::int8_t*>(nk.data), static_cast<const std::int8_t*>(nv.data),
                      nk.scales, nv.scales, std::min(a::kKeyBlock, n_max - j0 - a::kKeyBlock)};
            }
            // Only the pass's first call runs without its rows fetched ahead.
            std::int64_t prefetch = j0 == 0 && f == f0 ? n_max : 0;
            for (std::int64_t r = r0; r < r1; ++r) {
              if (j0 >= n[r]) continue;
              BlockI8(q16 + state(r, f) * D, qscale + state(r, f), fe - f, keys.at(j0, h, D), values.at(j0, h, D),
                      std::min(a::kKeyBlock, n[r] - j0), prefetch, next, D, out + r * out_row_stride + f * out_stride,
                      out_stride, m + state(r, f), l + state(r, f));
              prefetch = 0;
              next.rows = 0;  // the first row's prefetches serve the others
            }
            f = fe;
            continue;
          }
          auto& packed = scratch.packed;
          const float* block_keys = packed[0];
          const float* block_values = packed[1];
          std::int64_t stride = D, prefetch = 0;
          if (keys.type == KvType::bf16 && readers == 1) {  // a decode row: read in place, widened in registers
            const std::int64_t r = std::find_if(n + r0, n + r1, [&](std::int64_t nr) { return j0 < nr; }) - n;
            a::attend_block(q + r * q_row_stride + f * q_stride, q_stride, fe - f,
                            static_cast<const std::uint16_t*>(keys.at(j0, h, D).data),
                            static_cast<const std::uint16_t*>(values.at(j0, h, D).data), kv_stride,
                            std::min(a::kKeyBlock, n[r] - j0), n_max - j0, D, scale,
                            out + r * out_row_stride + f * out_stride, out_stride, m + state(r, f), l + state(r, f));
            f = fe;
            continue;
          }
          if (keys.type == KvType::bf16) {  // rows that share the block read one widened copy
            a::widen_bf16_rows(keys.at(j0, h, D), jmax, D, packed[0], n_max - j0);
            a::widen_bf16_rows(values.at(j0, h, D), jmax, D, packed[1], n_max - j0);
          } else {
            const std::int64_t kv = j0 * kv_stride + h * D;
            block_keys = static_cast<const float*>(keys.data) + kv;
            block_values = static_cast<const float*>(values.data) + kv;
            if (readers > 1 && D <= a::kMaxPackedD) {
              a::pack_rows(block_keys, kv_stride, jmax, D, packed[0]);
              a::pack_rows(block_values, kv_stride, jmax, D, packed[1]);
              block_keys = packed[0];
              block_values = packed[1];
            } else {
              stride = kv_stride;
              prefetch = n_max - j0;
            }
          }
          for (std::int64_t r = r0; r < r1; ++r) {
            if (j0 >= n[r]) continue;
            const std::int64_t jn = std::min(a::kKeyBlock, n[r] - j0);
            a::attend_block(q + r * q_row_stride + f * q_stride, q_stride, fe - f, block_keys, block_values, stride, jn,
                            prefetch, D, scale, out + r * out_row_stride + f * out_stride, out_stride, m + state(r, f),
                            l + state(r, f));
            prefetch = 0;  // the first row's prefetches serve the others
          }
          f = fe;
        }
      }
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t f = f0; f < f1; ++f) {
          const __m256 inv = _mm256_set1_ps(1.0f / l[state(r, f)]);
          float* o = out + r * out_row_stride + f * out_stride;
          for (std::int64_t d = 0; d < D; d += 8)
            store_lanes(o + d, _mm256_mul_ps(load_lanes(o + d, D - d), inv), D - d);
        }
    }
  }
}

}  // namespace detail::attn

NNX_TARGET_AVX2_FMA inline void attend(const float* q, std::int64_t q_row_stride, std::int64_t q_stride,
                                       std::int64_t R, const std::int64_t* n, std::int64_t G, std::int64_t Hk,
                                       const KvRows& keys, const KvRows& values, std::int64_t D, float scale,
                                       float* out, std::int64_t out_row_stride, std::int64_t out_stride) noexcept {
  detail::attn::attend_with<&detail::attn::attend_block_i8>(q, q_row_stride, q_stride, R, n, G, Hk, keys, values, D,
                                                            scale, out, out_row_stride, out_stride);
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
