// nnx/kernels/avx512/attention.hpp — AVX-512 attention of the query heads of a run of KV heads
// over a run of keys: the contract of nnx/kernels/ref/attention.hpp, computed in tiles of
// (query row, query head) pairs so a prefill's rows share every load of a key or value.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/attention.hpp does). On other platforms the header declares nothing.
//
// Bit-identical to avx2 (nnx/kernels/avx2/attention.hpp): every score, maximum, exponential,
// sum and weighted sum of a (row, query head) is computed in avx2's order, so a Zen 3 and a
// Zen 5 give the same logits. What changes is how the work is laid out, in tiles of up to four
// (query row, query head) pairs per block of 64 keys:
//   scores         a register holds two keys' 8 lanes of FMA chains over d (avx2's lanes), 32
//                  scores per group reduced together in hsum8's tree (reduce_halves: 42
//                  shuffles and adds for 32 sums, where avx2's hsum8 takes 9 instructions for
//                  8); in a prefill the 4 pairs of a tile share each load of keys, from a copy
//                  of the block's rows of one head laid out in register order (in the cache
//                  they sit kv_stride apart and evict each other from L1), against queries
//                  doubled per tile and block; in a decode the pairs of consecutive KV heads share
//                  a tile, each reading its own rows
//   online softmax per pair, 16 wide, summed in avx2's 8-lane order
//   O = O c + P V  pairs x 64 output floats in registers, one FMA chain over j per float: 16
//                  independent chains where avx2 has 8
// A pair whose keys end inside the block (a causal prefill's diagonal, a decode's last block)
// shares its tile but keeps its own key count: keys past it are masked out of its softmax and
// of its weighted sum (by mask, not as 0 * v), so they never reach its bits. A pair's result
// depends on its query, its n and the keys alone: not on its tile, R, the KV heads of the call
// or the thread count. Since the bits are avx2's, the shapes where a tile has nothing to share
// (one query row of an MHA decode) and head sizes past kMaxPackedD run avx2's kernel itself.
//
// Measured (benchmarks/RESULTS.md, same run): a 512-token prefill's attention 2.1x avx2's, a
// GQA decode 1.3-1.9x, an MHA decode avx2's own.
#pragma once

#include "nnx/kernels/avx2/attention.hpp"
#include "nnx/kernels/avx512/simd.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace nnx::kernels::avx512 {

namespace detail::attn {

// The helpers of attend_tile are inlined into it (GCC outlined some once the tile had three
// variants, passing 16 registers through memory: a GQA decode ran 23 % slower); each
// attend_tile<RT, Shared, Paired> is one function.
#define NNX_ATTN_INLINE __attribute__((always_inline))

inline constexpr std::int64_t kKeyBlock = 64;  // 4 registers of probabilities per pair
inline constexpr int kTilePairs = 4;           // 4 pairs x 8 keys of scores; 4 x 4 output registers
inline constexpr std::int64_t kMaxPackedD = 256;  // a block's K and V copies: 64 KiB each
// (query row, query head) pairs whose running maximum and sum one pass over the keys keeps.
inline constexpr std::int64_t kStatesPerPass = 1024;

// The 32 eight-lane sums of a[16]'s 256-bit halves, each in avx2's hsum8 tree ((x0 + x1) +
// (x2 + x3)) + ((x4 + x5) + (x6 + x7)): out[i] lanes [4 k, 4 k + 4) are, for k = 0..3, the
// sums of the low halves of a[8 i .. 8 i + 4), their high halves, the low halves of
// a[8 i + 4 .. 8 i + 8), their high halves.
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline void reduce_halves(const __m512 (&a)[16], __m512 (&out)[2]) noexcept {
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)  // per quarter: [a2i(0+1), a2i(2+3), a2i+1(0+1), a2i+1(2+3)]
    t[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll16, a[2 * i], a[2 * i + 1], 0x88),
                         _mm512_maskz_shuffle_ps(kAll16, a[2 * i], a[2 * i + 1], 0xDD));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)  // per quarter: the quarter sums of a[4i .. 4i + 4)
    u[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll16, t[2 * i], t[2 * i + 1], 0x88),
                         _mm512_maskz_shuffle_ps(kAll16, t[2 * i], t[2 * i + 1], 0xDD));
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)  // quarters 0 + 1 (low halves) and 2 + 3 (high halves)
    out[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll16, u[2 * i], u[2 * i + 1], 0x88),
                           _mm512_maskz_shuffle_f32x4(kAll16, u[2 * i], u[2 * i + 1], 0xDD));
}

