// The Engine serving stacked layers (EngineOptions::layout): the per-layer engine's tokens and
// logits bit for bit, in f32, bf16 and int8 with an int8 KV cache, over two slots; load_params
// reads a checkpoint of either layout and a Hugging Face directory into either engine.
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include <unistd.h>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/engine/lora_checkpoint.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/models.hpp>

#include "engine_test_util.hpp"
#include "../io/io_test_util.hpp"

namespace {

namespace fs = std::filesystem;

// Two requests in two slots, decoded together: every token of both.
template <class Model>
std::vector<std::int32_t> two_slots(const nnx::Engine<Model>& engine, const nnx::State& params) {
  const std::vector<std::vector<std::int32_t>> prompts{{3, 17, 42, 8, 60}, {5, 9}};
  nnx::DecodeState state = engine.init_decode_state();
  std::vector<std::int32_t> tokens;
  for (std::size_t s = 0; s < prompts.size(); ++s) {
    const auto T = static_cast<std::int64_t>(prompts[s].size());
    nnx::Prefix p = engine.prefill(params, nnx::Tensor::from_vector(prompts[s], {1, T}), T, {}, {}, {8, {}});
    tokens.push_back(p.token);
    state = engine.insert(p, std::move(state), static_cast<std::int64_t>(s));
  }
  while (state.num_active() > 0) {
    auto [next, r] = engine.generate(params, std::move(state));
    state = std::move(next);
    for (const nnx::SlotResult& slot : r.slots)
      if (slot.valid) tokens.push_back(slot.token);
  }
  return tokens;
}

}  // namespace

TEST_CASE("Engine with stacked layers: the per-layer engine's tokens, from either checkpoint layout",
          "[engine][layout]") {
  io_test::TempDir tmp;
  const nnx::LlamaConfig cfg = engine_test::small_llama();
  nnx::Rngs rngs{11};
  nnx::Llama model(cfg, nnx::Mode::train, rngs);
  const nnx::State per_layer = nnx::state(model, nnx::of<nnx::Param>);
  const nnx::State stacked = nnx::to_layout(per_layer, "layers", nnx::Layout::stacked);
  nnx::io::save_checkpoint(tmp.path / "per_layer", per_layer, {}, cfg.to_json());
  nnx::io::save_checkpoint(tmp.path / "stacked", stacked, {}, cfg.to_json());
  nnx::io::save_hf(tmp.path / "hf", cfg.to_json(), per_layer);
  REQUIRE(nnx::io::checkpoint_layout(tmp.path / "stacked", "layers") == nnx::Layout::stacked);

  for (const char* variant : {"f32", "bf16", "int8"}) {
    CAPTURE(variant);
    nnx::EngineOptions o{.max_prefill_length = 4, .max_target_length = 32, .slots = 2};
    if (std::string(variant) == "bf16") o.weight_dtype = nnx::WeightDType::bf16;
    if (std::string(variant) == "int8") {
      o.quant.scheme = nnx::QuantScheme::w8a8;
      o.kv_dtype = nnx::DType::i8;
    }
    const nnx::Engine<nnx::Llama> per_engine(cfg, o);
    o.layout = nnx::Layout::stacked;
    const nnx::Engine<nnx::Llama> stacked_engine(cfg, o);
    REQUIRE(nnx::layout_of(stacked_engine.param_spec(), "layers") == nnx::Layout::stacked);

    const nnx::State reference = per_engine.load_params(tmp.path / "per_layer");
    const auto expected = two_slots(per_engine, reference);
    CHECK(expected.size() == 16);
    for (const char* source : {"per_layer", "stacked", "hf"}) {
      CAPTURE(source);
      const nnx::State params = stacked_engine.load_params(tmp.path / source);
      CHECK(nnx::layout_of(params, "layers") == nnx::Layout::stacked);
      CHECK(two_slots(stacked_engine, params) == expected);
      // The per-layer engine reads the stacked checkpoint too.
      CHECK(two_slots(per_engine, per_engine.load_params(tmp.path / source)) == expected);
    }
    // Parameters in memory, in the other layout, are converted.
    CHECK(two_slots(stacked_engine, stacked_engine.load_params(per_layer)) == expected);
    const auto T = std::int64_t{5};
    const nnx::Tensor prompt = nnx::Tensor::from_vector(std::vector<std::int32_t>{3, 17, 42, 8, 60}, {1, T});
    CHECK(nnx::equal(stacked_engine.prefill(stacked_engine.load_params(stacked), prompt, T, {}, {}).last_logits,
                     per_engine.prefill(reference, prompt, T, {}, {}).last_logits));
  }
}

TEST_CASE("Engine with stacked layers serves a LoRA adapter trained per layer", "[engine][layout][lora]") {
  io_test::TempDir tmp;
  const nnx::LlamaConfig cfg = engine_test::small_llama();
  nnx::Rngs rngs{12};
  nnx::Llama model(cfg, nnx::Mode::train, rngs);
  nnx::io::save_checkpoint(tmp.path / "base", nnx::state(model, nnx::of<nnx::Param>), {}, cfg.to_json());
  const nnx::LoraConfig lora{.rank = 2, .alpha = 4, .targets = "attn"};
  nnx::add_lora(model, lora, rngs);
  for (const auto& [path, leaf] : nnx::state(model, nnx::of<nnx::LoraParam>))
    if (path.to_string().ends_with("lora/b")) {
      nnx::Tensor b = leaf.tensor();  // shares the adapter's buffer
      for (std::int64_t i = 0; i < b.numel(); ++i) b.data<float>()[i] = 0.05f * static_cast<float>(i % 7) - 0.1f;
    }
  nnx::save_lora_adapter(tmp.path / "adapter", model, cfg.to_json(), lora);

  nnx::EngineOptions o{.max_prefill_length = 4, .max_target_length = 32, .slots = 2};
  o.lora_adapter = tmp.path / "adapter";
  const nnx::Engine<nnx::Llama> per_engine(cfg, o);
  o.layout = nnx::Layout::stacked;
  const nnx::Engine<nnx::Llama> stacked_engine(cfg, o);
  const nnx::State params = stacked_engine.load_params(tmp.path / "base");
  CHECK(nnx::layout_of(params.filter(nnx::of<nnx::LoraParam>), "layers") == nnx::Layout::stacked);
  CHECK(two_slots(stacked_engine, params) == two_slots(per_engine, per_engine.load_params(tmp.path / "base")));
}
