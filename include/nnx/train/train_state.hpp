// nnx/train/train_state.hpp — optimizers (AdamW, SGD with momentum), global-norm clipping,
// learning-rate schedules, and TrainState: the model, its optimizer state and the step count
// as one ordinary module, so split, merge and checkpoints work on it unchanged (MaxText's
// TrainStateNNX).
//
//   nnx::train::OptimizerConfig opt{.lr = {.peak = 3e-4, .warmup_steps = 100, .decay_steps = 5000},
//                                   .weight_decay = 0.1, .clip_norm = 1.0};
//   nnx::train::TrainState<nnx::Gpt2> state(std::move(model), opt);
//   auto [next, metrics] = nnx::train::train_step(std::move(state), tokens, targets, {.grad_accum = 4});
//
// State paths: model/... (the model's), mu/<param path> and, for AdamW, nu/<param path>
// (kind OptState, f32, the params' shapes), and step (OptState, i64 [1]). Variables of the
// model that are not Params (a dropout's RNG state) are shared by mu and nu, so they are one
// leaf, under model/.
//
// train_step is a pure function of (state, batch): it returns the next state and leaves a
// state the caller still holds unchanged; a state passed as an rvalue is donated, and its
// buffers are updated in place. Every step is bitwise the same on any thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/kernels/optimizer.hpp"
#include "nnx/train/grad.hpp"
#include "nnx/train/qk_clip.hpp"

namespace nnx::train {

// The optimizer's own variables: moments and the step count (not Params, so of<Param> never
// selects them for training).
struct OptState : VariableKind<OptState, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "OptState";
};

// Learning rate at update number `step` (0-based): linear warmup from peak / warmup_steps to
// peak over warmup_steps updates, then cosine decay to peak * final_fraction at decay_steps
// (0: constant after the warmup), constant after that.
struct LrSchedule {
  double peak = 1e-3;
  std::int64_t warmup_steps = 0;
  std::int64_t decay_steps = 0;
  double final_fraction = 0.1;
  NNX_FIELDS(peak, warmup_steps, decay_steps, final_fraction)

  double at(std::int64_t step) const {
    if (step < warmup_steps) return peak * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
    if (decay_steps <= warmup_steps) return peak;
    const double progress = std::min(1.0, static_cast<double>(step - warmup_steps) /
                                              static_cast<double>(decay_steps - warmup_steps));
    const double final_lr = peak * final_fraction;
    return final_lr + (peak - final_lr) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * progress));
  }
};

enum class OptimizerKind : std::uint8_t { adamw, sgd };

struct OptimizerConfig {
  OptimizerKind kind = OptimizerKind::adamw;
  LrSchedule lr;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;  // AdamW
  double momentum = 0.9;                           // SGD
  double weight_decay = 0.0;  // AdamW: decoupled; SGD: added to the gradient
  // Parameters whose path contains one of these keys are not decayed (biases, norm scales).
  std::vector<std::string> no_decay = {"bias", "scale"};
  double clip_norm = 0.0;  // > 0: gradients scaled so their global L2 norm is at most this
  NNX_FIELDS(kind, lr, beta1, beta2, eps, momentum, weight_decay, no_decay, clip_norm)

  bool decays(const Path& path) const {
    for (const auto& key : no_decay)
      if (path.contains(PathKey(std::string_view(key)))) return false;
    return true;
  }
};

namespace detail {

// A copy of `model` whose Params are fresh f32 zero variables of kind K (tied ones stay tied).
template <class K, class Model>
Model zero_params_as(const Model& model) {
  Model out = model;
  ZeroParams<Model> z;
  z.kind = &K::kind_info();  // the moments are OptState, never Params
  nnx::detail::walk_root(out, z);
  return out;
}

// The variables of kind K of a module, each once (a tied one at its first path), in traversal
// order, as (path, the variable's own state): writes through these reach the module.
using Cells = std::vector<std::pair<Path, VariableState*>>;
template <class K>
struct CellsOf : nnx::detail::NodeVisitor {
  nnx::detail::CellIndex seen;
  Cells cells;
  void variable(const Path& p, Variable& v) {
    if (!v.has_value() || !v.state().kind->is_a(K::kind_info())) return;
    if (seen.find_or_insert(v.cell_ptr().get(), static_cast<std::uint32_t>(cells.size())) >= 0) return;
    cells.emplace_back(p, &v.state());
  }
};
template <class K, class M>
Cells cells_of(M& module) {
  CellsOf<K> c;
  nnx::detail::walk_root(module, c);
  return std::move(c.cells);
}

// The tensor of a variable, made safe to write in place: cloned (and rebound) unless the
// variable is its only holder.
inline Tensor& writable(VariableState& leaf) {
  Tensor& t = leaf.tensor();
  if (t.use_count() > 1) t = t.clone();
  return t;
}

}  // namespace detail

