// nnx/kernels/avx512/attention.hpp — AVX-512 attention of the query heads of a run of KV heads
// over a run of keys: the contract of nnx/kernels/ref/attention.hpp, computed in tiles of
// (query row, key) pairs so a prefill's rows share every load of a key or value.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512)
// (nnx/kernels/attention.hpp does). On other platforms the header declares nothing.
//
// Per block of 64 keys and KV head, for tiles of up to four (query row, query head) pairs that
// read the whole block (a prefill's rows, a decode's GQA group):
//   S = Q K^T      16 (pair, key) scores at a time: each a 16-lane FMA chain over d, the 16
//                  accumulators then reduced together by reduce16 (45 shuffles and adds for
//                  16 sums): 4 pairs x 4 keys, 2 x 8 or 1 x 16, so each key row is loaded once
//                  per tile and no transposed copy of K is made (a decode reads K once)
//   online softmax per pair as ref's order states per block (max, exp(m - m'), exps 16 wide)
//   O = O c + P V  pairs x 64 output floats in registers, one FMA chain over j per float
// A pair whose keys end inside the block (the diagonal of a causal prefill, a decode's last
// block) shares its tile but keeps its own key count: keys past it are masked out of its
// softmax and its weighted sum (by mask, not as 0 * v), so they never enter its bits. When several
// rows read a block, its K and V rows of one head are first copied contiguous (they sit
// kv_stride apart in the cache and evict each other from L1).
//
// Order (the class against ref: within the bound the tests hold every tier to, 1e-6 of a
// double reference): s_j = reduce16 of the 16 lanes, lane i an FMA chain over d = i, i + 16,
// ... from 0, times scale; per block of 64: m' = max(m, max_j s_j); c = exp(m - m')
// (std::exp); p_j = exp_nonpositive(s_j - m') (2 ulp); l = l c + hsum16((p[0:16] + p[16:32]) +
// (p[32:48] + p[48:64])) with p_j = 0 past the pair's keys; o_d = o_d c, then o_d = fma(p_j,
// v_jd, o_d) for j ascending; out = o * (1 / l). Every step is per (row, query head) and fixed
// by n, D and G alone: a row's bits do not depend on the tile it shares, R, the KV heads of the
// call, or the thread count.
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

inline constexpr std::int64_t kKeyBlock = 64;  // 4 registers of probabilities per pair
inline constexpr int kTilePairs = 4;           // 4 pairs x 4 keys of scores; 4 x 4 output registers
inline constexpr std::int64_t kMaxPackedD = 256;  // a block's K and V copies: 64 KiB each
// (query row, query head) pairs whose running maximum and sum one pass over the keys keeps.
inline constexpr std::int64_t kStatesPerPass = 1024;