// Floats [0, 8) of lo and of hi (each masked by m8) in one register's halves.
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline __m512 load_halves(const float* lo, const float* hi, __mmask8 m8) noexcept {
  return _mm512_maskz_insertf32x8(kAll16, _mm512_maskz_loadu_ps(m8, lo), _mm256_maskz_loadu_ps(m8, hi), 1);
}

// Floats [0, 8) of x (masked by m8) in both halves.
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline __m512 broadcast_half(const float* x, __mmask8 m8) noexcept {
  return _mm512_maskz_broadcast_f32x8(kAll16, _mm256_maskz_loadu_ps(m8, x));
}

// Keys [0, rows) of a block (kv_stride apart) in the register order of tile_scores: for each
// run of 8 keys j8 and k < 4, for each 8 floats c of d, 16 floats: key j8 + k's then key
// j8 + 4 + k's (zeros past D; a key past `rows` repeats the last; runs past `rows` are not
// written, and their scores are masked). A register of two keys' lanes is then one load, not
// two and a shuffle.
NNX_TARGET_AVX512 inline void pack_keys_paired(const float* src, std::int64_t kv_stride, std::int64_t rows,
                                               std::int64_t D, float* dst) noexcept {
  const std::int64_t chunks = (D + 7) / 8;
  for (std::int64_t j8 = 0; j8 < rows; j8 += 8)
    for (std::int64_t k = 0; k < 4; ++k) {
      const float* lo = src + std::min(j8 + k, rows - 1) * kv_stride;
      const float* hi = src + std::min(j8 + 4 + k, rows - 1) * kv_stride;
      for (std::int64_t c = 0; c < chunks; ++c, dst += 16) {
        const __mmask8 m8 = static_cast<__mmask8>(lanes16(D - 8 * c));
        _mm512_store_ps(dst, load_halves(lo + 8 * c, hi + 8 * c, m8));
      }
    }
}

// Rows [0, rows) (kv_stride apart) into dst, D floats each, contiguous.
NNX_TARGET_AVX512 inline void pack_rows(const float* src, std::int64_t kv_stride, std::int64_t rows, std::int64_t D,
                                        float* dst) noexcept {
  for (std::int64_t j = 0; j < rows; ++j)
    for (std::int64_t d = 0; d < D; d += 16) {
      const __mmask16 dm = lanes16(D - d);
      _mm512_mask_storeu_ps(dst + j * D + d, dm, _mm512_maskz_loadu_ps(dm, src + j * kv_stride + d));
    }
}

// One (query row, query head) pair's running state (its query, unnormalized output, maximum
// and sum) and what it reads of the current block: keys [0, jn) of its KV head, as rows
// `stride` floats apart (or pack_keys_paired's copy), and their values; rows below `prefetch`
// (counted from the block's first) are prefetched kPrefetchKeys ahead (0: none, the rows are
// in cache or another pair prefetches them).
struct PairState {
  const float* q;
  float* o;
  float* m;
  float* l;
  const float* keys;
  const float* values;
  std::int64_t jn;
  std::int64_t prefetch;
};

