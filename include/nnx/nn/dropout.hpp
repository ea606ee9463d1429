// nnx/nn/dropout.hpp — Dropout: zeroes elements with probability `rate` while training.
//
// It draws its masks from the "dropout" stream of the Rngs it was given (falling back to
// "default"); the Rngs is shared, so its counter advances like the caller's. When not
// training (deterministic), or with rate 0, it returns its input unchanged.
//
//   nnx::Dropout drop(0.1, rngs);
//   nnx::Tensor y = drop(x);                 // training: x * mask / 0.9
//   drop.deterministic = true; drop(x);      // identity
#pragma once

#include <cstdint>
#include <string>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx {

struct Dropout {
  double rate = 0.0;
  bool deterministic = false;
  Rngs rngs;
  NNX_FIELDS(rate, deterministic, rngs)

  Dropout() = default;
  Dropout(double rate_, Rngs& rngs_, bool deterministic_ = false)
      : rate(rate_), deterministic(deterministic_), rngs(rngs_) {
    if (!(rate >= 0.0 && rate < 1.0))
      throw InvalidArgument("Dropout: rate must be in [0, 1), got " + std::to_string(rate));
  }

  // x: any f32 shape. Each element is kept with probability 1 - rate and scaled by 1 / (1 - rate).
  Tensor operator()(const Tensor& x) {
    if (deterministic || rate == 0.0) return x;
    return apply(x, rngs.dropout());
  }

  // x masked by the draws of `key` (the same key gives the same mask: a training backward pass
  // applies the forward's key to the gradient, since the mask and scale are linear in x).
  Tensor apply(const Tensor& x, const RngKey& key) const {
    if (x.dtype() != DType::f32) throw DTypeError("Dropout: expected f32 input, found " + describe(x));
    Tensor out = Tensor::empty(x.shape());
    const float* in = x.data<float>();
    float* o = out.data<float>();
    const auto n = static_cast<std::size_t>(x.numel());
    const auto threshold = static_cast<std::uint32_t>(rate * 4294967296.0);  // keep when bits >= threshold
    const float scale = static_cast<float>(1.0 / (1.0 - rate));
    for (std::size_t block = 0; block * 4 < n; ++block) {
      const auto b = detail::philox4x32_10(
          {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, detail::domain_bits}, key);
      for (std::size_t lane = 0; lane < 4 && block * 4 + lane < n; ++lane) {
        const std::size_t i = block * 4 + lane;
        o[i] = b[lane] >= threshold ? in[i] * scale : 0.0f;
      }
    }
    return out;
  }
};

}  // namespace nnx
