// TrainState and train_step: the AdamW update against a scalar double computation, gradient
// accumulation against the whole batch, bitwise equality on 1 and 2 threads and across a
// checkpoint save and resume, purity and donation, dropout gradients against finite
// differences, schedules, filters, and the errors for models that cannot train.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>
#include <nnx/quant/weight_dtype.hpp>
#include <nnx/train.hpp>

#include "train_test_util.hpp"

namespace {

using nnx::Tensor;
using train_test::bitwise_equal;
namespace train = nnx::train;

nnx::Gpt2Config tiny_gpt2(double dropout = 0.0) {
  nnx::Gpt2Config c;
  c.vocab_size = 37;
  c.n_positions = 16;
  c.n_embd = 24;
  c.n_layer = 2;
  c.n_head = 3;
  c.dropout = dropout;
  return c;
}

nnx::LlamaConfig tiny_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 29;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  return c;
}

// tokens and next-token targets i32 [B, T] from one random sequence per row.
std::pair<Tensor, Tensor> batch(std::int64_t B, std::int64_t T, std::int64_t V, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  for (std::int64_t b = 0; b < B; ++b) {
    std::vector<std::int32_t> seq(T + 1);
    for (auto& x : seq) x = static_cast<std::int32_t>(gen() % V);
    for (std::int64_t t = 0; t < T; ++t) {
      tok[b * T + t] = seq[t];
      tgt[b * T + t] = seq[t + 1];
    }
  }
  return {Tensor::from_vector(tok, {B, T}), Tensor::from_vector(tgt, {B, T})};
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  double m = 0;
  auto x = a.span<float>(), y = b.span<float>();
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - double(y[i])));
  return m;
}
double max_abs(const Tensor& a) {
  double m = 0;
  for (float x : a.span<float>()) m = std::max(m, std::fabs(double(x)));
  return m;
}

// Mean cross-entropy in double from the model's own forward pass (its dropout included).
template <class Model>
double loss_double(Model& model, const Tensor& tokens, const Tensor& targets) {
  const Tensor logits = model(tokens, nnx::arange_positions(tokens.dim(0), tokens.dim(1)));
  const std::int64_t V = logits.dim(2), N = tokens.numel();
  const float* l = logits.data<float>();
  const std::int32_t* t = targets.data<std::int32_t>();
  double sum = 0;
  for (std::int64_t i = 0; i < N; ++i) {
    double m = -INFINITY, s = 0;
    for (std::int64_t j = 0; j < V; ++j) m = std::max(m, double(l[i * V + j]));
    for (std::int64_t j = 0; j < V; ++j) s += std::exp(l[i * V + j] - m);
    sum += m + std::log(s) - l[i * V + t[i]];
  }
  return sum / double(N);
}

template <class Fn>
void with_threads(int n, Fn&& fn) {
  const int before = nnx::num_threads();
  const std::int64_t min_work = nnx::kernels::parallel_min_work();
  nnx::kernels::set_thread_count(n);
  if (n > 1) nnx::kernels::set_parallel_min_work(1);
  fn();
  nnx::kernels::set_thread_count(before);
  nnx::kernels::set_parallel_min_work(min_work);
}

}  // namespace

