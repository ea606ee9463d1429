// nnx/kernels/ref/activation.hpp — portable elementwise activations: GELU (tanh
// approximation, GPT-2), SiLU and SwiGLU (Llama).
//
//   nnx::kernels::ref::gelu_tanh(h, h, T * 4 * C);   // in place is fine
//
// GELU is evaluated as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x³), which equals
// 0.5 x (1 + tanh(u)) in real arithmetic but has no cancellation for negative x: relative
// error <= (4 |2u| + 8) 2^-24 everywhere, where 1 + tanh(u) in float loses up to ~1e-4
// relative near x = -5 (PyTorch's float results differ from ours by < 2e-7 |x|).
// SiLU is x * sigmoid(x) (relative error <= (|x| + 5) 2^-24). Both use the two-sided
// sigmoid (exp of a non-positive argument only), so no intermediate overflows.
//
// Backward (training), with s = sigmoid(2u) and sg = sigmoid(g):
//   gelu:   dx = dy (s + x s (1 - s) 2 sqrt(2/pi) (1 + 3 * 0.044715 x²)), 1 - s = sigmoid(-2u)
//   swiglu: dgate = dy up sg (1 + g sigmoid(-g)), dup = dy silu(g)
#pragma once

#include <cmath>
#include <cstdint>

namespace nnx::kernels::ref {

namespace detail {

// z * sigmoid(t), with exp never overflowing: for t < 0 it is z e / (1 + e), e = exp(t), so
// tiny results (t below about -88) stay accurate instead of becoming z / inf = 0.
inline float times_sigmoid(float z, float t) noexcept {
  if (t >= 0.0f) return z / (1.0f + std::exp(-t));
  const float e = std::exp(t);
  return z * e / (1.0f + e);
}

inline float gelu_tanh(float x) noexcept {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  const float u = kSqrt2OverPi * (x + 0.044715f * x * x * x);
  return times_sigmoid(x, 2.0f * u);
}

inline float silu(float x) noexcept { return times_sigmoid(x, x); }

inline float sigmoid(float t) noexcept { return times_sigmoid(1.0f, t); }

// 1 - s is taken as sigmoid(-t), not computed by subtraction, which would cancel for large t.
inline float gelu_tanh_grad(float x) noexcept {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  const float t = 2.0f * kSqrt2OverPi * (x + 0.044715f * x * x * x);
  const float s = sigmoid(t);
  return s + x * (s * sigmoid(-t)) * (2.0f * kSqrt2OverPi) * (1.0f + 3.0f * 0.044715f * x * x);
}

}  // namespace detail

// out[i] = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))), x = x[i], for i < n. out may be x.
inline void gelu_tanh(const float* x, float* out, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) out[i] = detail::gelu_tanh(x[i]);
}

// out[i] = x[i] * sigmoid(x[i]). out may be x.
inline void silu(const float* x, float* out, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) out[i] = detail::silu(x[i]);
}

// out[i] = silu(gate[i]) * up[i] (Llama's MLP). out may be gate or up.
inline void swiglu(const float* gate, const float* up, float* out, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) out[i] = detail::silu(gate[i]) * up[i];
}

// dx[i] = dy[i] * gelu_tanh'(x[i]); dx may be dy. Never throws.
inline void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) dx[i] = dy[i] * detail::gelu_tanh_grad(x[i]);
}

// Backward of swiglu: dgate and dup from dy; dgate may be gate or dy, dup may be up (each
// element reads its inputs before writing). Never throws.
inline void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup,
                            std::int64_t n) noexcept {
  for (std::int64_t i = 0; i < n; ++i) {
    const float g = gate[i], u = up[i], d = dy[i];
    const float sg = detail::sigmoid(g);
    dgate[i] = d * u * (sg * (1.0f + g * detail::sigmoid(-g)));
    dup[i] = d * detail::silu(g);
  }
}

}  // namespace nnx::kernels::ref
