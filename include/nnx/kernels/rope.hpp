// nnx/kernels/rope.hpp — rotary position embedding (rotate-half convention, as Hugging Face
// Llama) in place on raw [T, H, D] buffers, one position per t.
//
//   nnx::kernels::rope_rotate_half(q, pos, T, n_heads, head_dim, 10000.0f);
//   nnx::kernels::rope_rotate_half(k, pos, T, n_kv_heads, head_dim, 10000.0f);
//
//   std::vector<float> inv(head_dim / 2);                  // or precomputed frequencies,
//   nnx::kernels::rope_inv_freq(500000.0f, head_dim, inv.data());   // e.g. to rescale them
//   nnx::kernels::rope_rotate_half(q, pos, T, n_heads, head_dim, inv.data());
//
// Portable on every CPU for now (nnx/kernels/ref/rope.hpp states the numerics, which follow
// HF's float32 computation); a vectorized path will plug in here without changing callers.
#pragma once

#include <cstdint>

#include "nnx/kernels/ref/rope.hpp"

namespace nnx::kernels {

// inv_freq[i] = 1 / theta^(2i / D), i < D / 2 (float32, as HF computes it).
inline void rope_inv_freq(float theta, std::int64_t D, float* inv_freq) noexcept {
  ref::rope_inv_freq(theta, D, inv_freq);
}

// x[T, H, D] in place; row t at positions[t]: for i < D/2 with angle = positions[t] *
// inv_freq[i]: (x[i], x[i + D/2]) <- (x[i] cos - x[i + D/2] sin, x[i + D/2] cos + x[i] sin).
// D must be even. Never throws.
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             const float* inv_freq) noexcept {
  ref::rope_rotate_half(x, positions, T, H, D, inv_freq);
}

// The same with inv_freq = rope_inv_freq(theta, D), computed without allocating.
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             float theta) noexcept {
  ref::rope_rotate_half(x, positions, T, H, D, theta);
}

}  // namespace nnx::kernels