TEST_CASE("one AdamW step equals torch.optim.AdamW's formula in double", "[train]") {
  nnx::Rngs rngs{3};
  nnx::Gpt2 model(tiny_gpt2(), nnx::Mode::train, rngs);
  auto [tokens, targets] = batch(2, 8, 37, 1);
  const auto reference = train::value_and_grad(model, tokens, targets);
  const nnx::State before = nnx::state(model, nnx::of<nnx::Param>).map([](const Tensor& t) { return t.clone(); });

  train::OptimizerConfig opt{.lr = {.peak = 0.01}, .beta1 = 0.8, .beta2 = 0.9, .eps = 1e-6, .weight_decay = 0.5};
  train::TrainState<nnx::Gpt2> state(model, opt);
  auto [next, metrics] = train::train_step(std::move(state), tokens, targets);
  CHECK(metrics.loss == reference.loss);
  CHECK(metrics.step == 1);
  CHECK(next.steps_done() == 1);
  CHECK(metrics.lr == 0.01);

  const nnx::State after = nnx::state(next.model, nnx::of<nnx::Param>);
  double sq = 0;
  for (const auto& [path, leaf] : reference.grads) {
    CAPTURE(path.to_string());
    const bool decays = opt.decays(path);
    auto p0 = before.at(path).tensor().span<float>();
    auto g = leaf.tensor().span<float>();
    auto p1 = after.at(path).tensor().span<float>();
    for (std::size_t i = 0; i < g.size(); ++i) {
      sq += double(g[i]) * g[i];
      const double m = 0.2 * g[i], v = 0.1 * double(g[i]) * g[i];
      const double expect = p0[i] * (1 - 0.01 * (decays ? 0.5 : 0.0)) - 0.01 * (m / 0.2) / (std::sqrt(v / 0.1) + 1e-6);
      REQUIRE(std::fabs(p1[i] - expect) <= 1e-6);
    }
  }
  CHECK(std::fabs(metrics.grad_norm - std::sqrt(sq)) <= 1e-9 * std::sqrt(sq));
  // The moments sit at the params' paths, kind OptState.
  auto [graphdef, leaves] = nnx::split(next, nnx::everything);
  CHECK(leaves.at(nnx::Path::parse("mu/h/0/attn/qkv/kernel")).kind_name() == "OptState");
  CHECK(leaves.at(nnx::Path::parse("nu/wte/embedding")).shape() == nnx::Shape{37, 24});
  CHECK(leaves.at(nnx::Path::parse("step")).dtype() == nnx::DType::i64);
  CHECK(nnx::state(next.mu, nnx::of<train::OptState>).size() == reference.grads.size());
}

TEST_CASE("K micro-batches give the gradient and the update of the whole batch", "[train]") {
  nnx::Rngs rngs{4};
  nnx::Llama model(tiny_llama(), nnx::Mode::train, rngs);
  auto [tokens, targets] = batch(4, 12, 29, 2);
  targets.data<std::int32_t>()[5] = train::kIgnoreTarget;
  const auto whole = train::value_and_grad(model, tokens, targets);

  nnx::Llama grads = train::zero_grads(model);
  const float w = static_cast<float>(1.0 / double(whole.valid_targets));
  double sum = 0;
  for (std::int64_t k = 0; k < 2; ++k)
    sum += train::accumulate_grads(model, tokens.slice(2 * k, 2 * k + 2), targets.slice(2 * k, 2 * k + 2), w, grads);
  CHECK(std::fabs(sum / double(whole.valid_targets) - whole.loss) <= 1e-6 * whole.loss);
  const nnx::State acc = nnx::state(grads, nnx::of<nnx::Param>);
  for (const auto& [path, leaf] : whole.grads) {
    CAPTURE(path.to_string());
    CHECK(max_abs_diff(acc.at(path).tensor(), leaf.tensor()) <= 1e-6 * max_abs(leaf.tensor()));
  }

  // The same through train_step (SGD, linear in the gradient).
  const train::OptimizerConfig sgd{.kind = train::OptimizerKind::sgd, .lr = {.peak = 0.5}};
  auto [one, m1] = train::train_step(train::TrainState<nnx::Llama>(nnx::clone(model), sgd), tokens, targets);
  auto [four, m4] =
      train::train_step(train::TrainState<nnx::Llama>(nnx::clone(model), sgd), tokens, targets, {.grad_accum = 4});
  CHECK(std::fabs(m1.loss - m4.loss) <= 1e-6 * m1.loss);
  const nnx::State p1 = nnx::state(one.model, nnx::of<nnx::Param>), p4 = nnx::state(four.model, nnx::of<nnx::Param>);
  for (const auto& [path, leaf] : p1) {
    CAPTURE(path.to_string());
    CHECK(max_abs_diff(leaf.tensor(), p4.at(path).tensor()) <= 1e-6 * max_abs(leaf.tensor()));
  }
}

