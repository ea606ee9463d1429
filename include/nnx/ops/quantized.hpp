// nnx/ops/quantized.hpp — AQT-style int8 on Tensors: absmax quantization of weights and
// activations, dequantization, and the int8 matrix products a quantized Linear runs.
//
// A quantized weight is a QTensor {qvalue: i8 [N, K], scale: {f32 [N]}}: one row per output
// channel, its contraction axis contiguous (as nn.Linear's [out, in]), one scale per output
// channel. AQT's numerics: scale = max|w| over the contraction axis / 127.5 (an all-zero
// channel gets 1), q = round-half-to-even(w / scale) clipped to [-127, 127].
//
//   nnx::QTensor w = nnx::ops::quantize_kernel(kernel);           // f32 [K, N] -> i8 [N, K], scale [N]
//   nnx::Tensor y = nnx::ops::quantized_linear(x, w, nnx::QuantScheme::w8a8, &bias);
//
// Two numerics (QuantScheme):
//   weight_only: y = scale_w[n] · Σ_k x[k] q[n, k] in f32 (activations stay f32);
//   w8a8:        x is quantized per row on the fly the same way, Σ_k xq[k] q[n, k] is exact in
//                int32, and y = (acc · scale_x) · scale_w[n].
// Each output row depends on its own input row only, as in the f32 path: a request's
// numbers do not depend on its batch or the thread count.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/kernels/gemm_i8.hpp"
#include "nnx/kernels/quantize.hpp"
#include "nnx/ops/check.hpp"

