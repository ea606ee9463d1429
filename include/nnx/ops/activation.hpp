// nnx/ops/activation.hpp — elementwise activations on Tensors: GELU (tanh approximation,
// GPT-2), SiLU, and SwiGLU (Llama's MLP: silu(gate) * up).
//
//   nnx::Tensor h = nnx::ops::gelu_tanh(nnx::ops::linear(x, c_fc, &c_fc_bias));
//   nnx::Tensor h = nnx::ops::swiglu(nnx::ops::matmul(x, w_gate), nnx::ops::matmul(x, w_up));
//   nnx::ops::gelu_tanh_into(h, h);                                   // in place
//
// All f32, any shape. Numerics and error bounds: nnx/kernels/ref/activation.hpp. Errors:
// DTypeError, ShapeError (gate / up / out shapes), InvalidArgument (undefined tensors, out
// partially overlapping an input; out may be an input itself). Abstract in, abstract out.
#pragma once

#include <cstdint>

#include "nnx/core/tensor.hpp"
#include "nnx/kernels/activation.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))); out may be x.
inline void gelu_tanh_into(Tensor out, const Tensor& x) {
  detail::unary_into("ops::gelu_tanh", out, x,
                     [](const float* in, float* o, std::int64_t n) { kernels::gelu_tanh(in, o, n); });
}

inline Tensor gelu_tanh(const Tensor& x) {
  detail::require_defined("ops::gelu_tanh", "x", x);
  Tensor out = detail::new_output(x.shape(), x.is_abstract());
  gelu_tanh_into(out, x);
  return out;
}

// out = x * sigmoid(x); out may be x.
inline void silu_into(Tensor out, const Tensor& x) {
  detail::unary_into("ops::silu", out, x, [](const float* in, float* o, std::int64_t n) { kernels::silu(in, o, n); });
}

inline Tensor silu(const Tensor& x) {
  detail::require_defined("ops::silu", "x", x);
  Tensor out = detail::new_output(x.shape(), x.is_abstract());
  silu_into(out, x);
  return out;
}

// out = silu(gate) * up, gate and up of one shape; out may be gate or up.
inline void swiglu_into(Tensor out, const Tensor& gate, const Tensor& up) {
  detail::binary_into("ops::swiglu", out, "gate", gate, "up", up,
                      [](const float* g, const float* u, float* o, std::int64_t n) { kernels::swiglu(g, u, o, n); });
}

inline Tensor swiglu(const Tensor& gate, const Tensor& up) {
  detail::require_defined("ops::swiglu", "gate", gate);
  Tensor out = detail::new_output(gate.shape(), detail::any_abstract({&gate, &up}));
  swiglu_into(out, gate, up);
  return out;
}

}  // namespace nnx::ops