TEST_CASE("training is bitwise the same on 1 and 2 threads and across a checkpoint resume", "[train]") {
  const auto dir = std::filesystem::temp_directory_path() / "nnx_test_train_resume";
  std::filesystem::remove_all(dir);
  const train::OptimizerConfig opt{.lr = {.peak = 3e-3, .warmup_steps = 2, .decay_steps = 6},
                                   .weight_decay = 0.1,
                                   .clip_norm = 0.5};
  auto fresh = [&] {
    nnx::Rngs rngs{5};
    return train::TrainState<nnx::Gpt2>(nnx::Gpt2(tiny_gpt2(0.1), nnx::Mode::train, rngs), opt);
  };
  auto run = [&](train::TrainState<nnx::Gpt2> s, int from, int to) {
    for (int step = from; step < to; ++step) {
      auto [tokens, targets] = batch(4, 10, 37, 100 + step);
      s = train::train_step(std::move(s), tokens, targets, {.grad_accum = 2}).first;
    }
    return s;
  };
  nnx::State one, two;
  with_threads(1, [&] { one = nnx::state(run(fresh(), 0, 5)); });
  with_threads(2, [&] { two = nnx::state(run(fresh(), 0, 5)); });
  CHECK(bitwise_equal(one, two));

  // Stop after 2 steps, save, restore into a fresh structure, run the other 3.
  auto stopped = run(fresh(), 0, 2);
  auto [graphdef, leaves] = nnx::split(stopped, nnx::everything);
  nnx::io::save_checkpoint(dir, leaves);
  auto target = fresh();
  auto [graphdef2, abstract] = nnx::split(target, nnx::everything);
  auto resumed = nnx::merge(graphdef2, nnx::io::restore_checkpoint(dir, abstract));
  CHECK(resumed.steps_done() == 2);
  CHECK(bitwise_equal(nnx::state(run(std::move(resumed), 2, 5)), one));
  std::filesystem::remove_all(dir);
}

TEST_CASE("train_step is pure for a held state and updates a donated one in place", "[train]") {
  nnx::Rngs rngs{6};
  train::TrainState<nnx::Gpt2> state(nnx::Gpt2(tiny_gpt2(), nnx::Mode::train, rngs), {});
  auto [tokens, targets] = batch(2, 6, 37, 3);
  const nnx::State before = nnx::state(state).map([](const Tensor& t) { return t.clone(); });
  auto [next, m] = train::train_step(state, tokens, targets);  // a copy: the caller keeps `state`
  CHECK(bitwise_equal(nnx::state(state), before));
  CHECK(!bitwise_equal(nnx::state(next), before));

  const float* data = next.model.wte.embedding->value().data<float>();
  auto [after, m2] = train::train_step(std::move(next), tokens, targets);
  CHECK(after.model.wte.embedding->value().data<float>() == data);  // donated: written in place
  CHECK(m2.loss < m.loss);
}

TEST_CASE("dropout gradients match finite differences of the same masks", "[train]") {
  nnx::Rngs rngs{7};
  nnx::Gpt2 model(tiny_gpt2(0.25), nnx::Mode::train, rngs);
  auto [tokens, targets] = batch(2, 8, 37, 4);
  const nnx::State rng_state = nnx::state(model, nnx::of<nnx::RngState>).map([](const Tensor& t) { return t.clone(); });
  REQUIRE(rng_state.size() > 0);
  const auto result = train::value_and_grad(model, tokens, targets);

  // Directional derivative along a random direction, each loss with the masks of the gradient.
  const nnx::State params = nnx::state(model, nnx::of<nnx::Param>);
  std::mt19937 gen(9);
  std::normal_distribution<float> normal;
  const nnx::State dir = params.map([&](const Tensor& t) {
    Tensor d = Tensor::empty(t.shape());
    for (float& x : d.span<float>()) x = normal(gen);
    return d;
  });
  double analytic = 0;
  for (const auto& [path, g] : result.grads) {
    auto a = g.tensor().span<float>(), d = dir.at(path).tensor().span<float>();
    for (std::size_t i = 0; i < a.size(); ++i) analytic += double(a[i]) * d[i];
  }
  const double h = 1e-4;
  auto loss_at = [&](double sign) {
    nnx::State moved = params.map_with_path([&](const nnx::Path& p, const nnx::VariableState& leaf) {
      Tensor m = leaf.tensor().clone();
      auto mv = m.span<float>();
      auto d = dir.at(p).tensor().span<float>();
      for (std::size_t i = 0; i < mv.size(); ++i) mv[i] = static_cast<float>(mv[i] + sign * h * d[i]);
      return m;
    });
    nnx::Gpt2 probe = nnx::clone(model);
    nnx::update(probe, moved);
    nnx::update(probe, rng_state);
    return loss_double(probe, tokens, targets);
  };
  const double numeric = (loss_at(1) - loss_at(-1)) / (2 * h);
  CAPTURE(analytic, numeric);
  CHECK(std::fabs(analytic - numeric) <= 1e-2 * std::fabs(numeric));

  // And the loss itself is that of the same masks.
  nnx::Gpt2 probe = nnx::clone(model);
  nnx::update(probe, rng_state);
  CHECK(std::fabs(loss_double(probe, tokens, targets) - result.loss) <= 1e-5 * result.loss);
}

