// nnx/ops/rope.hpp — rotary position embedding on Tensors, in place, rotate-half convention
// (Hugging Face Llama).
//
//   // q: [B, T, H, D], positions: [B, T] i32 (each batch slot at its own position)
//   nnx::ops::rope_(q, positions, 10000.0f);
//   nnx::ops::rope_(k, positions, 10000.0f);
//   nnx::ops::rope_(q, positions, inv_freq);   // inv_freq: [D / 2] f32, e.g. Llama 3 scaled
//   nnx::ops::rope_(q, positions, 500000.0f, scaling);   // or theta's, rewritten by a rope_scaling
//
// x is f32 [..., H, D] with D even and positions i32 of shape x.shape[:-2] (so [B, T, H, D]
// with [B, T], or [T, H, D] with [T]). Numerics: nnx/kernels/ref/rope.hpp (HF's float32
// angles). Errors: DTypeError, ShapeError (ranks, odd D, positions / inv_freq shapes),
// InvalidArgument (undefined tensors, positions or inv_freq overlapping x). An abstract x
// is only checked.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/kernels/rope.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

namespace detail {

// Checks x and positions; returns true when there is something to compute.
inline bool rope_check(const char* op, const Tensor& x, const Tensor& positions) {
  require_f32(op, "x", x);
  require_min_rank(op, "x", x, 3);
  const std::int64_t D = x.shape()[x.rank() - 1];
  if (D % 2 != 0)
    throw ShapeError(std::string(op) + ": x " + describe(x) + " has an odd head size " + std::to_string(D));
  require_dtype(op, "positions", positions, DType::i32);
  require_shape(op, "positions", positions, Shape(x.shape().dims().first(x.rank() - 2)));
  require_disjoint(op, x, "positions", positions, "x");
  return !x.is_abstract();
}

}  // namespace detail

// Rotates x[..., H, D] in place, each row of H heads at its position, with inv_freq =
// 1 / theta^(2i / D) rewritten by `scaling` (kernels::rope_inv_freq; default: none). The
// caller validates scaling (nnx::RopeScaling::validate).
inline void rope_(Tensor x, const Tensor& positions, float theta, const kernels::RopeFreqScaling& scaling = {}) {
  if (!detail::rope_check("ops::rope_", x, positions)) return;
  const std::int64_t H = x.shape()[x.rank() - 2], D = x.shape()[x.rank() - 1];
  kernels::rope_rotate_half(x.data<float>(), positions.data<std::int32_t>(), positions.numel(), H, D, theta, scaling);
}

// The same with given inverse frequencies inv_freq[D / 2] (f32).
inline void rope_(Tensor x, const Tensor& positions, const Tensor& inv_freq) {
  constexpr const char* op = "ops::rope_";
  detail::rope_check(op, x, positions);
  const std::int64_t H = x.shape()[x.rank() - 2], D = x.shape()[x.rank() - 1];
  detail::require_f32(op, "inv_freq", inv_freq);
  detail::require_shape(op, "inv_freq", inv_freq, Shape{D / 2});
  detail::require_disjoint(op, x, "inv_freq", inv_freq, "x");
  if (x.is_abstract()) return;
  kernels::rope_rotate_half(x.data<float>(), positions.data<std::int32_t>(), positions.numel(), H, D,
                            inv_freq.data<float>());
}

}  // namespace nnx::ops
