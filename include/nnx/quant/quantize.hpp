// nnx/quant/quantize.hpp — putting a model into int8: MaxText's quant modes over our modules.
//
//   nnx::quantize(model, qconfig, nnx::QuantMode::train);  // f32 kernels kept, int8 numerics in every call
//   nnx::quantize(model, qconfig, nnx::QuantMode::serve);  // kernels replaced by frozen QTensors
//   nnx::State int8 = nnx::convert_params(qconfig, graphdef, f32_params);  // convert: state in, state out
//
// - train: each selected Linear (and the head, with include_head) quantizes its f32 weights
//   on the fly in every forward, with the same numerics as serve, so the numbers agree.
// - serve: each selected layer's weights become a QuantizedParam QTensor (`qkernel`, or
//   `qembedding` for a tied head) and its f32 `kernel` / `embedding` field is removed. On an
//   abstract model (eval_shape) this only changes shapes: a serve model built that way loads
//   a pre-quantized checkpoint without ever holding an f32 kernel.
// - convert (convert_params): a whole Param state quantized once — the frozen QTensors
//   filled, the f32 kernels at quantized paths dropped, every other leaf (norms, embeddings,
//   biases, layers left in f32) shared untouched.
//
// Layers: every nnx::Linear, and the model's output head when QuantConfig::include_head. A
// model names its head with head_path() ("wte" for GPT-2, "lm_head" or "embed_tokens" for
// Llama); without head_path() nothing is treated as the head.
#pragma once

#include <algorithm>
#include <string>
#include <utility>

#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/nn/embed.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/ops/quantized.hpp"
#include "nnx/quant/config.hpp"

namespace nnx {

enum class QuantMode : std::uint8_t { train, serve };

namespace detail {

template <class Model>
std::string head_path_of(const Model& model) {
  if constexpr (requires { model.head_path(); })
    return std::string(model.head_path());
  else
    return {};
}

// Axis names of a transposed [in, out] -> [out, in] weight.
inline Metadata reversed_axes(const Metadata& m) {
  Metadata out = m;
  std::reverse(out.axes.begin(), out.axes.end());
  return out;
}

}  // namespace detail

template <class Model>
void quantize(Model& model, const QuantConfig& config, QuantMode mode) {
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { quantize(model, config, mode); });
  const std::string head = detail::head_path_of(model);
  auto scheme_of = [&](const Path& path) {
    const std::string p = path.to_string();
    if (p == head && !config.include_head) return QuantScheme::none;
    return config.scheme_for(p);
  };
  for_each_module<Linear>(model, [&](const Path& path, Linear& layer) {
    const QuantScheme scheme = scheme_of(path);
    if (scheme == QuantScheme::none) return;
    layer.quant = scheme;
    if (mode != QuantMode::serve || layer.qkernel) return;
    if (layer.weight) {  // served as stored, [out, in] already: quantized per row
      layer.qkernel = QuantizedParam(ops::quantize_rows(layer.weight->value().astype(DType::f32)),
                                     layer.weight->metadata());
      layer.weight.reset();
      return;
    }
    if (!layer.kernel) throw InvalidArgument("quantize: '" + path.to_string() + "' has no kernel");
    layer.qkernel = QuantizedParam(ops::quantize_kernel(layer.kernel->value()),
                                   detail::reversed_axes(layer.kernel->metadata()));
    layer.kernel.reset();
  });
  if (head.empty()) return;
  for_each_module<Embed>(model, [&](const Path& path, Embed& table) {
    if (path.to_string() != head) return;
    const QuantScheme scheme = scheme_of(path);
    if (scheme == QuantScheme::none) return;
    table.quant = scheme;
    if (mode != QuantMode::serve || table.qembedding) return;
    if (!table.embedding) throw InvalidArgument("quantize: '" + path.to_string() + "' has no embedding table");
    table.qembedding =
        QuantizedParam(ops::quantize_rows(table.embedding->value().astype(DType::f32)), table.embedding->metadata());
    table.embedding.reset();
  });
}

// Convert: the Param state of graphdef's model (rebuilt from `states`, which together hold
// all its leaves), quantized for serving.
template <class M, class... S>
State convert_params(const QuantConfig& config, const GraphDef<M>& graphdef, const S&... states) {
  M model = merge(graphdef, states...);
  quantize(model, config, QuantMode::serve);
  return state(model, of<Param>);
}

}  // namespace nnx
