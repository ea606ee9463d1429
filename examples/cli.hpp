// examples/cli.hpp — what the command-line programs here share: a usage error, checked parsing
// of numeric option values and thread counts, and the one-line error report (exit code 2) every program ends
// with on bad input.
//
//   catch (const std::exception& e) { return cli::report_error("generate", e); }
#pragma once

#include <cmath>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>

#include <nnx/core/layers.hpp>
#include <nnx/ops/threads.hpp>

namespace cli {

// Bad command-line usage (reported like any other error: one line, exit code 2).
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The whole of `value` as an integer >= min, else a UsageError naming the flag.
inline std::int64_t parse_int(const std::string& flag, const std::string& value, std::int64_t min) {
  std::size_t used = 0;
  long long v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || v < min)
    throw UsageError(flag + ": '" + value + "' is not an integer >= " + std::to_string(min));
  return v;
}

// The whole of `value` as a finite number >= min, else a UsageError naming the flag.
inline double parse_double(const std::string& flag, const std::string& value, double min) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used == 0 || used != value.size() || !(v >= min) || !std::isfinite(v))
    throw UsageError(flag + ": '" + value + "' is not a number >= " + std::to_string(min));
  return v;
}

// --threads N: an integer in [1, nnx::kMaxThreads], else a UsageError naming the flag.
inline int parse_threads(const std::string& flag, const std::string& value) {
  const std::int64_t n = parse_int(flag, value, 1);
  if (n > nnx::kMaxThreads)
    throw UsageError(flag + ": " + value + " threads; at most " + std::to_string(nnx::kMaxThreads));
  return static_cast<int>(n);
}

// --layout: auto (std::nullopt: as the checkpoint stores it), stacked or per-layer.
inline std::optional<nnx::Layout> parse_layout(const std::string& flag, const std::string& value) {
  if (value == "auto") return std::nullopt;
  if (value == "stacked") return nnx::Layout::stacked;
  if (value == "per-layer") return nnx::Layout::per_layer;
  throw UsageError(flag + ": '" + value + "', expected auto, stacked or per-layer");
}

// "program: message" on one line of stderr (newlines in the message become spaces); returns
// the exit code for errors, 2.
inline int report_error(const char* program, const std::exception& e) {
  std::string msg = e.what();
  for (char& c : msg)
    if (c == '\n') c = ' ';
  std::cerr << program << ": " << msg << "\n";
  return 2;
}

}  // namespace cli
