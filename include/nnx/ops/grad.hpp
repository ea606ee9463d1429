// nnx/ops/grad.hpp — the backward halves of the ops a transformer trains through: given the
// forward's inputs and the gradient of its output, each returns the gradient of its input and
// adds the gradients of its parameters into the tensors it is handed (so gradients of a
// parameter used twice, or of several micro-batches, sum in place).
//
//   // y = linear(x, kernel, bias) forward; then
//   nnx::Tensor dx = nnx::ops::linear_backward(x, kernel, dy, dkernel, &dbias);
//   nnx::Tensor dx2 = nnx::ops::layer_norm_backward(x, scale, dy, 1e-5f, dscale, dbias);
//   auto [loss_sum, dlogits] = nnx::ops::cross_entropy(logits, targets, 1.0f / n_valid);
//   // the output head fused with the loss over 8 vocabulary tiles (no [rows, V] logits):
//   auto [loss, dhidden] = nnx::ops::head_cross_entropy(hidden, table, nnx::ops::HeadLayout::table,
//                                                       targets, 1.0f / n_valid, -100, 8, &dtable);
//
// Everything is f32, shapes are checked (ShapeError / DTypeError naming the operand), and every
// result is bitwise the same on any thread count: the kernels (nnx/kernels/*.hpp, their
// `_backward` entries) sum each element in an order fixed by the shapes alone.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/kernels/activation.hpp"
#include "nnx/kernels/attention.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/kernels/gemm.hpp"
#include "nnx/kernels/norm.hpp"
#include "nnx/kernels/rope.hpp"
#include "nnx/kernels/softmax.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

namespace detail {

inline void require_same_shape(const char* op, const char* name, const Tensor& t, const char* ref_name,
                               const Tensor& ref) {
  require_f32(op, name, t);
  if (t.shape() != ref.shape())
    throw ShapeError(prefix(op, name) + describe(t) + " does not match " + ref_name + " " + describe(ref));
}

// A gradient accumulator: f32, the parameter's shape, defined.
inline void require_grad(const char* op, const char* name, const Tensor& grad, const Shape& shape) {
  require_defined(op, name, grad);
  require_f32(op, name, grad);
  require_shape(op, name, grad, shape);
}

}  // namespace detail

// Backward of y = x · kernel + bias (kernel [in, out]): returns dx [..., in] = dy · kernelᵀ and
// adds xᵀ · dy to dkernel [in, out] and the column sums of dy to *dbias [out] (when given).
inline Tensor linear_backward(const Tensor& x, const Tensor& kernel, const Tensor& dy, Tensor& dkernel,
                              Tensor* dbias = nullptr) {
  constexpr const char* op = "ops::linear_backward";
  detail::require_f32(op, "x", x);
  detail::require_f32(op, "kernel", kernel);
  detail::require_rank(op, "kernel", kernel, 2);
  const std::int64_t in = kernel.dim(0), out = kernel.dim(1);
  detail::require_shape(op, "x", x, detail::with_last(x.shape(), in));
  detail::require_shape(op, "dy", dy, detail::with_last(x.shape(), out));
  detail::require_f32(op, "dy", dy);
  detail::require_grad(op, "dkernel", dkernel, kernel.shape());
  if (dbias) detail::require_grad(op, "dbias", *dbias, Shape{out});
  const std::int64_t M = detail::leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape());
  kernels::gemm_f32_t(false, true, M, in, out, dy.data<float>(), out, kernel.data<float>(), out, dx.data<float>(), in);
  kernels::gemm_f32_t(true, false, in, out, M, x.data<float>(), in, dy.data<float>(), out, dkernel.data<float>(), out,
                      true);
  if (dbias) kernels::add_column_sums(dy.data<float>(), M, out, dbias->data<float>());
  return dx;
}

// Backward of logits = x · tableᵀ (a tied output head, table [V, C]): returns dx [..., C] =
// dlogits · table and adds dlogitsᵀ · x to dtable [V, C].
inline Tensor matmul_transposed_backward(const Tensor& x, const Tensor& table, const Tensor& dlogits, Tensor& dtable) {
  constexpr const char* op = "ops::matmul_transposed_backward";
  detail::require_f32(op, "x", x);
  detail::require_f32(op, "table", table);
  detail::require_rank(op, "table", table, 2);
  const std::int64_t V = table.dim(0), C = table.dim(1);
  detail::require_shape(op, "x", x, detail::with_last(x.shape(), C));
  detail::require_f32(op, "dlogits", dlogits);
  detail::require_shape(op, "dlogits", dlogits, detail::with_last(x.shape(), V));
  detail::require_grad(op, "dtable", dtable, table.shape());
  const std::int64_t M = detail::leading_rows(x.shape());
  Tensor dx = Tensor::empty(x.shape());
  kernels::gemm_f32(M, C, V, dlogits.data<float>(), V, table.data<float>(), C, dx.data<float>(), C);
  kernels::gemm_f32_t(true, false, V, C, M, dlogits.data<float>(), V, x.data<float>(), C, dtable.data<float>(), C,
                      true);
  return dx;
}

