// nnx/nn/linear.hpp — Linear: y = x · kernel + bias.
//
// kernel is [in, out] (as Flax, and as GPT-2's Conv1D), bias [out] and optional. Logical
// axis names default to {"embed", "mlp"} / {"mlp"}; name them for your sharding.
//
// Quantization (see nnx/quant/quantize.hpp, which sets it up): with `quant` set to an int8
// scheme, the product runs on int8 weights. In train mode the f32 kernel is quantized on the
// fly in every call; in serve mode the layer holds only the frozen `qkernel` (a
// QuantizedParam QTensor, qvalue i8 [out, in], scale f32 [out]) and no kernel at all. Both
// give the same numbers for the same weights.
//
// Served as stored (nnx/quant/weight_dtype.hpp, cast_weights): a bf16 or f16 checkpoint's
// weights stay 16-bit, in `weight` [out, in] — nn.Linear's layout, so a Hugging Face Llama's
// tensors are used straight from the mmap'ed file — and the product widens them in registers
// (ops::linear_transposed). The layer then holds no `kernel`.
//
// LoRA (nnx/nn/lora.hpp attaches it): an optional adapter adds (alpha / rank)·(x·A)·B to
// whichever of these products the layer runs.
//
//   nnx::Linear proj(768, 3072, rngs);                       // bias, lecun-normal kernel
//   nnx::Linear head(768, 50257, rngs, {.use_bias = false});
//   nnx::Tensor y = proj(x);                                 // x [..., 768] -> [..., 3072]
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "nnx/core/init.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/nn/lora_adapter.hpp"
#include "nnx/ops.hpp"
#include "nnx/ops/quantized.hpp"

namespace nnx {

struct LinearOptions {
  bool use_bias = true;
  float init_stddev = 0.0f;  // 0: 1 / sqrt(in), LeCun normal
  std::string in_axis = "embed";
  std::string out_axis = "mlp";
};

struct Linear {
  std::int64_t in_features = 0;
  std::int64_t out_features = 0;
  QuantScheme quant = QuantScheme::none;
  std::optional<Param> kernel;            // [in, out]; absent when frozen (serve)
  std::optional<QuantizedParam> qkernel;  // serve: QTensor, qvalue i8 [out, in], scale f32 [out]
  std::optional<Param> weight;            // served as stored: [out, in], bf16 or f16 (or f32)
  std::optional<Param> bias;              // [out]
  std::optional<LoraAdapter> lora;        // a low-rank update applied unmerged
  NNX_FIELDS(in_features, out_features, quant, kernel, qkernel, weight, bias, lora)

  Linear() = default;
  Linear(std::int64_t in, std::int64_t out, Rngs& rngs, const LinearOptions& options = {})
      : in_features(in), out_features(out) {
    const float stddev = options.init_stddev > 0 ? options.init_stddev : 1.0f / std::sqrt(static_cast<float>(in));
    kernel = Param(init::normal(rngs.params(), {in, out}, stddev), {options.in_axis, options.out_axis});
    if (options.use_bias) bias = Param(Tensor::zeros({out}), {options.out_axis});
  }

  // x: [..., in] -> [..., out]
  Tensor operator()(const Tensor& x) const {
    Tensor y = base(x);
    if (lora) lora->add_to(y, x);
    return y;
  }

  // The product without the adapter.
  Tensor base(const Tensor& x) const {
    const Tensor* b = bias ? &bias->value() : nullptr;
    if (qkernel) return ops::quantized_linear(x, qkernel->qvalue(), quant, b);
    if (weight) {
      if (quant == QuantScheme::none) return ops::linear_transposed(x, weight->value(), b);
      return ops::quantized_linear(x, ops::quantize_rows(weight->value().astype(DType::f32)), quant, b);
    }
    if (!kernel) throw InvalidArgument("Linear: no kernel, quantized kernel or weight");
    if (quant == QuantScheme::none) return ops::linear(x, kernel->value(), b);
    return ops::quantized_linear(x, ops::quantize_kernel(kernel->value()), quant, b);
  }
};

}  // namespace nnx
