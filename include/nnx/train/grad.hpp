// nnx/train/grad.hpp — gradients as States: the loss of a language model on a batch and the
// gradient of every parameter, with exactly the paths, shapes and dtypes of its Param state.
//
//   auto [loss, n, grads] = nnx::train::value_and_grad(model, tokens, targets);
//   grads.at("h/0/attn/qkv/kernel");          // f32 [C, 3C], as params.at(...)
//
//   // only some parameters (e.g. adapters later): the rest are frozen and get no entry
//   auto r = nnx::train::value_and_grad(model, tokens, targets, {}, nnx::path_contains("mlp"));
//
//   // the pure form, over a split model
//   auto r2 = nnx::train::value_and_grad(graphdef, params, rest, tokens, targets);
//
// The loss is the mean next-token cross-entropy over the valid targets (targets equal to the
// ignore id, -100 by default as in PyTorch, are padding). Gradient accumulation sums several
// batches into one gradient module (accumulate_grads) with a shared normalizer, so K
// micro-batches give the gradient of their union. Models: Gpt2 and Llama built in
// Mode::train with f32 parameters (check_trainable says what else it finds, naming the path).
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/models/transformer.hpp"
#include "nnx/train/backprop.hpp"

namespace nnx::train {

inline constexpr std::int32_t kIgnoreTarget = -100;

struct GradOptions {
  std::int32_t ignore_target = kIgnoreTarget;  // targets equal to it add nothing (padding)
  // > 1: the output head and the loss run over this many vocabulary tiles, so the [B, T, V]
  // logits are never materialized (one [B, T, V / tiles] tile at a time; the head's GEMM runs
  // twice). Loss and gradients equal the untiled ones up to rounding.
  std::int64_t vocab_tiles = 1;
};

struct LossAndGrads {
  double loss = 0.0;                // mean cross-entropy over the valid targets (nats)
  std::int64_t valid_targets = 0;   // targets that were not the ignore id
  State grads;                      // the differentiated Params' paths -> f32 gradients
};

namespace detail {

// Rebinds every Param of a module to a fresh variable of kind `kind` holding f32 zeros of its
// shape (tied parameters stay tied: one accumulator). Other variables stay shared.
template <class M>
struct ZeroParams : nnx::detail::NodeVisitor {
  const KindInfo* kind = &Param::kind_info();
  nnx::detail::CellIndex seen;
  std::vector<std::shared_ptr<VariableState>> made;
  void variable(const Path&, Variable& v) {
    if (!v.has_value() || !v.state().kind->is_a(Param::kind_info())) return;
    const std::int64_t i = seen.find_or_insert(v.cell_ptr().get(), static_cast<std::uint32_t>(made.size()));
    if (i >= 0) {
      v.bind(made[static_cast<std::size_t>(i)]);
      return;
    }
    VariableState z = v.state();
    z.kind = kind;
    z.value = Tensor::zeros(z.shape());
    made.push_back(std::make_shared<VariableState>(std::move(z)));
    v.bind(made.back());
  }
};

}  // namespace detail

// Throws InvalidArgument naming the first path that cannot be trained: a Param that is not f32
// (a 16-bit model served as stored: convert it with weight_dtype f32), a quantized layer, or a
// KV cache (a model built for prefill or decoding rather than Mode::train).
template <class Model>
void check_trainable(const Model& model) {
  for (const auto& [path, leaf] : state(model)) {
    if (leaf.is_quantized())
      throw InvalidArgument("train: '" + path.to_string() + "' is quantized; train the f32 model");
    if (leaf.kind->is_a(Cache::kind_info()))
      throw InvalidArgument("train: '" + path.to_string() + "' is a KV cache; build the model in Mode::train");
    if (leaf.kind->is_a(Param::kind_info()) && leaf.dtype() != DType::f32)
      throw InvalidArgument("train: parameter '" + path.to_string() + "' is " + std::string(dtype_name(leaf.dtype())) +
                            "; training needs f32 parameters");
  }
  for_each_module<Linear>(const_cast<Model&>(model), [](const Path& p, const Linear& l) {
    if (!l.kernel || l.quant != QuantScheme::none)
      throw InvalidArgument("train: Linear '" + p.to_string() + "' has no f32 kernel or runs quantized");
  });
  for_each_module<Embed>(const_cast<Model&>(model), [](const Path& p, const Embed& e) {
    if (!e.embedding || e.quant != QuantScheme::none)
      throw InvalidArgument("train: Embed '" + p.to_string() + "' has no f32 table or runs quantized");
  });
}

// A module of the model's structure whose Params are zero f32 accumulators (the other
// variables shared with the model): what accumulate_grads adds into.
template <class Model>
Model zero_grads(const Model& model) {
  Model g = model;
  detail::ZeroParams<Model> z;
  nnx::detail::walk_root(g, z);
  return g;
}

// Targets that are not `ignore` in targets (i32).
inline std::int64_t count_valid_targets(const Tensor& targets, std::int32_t ignore = kIgnoreTarget) {
  if (targets.dtype() != DType::i32) throw DTypeError("train: targets must be i32, found " + describe(targets));
  std::int64_t n = 0;
  const std::int32_t* t = targets.data<std::int32_t>();
  for (std::int64_t i = 0; i < targets.numel(); ++i) n += t[i] != ignore;
  return n;
}

// One forward and backward pass over tokens i32 [B, T] (positions 0..T-1) with next-token
// targets i32 [B, T]: adds `weight` times the gradient of the summed cross-entropy into
// `grads` (from zero_grads) and returns that sum (unweighted). weight = 1 / N for the mean
// over N valid targets of this batch, or of all the micro-batches accumulated into `grads`.
template <class Model>
double accumulate_grads(Model& model, const Tensor& tokens, const Tensor& targets, float weight, Model& grads,
                        const GradOptions& options = {}) {
  if (tokens.dtype() != DType::i32 || tokens.rank() != 2)
    throw ShapeError("train: expected tokens i32 [B, T], found " + describe(tokens));
  if (targets.dtype() != DType::i32 || targets.shape() != tokens.shape())
    throw ShapeError("train: expected targets i32 " + to_string(tokens.shape()) + ", found " + describe(targets));
  if (tokens.dim(1) > model.context_length())
    throw InvalidArgument("train: sequence length " + std::to_string(tokens.dim(1)) + " exceeds the model's context " +
                          std::to_string(model.context_length()));
  if (options.vocab_tiles < 1)
    throw InvalidArgument("train: vocab_tiles must be >= 1, got " + std::to_string(options.vocab_tiles));
  saved_t<Model> saved;
  const Tensor positions = arange_positions(tokens.dim(0), tokens.dim(1));
  if (options.vocab_tiles > 1) {
    const Tensor hidden = forward_hidden(model, tokens, positions, saved);
    const HeadWeight head = head_weight(model);
    auto ce = ops::head_cross_entropy(hidden, *head.weight, head.layout, targets, weight, options.ignore_target,
                                      options.vocab_tiles, head_weight_grad(grads),
                                      /*frozen_head=*/head_weight_grad(grads) == nullptr);
    backward_hidden(model, saved, std::move(ce.dhidden), grads);
    return ce.loss_sum;
  }
  Tensor logits = forward(model, tokens, positions, saved);
  auto ce = ops::cross_entropy(std::move(logits), targets, weight, options.ignore_target);
  backward(model, saved, ce.dlogits, grads);
  return ce.loss_sum;
}

// The mean cross-entropy of `model` on a batch, forward only and with dropout off (an
// evaluation: the model's RNG state does not advance).
template <class Model>
double evaluate_loss(const Model& model, const Tensor& tokens, const Tensor& targets, const GradOptions& options = {}) {
  Model eval = model;  // shares the weights; its dropout settings are its own
  for_each_module<Dropout>(eval, [](const Path&, Dropout& d) { d.deterministic = true; });
  const std::int64_t n = count_valid_targets(targets, options.ignore_target);
  if (n == 0) throw InvalidArgument("train: every target is the ignore id; there is no loss");
  if (tokens.dtype() != DType::i32 || tokens.rank() != 2)
    throw ShapeError("train: expected tokens i32 [B, T], found " + describe(tokens));
  const Tensor positions = arange_positions(tokens.dim(0), tokens.dim(1));
  if (options.vocab_tiles > 1) {
    const HeadWeight head = head_weight(eval);
    return ops::head_cross_entropy(eval.hidden_states(tokens, positions), *head.weight, head.layout, targets, 0.0f,
                                   options.ignore_target, options.vocab_tiles, nullptr)
               .loss_sum /
           static_cast<double>(n);
  }
  auto ce = ops::cross_entropy(eval(tokens, positions), targets, 0.0f, options.ignore_target);
  return ce.loss_sum / static_cast<double>(n);
}

// Loss and gradients of `model` on one batch; grads holds the Params `filter` selects.
template <class Model, Filter F = Everything>
LossAndGrads value_and_grad(Model& model, const Tensor& tokens, const Tensor& targets, const GradOptions& options = {},
                            const F& filter = {}) {
  check_trainable(model);
  LossAndGrads out;
  out.valid_targets = count_valid_targets(targets, options.ignore_target);
  if (out.valid_targets == 0) throw InvalidArgument("train: every target is the ignore id; there is no loss");
  Model g = zero_grads(model);
  const double sum =
      accumulate_grads(model, tokens, targets, static_cast<float>(1.0 / static_cast<double>(out.valid_targets)), g,
                       options);
  out.loss = sum / static_cast<double>(out.valid_targets);
  out.grads = state(g, All(of<Param>, filter));
  return out;
}

// The pure form: the model merged from (graphdef, params, rest) — rest holds its other
// variables (e.g. dropout's RNG state, which advances in the returned `rest` only if donated).
template <class Model, Filter F = Everything>
LossAndGrads value_and_grad(const GraphDef<Model>& graphdef, const State& params, const State& rest,
                            const Tensor& tokens, const Tensor& targets, const GradOptions& options = {},
                            const F& filter = {}) {
  Model model = merge(graphdef, params, rest);
  return value_and_grad(model, tokens, targets, options, filter);
}

}  // namespace nnx::train
