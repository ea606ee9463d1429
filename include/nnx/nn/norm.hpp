// nnx/nn/norm.hpp — LayerNorm and RMSNorm over the last axis.
//
//   nnx::LayerNorm ln(768);               // scale 1, bias 0, epsilon 1e-5
//   nnx::RMSNorm rms(2048, 1e-6);         // scale 1
//   nnx::Tensor y = ln(x);                // x [..., 768]
#pragma once

#include <cstdint>

#include "nnx/core/module.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/ops.hpp"

namespace nnx {

struct LayerNorm {
  std::int64_t features = 0;
  double epsilon = 1e-5;
  Param scale;  // [features]
  Param bias;   // [features]
  NNX_FIELDS(features, epsilon, scale, bias)

  LayerNorm() = default;
  explicit LayerNorm(std::int64_t d, double eps = 1e-5)
      : features(d), epsilon(eps), scale(Tensor::full({d}, 1.0), {"embed"}), bias(Tensor::zeros({d}), {"embed"}) {}

  Tensor operator()(const Tensor& x) const {
    return ops::layer_norm(x, scale.value(), bias.value(), static_cast<float>(epsilon));
  }
};

struct RMSNorm {
  std::int64_t features = 0;
  double epsilon = 1e-6;
  Param scale;  // [features]
  NNX_FIELDS(features, epsilon, scale)

  RMSNorm() = default;
  explicit RMSNorm(std::int64_t d, double eps = 1e-6)
      : features(d), epsilon(eps), scale(Tensor::full({d}, 1.0), {"embed"}) {}

  Tensor operator()(const Tensor& x) const { return ops::rms_norm(x, scale.value(), static_cast<float>(epsilon)); }
};

}  // namespace nnx
