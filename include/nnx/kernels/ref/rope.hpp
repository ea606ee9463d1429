// nnx/kernels/ref/rope.hpp — portable rotary position embedding, rotate-half convention
// (Hugging Face Llama / GPT-NeoX), in place on rows of head_dim floats.
//
//   // q[T, H, D] at positions pos[T]
//   nnx::kernels::ref::rope_rotate_half(q, pos, T, H, D, 10000.0f);
//
// Numerics follow Hugging Face's float32 computation, so logits match a PyTorch run closely:
//   inv_freq[i] = 1 / theta^(float(2i) / float(D))     (float; the power correctly rounded)
//   angle       = float(pos) * inv_freq[i]              (float product, as HF's matmul)
//   c, s        = cos(angle), sin(angle)                (of that float, correctly rounded)
//   y[i]        = x[i] c - x[i + D/2] s;   y[i + D/2] = x[i + D/2] c + x[i] s
// HF's own pow/cos/sin are within 1 ulp, so c and s agree with theirs to ~1 ulp. Against
// exact arithmetic the float angle is off by up to ~2 pos inv_freq 2^-24 rad (about
// 2.4e-4 rad at position 4096 for the lowest frequency), as in HF; the test bounds it.
//
// A RopeScaling (Hugging Face's rope_scaling: linear, llama3) rewrites each inv_freq[i] on its
// own, in float32 in HF's order of operations (see rope_scaled_inv_freq).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>

namespace nnx::kernels {

// Hugging Face's rope_scaling kinds (transformers' ROPE_INIT_FUNCTIONS) this library computes.
enum class RopeScalingType : std::int32_t { none = 0, linear = 1, llama3 = 2 };

// The settings of a rope_scaling, as HF's config.json holds them (callers validate them:
// factor > 0; for llama3 0 < low_freq_factor < high_freq_factor and
// original_max_position_embeddings > 0). Defaults: no scaling.
struct RopeFreqScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;                             // linear, llama3
  double low_freq_factor = 1.0;                    // llama3
  double high_freq_factor = 4.0;                   // llama3
  double original_max_position_embeddings = 8192;  // llama3
};

}  // namespace nnx::kernels

