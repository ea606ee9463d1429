// The vocabulary-tiled loss (GradOptions::vocab_tiles, ops::head_cross_entropy): the fused head
// and cross-entropy against a double-precision computation over the whole logits, for both head
// layouts and tile counts that do and do not divide the vocabulary; the models' loss and every
// gradient against the untiled path within 1e-6 relative; bitwise the same on 1 and 2 threads.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <type_traits>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/grad.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/train.hpp>

#include "train_test_util.hpp"

namespace {

using nnx::Tensor;
using i64 = std::int64_t;
namespace train = nnx::train;

using train_test::random_tensor;

// Largest |a - b| over the largest |b|: the error relative to the tensor's scale.
double relative_diff(std::span<const float> a, std::span<const double> b) {
  REQUIRE(a.size() == b.size());
  double diff = 0, scale = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(b[i]));
  }
  return diff / scale;
}
double relative_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> wide(b.span<float>().begin(), b.span<float>().end());
  return relative_diff(a.span<float>(), wide);
}

// tokens and next-token targets i32 [B, T], a few targets set to the ignore id.
std::pair<Tensor, Tensor> masked_batch(i64 B, i64 T, i64 V, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::int32_t> tok(B * T), tgt(B * T);
  for (auto& x : tok) x = static_cast<std::int32_t>(gen() % V);
  for (auto& x : tgt) x = gen() % 7 == 0 ? train::kIgnoreTarget : static_cast<std::int32_t>(gen() % V);
  return {Tensor::from_vector(tok, {B, T}), Tensor::from_vector(tgt, {B, T})};
}

}  // namespace

TEST_CASE("head_cross_entropy: loss, dhidden and dweight against double over the whole logits", "[train][vocab]") {
  const i64 M = 13, C = 19, V = 53;
  const Tensor hidden = random_tensor({M, C}, 1, 1.0f);
  std::vector<std::int32_t> t(M);
  for (i64 r = 0; r < M; ++r) t[r] = static_cast<std::int32_t>((r * 17 + 3) % V);
  t[4] = -100;
  t[9] = V - 1;
  const Tensor targets = Tensor::from_vector(t, {M});
  const float w = 1.0f / 12;
  const float* h = hidden.data<float>();

  for (nnx::ops::HeadLayout layout : {nnx::ops::HeadLayout::table, nnx::ops::HeadLayout::kernel}) {
    const bool table = layout == nnx::ops::HeadLayout::table;
    const Tensor head = random_tensor(table ? nnx::Shape{V, C} : nnx::Shape{C, V}, 2, 0.5f);
    const float* W = head.data<float>();
    const auto weight_at = [&](i64 v, i64 c) { return double(table ? W[v * C + c] : W[c * V + v]); };
    // Double reference: logits, loss, dlogits, then dhidden = dlogits W^T and dweight.
    double loss_ref = 0;
    std::vector<double> dh_ref(M * C, 0.0), dw_ref(V * C, 0.0);  // dw_ref[v * C + c]
    for (i64 r = 0; r < M; ++r) {
      if (t[r] == -100) continue;
      std::vector<double> z(V);
      for (i64 v = 0; v < V; ++v)
        for (i64 c = 0; c < C; ++c) z[v] += double(h[r * C + c]) * weight_at(v, c);
      const double m = *std::max_element(z.begin(), z.end());
      double s = 0;
      for (double x : z) s += std::exp(x - m);
      loss_ref += m + std::log(s) - z[t[r]];
      for (i64 v = 0; v < V; ++v) {
        const double g = w * (std::exp(z[v] - m) / s - (v == t[r]));
        for (i64 c = 0; c < C; ++c) {
          dh_ref[r * C + c] += g * weight_at(v, c);
          dw_ref[v * C + c] += g * h[r * C + c];
        }
      }
    }
    std::vector<double> dw_ref_layout(V * C);  // in the head's own layout
    for (i64 v = 0; v < V; ++v)
      for (i64 c = 0; c < C; ++c) dw_ref_layout[table ? v * C + c : c * V + v] = dw_ref[v * C + c];

    for (i64 tiles : {i64{1}, i64{2}, i64{3}, i64{7}, i64{53}, i64{1000}}) {
      CAPTURE(table, tiles);
      Tensor dweight = Tensor::zeros(head.shape());
      const auto out = nnx::ops::head_cross_entropy(hidden, head, layout, targets, w, -100, tiles, &dweight);
      CHECK(out.loss_sum == Approx(loss_ref).epsilon(1e-6));
      CHECK(relative_diff(out.dhidden.span<float>(), dh_ref) <= 1e-6);
      CHECK(relative_diff(dweight.span<float>(), dw_ref_layout) <= 1e-6);
      CHECK(std::all_of(out.dhidden.span<float>().begin() + 4 * C, out.dhidden.span<float>().begin() + 5 * C,
                        [](float x) { return x == 0.0f; }));  // the ignored row
      const auto eval = nnx::ops::head_cross_entropy(hidden, head, layout, targets, w, -100, tiles, nullptr);
      CHECK(eval.loss_sum == out.loss_sum);
      CHECK(eval.dhidden.numel() == 0);
    }
  }

  const Tensor head = random_tensor({V, C}, 3, 0.5f);
  Tensor dweight = Tensor::zeros(head.shape());
  CHECK_THROWS_AS(nnx::ops::head_cross_entropy(hidden, head, nnx::ops::HeadLayout::table, targets, w, -100, 0,
                                               &dweight),
                  nnx::InvalidArgument);
  CHECK_THROWS_WITH(nnx::ops::head_cross_entropy(hidden, head, nnx::ops::HeadLayout::kernel, targets, w, -100, 2,
                                                 &dweight),
                    Catch::Contains("expected a kernel [C, V]"));
  std::vector<std::int32_t> bad = t;
  bad[2] = static_cast<std::int32_t>(V);
  CHECK_THROWS_WITH(nnx::ops::head_cross_entropy(hidden, head, nnx::ops::HeadLayout::table,
                                                 Tensor::from_vector(bad, {M}), w, -100, 2, &dweight),
                    Catch::Contains("target 53 at flat position 2 is outside [0, 53)"));
}

