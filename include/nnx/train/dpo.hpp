// nnx/train/dpo.hpp — Direct Preference Optimization: a policy trained against a frozen
// reference model on (prompt, chosen, rejected) triples.
//
//   std::vector<nnx::train::PreferencePair> pairs = {{prompt, chosen, rejected}, ...};
//   auto batch = nnx::train::preference_batch(pairs, model.vocab_size());
//   auto r = nnx::train::dpo_value_and_grad(policy, reference, batch, /*beta=*/0.1);  // loss, grads
//
//   nnx::train::DpoState<nnx::Llama> s{nnx::train::TrainState<nnx::Llama>(policy, {...}), reference};
//   auto [next, metrics] = nnx::train::dpo_step(std::move(s), batch, {.beta = 0.1});
//
// loss = mean over pairs of -log sigmoid(beta ((log pi(chosen) - log ref(chosen)) -
// (log pi(rejected) - log ref(rejected)))), each log-probability summed over the response's
// tokens only (the prompt conditions them). The reference gets no gradient and no optimizer
// state: DpoState holds it beside the policy's TrainState, and a copy of the policy shares its
// weights without copying them. The reference runs with dropout off.
//
// The gradient is the cross-entropy's with a weight per sequence: d loss / d logits of a chosen
// response's positions is beta sigmoid(-margin) / N (softmax - onehot), a rejected one's the
// negative of that.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/nn/dropout.hpp"
#include "nnx/ops/grad.hpp"
#include "nnx/train/backprop.hpp"
#include "nnx/train/grad.hpp"
#include "nnx/train/train_state.hpp"

namespace nnx::train {

struct PreferencePair {
  std::vector<std::int32_t> prompt, chosen, rejected;  // token ids; chosen and rejected continue the prompt
};

// N pairs as 2N rows: prompt + chosen in rows [0, N), prompt + rejected in [N, 2N); tokens are
// each sequence but its last token, targets the next tokens with the prompt's own positions and
// the padding (token 0) set to the ignore id.
struct PreferenceBatch {
  Tensor tokens, targets;  // i32 [2N, T]
  std::int64_t pairs = 0;
};

// Throws InvalidArgument naming the pair and field for an empty prompt or response, or an id
// outside [0, vocab_size).
inline PreferenceBatch preference_batch(std::span<const PreferencePair> pairs, std::int64_t vocab_size,
                                        std::int32_t ignore = kIgnoreTarget) {
  if (pairs.empty()) throw InvalidArgument("dpo: no preference pairs");
  const auto N = static_cast<std::int64_t>(pairs.size());
  std::int64_t T = 0;
  for (std::size_t i = 0; i < pairs.size(); ++i) {
    const PreferencePair& p = pairs[i];
    const auto check = [&](const std::vector<std::int32_t>& ids, const char* field) {
      if (ids.empty()) throw InvalidArgument("dpo: pair " + std::to_string(i) + " has an empty " + field);
      for (std::int32_t id : ids)
        if (id < 0 || id >= vocab_size)
          throw InvalidArgument("dpo: pair " + std::to_string(i) + " " + field + ": id " + std::to_string(id) +
                                " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
    };
    check(p.prompt, "prompt");
    check(p.chosen, "chosen response");
    check(p.rejected, "rejected response");
    T = std::max(T, static_cast<std::int64_t>(p.prompt.size() + std::max(p.chosen.size(), p.rejected.size())) - 1);
  }
  PreferenceBatch b{Tensor::zeros({2 * N, T}, DType::i32), Tensor::full({2 * N, T}, ignore, DType::i32), N};
  for (std::int64_t r = 0; r < 2 * N; ++r) {
    const PreferencePair& p = pairs[static_cast<std::size_t>(r % N)];
    std::vector<std::int32_t> seq = p.prompt;
    const std::vector<std::int32_t>& response = r < N ? p.chosen : p.rejected;
    seq.insert(seq.end(), response.begin(), response.end());
    std::int32_t* tok = b.tokens.data<std::int32_t>() + r * T;
    std::int32_t* tgt = b.targets.data<std::int32_t>() + r * T;
    for (std::size_t t = 0; t + 1 < seq.size(); ++t) {
      tok[t] = seq[t];
      if (t + 1 >= p.prompt.size()) tgt[t] = seq[t + 1];
    }
  }
  return b;
}

struct DpoResult {
  double loss = 0.0;                       // mean over pairs
  std::vector<double> chosen_rewards;      // beta (log pi - log ref) of each chosen response
  std::vector<double> rejected_rewards;    // ... and of each rejected one
  double accuracy = 0.0;                   // fraction of pairs whose chosen reward is the larger
  State grads;                             // the policy's Param paths -> f32 gradients
};

namespace detail::dpo {

// Each row's summed log-probability of its non-ignored targets, from per-position losses [R, T].
inline std::vector<double> row_logprobs(const Tensor& row_loss) {
  const std::int64_t R = row_loss.dim(0), T = row_loss.dim(1);
  std::vector<double> out(static_cast<std::size_t>(R), 0.0);
  const float* l = row_loss.data<float>();
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t t = 0; t < T; ++t) out[static_cast<std::size_t>(r)] -= l[r * T + t];
  return out;
}

inline double log1p_exp(double x) { return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x)); }

template <class Model>
void check_fits(const Model& model, const PreferenceBatch& batch) {
  if (batch.tokens.dim(1) > model.context_length())
    throw InvalidArgument("dpo: a prompt and response of " + std::to_string(batch.tokens.dim(1) + 1) +
                          " tokens exceed the model's context of " + std::to_string(model.context_length()));
}

}  // namespace detail::dpo

