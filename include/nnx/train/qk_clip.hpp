// nnx/train/qk_clip.hpp — QK-Clip (MuonClip's): after an optimizer step, the query and key
// projections of every attention head whose largest pre-softmax logit exceeded tau are scaled
// so that, on the same batch and weights, it would be tau.
//
//   nnx::train::sow_max_logits(model);           // the training forward now sows max_logits
//   ... forward/backward, optimizer update ...
//   auto clip = nnx::train::qk_clip(model, 100.0);  // reads them, rescales, returns what it did
//   nnx::train::clear_max_logits(model);          // intermediates are not part of a train state
//
// train_step does all of this with StepOptions::qk_clip = tau. The sown values are
// Intermediates (Attention::max_logits, f32 [H], the maximum over every micro-batch of the
// step), so a state split by kind (nnx::of<Param>, or Not(Intermediate)) leaves them out.
//
// Per query head h with max logit m_h > tau, its query columns (kernel and bias) are scaled
// by sqrt(tau / m_h); a KV head is scaled by sqrt(tau / m) with m the largest m_h of the query
// heads that read it (GQA), when that exceeds tau. Every logit of head h is bilinear in its
// query and key, so it shrinks by sqrt(tau / m_h) sqrt(tau / m) <= tau / m_h: the head's new
// maximum is at most tau (exactly tau for the head with the group's largest logit), and heads
// at or below tau whose KV head is scaled only shrink.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/nn/attention.hpp"

namespace nnx::train {

struct QkClipResult {
  double max_logit = -std::numeric_limits<double>::infinity();  // over every sown head, before clipping
  std::int64_t clipped_heads = 0;                                // query heads scaled
};

// Gives every Attention of `model` a max_logits Intermediate of -inf [H], so the training
// forward (nnx/train/backprop.hpp) max-accumulates into it.
template <class Model>
void sow_max_logits(Model& model) {
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { sow_max_logits(model); });
  for_each_module<Attention>(model, [](const Path&, Attention& a) {
    a.max_logits = Intermediate(Tensor::full({a.num_heads}, -std::numeric_limits<double>::infinity()));
  });
}

template <class Model>
void clear_max_logits(Model& model) {
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { clear_max_logits(model); });
  for_each_module<Attention>(model, [](const Path&, Attention& a) { a.max_logits.reset(); });
}

namespace detail::qk_clip {

// Scales `width` columns from `first` of a [rows, cols] kernel (and of its bias) by `factor`,
// cloning a tensor another holder shares before writing it.
inline void scale_columns(Variable& kernel, Variable* bias, std::int64_t first, std::int64_t width, float factor) {
  for (Variable* v : {&kernel, bias}) {
    if (!v) continue;
    Tensor& t = v->value();
    if (t.use_count() > 1) t = t.clone();
    const std::int64_t cols = t.shape()[t.rank() - 1], rows = t.numel() / cols;
    float* p = t.data<float>();
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t j = first; j < first + width; ++j) p[r * cols + j] *= factor;
  }
}

}  // namespace detail::qk_clip

// Rescales the query and key projections of the heads whose sown max logit exceeds tau (> 0);
// layers with nothing sown are left alone. Throws InvalidArgument for tau <= 0 or a projection
// that is not an f32 kernel (quantized).
template <class Model>
QkClipResult qk_clip(Model& model, double tau) {
  if (!(tau > 0)) throw InvalidArgument("qk_clip: tau must be > 0, got " + std::to_string(tau));
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { return qk_clip(model, tau); });
  QkClipResult result;
  for_each_module<Attention>(model, [&](const Path& path, Attention& a) {
    if (!a.max_logits) return;
    const std::int64_t H = a.num_heads, Hkv = a.num_kv_heads, D = a.head_dim, group = H / Hkv;
    const float* m = a.max_logits->value().data<float>();
    std::vector<float> query_scale(static_cast<std::size_t>(H), 1.0f), key_scale(static_cast<std::size_t>(Hkv), 1.0f);
    for (std::int64_t h = 0; h < H; ++h) {
      result.max_logit = std::max(result.max_logit, double(m[h]));
      if (m[h] > tau) {
        query_scale[h] = static_cast<float>(std::sqrt(tau / m[h]));
        ++result.clipped_heads;
      }
    }
    for (std::int64_t g = 0; g < Hkv; ++g) {
      const float largest = *std::max_element(m + g * group, m + (g + 1) * group);
      if (largest > tau) key_scale[g] = static_cast<float>(std::sqrt(tau / largest));
    }
    const auto check = [&](const std::optional<Linear>& l, const char* name) {
      if (!l->kernel || l->quant != QuantScheme::none || l->kernel->value().dtype() != DType::f32)
        throw InvalidArgument("qk_clip: '" + path.to_string() + "/" + name + "' is not an f32 kernel");
    };
    if (a.qkv) {
      check(a.qkv, "qkv");
      Variable* bias = a.qkv->bias ? &*a.qkv->bias : nullptr;
      for (std::int64_t h = 0; h < H; ++h)
        if (query_scale[h] != 1.0f) detail::qk_clip::scale_columns(*a.qkv->kernel, bias, h * D, D, query_scale[h]);
      for (std::int64_t g = 0; g < Hkv; ++g)
        if (key_scale[g] != 1.0f) detail::qk_clip::scale_columns(*a.qkv->kernel, bias, (H + g) * D, D, key_scale[g]);
    } else {
      check(a.query, "query");
      check(a.key, "key");
      Variable* qbias = a.query->bias ? &*a.query->bias : nullptr;
      Variable* kbias = a.key->bias ? &*a.key->bias : nullptr;
      for (std::int64_t h = 0; h < H; ++h)
        if (query_scale[h] != 1.0f) detail::qk_clip::scale_columns(*a.query->kernel, qbias, h * D, D, query_scale[h]);
      for (std::int64_t g = 0; g < Hkv; ++g)
        if (key_scale[g] != 1.0f) detail::qk_clip::scale_columns(*a.key->kernel, kbias, g * D, D, key_scale[g]);
    }
  });
  return result;
}

}  // namespace nnx::train
