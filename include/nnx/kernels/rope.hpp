// nnx/kernels/rope.hpp — rotary position embedding (rotate-half convention, as Hugging Face
// Llama) in place on raw [T, H, D] buffers, one position per t, in the best tier the CPU has
// (nnx/kernels/isa.hpp).
//
//   nnx::kernels::rope_rotate_half(q, pos, T, n_heads, head_dim, 10000.0f);
//   nnx::kernels::rope_rotate_half(k, pos, T, n_kv_heads, head_dim, 10000.0f);
//
//   std::vector<float> inv(head_dim / 2);                  // or precomputed frequencies,
//   nnx::kernels::rope_inv_freq(500000.0f, head_dim, inv.data());   // e.g. to rescale them
//   nnx::kernels::rope_rotate_half(q, pos, T, n_heads, head_dim, inv.data());
//
//   // Llama 3.1's rope_scaling, applied to the frequencies theta gives:
//   nnx::kernels::RopeFreqScaling llama3{.type = nnx::kernels::RopeScalingType::llama3, .factor = 8.0,
//                                        .low_freq_factor = 1.0, .high_freq_factor = 4.0,
//                                        .original_max_position_embeddings = 8192};
//   nnx::kernels::rope_rotate_half(q, pos, T, n_heads, head_dim, 500000.0f, llama3);
//
// nnx/kernels/ref/rope.hpp states the numerics (HF's float32 computation); the avx2 tier
// (avx512 runs it) gives the same bits. Rows are split between threads, and a row's result
// depends only on the row, so thread counts never change the bits either.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/avx2/rope.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/rope.hpp"

namespace nnx::kernels {

using RopeSliceFn = void (*)(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             std::int64_t i0, std::int64_t nb, const float* inv) noexcept;

inline constexpr TierTable<RopeSliceFn> kRopeRotateSlice{&ref::rope_rotate_slice,
                                                         NNX_X86_ENTRY(avx2::rope_rotate_slice)};

namespace detail {

// Frequencies [i0, i0 + nb) of every row, rows split between threads. Work per row and
// frequency: a double cos and sin (~40 multiply-add-like steps) and 6 flops per head.
inline void rope_rows(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                      std::int64_t i0, std::int64_t nb, const float* inv) noexcept {
  const RopeSliceFn f = select(kRopeRotateSlice, active_isa());
  const double work = double(T) * double(nb) * (40.0 + 6.0 * double(H));
  parallel_blocks(T, 1, work, [&](std::int64_t t0, std::int64_t t1) noexcept {
    f(x + t0 * H * D, positions + t0, t1 - t0, H, D, i0, nb, inv);
  });
}

}  // namespace detail

// inv_freq[i] = 1 / theta^(2i / D), i < D / 2 (float32, as HF computes it), then rewritten by
// `scaling` as HF's rope_scaling does (ref::rope_scaled_inv_freq; default: none).
inline void rope_inv_freq(float theta, std::int64_t D, float* inv_freq, const RopeFreqScaling& scaling = {}) noexcept {
  ref::rope_inv_freq(theta, D, inv_freq, scaling);
}

// x[T, H, D] in place; row t at positions[t]: for i < D/2 with angle = positions[t] *
// inv_freq[i]: (x[i], x[i + D/2]) <- (x[i] cos - x[i + D/2] sin, x[i + D/2] cos + x[i] sin).
// D must be even. Never throws.
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             const float* inv_freq) noexcept {
  detail::rope_rows(x, positions, T, H, D, 0, D / 2, inv_freq);
}

// The same with inv_freq = rope_inv_freq(theta, D, scaling), computed without allocating (in
// slices of 256 frequencies: head_dim 512 in one).
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             float theta, const RopeFreqScaling& scaling = {}) noexcept {
  constexpr std::int64_t kSlice = 256;
  float inv[kSlice];
  for (std::int64_t i0 = 0; i0 < D / 2; i0 += kSlice) {
    const std::int64_t nb = std::min(kSlice, D / 2 - i0);
    for (std::int64_t k = 0; k < nb; ++k) inv[k] = ref::detail::rope_inv_freq_at(theta, D, i0 + k, scaling);
    detail::rope_rows(x, positions, T, H, D, i0, nb, inv);
  }
}

}  // namespace nnx::kernels