TEST_CASE("learning-rate schedules: linear warmup, cosine decay, constant", "[train]") {
  const train::LrSchedule s{.peak = 1.0, .warmup_steps = 10, .decay_steps = 110, .final_fraction = 0.1};
  CHECK(s.at(0) == Approx(0.1));
  CHECK(s.at(9) == Approx(1.0));
  CHECK(s.at(10) == Approx(1.0));
  CHECK(s.at(60) == Approx(0.55));
  CHECK(s.at(110) == Approx(0.1));
  CHECK(s.at(500) == Approx(0.1));
  CHECK(train::LrSchedule{.peak = 0.3}.at(1000) == 0.3);
}

TEST_CASE("a filter chooses what is differentiated", "[train]") {
  nnx::Rngs rngs{8};
  nnx::Llama model(tiny_llama(), nnx::Mode::train, rngs);
  auto [tokens, targets] = batch(1, 5, 29, 5);
  const auto all = train::value_and_grad(model, tokens, targets);
  const auto mlp = train::value_and_grad(model, tokens, targets, {}, nnx::path_contains("mlp"));
  CHECK(mlp.grads.size() == 6);  // gate, up, down of 2 layers
  for (const auto& [path, leaf] : mlp.grads) CHECK(nnx::equal(leaf.value, all.grads.at(path).value));
  CHECK(all.grads.size() == nnx::state(model, nnx::of<nnx::Param>).size());
}

TEST_CASE("models and batches that cannot train are rejected with the reason", "[train]") {
  nnx::Rngs rngs{9};
  auto [tokens, targets] = batch(2, 4, 37, 6);
  nnx::Gpt2 cached(tiny_gpt2(), nnx::Mode::prefill, rngs, {.cache_batch = 2});
  CHECK_THROWS_WITH(train::value_and_grad(cached, tokens, targets), Catch::Contains("h/0/attn/cache") &&
                                                                         Catch::Contains("Mode::train"));
  nnx::Llama sixteen(tiny_llama(), nnx::Mode::train, rngs);
  nnx::cast_weights(sixteen, nnx::DType::bf16);
  CHECK_THROWS_WITH(train::value_and_grad(sixteen, tokens, targets), Catch::Contains("bf16"));

  nnx::Gpt2 model(tiny_gpt2(), nnx::Mode::train, rngs);
  Tensor bad = targets.clone();
  bad.data<std::int32_t>()[3] = 37;
  CHECK_THROWS_WITH(train::value_and_grad(model, tokens, bad), Catch::Contains("target 37"));
  Tensor none = Tensor::full(targets.shape(), -100.0, nnx::DType::i32);
  CHECK_THROWS_WITH(train::value_and_grad(model, tokens, none), Catch::Contains("ignore id"));
  CHECK_THROWS_AS(train::train_step(train::TrainState<nnx::Gpt2>(model, {}), tokens, targets, {.grad_accum = 3}),
                  nnx::InvalidArgument);
  auto [long_tokens, long_targets] = batch(1, 17, 37, 7);
  CHECK_THROWS_WITH(train::value_and_grad(model, long_tokens, long_targets), Catch::Contains("exceeds"));
}
