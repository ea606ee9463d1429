// Stacked and per-layer layouts (nnx/core/layers.hpp, ModelOptions::layout): the same seed
// gives the same weights; logits are bit-identical in train, prefill and autoregressive modes;
// stacked leaves are one [n_layer, ...] leaf per path with a "layers" axis; a layer's variables
// are zero-copy slices; conversions round-trip exactly; gradients, quantization and bf16
// weights agree with the per-layer model's. (A warm stacked decode step allocates nothing:
// test_decode_allocations.cpp.)
#include <catch2/catch.hpp>

#include <nnx/models.hpp>
#include <nnx/quant.hpp>
#include <nnx/train.hpp>

namespace {

nnx::Gpt2Config gpt2_config() {
  nnx::Gpt2Config c;
  c.vocab_size = 97;
  c.n_positions = 64;
  c.n_embd = 32;
  c.n_layer = 3;
  c.n_head = 4;
  return c;
}

nnx::LlamaConfig llama_config() {
  nnx::LlamaConfig c;
  c.vocab_size = 89;
  c.hidden_size = 48;
  c.intermediate_size = 72;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 6;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = false;
  return c;
}

nnx::Tensor tokens_2x5() {
  return nnx::Tensor::from_vector(std::vector<std::int32_t>{3, 17, 42, 8, 1, 60, 2, 33, 7, 11}, {2, 5});
}

template <class Model, class Config>
Model build(const Config& cfg, nnx::Mode mode, nnx::Layout layout) {
  nnx::Rngs rngs{7};
  return Model(cfg, mode, rngs, {.cache_batch = 2, .cache_length = 32, .layout = layout});
}

// Prefill two rows of different lengths, then three decode steps: every logit of both models.
template <class Model>
std::vector<nnx::Tensor> run_serving(Model& model) {
  std::vector<nnx::Tensor> out;
  auto pre = nnx::prefill(model, tokens_2x5(), {5, 3});
  out.push_back(pre.logits);
  std::vector<std::int64_t> pos{5, 3};
  for (int step = 0; step < 3; ++step) {
    const auto next = nnx::Tensor::from_vector(std::vector<std::int32_t>{5 + step, 9 + step}, {2});
    out.push_back(nnx::decode_step(model, next, pos));
    for (auto& p : pos) ++p;
  }
  return out;
}

template <class Model, class Config>
void check_layouts_agree(const Config& cfg) {
  const std::string_view key = Model::layers_key;
  const std::int64_t L = 3;

  SECTION("same weights; stacked leaves carry a leading layers axis") {
    Model per = build<Model>(cfg, nnx::Mode::prefill, nnx::Layout::per_layer);
    Model st = build<Model>(cfg, nnx::Mode::prefill, nnx::Layout::stacked);
    const nnx::State ps = nnx::state(per), ss = nnx::state(st);
    REQUIRE(nnx::layout_of(ps, key) == nnx::Layout::per_layer);
    REQUIRE(nnx::layout_of(ss, key) == nnx::Layout::stacked);
    std::size_t stacked_leaves = 0;
    for (const auto& [path, leaf] : ss) {
      if (path[0].name() != key) continue;
      ++stacked_leaves;
      INFO(path.to_string());
      CHECK(leaf.shape()[0] == L);
      REQUIRE(!leaf.axes().empty());
      CHECK(leaf.axes().front() == "layers");
      for (std::int64_t i = 0; i < L; ++i) {
        nnx::Path p{path[0], i};
        for (std::size_t k = 1; k < path.size(); ++k) p.push_back(path[k]);
        const nnx::VariableState* layer = ps.find(p);
        REQUIRE(layer);
        CHECK(nnx::equal(leaf.tensor().select(i), layer->tensor()));
        CHECK(std::vector<std::string>(leaf.axes().begin() + 1, leaf.axes().end()) == layer->axes());
      }
    }
    CHECK(stacked_leaves * L + (ss.size() - stacked_leaves) == ps.size());
    // The state-level conversion gives the other model's state exactly, both ways.
    CHECK(nnx::to_layout(ps, key, nnx::Layout::stacked) == ss);
    CHECK(nnx::to_layout(ss, key, nnx::Layout::per_layer) == ps);
  }

  SECTION("identical logits in every mode") {
    Model per = build<Model>(cfg, nnx::Mode::train, nnx::Layout::per_layer);
    Model st = build<Model>(cfg, nnx::Mode::train, nnx::Layout::stacked);
    const auto positions = nnx::arange_positions(2, 5);
    CHECK(nnx::equal(per(tokens_2x5(), positions), st(tokens_2x5(), positions)));

    Model per_serve = build<Model>(cfg, nnx::Mode::autoregressive, nnx::Layout::per_layer);
    Model st_serve = build<Model>(cfg, nnx::Mode::autoregressive, nnx::Layout::stacked);
    const auto a = run_serving(per_serve), b = run_serving(st_serve);
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(nnx::equal(a[i], b[i]));
    // The stacked KV cache holds what the per-layer caches hold.
    CHECK(nnx::to_layout(nnx::state(st_serve, nnx::of<nnx::Cache>), key, nnx::Layout::per_layer) ==
          nnx::state(per_serve, nnx::of<nnx::Cache>));
  }

  SECTION("a layer runs on zero-copy slices; the pure function agrees and donation is honoured") {
    Model st = build<Model>(cfg, nnx::Mode::prefill, nnx::Layout::stacked);
    auto& layers = st.decoder_layers();
    REQUIRE(layers.size() == static_cast<std::size_t>(L));
    const nnx::State params = nnx::state(st, nnx::of<nnx::Param>);
    for (const auto& [path, leaf] : params) {
      if (path[0].name() != key) continue;
      const std::size_t layer_bytes = leaf.tensor().nbytes() / static_cast<std::size_t>(L);
      // Layer 2's leaf at the same relative path points into the stacked buffer.
      nnx::State layer2 = nnx::state(layers[2], nnx::of<nnx::Param>);
      nnx::Path rel;
      for (std::size_t k = 1; k < path.size(); ++k) rel.push_back(path[k]);
      const nnx::VariableState* v = layer2.find(rel);
      REQUIRE(v);
      CHECK(static_cast<const std::byte*>(v->tensor().raw_data()) ==
            static_cast<const std::byte*>(leaf.tensor().raw_data()) + 2 * layer_bytes);
      CHECK(v->tensor().use_count() == 0);  // borrowed: donation checks see the stacked tensor alone
      break;
    }
    // apply() with a kept (not donated) cache leaves it unchanged; donated, it is written.
    auto [graphdef, p, cache, rest] = nnx::split(st, nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);
    const nnx::State zeros = cache.map([](const nnx::Tensor& t) { return t.clone(); });
    const auto positions = nnx::arange_positions(2, 5);
    auto out = nnx::apply(graphdef, p, cache, rest, tokens_2x5(), positions);
    CHECK(cache == zeros);  // kept: copied on write
    CHECK(!(out.cache == zeros));
    nnx::State own = cache.map([](const nnx::Tensor& t) { return t.clone(); });  // held by nothing else
    const void* donated = own.entry(0).leaf.tensor().raw_data();
    auto out2 = nnx::apply(graphdef, p, std::move(own), rest, tokens_2x5(), positions);
    CHECK(out2.cache.entry(0).leaf.tensor().raw_data() == donated);  // donated: written in place
    Model per = build<Model>(cfg, nnx::Mode::prefill, nnx::Layout::per_layer);
    CHECK(nnx::equal(out.logits, per(tokens_2x5(), positions)));
  }

  SECTION("to_layout on a model: per-layer views of the stacked leaves, and back") {
    Model st = build<Model>(cfg, nnx::Mode::train, nnx::Layout::stacked);
    Model per = nnx::to_layout(st, nnx::Layout::per_layer);
    CHECK(st.decoder_layers().layout() == nnx::Layout::stacked);
    CHECK(per.decoder_layers().layout() == nnx::Layout::per_layer);
    const nnx::State ss = nnx::state(st), ps = nnx::state(per);
    CHECK(nnx::to_layout(ss, key, nnx::Layout::per_layer) == ps);
    // Per-layer views share the stacked storage (no copy).
    for (const auto& [path, leaf] : ps)
      if (path[0].name() == key) {
        CHECK(leaf.tensor().use_count() > 1);
        break;
      }
    Model again = nnx::to_layout(per, nnx::Layout::stacked);
    CHECK(nnx::state(again) == ss);
    const auto positions = nnx::arange_positions(2, 5);
    CHECK(nnx::equal(st(tokens_2x5(), positions), per(tokens_2x5(), positions)));
  }

  SECTION("gradients equal the per-layer model's, stacked") {
    Model per = build<Model>(cfg, nnx::Mode::train, nnx::Layout::per_layer);
    Model st = build<Model>(cfg, nnx::Mode::train, nnx::Layout::stacked);
    const auto targets =
        nnx::Tensor::from_vector(std::vector<std::int32_t>{17, 42, 8, 1, 4, 2, 33, 7, 11, -100}, {2, 5});
    auto a = nnx::train::value_and_grad(per, tokens_2x5(), targets);
    auto b = nnx::train::value_and_grad(st, tokens_2x5(), targets);
    CHECK(a.loss == b.loss);
    CHECK(nnx::layout_of(b.grads, key) == nnx::Layout::stacked);
    CHECK(nnx::to_layout(a.grads, key, nnx::Layout::stacked) == b.grads);
    // An optimizer step on the stacked state keeps the two models in step.
    const nnx::train::OptimizerConfig opt{.lr = {.peak = 0.01}, .weight_decay = 0.1};
    auto [ta, ma] = nnx::train::train_step(nnx::train::TrainState<Model>(per, opt), tokens_2x5(), targets);
    auto [tb, mb] = nnx::train::train_step(nnx::train::TrainState<Model>(st, opt), tokens_2x5(), targets);
    CHECK(ma.loss == mb.loss);
    CHECK(nnx::to_layout(nnx::state(ta.model, nnx::of<nnx::Param>), key, nnx::Layout::stacked) ==
          nnx::state(tb.model, nnx::of<nnx::Param>));
  }

  SECTION("int8 and bf16 serving of a stacked model equal the per-layer model's") {
    for (int variant = 0; variant < 2; ++variant) {
      INFO((variant == 0 ? "w8a8" : "bf16"));
      Model per = build<Model>(cfg, nnx::Mode::autoregressive, nnx::Layout::per_layer);
      Model st = build<Model>(cfg, nnx::Mode::autoregressive, nnx::Layout::stacked);
      for (Model* m : {&per, &st}) {
        if (variant == 0)
          nnx::quantize(*m, {.scheme = nnx::QuantScheme::w8a8, .include_head = true}, nnx::QuantMode::serve);
        else
          nnx::cast_weights(*m, nnx::DType::bf16);
      }
      CHECK(st.decoder_layers().layout() == nnx::Layout::stacked);
      CHECK(nnx::to_layout(nnx::state(per, nnx::of<nnx::Param>), key, nnx::Layout::stacked) ==
            nnx::state(st, nnx::of<nnx::Param>));
      const auto a = run_serving(per), b = run_serving(st);
      for (std::size_t i = 0; i < a.size(); ++i) CHECK(nnx::equal(a[i], b[i]));
    }
  }
}

}  // namespace

