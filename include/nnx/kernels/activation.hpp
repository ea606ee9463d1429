// nnx/kernels/activation.hpp — elementwise activations on raw buffers: GELU (tanh
// approximation, GPT-2's MLP), SiLU, and SwiGLU (Llama's MLP).
//
//   nnx::kernels::gelu_tanh(h, h, T * 4 * C);          // in place
//   nnx::kernels::swiglu(gate, up, h, T * F);          // h = silu(gate) * up
//
// Portable on every CPU for now (nnx/kernels/ref/activation.hpp states formulas and error
// bounds); a vectorized path will plug in here without changing callers. Elementwise, so
// every element's result is independent of the others.
#pragma once

#include <cstdint>

#include "nnx/kernels/ref/activation.hpp"

namespace nnx::kernels {

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))) elementwise; out may be x.
inline void gelu_tanh(const float* x, float* out, std::int64_t n) noexcept { ref::gelu_tanh(x, out, n); }

// out = x * sigmoid(x) elementwise; out may be x.
inline void silu(const float* x, float* out, std::int64_t n) noexcept { ref::silu(x, out, n); }

// out = silu(gate) * up elementwise; out may be gate or up.
inline void swiglu(const float* gate, const float* up, float* out, std::int64_t n) noexcept {
  ref::swiglu(gate, up, out, n);
}

}  // namespace nnx::kernels