// p[t][j] = scale * (q_t . k_j) for the RT pairs of a tile over keys [0, jn) of their rows, jn
// the most any of them reads (a key past it reads key jn - 1, so nothing past the rows that
// exist is read; scores past a pair's own keys are masked by softmax_step). Each score is
// avx2's: 8 lanes, lane i an FMA chain over d = i, i + 8, ..., then hsum8's tree. A register
// holds two scores' lanes (keys j and j + 4 of one pair in its halves), so a group is 32
// scores, four runs of 8 consecutive keys: 32 / RT keys of each pair. Shared: every pair reads
// pairs[0]'s rows (one KV head), so a key's load serves them all. Paired: the keys are
// pack_keys_paired's copy (Shared).
template <int RT, bool Shared, bool Paired>
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline void tile_scores(const PairState* pairs, std::int64_t stride, std::int64_t jn,
                                                          std::int64_t D, float scale,
                                                          float (*p)[kKeyBlock]) noexcept {
  static_assert(Shared || !Paired);
  constexpr int kRunsPerPair = 4 / RT, KJ = 8 * kRunsPerPair;
  const std::int64_t chunks = (D + 7) / 8;
  // The register of keys k and k + 4 of run rr of the group at j0, 8 floats c of d.
  const auto paired_keys = [&](std::int64_t j0, int rr, int k, std::int64_t c) {
    return pairs[0].keys + (((j0 / 8 + rr) * 4 + k) * chunks + c) * 16;
  };
  namespace a2 = avx2::detail::attn;
  const std::int64_t row_bytes = D * static_cast<std::int64_t>(sizeof(float));
  const __m512 vscale = _mm512_set1_ps(scale);
  // Paired: each pair's query with every 8 floats doubled, as registers of two keys' lanes meet
  // it (a decode's GQA tile, which reads its block once, does better broadcasting as it goes).
  alignas(64) float q2[Paired && RT > 1 ? RT : 1][Paired && RT > 1 ? 2 * kMaxPackedD : 1];
  if constexpr (Paired && RT > 1)
    for (int t = 0; t < RT; ++t)
      for (std::int64_t c = 0; c < chunks; ++c)
        _mm512_store_ps(q2[t] + 16 * c, broadcast_half(pairs[t].q + 8 * c, static_cast<__mmask8>(lanes16(D - 8 * c))));
  for (std::int64_t j0 = 0; j0 < jn; j0 += KJ) {
    // Key j0 + j of the group is row off[j] / stride of each pair's keys.
    std::int64_t off[KJ];
#pragma GCC unroll 32
    for (int j = 0; j < KJ; ++j) off[j] = std::min<std::int64_t>(j0 + j, jn - 1) * stride;
#pragma GCC unroll 4
    for (int t = 0; t < (Shared ? 1 : RT); ++t)
      for (std::int64_t j = j0 + a2::kPrefetchKeys; j < j0 + a2::kPrefetchKeys + KJ && j < pairs[t].prefetch; ++j)
        a2::prefetch_row(pairs[t].keys, j, stride, row_bytes);
    // acc[4 r + k]: run r (pair r / kRunsPerPair, keys from 8 (r % kRunsPerPair)), keys k and
    // k + 4 of the run in its halves.
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    if constexpr (Shared && RT > 1) {
      // The pairs' queries take turns with each register of keys.
      for (std::int64_t d = 0, c = 0; d < D; d += 8, ++c) {
        const __mmask8 m8 = static_cast<__mmask8>(lanes16(D - d));
        __m512 kv[4 * kRunsPerPair];
#pragma GCC unroll 8
        for (int i = 0; i < 4 * kRunsPerPair; ++i) {
          const int j = 8 * (i / 4) + i % 4;
          kv[i] = Paired ? _mm512_load_ps(paired_keys(j0, i / 4, i % 4, c))
                         : load_halves(pairs[0].keys + off[j] + d, pairs[0].keys + off[j + 4] + d, m8);
        }
#pragma GCC unroll 4
        for (int t = 0; t < RT; ++t) {
          const __m512 qv = Paired ? _mm512_load_ps(q2[t] + 16 * c) : broadcast_half(pairs[t].q + d, m8);
#pragma GCC unroll 8
          for (int i = 0; i < 4 * kRunsPerPair; ++i)
            acc[4 * kRunsPerPair * t + i] = _mm512_fmadd_ps(qv, kv[i], acc[4 * kRunsPerPair * t + i]);
        }
      }
    } else {
      // Each run's keys in turn against its pair's query, 64 floats of which stay in registers
      // (32 row pointers live at once would spill).
      for (std::int64_t d0 = 0; d0 < D; d0 += 64) {
        __m512 qv[8];
        __mmask8 m8[8];
#pragma GCC unroll 4
        for (int r = 0; r < 4; ++r) {
          const PairState& pair = pairs[r / kRunsPerPair];
          if (r % kRunsPerPair == 0)
#pragma GCC unroll 8
            for (int c = 0; c < 8; ++c) {
              m8[c] = static_cast<__mmask8>(lanes16(D - d0 - 8 * c));
              qv[c] = broadcast_half(pair.q + d0 + 8 * c, m8[c]);
            }
#pragma GCC unroll 4
          for (int k = 0; k < 4; ++k) {
            const int j = 8 * (r % kRunsPerPair) + k;
            const float* lo = pair.keys + off[j] + d0;
            const float* hi = pair.keys + off[j + 4] + d0;
#pragma GCC unroll 8
            for (int c = 0; c < 8; ++c)
              if (d0 + 8 * c < D) {
                const __m512 kv = Paired ? _mm512_load_ps(paired_keys(j0, r % kRunsPerPair, k, d0 / 8 + c))
                                         : load_halves(lo + 8 * c, hi + 8 * c, m8[c]);
                acc[4 * r + k] = _mm512_fmadd_ps(qv[c], kv, acc[4 * r + k]);
              }
          }
        }
      }
    }
    __m512 s[2];
    reduce_halves(acc, s);
    // s[i] halves: runs 2 i and 2 i + 1, 8 consecutive keys each (the extract's half is an
    // immediate, so spelled out: a Debug build does not unroll a loop into constants).
    const auto run = [&](int r) { return p[r / kRunsPerPair] + j0 + 8 * (r % kRunsPerPair); };
    const __m512 s01 = _mm512_mul_ps(s[0], vscale), s23 = _mm512_mul_ps(s[1], vscale);
    _mm256_store_ps(run(0), _mm512_maskz_extractf32x8_ps(0xFF, s01, 0));
    _mm256_store_ps(run(1), _mm512_maskz_extractf32x8_ps(0xFF, s01, 1));
    _mm256_store_ps(run(2), _mm512_maskz_extractf32x8_ps(0xFF, s23, 0));
    _mm256_store_ps(run(3), _mm512_maskz_extractf32x8_ps(0xFF, s23, 1));
  }
}