TEMPLATE_TEST_CASE("vocab tiles: the models' loss and every gradient equal the untiled ones", "[train][vocab]",
                   nnx::Gpt2, nnx::Llama) {
  using Model = TestType;
  std::vector<Model> models;
  nnx::Rngs rngs{11};
  if constexpr (std::is_same_v<Model, nnx::Gpt2>) {
    nnx::Gpt2Config c;
    c.vocab_size = 101;
    c.n_positions = 16;
    c.n_embd = 24;
    c.n_layer = 2;
    c.n_head = 3;
    models.emplace_back(c, nnx::Mode::train, rngs);  // tied head
  } else {
    nnx::LlamaConfig c;
    c.vocab_size = 97;
    c.hidden_size = 32;
    c.intermediate_size = 40;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 4;
    c.num_key_value_heads = 2;
    c.max_position_embeddings = 16;
    models.emplace_back(c, nnx::Mode::train, rngs);  // untied: lm_head's kernel [C, V]
    c.tie_word_embeddings = true;
    models.emplace_back(c, nnx::Mode::train, rngs);
  }
  for (Model& model : models) {
    const i64 V = model.vocab_size();
    const auto [tokens, targets] = masked_batch(3, 9, V, 5);
    const train::LossAndGrads whole = train::value_and_grad(model, tokens, targets);
    for (i64 tiles : {i64{4}, i64{9}}) {
      CAPTURE(tiles);
      std::vector<train::LossAndGrads> tiled;
      const int threads = nnx::num_threads();
      for (int n : {1, 2}) {
        nnx::set_num_threads(n);
        tiled.push_back(train::value_and_grad(model, tokens, targets, {.vocab_tiles = tiles}));
      }
      nnx::set_num_threads(threads);
      CHECK(tiled[0].loss == Approx(whole.loss).epsilon(1e-6));
      CHECK(tiled[0].valid_targets == whole.valid_targets);
      REQUIRE(tiled[0].grads.size() == whole.grads.size());
      for (const auto& [path, leaf] : whole.grads) {
        CAPTURE(path.to_string());
        CHECK(relative_diff(tiled[0].grads.at(path).tensor(), leaf.tensor()) <= 1e-6);
        CHECK(nnx::equal(tiled[0].grads.at(path).tensor(), tiled[1].grads.at(path).tensor()));
      }
      CHECK(tiled[0].loss == tiled[1].loss);
      CHECK(train::evaluate_loss(model, tokens, targets, {.vocab_tiles = tiles}) ==
            Approx(train::evaluate_loss(model, tokens, targets)).epsilon(1e-6));
    }
    CHECK_THROWS_WITH(train::value_and_grad(model, tokens, targets, {.vocab_tiles = 0}),
                      Catch::Contains("vocab_tiles must be >= 1, got 0"));
  }
}

