// nnx/kernels/avx2/simd.hpp — the AVX2+FMA helpers every avx2 kernel shares: tail masks,
// horizontal sums in one fixed order, exp for softmax, and per-thread scratch buffers (which
// the avx512 tier uses too).
//
// The fixed orders are part of the kernels' numerics: the avx512 tier reproduces hsum's tree
// on each 256-bit half to give bit-identical results (nnx/kernels/avx512/simd.hpp).
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <new>

namespace nnx::kernels::avx2 {

// This thread's buffer of at least n floats (64-byte aligned), grown once and kept: kernels
// allocate nothing per call after the first. One per Tag, so no two kernels share one.
// nullptr when memory is exhausted.
template <class Tag>
inline float* thread_floats(std::size_t n) noexcept {
  struct Buffer {
    float* data = nullptr;
    std::size_t size = 0;
    ~Buffer() { ::operator delete(data, std::align_val_t{64}); }
  };
  static thread_local Buffer buffer;
  if (buffer.size < n) {
    ::operator delete(buffer.data, std::align_val_t{64});
    buffer.data = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t{64}, std::nothrow));
    buffer.size = buffer.data ? n : 0;
  }
  return buffer.data;
}

// The cache line holding p into L1 ahead of use. An asm statement rather than _mm_prefetch:
// GCC counts a function that only prefetches as free of side effects and deletes calls to it
// (the i8 attention's prefetch helper compiled to nothing).
inline void prefetch_l1(const void* p) noexcept { asm volatile("prefetcht0 (%0)" : : "r"(p)); }
// The same into L2.
inline void prefetch_l2(const void* p) noexcept { asm volatile("prefetcht1 (%0)" : : "r"(p)); }

// How far ahead of a tile's reads its weights are prefetched, into L2. A tile's rows are
// short streams (768 bytes at K = 768), too short for the hardware prefetcher to lock on to
// before they end; but the rows are contiguous, so tile after tile reads one region front to
// back, and the tile prefetches that region as one stream: per iteration, the NR lines that
// lie kPrefetchAheadBytes past the NR x 64 bytes it consumes. Measured with weights from DRAM
// on a Zen 4 EPYC (M = 1, 1 thread, stream-sum rate 22 GB/s): K 768 x N 3072 went from 9 GB/s
// (8 rows ahead into L1, the previous scheme) to 18-19, K 3072 x N 768 from 14 to 21-22; 8 and
// 16 KiB ahead into L1 reached 15-20, 32 KiB into L2 the same as 24. Past the region's end
// the prefetched lines are simply never used (the address is formed as an integer: no pointer
// leaves its array, and prefetches never fault).
inline constexpr std::int64_t kPrefetchAheadBytes = 24 * 1024;

// For a tile of NR rows starting at `rows` that is about to read bytes [k_bytes, k_bytes + 64)
// of each row.
template <int NR>
NNX_TARGET_AVX2_FMA inline void prefetch_ahead(const void* rows, std::int64_t k_bytes) noexcept {
  const auto ahead = reinterpret_cast<std::uintptr_t>(rows) +
                     static_cast<std::uintptr_t>(kPrefetchAheadBytes + k_bytes * NR);
#pragma GCC unroll 16
  for (int j = 0; j < NR; ++j)
    _mm_prefetch(reinterpret_cast<const char*>(ahead + static_cast<std::uintptr_t>(j * 64)), _MM_HINT_T1);
}

// Lanes [0, n) set, for n in 0..8: masked loads read nothing past the end of a row (and give
// zeros there), masked stores write nothing past it.
NNX_TARGET_AVX2_FMA inline __m256i lane_mask(std::int64_t n) noexcept {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// The first min(n, 8) floats at p, zeros after: a plain load for a whole vector.
NNX_TARGET_AVX2_FMA inline __m256 load_lanes(const float* p, std::int64_t n) noexcept {
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, lane_mask(n));
}

// The first min(n, 8) lanes of v stored at p: a plain store for a whole vector. A masked store
// costs about ten plain ones on AMD Zen cores (3.6 ns against 0.39 ns per vector, measured on
// Zen 5), so loops store whole vectors plainly and mask only a partial last one.
NNX_TARGET_AVX2_FMA inline void store_lanes(float* p, __m256 v, std::int64_t n) noexcept {
  if (n >= 8)
    _mm256_storeu_ps(p, v);
  else
    _mm256_maskstore_ps(p, lane_mask(n), v);
}

// The eight lanes summed in the fixed tree ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)).
NNX_TARGET_AVX2_FMA inline float hsum(__m256 v) noexcept {
  const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  return _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)));
}

// The eight int32 lanes summed (wrapping, so the order does not matter).
NNX_TARGET_AVX2_FMA inline std::uint32_t hsum_epi32(__m256i v) noexcept {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(s));
}

// Lane i: the sum of v[i]'s eight lanes (mod 2^32, so in any order the same): eight horizontal
// integer sums for about the price of two.
NNX_TARGET_AVX2_FMA inline __m256i hsum8_epi32(const __m256i (&v)[8]) noexcept {
  const __m256i s01 = _mm256_hadd_epi32(v[0], v[1]), s23 = _mm256_hadd_epi32(v[2], v[3]);
  const __m256i s45 = _mm256_hadd_epi32(v[4], v[5]), s67 = _mm256_hadd_epi32(v[6], v[7]);
  const __m256i s0123 = _mm256_hadd_epi32(s01, s23), s4567 = _mm256_hadd_epi32(s45, s67);
  return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                          _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

// exp(x) for x <= 0 (a score minus the row maximum), within 2 ulp of std::exp: Cody-Waite
// reduction by ln 2, then a degree-7 polynomial. Below -87.3 the result would be subnormal
// and is 0; a NaN stays NaN (max_ps returns its second operand on NaN).
NNX_TARGET_AVX2_FMA inline __m256 exp_nonpositive(__m256 x) noexcept {
  const __m256 cut = _mm256_set1_ps(-87.3f);
  const __m256 keep = _mm256_cmp_ps(x, cut, _CMP_NLT_UQ);  // x >= cut, or NaN
  x = _mm256_max_ps(cut, x);
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);  // ln2 split: hi exact in k * hi
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 5040);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), keep);
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
