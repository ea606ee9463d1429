// Fuzzes model configs as the programs read them: a Hugging Face config.json or the config a
// native checkpoint stores. Each input is the config's JSON text, which goes through
//   - Engine::load_params of a Hugging Face directory whose config.json is the input, and of
//     a native checkpoint storing it (the engine checks the config against its own model);
//   - strict JSON, then Gpt2Config::from_json and LlamaConfig::from_json;
//   - QuantConfig::of_model_config (its "quantization" entry);
//   - with_model_type and an Engine built from an accepted config: abstract models only
//     (eval_shape: shapes without weights), as every program builds one before loading.
//
// Expected: InvalidArgument from the parsers, any nnx::Error from building and loading.
// Checked: an accepted config and quantization config survive to_json and back unchanged;
// a load that succeeds returns every parameter the engine serves.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "nnx/engine/engine.hpp"
#include "nnx/io/checkpoint.hpp"
#include "nnx/io/huggingface.hpp"
#include "nnx/io/json.hpp"
#include "nnx/models/dispatch.hpp"
#include "nnx/quant/config.hpp"

namespace {

namespace fs = std::filesystem;
using nnx_fuzz::require;

// Building an engine costs time in proportion to the layers (every layer is the same code),
// so bigger configs are parsed and checked but not built.
constexpr std::int64_t max_layers_to_build = 16;

std::int64_t num_layers(const nnx::Gpt2Config& c) { return c.n_layer; }
std::int64_t num_layers(const nnx::LlamaConfig& c) { return c.num_hidden_layers; }

// A tiny GPT-2 engine and its weights, in a Hugging Face directory (whose config.json each
// input replaces) and as the parameters of a native checkpoint (saved with each input as
// its config).
struct Fixture {
  nnx::Gpt2Config config{.vocab_size = 16, .n_positions = 8, .n_embd = 4, .n_layer = 1, .n_head = 2};
  nnx::Engine<nnx::Gpt2> engine{config};
  nnx::State params;
  nnx_fuzz::ScratchDir scratch{"model_config"};
  fs::path hf_dir = scratch / "hf";
  fs::path native_dir = scratch / "native";

  Fixture() {
    nnx::Rngs rngs{0};
    nnx::Gpt2 model(config, nnx::Mode::train, rngs);
    params = nnx::state(model, nnx::of<nnx::Param>);
    nnx::io::save_hf(hf_dir, config.to_json(), params);
  }
};

// A successful load holds what the engine serves.
void check_loaded(const Fixture& fx, const fs::path& dir) {
  try {
    const nnx::State loaded = fx.engine.load_params(dir);
    require(loaded.size() == fx.engine.param_spec().size(), "a load returns every served parameter");
  } catch (const nnx::Error&) {
  }
}

template <class Config>
void parse_config(const nlohmann::json& j) {
  Config config;
  try {
    config = Config::from_json(j);
  } catch (const nnx::InvalidArgument&) {
    return;
  }
  const nlohmann::json written = config.to_json();
  require(Config::from_json(written).to_json() == written, "an accepted config survives to_json and back");
}

void build_engine(const nlohmann::json& j, const nnx::QuantConfig& quant) {
  try {
    nnx::with_model_type(j, "config.json", [&]<class Model, class Config>() {
      const Config config = Config::from_json(j);
      if (num_layers(config) > max_layers_to_build) return;
      nnx::EngineOptions options;
      options.quant = quant;
      const nnx::Engine<Model> engine(config, options);
      require(engine.param_spec().size() > 0, "an engine serves some parameters");
    });
  } catch (const nnx::Error&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Fixture fx;
  const std::string_view text = nnx_fuzz::as_text(data, size);

  nnx_fuzz::write_file(fx.hf_dir / "config.json", text);
  check_loaded(fx, fx.hf_dir);

  nlohmann::json j;
  try {
    j = nnx::io::parse_json_strict(text);
  } catch (const nnx::InvalidArgument&) {
    return 0;
  }
  parse_config<nnx::Gpt2Config>(j);
  parse_config<nnx::LlamaConfig>(j);

  std::optional<nnx::QuantConfig> quant;
  try {
    quant = nnx::QuantConfig::of_model_config(j);
  } catch (const nnx::InvalidArgument&) {
  }
  if (quant) {
    require(nnx::QuantConfig::from_json(quant->to_json()) == *quant, "a quantization config survives to_json and back");
    build_engine(j, *quant);
  }

  nnx::io::save_checkpoint(fx.native_dir, fx.params, {}, j);
  check_loaded(fx, fx.native_dir);
  return 0;
}
