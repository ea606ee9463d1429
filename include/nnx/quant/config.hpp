// nnx/quant/config.hpp — QuantConfig: which layers run in int8, and with which numerics.
//
//   nnx::QuantConfig q{.scheme = nnx::QuantScheme::w8a8};                 // every Linear, W8A8
//   q.rules = {{"*/mlp/*", nnx::QuantScheme::weight_only},              // MLPs weight-only
//              {"h/0/*", nnx::QuantScheme::none}};                      // first block in f32
//   q.include_head = true;                                               // the output head too
//
// A layer's scheme is the first rule whose pattern matches its path (a glob: '*' matches any
// run of characters, '/' included), else `scheme`. The output head (Llama's lm_head, or the
// tied embedding of GPT-2 and tied Llamas) is quantized only with include_head. Saved in a
// checkpoint's config under "quantization" (to_json / from_json), so a serve checkpoint
// says how it was quantized.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/ops/quantized.hpp"

namespace nnx {

struct QuantRule {
  std::string pattern;
  QuantScheme scheme = QuantScheme::none;
  friend bool operator==(const QuantRule&, const QuantRule&) = default;
};

namespace detail {

// Glob match: '*' matches any run of characters (including none); everything else literally.
inline bool glob_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++resume;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

}  // namespace detail

struct QuantConfig {
  QuantScheme scheme = QuantScheme::none;  // for every quantizable layer no rule matches
  std::vector<QuantRule> rules{};          // first match wins
  bool include_head = false;

  // The scheme of the layer at `path` (the module's path, e.g. "h/3/mlp/up").
  QuantScheme scheme_for(std::string_view path) const {
    for (const auto& r : rules)
      if (detail::glob_match(r.pattern, path)) return r.scheme;
    return scheme;
  }
  // True when some layer may be quantized.
  bool enabled() const {
    if (scheme != QuantScheme::none) return true;
    for (const auto& r : rules)
      if (r.scheme != QuantScheme::none) return true;
    return false;
  }

  nlohmann::json to_json() const {
    nlohmann::json rs = nlohmann::json::array();
    for (const auto& r : rules) rs.push_back({{"pattern", r.pattern}, {"scheme", quant_scheme_name(r.scheme)}});
    return {{"scheme", quant_scheme_name(scheme)}, {"rules", rs}, {"include_head", include_head}};
  }
  static QuantConfig from_json(const nlohmann::json& j) {
    auto fail = [](const std::string& what) -> QuantConfig {
      throw InvalidArgument("quantization config: " + what);
    };
    if (!j.is_object()) return fail("expected a JSON object, found " + j.dump());
    QuantConfig c;
    for (const auto& [key, value] : j.items()) {
      if (key == "scheme") {
        if (!value.is_string()) return fail("\"scheme\" must be a string, found " + value.dump());
        c.scheme = parse_quant_scheme(value.get<std::string>());
      } else if (key == "include_head") {
        if (!value.is_boolean()) return fail("\"include_head\" must be true or false, found " + value.dump());
        c.include_head = value.get<bool>();
      } else if (key == "rules") {
        if (!value.is_array()) return fail("\"rules\" must be an array, found " + value.dump());
        for (const auto& r : value) {
          if (!r.is_object() || !r.contains("pattern") || !r["pattern"].is_string() || !r.contains("scheme") ||
              !r["scheme"].is_string())
            return fail("a rule must be {\"pattern\": string, \"scheme\": string}, found " + r.dump());
          c.rules.push_back({r["pattern"].get<std::string>(), parse_quant_scheme(r["scheme"].get<std::string>())});
        }
      } else {
        return fail("unknown key \"" + key + "\"");
      }
    }
    return c;
  }

  // How a checkpoint's model config says its weights are quantized: its "quantization"
  // entry, or nothing quantized when there is none.
  static QuantConfig of_model_config(const nlohmann::json& model_config) {
    if (!model_config.is_object() || !model_config.contains("quantization")) return {};
    return from_json(model_config["quantization"]);
  }

  friend bool operator==(const QuantConfig&, const QuantConfig&) = default;
};

}  // namespace nnx