namespace nnx {

enum class QuantScheme : std::uint8_t { none, weight_only, w8a8 };

inline std::string_view quant_scheme_name(QuantScheme s) {
  switch (s) {
    case QuantScheme::none: return "none";
    case QuantScheme::weight_only: return "weight-only";
    case QuantScheme::w8a8: return "w8a8";
  }
  return "?";
}

// "none", "weight-only" (or "weight_only", "int8w"), "w8a8" (or "int8", MaxText's name).
inline QuantScheme parse_quant_scheme(std::string_view name) {
  if (name == "none") return QuantScheme::none;
  if (name == "weight-only" || name == "weight_only" || name == "int8w") return QuantScheme::weight_only;
  if (name == "w8a8" || name == "int8") return QuantScheme::w8a8;
  throw InvalidArgument("unknown quantization scheme \"" + std::string(name) + "\" (none, weight-only, w8a8)");
}

namespace ops {

namespace detail {

// A quantized weight's qvalue [N, K] and its scale [N]; throws naming what is wrong.
inline void require_qweight(const char* op, const QTensor& w) {
  require_dtype(op, "qvalue", w.qvalue, DType::i8);
  require_rank(op, "qvalue", w.qvalue, 2);
  if (w.scale.size() != 1)
    throw ShapeError(std::string(op) + ": a quantized weight has one scale tensor, found " +
                     std::to_string(w.scale.size()));
  require_f32(op, "scale", w.scale[0]);
  require_shape(op, "scale", w.scale[0], Shape{w.qvalue.shape()[0]});
}

inline QTensor new_qweight(std::int64_t N, std::int64_t K, bool abstract) {
  if (abstract) return QTensor{Tensor::abstract({N, K}, DType::i8), {Tensor::abstract({N}, DType::f32)}};
  return QTensor{Tensor::empty({N, K}, DType::i8), {Tensor::empty({N}, DType::f32)}};
}

}  // namespace detail

// Per-row absmax quantization of w [N, K] (each row an output channel, or an embedding row).
inline QTensor quantize_rows(const Tensor& w) {
  constexpr const char* op = "ops::quantize_rows";
  detail::require_f32(op, "w", w);
  detail::require_rank(op, "w", w, 2);
  const std::int64_t N = w.shape()[0], K = w.shape()[1];
  QTensor q = detail::new_qweight(N, K, w.is_abstract());
  if (!w.is_abstract())
    kernels::quantize_rows_absmax(N, K, w.data<float>(), K, q.qvalue.data<std::int8_t>(), K, q.scale[0].data<float>());
  return q;
}

// A Linear kernel [K = in, N = out] quantized per output channel into the [N, K] layout.
inline QTensor quantize_kernel(const Tensor& kernel) {
  constexpr const char* op = "ops::quantize_kernel";
  detail::require_f32(op, "kernel", kernel);
  detail::require_rank(op, "kernel", kernel, 2);
  const std::int64_t K = kernel.shape()[0], N = kernel.shape()[1];
  QTensor q = detail::new_qweight(N, K, kernel.is_abstract());
  if (!kernel.is_abstract())
    kernels::quantize_columns_absmax(K, N, kernel.data<float>(), N, q.qvalue.data<std::int8_t>(), K,
                                     q.scale[0].data<float>());
  return q;
}

// qvalue[n, k] · scale[n] -> f32 [N, K].
inline Tensor dequantize(const QTensor& w) {
  constexpr const char* op = "ops::dequantize";
  detail::require_qweight(op, w);
  const std::int64_t N = w.qvalue.shape()[0], K = w.qvalue.shape()[1];
  Tensor out = detail::new_output(Shape{N, K}, w.qvalue.is_abstract() || w.scale[0].is_abstract());
  if (!out.is_abstract())
    kernels::dequantize_rows(N, K, w.qvalue.data<std::int8_t>(), K, w.scale[0].data<float>(), out.data<float>(), K);
  return out;
}

// x [..., K] · w [N, K]ᵀ under `scheme` (+ bias [N]) -> f32 [..., N].
inline Tensor quantized_linear(const Tensor& x, const QTensor& w, QuantScheme scheme, const Tensor* bias = nullptr) {
  constexpr const char* op = "ops::quantized_linear";
  detail::require_qweight(op, w);
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  const std::int64_t N = w.qvalue.shape()[0], K = w.qvalue.shape()[1];
  if (x.shape()[x.rank() - 1] != K)
    throw ShapeError(std::string(op) + ": x " + describe(x) + " and qvalue " + describe(w.qvalue) +
                     " do not contract: x's last axis is " + std::to_string(x.shape()[x.rank() - 1]) +
                     ", qvalue's axis 1 is " + std::to_string(K));
  if (bias) {
    detail::require_f32(op, "bias", *bias);
    detail::require_shape(op, "bias", *bias, Shape{N});
  }
  if (scheme == QuantScheme::none)
    throw InvalidArgument(std::string(op) + ": scheme none has no quantized product (use ops::linear)");
  const Shape shape = detail::with_last(x.shape(), N);
  Tensor out = detail::new_output(
      shape, detail::any_abstract({&x, &w.qvalue, &w.scale[0]}) || (bias && bias->is_abstract()));
  if (out.is_abstract()) return out;
  const std::int64_t M = detail::leading_rows(shape);
  const std::int8_t* q = w.qvalue.data<std::int8_t>();
  const float* ws = w.scale[0].data<float>();
  if (scheme == QuantScheme::weight_only) {
    kernels::gemm_f32_w8(M, N, K, x.data<float>(), K, q, K, ws, out.data<float>(), N);
  } else {
    Tensor xq = Tensor::empty({M, K}, DType::i8);
    Tensor xs = Tensor::empty({M}, DType::f32);
    kernels::quantize_rows_absmax(M, K, x.data<float>(), K, xq.data<std::int8_t>(), K, xs.data<float>());
    kernels::gemm_i8_i8(M, N, K, xq.data<std::int8_t>(), K, xs.data<float>(), q, K, ws, out.data<float>(), N);
  }
  if (bias) kernels::add_bias_rows(out.data<float>(), bias->data<float>(), M, N);
  return out;
}

// Rows of a quantized table [V, C] at ids (i32 or i64, any shape), dequantized -> f32 [..., C].
inline Tensor quantized_embedding(const QTensor& table, const Tensor& ids) {
  constexpr const char* op = "ops::quantized_embedding";
  detail::require_qweight(op, table);
  detail::require_defined(op, "ids", ids);
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    throw DTypeError(std::string(op) + ": ids must be i32 or i64, found " + describe(ids));
  const std::int64_t V = table.qvalue.shape()[0], C = table.qvalue.shape()[1];
  Shape shape = ids.shape();
  shape.push_back(C);
  Tensor out = detail::new_output(shape, detail::any_abstract({&ids, &table.qvalue, &table.scale[0]}));
  if (out.is_abstract()) return out;
  const std::int64_t n = ids.numel();
  auto id_at = [&](std::int64_t i) -> std::int64_t {
    return ids.dtype() == DType::i32 ? ids.data<std::int32_t>()[i] : ids.data<std::int64_t>()[i];
  };
  for (std::int64_t i = 0; i < n; ++i)
    if (id_at(i) < 0 || id_at(i) >= V)
      throw InvalidArgument(std::string(op) + ": id " + std::to_string(id_at(i)) + " at flat position " +
                            std::to_string(i) + " is outside [0, " + std::to_string(V) + ")");
  const std::int8_t* q = table.qvalue.data<std::int8_t>();
  const float* s = table.scale[0].data<float>();
  float* o = out.data<float>();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t row = id_at(i);
    kernels::dequantize_rows(1, C, q + row * C, C, s + row, o + i * C, C);
  }
  return out;
}

}  // namespace ops
}  // namespace nnx
