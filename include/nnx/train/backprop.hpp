// nnx/train/backprop.hpp — explicit forward/backward pairs for every layer of the GPT-2 and
// Llama families (llm.c's way: no tape, no graph capture). Each `forward(module, ..., saved)`
// computes what the module's own call computes and keeps in `saved` what its backward needs;
// `backward(module, saved, dy, grads)` returns the gradient of the input and adds the
// gradients of the module's parameters into `grads`, a module of the same structure whose
// Params are the accumulators (nnx/train/grad.hpp builds it). A parameter used twice (GPT-2's
// tied embedding, a lookup and the output head) gets both contributions in its one buffer.
//
//   nnx::train::Gpt2Saved saved;
//   nnx::Tensor logits = nnx::train::forward(model, tokens, positions, saved);
//   nnx::train::backward(model, saved, dlogits, grads);      // grads: zero Params, same structure
//
// For the models, forward_hidden / backward_hidden stop at the head's input, and head_weight
// names the head's matrix: the vocabulary-tiled loss (ops::head_cross_entropy) applies the
// head itself, tile by tile.
//
// A variable of `grads` that is not a Param (a FrozenParam of a LoRA fine-tune, see
// nnx/train/lora.hpp) is the model's own weight, not an accumulator: the backward passes never
// write it and skip the work of its gradient.
//
// The pairs handle f32 parameters in train mode: quantized, 16-bit-served and KV-cached
// modules are rejected before any work by check_trainable (nnx/train/grad.hpp), so the
// functions here may assume f32 kernels. The forward passes run the modules' own kernels
// (attention over whole sequences, causal by index), and every backward kernel sums in an
// order fixed by the shapes, so gradients are bitwise the same on any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/models/gpt2.hpp"
#include "nnx/models/llama.hpp"
#include "nnx/nn.hpp"
#include "nnx/ops.hpp"
#include "nnx/ops/grad.hpp"