// Backward of a lookup out = table[ids]: adds each row of dy [..., C] into dtable [V, C] at its
// id (ids i32 of dy's leading shape, each in [0, V)).
inline void embedding_backward(const Tensor& ids, const Tensor& dy, Tensor& dtable) {
  constexpr const char* op = "ops::embedding_backward";
  detail::require_dtype(op, "ids", ids, DType::i32);
  detail::require_f32(op, "dy", dy);
  detail::require_rank(op, "dtable", dtable, 2);
  detail::require_grad(op, "dtable", dtable, dtable.shape());
  const std::int64_t V = dtable.dim(0), C = dtable.dim(1);
  Shape expected = ids.shape();
  expected.push_back(C);
  detail::require_shape(op, "dy", dy, expected);
  const std::int32_t* id = ids.data<std::int32_t>();
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    if (id[i] < 0 || id[i] >= V)
      throw InvalidArgument(std::string(op) + ": id " + std::to_string(id[i]) + " at flat position " +
                            std::to_string(i) + " is outside [0, " + std::to_string(V) + ")");
  kernels::scatter_add_rows(dy.data<float>(), id, ids.numel(), C, dtable.data<float>());
}

// Backward of layer_norm(x, scale, bias, eps): returns dx and adds to dscale and dbias [C].
inline Tensor layer_norm_backward(const Tensor& x, const Tensor& scale, const Tensor& dy, float eps, Tensor& dscale,
                                  Tensor& dbias) {
  constexpr const char* op = "ops::layer_norm_backward";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  const std::int64_t C = x.shape()[x.rank() - 1], M = detail::leading_rows(x.shape());
  detail::require_f32(op, "scale", scale);
  detail::require_shape(op, "scale", scale, Shape{C});
  detail::require_same_shape(op, "dy", dy, "x", x);
  detail::require_grad(op, "dscale", dscale, Shape{C});
  detail::require_grad(op, "dbias", dbias, Shape{C});
  Tensor dx = Tensor::empty(x.shape());
  Tensor stats = Tensor::empty({M, 2});
  kernels::layer_norm_backward(x.data<float>(), scale.data<float>(), dy.data<float>(), eps, dx.data<float>(),
                               stats.data<float>(), dscale.data<float>(), dbias.data<float>(), M, C);
  return dx;
}

// Backward of rms_norm(x, scale, eps): returns dx and adds to dscale [C].
inline Tensor rms_norm_backward(const Tensor& x, const Tensor& scale, const Tensor& dy, float eps, Tensor& dscale) {
  constexpr const char* op = "ops::rms_norm_backward";
  detail::require_f32(op, "x", x);
  detail::require_min_rank(op, "x", x, 1);
  const std::int64_t C = x.shape()[x.rank() - 1], M = detail::leading_rows(x.shape());
  detail::require_f32(op, "scale", scale);
  detail::require_shape(op, "scale", scale, Shape{C});
  detail::require_same_shape(op, "dy", dy, "x", x);
  detail::require_grad(op, "dscale", dscale, Shape{C});
  Tensor dx = Tensor::empty(x.shape());
  Tensor stats = Tensor::empty({M, 2});
  kernels::rms_norm_backward(x.data<float>(), scale.data<float>(), dy.data<float>(), eps, dx.data<float>(),
                             stats.data<float>(), dscale.data<float>(), M, C);
  return dx;
}

// Backward of gelu_tanh(x): dy * gelu_tanh'(x).
inline Tensor gelu_tanh_backward(const Tensor& x, const Tensor& dy) {
  constexpr const char* op = "ops::gelu_tanh_backward";
  detail::require_f32(op, "x", x);
  detail::require_same_shape(op, "dy", dy, "x", x);
  Tensor dx = Tensor::empty(x.shape());
  kernels::gelu_tanh_backward(x.data<float>(), dy.data<float>(), dx.data<float>(), x.numel());
  return dx;
}

