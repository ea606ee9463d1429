// nnx/ops/matmul.hpp — matrix products on Tensors: x · w, x · wᵀ (tied embedding logits) and
// Linear's x · kernel + bias, over any number of leading axes.
//
//   nnx::Tensor y = nnx::ops::matmul(x, w);                      // [B, T, C] · [C, 3C] -> [B, T, 3C]
//   nnx::Tensor logits = nnx::ops::matmul_transposed(h, wte);   // [B, T, C] · [V, C]ᵀ -> [B, T, V]
//   nnx::Tensor z = nnx::ops::linear(x, kernel, &bias);          // bias optional (pointer or optional)
//   nnx::ops::linear_into(z, x, kernel, &bias);                  // into preallocated storage
//   nnx::Tensor u = nnx::ops::linear_transposed(x, weight, &bias); // weight [out, in] (nn.Linear), e.g. bf16
//
// All tensors f32, except that a weight with one row per output feature (matmul_transposed's
// w, linear_transposed's weight) may also be bf16 or f16: it is read as stored and widened
// exactly in registers (nnx/kernels/gemm_w16.hpp), never copied. Each row of the result is
// bitwise the same whatever the other rows are (a request's logits do not depend on its
// batch; see nnx/kernels/gemm.hpp). Errors: DTypeError (a dtype not listed), ShapeError (ranks, contraction sizes, out's shape), InvalidArgument
// (undefined tensors, an output overlapping an input). With an abstract input (eval_shape)
// the result is abstract and nothing is computed; an `_into` with an abstract out only checks.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/kernels/gemm.hpp"
#include "nnx/kernels/gemm_w16.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

namespace detail {

// Checks x [..., K] against a rank-2 w whose contraction axis is `w_k_axis` (0 for [K, N],
// 1 for [N, K]); returns the result shape [..., N].
inline Shape matmul_shape(const char* op, const Tensor& x, const char* w_name, const Tensor& w, int w_k_axis) {
  require_f32(op, "x", x);
  // [N, K] weights may be 16-bit floats (read as stored); [K, N] ones are f32 only.
  if (w_k_axis == 0 || w.dtype() == DType::f32)
    require_f32(op, w_name, w);
  else if (w.dtype() != DType::bf16 && w.dtype() != DType::f16)
    throw DTypeError(std::string(op) + ": " + w_name + " must be f32, bf16 or f16, found " + describe(w));
  require_min_rank(op, "x", x, 1);
  require_rank(op, w_name, w, 2);
  const std::int64_t K = x.shape()[x.rank() - 1];
  const std::int64_t wk = w.shape()[static_cast<std::size_t>(w_k_axis)];
  if (K != wk)
    throw ShapeError(std::string(op) + ": x " + describe(x) + " and " + w_name + " " + describe(w) +
                     " do not contract: x's last axis is " + std::to_string(K) + ", " + w_name + "'s axis " +
                     std::to_string(w_k_axis) + " is " + std::to_string(wk));
  return with_last(x.shape(), w.shape()[static_cast<std::size_t>(1 - w_k_axis)]);
}

inline void matmul_into_impl(const char* op, Tensor& out, const Tensor& x, const char* w_name, const Tensor& w,
                             bool transposed, bool accumulate) {
  const Shape shape = matmul_shape(op, x, w_name, w, transposed ? 1 : 0);
  require_out(op, out, shape);
  require_disjoint(op, out, "x", x);
  require_disjoint(op, out, w_name, w);
  if (out.is_abstract()) return;
  const std::int64_t K = x.shape()[x.rank() - 1];
  const std::int64_t N = shape[shape.rank() - 1];
  const std::int64_t M = leading_rows(shape);
  if (transposed && w.dtype() != DType::f32) {
    const auto* bits = reinterpret_cast<const std::uint16_t*>(w.raw_data());
    if (w.dtype() == DType::bf16)
      kernels::gemm_f32_bf16(M, N, K, x.data<float>(), K, bits, K, out.data<float>(), N);
    else
      kernels::gemm_f32_f16(M, N, K, x.data<float>(), K, bits, K, out.data<float>(), N);
  } else if (transposed) {
    kernels::gemm_f32_bt(M, N, K, x.data<float>(), K, w.data<float>(), K, out.data<float>(), N);
  } else
    kernels::gemm_f32(M, N, K, x.data<float>(), K, w.data<float>(), N, out.data<float>(), N, accumulate);
}

}  // namespace detail

// out[..., N] = x[..., K] · w[K, N]. out must not overlap x or w.
inline void matmul_into(Tensor out, const Tensor& x, const Tensor& w) {
  detail::matmul_into_impl("ops::matmul_into", out, x, "w", w, false, false);
}