namespace nnx::train {

// ---- Linear, Embed, norms -----------------------------------------------------------------

// True when `g`'s variable accumulates a gradient (from zero_grads), false for a frozen weight.
inline bool accumulates(const Variable& g) { return g.kind().is_a(Param::kind_info()); }

// g's accumulator, or a zero scratch tensor of its shape when g is frozen (the small norm
// parameters, whose kernels always produce their gradient).
inline Tensor& accumulator_or_scratch(Variable& g, Tensor& scratch) {
  if (accumulates(g)) return g.value();
  scratch = Tensor::zeros(g.value().shape());
  return scratch;
}

struct LinearSaved {
  Tensor x;
  Tensor lora_u;  // scale·(x·A) when the layer has a LoRA adapter
};
inline Tensor forward(const Linear& l, const Tensor& x, LinearSaved& saved) {
  saved.x = x;
  Tensor y = l.base(x);
  if (l.lora) saved.lora_u = l.lora->add_to(y, x);
  return y;
}
inline Tensor backward(const Linear& l, const LinearSaved& saved, const Tensor& dy, Linear& g) {
  Tensor dx;
  const bool bias_grad = g.bias && accumulates(*g.bias);
  if (accumulates(*g.kernel)) {
    dx = ops::linear_backward(saved.x, l.kernel->value(), dy, g.kernel->value(), bias_grad ? &g.bias->value() : nullptr);
  } else if (bias_grad) {
    Tensor unused;
    dx = ops::linear_backward(saved.x, l.kernel->value(), dy, accumulator_or_scratch(*g.kernel, unused),
                              &g.bias->value());
  } else {
    dx = ops::linear_transposed(dy, l.kernel->value());  // dy·Wᵀ, no weight gradient
  }
  if (l.lora) {
    // y += u·B with u = scale·(x·A): dB += uᵀ·dy, du = dy·Bᵀ, dA += xᵀ·(scale·du), dx += scale·du·Aᵀ.
    const LoraAdapter& ad = *l.lora;
    Tensor du = ops::linear_backward(saved.lora_u, ad.b.value(), dy, g.lora->b.value());
    float* p = du.data<float>();
    const float scale = ad.scale();
    for (std::int64_t i = 0; i < du.numel(); ++i) p[i] *= scale;
    ops::add_(dx, ops::linear_backward(saved.x, ad.a.value(), du, g.lora->a.value()));
  }
  return dx;
}

struct NormSaved {
  Tensor x;
};
inline Tensor forward(const LayerNorm& n, const Tensor& x, NormSaved& saved) {
  saved.x = x;
  return n(x);
}
inline Tensor backward(const LayerNorm& n, const NormSaved& saved, const Tensor& dy, LayerNorm& g) {
  Tensor scratch_scale, scratch_bias;
  return ops::layer_norm_backward(saved.x, n.scale.value(), dy, static_cast<float>(n.epsilon),
                                  accumulator_or_scratch(g.scale, scratch_scale),
                                  accumulator_or_scratch(g.bias, scratch_bias));
}
inline Tensor forward(const RMSNorm& n, const Tensor& x, NormSaved& saved) {
  saved.x = x;
  return n(x);
}
inline Tensor backward(const RMSNorm& n, const NormSaved& saved, const Tensor& dy, RMSNorm& g) {
  Tensor scratch;
  return ops::rms_norm_backward(saved.x, n.scale.value(), dy, static_cast<float>(n.epsilon),
                                accumulator_or_scratch(g.scale, scratch));
}

// ---- MLP --------------------------------------------------------------------------------

struct MlpSaved {
  LinearSaved gate, up, down;
  Tensor gate_out, up_out;  // the activation's inputs
};
inline Tensor forward(const Mlp& m, const Tensor& x, MlpSaved& saved) {
  saved.up_out = forward(m.up, x, saved.up);
  if (m.activation == Activation::swiglu) {
    saved.gate_out = forward(*m.gate, x, saved.gate);
    return forward(m.down, ops::swiglu(saved.gate_out, saved.up_out), saved.down);
  }
  return forward(m.down, ops::gelu_tanh(saved.up_out), saved.down);
}
inline Tensor backward(const Mlp& m, const MlpSaved& saved, const Tensor& dy, Mlp& g) {
  const Tensor dact = backward(m.down, saved.down, dy, g.down);
  if (m.activation == Activation::swiglu) {
    auto [dgate, dup] = ops::swiglu_backward(saved.gate_out, saved.up_out, dact);
    Tensor dx = backward(*m.gate, saved.gate, dgate, *g.gate);
    ops::add_(dx, backward(m.up, saved.up, dup, g.up));
    return dx;
  }
  return backward(m.up, saved.up, ops::gelu_tanh_backward(saved.up_out, dact), g.up);
}

// ---- Attention --------------------------------------------------------------------------

struct AttentionSaved {
  LinearSaved qkv, query, key, value, out;
  Attention::Projected projected;  // q, k, v after RoPE
  Tensor positions;
};
inline Tensor forward(Attention& a, const Tensor& x, const Tensor& positions, AttentionSaved& saved) {
  // project() runs the projections itself: keep what their backward needs.
  const auto keep_input = [&x](const std::optional<Linear>& l, LinearSaved& s) {
    if (!l) return;
    s.x = x;
    if (l->lora) s.lora_u = l->lora->down(x);
  };
  keep_input(a.qkv, saved.qkv);
  keep_input(a.query, saved.query);
  keep_input(a.key, saved.key);
  keep_input(a.value, saved.value);
  saved.positions = positions;
  saved.projected = a.project(x, positions);
  if (a.max_logits)  // sown: QK-Clip reads it after the step
    ops::max_attention_logits_(saved.projected.q, saved.projected.k,
                               1.0f / std::sqrt(static_cast<float>(a.head_dim)), a.max_logits->value());
  return forward(a.out, a.attend(saved.projected, positions), saved.out);
}
inline Tensor backward(const Attention& a, const AttentionSaved& saved, const Tensor& dy, Attention& g) {
  const Tensor& q = saved.projected.q;
  const std::int64_t B = q.dim(0), T = q.dim(1), H = a.num_heads, Hkv = a.num_kv_heads, D = a.head_dim;
  const Tensor dattn = backward(a.out, saved.out, dy, g.out).reshape({B, T, H, D});
  auto grads = ops::attention_backward(q, saved.projected.k, saved.projected.v, dattn,
                                       1.0f / std::sqrt(static_cast<float>(D)));
  if (a.use_rope) {
    ops::rope_backward_(grads.dq, saved.positions, static_cast<float>(a.rope_theta), a.rope_scaling.frequencies());
    ops::rope_backward_(grads.dk, saved.positions, static_cast<float>(a.rope_theta), a.rope_scaling.frequencies());
  }
  if (a.qkv) {
    const std::int64_t row = (H + 2 * Hkv) * D;
    Tensor dfused = Tensor::empty({B, T, row});
    float* f = dfused.data<float>();
    for (std::int64_t r = 0; r < B * T; ++r) {
      std::copy_n(grads.dq.data<float>() + r * H * D, H * D, f + r * row);
      std::copy_n(grads.dk.data<float>() + r * Hkv * D, Hkv * D, f + r * row + H * D);
      std::copy_n(grads.dv.data<float>() + r * Hkv * D, Hkv * D, f + r * row + (H + Hkv) * D);
    }
    return backward(*a.qkv, saved.qkv, dfused, *g.qkv);
  }
  Tensor dx = backward(*a.query, saved.query, grads.dq.reshape({B, T, H * D}), *g.query);
  ops::add_(dx, backward(*a.key, saved.key, grads.dk.reshape({B, T, Hkv * D}), *g.key));
  ops::add_(dx, backward(*a.value, saved.value, grads.dv.reshape({B, T, Hkv * D}), *g.value));
  return dx;
}

// ---- Decoder layer ------------------------------------------------------------------------

struct DecoderLayerSaved {
  NormSaved attn_norm, mlp_norm;
  AttentionSaved attn;
  MlpSaved mlp;
  std::optional<RngKey> attn_dropout, mlp_dropout;  // the masks' keys, when the layer drops out
};

template <class Norm>
Tensor forward(DecoderLayer<Norm>& layer, const Tensor& x, const Tensor& positions, DecoderLayerSaved& saved) {
  Tensor h = forward(layer.attn, forward(layer.attn_norm, x, saved.attn_norm), positions, saved.attn);
  if (layer.dropout && !layer.dropout->deterministic && layer.dropout->rate > 0) {
    saved.attn_dropout = layer.dropout->rngs.dropout();
    h = layer.dropout->apply(h, *saved.attn_dropout);
  }
  ops::add_(h, x);
  Tensor m = forward(layer.mlp, forward(layer.mlp_norm, h, saved.mlp_norm), saved.mlp);
  if (layer.dropout && !layer.dropout->deterministic && layer.dropout->rate > 0) {
    saved.mlp_dropout = layer.dropout->rngs.dropout();
    m = layer.dropout->apply(m, *saved.mlp_dropout);
  }
  ops::add_(m, h);
  return m;
}

template <class Norm>
Tensor backward(const DecoderLayer<Norm>& layer, const DecoderLayerSaved& saved, const Tensor& dy,
                DecoderLayer<Norm>& g) {
  const Tensor dm = saved.mlp_dropout ? layer.dropout->apply(dy, *saved.mlp_dropout) : dy;
  Tensor dh = backward(layer.mlp_norm, saved.mlp_norm, backward(layer.mlp, saved.mlp, dm, g.mlp), g.mlp_norm);
  ops::add_(dh, dy);
  const Tensor da = saved.attn_dropout ? layer.dropout->apply(dh, *saved.attn_dropout) : dh;
  Tensor dx = backward(layer.attn_norm, saved.attn_norm, backward(layer.attn, saved.attn, da, g.attn), g.attn_norm);
  ops::add_(dx, dh);
  return dx;
}

// ---- Models -----------------------------------------------------------------------------

struct Gpt2Saved {
  Tensor tokens, positions;
  std::vector<DecoderLayerSaved> layers;
  NormSaved ln_f;
  Tensor hidden;  // after ln_f: the head's input
};

// tokens, positions: i32 [B, T] -> the head's input f32 [B, T, C] (after ln_f).
inline Tensor forward_hidden(Gpt2& model, const Tensor& tokens, const Tensor& positions, Gpt2Saved& saved) {
  saved.tokens = tokens;
  saved.positions = positions;
  Tensor x = model.wte(tokens);
  ops::add_(x, model.wpe(positions));
  saved.layers.assign(model.h.size(), {});
  for (std::size_t i = 0; i < model.h.size(); ++i) x = forward(model.h[i], x, positions, saved.layers[i]);
  saved.hidden = forward(model.ln_f, x, saved.ln_f);
  return saved.hidden;
}

// tokens, positions: i32 [B, T] -> logits f32 [B, T, V], as Gpt2::operator() in train mode.
inline Tensor forward(Gpt2& model, const Tensor& tokens, const Tensor& positions, Gpt2Saved& saved) {
  return model.logits_from_hidden_states(forward_hidden(model, tokens, positions, saved));
}

// From the gradient of the head's input down (the head's own gradient already added).
inline void backward_hidden(const Gpt2& model, const Gpt2Saved& saved, Tensor dhidden, Gpt2& g) {
  Tensor dx = backward(model.ln_f, saved.ln_f, dhidden, g.ln_f);
  for (std::size_t i = model.h.size(); i-- > 0;) dx = backward(model.h[i], saved.layers[i], dx, g.h[i]);
  if (accumulates(*g.wte.embedding)) ops::embedding_backward(saved.tokens, dx, g.wte.embedding->value());
  if (accumulates(*g.wpe.embedding)) ops::embedding_backward(saved.positions, dx, g.wpe.embedding->value());
}

// The tied head's backward: logits = hidden·tableᵀ; the table's gradient only when it trains.
inline Tensor tied_head_backward(const Tensor& hidden, const Tensor& table, const Tensor& dlogits, Param& g) {
  if (!accumulates(g)) return ops::linear(dlogits, table);  // dlogits·table
  return ops::matmul_transposed_backward(hidden, table, dlogits, g.value());
}

inline void backward(const Gpt2& model, const Gpt2Saved& saved, const Tensor& dlogits, Gpt2& g) {
  backward_hidden(model, saved, tied_head_backward(saved.hidden, model.wte.embedding->value(), dlogits, *g.wte.embedding),
                  g);
}

struct LlamaSaved {
  Tensor tokens;
  std::vector<DecoderLayerSaved> layers;
  NormSaved norm;
  LinearSaved lm_head;  // its input (the final hidden states), also the tied head's
};

inline Tensor forward_hidden(Llama& model, const Tensor& tokens, const Tensor& positions, LlamaSaved& saved) {
  saved.tokens = tokens;
  Tensor x = model.embed_tokens(tokens);
  saved.layers.assign(model.layers.size(), {});
  for (std::size_t i = 0; i < model.layers.size(); ++i) x = forward(model.layers[i], x, positions, saved.layers[i]);
  saved.lm_head.x = forward(model.norm, x, saved.norm);
  if (model.lm_head && model.lm_head->lora) saved.lm_head.lora_u = model.lm_head->lora->down(saved.lm_head.x);
  return saved.lm_head.x;
}

inline Tensor forward(Llama& model, const Tensor& tokens, const Tensor& positions, LlamaSaved& saved) {
  return model.logits_from_hidden_states(forward_hidden(model, tokens, positions, saved));
}

inline void backward_hidden(const Llama& model, const LlamaSaved& saved, Tensor dhidden, Llama& g) {
  Tensor dx = backward(model.norm, saved.norm, dhidden, g.norm);
  for (std::size_t i = model.layers.size(); i-- > 0;) dx = backward(model.layers[i], saved.layers[i], dx, g.layers[i]);
  if (accumulates(*g.embed_tokens.embedding))
    ops::embedding_backward(saved.tokens, dx, g.embed_tokens.embedding->value());
}

inline void backward(const Llama& model, const LlamaSaved& saved, const Tensor& dlogits, Llama& g) {
  backward_hidden(model, saved,
                  model.lm_head ? backward(*model.lm_head, saved.lm_head, dlogits, *g.lm_head)
                                : tied_head_backward(saved.lm_head.x, model.embed_tokens.embedding->value(), dlogits,
                                                     *g.embed_tokens.embedding),
                  g);
}

// ---- The output head as a weight, for the vocabulary-tiled loss ---------------------------

struct HeadWeight {
  const Tensor* weight = nullptr;
  ops::HeadLayout layout = ops::HeadLayout::table;
};

// The tied embedding table or the untied head's kernel; InvalidArgument when the head is not
// an f32 matrix without bias (a quantized or 16-bit head, served rather than trained).
inline HeadWeight head_weight(const Gpt2& model) {
  const Embed& e = model.wte;
  if (!e.embedding || e.quant != QuantScheme::none || e.embedding->value().dtype() != DType::f32)
    throw InvalidArgument("vocab tiling: the tied head 'wte' is not an f32 table");
  return {&model.wte.embedding->value(), ops::HeadLayout::table};
}
inline HeadWeight head_weight(const Llama& model) {
  if (!model.lm_head) {
    const Embed& e = model.embed_tokens;
    if (!e.embedding || e.quant != QuantScheme::none || e.embedding->value().dtype() != DType::f32)
      throw InvalidArgument("vocab tiling: the tied head 'embed_tokens' is not an f32 table");
    return {&e.embedding->value(), ops::HeadLayout::table};
  }
  const Linear& l = *model.lm_head;
  if (!l.kernel || l.quant != QuantScheme::none || l.kernel->value().dtype() != DType::f32 || l.bias || l.lora)
    throw InvalidArgument("vocab tiling: 'lm_head' is not an f32 kernel without bias or LoRA adapter");
  return {&l.kernel->value(), ops::HeadLayout::kernel};
}
// The gradient accumulator of the head's weight in `g` (from zero_grads); null when frozen.
inline Tensor* head_weight_grad(Gpt2& g) {
  return accumulates(*g.wte.embedding) ? &g.wte.embedding->value() : nullptr;
}
inline Tensor* head_weight_grad(Llama& g) {
  Param& w = g.lm_head ? *g.lm_head->kernel : *g.embed_tokens.embedding;
  return accumulates(w) ? &w.value() : nullptr;
}

// What forward keeps for each model type.
template <class Model>
struct SavedFor;
template <>
struct SavedFor<Gpt2> {
  using type = Gpt2Saved;
};
template <>
struct SavedFor<Llama> {
  using type = LlamaSaved;
};
template <class Model>
using saved_t = typename SavedFor<Model>::type;

}  // namespace nnx::train
