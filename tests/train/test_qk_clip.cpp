// QK-Clip: the sown max logits against a double-precision brute force (GQA, causal), the
// clipped heads' new maximum on the same batch at tau (the group's largest exactly, the
// others below), heads under tau untouched, and train_step's qk_clip leaving no intermediate
// in the state.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/grad.hpp>
#include <nnx/train.hpp>

#include "train_test_util.hpp"

namespace {

using nnx::Tensor;
using i64 = std::int64_t;
using train_test::random_tokens;
namespace train = nnx::train;

using train_test::random_tensor;

// Every layer's sown max logits, in layer order, after one training forward of `tokens`.
template <class Model>
std::vector<std::vector<float>> sown_max_logits(Model& model, const Tensor& tokens) {
  train::sow_max_logits(model);
  train::saved_t<Model> saved;
  (void)train::forward(model, tokens, nnx::arange_positions(tokens.dim(0), tokens.dim(1)), saved);
  std::vector<std::vector<float>> out;
  nnx::for_each_module<nnx::Attention>(model, [&](const nnx::Path&, nnx::Attention& a) {
    REQUIRE(a.max_logits);
    const auto m = a.max_logits->value().span<float>();
    out.emplace_back(m.begin(), m.end());
  });
  train::clear_max_logits(model);
  return out;
}

// Multiplies every query/key projection by `factor`, so logits grow by factor^2.
template <class Model>
void scale_qk(Model& model, float factor) {
  nnx::for_each_module<nnx::Linear>(model, [&](const nnx::Path& p, nnx::Linear& l) {
    const std::string s = p.to_string();
    if (s.find("qkv") == std::string::npos && s.find("query") == std::string::npos &&
        s.find("key") == std::string::npos)
      return;
    for (float& x : l.kernel->value().span<float>()) x *= factor;
  });
}

bool has_intermediates(const nnx::State& s) {
  for (const auto& [path, leaf] : s)
    if (leaf.kind->is_a(nnx::Intermediate::kind_info())) return true;
  return false;
}

// Clips a one-layer model (a layer's logits depend on the layers below, which the clip
// changes) at tau between its heads' median max logits, then checks the same batch's: each
// head above tau now at most tau, each group's largest exactly tau, and heads whose whole
// group was under tau unchanged.
template <class Model>
void check_clip(Model& model, const Tensor& tokens, i64 H, i64 Hkv) {
  const auto before = sown_max_logits(model, tokens);
  REQUIRE(before.size() == 1);
  std::vector<float> sorted = before[0];
  std::sort(sorted.begin(), sorted.end());
  const float largest = sorted.back();
  const double tau = 0.5 * (double(sorted[H / 2 - 1]) + double(sorted[H / 2]));
  REQUIRE(tau > 0);

  train::sow_max_logits(model);
  {
    train::saved_t<Model> saved;
    (void)train::forward(model, tokens, nnx::arange_positions(tokens.dim(0), tokens.dim(1)), saved);
  }
  const train::QkClipResult clip = train::qk_clip(model, tau);
  train::clear_max_logits(model);
  CHECK(clip.max_logit == Approx(largest).epsilon(1e-6));
  i64 expect_clipped = 0;
  for (const auto& layer : before)
    for (float m : layer) expect_clipped += m > tau;
  CHECK(clip.clipped_heads == expect_clipped);
  CHECK(expect_clipped == H / 2);

  const auto after = sown_max_logits(model, tokens);
  const i64 group = H / Hkv;
  for (std::size_t l = 0; l < before.size(); ++l)
    for (i64 g = 0; g < Hkv; ++g) {
      const float group_max = *std::max_element(before[l].begin() + g * group, before[l].begin() + (g + 1) * group);
      for (i64 h = g * group; h < (g + 1) * group; ++h) {
        CAPTURE(l, h, before[l][h], after[l][h], tau);
        if (group_max <= tau) {
          CHECK(after[l][h] == before[l][h]);  // neither projection touched
        } else {
          CHECK(after[l][h] <= tau * (1 + 1e-5));
          if (before[l][h] == group_max) CHECK(after[l][h] == Approx(tau).epsilon(1e-5));
        }
      }
    }
}

}  // namespace