template <class Model>
struct TrainState {
  OptimizerConfig optimizer;
  Model model;
  Model mu;                 // AdamW's first moment, SGD's momentum: OptState at the params' paths
  std::optional<Model> nu;  // AdamW's second moment
  OptState step;            // i64 [1]: updates applied so far
  NNX_FIELDS(optimizer, model, mu, nu, step)

  // Not state: the gradient buffers of the last step, kept so the next one zeroes them in place
  // instead of mapping fresh memory (for GPT-2 124M, 500 MB whose page faults cost more than a
  // third of a step). train_step passes it on only from a state it was given to own.
  std::shared_ptr<Model> gradient_buffers;

  TrainState() = default;
  TrainState(Model m, const OptimizerConfig& config) : optimizer(config), model(std::move(m)) {
    check_trainable(model);
    mu = detail::zero_params_as<OptState>(model);
    if (config.kind == OptimizerKind::adamw) nu = detail::zero_params_as<OptState>(model);
    step = OptState(Tensor::zeros({1}, DType::i64));
  }

  std::int64_t steps_done() const { return step.value().template data<std::int64_t>()[0]; }
};

struct StepOptions {
  std::int64_t grad_accum = 1;  // micro-batches the batch is cut into along its rows
  std::int32_t ignore_target = kIgnoreTarget;
  std::int64_t vocab_tiles = 1;  // GradOptions::vocab_tiles
  // > 0: QK-Clip at this tau after the update (nnx/train/qk_clip.hpp): the step's attention
  // sows each head's max logit, and heads above tau get their query and key projections scaled.
  double qk_clip = 0.0;
};

struct StepMetrics {
  double loss = 0.0;       // mean cross-entropy over the batch's valid targets, before the update
  double grad_norm = 0.0;  // global L2 norm of the gradient, before clipping
  double lr = 0.0;         // learning rate of this update
  std::int64_t valid_targets = 0;
  std::int64_t step = 0;   // updates applied after this one
  // With StepOptions::qk_clip: the largest attention logit of the batch (before clipping) and
  // the query heads clipped.
  double max_attention_logit = 0.0;
  std::int64_t clipped_heads = 0;
};