// One pair's online-softmax step over its scores p[0, pair.jn) of a block: p becomes its
// probabilities (0 past jn), its maximum and sum are updated, and the factor exp(m_old - m_new)
// its output takes is returned.
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline float softmax_step(const PairState& pair, float* p) noexcept {
  const std::int64_t jn = pair.jn;
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 s[4];
  __mmask16 valid[4], nan = 0;
  __m512 mx = neg_inf;
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    valid[i] = lanes16(jn - 16 * i);
    // Keys past jn read as -inf: they change neither the maximum nor the sum.
    s[i] = _mm512_mask_loadu_ps(neg_inf, valid[i], p + 16 * i);
    nan |= _mm512_cmp_ps_mask(s[i], s[i], _CMP_UNORD_Q);
    mx = _mm512_maskz_max_ps(kAll16, s[i], mx);
  }
  const float m_old = *pair.m;
  const float m_new = std::max(m_old, hmax16(mx));
  const float c = std::exp(m_old - m_new);  // 0 for the first block (m = -inf)
  const __m512 vm = _mm512_set1_ps(m_new);
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {
    s[i] = nan ? _mm512_maskz_mov_ps(valid[i], _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()))
               : _mm512_maskz_mov_ps(valid[i], exp_nonpositive(_mm512_sub_ps(s[i], vm)));
    _mm512_store_ps(p + 16 * i, s[i]);
  }
  // avx2's sum: 8 lanes over the block's 8-key runs in order, then hsum.
  __m256 sum = _mm512_maskz_extractf32x8_ps(0xFF, s[0], 0);
  sum = _mm256_add_ps(sum, _mm512_maskz_extractf32x8_ps(0xFF, s[0], 1));
#pragma GCC unroll 3
  for (int i = 1; i < 4; ++i) {
    sum = _mm256_add_ps(sum, _mm512_maskz_extractf32x8_ps(0xFF, s[i], 0));
    sum = _mm256_add_ps(sum, _mm512_maskz_extractf32x8_ps(0xFF, s[i], 1));
  }
  *pair.l = avx2::detail::attn::rescaled_sum(*pair.l, c, avx2::hsum(sum));
  *pair.m = m_new;
  return c;
}

