// nnx/ops/softmax.hpp — softmax over the last axis of a Tensor (attention weights).
//
//   nnx::Tensor p = nnx::ops::softmax(scores);   // scores: [B, H, T, S]
//   nnx::ops::softmax_(scores);                  // in place
//
// All f32, rank >= 1. Max-subtracted; a row of all -inf (fully masked) becomes zeros; see
// nnx/kernels/ref/softmax.hpp for the order and error bound. Errors: DTypeError, ShapeError,
// InvalidArgument (undefined tensors, out partially overlapping x). Abstract in, abstract out.
#pragma once

#include <cstdint>
#include <cstring>

#include "nnx/core/tensor.hpp"
#include "nnx/kernels/softmax.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

// Softmax of x over its last axis, in place.
inline void softmax_(Tensor x) {
  constexpr const char* op = "ops::softmax_";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  if (x.is_abstract()) return;
  kernels::softmax_rows(x.data<float>(), detail::leading_rows(x.shape()), x.shape()[x.rank() - 1]);
}

// out = softmax(x) over the last axis; out may be x itself.
inline void softmax_into(Tensor out, const Tensor& x) {
  constexpr const char* op = "ops::softmax";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  detail::require_out(op, out, x.shape());
  detail::require_same_or_disjoint(op, out, "x", x);
  if (out.is_abstract()) return;
  float* o = out.data<float>();
  const float* in = x.data<float>();
  if (o != in && x.nbytes()) std::memcpy(o, in, x.nbytes());
  kernels::softmax_rows(o, detail::leading_rows(x.shape()), x.shape()[x.rank() - 1]);
}

inline Tensor softmax(const Tensor& x) {
  detail::require_defined("ops::softmax", "x", x);
  Tensor out = detail::new_output(x.shape(), x.is_abstract());
  softmax_into(out, x);
  return out;
}

}  // namespace nnx::ops
