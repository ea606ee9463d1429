// nnx/nn/lora.hpp — LoRA adapters: a low-rank update beside a Linear's weight, its own
// variable kind, attached by path pattern and merged into the weight when asked.
//
// A Linear with an adapter computes y = x·W + b + (alpha / rank)·(x·A)·B, with A [in, rank]
// and B [rank, out] LoraParams (a kind derived from Param, so of<Param> still selects them
// and of<LoraParam> selects them alone). B starts at zero: attaching changes nothing until
// the adapter is trained. The adapter is applied unmerged on top of whatever the Linear
// serves (f32, 16-bit or int8 weights); merge_lora folds it into an f32 kernel.
//
//   nnx::LoraConfig lora{.rank = 8, .alpha = 16, .targets = "attn/(query|value)"};
//   std::vector<nnx::Path> attached = nnx::add_lora(model, lora, rngs);
//   nnx::State adapters = nnx::state(model, nnx::of<nnx::LoraParam>);   // what a fine-tune saves
//   nnx::merge_lora(model);                                           // W += (alpha/rank)·A·B
//
// `targets` is an ECMAScript regular expression searched in each Linear's path ("layers/3/
// attn/query", "h/0/mlp/up", "lm_head"); every matching Linear gets an adapter.
#pragma once

#include <cmath>
#include <cstdint>
#include <regex>
#include <string>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/init.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/nn/lora_adapter.hpp"

namespace nnx {

namespace detail {
inline std::regex lora_targets_regex(const std::string& targets) {
  try {
    return std::regex(targets, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    throw InvalidArgument("LoRA targets '" + targets + "' is not a regular expression: " + e.what());
  }
}
}  // namespace detail

// Attaches a fresh adapter (A ~ N(0, 1/in), B = 0) to every Linear whose path matches
// config.targets and returns their paths; InvalidArgument when none matches (naming the
// Linears there are) or a matching Linear already has one. Under eval_shape the adapters are
// abstract.
template <class Model>
std::vector<Path> add_lora(Model& model, const LoraConfig& config, Rngs& rngs) {
  config.validate("add_lora");
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { return add_lora(model, config, rngs); });
  const std::regex pattern = detail::lora_targets_regex(config.targets);
  std::vector<Path> attached;
  std::string linears;
  for_each_module<Linear>(model, [&](const Path& path, Linear& layer) {
    const std::string name = path.to_string();
    linears += (linears.empty() ? "" : ", ") + name;
    if (!std::regex_search(name, pattern)) return;
    if (layer.lora) throw InvalidArgument("add_lora: Linear '" + name + "' already has an adapter");
    LoraAdapter adapter;
    adapter.rank = config.rank;
    adapter.alpha = config.alpha;
    const float stddev = 1.0f / std::sqrt(static_cast<float>(layer.in_features));
    adapter.a = LoraParam(init::normal(rngs.params(), {layer.in_features, config.rank}, stddev), {"embed", "lora"});
    adapter.b = LoraParam(Tensor::zeros({config.rank, layer.out_features}), {"lora", "mlp"});
    layer.lora = std::move(adapter);
    attached.push_back(path);
  });
  if (attached.empty())
    throw InvalidArgument("add_lora: targets '" + config.targets + "' match no Linear (the model's: " + linears + ")");
  return attached;
}

// Folds every adapter into its Linear's f32 kernel (W += scale·A·B, summed in double) and
// removes it; returns the paths merged. A Linear with an adapter but no f32 kernel (served in
// 16 bits or int8) is an InvalidArgument: merge before converting.
template <class Model>
std::vector<Path> merge_lora(Model& model) {
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { return merge_lora(model); });
  std::vector<Path> merged;
  for_each_module<Linear>(model, [&](const Path& path, Linear& layer) {
    if (!layer.lora) return;
    if (!layer.kernel || layer.kernel->value().dtype() != DType::f32 || layer.quant != QuantScheme::none)
      throw InvalidArgument("merge_lora: Linear '" + path.to_string() + "' has no f32 kernel to merge into");
    const LoraAdapter& ad = *layer.lora;
    const Tensor& A = ad.a.value();
    const Tensor& B = ad.b.value();
    const std::int64_t in = layer.in_features, out = layer.out_features, r = ad.rank;
    Tensor w = layer.kernel->value().clone();
    float* pw = w.data<float>();
    const float* pa = A.data<float>();
    const float* pb = B.data<float>();
    const double s = ad.alpha / static_cast<double>(r);
    for (std::int64_t i = 0; i < in; ++i)
      for (std::int64_t j = 0; j < out; ++j) {
        double d = 0.0;
        for (std::int64_t k = 0; k < r; ++k) d += static_cast<double>(pa[i * r + k]) * pb[k * out + j];
        pw[i * out + j] = static_cast<float>(pw[i * out + j] + s * d);
      }
    layer.kernel->set_value(std::move(w));
    layer.lora.reset();
    merged.push_back(path);
  });
  return merged;
}

}  // namespace nnx