TEST_CASE("GPT-2: stacked and per-layer layouts agree", "[models][layout]") {
  check_layouts_agree<nnx::Gpt2>(gpt2_config());
}

TEST_CASE("Llama (GQA, untied head): stacked and per-layer layouts agree", "[models][layout]") {
  check_layouts_agree<nnx::Llama>(llama_config());
}

TEST_CASE("stacking rejects layers that differ, naming the leaf", "[models][layout]") {
  nnx::Rngs rngs{0};
  nnx::Gpt2 model(gpt2_config(), nnx::Mode::train, rngs);
  // A layer whose MLP is wider than the others' cannot share a stacked leaf.
  nnx::Gpt2Config wide = gpt2_config();
  wide.n_inner = 64;
  nnx::Gpt2 other(wide, nnx::Mode::train, rngs);
  std::vector<nnx::DecoderLayer<nnx::LayerNorm>> layers{model.h[0], other.h[0]};
  nnx::Layers<nnx::DecoderLayer<nnx::LayerNorm>> mixed(layers);
  CHECK_THROWS_WITH(mixed.set_layout(nnx::Layout::stacked), Catch::Contains("mlp/up/kernel") &&
                                                                Catch::Contains("layer 1"));
  CHECK(mixed.layout() == nnx::Layout::per_layer);
  // A state with both layouts is refused by name.
  nnx::State both = nnx::state(model);
  nnx::Rngs r2{0};
  nnx::Gpt2 st(gpt2_config(), nnx::Mode::train, r2, {.layout = nnx::Layout::stacked});
  const nnx::State stacked = nnx::state(st);
  nnx::State mixed_state = nnx::merge_states(both.filter(nnx::path_contains("h")),
                                             stacked.filter(nnx::path_contains("mlp_norm")));
  CHECK_THROWS_WITH(nnx::layout_of(mixed_state, "h"), Catch::Contains("mixed layouts"));
  // Dropout's random stream is one variable every layer advances in turn: stacked, each layer
  // would hold a copy and draw the same masks, so a training model with dropout stays per layer.
  nnx::Gpt2Config dropout = gpt2_config();
  dropout.dropout = 0.1;
  nnx::Rngs r3{0};
  CHECK_THROWS_WITH(nnx::Gpt2(dropout, nnx::Mode::train, r3, {.layout = nnx::Layout::stacked}),
                    Catch::Contains("dropout/rngs") && Catch::Contains("shared by every layer"));
  nnx::Gpt2 per(dropout, nnx::Mode::train, r3);
  CHECK_THROWS_WITH(nnx::to_layout(per, nnx::Layout::stacked), Catch::Contains("dropout"));
  CHECK(per.h.layout() == nnx::Layout::per_layer);
  // Its state (what a checkpoint holds) keeps the stream once, under layer 0: stacking that
  // state names it rather than a layer count of some other leaf.
  const nnx::State per_state = nnx::state(per);
  CHECK(per_state.contains(nnx::Path::parse("h/0/dropout/rngs/default/count")));
  CHECK_FALSE(per_state.contains(nnx::Path::parse("h/1/dropout/rngs/default/count")));
  CHECK_THROWS_WITH(nnx::to_layout(per_state, "h", nnx::Layout::stacked),
                    Catch::Contains("'h/0/dropout/rngs/default/") && Catch::Contains("is in 1 layer,") &&
                        Catch::Contains("in 3") && Catch::Contains("shared by every layer"));
  // Without training there is no dropout, and the same config stacks.
  nnx::Gpt2 serving(dropout, nnx::Mode::autoregressive, r3, {.layout = nnx::Layout::stacked});
  CHECK(serving.h.layout() == nnx::Layout::stacked);
}
