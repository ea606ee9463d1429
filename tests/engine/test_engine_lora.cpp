// The Engine serving a LoRA adapter unmerged (EngineOptions::lora_adapter): the same greedy
// tokens as the merged model and logits within rounding of it, over f32, bf16 and int8 base
// weights; the adapter checkpoint's errors.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/engine/lora_checkpoint.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>

#include "engine_test_util.hpp"
#include "../io/io_test_util.hpp"

namespace {

namespace fs = std::filesystem;

double max_abs_diff(const nnx::Tensor& a, const nnx::Tensor& b) {
  double d = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) d = std::max(d, std::abs(double(a.data<float>()[i]) - b.data<float>()[i]));
  return d;
}

}  // namespace

TEST_CASE("Engine with a LoRA adapter: the merged model's tokens, over f32, bf16 and int8 weights", "[engine][lora]") {
  io_test::TempDir tmp;
  const nnx::LlamaConfig cfg = engine_test::small_llama();
  nnx::Rngs rngs{5};
  nnx::Llama model(cfg, nnx::Mode::train, rngs);
  nnx::io::save_checkpoint(tmp.path / "base", nnx::state(model, nnx::of<nnx::Param>), {}, cfg.to_json());
  const nnx::LoraConfig lora{.rank = 4, .alpha = 8, .targets = "attn|mlp|lm_head"};
  REQUIRE(nnx::add_lora(model, lora, rngs).size() == 15);
  std::mt19937 gen(6);
  std::normal_distribution<float> dist(0.0f, 0.3f);
  for (const auto& [path, leaf] : nnx::state(model, nnx::of<nnx::LoraParam>))
    if (path.to_string().ends_with("lora/b")) {
      nnx::Tensor b = leaf.tensor();  // shares the adapter's buffer
      for (float& x : b.span<float>()) x = dist(gen);
    }
  nnx::save_lora_adapter(tmp.path / "adapter", model, cfg.to_json(), lora);
  nnx::Llama merged = nnx::clone(model);
  nnx::merge_lora(merged);
  nnx::io::save_checkpoint(tmp.path / "merged", nnx::state(merged, nnx::of<nnx::Param>), {}, cfg.to_json());

  const std::vector<std::int32_t> prompt{3, 17, 42, 8, 60};
  const nnx::EngineOptions base_options{.max_prefill_length = 4, .max_target_length = 32, .slots = 2};
  nnx::EngineOptions lora_options = base_options;
  lora_options.lora_adapter = tmp.path / "adapter";
  const nnx::Engine<nnx::Llama> plain(cfg, base_options);
  const nnx::Engine<nnx::Llama> adapted(cfg, lora_options);
  const nnx::State merged_params = plain.load_params(tmp.path / "merged");
  const nnx::State lora_params = adapted.load_params(tmp.path / "base");
  CHECK(lora_params.filter(nnx::of<nnx::LoraParam>).size() == 30);

  const auto expected = engine_test::greedy(plain, merged_params, prompt, 12);
  CHECK(engine_test::greedy(adapted, lora_params, prompt, 12) == expected);
  CHECK(engine_test::greedy(plain, plain.load_params(tmp.path / "base"), prompt, 12) != expected);
  const auto T = static_cast<std::int64_t>(prompt.size());
  const nnx::Tensor tokens = nnx::Tensor::from_vector(prompt, {1, T});
  const nnx::Prefix a = adapted.prefill(lora_params, tokens, T, {}, {});
  const nnx::Prefix m = plain.prefill(merged_params, tokens, T, {}, {});
  CHECK(max_abs_diff(a.last_logits, m.last_logits) < 1e-4);

  // bf16 and int8 weights: the adapter (f32) on top; logits as near the f32 merged model's as
  // the merged model's own in that dtype.
  for (const char* variant : {"bf16", "int8"}) {
    CAPTURE(variant);
    nnx::EngineOptions o = lora_options;
    if (std::string(variant) == "bf16") o.weight_dtype = nnx::WeightDType::bf16;
    else o.quant.scheme = nnx::QuantScheme::w8a8;
    const nnx::Engine<nnx::Llama> engine(cfg, o);
    const nnx::State params = engine.load_params(tmp.path / "base");
    CHECK(params.filter(nnx::of<nnx::LoraParam>).size() == 30);
    const nnx::Prefix p = engine.prefill(params, tokens, T, {}, {});
    const double d = max_abs_diff(p.last_logits, m.last_logits);
    // The merged model served in the same dtype: the rounding the dtype costs anyway. The
    // adapter, kept in f32 beside the rounded base, adds no error of its own.
    nnx::EngineOptions merged_options = o;
    merged_options.lora_adapter.clear();
    const nnx::Engine<nnx::Llama> merged_engine(cfg, merged_options);
    const double rounding = max_abs_diff(
        merged_engine.prefill(merged_engine.load_params(tmp.path / "merged"), tokens, T, {}, {}).last_logits,
        m.last_logits);
    CAPTURE(d, rounding);
    CHECK(d > 0);
    CHECK(d < 4 * rounding);
    CHECK(engine_test::greedy(engine, params, prompt, 4).size() == 4);
  }

  // bf16 exactly: the f32 model with its base weights rounded to bf16 and the f32 adapters.
  {
    nnx::EngineOptions o = lora_options;
    o.weight_dtype = nnx::WeightDType::bf16;
    const nnx::Engine<nnx::Llama> engine(cfg, o);
    const nnx::Tensor served = engine.prefill(engine.load_params(tmp.path / "base"), tokens, T, {}, {}).last_logits;
    nnx::Llama rounded = nnx::clone(model);
    nnx::for_each_module<nnx::Linear>(rounded, [](const nnx::Path&, nnx::Linear& l) {
      l.kernel->set_value(l.kernel->value().astype(nnx::DType::bf16).astype(nnx::DType::f32));
    });
    nnx::for_each_module<nnx::Embed>(rounded, [](const nnx::Path&, nnx::Embed& e) {
      e.embedding->set_value(e.embedding->value().astype(nnx::DType::bf16).astype(nnx::DType::f32));
    });
    const nnx::Tensor logits = rounded(tokens, nnx::arange_positions(1, T));
    const nnx::Tensor last = logits.select(0).select(T - 1).clone();
    CHECK(max_abs_diff(served, last) < 1e-4);
  }

  // Errors name the file: not an adapter, an adapter of another model, a state without adapters.
  nnx::EngineOptions bad = base_options;
  bad.lora_adapter = tmp.path / "base";
  CHECK_THROWS_WITH(nnx::Engine<nnx::Llama>(cfg, bad), Catch::Contains("base: not a LoRA adapter"));
  nnx::LlamaConfig other = cfg;
  other.intermediate_size = 64;
  CHECK_THROWS_WITH(nnx::Engine<nnx::Llama>(other, lora_options),
                    Catch::Contains("adapter: config intermediate_size is 56"));
  CHECK_THROWS(adapted.load_params(merged_params));
}
