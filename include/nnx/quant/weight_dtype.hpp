// nnx/quant/weight_dtype.hpp — the dtype a model's weights are served in: f32, or bf16 / f16
// as a checkpoint stores them (read in place, widened in registers by the kernels).
//
//   nnx::cast_weights(model, nnx::DType::bf16);   // Linear kernels -> bf16 `weight` [out, in],
//                                                 // embedding tables -> bf16
//   auto wd = nnx::parse_weight_dtype("auto");    // WeightDType::as_stored
//
// cast_weights turns every nnx::Linear's f32 `kernel` [in, out] into a 16-bit `weight`
// [out, in] (nn.Linear's layout, so a Hugging Face Llama's tensors are used straight from the
// mmap'ed file) and every nnx::Embed table into the dtype; casting to f32 goes back to
// `kernel`. Biases and norm scales stay f32 (small, and added in f32). On an abstract model
// (eval_shape) it only changes shapes and dtypes, so a model built that way loads a bf16
// checkpoint without ever holding an f32 copy. Layers already quantized (qkernel,
// qembedding) are left as they are; quantizing a 16-bit layer later quantizes its weights'
// values (nnx/quant/quantize.hpp).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "nnx/core/error.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/nn/embed.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/quant/quantize.hpp"

namespace nnx {

// What EngineOptions::weight_dtype asks for: the checkpoint's own 16-bit dtype (f32 when it
// stores f32), or a dtype every weight is converted to once, at load.
enum class WeightDType : std::uint8_t { as_stored, f32, bf16, f16 };

inline std::string_view weight_dtype_name(WeightDType w) {
  switch (w) {
    case WeightDType::as_stored: return "auto";
    case WeightDType::f32: return "f32";
    case WeightDType::bf16: return "bf16";
    case WeightDType::f16: return "f16";
  }
  return "?";
}

// "auto", "f32", "bf16" or "f16".
inline WeightDType parse_weight_dtype(std::string_view name) {
  for (WeightDType w : {WeightDType::as_stored, WeightDType::f32, WeightDType::bf16, WeightDType::f16})
    if (name == weight_dtype_name(w)) return w;
  throw InvalidArgument("unknown weight dtype \"" + std::string(name) + "\" (auto, f32, bf16, f16)");
}

inline DType to_dtype(WeightDType w) {
  if (w == WeightDType::as_stored) throw InvalidArgument("weight dtype auto names no dtype until a checkpoint is read");
  return w == WeightDType::f32 ? DType::f32 : w == WeightDType::bf16 ? DType::bf16 : DType::f16;
}

// The dtype of a parameter state's weights: that of its first matrix not quantized (every
// Linear weight and Embed table shares it once cast_weights has run; norm scales and biases,
// f32 in every case, are vectors; LoRA adapters are f32 and skipped), f32 when every matrix is
// quantized. The engine asks at each step, so it stops at the first matrix instead of reading
// the whole state.
inline DType weight_dtype_of(const State& params) {
  for (const auto& [path, leaf] : params)
    if (!leaf.is_quantized() && leaf.tensor().rank() == 2 && !leaf.kind->is_a(LoraParam::kind_info()))
      return leaf.tensor().dtype();
  return DType::f32;
}

// Every Linear's and Embed's weights into `dtype` (f32, bf16 or f16), as the header says.
template <class Model>
void cast_weights(Model& model, DType dtype) {
  if (dtype != DType::f32 && dtype != DType::bf16 && dtype != DType::f16)
    throw InvalidArgument("cast_weights: weights are served in f32, bf16 or f16, not " + std::string(dtype_name(dtype)));
  if (has_stacked_layers(model)) return with_per_layer_layers(model, [&] { cast_weights(model, dtype); });
  for_each_module<Linear>(model, [&](const Path&, Linear& layer) {
    if (dtype == DType::f32) {
      if (!layer.weight) return;
      layer.kernel = Param(transpose_2d(layer.weight->value(), DType::f32),
                           detail::reversed_axes(layer.weight->metadata()));
      layer.weight.reset();
    } else if (layer.kernel) {
      layer.weight = Param(transpose_2d(layer.kernel->value(), dtype),
                           detail::reversed_axes(layer.kernel->metadata()));
      layer.kernel.reset();
    } else if (layer.weight && layer.weight->value().dtype() != dtype) {
      layer.weight = Param(layer.weight->value().astype(dtype), layer.weight->metadata());
    }
  });
  for_each_module<Embed>(model, [&](const Path&, Embed& table) {
    if (table.embedding && table.embedding->value().dtype() != dtype)
      table.embedding = Param(table.embedding->value().astype(dtype), table.embedding->metadata());
  });
}

}  // namespace nnx