TEST_CASE("max_attention_logits_: each head's causal maximum against double, with GQA", "[train][qkclip]") {
  const i64 B = 2, T = 7, H = 4, Hkv = 2, D = 5;
  const Tensor q = random_tensor({B, T, H, D}, 1, 1.0f), k = random_tensor({B, T, Hkv, D}, 2, 1.0f);
  const float scale = 0.3f;
  Tensor out = Tensor::full({H}, -std::numeric_limits<double>::infinity());
  nnx::ops::max_attention_logits_(q, k, scale, out);
  const float* qd = q.data<float>();
  const float* kd = k.data<float>();
  for (i64 h = 0; h < H; ++h) {
    double best = -INFINITY;
    for (i64 b = 0; b < B; ++b)
      for (i64 t = 0; t < T; ++t)
        for (i64 s = 0; s <= t; ++s) {
          double dot = 0;
          for (i64 d = 0; d < D; ++d)
            dot += double(qd[((b * T + t) * H + h) * D + d]) * double(kd[((b * T + s) * Hkv + h / 2) * D + d]);
          best = std::max(best, scale * dot);
        }
    CHECK(out.data<float>()[h] == Approx(best).epsilon(1e-5));
  }
  // Max-accumulates: a larger value already there stays.
  out.data<float>()[0] = 1e9f;
  nnx::ops::max_attention_logits_(q, k, scale, out);
  CHECK(out.data<float>()[0] == 1e9f);
}

TEST_CASE("qk_clip: GPT-2 (fused qkv with bias) and Llama (separate, GQA) heads end at tau", "[train][qkclip]") {
  nnx::Rngs rngs{21};
  const Tensor tokens = random_tokens(2, 12, 50, 3);
  SECTION("gpt2") {
    nnx::Gpt2Config c;
    c.vocab_size = 50;
    c.n_positions = 16;
    c.n_embd = 48;
    c.n_layer = 1;
    c.n_head = 6;
    nnx::Gpt2 model(c, nnx::Mode::train, rngs);
    scale_qk(model, 8.0f);
    check_clip(model, tokens, 6, 6);
  }
  SECTION("llama") {
    nnx::LlamaConfig c;
    c.vocab_size = 50;
    c.hidden_size = 64;
    c.intermediate_size = 40;
    c.num_hidden_layers = 1;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 4;
    c.max_position_embeddings = 16;
    nnx::Llama model(c, nnx::Mode::train, rngs);
    scale_qk(model, 8.0f);
    check_clip(model, tokens, 8, 4);
  }
  nnx::Gpt2Config c;
  c.vocab_size = 50;
  c.n_positions = 16;
  c.n_embd = 16;
  c.n_layer = 1;
  c.n_head = 2;
  nnx::Gpt2 model(c, nnx::Mode::train, rngs);
  CHECK_THROWS_WITH(train::qk_clip(model, 0.0), Catch::Contains("tau must be > 0"));
}

TEST_CASE("train_step with qk_clip: the batch's max logit ends at tau, no intermediate stays", "[train][qkclip]") {
  nnx::LlamaConfig c;
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 1;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  nnx::Rngs rngs{22};
  nnx::Llama model(c, nnx::Mode::train, rngs);
  scale_qk(model, 8.0f);
  const Tensor tokens = random_tokens(4, 10, c.vocab_size, 4), targets = random_tokens(4, 10, c.vocab_size, 5);
  const float largest = [&] {
    float m = -INFINITY;
    for (const auto& layer : sown_max_logits(model, tokens))
      m = std::max(m, *std::max_element(layer.begin(), layer.end()));
    return m;
  }();
  // lr 0: the update leaves the weights, so the clip alone decides the next max logit.
  const train::TrainState<nnx::Llama> state(model, {.kind = train::OptimizerKind::sgd, .lr = {.peak = 0.0}});
  const double tau = 0.6 * largest;
  auto [next, m] = train::train_step(state, tokens, targets, {.grad_accum = 2, .qk_clip = tau});
  CHECK(m.max_attention_logit == Approx(largest).epsilon(1e-6));  // the maximum over both micro-batches
  CHECK(m.clipped_heads > 0);
  CHECK_FALSE(has_intermediates(nnx::state(next)));
  float after = -INFINITY;
  for (const auto& layer : sown_max_logits(next.model, tokens))
    after = std::max(after, *std::max_element(layer.begin(), layer.end()));
  CHECK(after == Approx(tau).epsilon(1e-5));
  // The held state is unchanged (the clip wrote fresh tensors).
  float held = -INFINITY;
  nnx::Llama held_model = state.model;
  for (const auto& layer : sown_max_logits(held_model, tokens))
    held = std::max(held, *std::max_element(layer.begin(), layer.end()));
  CHECK(held == largest);

  auto [plain, m_plain] = train::train_step(state, tokens, targets);
  CHECK(m_plain.clipped_heads == 0);
  CHECK_THROWS_WITH(train::train_step(state, tokens, targets, {.qk_clip = -1.0}),
                    Catch::Contains("qk_clip must be >= 0"));
}
