// Reading model configs from JSON with errors that name the key (internal).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"

namespace nnx::detail {

inline std::int64_t config_int(const nlohmann::json& j, const char* key, std::int64_t fallback, bool required,
                               const char* model) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw InvalidArgument(std::string(model) + " config: missing \"" + key + "\"");
    return fallback;
  }
  if (!it->is_number_integer() || it->get<std::int64_t>() <= 0)
    throw InvalidArgument(std::string(model) + " config: \"" + key + "\" must be a positive integer, found " +
                          it->dump());
  return it->get<std::int64_t>();
}

inline double config_double(const nlohmann::json& j, const char* key, double fallback, const char* model) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number() || !(it->get<double>() >= 0))
    throw InvalidArgument(std::string(model) + " config: \"" + key + "\" must be a non-negative number, found " +
                          it->dump());
  return it->get<double>();
}

inline bool config_bool(const nlohmann::json& j, const char* key, bool fallback, const char* model) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    throw InvalidArgument(std::string(model) + " config: \"" + key + "\" must be true or false, found " + it->dump());
  return it->get<bool>();
}

// Limits every config is held to before anything is built from it: sizes multiplied
// unchecked would overflow (UBSan) and a billion layers would exhaust memory building
// abstract modules. The largest published models have ~10^12 parameters and ~10^2 layers.
inline constexpr std::int64_t max_config_layers = 10'000;
inline constexpr std::int64_t max_config_parameters = std::int64_t{1} << 42;

// A sum of products of config sizes, checked: nullopt on int64 overflow.
inline std::optional<std::int64_t> checked_size(std::initializer_list<std::initializer_list<std::int64_t>> terms) {
  std::int64_t total = 0;
  for (const auto& term : terms) {
    std::int64_t p = 1;
    for (std::int64_t f : term) {
      const auto next = checked_mul(p, f);
      if (!next) return std::nullopt;
      p = *next;
    }
    if (__builtin_add_overflow(total, p, &total)) return std::nullopt;
  }
  return total;
}

// Throws unless `layers` and `parameters` (nullopt: overflowed) are within the limits above.
inline void check_config_size(const char* model, const char* layers_key, std::int64_t layers,
                              std::optional<std::int64_t> parameters) {
  if (layers > max_config_layers)
    throw InvalidArgument(std::string(model) + " config: \"" + layers_key + "\" is " + std::to_string(layers) +
                          "; at most " + std::to_string(max_config_layers) + " layers are supported");
  if (!parameters || *parameters > max_config_parameters)
    throw InvalidArgument(std::string(model) + " config: the sizes describe " +
                          (parameters ? std::to_string(*parameters) : std::string("more than 2^63")) +
                          " parameters; at most 2^42 are supported");
}

}  // namespace nnx::detail
