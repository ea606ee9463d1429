// LoRA: attaching by path pattern (nothing changes while B is zero), the unmerged forward
// against merge_lora and a double computation, the adapters' gradients against the chain rule
// applied (in double) to the full model's kernel gradient, and a frozen fine-tune: gradients,
// moments and updates for the adapters alone, base weights bitwise untouched.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/models.hpp>
#include <nnx/train.hpp>

#include "train_test_util.hpp"

namespace {

using nnx::Tensor;
using i64 = std::int64_t;
using train_test::bitwise_equal;
using train_test::random_tokens;
namespace train = nnx::train;

void randomize(Tensor t, std::uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  for (float& x : t.span<float>()) x = dist(gen);
}

nnx::LlamaConfig lora_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  return c;
}

nnx::Gpt2Config lora_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 40;
  c.n_positions = 16;
  c.n_embd = 24;
  c.n_layer = 2;
  c.n_head = 3;
  return c;
}

// Gives every adapter's B random values (a trained adapter), so it changes the outputs.
template <class Model>
void train_adapters_randomly(Model& model, std::uint32_t seed) {
  nnx::for_each_module<nnx::Linear>(model, [&](const nnx::Path&, nnx::Linear& l) {
    if (l.lora) randomize(l.lora->b.value(), seed++, 0.2f);
  });
}

}  // namespace

TEST_CASE("add_lora: adapters on the Linears the pattern matches, a no-op until trained", "[train][lora]") {
  nnx::Rngs rngs{1};
  nnx::Llama model(lora_llama(), nnx::Mode::train, rngs);
  const Tensor tokens = random_tokens(2, 9, 40, 2);
  const Tensor before = model(tokens, nnx::arange_positions(2, 9));
  const std::vector<nnx::Path> attached =
      nnx::add_lora(model, {.rank = 3, .alpha = 6, .targets = "attn/(query|value)$"}, rngs);
  REQUIRE(attached.size() == 4);
  CHECK(attached[0].to_string() == "layers/0/attn/query");
  CHECK(attached[1].to_string() == "layers/0/attn/value");
  const nnx::State adapters = nnx::state(model, nnx::of<nnx::LoraParam>);
  REQUIRE(adapters.size() == 8);
  CHECK(adapters.at(nnx::Path::parse("layers/1/attn/value/lora/a")).tensor().shape() == nnx::Shape{32, 3});
  CHECK(adapters.at(nnx::Path::parse("layers/1/attn/value/lora/b")).tensor().shape() == nnx::Shape{3, 16});
  // LoraParams are Params: a plain fine-tune or a checkpoint of of<Param> includes them.
  CHECK(nnx::state(model, nnx::of<nnx::Param>).find(nnx::Path::parse("layers/0/attn/query/lora/a")));
  CHECK(nnx::equal(model(tokens, nnx::arange_positions(2, 9)), before));  // B = 0

  CHECK_THROWS_WITH(nnx::add_lora(model, {.rank = 2, .alpha = 1, .targets = "attn/query"}, rngs),
                    Catch::Contains("'layers/0/attn/query' already has an adapter"));
  CHECK_THROWS_WITH(nnx::add_lora(model, {.rank = 2, .alpha = 1, .targets = "q_proj"}, rngs),
                    Catch::Contains("match no Linear") && Catch::Contains("layers/0/mlp/gate"));
  CHECK_THROWS_WITH(nnx::add_lora(model, {.rank = 2, .alpha = 1, .targets = "attn/(query"}, rngs),
                    Catch::Contains("not a regular expression"));
  CHECK_THROWS_WITH(nnx::add_lora(model, {.rank = 0, .alpha = 1, .targets = "mlp"}, rngs),
                    Catch::Contains("rank must be >= 1"));
  CHECK_THROWS_WITH(nnx::LoraConfig::from_json({{"rank", 2}}, "x/config"), Catch::Contains("x/config"));
}

