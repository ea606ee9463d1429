// "No allocation per decoded token": once warm, a decode step allocates nothing — every tensor
// buffer (and its control block) comes back from the storage pool and the attention and
// sampling scratch is reused. Checked for Llama and GPT-2 decode steps, int8 models (weight-only
// and W8A8, head included) and the engine's generate with a donated state. Counted with the
// replaced global operator new of tests/support/counting_new.hpp (this executable only).
#include <catch2/catch.hpp>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/quant.hpp>

#include "../support/counting_new.hpp"

namespace {

nnx::LlamaConfig decode_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}

nnx::Gpt2Config decode_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 97;
  c.n_positions = 64;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

// Heap use of 8 decode steps of a 2-row batch after one warm-up step (which fills the storage
// pool); rows at different positions.
template <class Model>
std::pair<std::int64_t, std::int64_t> warm_decode_heap_use(Model& model) {
  const auto tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>{5, 9}, {2});
  nnx::decode_step(model, tokens, {0, 3});
  bool shapes_ok = true;
  const auto use = counting_new::heap_use([&] {
    for (std::int64_t step = 1; step <= 8; ++step) {
      nnx::Tensor out = nnx::decode_step(model, tokens, {step, step + 3});
      shapes_ok = shapes_ok && out.shape() == nnx::Shape{2, model.vocab_size()};
    }
  });
  CHECK(shapes_ok);
  return use;
}

}  // namespace