// Backward of swiglu(gate, up): (dgate, dup).
inline std::pair<Tensor, Tensor> swiglu_backward(const Tensor& gate, const Tensor& up, const Tensor& dy) {
  constexpr const char* op = "ops::swiglu_backward";
  detail::require_f32(op, "gate", gate);
  detail::require_same_shape(op, "up", up, "gate", gate);
  detail::require_same_shape(op, "dy", dy, "gate", gate);
  Tensor dgate = Tensor::empty(gate.shape()), dup = Tensor::empty(gate.shape());
  kernels::swiglu_backward(gate.data<float>(), up.data<float>(), dy.data<float>(), dgate.data<float>(),
                           dup.data<float>(), gate.numel());
  return {std::move(dgate), std::move(dup)};
}

// Backward of rope_(x, positions, theta, scaling), in place on dy [..., H, D]: a rotation's
// transpose is the rotation by the opposite angle, so dy is rotated at the negated positions
// (the same frequencies: float(-p) * inv is exactly -(float(p) * inv)).
inline void rope_backward_(Tensor dy, const Tensor& positions, float theta,
                           const kernels::RopeFreqScaling& scaling = {}) {
  constexpr const char* op = "ops::rope_backward_";
  detail::require_f32(op, "dy", dy);
  detail::require_min_rank(op, "dy", dy, 3);
  const std::int64_t H = dy.shape()[dy.rank() - 2], D = dy.shape()[dy.rank() - 1];
  if (D % 2 != 0) throw ShapeError(std::string(op) + ": dy " + describe(dy) + " has an odd head size");
  detail::require_dtype(op, "positions", positions, DType::i32);
  detail::require_shape(op, "positions", positions, Shape(dy.shape().dims().first(dy.rank() - 2)));
  Tensor negated = Tensor::empty(positions.shape(), DType::i32);
  const std::int32_t* p = positions.data<std::int32_t>();
  std::int32_t* n = negated.data<std::int32_t>();
  for (std::int64_t i = 0; i < positions.numel(); ++i) {
    if (p[i] < 0) throw InvalidArgument(std::string(op) + ": negative position " + std::to_string(p[i]));
    n[i] = -p[i];
  }
  kernels::rope_rotate_half(dy.data<float>(), n, positions.numel(), H, D, theta, scaling);
}

// Backward of causal self-attention over whole sequences (position t attends to 0..t):
// q, dout [B, T, H, D], k, v [B, T, Hkv, D]; returns (dq, dk, dv) of their shapes.
struct AttentionGrads {
  Tensor dq, dk, dv;
};
inline AttentionGrads attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                                         float scale) {
  constexpr const char* op = "ops::attention_backward";
  detail::require_f32(op, "q", q);
  detail::require_rank(op, "q", q, 4);
  detail::require_f32(op, "k", k);
  detail::require_rank(op, "k", k, 4);
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), Hkv = k.dim(2);
  if (Hkv <= 0 || H % Hkv != 0 || k.shape() != Shape{B, T, Hkv, D})
    throw ShapeError(std::string(op) + ": k " + describe(k) + " does not fit q " + describe(q) +
                     " (expected [B, T, Hkv, D] with H a multiple of Hkv)");
  detail::require_same_shape(op, "v", v, "k", k);
  detail::require_same_shape(op, "dout", dout, "q", q);
  AttentionGrads g{Tensor::empty(q.shape()), Tensor::empty(k.shape()), Tensor::empty(k.shape())};
  Tensor scratch = Tensor::empty({kernels::attend_backward_scratch(T)});
  kernels::attend_backward(q.data<float>(), k.data<float>(), v.data<float>(), dout.data<float>(), B, T, H, Hkv, D,
                           scale, g.dq.data<float>(), g.dk.data<float>(), g.dv.data<float>(), scratch.data<float>());
  return g;
}