// Lane L of the result = the sum of the 16 lanes of a[L], in a tree fixed for every L: within
// each 128-bit quarter (x0 + x2) + (x1 + x3), then the quarters (q0 + q1) + (q2 + q3).
NNX_TARGET_AVX512 inline __m512 reduce16(const __m512 (&a)[16]) noexcept {
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_maskz_unpacklo_ps(kAll16, a[2 * i], a[2 * i + 1]),
                         _mm512_maskz_unpackhi_ps(kAll16, a[2 * i], a[2 * i + 1]));
  // Per quarter, t[i] = [a2i(0+2), a2i+1(0+2), a2i(1+3), a2i+1(1+3)].
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_maskz_shuffle_ps(kAll16, t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_maskz_shuffle_ps(kAll16, t[2 * i], t[2 * i + 1], 0xEE));
  // Per quarter q, u[i] = the quarter sums of a[4i .. 4i + 4).
  __m512 v[2];
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i)
    v[i] = _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll16, u[2 * i], u[2 * i + 1], 0x88),
                         _mm512_maskz_shuffle_f32x4(kAll16, u[2 * i], u[2 * i + 1], 0xDD));
  return _mm512_add_ps(_mm512_maskz_shuffle_f32x4(kAll16, v[0], v[1], 0x88),
                       _mm512_maskz_shuffle_f32x4(kAll16, v[0], v[1], 0xDD));
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
// and sum) and what it reads of the current block: keys [0, jn) of its KV head's rows, rows
// `stride` floats apart from keys and values; rows below `prefetch` (counted from the block's
// first) are prefetched kPrefetchKeys ahead (0: none, the rows are in cache or another pair
// prefetches them).
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
// exist is read; scores past a pair's own keys are masked by softmax_step). 16 / RT keys per
// group, so every group is 16 sums for reduce16. Shared: every pair reads pairs[0]'s rows (one
// KV head), so a key's load serves them all.
template <int RT, bool Shared>
NNX_TARGET_AVX512 inline void tile_scores(const PairState* pairs, std::int64_t stride, std::int64_t jn, std::int64_t D,
                                          float scale, float (*p)[kKeyBlock]) noexcept {
  constexpr int KJ = 16 / RT;
  namespace a2 = avx2::detail::attn;
  const std::int64_t row_bytes = D * static_cast<std::int64_t>(sizeof(float));
  const __m512 vscale = _mm512_set1_ps(scale);
  for (std::int64_t j0 = 0; j0 < jn; j0 += KJ) {
    // Key j of the group is row j0 + off[j] / stride of each pair's keys.
    std::int64_t off[KJ];
#pragma GCC unroll 16
    for (int j = 0; j < KJ; ++j) off[j] = (j0 + std::min<std::int64_t>(j, jn - 1 - j0)) * stride;
#pragma GCC unroll 4
    for (int t = 0; t < (Shared ? 1 : RT); ++t)
      for (std::int64_t j = j0 + a2::kPrefetchKeys; j < j0 + a2::kPrefetchKeys + KJ && j < pairs[t].prefetch; ++j)
        a2::prefetch_row(pairs[t].keys, j, stride, row_bytes);
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    if constexpr (RT == 1) {
      // One query, 16 keys: 64 of the query's floats stay in registers while each key row in
      // turn takes its 4 FMAs (16 row pointers live at once would spill).
      const float* k = pairs[0].keys;
      for (std::int64_t d0 = 0; d0 < D; d0 += 64) {
        __mmask16 dm[4];
        __m512 qv[4];
#pragma GCC unroll 4
        for (int c = 0; c < 4; ++c) {
          dm[c] = lanes16(D - d0 - 16 * c);
          qv[c] = _mm512_maskz_loadu_ps(dm[c], pairs[0].q + d0 + 16 * c);
        }
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j)
#pragma GCC unroll 4
          for (int c = 0; c < 4; ++c)
            acc[j] = _mm512_fmadd_ps(qv[c], _mm512_maskz_loadu_ps(dm[c], k + off[j] + d0 + 16 * c), acc[j]);
      }
    } else {
      for (std::int64_t d = 0; d < D; d += 16) {
        const __mmask16 dm = lanes16(D - d);
        __m512 qv[RT];
#pragma GCC unroll 4
        for (int t = 0; t < RT; ++t) qv[t] = _mm512_maskz_loadu_ps(dm, pairs[t].q + d);
        if constexpr (Shared) {
          __m512 kv[KJ];
#pragma GCC unroll 16
          for (int j = 0; j < KJ; ++j) kv[j] = _mm512_maskz_loadu_ps(dm, pairs[0].keys + off[j] + d);
#pragma GCC unroll 4
          for (int t = 0; t < RT; ++t)
#pragma GCC unroll 16
            for (int j = 0; j < KJ; ++j) acc[t * KJ + j] = _mm512_fmadd_ps(qv[t], kv[j], acc[t * KJ + j]);
        } else {
#pragma GCC unroll 4
          for (int t = 0; t < RT; ++t)
#pragma GCC unroll 16
            for (int j = 0; j < KJ; ++j)
              acc[t * KJ + j] =
                  _mm512_fmadd_ps(qv[t], _mm512_maskz_loadu_ps(dm, pairs[t].keys + off[j] + d), acc[t * KJ + j]);
        }
      }
    }
    const __m512 s = _mm512_mul_ps(reduce16(acc), vscale);
    // Lanes [t KJ, (t + 1) KJ) are pair t's scores of keys j0 .. j0 + KJ.
    if constexpr (RT == 1) {
      _mm512_store_ps(p[0] + j0, s);
    } else if constexpr (RT == 2) {
      _mm256_store_ps(p[0] + j0, _mm512_maskz_extractf32x8_ps(0xFF, s, 0));
      _mm256_store_ps(p[1] + j0, _mm512_maskz_extractf32x8_ps(0xFF, s, 1));
    } else {
      static_assert(RT == 4);
      _mm_store_ps(p[0] + j0, _mm512_maskz_extractf32x4_ps(0xF, s, 0));
      _mm_store_ps(p[1] + j0, _mm512_maskz_extractf32x4_ps(0xF, s, 1));
      _mm_store_ps(p[2] + j0, _mm512_maskz_extractf32x4_ps(0xF, s, 2));
      _mm_store_ps(p[3] + j0, _mm512_maskz_extractf32x4_ps(0xF, s, 3));
    }
  }
}

