// nnx/nn/mlp.hpp — the transformer feed-forward block: gelu (tanh approximation) or SwiGLU.
//
//   gelu:    down(gelu_tanh(up(x)))              GPT-2: up [C, 4C], down [4C, C], with biases
//   swiglu:  down(silu(gate(x)) * up(x))         Llama: gate, up [C, F], down [F, C], no biases
//
//   nnx::Mlp mlp(768, 3072, nnx::Activation::gelu_tanh, rngs);
//   nnx::Tensor y = mlp(x);                       // [..., 768] -> [..., 768]
#pragma once

#include <cstdint>
#include <optional>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/ops.hpp"

namespace nnx {

enum class Activation : std::uint8_t { gelu_tanh, swiglu };

struct Mlp {
  Activation activation = Activation::gelu_tanh;
  std::optional<Linear> gate;  // swiglu only: [C, F]
  Linear up;                   // [C, F]
  Linear down;                 // [F, C]
  NNX_FIELDS(activation, gate, up, down)

  Mlp() = default;
  Mlp(std::int64_t d_model, std::int64_t hidden, Activation act, Rngs& rngs, bool use_bias = true)
      : activation(act) {
    const LinearOptions to_hidden{.use_bias = use_bias, .init_stddev = 0.0f, .in_axis = "embed", .out_axis = "mlp"};
    const LinearOptions to_model{.use_bias = use_bias, .init_stddev = 0.0f, .in_axis = "mlp", .out_axis = "embed"};
    if (act == Activation::swiglu) gate = Linear(d_model, hidden, rngs, to_hidden);
    up = Linear(d_model, hidden, rngs, to_hidden);
    down = Linear(hidden, d_model, rngs, to_model);
  }

  // x: [..., C] -> [..., C]
  Tensor operator()(const Tensor& x) const {
    if (activation == Activation::swiglu) {
      if (!gate) throw InvalidArgument("Mlp: a swiglu MLP needs its gate projection");
      return down(ops::swiglu((*gate)(x), up(x)));
    }
    return down(ops::gelu_tanh(up(x)));
  }
};

}  // namespace nnx