// x[..., K] · w[K, N] -> [..., N].
inline Tensor matmul(const Tensor& x, const Tensor& w) {
  Tensor out = detail::new_output(detail::matmul_shape("ops::matmul", x, "w", w, 0), detail::any_abstract({&x, &w}));
  detail::matmul_into_impl("ops::matmul", out, x, "w", w, false, false);
  return out;
}

// out[..., N] = x[..., K] · w[N, K]ᵀ (w holds one row per output feature, e.g. a tied
// embedding table [V, C]). out must not overlap x or w.
inline void matmul_transposed_into(Tensor out, const Tensor& x, const Tensor& w) {
  detail::matmul_into_impl("ops::matmul_transposed_into", out, x, "w", w, true, false);
}

// x[..., K] · w[N, K]ᵀ -> [..., N].
inline Tensor matmul_transposed(const Tensor& x, const Tensor& w) {
  Tensor out =
      detail::new_output(detail::matmul_shape("ops::matmul_transposed", x, "w", w, 1), detail::any_abstract({&x, &w}));
  detail::matmul_into_impl("ops::matmul_transposed", out, x, "w", w, true, false);
  return out;
}

// out[..., N] = x[..., K] · kernel[K, N] (+ bias[N] when bias is not null). Each output
// element is one chain starting from its bias: bias + x_0 k_0 + x_1 k_1 + ... (see
// nnx::kernels::gemm_f32's accumulate). out must not overlap x, kernel or bias.
inline void linear_into(Tensor out, const Tensor& x, const Tensor& kernel, const Tensor* bias = nullptr) {
  constexpr const char* op = "ops::linear";
  if (!bias) return detail::matmul_into_impl(op, out, x, "kernel", kernel, false, false);
  const Shape shape = detail::matmul_shape(op, x, "kernel", kernel, 0);
  detail::require_f32(op, "bias", *bias);
  const std::int64_t N = shape[shape.rank() - 1];
  detail::require_shape(op, "bias", *bias, Shape{N});
  detail::require_out(op, out, shape);
  detail::require_disjoint(op, out, "bias", *bias);
  if (!out.is_abstract()) {
    // Check the remaining arguments before writing anything into out.
    detail::require_disjoint(op, out, "x", x);
    detail::require_disjoint(op, out, "kernel", kernel);
    (void)x.data<float>();  // throws if x is abstract while out is not
    (void)kernel.data<float>();
    const float* b = bias->data<float>();
    float* o = out.data<float>();
    const std::int64_t rows = detail::leading_rows(shape);
    for (std::int64_t r = 0; r < rows; ++r) std::copy(b, b + N, o + r * N);
  }
  detail::matmul_into_impl(op, out, x, "kernel", kernel, false, true);
}

inline void linear_into(Tensor out, const Tensor& x, const Tensor& kernel, const std::optional<Tensor>& bias) {
  linear_into(std::move(out), x, kernel, bias ? &*bias : nullptr);
}

// x[..., K] · kernel[K, N] + bias[N] -> [..., N]; bias may be null / nullopt.
inline Tensor linear(const Tensor& x, const Tensor& kernel, const Tensor* bias = nullptr) {
  Tensor out = detail::new_output(detail::matmul_shape("ops::linear", x, "kernel", kernel, 0),
                                  detail::any_abstract({&x, &kernel}) || (bias && bias->is_abstract()));
  linear_into(out, x, kernel, bias);
  return out;
}

inline Tensor linear(const Tensor& x, const Tensor& kernel, const std::optional<Tensor>& bias) {
  return linear(x, kernel, bias ? &*bias : nullptr);
}

// x[..., K] · weight[N, K]ᵀ + bias[N] -> [..., N]: a Linear whose weight is stored as
// nn.Linear stores it, [out, in], in f32, bf16 or f16; bias (f32) may be null / nullopt.
inline Tensor linear_transposed(const Tensor& x, const Tensor& weight, const Tensor* bias = nullptr) {
  constexpr const char* op = "ops::linear_transposed";
  const Shape shape = detail::matmul_shape(op, x, "weight", weight, 1);
  const std::int64_t N = shape[shape.rank() - 1];
  if (bias) {
    detail::require_f32(op, "bias", *bias);
    detail::require_shape(op, "bias", *bias, Shape{N});
  }
  Tensor out = detail::new_output(shape, detail::any_abstract({&x, &weight}) || (bias && bias->is_abstract()));
  detail::matmul_into_impl(op, out, x, "weight", weight, true, false);
  if (bias && !out.is_abstract())
    kernels::add_bias_rows(out.data<float>(), bias->data<float>(), detail::leading_rows(shape), N);
  return out;
}

inline Tensor linear_transposed(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias) {
  return linear_transposed(x, weight, bias ? &*bias : nullptr);
}

}  // namespace nnx::ops
