// nnx/models/dispatch.hpp — from a config's "model_type" to the model type that serves it,
// the one switch every program (generate, serve_batch, quantize) needs.
//
//   nnx::with_model_type(config, path.string(), [&]<class Model, class Config>() {
//     const Config cfg = Config::from_json(config);
//     nnx::Engine<Model> engine(cfg, options);
//     ...
//   });
#pragma once

#include <string>
#include <utility>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/models/gpt2.hpp"
#include "nnx/models/llama.hpp"

namespace nnx {

// Calls f.template operator()<Model, Config>() for the architecture config["model_type"]
// names and returns what it returns. Throws InvalidArgument starting with `source` (the file
// or directory the config came from) when the config is not an object, has no model_type,
// or names one other than "gpt2" and "llama".
template <class F>
decltype(auto) with_model_type(const nlohmann::json& config, const std::string& source, F&& f) {
  if (!config.is_object())
    throw InvalidArgument(source + ": " +
                          (config.is_null() ? "no model config found" : "the model config is not a JSON object"));
  const auto it = config.find("model_type");
  if (it == config.end() || !it->is_string())
    throw InvalidArgument(source + ": the config's \"model_type\" must be a string naming the architecture " +
                          "(gpt2, llama), found " + (it == config.end() ? std::string("none") : it->dump()));
  const std::string& type = it->template get_ref<const std::string&>();
  if (type == "gpt2") return std::forward<F>(f).template operator()<Gpt2, Gpt2Config>();
  if (type == "llama") return std::forward<F>(f).template operator()<Llama, LlamaConfig>();
  throw InvalidArgument(source + ": unknown architecture \"" + type + "\" (gpt2, llama)");
}

}  // namespace nnx