TEST_CASE("LoRA forward: the unmerged product against double and against merge_lora", "[train][lora]") {
  nnx::Rngs rngs{3};
  nnx::Linear layer(7, 5, rngs);
  randomize(layer.bias->value(), 4, 0.5f);
  const std::vector<nnx::Path> attached = nnx::add_lora(layer, {.rank = 2, .alpha = 3, .targets = ".*"}, rngs);
  REQUIRE(attached.size() == 1);
  randomize(layer.lora->b.value(), 5, 0.7f);
  Tensor x = Tensor::empty({3, 7});
  randomize(x, 6, 1.0f);
  const Tensor y = layer(x);
  const float* W = layer.kernel->value().data<float>();
  const float* A = layer.lora->a.value().data<float>();
  const float* B = layer.lora->b.value().data<float>();
  const float* b = layer.bias->value().data<float>();
  for (i64 m = 0; m < 3; ++m)
    for (i64 j = 0; j < 5; ++j) {
      double ref = b[j];
      for (i64 i = 0; i < 7; ++i) ref += double(x.data<float>()[m * 7 + i]) * W[i * 5 + j];
      for (i64 k = 0; k < 2; ++k) {
        double u = 0;
        for (i64 i = 0; i < 7; ++i) u += double(x.data<float>()[m * 7 + i]) * A[i * 2 + k];
        ref += 1.5 * u * B[k * 5 + j];
      }
      CHECK(y.data<float>()[m * 5 + j] == Approx(ref).margin(1e-5));
    }

  nnx::Llama model(lora_llama(), nnx::Mode::train, rngs);
  nnx::add_lora(model, {.rank = 4, .alpha = 8, .targets = "attn|mlp/down"}, rngs);
  train_adapters_randomly(model, 7);
  const Tensor tokens = random_tokens(2, 9, 40, 8);
  const Tensor unmerged = model(tokens, nnx::arange_positions(2, 9));
  nnx::Llama merged = nnx::clone(model);
  CHECK(nnx::merge_lora(merged).size() == 10);
  CHECK(nnx::state(merged, nnx::of<nnx::LoraParam>).empty());
  const Tensor merged_logits = merged(tokens, nnx::arange_positions(2, 9));
  const float* u = unmerged.data<float>();
  const float* v = merged_logits.data<float>();
  double worst = 0;
  for (i64 i = 0; i < unmerged.numel(); ++i) worst = std::max(worst, std::abs(double(u[i]) - v[i]));
  CHECK(worst < 1e-4);
  // The adapters changed the model: the comparison above is not between two base models.
  nnx::Llama base = nnx::clone(model);
  nnx::for_each_module<nnx::Linear>(base, [](const nnx::Path&, nnx::Linear& l) { l.lora.reset(); });
  const Tensor base_logits = base(tokens, nnx::arange_positions(2, 9));
  double moved = 0;
  for (i64 i = 0; i < unmerged.numel(); ++i) moved = std::max(moved, std::abs(double(u[i]) - base_logits.data<float>()[i]));
  CHECK(moved > 1e-2);
}

namespace {

// The adapters' gradients follow from the gradient G of the effective kernel W + s·A·B (the
// full model's, merged): dA = s·G·Bᵀ and dB = s·Aᵀ·G, computed here in double.
template <class Model>
void check_adapter_grads(Model& model, const Tensor& tokens, const Tensor& targets, bool tiled) {
  Model merged = nnx::clone(model);
  nnx::merge_lora(merged);
  const auto full = train::value_and_grad(merged, tokens, targets);
  Model frozen = model;
  train::freeze_base(frozen);
  const auto lora = train::value_and_grad(frozen, tokens, targets);
  CHECK(lora.loss == Approx(full.loss).epsilon(1e-5));
  REQUIRE(lora.grads.size() == nnx::state(model, nnx::of<nnx::LoraParam>).size());
  std::int64_t checked = 0;
  nnx::for_each_module<nnx::Linear>(model, [&](const nnx::Path& path, nnx::Linear& l) {
    if (!l.lora) return;
    const i64 in = l.in_features, out = l.out_features, r = l.lora->rank;
    const double s = l.lora->scale();
    const float* G = full.grads.at(nnx::Path::parse(path.to_string() + "/kernel")).tensor().template data<float>();
    const float* A = l.lora->a.value().template data<float>();
    const float* B = l.lora->b.value().template data<float>();
    const float* dA = lora.grads.at(nnx::Path::parse(path.to_string() + "/lora/a")).tensor().template data<float>();
    const float* dB = lora.grads.at(nnx::Path::parse(path.to_string() + "/lora/b")).tensor().template data<float>();
    double scale_a = 0, scale_b = 0, err_a = 0, err_b = 0;
    for (i64 i = 0; i < in; ++i)
      for (i64 k = 0; k < r; ++k) {
        double ref = 0;
        for (i64 j = 0; j < out; ++j) ref += s * G[i * out + j] * B[k * out + j];
        scale_a = std::max(scale_a, std::abs(ref));
        err_a = std::max(err_a, std::abs(ref - dA[i * r + k]));
      }
    for (i64 k = 0; k < r; ++k)
      for (i64 j = 0; j < out; ++j) {
        double ref = 0;
        for (i64 i = 0; i < in; ++i) ref += s * A[i * r + k] * G[i * out + j];
        scale_b = std::max(scale_b, std::abs(ref));
        err_b = std::max(err_b, std::abs(ref - dB[k * out + j]));
      }
    CAPTURE(path.to_string(), scale_a, err_a, scale_b, err_b);
    CHECK(scale_a > 0);
    CHECK(scale_b > 0);
    CHECK(err_a <= 1e-4 * scale_a + 1e-7);
    CHECK(err_b <= 1e-4 * scale_b + 1e-7);
    ++checked;
  });
  CHECK(checked > 0);
  if (!tiled) return;
  // Vocabulary tiles with a frozen head: the head passes its gradient down, takes none.
  const auto tiled_grads = train::value_and_grad(frozen, tokens, targets, {.vocab_tiles = 3});
  CHECK(tiled_grads.loss == Approx(lora.loss).epsilon(1e-6));
  for (const auto& [path, leaf] : lora.grads) {
    const auto a = leaf.tensor().template span<float>();
    const auto b = tiled_grads.grads.at(path).tensor().template span<float>();
    double scale = 0, err = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      scale = std::max(scale, double(std::abs(a[i])));
      err = std::max(err, double(std::abs(a[i] - b[i])));
    }
    CAPTURE(path.to_string());
    CHECK(err <= 1e-5 * scale);
  }
}

}  // namespace

