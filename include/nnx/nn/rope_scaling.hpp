// nnx/nn/rope_scaling.hpp — RoPE frequency scaling (Hugging Face's "rope_scaling") as static
// configuration of Attention and of model configs.
//
//   nnx::RopeScaling s{.type = nnx::RopeScalingType::llama3, .factor = 8.0, .low_freq_factor = 1.0,
//                      .high_freq_factor = 4.0, .original_max_position_embeddings = 8192};   // Llama 3.1
//   s.validate("llama config");                          // InvalidArgument naming the field
//   nnx::AttentionOptions o{..., .use_rope = true, .rope_theta = 500000.0, .rope_scaling = s};
//
// The frequencies each type gives are nnx::kernels::ref::rope_scaled_inv_freq (transformers'
// _compute_linear_scaling_rope_parameters and _compute_llama3_parameters, in float32 as
// there). Type none ignores the other fields; they stay at their defaults so configs compare
// equal. Reading and writing config.json's "rope_scaling" object is
// nnx/models/detail/rope_scaling_json.hpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/kernels/rope.hpp"

namespace nnx {

using RopeScalingType = kernels::RopeScalingType;  // none, linear, llama3

// "none", "linear" or "llama3" (HF's rope_type names; none is HF's "default").
inline const char* rope_scaling_type_name(RopeScalingType t) noexcept {
  switch (t) {
    case RopeScalingType::linear:
      return "linear";
    case RopeScalingType::llama3:
      return "llama3";
    case RopeScalingType::none:
      break;
  }
  return "none";
}

struct RopeScaling {
  RopeScalingType type = RopeScalingType::none;
  double factor = 1.0;                                   // linear, llama3: > 0
  double low_freq_factor = 1.0;                          // llama3: > 0
  double high_freq_factor = 4.0;                         // llama3: > low_freq_factor
  std::int64_t original_max_position_embeddings = 8192;  // llama3: > 0, the context before scaling
  NNX_FIELDS(type, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)

  bool enabled() const noexcept { return type != RopeScalingType::none; }
  bool operator==(const RopeScaling&) const = default;

  // Throws InvalidArgument "<who>: rope_scaling.<field> ..." naming the field, what was
  // expected and what was found.
  void validate(std::string_view who) const {
    const auto fail = [&](const std::string& field, const std::string& what) {
      throw InvalidArgument(std::string(who) + ": rope_scaling." + field + " " + what);
    };
    const auto number = [](double v) {
      std::string s = std::to_string(v);
      while (s.size() > 1 && s.back() == '0' && s[s.size() - 2] != '.') s.pop_back();
      return s;
    };
    switch (type) {
      case RopeScalingType::none:
        return;
      case RopeScalingType::linear:
      case RopeScalingType::llama3:
        break;
      default:
        fail("rope_type", "must be none, linear or llama3, found type " + std::to_string(static_cast<int>(type)));
    }
    if (!(std::isfinite(factor) && factor > 0)) fail("factor", "must be a positive number, found " + number(factor));
    if (type != RopeScalingType::llama3) return;
    if (!(std::isfinite(low_freq_factor) && low_freq_factor > 0))
      fail("low_freq_factor", "must be a positive number, found " + number(low_freq_factor));
    if (!(std::isfinite(high_freq_factor) && high_freq_factor > low_freq_factor))
      fail("high_freq_factor",
           "must be a number above low_freq_factor " + number(low_freq_factor) + ", found " + number(high_freq_factor));
    if (original_max_position_embeddings <= 0)
      fail("original_max_position_embeddings",
           "must be a positive integer, found " + std::to_string(original_max_position_embeddings));
  }

  // The settings as the kernels take them.
  kernels::RopeFreqScaling frequencies() const noexcept {
    return {.type = type,
            .factor = factor,
            .low_freq_factor = low_freq_factor,
            .high_freq_factor = high_freq_factor,
            .original_max_position_embeddings = static_cast<double>(original_max_position_embeddings)};
  }
};

}  // namespace nnx
