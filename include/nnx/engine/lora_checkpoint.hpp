// nnx/engine/lora_checkpoint.hpp — LoRA adapter checkpoints: a native checkpoint holding the
// LoraParams alone, whose config is {"lora": {"rank", "alpha", "targets"}, "model": the base
// model's config}. train --lora-rank writes one (DIR/model); the Engine serves one unmerged
// (EngineOptions::lora_adapter; generate, serve_batch and server --lora), and
// merge_lora_checkpoint (ckpt merge-lora) folds one into its base's weights.
//
//   nnx::save_lora_adapter("run/model", model, model_config, lora);
//   nnx::LoraAdapterConfig c = nnx::read_lora_adapter_config("run/model");
//   nnx::load_lora_adapter(model, "run/model", rngs);       // attach and restore
//   nnx::merge_lora_checkpoint("models/llama", "run/model", "merged");
#pragma once

#include <filesystem>
#include <string>
#include <type_traits>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/state.hpp"
#include "nnx/io/checkpoint.hpp"
#include "nnx/io/huggingface.hpp"
#include "nnx/models/dispatch.hpp"
#include "nnx/nn/lora.hpp"

namespace nnx {

struct LoraAdapterConfig {
  LoraConfig lora;
  nlohmann::json model;  // the base model's config
};

// The config of the adapter checkpoint `dir`; InvalidArgument naming it when it is not one.
inline LoraAdapterConfig read_lora_adapter_config(const std::filesystem::path& dir) {
  if (!std::filesystem::exists(dir)) throw InvalidArgument(dir.string() + ": no such LoRA adapter directory");
  if (std::filesystem::exists(dir / "config.json"))
    throw InvalidArgument(dir.string() + ": a Hugging Face model directory, not a LoRA adapter (train --lora-rank "
                                         "writes one to DIR/model)");
  const nlohmann::json config = io::checkpoint_config(dir);
  if (!config.is_object() || !config.contains("lora") || !config.contains("model"))
    throw InvalidArgument(dir.string() + ": not a LoRA adapter (its config has no \"lora\" and \"model\"; found " +
                          config.dump().substr(0, 200) + ")");
  return {LoraConfig::from_json(config.at("lora"), dir.string()), config.at("model")};
}

// Writes the model's LoraParams to `dir` with the config read_lora_adapter_config reads.
template <class Model>
void save_lora_adapter(const std::filesystem::path& dir, const Model& model, const nlohmann::json& model_config,
                       const LoraConfig& lora) {
  const State adapters = state(model, of<LoraParam>);
  if (adapters.empty()) throw InvalidArgument("save_lora_adapter: the model has no LoRA adapters");
  io::save_checkpoint(dir, adapters, {}, {{"lora", lora.to_json()}, {"model", model_config}});
}

// Attaches the adapters `dir` describes to `model` and restores their values. InvalidArgument
// naming `dir` when the adapter was trained on a model of another config; CheckpointError
// naming the file when a leaf is missing or has another shape. Returns the adapted Linears'
// paths.
template <class Model>
std::vector<Path> load_lora_adapter(Model& model, const std::filesystem::path& dir, Rngs& rngs) {
  const LoraAdapterConfig c = read_lora_adapter_config(dir);
  using Config = std::remove_cvref_t<decltype(model.config)>;
  const nlohmann::json expected = model.config.to_json();
  bool same = false;
  try {
    same = Config::from_json(c.model).to_json() == expected;
  } catch (const Error&) {  // another architecture: not a config of this model type at all
  }
  if (!same)
    throw InvalidArgument(dir.string() + ": the adapter was trained on another model (" + c.model.dump() +
                          "), not this " + expected.dump());
  std::vector<Path> attached = add_lora(model, c.lora, rngs);
  update(model, io::restore_checkpoint_any_layout(dir, state(model, of<LoraParam>), Model::layers_key));
  return attached;
}

// Writes the base model `in` (a Hugging Face directory or a native params checkpoint) with
// the adapter `lora` merged into its weights (in f32) to `out`: a native checkpoint with the
// base's config, or with hugging_face a Hugging Face directory. The adapter's base config must
// describe `in`'s model (InvalidArgument naming both otherwise). Returns the merged paths.
inline std::vector<Path> merge_lora_checkpoint(const std::filesystem::path& in, const std::filesystem::path& lora,
                                               const std::filesystem::path& out, bool hugging_face = false) {
  if (!std::filesystem::exists(in)) throw InvalidArgument(in.string() + ": no such file or directory");
  const bool hf_in = std::filesystem::exists(in / "config.json");
  const nlohmann::json config = hf_in ? io::HfCheckpoint::open(in).config() : io::checkpoint_config(in);
  (void)read_lora_adapter_config(lora);  // before reading the base: is it an adapter at all?
  return with_model_type(config, in.string(), [&]<class Model, class Config>() {
    const Config cfg = Config::from_json(config);
    Rngs rngs{0};
    Model abstract = eval_shape([&] { return Model(cfg, Mode::train, rngs); });
    auto [graphdef, target, rest] = split(abstract, of<Param>, everything);
    const State stored = hf_in ? io::HfCheckpoint::open(in).read_params(target)
                               : io::restore_checkpoint_any_layout(in, target, Model::layers_key);
    Model model = merge(graphdef, stored.map([](const Tensor& t) { return t.astype(DType::f32); }), rest);
    load_lora_adapter(model, lora, rngs);
    std::vector<Path> merged = merge_lora(model);
    const State params = state(model, of<Param>);
    if (hugging_face)
      io::save_hf(out, cfg.to_json(), params, DType::f32);
    else
      io::save_checkpoint(out, params, {}, cfg.to_json());
    return merged;
  });
}

}  // namespace nnx
