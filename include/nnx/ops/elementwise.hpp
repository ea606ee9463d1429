// nnx/ops/elementwise.hpp — elementwise sums of Tensors of one shape (residual connections).
//
//   x = nnx::ops::add(x, attn_out);   // new tensor
//   nnx::ops::add_(x, mlp_out);       // x += mlp_out, in place
//
// All f32, shapes equal (no broadcasting: a bias goes through nnx::ops::linear). Errors:
// DTypeError, ShapeError, InvalidArgument (undefined tensors, out partially overlapping an
// input). Abstract in, abstract out.
#pragma once

#include <cstdint>

#include "nnx/core/tensor.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

// out = a + b; out may be a or b.
inline void add_into(Tensor out, const Tensor& a, const Tensor& b) {
  detail::binary_into("ops::add", out, "a", a, "b", b,
                      [](const float* x, const float* y, float* o, std::int64_t n) { kernels::add_f32(x, y, o, n); });
}

inline Tensor add(const Tensor& a, const Tensor& b) {
  detail::require_defined("ops::add", "a", a);
  Tensor out = detail::new_output(a.shape(), detail::any_abstract({&a, &b}));
  add_into(out, a, b);
  return out;
}

// a += b in place.
inline void add_(Tensor a, const Tensor& b) {
  detail::binary_into("ops::add_", a, "a", a, "b", b,
                      [](const float* x, const float* y, float* o, std::int64_t n) { kernels::add_f32(x, y, o, n); });
}

}  // namespace nnx::ops