// O = O c + P V for the RT pairs of a tile, each over its values [0, jn), 64 output floats of
// each pair in registers at a time. Past the fewest keys of the tile, a pair whose keys have
// ended keeps its registers by mask: no value row it does not read enters its sums, not even
// as 0 * v. Shared as for tile_scores.
template <int RT, bool Shared>
NNX_TARGET_AVX512 NNX_ATTN_INLINE inline void tile_values(const PairState* pairs, const float (*p)[kKeyBlock],
                                                          const float* c, std::int64_t stride,
                                                          std::int64_t D) noexcept {
  namespace a2 = avx2::detail::attn;
  const std::int64_t row_bytes = D * static_cast<std::int64_t>(sizeof(float));
  std::int64_t jn_min = pairs[0].jn, jn_max = pairs[0].jn;
#pragma GCC unroll 4
  for (int t = 1; t < RT; ++t) {
    jn_min = std::min(jn_min, pairs[t].jn);
    jn_max = std::max(jn_max, pairs[t].jn);
  }
  for (std::int64_t d0 = 0; d0 < D; d0 += 64) {
    __mmask16 dm[4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) dm[i] = lanes16(D - d0 - 16 * i);
    __m512 acc[RT][4];
#pragma GCC unroll 4
    for (int t = 0; t < RT; ++t) {
      const __m512 ct = _mm512_set1_ps(c[t]);
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_mul_ps(_mm512_maskz_loadu_ps(dm[i], pairs[t].o + d0 + 16 * i), ct);
    }
    for (std::int64_t j = 0; j < jn_max; ++j) {
      const std::int64_t row = j * stride + d0;
      if (d0 == 0)
#pragma GCC unroll 4
        for (int t = 0; t < (Shared ? 1 : RT); ++t)
          if (j + a2::kPrefetchKeys < pairs[t].prefetch)
            a2::prefetch_row(pairs[t].values, j + a2::kPrefetchKeys, stride, row_bytes);
      __m512 vv[4];
      if constexpr (Shared)
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) vv[i] = _mm512_maskz_loadu_ps(dm[i], pairs[0].values + row + 16 * i);
#pragma GCC unroll 4
      for (int t = 0; t < RT; ++t) {
        if constexpr (!Shared)
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) vv[i] = _mm512_maskz_loadu_ps(dm[i], pairs[t].values + row + 16 * i);
        const __m512 pj = _mm512_set1_ps(p[t][j]);
        if (j < jn_min) {
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_fmadd_ps(pj, vv[i], acc[t][i]);
        } else {
          const __mmask16 reads = j < pairs[t].jn ? kAll16 : 0;
#pragma GCC unroll 4
          for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_mask3_fmadd_ps(pj, vv[i], acc[t][i], reads);
        }
      }
    }
#pragma GCC unroll 4
    for (int t = 0; t < RT; ++t)
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) _mm512_mask_storeu_ps(pairs[t].o + d0 + 16 * i, dm[i], acc[t][i]);
  }
}

// One block for a tile of RT pairs.
template <int RT, bool Shared, bool Paired>
NNX_TARGET_AVX512 inline void attend_tile(const PairState* pairs, std::int64_t stride, std::int64_t D,
                                          float scale) noexcept {
  alignas(64) float p[RT][kKeyBlock];
  float c[RT];
  std::int64_t jn = 0;
#pragma GCC unroll 4
  for (int t = 0; t < RT; ++t) jn = std::max(jn, pairs[t].jn);
  tile_scores<RT, Shared, Paired>(pairs, stride, jn, D, scale, p);
#pragma GCC unroll 4
  for (int t = 0; t < RT; ++t) c[t] = softmax_step(pairs[t], p[t]);
  tile_values<RT, Shared>(pairs, p, c, stride, D);
}

template <int RT>
NNX_TARGET_AVX512 inline void attend_tile(const PairState* pairs, bool paired, std::int64_t stride, std::int64_t D,
                                          float scale) noexcept {
  if (paired) return attend_tile<RT, true, true>(pairs, stride, D, scale);
  bool shared = true;
  for (int t = 1; t < RT; ++t) shared &= pairs[t].keys == pairs[0].keys;
  if (shared || RT == 1) return attend_tile<RT, true, false>(pairs, stride, D, scale);
  attend_tile<RT, false, false>(pairs, stride, D, scale);
}

// Up to kTilePairs pairs: tiles of 4, 2 and 1 (each pair's arithmetic is the same in all).
// Paired: their keys are pack_keys_paired's copy.
NNX_TARGET_AVX512 inline void attend_pairs(const PairState* pairs, int count, bool paired, std::int64_t stride,
                                           std::int64_t D, float scale) noexcept {
  if (count == 4) return attend_tile<4>(pairs, paired, stride, D, scale);
  if (count >= 2) {
    attend_tile<2>(pairs, paired, stride, D, scale);
    pairs += 2;
    count -= 2;
  }
  if (count == 1) attend_tile<1>(pairs, paired, stride, D, scale);
}

#undef NNX_ATTN_INLINE

