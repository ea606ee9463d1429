// Reading model configs from JSON with errors that name the key (internal).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"

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

}  // namespace nnx::detail
