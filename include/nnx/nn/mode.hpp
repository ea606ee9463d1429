// nnx/nn/mode.hpp — how a model runs: training, prefill or autoregressive decoding.
//
// The mode is static configuration (it lives in the graphdef). A KV cache — Cache
// variables — exists only in prefill and autoregressive modes:
//   train           full sequences, no cache; dropout active
//   prefill         a batch of prompts padded to a length; fills the cache from position 0
//   autoregressive  one new token per batch row, each row at its own position
#pragma once

#include <cstdint>
#include <string>

#include "nnx/core/error.hpp"

namespace nnx {

enum class Mode : std::uint8_t { train, prefill, autoregressive };

inline bool has_cache(Mode m) noexcept { return m != Mode::train; }

inline const char* mode_name(Mode m) noexcept {
  switch (m) {
    case Mode::train: return "train";
    case Mode::prefill: return "prefill";
    case Mode::autoregressive: return "autoregressive";
  }
  return "?";
}

}  // namespace nnx