TEST_CASE("vocab tiles: a train_step with tiles updates as the untiled one", "[train][vocab]") {
  nnx::Gpt2Config c;
  c.vocab_size = 61;
  c.n_positions = 16;
  c.n_embd = 16;
  c.n_layer = 1;
  c.n_head = 2;
  nnx::Rngs rngs{12};
  // SGD: the update is linear in the gradient (AdamW's first step is lr * sign(g), which turns
  // rounding noise in gradients that are zero in exact arithmetic, like the key bias's, into
  // whole steps); a large rate so the updates dominate the rounding of the parameters.
  const train::TrainState<nnx::Gpt2> state(nnx::Gpt2(c, nnx::Mode::train, rngs),
                                           {.kind = train::OptimizerKind::sgd, .lr = {.peak = 100.0}});
  const auto [tokens, targets] = masked_batch(4, 8, c.vocab_size, 6);
  auto [whole, m_whole] = train::train_step(state, tokens, targets, {.grad_accum = 2});
  auto [tiled, m_tiled] = train::train_step(state, tokens, targets, {.grad_accum = 2, .vocab_tiles = 5});
  CHECK(m_tiled.loss == Approx(m_whole.loss).epsilon(1e-6));
  CHECK(m_tiled.grad_norm == Approx(m_whole.grad_norm).epsilon(1e-6));
  const nnx::State before = nnx::state(state.model, nnx::of<nnx::Param>);
  const nnx::State a = nnx::state(whole.model, nnx::of<nnx::Param>), b = nnx::state(tiled.model, nnx::of<nnx::Param>);
  bool same_bits = true;  // the tiles change the rounding: the tiled path really ran
  for (const auto& [path, leaf] : before) {
    CAPTURE(path.to_string());
    same_bits = same_bits && nnx::equal(a.at(path).tensor(), b.at(path).tensor());
    const auto p0 = leaf.tensor().span<float>(), pa = a.at(path).tensor().span<float>(),
               pb = b.at(path).tensor().span<float>();
    std::vector<float> update_b(p0.size());
    std::vector<double> update_a(p0.size());
    for (std::size_t i = 0; i < p0.size(); ++i) {
      update_a[i] = double(pa[i]) - double(p0[i]);
      update_b[i] = pb[i] - p0[i];
    }
    CHECK(relative_diff(update_b, update_a) <= 1e-6);
  }
  CHECK_FALSE(same_bits);
}

TEST_CASE("head_cross_entropy: the peak of live tensor memory falls with the tiles", "[train][vocab]") {
  const i64 M = 256, C = 16, V = 4000;
  const Tensor hidden = random_tensor({M, C}, 7, 1.0f), head = random_tensor({V, C}, 8, 0.3f);
  std::vector<std::int32_t> t(M);
  for (i64 r = 0; r < M; ++r) t[r] = static_cast<std::int32_t>((r * 131) % V);
  const Tensor targets = Tensor::from_vector(t, {M});
  Tensor dweight = Tensor::zeros(head.shape());
  const auto peak_bytes = [&](i64 tiles) {
    const std::int64_t before = nnx::tensor_memory_stats().live_bytes;
    nnx::reset_tensor_memory_peak();
    (void)nnx::ops::head_cross_entropy(hidden, head, nnx::ops::HeadLayout::table, targets, 1.0f, -100, tiles,
                                       &dweight);
    return nnx::tensor_memory_stats().peak_live_bytes - before;
  };
  const std::int64_t logits_bytes = M * V * 4, dhidden_bytes = M * C * 4;
  CHECK(peak_bytes(1) >= logits_bytes);
  CHECK(peak_bytes(8) <= logits_bytes / 8 + dhidden_bytes);
  CHECK(peak_bytes(8) >= logits_bytes / 8);
}
