// nnx/models/transformer.hpp — what every decoder-only model here shares: positions,
// prefill with true lengths, single-token decode steps, and the pure-function call.
//
// A Model provides operator()(tokens i32 [B, T], positions i32 [B, T]) -> logits f32
// [B, T, V] (it writes its KV cache in prefill and autoregressive modes) and vocab_size().
//
//   auto out = nnx::prefill(model, tokens, {5, 3});        // padded batch, true lengths
//   out.last_logits;                                       // [B, V] at positions 4 and 2
//   auto step = nnx::decode_step(model, next_tokens, {5, 3});  // [B, V]
//
//   // The same model as a pure function of states; it agrees bit for bit with the object.
//   auto [logits, new_cache] = nnx::apply(graphdef, params, std::move(cache), rest, tokens, positions);
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/nn/mode.hpp"

namespace nnx {

// Sizes of a model's KV cache (prefill and autoregressive modes) and the layout of its layers.
struct ModelOptions {
  std::int64_t cache_batch = 1;   // rows of the KV cache
  std::int64_t cache_length = 0;  // 0: the model's context length
  DType cache_dtype = DType::f32;  // f32, bf16 or i8 (nnx/nn/kv_cache.hpp)
  // per_layer: a module per decoder layer; stacked: one leaf per parameter (and cache) path
  // with a leading layers axis, each layer a zero-copy slice (nnx/core/layers.hpp). Same
  // weights for the same seed, same logits, bit for bit.
  Layout layout = Layout::per_layer;
};

// Positions 0..T-1 for every row: i32 [B, T].
inline Tensor arange_positions(std::int64_t batch, std::int64_t length) {
  Tensor p = Tensor::empty({batch, length}, DType::i32);
  auto* d = p.data<std::int32_t>();
  for (std::int64_t b = 0; b < batch; ++b)
    for (std::int64_t t = 0; t < length; ++t) d[b * length + t] = static_cast<std::int32_t>(t);
  return p;
}

struct PrefillOutput {
  Tensor logits;       // f32 [B, T, V]: every position (those past a row's true length are padding)
  Tensor last_logits;  // f32 [B, V]: at each row's true last position
};

// Runs a padded batch of prompts (tokens i32 [B, T]) from position 0, filling the KV cache;
// true_lengths[b] in [1, T] is row b's prompt length.
template <class Model>
PrefillOutput prefill(Model& model, const Tensor& tokens, std::span<const std::int64_t> true_lengths) {
  if (tokens.rank() != 2) throw ShapeError("prefill: expected tokens [B, T], found " + describe(tokens));
  const std::int64_t B = tokens.dim(0), T = tokens.dim(1);
  if (static_cast<std::int64_t>(true_lengths.size()) != B)
    throw InvalidArgument("prefill: " + std::to_string(true_lengths.size()) + " true lengths for " +
                          std::to_string(B) + " rows");
  for (std::int64_t b = 0; b < B; ++b)
    if (true_lengths[b] < 1 || true_lengths[b] > T)
      throw InvalidArgument("prefill: true length " + std::to_string(true_lengths[b]) + " of row " +
                            std::to_string(b) + " outside [1, " + std::to_string(T) + "]");
  PrefillOutput out;
  out.logits = model(tokens, arange_positions(B, T));
  const std::int64_t V = out.logits.dim(2);
  out.last_logits = Tensor::empty({B, V});
  for (std::int64_t b = 0; b < B; ++b)
    out.last_logits.select(b).copy_from(out.logits.select(b).select(true_lengths[b] - 1));
  return out;
}
template <class Model>
PrefillOutput prefill(Model& model, const Tensor& tokens, std::initializer_list<std::int64_t> true_lengths) {
  return prefill(model, tokens, std::span<const std::int64_t>(true_lengths.begin(), true_lengths.size()));
}

// One token per row (tokens i32 [B]) at each row's own position; returns logits f32 [B, V].
// Row b uses KV cache row cache_rows[b] (default: b), so a batch of some of the cache's rows
// costs what a batch of that size does.
template <class Model>
Tensor decode_step(Model& model, const Tensor& tokens, std::span<const std::int64_t> positions,
                   std::span<const std::int64_t> cache_rows = {}) {
  if (tokens.rank() != 1) throw ShapeError("decode_step: expected tokens [B], found " + describe(tokens));
  const std::int64_t B = tokens.dim(0);
  if (static_cast<std::int64_t>(positions.size()) != B)
    throw InvalidArgument("decode_step: " + std::to_string(positions.size()) + " positions for " +
                          std::to_string(B) + " rows");
  Tensor pos = Tensor::empty({B, 1}, DType::i32);
  for (std::int64_t b = 0; b < B; ++b) {
    if (positions[b] < 0 || positions[b] > INT32_MAX)
      throw InvalidArgument("decode_step: position " + std::to_string(positions[b]) + " of row " + std::to_string(b));
    pos.data<std::int32_t>()[b] = static_cast<std::int32_t>(positions[b]);
  }
  Tensor logits = model(tokens.reshape({B, 1}), pos, cache_rows);
  return logits.reshape({B, logits.dim(2)});
}
template <class Model>
Tensor decode_step(Model& model, const Tensor& tokens, std::initializer_list<std::int64_t> positions) {
  return decode_step(model, tokens, std::span<const std::int64_t>(positions.begin(), positions.size()));
}

// The model with its decoder layers in `layout` (its own variables are untouched): per-layer
// from stacked is zero-copy (each layer's leaves are views), stacked from per-layer copies.
template <class Model>
Model to_layout(Model model, Layout layout) {
  model.decoder_layers().set_layout(layout);
  return model;
}

template <class Model>
struct ApplyOutput {
  Tensor logits;  // f32 [B, T, V]
  State cache;    // the updated Cache state (empty in train mode)
};

// The model as a pure function: (graphdef, params, cache, rest, tokens, positions) ->
// (logits, new cache). Pass the cache as an rvalue to donate it: the KV cache is then written
// in place; otherwise it is copied first and the caller's cache is left unchanged.
template <class Model>
ApplyOutput<Model> apply(const GraphDef<Model>& graphdef, const State& params, State cache, const State& rest,
                         const Tensor& tokens, const Tensor& positions) {
  Model model = merge(graphdef, params, std::move(cache), rest);
  ApplyOutput<Model> out;
  out.logits = model(tokens, positions);
  out.cache = state(model, of<Cache>);
  return out;
}

}  // namespace nnx