// Integer scores of 8 i8 keys rows[i] against GH query heads q16 + g * D: each key widened to
// int16 once for the GH heads, 32 products per vpdpwssd; lane i of dots[g] is head g's sum for
// key i. Integer sums are exact in any order, so these are avx2's scores8_i8 sums.
template <int GH>
NNX_TARGET_AVX512 inline void dots8_i8(const std::int16_t* q16, std::int64_t D, const std::int8_t* const (&rows)[8],
                                       __m256i (&dots)[GH]) noexcept {
  __m512i a[GH][8];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    for (int g = 0; g < GH; ++g) a[g][i] = _mm512_setzero_si512();
  for (std::int64_t d = 0; d < D; d += 32) {
    // Masked loads: a tail reads neither past a row nor into the next head's query.
    const bool full = D - d >= 32;
    const __mmask32 mask = full ? ~__mmask32{0} : (__mmask32{1} << (D - d)) - 1;
    __m512i k[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      k[i] = _mm512_maskz_cvtepi8_epi16(
          mask, full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[i] + d))
                     : _mm256_maskz_loadu_epi8(mask, rows[i] + d));
    for (int g = 0; g < GH; ++g) {
      const __m512i qv = _mm512_maskz_loadu_epi16(mask, q16 + g * D + d);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) a[g][i] = _mm512_dpwssd_epi32(a[g][i], qv, k[i]);
    }
  }
  for (int g = 0; g < GH; ++g) {
    __m256i h[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      h[i] = _mm256_add_epi32(_mm512_maskz_extracti64x4_epi64(0xFF, a[g][i], 0),
                              _mm512_maskz_extracti64x4_epi64(0xFF, a[g][i], 1));
    dots[g] = avx2::hsum8_epi32(h);
  }
}

// Eight keys' scores from their integer dot products, as avx2's scores8_i8 rounds them:
// (float(dot) * key scale) * query scale.
NNX_TARGET_AVX512 inline __m256 scores_i8(__m256i dots, __m256 key_scales, float qscale) noexcept {
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(dots), key_scales), _mm256_set1_ps(qscale));
}

// o_g[0, D) = o_g c_g + sum_j p_g[j] float(v_j) for GV query heads: each output float one FMA
// chain over j ascending, as avx2's loops, so the same bits; 64 floats of every head in
// registers at a time, each value row converted once for the GV heads.
template <int GV>
NNX_TARGET_AVX512 inline void weighted_values_i8(float* const* o, const float* c, const float* const* p,
                                                 const std::int8_t* v8, std::int64_t stride, std::int64_t jn,
                                                 std::int64_t D) noexcept {
  for (std::int64_t d = 0; d < D; d += 64) {
    __mmask16 mask[4];
    __m512 acc[GV][4];
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {
      mask[i] = lanes16(D - d - 16 * i);
      for (int g = 0; g < GV; ++g)
        acc[g][i] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask[i], o[g] + d + 16 * i), _mm512_set1_ps(c[g]));
    }
    const bool full = D - d >= 64;
    for (std::int64_t j = 0; j < jn; ++j) {
      const std::int8_t* v = v8 + j * stride + d;
      __m512 x[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
        x[i] = _mm512_maskz_cvtepi32_ps(
            kAll16, _mm512_maskz_cvtepi8_epi32(kAll16, full ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(v + 16 * i))
                                                            : _mm_maskz_loadu_epi8(mask[i], v + 16 * i)));
      for (int g = 0; g < GV; ++g) {
        const __m512 pj = _mm512_set1_ps(p[g][j]);
#pragma GCC unroll 4
        for (int i = 0; i < 4; ++i) acc[g][i] = _mm512_fmadd_ps(pj, x[i], acc[g][i]);
      }
    }
    for (int g = 0; g < GV; ++g)
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) _mm512_mask_storeu_ps(o[g] + d + 16 * i, mask[i], acc[g][i]);
  }
}

