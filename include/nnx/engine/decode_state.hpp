// nnx/engine/decode_state.hpp — the values the engine's pure functions pass around: a
// prefilled Prefix, the DecodeState of every batch slot, and the ResultTokens of one step.
//
// They are plain data (States, Tensors, vectors): copying one shares its cache tensors, and
// the engine copies a cache on write unless the state was donated (moved in), so a caller
// that keeps an old state keeps it unchanged.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "nnx/core/rngs.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/engine/sampling.hpp"

namespace nnx {

// When a request stops generating. Generated tokens count the prefill's first token.
struct StopCondition {
  // Tokens to generate at most; unset: until prompt plus generated tokens fill the slot's
  // max_target_length.
  std::optional<std::int64_t> max_new_tokens{};
  // A sampled token in this list ends the request; it is the request's last token.
  std::vector<std::int32_t> stop_ids{};
};

// nan: the request's logits became NaN (or all -inf), so no token could be drawn; the slot
// stops there and every other slot goes on. The engine reports the first four; the Scheduler
// also ends a request when its text contains a stop string, or when it is cancelled.
enum class FinishReason : std::uint8_t { none, stop_token, max_new_tokens, nan, stop_string, cancelled };

inline std::string_view finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::stop_token: return "stop_token";
    case FinishReason::max_new_tokens: return "max_new_tokens";
    case FinishReason::nan: return "nan";
    case FinishReason::stop_string: return "stop_string";
    case FinishReason::cancelled: return "cancelled";
  }
  return "?";
}

// One prompt's prefill: its KV cache and its first sampled token.
struct Prefix {
  State cache;                     // Cache leaves of one sequence, [1, max_target_length, Hkv, D]
  std::int64_t next_position = 0;  // tokens held in the cache: positions [0, next_position)
  std::int32_t token = 0;          // the first sampled token (not yet in the cache)
  float log_prob = 0.0f;           // its log-probability under the model (see sample_token)
  Tensor last_logits;              // f32 [V]: the logits `token` was sampled from
  SamplingParams sampling;         // how this request samples its next tokens
  StopCondition stop;
  std::int64_t max_new_tokens = 0;  // stop.max_new_tokens resolved against the target length
  RngKey key;                       // the request's key; token i is drawn with fold_in(key, i)
};

// One batch slot of the decode state.
struct SlotState {
  bool occupied = false;  // holds a request (inserted, not yet released)
  bool done = false;      // the request finished; the slot no longer advances
  FinishReason finish = FinishReason::none;
  std::int64_t next_position = 0;  // where last_token is written by the next step
  std::int64_t generated = 0;      // tokens generated so far, the prefill's first included
  std::int64_t max_new_tokens = 0;
  std::int32_t last_token = 0;
  SamplingParams sampling;
  std::vector<std::int32_t> stop_ids;
  RngKey key;

  bool active() const { return occupied && !done; }
};

// Every slot's cache and bookkeeping. Cache rows of a slot that is not active are scratch.
struct DecodeState {
  State cache;  // Cache leaves, [slots, max_target_length, Hkv, D]
  std::vector<SlotState> slots;

  std::int64_t num_slots() const { return static_cast<std::int64_t>(slots.size()); }
  std::int64_t num_active() const {
    std::int64_t n = 0;
    for (const auto& s : slots) n += s.active();
    return n;
  }
  std::int64_t num_free() const {
    std::int64_t n = 0;
    for (const auto& s : slots) n += !s.occupied;
    return n;
  }
};

// What one generate step produced in one slot (JetStream's per-slot token, validity, length).
// Every occupied slot reports done = true in each step's result until it is released, also
// when it finished at insert (its first token was a stop id, or max_new_tokens was 1) or in
// an earlier step: a caller that releases the slots whose result is done never leaks one.
struct SlotResult {
  std::int32_t token = 0;
  bool valid = false;       // the slot was active and produced `token` this step
  std::int64_t length = 0;  // tokens the request has generated, `token` included
  float log_prob = 0.0f;
  bool done = false;  // the request has finished (the slot waits to be released)
  FinishReason finish = FinishReason::none;
};

struct ResultTokens {
  std::vector<SlotResult> slots;
  Tensor logits;  // f32 [slots, V] of this step (rows of inactive slots are zeros); empty if none ran

  const SlotResult& at(std::int64_t slot) const { return slots.at(static_cast<std::size_t>(slot)); }
};

}  // namespace nnx
