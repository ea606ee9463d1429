// Reading and writing config.json's "rope_scaling" object (internal): Hugging Face's
//   "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
//                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
// ("type" is the legacy spelling of "rope_type"; "linear" needs only "factor"; null, absent
// or "default" is no scaling). Other types (yarn, dynamic, longrope, ...) are rejected by name.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/nn/rope_scaling.hpp"

namespace nnx::detail {

// j["rope_scaling"] of a `model` config (messages say "<model> config: rope_scaling.<field> ...").
inline RopeScaling rope_scaling_from_json(const nlohmann::json& j, const char* model) {
  const std::string who = std::string(model) + " config";
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return {};
  if (!it->is_object())
    throw InvalidArgument(who + ": \"rope_scaling\" must be a JSON object or null, found " + it->dump());
  const nlohmann::json& r = *it;
  auto type = r.find("rope_type");
  if (type == r.end() || type->is_null()) type = r.find("type");
  if (type == r.end() || type->is_null())
    throw InvalidArgument(who + ": rope_scaling.rope_type is missing (expected \"linear\" or \"llama3\"), found " +
                          r.dump());
  if (!type->is_string())
    throw InvalidArgument(who + ": rope_scaling.rope_type must be a string (\"linear\" or \"llama3\"), found " +
                          type->dump());
  RopeScaling s;
  const auto name = type->get<std::string>();
  if (name == "default") return s;
  if (name == "linear")
    s.type = RopeScalingType::linear;
  else if (name == "llama3")
    s.type = RopeScalingType::llama3;
  else
    throw InvalidArgument(who + ": rope_scaling.rope_type " + type->dump() +
                          " is not supported (expected \"linear\", \"llama3\" or \"default\")");
  const auto field = [&](const char* key) -> const nlohmann::json& {
    auto f = r.find(key);
    if (f == r.end() || f->is_null())
      throw InvalidArgument(who + ": rope_scaling." + key + " is missing (rope_type \"" + name + "\" needs it)");
    return *f;
  };
  const auto number = [&](const char* key) {
    const nlohmann::json& v = field(key);
    if (!v.is_number()) throw InvalidArgument(who + ": rope_scaling." + key + " must be a number, found " + v.dump());
    return v.get<double>();
  };
  s.factor = number("factor");
  if (s.type == RopeScalingType::llama3) {
    s.low_freq_factor = number("low_freq_factor");
    s.high_freq_factor = number("high_freq_factor");
    const nlohmann::json& ctx = field("original_max_position_embeddings");
    // An integer, or a float holding one (some exporters write 8192.0).
    const bool integral = ctx.is_number_integer() ||
                          (ctx.is_number_float() && std::isfinite(ctx.get<double>()) &&
                           ctx.get<double>() == std::floor(ctx.get<double>()) && std::fabs(ctx.get<double>()) < 0x1p62);
    if (!integral || ctx.get<double>() <= 0)
      throw InvalidArgument(who + ": rope_scaling.original_max_position_embeddings must be a positive integer, found " +
                            ctx.dump());
    s.original_max_position_embeddings =
        ctx.is_number_integer() ? ctx.get<std::int64_t>() : static_cast<std::int64_t>(ctx.get<double>());
  }
  s.validate(who);
  return s;
}

// The "rope_scaling" value HF writes for s: null when none.
inline nlohmann::json rope_scaling_to_json(const RopeScaling& s) {
  switch (s.type) {
    case RopeScalingType::linear:
      return {{"rope_type", "linear"}, {"factor", s.factor}};
    case RopeScalingType::llama3:
      return {{"rope_type", "llama3"},
              {"factor", s.factor},
              {"low_freq_factor", s.low_freq_factor},
              {"high_freq_factor", s.high_freq_factor},
              {"original_max_position_embeddings", s.original_max_position_embeddings}};
    case RopeScalingType::none:
      break;
  }
  return nullptr;
}

}  // namespace nnx::detail