// avx2's attend_block_i8 (its contract and bits) 512 bits wide: scores by vpdpwssd with each
// key widened once for two query heads, values converted once for up to four.
NNX_TARGET_AVX512 inline void attend_block_i8(const std::int16_t* q16, const float* qscale, std::int64_t gn,
                                              const KvRows& keys, const KvRows& values, std::int64_t jn,
                                              std::int64_t prefetch_rows, const avx2::detail::attn::I8Prefetch& next,
                                              std::int64_t D, float* out, std::int64_t out_stride, float* m,
                                              float* l) noexcept {
  namespace a2 = avx2::detail::attn;
  alignas(32) float p[ref::kAttnMaxGroup][a2::kKeyBlock];
  const auto* k8 = static_cast<const std::int8_t*>(keys.data);
  for (std::int64_t j = 0; j < jn; j += 8) {
    const std::int8_t* rows[8];
    alignas(32) float key_scale[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      const std::int64_t r = std::min<std::int64_t>(j + i, jn - 1);
      rows[i] = k8 + r * keys.stride;
      key_scale[i] = keys.scales[r * keys.scale_stride];
    }
    a2::prefetch_i8_rows(keys, values, j, prefetch_rows, next, D);
    const __m256 ks = _mm256_load_ps(key_scale);
    std::int64_t g = 0;
    for (; g + 2 <= gn; g += 2) {
      __m256i dots[2];
      dots8_i8<2>(q16 + g * D, D, rows, dots);
      _mm256_store_ps(p[g] + j, scores_i8(dots[0], ks, qscale[g]));
      _mm256_store_ps(p[g + 1] + j, scores_i8(dots[1], ks, qscale[g + 1]));
    }
    if (g < gn) {
      __m256i dots[1];
      dots8_i8<1>(q16 + g * D, D, rows, dots);
      _mm256_store_ps(p[g] + j, scores_i8(dots[0], ks, qscale[g]));
    }
  }
  float c[ref::kAttnMaxGroup];
  float* o[ref::kAttnMaxGroup];
  const float* pg[ref::kAttnMaxGroup];
  for (std::int64_t g = 0; g < gn; ++g) {
    c[g] = a2::softmax_step(p[g], jn, m[g], l[g]);
    for (std::int64_t j = 0; j < jn; ++j) p[g][j] *= values.scales[j * values.scale_stride];
    o[g] = out + g * out_stride;
    pg[g] = p[g];
  }
  const auto* v8 = static_cast<const std::int8_t*>(values.data);
  for (std::int64_t g = 0; g < gn; g += 4) {
    switch (std::min<std::int64_t>(4, gn - g)) {
      case 4: weighted_values_i8<4>(o + g, c + g, pg + g, v8, values.stride, jn, D); break;
      case 3: weighted_values_i8<3>(o + g, c + g, pg + g, v8, values.stride, jn, D); break;
      case 2: weighted_values_i8<2>(o + g, c + g, pg + g, v8, values.stride, jn, D); break;
      default: weighted_values_i8<1>(o + g, c + g, pg + g, v8, values.stride, jn, D); break;
    }
  }
}

}  // namespace detail::attn