TEST_CASE("LoRA gradients: the chain rule through the full model's kernel gradient", "[train][lora]") {
  nnx::Rngs rngs{9};
  const Tensor tokens = random_tokens(2, 10, 40, 10), targets = random_tokens(2, 10, 40, 11);
  SECTION("llama, untied head with an adapter") {
    nnx::LlamaConfig c = lora_llama();
    c.tie_word_embeddings = false;
    nnx::Llama model(c, nnx::Mode::train, rngs);
    nnx::add_lora(model, {.rank = 3, .alpha = 5, .targets = "attn/(query|key|value|out)|mlp|lm_head"}, rngs);
    train_adapters_randomly(model, 12);
    check_adapter_grads(model, tokens, targets, false);
  }
  SECTION("gpt2, fused qkv with bias, tied table frozen") {
    nnx::Gpt2 model(lora_gpt2(), nnx::Mode::train, rngs);
    nnx::add_lora(model, {.rank = 2, .alpha = 2, .targets = "attn/qkv|mlp/down"}, rngs);
    train_adapters_randomly(model, 13);
    check_adapter_grads(model, tokens, targets, true);
  }
}

TEST_CASE("LoRA fine-tune: only the adapters get moments and updates; base weights bitwise kept", "[train][lora]") {
  nnx::Rngs rngs{14};
  nnx::Llama model(lora_llama(), nnx::Mode::train, rngs);
  const nnx::State base_before = nnx::state(model, nnx::of<nnx::Param>);
  nnx::add_lora(model, {.rank = 4, .alpha = 8, .targets = "attn|mlp"}, rngs);
  nnx::Llama plain(lora_llama(), nnx::Mode::train, rngs);
  CHECK_THROWS_WITH(train::freeze_base(plain), Catch::Contains("no LoRA adapters"));

  const std::int64_t frozen = train::freeze_base(model);
  CHECK(frozen == static_cast<std::int64_t>(base_before.size()));
  CHECK(nnx::state(model, nnx::of<nnx::Param>).size() == nnx::state(model, nnx::of<nnx::LoraParam>).size());

  train::TrainState<nnx::Llama> state(model, {.lr = {.peak = 3e-2}});
  CHECK(nnx::state(state.mu, nnx::of<train::OptState>).size() == nnx::state(model, nnx::of<nnx::LoraParam>).size());
  const Tensor tokens = random_tokens(4, 12, 40, 15);
  Tensor targets = Tensor::empty({4, 12}, nnx::DType::i32);
  for (i64 i = 0; i < targets.numel(); ++i) targets.data<std::int32_t>()[i] = tokens.data<std::int32_t>()[i] % 7;
  double first = 0, last = 0;
  for (int step = 0; step < 25; ++step) {
    auto [next, m] = train::train_step(std::move(state), tokens, targets, {.vocab_tiles = step % 2 ? 3 : 1});
    state = std::move(next);
    if (step == 0) first = m.loss;
    last = m.loss;
  }
  CHECK(last < 0.7 * first);
  const nnx::Llama trained = train::unfreeze(state.model);
  nnx::State base_after = nnx::state(trained, nnx::of<nnx::Param>)
                              .filter(nnx::Not(nnx::of<nnx::LoraParam>));
  CHECK(bitwise_equal(base_after, base_before));
  CHECK(nnx::state(state.model, nnx::of<train::FrozenParam>).size() == base_before.size());
}
