// nnx/nn/lora_adapter.hpp — a LoRA adapter: the low-rank update a Linear carries beside its
// weight (nnx/nn/lora.hpp attaches and merges them), and its variable kind.
//
// A Linear with an adapter computes y = x·W + b + (alpha / rank)·(x·A)·B, with A [in, rank]
// and B [rank, out] LoraParams (a kind derived from Param, so of<Param> still selects them
// and of<LoraParam> selects them alone). B starts at zero: attaching changes nothing until
// the adapter is trained. The adapter is applied unmerged on top of whatever the Linear
// serves (f32, 16-bit or int8 weights); merge_lora folds it into an f32 kernel.
//
// The config (rank, alpha, target pattern) is what an adapter checkpoint stores.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/ops.hpp"

namespace nnx {

// An adapter's matrices: Params, so trainable, but their own kind, so a fine-tune can take
// the gradient of these alone and save them apart from the base weights.
struct LoraParam : VariableKind<LoraParam, Param> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "LoraParam";
};

struct LoraConfig {
  std::int64_t rank = 0;  // 0: no adapters
  double alpha = 0.0;     // the update is scaled by alpha / rank
  std::string targets;    // regex searched in Linear paths

  bool enabled() const { return rank > 0; }
  nlohmann::json to_json() const { return {{"rank", rank}, {"alpha", alpha}, {"targets", targets}}; }
  // `source` names where the JSON came from, for the error.
  static LoraConfig from_json(const nlohmann::json& j, const std::string& source) {
    LoraConfig c;
    if (!j.is_object() || !j.contains("rank") || !j["rank"].is_number_integer() || !j.contains("alpha") ||
        !j["alpha"].is_number() || !j.contains("targets") || !j["targets"].is_string())
      throw InvalidArgument(source + ": expected a LoRA config {\"rank\": int, \"alpha\": number, \"targets\": "
                            "string}, found " + j.dump());
    c.rank = j["rank"].get<std::int64_t>();
    c.alpha = j["alpha"].get<double>();
    c.targets = j["targets"].get<std::string>();
    c.validate(source);
    return c;
  }
  void validate(const std::string& who) const {
    if (rank < 1) throw InvalidArgument(who + ": LoRA rank must be >= 1, got " + std::to_string(rank));
    if (!std::isfinite(alpha) || alpha <= 0)
      throw InvalidArgument(who + ": LoRA alpha must be a finite number > 0, got " + std::to_string(alpha));
    if (targets.empty()) throw InvalidArgument(who + ": LoRA targets (a regex over Linear paths) is empty");
  }
};

struct LoraAdapter {
  std::int64_t rank = 0;
  double alpha = 0.0;
  LoraParam a;  // [in, rank]
  LoraParam b;  // [rank, out]
  NNX_FIELDS(rank, alpha, a, b)

  float scale() const { return static_cast<float>(alpha / static_cast<double>(rank)); }

  // scale·(x·A) [..., rank]: the adapter's input to B, what the backward keeps.
  Tensor down(const Tensor& x) const {
    Tensor u = ops::linear(x, a.value());
    if (!u.is_abstract()) {
      float* p = u.data<float>();
      const float s = scale();
      for (std::int64_t i = 0; i < u.numel(); ++i) p[i] *= s;
    }
    return u;
  }

  // y += scale·(x·A)·B in place; returns down(x).
  Tensor add_to(Tensor& y, const Tensor& x) const {
    Tensor u = down(x);
    const Tensor v = ops::linear(u, b.value());
    if (!y.is_abstract()) ops::add_(y, v);
    return u;
  }
};

}  // namespace nnx
