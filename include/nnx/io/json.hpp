// nnx/io/json.hpp — strict JSON parsing for every text the library reads (file headers,
// config.json, checkpoint indexes, request lines).
//
//   nlohmann::json j = nnx::io::parse_json_strict(text);   // throws nnx::InvalidArgument
//
// Strict means three things nlohmann's parser allows: a raw NUL byte (nlohmann stops there as
// if the input ended, accepting any garbage after it), a key given twice in one object
// (nlohmann keeps the last silently; in a config or a header the duplicate may be the lie),
// and an exception type other than nnx::Error escaping (a number too large for a double is
// nlohmann's out_of_range, not parse_error). The messages are short and name the reason,
// never the whole input, which may be binary.
#pragma once

#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"

namespace nnx::io {

// Parses `text` as one JSON value. Throws InvalidArgument whose message is the reason,
// phrased to follow the name of what was parsed: "is not valid JSON: ...", "has the key
// \"k\" twice".
inline nlohmann::json parse_json_strict(std::string_view text) {
  if (const void* nul = std::memchr(text.data(), '\0', text.size()))
    throw InvalidArgument("is not valid JSON: NUL byte at offset " +
                          std::to_string(static_cast<const char*>(nul) - text.data()));
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string duplicate;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(),
                              [&](int, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
                                using E = nlohmann::json::parse_event_t;
                                if (ev == E::object_start) {
                                  keys.emplace_back();
                                } else if (ev == E::object_end) {
                                  if (!keys.empty()) keys.pop_back();
                                } else if (ev == E::key && !keys.empty() && duplicate.empty()) {
                                  if (!keys.back().insert(parsed.get<std::string>()).second)
                                    duplicate = parsed.get<std::string>();
                                }
                                return true;
                              });
  } catch (const nlohmann::json::exception& e) {
    // nlohmann quotes the offending bytes, which may be anything: keep the message short.
    std::string what = e.what();
    if (what.size() > 400) what = what.substr(0, 400) + "...";
    throw InvalidArgument("is not valid JSON (or not UTF-8): " + what);
  }
  if (!duplicate.empty()) throw InvalidArgument("has the key \"" + duplicate + "\" twice");
  return j;
}

}  // namespace nnx::io