// Softmax cross-entropy of logits [..., V] against targets (i32, the leading shape): returns
// the sum over valid targets of -log softmax(logits)[target] (as a double, summed in row
// order) and the gradient of `weight` times that sum, in the logits' own buffer when they are
// passed as an rvalue holding the only reference (else a copy). Targets equal to `ignore` are
// skipped (loss 0, zero gradient); any other target outside [0, V) is an InvalidArgument.
// Mean over n valid targets: weight = 1 / n.
struct CrossEntropy {
  double loss_sum = 0.0;
  Tensor dlogits;
  Tensor row_loss;  // f32 of the targets' shape: each position's -log softmax[target] (0 where ignored)
};
inline CrossEntropy cross_entropy(Tensor logits, const Tensor& targets, float weight, std::int32_t ignore = -100) {
  constexpr const char* op = "ops::cross_entropy";
  detail::require_f32(op, "logits", logits);
  detail::require_min_rank(op, "logits", logits, 1);
  detail::require_dtype(op, "targets", targets, DType::i32);
  const std::int64_t V = logits.shape()[logits.rank() - 1], M = detail::leading_rows(logits.shape());
  detail::require_shape(op, "targets", targets, Shape(logits.shape().dims().first(logits.rank() - 1)));
  const std::int32_t* t = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < M; ++i)
    if (t[i] != ignore && (t[i] < 0 || t[i] >= V))
      throw InvalidArgument(std::string(op) + ": target " + std::to_string(t[i]) + " at flat position " +
                            std::to_string(i) + " is outside [0, " + std::to_string(V) + ") (ignore id " +
                            std::to_string(ignore) + ")");
  if (logits.use_count() > 1) logits = logits.clone();
  Tensor row_loss = Tensor::empty({M});
  kernels::cross_entropy_rows(logits.data<float>(), t, M, V, weight, ignore, row_loss.data<float>());
  CrossEntropy out;
  const float* rl = row_loss.data<float>();
  for (std::int64_t i = 0; i < M; ++i) out.loss_sum += rl[i];
  out.dlogits = std::move(logits);
  out.row_loss = row_loss.reshape(targets.shape().dims());
  return out;
}

// The largest pre-softmax logit scale * q_t · k_s (s <= t: causal by index, as training's
// attention) of each query head over the batch, max-accumulated into max_logits f32 [H]:
// q [B, T, H, D], k [B, T, Hkv, D] (query head h reads KV head h / (H / Hkv)). What QK-Clip
// reads (MuonClip's max logit). A maximum is exact in any order: the same on any thread count.
inline void max_attention_logits_(const Tensor& q, const Tensor& k, float scale, Tensor& max_logits) {
  constexpr const char* op = "ops::max_attention_logits_";
  detail::require_f32(op, "q", q);
  detail::require_rank(op, "q", q, 4);
  detail::require_f32(op, "k", k);
  detail::require_rank(op, "k", k, 4);
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), Hkv = k.dim(2);
  if (Hkv <= 0 || H % Hkv != 0 || k.shape() != Shape{B, T, Hkv, D})
    throw ShapeError(std::string(op) + ": k " + describe(k) + " does not fit q " + describe(q));
  detail::require_grad(op, "max_logits", max_logits, Shape{H});
  Tensor scores = Tensor::empty({T, T});
  float* S = scores.data<float>();
  float* out = max_logits.data<float>();
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h) {
      const float* qh = q.data<float>() + b * T * H * D + h * D;
      const float* kh = k.data<float>() + b * T * Hkv * D + (h / (H / Hkv)) * D;
      kernels::gemm_f32_t(false, true, T, T, D, qh, H * D, kh, Hkv * D, S, T);
      float m = out[h];
      for (std::int64_t t = 0; t < T; ++t)
        for (std::int64_t u = 0; u <= t; ++u) m = std::max(m, scale * S[t * T + u]);
      out[h] = m;
    }
}

// How an output head's weight maps hidden states to logits: an embedding table [V, C] (a tied
// head: logits = hidden · tableᵀ) or a Linear kernel [C, V] (logits = hidden · kernel).
enum class HeadLayout { table, kernel };

struct HeadCrossEntropy {
  double loss_sum = 0.0;
  Tensor dhidden;  // empty for an evaluation (no dweight, head not frozen)
};