namespace nnx::kernels::ref {

// inv_freq as the rope_scaling `s` rewrites it, in float32 as transformers' rope_utils does
// (python scalars become float32 operands; `c / tensor` is torch's reciprocal(tensor) * c):
//   linear (_compute_linear_scaling_rope_parameters): inv / factor
//   llama3 (_compute_llama3_parameters): wavelen = 2 pi / inv;
//     wavelen > old_ctx / low_freq_factor:  inv / factor            (low frequencies)
//     wavelen < old_ctx / high_freq_factor: inv                     (high frequencies)
//     else smooth = (old_ctx / wavelen - low) / (high - low);
//          (1 - smooth) * inv / factor + smooth * inv
// with old_ctx = original_max_position_embeddings. Never throws.
inline float rope_scaled_inv_freq(float inv, const RopeFreqScaling& s) noexcept {
  const auto f = [](double v) { return static_cast<float>(v); };
  switch (s.type) {
    case RopeScalingType::linear:
      return inv / f(s.factor);
    case RopeScalingType::llama3: {
      const double old_ctx = s.original_max_position_embeddings;
      const float wavelen = (1.0f / inv) * f(2.0 * std::numbers::pi);
      if (wavelen > f(old_ctx / s.low_freq_factor)) return inv / f(s.factor);
      if (wavelen < f(old_ctx / s.high_freq_factor)) return inv;
      const float ratio = (1.0f / wavelen) * f(old_ctx);
      const float smooth = (ratio - f(s.low_freq_factor)) / f(s.high_freq_factor - s.low_freq_factor);
      const float low_part = (1.0f - smooth) * inv / f(s.factor);
      const float high_part = smooth * inv;
      return low_part + high_part;
    }
    case RopeScalingType::none:
      break;
  }
  return inv;
}

namespace detail {

inline float rope_inv_freq_at(float theta, std::int64_t D, std::int64_t i) noexcept {
  const float exponent = static_cast<float>(2 * i) / static_cast<float>(D);
  return 1.0f / static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
}
inline float rope_inv_freq_at(float theta, std::int64_t D, std::int64_t i, const RopeFreqScaling& s) noexcept {
  return rope_scaled_inv_freq(rope_inv_freq_at(theta, D, i), s);
}

// cos and sin of positions[t] * inv[k] for k < nb (nb <= kRopeChunk), as the header states.
inline constexpr std::int64_t kRopeChunk = 64;  // frequencies whose cos/sin live on the stack at once
inline void rope_cos_sin(std::int32_t position, const float* inv, std::int64_t nb, float* c, float* s) noexcept {
  const auto pos = static_cast<float>(position);
  for (std::int64_t k = 0; k < nb; ++k) {
    const float angle = pos * inv[k];
    c[k] = static_cast<float>(std::cos(static_cast<double>(angle)));
    s[k] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

}  // namespace detail

// Rotates the frequencies [i0, i0 + nb) of every row of x[T, H, D]; inv[k] is the inverse
// frequency of i0 + k. The kernel every rope_rotate_half runs (nnx/kernels/rope.hpp splits
// rows between threads and frequencies into slices around it). Never throws.
inline void rope_rotate_slice(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                              std::int64_t i0, std::int64_t nb, const float* inv) noexcept {
  const std::int64_t half = D / 2;
  float c[detail::kRopeChunk], s[detail::kRopeChunk];
  for (std::int64_t t = 0; t < T; ++t)
    for (std::int64_t k0 = 0; k0 < nb; k0 += detail::kRopeChunk) {
      const std::int64_t kb = std::min(detail::kRopeChunk, nb - k0);
      detail::rope_cos_sin(positions[t], inv + k0, kb, c, s);
      for (std::int64_t h = 0; h < H; ++h) {
        float* lo = x + (t * H + h) * D + i0 + k0;
        float* hi = lo + half;
        for (std::int64_t k = 0; k < kb; ++k) {
          const float x1 = lo[k], x2 = hi[k];
          lo[k] = x1 * c[k] - x2 * s[k];
          hi[k] = x2 * c[k] + x1 * s[k];
        }
      }
    }
}

// inv_freq[i] = 1 / theta^(2i / D) for i < D / 2, computed as described above, then rewritten
// by `scaling` (rope_scaled_inv_freq; default: none).
inline void rope_inv_freq(float theta, std::int64_t D, float* inv_freq, const RopeFreqScaling& scaling = {}) noexcept {
  for (std::int64_t i = 0; i < D / 2; ++i) inv_freq[i] = detail::rope_inv_freq_at(theta, D, i, scaling);
}

// Rotates x[T, H, D] in place: every head of row t by positions[t], with the given
// inv_freq[D / 2]. D must be even. Never throws.
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             const float* inv_freq) noexcept {
  rope_rotate_slice(x, positions, T, H, D, 0, D / 2, inv_freq);
}

// The same with inv_freq computed from theta and scaling (as rope_inv_freq does), without
// allocating.
inline void rope_rotate_half(float* x, const std::int32_t* positions, std::int64_t T, std::int64_t H, std::int64_t D,
                             float theta, const RopeFreqScaling& scaling = {}) noexcept {
  constexpr std::int64_t kSlice = 256;  // frequencies per slice: head_dim 512 in one slice
  float inv[kSlice];
  for (std::int64_t i0 = 0; i0 < D / 2; i0 += kSlice) {
    const std::int64_t nb = std::min(kSlice, D / 2 - i0);
    for (std::int64_t k = 0; k < nb; ++k) inv[k] = detail::rope_inv_freq_at(theta, D, i0 + k, scaling);
    rope_rotate_slice(x, positions, T, H, D, i0, nb, inv);
  }
}

}  // namespace nnx::kernels::ref