// R query rows, each with the G query heads of each of Hk KV heads, row r over keys [0, n[r]):
// the contract of ref::attend in the order this header states. Blocks of 64 keys are taken
// for every KV head of the call before the next block (a decode reads the cache's [Hkv, D] rows
// whole); rows are taken kStatesPerPass / (G Hk) at a time. bf16 rows of a decode (one query
// row) run avx2's kernel, which reads them in place; a prefill's bf16 blocks (D <=
// kMaxCompactHeadDim) are widened a block of one head at a time (avx2's widen_bf16_rows) and
// tiled as its f32 copies are; i8 rows run avx2's driver with attend_block_i8 above.
NNX_TARGET_AVX512 inline void attend(const float* q, std::int64_t q_row_stride, std::int64_t q_stride,
                                     std::int64_t R, const std::int64_t* n, std::int64_t G, std::int64_t Hk,
                                     const KvRows& keys, const KvRows& values, std::int64_t D, float scale, float* out,
                                     std::int64_t out_row_stride, std::int64_t out_stride) noexcept {
  namespace a = detail::attn;
  // One query row of one head per KV head (an MHA decode) shares nothing a tile could use, and
  // avx2's kernel measured faster there (31-36 vs 36-47 us for a 288-position, 12-head slot);
  // head sizes past kMaxPackedD do not fit the copies; and a decode's bf16 rows are read by
  // avx2's widening in registers (a GQA step 4 %
  // slower than tiles over a widened copy, 147 vs 141 us for 8 slots, but no copy). The bits
  // are the same either way.
  if (keys.type == KvType::i8)
    return avx2::detail::attn::attend_with<&a::attend_block_i8>(q, q_row_stride, q_stride, R, n, G, Hk, keys, values,
                                                                D, scale, out, out_row_stride, out_stride);
  if ((R == 1 && (G == 1 || keys.type == KvType::bf16)) || D > a::kMaxPackedD)
    return avx2::attend(q, q_row_stride, q_stride, R, n, G, Hk, keys, values, D, scale, out, out_row_stride,
                        out_stride);
  const bool bf16 = keys.type == KvType::bf16;
  const std::int64_t kv_stride = keys.stride;
  alignas(64) static thread_local float packed[2][a::kKeyBlock * a::kMaxPackedD];
  const std::int64_t H = G * Hk;
  const std::int64_t rows_per_pass = std::max<std::int64_t>(1, a::kStatesPerPass / H);
  const std::int64_t heads_per_pass = std::min(H, a::kStatesPerPass);
  float m[a::kStatesPerPass], l[a::kStatesPerPass];
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
        }
      for (std::int64_t j0 = 0; j0 < n_max; j0 += a::kKeyBlock) {
        // The rows that read this block, and the keys the longest of them reads.
        std::int64_t readers = 0, jmax = 0;
        for (std::int64_t r = r0; r < r1; ++r)
          if (j0 < n[r]) {
            ++readers;
            jmax = std::max(jmax, std::min(a::kKeyBlock, n[r] - j0));
          }
        // Several rows read a block (prefill): each KV head's K and V rows are copied contiguous
        // and its pairs tiled over them. One row (decode): the pairs of consecutive KV heads
        // share tiles, each reading its own rows in the cache, so a tile's FMA chains are
        // independent (one head's 4 output registers alone would wait on FMA latency).
        const bool pack = readers > 1 || bf16;
        const std::int64_t stride = pack ? D : kv_stride;
        a::PairState tile[a::kTilePairs];
        int count = 0;
        for (std::int64_t h = f0 / G; h * G < f1; ++h) {
          const std::int64_t kv = j0 * kv_stride + h * D;
          const float* block_keys = packed[0];
          const float* block_values = packed[1];
          std::int64_t prefetch = 0;
          if (bf16) {  // the keys widened in packed[1], then laid out in register order
            avx2::detail::attn::widen_bf16_rows(keys.at(j0, h, D), jmax, D, packed[1], n_max - j0);
            a::pack_keys_paired(packed[1], D, jmax, D, packed[0]);
            avx2::detail::attn::widen_bf16_rows(values.at(j0, h, D), jmax, D, packed[1], n_max - j0);
          } else if (pack) {
            a::pack_keys_paired(static_cast<const float*>(keys.data) + kv, kv_stride, jmax, D, packed[0]);
            a::pack_rows(static_cast<const float*>(values.data) + kv, kv_stride, jmax, D, packed[1]);
          } else {
            block_keys = static_cast<const float*>(keys.data) + kv;
            block_values = static_cast<const float*>(values.data) + kv;
            prefetch = n_max - j0;
          }
          for (std::int64_t f = std::max(f0, h * G); f < std::min(f1, (h + 1) * G); ++f)
            for (std::int64_t r = r0; r < r1; ++r) {
              if (j0 >= n[r]) continue;
              tile[count++] = {q + r * q_row_stride + f * q_stride,
                               out + r * out_row_stride + f * out_stride,
                               m + state(r, f),
                               l + state(r, f),
                               block_keys,
                               block_values,
                               std::min(a::kKeyBlock, n[r] - j0),
                               prefetch};
              prefetch = 0;  // the head's first pair prefetches for the others
              if (count == a::kTilePairs) {
                a::attend_pairs(tile, count, pack, stride, D, scale);
                count = 0;
              }
            }
          if (pack && count > 0) {  // the next head's rows overwrite the copies
            a::attend_pairs(tile, count, pack, stride, D, scale);
            count = 0;
          }
        }
        if (count > 0) a::attend_pairs(tile, count, pack, stride, D, scale);
      }
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t f = f0; f < f1; ++f) {
          const __m512 inv = _mm512_set1_ps(1.0f / l[state(r, f)]);
          float* o = out + r * out_row_stride + f * out_stride;
          for (std::int64_t d = 0; d < D; d += 16) {
            const __mmask16 dm = lanes16(D - d);
            _mm512_mask_storeu_ps(o + d, dm, _mm512_mul_ps(_mm512_maskz_loadu_ps(dm, o + d), inv));
          }
        }
    }
  }
}

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