// The reference's summed response log-probabilities of each row of `batch` (forward only,
// dropout off).
template <class Model>
std::vector<double> sequence_logprobs(const Model& model, const PreferenceBatch& batch,
                                      std::int32_t ignore = kIgnoreTarget) {
  detail::dpo::check_fits(model, batch);
  Model eval = model;  // shares the weights; its dropout settings are its own
  for_each_module<Dropout>(eval, [](const Path&, Dropout& d) { d.deterministic = true; });
  const Tensor positions = arange_positions(batch.tokens.dim(0), batch.tokens.dim(1));
  Tensor logits = eval(batch.tokens, positions);
  return detail::dpo::row_logprobs(ops::cross_entropy(std::move(logits), batch.targets, 0.0f, ignore).row_loss);
}

// Adds the DPO loss's gradient into `grads` (from zero_grads(policy)) given the reference's
// sequence log-probabilities; returns the loss and rewards (grads left empty in the result).
template <class Model>
DpoResult accumulate_dpo_grads(Model& policy, const std::vector<double>& reference_logprobs,
                               const PreferenceBatch& batch, double beta, Model& grads,
                               std::int32_t ignore = kIgnoreTarget) {
  if (!(beta > 0) || !std::isfinite(beta)) throw InvalidArgument("dpo: beta must be > 0, got " + std::to_string(beta));
  const std::int64_t N = batch.pairs, R = batch.tokens.dim(0), T = batch.tokens.dim(1);
  if (R != 2 * N || static_cast<std::int64_t>(reference_logprobs.size()) != R)
    throw ShapeError("dpo: a batch of " + std::to_string(N) + " pairs needs " + std::to_string(2 * N) +
                     " rows and reference log-probabilities, found " + std::to_string(R) + " and " +
                     std::to_string(reference_logprobs.size()));
  detail::dpo::check_fits(policy, batch);
  saved_t<Model> saved;
  Tensor logits = forward(policy, batch.tokens, arange_positions(R, T), saved);
  const std::int64_t V = logits.dim(2);
  // Weight 1: the logits become softmax - onehot, scaled below by each sequence's coefficient.
  ops::CrossEntropy ce = ops::cross_entropy(std::move(logits), batch.targets, 1.0f, ignore);
  const std::vector<double> logp = detail::dpo::row_logprobs(ce.row_loss);
  DpoResult out;
  float* d = ce.dlogits.data<float>();
  std::int64_t correct = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    const auto c = static_cast<std::size_t>(i), r = static_cast<std::size_t>(N + i);
    out.chosen_rewards.push_back(beta * (logp[c] - reference_logprobs[c]));
    out.rejected_rewards.push_back(beta * (logp[r] - reference_logprobs[r]));
    const double margin = out.chosen_rewards.back() - out.rejected_rewards.back();
    out.loss += detail::dpo::log1p_exp(-margin) / static_cast<double>(N);  // -log sigmoid(margin)
    correct += margin > 0;
    const auto coef = static_cast<float>(beta / (1.0 + std::exp(margin)) / static_cast<double>(N));
    for (const auto& [row, w] : {std::pair{i, coef}, std::pair{N + i, -coef}})
      for (float* x = d + row * T * V; x != d + (row + 1) * T * V; ++x) *x *= w;
  }
  out.accuracy = static_cast<double>(correct) / static_cast<double>(N);
  backward(policy, saved, ce.dlogits, grads);
  return out;
}

// The DPO loss of `policy` against `reference` on `batch`, and the policy's gradients.
template <class Model>
DpoResult dpo_value_and_grad(Model& policy, const Model& reference, const PreferenceBatch& batch, double beta,
                             std::int32_t ignore = kIgnoreTarget) {
  check_trainable(policy);
  Model g = zero_grads(policy);
  DpoResult out = accumulate_dpo_grads(policy, sequence_logprobs(reference, batch, ignore), batch, beta, g, ignore);
  out.grads = state(g, of<Param>);
  return out;
}

// The policy's train state beside its frozen reference.
template <class Model>
struct DpoState {
  TrainState<Model> policy;
  Model reference;
};

struct DpoOptions {
  double beta = 0.1;
  double qk_clip = 0.0;  // StepOptions::qk_clip
  std::int32_t ignore_target = kIgnoreTarget;
};

struct DpoMetrics : StepMetrics {  // loss is the DPO loss; valid_targets the response tokens
  double chosen_reward = 0.0, rejected_reward = 0.0;  // means over the batch's pairs
  double accuracy = 0.0;
};

// One optimizer update of the policy on a preference batch (the reference untouched).
template <class Model>
std::pair<DpoState<Model>, DpoMetrics> dpo_step(DpoState<Model> state, const PreferenceBatch& batch,
                                                const DpoOptions& options = {}) {
  const std::vector<double> reference_logprobs = sequence_logprobs(state.reference, batch, options.ignore_target);
  DpoResult result;
  const auto accumulate = [&](Model& model, Model& grads, StepMetrics& sm) {
    result = accumulate_dpo_grads(model, reference_logprobs, batch, options.beta, grads, options.ignore_target);
    sm.loss = result.loss;
    sm.valid_targets = count_valid_targets(batch.targets, options.ignore_target);
  };
  auto [next, m] = detail::optimizer_step(std::move(state.policy), options.qk_clip, accumulate);
  DpoMetrics metrics;
  static_cast<StepMetrics&>(metrics) = m;
  for (std::size_t i = 0; i < result.chosen_rewards.size(); ++i) {
    metrics.chosen_reward += result.chosen_rewards[i] / static_cast<double>(batch.pairs);
    metrics.rejected_reward += result.rejected_rewards[i] / static_cast<double>(batch.pairs);
  }
  metrics.accuracy = result.accuracy;
  return {DpoState<Model>{std::move(next), std::move(state.reference)}, metrics};
}

}  // namespace nnx::train