namespace detail {

// One optimizer update whose gradient `accumulate(model, grads, metrics)` adds into the zeroed
// accumulators `grads` (setting metrics.loss and valid_targets): what train_step and dpo_step
// share. Works on fresh variables over the state's tensors, so a caller's copy of the state is
// never written; with qk_clip > 0 the model sows its attention max logits for the clip.
template <class Model, class Accumulate>
std::pair<TrainState<Model>, StepMetrics> optimizer_step(TrainState<Model> state, double qk_clip,
                                                         Accumulate&& accumulate) {
  TrainState<Model> s;
  std::shared_ptr<Model> buffers;
  {
    auto [graphdef, leaves] = split(state, everything);
    if (state.gradient_buffers.use_count() == 1) buffers = std::move(state.gradient_buffers);
    state = TrainState<Model>();
    s = merge(graphdef, std::move(leaves));
  }
  const OptimizerConfig& opt = s.optimizer;
  check_trainable(s.model);
  if (qk_clip < 0 || std::isnan(qk_clip))
    throw InvalidArgument("train_step: qk_clip must be >= 0 (0: off), got " + std::to_string(qk_clip));
  if (buffers) {
    for (const auto& cell : detail::cells_of<Param>(*buffers)) {
      Tensor& t = cell.second->tensor();
      std::memset(t.raw_data(), 0, t.nbytes());  // f32 zeros
    }
  } else {
    buffers = std::make_shared<Model>(zero_grads(s.model));
  }
  Model& grads = *buffers;
  if (qk_clip > 0) sow_max_logits(s.model);  // after zero_grads: the buffers hold no intermediates
  StepMetrics m;
  accumulate(s.model, grads, m);

  const detail::Cells g = detail::cells_of<Param>(grads);
  double sq = 0.0;
  for (const auto& cell : g) {
    const Tensor& t = cell.second->tensor();
    sq += kernels::sum_squares(t.data<float>(), t.numel());
  }
  m.grad_norm = std::sqrt(sq);
  float grad_scale = 1.0f;
  if (opt.clip_norm > 0 && m.grad_norm > opt.clip_norm)
    grad_scale = static_cast<float>(opt.clip_norm / (m.grad_norm + 1e-6));

  const std::int64_t t = s.steps_done();
  m.lr = opt.lr.at(t);
  // The model, mu and nu have one structure, so their Params and moments come in one order.
  const detail::Cells params = detail::cells_of<Param>(s.model);
  const detail::Cells mu = detail::cells_of<OptState>(s.mu);
  const detail::Cells nu = s.nu ? detail::cells_of<OptState>(*s.nu) : detail::Cells{};
  for (std::size_t i = 0; i < params.size(); ++i) {
    const Tensor& gt = g[i].second->tensor();
    const float decay = opt.decays(params[i].first) ? static_cast<float>(opt.weight_decay) : 0.0f;
    float* p = detail::writable(*params[i].second).data<float>();
    float* first = detail::writable(*mu[i].second).data<float>();
    if (opt.kind == OptimizerKind::adamw) {
      const kernels::AdamWStep step{.lr = static_cast<float>(m.lr),
                                    .beta1 = static_cast<float>(opt.beta1),
                                    .beta2 = static_cast<float>(opt.beta2),
                                    .eps = static_cast<float>(opt.eps),
                                    .weight_decay = decay,
                                    .bias_correction1 = static_cast<float>(1.0 - std::pow(opt.beta1, double(t + 1))),
                                    .bias_correction2 = static_cast<float>(1.0 - std::pow(opt.beta2, double(t + 1))),
                                    .grad_scale = grad_scale};
      kernels::adamw_update(p, gt.data<float>(), first, detail::writable(*nu[i].second).data<float>(), gt.numel(),
                            step);
    } else {
      kernels::sgd_update(p, gt.data<float>(), first, gt.numel(), static_cast<float>(m.lr),
                          static_cast<float>(opt.momentum), decay, grad_scale, t == 0);
    }
  }
  if (qk_clip > 0) {
    const QkClipResult clip = nnx::train::qk_clip(s.model, qk_clip);
    clear_max_logits(s.model);
    m.max_attention_logit = clip.max_logit;
    m.clipped_heads = clip.clipped_heads;
  }
  Tensor next = Tensor::full({1}, 0.0, DType::i64);
  next.template data<std::int64_t>()[0] = t + 1;
  s.step.set_value(next);
  m.step = t + 1;
  s.gradient_buffers = std::move(buffers);
  return {std::move(s), m};
}

}  // namespace detail

// One optimizer update from a batch: tokens and targets i32 [B, T]; with grad_accum K the rows
// are taken K micro-batches of B / K at a time (B a multiple of K) into one gradient, so the
// update equals that of the whole batch with the activation memory of B / K rows.
template <class Model>
std::pair<TrainState<Model>, StepMetrics> train_step(TrainState<Model> state, const Tensor& tokens,
                                                     const Tensor& targets, const StepOptions& options = {}) {
  const std::int64_t K = options.grad_accum;
  if (tokens.rank() != 2 || K < 1 || tokens.dim(0) % K != 0)
    throw InvalidArgument("train_step: a batch " + describe(tokens) + " cannot be cut into " + std::to_string(K) +
                          " equal micro-batches");
  const std::int64_t valid = count_valid_targets(targets, options.ignore_target);
  if (valid == 0) throw InvalidArgument("train_step: every target is the ignore id; there is no loss");
  return detail::optimizer_step(std::move(state), options.qk_clip, [&](Model& model, Model& grads, StepMetrics& m) {
    m.valid_targets = valid;
    const float weight = static_cast<float>(1.0 / static_cast<double>(valid));
    const std::int64_t rows = tokens.dim(0) / K;
    double loss_sum = 0.0;
    for (std::int64_t k = 0; k < K; ++k)
      loss_sum += accumulate_grads(model, tokens.slice(k * rows, (k + 1) * rows),
                                   targets.slice(k * rows, (k + 1) * rows), weight, grads,
                                   {.ignore_target = options.ignore_target, .vocab_tiles = options.vocab_tiles});
    m.loss = loss_sum / static_cast<double>(valid);
  });
}

}  // namespace nnx::train