TEST_CASE("a warm decode step makes no heap allocation", "[models][allocation]") {
  nnx::Rngs rngs{0};
  nnx::Llama model(decode_llama(), nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
  auto [bytes, count] = warm_decode_heap_use(model);
  CHECK(count == 0);
  CHECK(bytes == 0);
}

TEST_CASE("a warm GPT-2 decode step makes no heap allocation", "[models][allocation][gpt2]") {
  nnx::Rngs rngs{0};
  nnx::Gpt2 model(decode_gpt2(), nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
  auto [bytes, count] = warm_decode_heap_use(model);
  CHECK(count == 0);
  CHECK(bytes == 0);
}

TEST_CASE("a warm decode step of stacked layers makes no heap allocation", "[models][allocation][layout]") {
  // The layers' slices of the stacked leaves are built once and checked on each step.
  nnx::Rngs rngs{0};
  nnx::Llama model(decode_llama(), nnx::Mode::autoregressive, rngs,
                   {.cache_batch = 2, .cache_length = 64, .layout = nnx::Layout::stacked});
  REQUIRE(model.layers.layout() == nnx::Layout::stacked);
  auto [bytes, count] = warm_decode_heap_use(model);
  CHECK(count == 0);
  CHECK(bytes == 0);
}

TEST_CASE("a warm int8 decode step makes no heap allocation", "[models][allocation][quant]") {
  for (const auto scheme : {nnx::QuantScheme::weight_only, nnx::QuantScheme::w8a8}) {
    INFO(nnx::quant_scheme_name(scheme));
    const nnx::QuantConfig q{.scheme = scheme, .include_head = true};
    {
      nnx::Rngs rngs{0};
      nnx::Gpt2 model(decode_gpt2(), nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
      nnx::quantize(model, q, nnx::QuantMode::serve);
      REQUIRE(model.wte.qembedding.has_value());  // the int8 head (and layers) really run
      REQUIRE(model.h[0].attn.qkv->qkernel.has_value());
      auto [bytes, count] = warm_decode_heap_use(model);
      INFO("gpt2");
      CHECK(count == 0);
      CHECK(bytes == 0);
    }
    {
      nnx::Rngs rngs{0};
      nnx::Llama model(decode_llama(), nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
      nnx::quantize(model, q, nnx::QuantMode::serve);
      REQUIRE(model.layers[0].mlp.up.qkernel.has_value());
      auto [bytes, count] = warm_decode_heap_use(model);
      INFO("llama");
      CHECK(count == 0);
      CHECK(bytes == 0);
    }
  }
}

// Engine::generate allocates no tensor memory once warm: every buffer, the logits included,
// comes back from the storage pool. What it does allocate is documented in engine.hpp: binding
// the state trees to the model (merge makes a VariableState per leaf and copies the model's
// prototype, state(model, of<Cache>) builds the cache State) and the step's bookkeeping (the
// result's slot rows, the tokens and positions): a fixed number of small blocks, ~11 per
// layer, the same at every position. A zero count needs a model bound once across steps, which
// the pure-function design does not have yet.
TEST_CASE("a warm Engine::generate step makes the same few small allocations at every position",
          "[engine][allocation]") {
  nnx::Gpt2Config cfg = decode_gpt2();
  cfg.vocab_size = 5000;  // logits of 60 KB a step: a tensor allocation would stand out
  const nnx::Engine<nnx::Gpt2> e(cfg, {.max_prefill_length = 8, .max_target_length = 48, .slots = 3});
  const nnx::State params = e.init_params(1);
  const auto prompt = nnx::Tensor::from_vector(std::vector<std::int32_t>{3, 1, 4, 1, 5}, {5});
  // A greedy request, a sampled one (top-k, top-p, temperature) and a free slot.
  nnx::DecodeState state = e.init_decode_state();
  state = e.insert(e.prefill(params, prompt, 5, {}, nnx::key_from_seed(1)), std::move(state), 0);
  state = e.insert(e.prefill(params, prompt, 4, {.temperature = 0.8, .top_k = 20, .top_p = 0.9}, nnx::key_from_seed(2)),
                   std::move(state), 2);
  const std::byte* buffer = state.cache.entry(0).leaf.tensor().raw_data();

  // A decode loop as a server writes it: each step's state is moved into the next step while
  // its result (and logits) are still held. The warm-up steps run the same loop, so that the
  // storage pool holds the two logits buffers it needs.
  nnx::Engine<nnx::Gpt2>::GenerateOutput out{std::move(state), {}};
  for (int warm = 0; warm < 2; ++warm) out = e.generate(params, std::move(out.state));
  std::vector<std::pair<std::int64_t, std::int64_t>> per_step;  // (bytes, count) at positions 7..14 and 35..42
  std::int64_t valid = 0;
  for (int step = 0; step < 36; ++step) {
    const auto use = counting_new::heap_use([&] { out = e.generate(params, std::move(out.state)); });
    valid += out.result.at(0).valid + out.result.at(2).valid;
    if (step < 8 || step >= 28) per_step.push_back(use);
  }
  CHECK(valid == 72);  // both requests advanced every step
  CHECK(out.state.slots[0].next_position == 5 + 2 + 36);
  CHECK(out.state.cache.entry(0).leaf.tensor().raw_data() == buffer);  // donated: written in place
  const auto [bytes, count] = per_step.front();
  INFO("a step allocates " << count << " times, " << bytes << " bytes");
  for (const auto& use : per_step) CHECK(use == per_step.front());
  CHECK(count <= 11 * cfg.n_layer + 30);
  CHECK(bytes < 3 * cfg.vocab_size * static_cast<std::int64_t>(sizeof(float)));  // less than the logits
}

TEST_CASE("a warm decode step with LoRA adapters makes no heap allocation", "[models][allocation][lora]") {
  // Adapters are applied unmerged on every step (a served fine-tune): their down and up
  // products reuse pooled buffers like the base weights' products do.
  nnx::Rngs rngs{0};
  nnx::Llama model(decode_llama(), nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
  REQUIRE(nnx::add_lora(model, {.rank = 4, .alpha = 8, .targets = "attn|mlp"}, rngs).size() == 14);
  auto [bytes, count] = warm_decode_heap_use(model);
  CHECK(count == 0);
  CHECK(bytes == 0);
}