// The output head and softmax cross-entropy fused over `tiles` vocabulary tiles of
// ceil(V / tiles) columns, so that the [rows, V] logits never exist whole: only one tile's
// [rows, V / tiles] at a time. hidden f32 [..., C]; targets i32 of hidden's leading shape (as
// cross_entropy: `ignore` skipped, any other outside [0, V) an InvalidArgument). Returns the
// summed loss and, when dweight (the weight's shape, f32) is given, adds `weight` times the
// gradient of that sum into *dweight and returns dhidden. frozen_head: the head takes no
// gradient (dweight null) but dhidden is returned, for the layers below (a LoRA fine-tune).
// Each tile's logits are computed twice (for the row statistics, then for the gradient), so
// the head's forward GEMM runs twice. Loss and gradients equal cross_entropy over the whole
// logits up to rounding (sums taken in another order); bitwise the same on any thread count.
inline HeadCrossEntropy head_cross_entropy(const Tensor& hidden, const Tensor& head, HeadLayout layout,
                                           const Tensor& targets, float weight, std::int32_t ignore,
                                           std::int64_t tiles, Tensor* dweight, bool frozen_head = false) {
  constexpr const char* op = "ops::head_cross_entropy";
  detail::require_f32(op, "hidden", hidden);
  detail::require_min_rank(op, "hidden", hidden, 1);
  detail::require_f32(op, "head", head);
  detail::require_rank(op, "head", head, 2);
  const std::int64_t C = hidden.shape()[hidden.rank() - 1], M = detail::leading_rows(hidden.shape());
  const bool table = layout == HeadLayout::table;
  const std::int64_t V = table ? head.dim(0) : head.dim(1);
  if ((table ? head.dim(1) : head.dim(0)) != C)
    throw ShapeError(std::string(op) + ": head " + describe(head) + " does not fit hidden " + describe(hidden) +
                     (table ? " (expected a table [V, C])" : " (expected a kernel [C, V])"));
  if (tiles < 1) throw InvalidArgument(std::string(op) + ": tiles must be >= 1, got " + std::to_string(tiles));
  detail::require_dtype(op, "targets", targets, DType::i32);
  detail::require_shape(op, "targets", targets, Shape(hidden.shape().dims().first(hidden.rank() - 1)));
  if (dweight) detail::require_grad(op, "dweight", *dweight, head.shape());
  const std::int32_t* t = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < M; ++i)
    if (t[i] != ignore && (t[i] < 0 || t[i] >= V))
      throw InvalidArgument(std::string(op) + ": target " + std::to_string(t[i]) + " at flat position " +
                            std::to_string(i) + " is outside [0, " + std::to_string(V) + ") (ignore id " +
                            std::to_string(ignore) + ")");

  const std::int64_t width = (V + std::min(tiles, V) - 1) / std::min(tiles, V);
  const float* h = hidden.data<float>();
  const float* W = head.data<float>();
  Tensor scratch = Tensor::empty({M, width});
  float* L = scratch.data<float>();
  const auto tile_logits = [&](std::int64_t v0, std::int64_t n) {
    if (table)
      kernels::gemm_f32_t(false, true, M, n, C, h, C, W + v0 * C, C, L, n);
    else
      kernels::gemm_f32(M, n, C, h, C, W + v0, V, L, n);
  };

  std::vector<float> row_max(static_cast<std::size_t>(M), -std::numeric_limits<float>::infinity());
  std::vector<float> row_sum(static_cast<std::size_t>(M), 0.0f), target_logit(static_cast<std::size_t>(M), 0.0f);
  for (std::int64_t v0 = 0; v0 < V; v0 += width) {
    const std::int64_t n = std::min(width, V - v0);
    tile_logits(v0, n);
    for (std::int64_t r = 0; r < M; ++r)
      if (t[r] != ignore && t[r] >= v0 && t[r] < v0 + n)
        target_logit[static_cast<std::size_t>(r)] = L[r * n + t[r] - v0];
    kernels::cross_entropy_tile_stats(L, t, M, n, ignore, row_max.data(), row_sum.data());
  }
  HeadCrossEntropy out;
  for (std::int64_t r = 0; r < M; ++r) {
    const auto i = static_cast<std::size_t>(r);
    if (t[r] != ignore) out.loss_sum += (row_max[i] - target_logit[i]) + std::log(row_sum[i]);
  }
  if (!dweight && !frozen_head) return out;

  out.dhidden = Tensor::empty(hidden.shape());
  float* dh = out.dhidden.data<float>();
  float* dW = dweight ? dweight->data<float>() : nullptr;
  for (std::int64_t v0 = 0; v0 < V; v0 += width) {
    const std::int64_t n = std::min(width, V - v0);
    tile_logits(v0, n);
    kernels::cross_entropy_tile_grad(L, t, M, n, v0, weight, ignore, row_max.data(), row_sum.data());
    const bool accumulate = v0 > 0;
    if (table) {
      kernels::gemm_f32_t(false, false, M, C, n, L, n, W + v0 * C, C, dh, C, accumulate);
      if (dW) kernels::gemm_f32_t(true, false, n, C, M, L, n, h, C, dW + v0 * C, C, true);
    } else {
      kernels::gemm_f32_t(false, true, M, C, n, L, n, W + v0, V, dh, C, accumulate);
      if (dW) kernels::gemm_f32_t(true, false, C, n, M, h, C, L, n, dW + v0, V, true);
    }
  }
  return out;
}

}  // namespace nnx::ops