// One pair's online-softmax step over its scores p[0, pair.jn) of a block: p becomes its
// probabilities (0 past jn), its maximum and sum are updated, and the factor exp(m_old - m_new)
// its output takes is returned.
NNX_TARGET_AVX512 inline float softmax_step(const PairState& pair, float* p) noexcept {
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
  *pair.l = *pair.l * c + hsum16(_mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3])));
  *pair.m = m_new;
  return c;
}

// O = O c + P V for the RT pairs of a tile, each over its values [0, jn), 64 output floats of
// each pair in registers at a time. Past the fewest keys of the tile, a pair whose keys have
// ended keeps its registers by mask: no value row it does not read enters its sums, not even
// as 0 * v. Shared as for tile_scores.
template <int RT, bool Shared>
NNX_TARGET_AVX512 inline void tile_values(const PairState* pairs, const float (*p)[kKeyBlock], const float* c,
                                          std::int64_t stride, std::int64_t D) noexcept {
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
template <int RT, bool Shared>
NNX_TARGET_AVX512 inline void attend_tile(const PairState* pairs, std::int64_t stride, std::int64_t D,
                                          float scale) noexcept {
  alignas(64) float p[RT][kKeyBlock];
  float c[RT];
  std::int64_t jn = 0;
#pragma GCC unroll 4
  for (int t = 0; t < RT; ++t) jn = std::max(jn, pairs[t].jn);
  tile_scores<RT, Shared>(pairs, stride, jn, D, scale, p);
#pragma GCC unroll 4
  for (int t = 0; t < RT; ++t) c[t] = softmax_step(pairs[t], p[t]);
  tile_values<RT, Shared>(pairs, p, c, stride, D);
}

template <int RT>
NNX_TARGET_AVX512 inline void attend_tile(const PairState* pairs, std::int64_t stride, std::int64_t D,
                                          float scale) noexcept {
  bool shared = true;
  for (int t = 1; t < RT; ++t) shared &= pairs[t].keys == pairs[0].keys;
  if (shared || RT == 1) return attend_tile<RT, true>(pairs, stride, D, scale);
  attend_tile<RT, false>(pairs, stride, D, scale);
}

// Up to kTilePairs pairs: tiles of 4, 2 and 1 (each pair's arithmetic is the same in all).
NNX_TARGET_AVX512 inline void attend_pairs(const PairState* pairs, int count, std::int64_t stride, std::int64_t D,
                                           float scale) noexcept {
  if (count == 4) return attend_tile<4>(pairs, stride, D, scale);
  if (count >= 2) {
    attend_tile<2>(pairs, stride, D, scale);
    pairs += 2;
    count -= 2;
  }
  if (count == 1) attend_tile<1>(pairs, stride, D, scale);
}

}  // namespace detail::attn

// R query rows, each with the G query heads of each of Hk KV heads, row r over keys [0, n[r]):
// the contract of ref::attend_f32 in the order this header states. Blocks of 64 keys are taken
// for every KV head of the call before the next block (a decode reads the cache's [Hkv, D] rows
// whole); rows are taken kStatesPerPass / (G Hk) at a time.
NNX_TARGET_AVX512 inline void attend_f32(const float* q, std::int64_t q_row_stride, std::int64_t q_stride,
                                         std::int64_t R, const std::int64_t* n, std::int64_t G, std::int64_t Hk,
                                         const float* keys, const float* values, std::int64_t kv_stride,
                                         std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                                         std::int64_t out_stride) noexcept {
  namespace a = detail::attn;
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
        const bool pack = readers > 1 && D <= a::kMaxPackedD;
        const std::int64_t stride = pack ? D : kv_stride;
        a::PairState tile[a::kTilePairs];
        int count = 0;
        for (std::int64_t h = f0 / G; h * G < f1; ++h) {
          const std::int64_t kv = j0 * kv_stride + h * D;
          const float* block_keys = keys + kv;
          const float* block_values = values + kv;
          std::int64_t prefetch = n_max - j0;
          if (pack) {
            a::pack_rows(block_keys, kv_stride, jmax, D, packed[0]);
            a::pack_rows(block_values, kv_stride, jmax, D, packed[1]);
            block_keys = packed[0];
            block_values = packed[1];
            prefetch = 0;
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
                a::attend_pairs(tile, count, stride, D, scale);
                count = 0;
              }
            }
          if (pack && count > 0) {  // the next head's rows overwrite the copies
            a::attend_pairs(tile, count, stride, D, scale);
            count = 0;
          }
        }
        if (count > 0) a::attend_pairs(tile, count, stride, D, scale);
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
