// nnx/engine/request.hpp — a generation request and its JSON form, one request per line, as
// examples/serve_batch reads them and the Scheduler runs them.
//
//   nnx::Request r = nnx::parse_request_line(R"({"prompt_ids": [1, 2], "max_new_tokens": 8})");
//
// The JSON keys ("prompt_ids" or "prompt" is required; null means absent):
//   id              string (absent: the caller names the request)
//   prompt_ids      non-empty array of non-negative integer token ids
//   prompt          text, encoded by the Scheduler's tokenizer (instead of prompt_ids)
//   max_new_tokens  tokens to generate at most, the first one included (>= 1)
//   temperature     number >= 0 (0: greedy; so small that 1/temperature overflows: greedy too)
//   top_k           integer >= 0 (0: no cut)
//   top_p           number in (0, 1] (1: no cut)
//   seed            non-negative integer: token i is drawn with fold_in(key_from_seed(seed), i)
//   stop_ids        array of token ids that end the request
//   stop            a string or an array of strings: the request ends when its text contains
//                   one, and its text stops before it (needs the Scheduler's tokenizer)
//   logprobs        integer in [0, 20]: report each token's log-probability and this many
//                   most likely alternatives
// The line is parsed strictly (nnx/io/json.hpp: no NUL byte, no key twice, numbers that fit).
// What needs the model (ids below the vocabulary, lengths within the cache) is checked by
// Engine::check_request.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/engine/decode_state.hpp"
#include "nnx/engine/sampling.hpp"
#include "nnx/io/json.hpp"

namespace nnx {

inline constexpr std::int32_t kMaxTopLogprobs = 20;

struct Request {
  std::optional<std::string> id;
  std::vector<std::int32_t> prompt;
  std::optional<std::string> prompt_text;  // encoded by the Scheduler when `prompt` is empty
  SamplingParams sampling;
  std::uint64_t seed = 0;
  StopCondition stop;
  std::vector<std::string> stop_strings;   // matched on the request's decoded text
  std::optional<std::int32_t> logprobs{};  // alternatives per token, in [0, kMaxTopLogprobs]
};

namespace detail::request {

inline std::string quoted(std::string_view key) {
  std::string s(1, '"');  // not "\"" + std::string(key): GCC 12 warns (-Wrestrict) on that form
  s += key;
  s += '"';
  return s;
}

// The value of an integer field, within [min, max].
inline std::int64_t integer(const nlohmann::json& v, const std::string& name, std::int64_t min, std::int64_t max,
                            const char* expected) {
  bool ok = v.is_number_integer();
  std::int64_t x = 0;
  if (ok && v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    ok = u <= static_cast<std::uint64_t>(max);
    x = static_cast<std::int64_t>(u);
  } else if (ok) {
    x = v.get<std::int64_t>();
  }
  if (!ok || x < min || x > max) throw InvalidArgument(name + " must be " + expected + ", got " + v.dump());
  return x;
}

inline std::vector<std::int32_t> token_ids(const nlohmann::json& v, std::string_view key, bool non_empty) {
  if (!v.is_array() || (non_empty && v.empty()))
    throw InvalidArgument(quoted(key) + " must be a" + (non_empty ? " non-empty" : "n") + " array of token ids, got " +
                          v.dump());
  std::vector<std::int32_t> ids;
  ids.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i)
    ids.push_back(static_cast<std::int32_t>(integer(v[i], std::string(key) + "[" + std::to_string(i) + "]", 0,
                                                    std::numeric_limits<std::int32_t>::max(),
                                                    "a non-negative integer token id")));
  return ids;
}

// OpenAI's "stop": one string or an array of them (at most 16, none empty).
inline std::vector<std::string> stop_strings(const nlohmann::json& v) {
  std::vector<std::string> out;
  const auto add = [&](const nlohmann::json& s) {
    if (!s.is_string() || s.get_ref<const std::string&>().empty())
      throw InvalidArgument("\"stop\" must be a non-empty string or an array of them, got " + s.dump());
    out.push_back(s.get<std::string>());
  };
  if (v.is_array()) {
    if (v.size() > 16) throw InvalidArgument("\"stop\" holds " + std::to_string(v.size()) + " strings, at most 16");
    for (const auto& s : v) add(s);
  } else {
    add(v);
  }
  return out;
}

}  // namespace detail::request

// Parses one request line (see the top of this file). Throws InvalidArgument naming the key
// and what was expected. Keys it does not know are appended to *unknown_keys when given,
// else ignored.
inline Request parse_request_line(std::string_view text, std::vector<std::string>* unknown_keys = nullptr) {
  namespace d = detail::request;
  nlohmann::json j;
  try {
    j = io::parse_json_strict(text);
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(std::string("request ") + e.what());
  }
  if (!j.is_object()) throw InvalidArgument(std::string("expected a JSON object, got ") + j.type_name());

  constexpr auto i64_min = std::numeric_limits<std::int64_t>::min();
  constexpr auto i64_max = std::numeric_limits<std::int64_t>::max();
  Request r;
  bool has_prompt = false;
  for (const auto& [key, value] : j.items()) {
    if (value.is_null()) continue;  // absent
    if (key == "id") {
      if (!value.is_string()) throw InvalidArgument("\"id\" must be a string, got " + value.dump());
      r.id = value.get<std::string>();
    } else if (key == "prompt_ids") {
      r.prompt = d::token_ids(value, key, true);
      has_prompt = true;
    } else if (key == "max_new_tokens") {
      r.stop.max_new_tokens = d::integer(value, d::quoted(key), 1, i64_max, "an integer >= 1");
    } else if (key == "temperature" || key == "top_p") {
      if (!value.is_number()) throw InvalidArgument(d::quoted(key) + " must be a number, got " + value.dump());
      (key == "temperature" ? r.sampling.temperature : r.sampling.top_p) = value.get<double>();
    } else if (key == "top_k") {
      r.sampling.top_k = d::integer(value, d::quoted(key), i64_min, i64_max, "an integer");
    } else if (key == "seed") {
      if (!value.is_number_unsigned())
        throw InvalidArgument("\"seed\" must be a non-negative integer, got " + value.dump());
      r.seed = value.get<std::uint64_t>();
    } else if (key == "stop_ids") {
      r.stop.stop_ids = d::token_ids(value, key, false);
    } else if (key == "prompt") {
      if (!value.is_string()) throw InvalidArgument("\"prompt\" must be a string, got " + value.dump());
      r.prompt_text = value.get<std::string>();
      has_prompt = true;
    } else if (key == "stop") {
      r.stop_strings = d::stop_strings(value);
    } else if (key == "logprobs") {
      r.logprobs = static_cast<std::int32_t>(d::integer(value, d::quoted(key), 0, kMaxTopLogprobs, "an integer in [0, 20]"));
    } else if (unknown_keys) {
      unknown_keys->push_back(key);
    }
  }
  if (!has_prompt) throw InvalidArgument("missing \"prompt_ids\" (or \"prompt\")");
  if (!r.prompt.empty() && r.prompt_text) throw InvalidArgument("give \"prompt_ids\" or \"prompt\", not both");
  r.sampling.validate();
  return r;
}

}  // namespace nnx
