// nnx/engine/scheduler.hpp — continuous batching over an Engine: requests wait in a FIFO,
// take a slot as soon as one is free, and leave it the step they finish. The loop that
// examples/serve_batch (and any server) runs, as a library type.
//
//   nnx::Scheduler<nnx::Gpt2> scheduler(engine, params);
//   scheduler.submit("a", nnx::parse_request_line(line));   // checked now; throws if bad
//   while (!scheduler.idle())
//     for (const nnx::Completion& c : scheduler.step()) print(c.id, c.tokens, c.finish);
//
// A request's tokens are exactly the engine's for it alone (see engine.hpp): they do not
// depend on the number of slots, on the other requests, on when it was submitted or on the
// thread count. A request whose logits turn NaN finishes with FinishReason::nan and the
// others go on. Not thread-safe: one thread calls submit and step.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/engine/decode_state.hpp"
#include "nnx/engine/engine.hpp"
#include "nnx/engine/request.hpp"

namespace nnx {

// A request that left the scheduler.
struct Completion {
  using Clock = std::chrono::steady_clock;
  std::string id;
  std::vector<std::int32_t> tokens;  // the generated tokens (a stop token included)
  FinishReason finish = FinishReason::none;  // stop_token, max_new_tokens, or nan
  std::string error;  // why the request failed (finish nan), empty otherwise
  std::int64_t prompt_tokens = 0;
  Clock::time_point submitted, first_token, finished;  // first_token: == finished if none
};

template <EngineModel Model>
class Scheduler {
 public:
  using Clock = Completion::Clock;

  // Keeps references to neither: the engine is copied (it holds no mutable state) and
  // params is shared (tensors are reference counted).
  Scheduler(const Engine<Model>& engine, State params)
      : engine_(engine), params_(std::move(params)), state_(engine_.init_decode_state()),
        running_(static_cast<std::size_t>(engine_.num_slots())) {}

  // Queues a request. Checks it first (Engine::check_request): a bad request throws
  // InvalidArgument and nothing is queued.
  void submit(std::string id, Request request) {
    engine_.check_request(request.prompt, request.sampling, request.stop);
    waiting_.push_back(Waiting{std::move(id), std::move(request), Clock::now()});
  }

  bool idle() const { return waiting_.empty() && num_running() == 0; }
  std::size_t num_waiting() const { return waiting_.size(); }
  std::size_t num_running() const {
    std::size_t n = 0;
    for (const auto& r : running_) n += r.has_value();
    return n;
  }
  // Tokens generated so far by the running requests.
  std::int64_t tokens_in_flight() const {
    std::int64_t n = 0;
    for (const auto& r : running_)
      if (r) n += static_cast<std::int64_t>(r->tokens.size());
    return n;
  }
  const Engine<Model>& engine() const { return engine_; }

  // One round: every free slot takes the next waiting request (prefill and insert; one that
  // finishes at its first token leaves at once and frees the slot again), then one generate
  // step advances every running request. Returns the requests that finished in this round,
  // in the order they finished. An exception (an allocation failure) loses nothing: the
  // request being started stays first in the queue, and the engine's state is unchanged by
  // the call that threw (Engine calls are all-or-nothing).
  std::vector<Completion> step() {
    std::vector<Completion> done;
    for (std::size_t slot = 0; slot < running_.size(); ++slot)
      while (!running_[slot] && !waiting_.empty()) start(slot, done);
    if (state_.num_active() > 0) {
      auto [next, result] = engine_.generate(params_, std::move(state_));
      state_ = std::move(next);
      const Clock::time_point now = Clock::now();
      for (std::size_t slot = 0; slot < running_.size(); ++slot) {
        if (!running_[slot]) continue;
        const SlotResult& r = result.at(static_cast<std::int64_t>(slot));
        if (r.valid) running_[slot]->tokens.push_back(r.token);
        if (r.done) finish(slot, r.finish, now, done);
      }
    }
    return done;
  }

 private:
  struct Waiting {
    std::string id;
    Request request;
    Clock::time_point submitted;
  };

  // Prefills the first waiting request into `slot`. One that fails at prefill (NaN logits)
  // completes at once with FinishReason::nan and the slot stays free.
  void start(std::size_t slot, std::vector<Completion>& done) {
    const Waiting& w = waiting_.front();
    Completion c;
    c.id = w.id;
    c.submitted = w.submitted;
    c.prompt_tokens = static_cast<std::int64_t>(w.request.prompt.size());
    Prefix prefix;
    try {
      prefix = engine_.prefill(params_, Tensor::from_vector(w.request.prompt, {c.prompt_tokens}), c.prompt_tokens,
                               w.request.sampling, key_from_seed(w.request.seed), w.request.stop);
    } catch (const NumericalError& e) {
      waiting_.pop_front();
      c.finish = FinishReason::nan;
      c.error = e.what();
      c.first_token = c.finished = Clock::now();
      done.push_back(std::move(c));
      return;
    }
    state_ = engine_.insert(prefix, std::move(state_), static_cast<std::int64_t>(slot));
    waiting_.pop_front();
    c.first_token = Clock::now();
    c.tokens.push_back(prefix.token);
    running_[slot] = std::move(c);
    const SlotState& s = state_.slots[slot];
    if (s.done) finish(slot, s.finish, running_[slot]->first_token, done);
  }

  void finish(std::size_t slot, FinishReason why, Clock::time_point now, std::vector<Completion>& done) {
    Completion c = std::move(*running_[slot]);
    running_[slot].reset();
    state_ = engine_.release(std::move(state_), static_cast<std::int64_t>(slot));
    c.finish = why;
    c.finished = now;
    if (why == FinishReason::nan)
      c.error = "the logits became NaN (or all -inf) after " + std::to_string(c.tokens.size()) + " tokens";
    done.push_back(std::move(c));
  }

  Engine<Model> engine_;
  State params_;
  DecodeState state_;
  std::deque<Waiting> waiting_;
  std::vector<std::optional<Completion>> running_;  // per slot: the request it runs
};

}  // namespace nnx
