// nnx/ops/norm.hpp — LayerNorm (GPT-2) and RMSNorm (Llama) over the last axis of a Tensor.
//
//   nnx::Tensor h = nnx::ops::layer_norm(x, ln_scale, ln_bias, 1e-5f);   // x: [B, T, C]
//   nnx::Tensor h = nnx::ops::rms_norm(x, norm_weight, 1e-6f);
//   nnx::ops::rms_norm_into(h, x, norm_weight, 1e-6f);                   // preallocated h
//
// All f32; scale and bias are [C] for x [..., C]. Numerics: nnx/kernels/ref/norm.hpp (mean
// and variance in float with a fixed order; each row independent of the others). Errors:
// DTypeError, ShapeError (scale / bias / out shape), InvalidArgument (undefined tensors, out
// partially overlapping x; out == x is fine). Abstract inputs give abstract outputs.
#pragma once

#include <cstdint>

#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/kernels/norm.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

// out[..., C] = (x - mean) / sqrt(var + eps) * scale + bias over the last axis (var the
// biased variance). out may be x itself.
inline void layer_norm_into(Tensor out, const Tensor& x, const Tensor& scale, const Tensor& bias, float eps) {
  constexpr const char* op = "ops::layer_norm";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  const std::int64_t C = x.shape()[x.rank() - 1];
  detail::require_f32(op, "scale", scale);
  detail::require_shape(op, "scale", scale, Shape{C});
  detail::require_f32(op, "bias", bias);
  detail::require_shape(op, "bias", bias, Shape{C});
  detail::require_out(op, out, x.shape());
  detail::require_same_or_disjoint(op, out, "x", x);
  detail::require_disjoint(op, out, "scale", scale);
  detail::require_disjoint(op, out, "bias", bias);
  if (out.is_abstract()) return;
  kernels::layer_norm_rows(x.data<float>(), scale.data<float>(), bias.data<float>(), eps, out.data<float>(),
                           detail::leading_rows(x.shape()), C);
}

inline Tensor layer_norm(const Tensor& x, const Tensor& scale, const Tensor& bias, float eps) {
  detail::require_defined("ops::layer_norm", "x", x);
  Tensor out = detail::new_output(x.shape(), detail::any_abstract({&x, &scale, &bias}));
  layer_norm_into(out, x, scale, bias, eps);
  return out;
}

// out[..., C] = x / sqrt(mean(x²) + eps) * scale over the last axis. out may be x itself.
inline void rms_norm_into(Tensor out, const Tensor& x, const Tensor& scale, float eps) {
  constexpr const char* op = "ops::rms_norm";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  const std::int64_t C = x.shape()[x.rank() - 1];
  detail::require_f32(op, "scale", scale);
  detail::require_shape(op, "scale", scale, Shape{C});
  detail::require_out(op, out, x.shape());
  detail::require_same_or_disjoint(op, out, "x", x);
  detail::require_disjoint(op, out, "scale", scale);
  if (out.is_abstract()) return;
  kernels::rms_norm_rows(x.data<float>(), scale.data<float>(), eps, out.data<float>(), detail::leading_rows(x.shape()),
                         C);
}

inline Tensor rms_norm(const Tensor& x, const Tensor& scale, float eps) {
  detail::require_defined("ops::rms_norm", "x", x);
  Tensor out = detail::new_output(x.shape(), detail::any_abstract({&x, &scale}));
  rms_norm_into(out, x, scale, eps);
  return out;
}

}  // namespace nnx::ops
