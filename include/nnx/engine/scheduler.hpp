// nnx/engine/scheduler.hpp — continuous batching over an Engine: requests wait in a FIFO,
// take a slot as soon as one is free, are prefilled in chunks between decode steps, stream
// their tokens (and text) through callbacks, and leave their slot the step they finish. The
// loop examples/serve_batch and examples/server run, as a library type.
//
//   nnx::Scheduler<nnx::Gpt2> scheduler(engine, params, tokenizer);   // tokenizer: optional
//   scheduler.submit("a", nnx::parse_request_line(line), {.on_token = print_text});
//   while (!scheduler.idle())
//     for (const nnx::Completion& c : scheduler.step()) print(c.id, c.tokens, c.text, c.finish);
//
// Chunked prefill: a prompt is prefilled max_prefill_length tokens at a time (the engine's own
// chunks, so the result is bitwise the one long prefill's). While other requests decode, a
// step runs prefill chunks worth at most SchedulerOptions::prefill_tokens_per_step tokens
// (at least one chunk) before its generate step, so a long prompt delays the others' next
// token by about one chunk's time, never by the whole prompt.
//
// Text (with a tokenizer): each token's text is decoded incrementally (never half a UTF-8
// character; special tokens skipped). Stop strings are matched on that text: text that could
// begin a stop string is held back until it cannot, the stop string and what follows are
// never emitted, and the request ends with FinishReason::stop_string (its tokens include the
// one that completed the stop string). A stop token's own text is not emitted either.
//
// A request's tokens are exactly the engine's for it alone (see engine.hpp): they do not
// depend on the number of slots, on the other requests, on when it was submitted, on the
// chunking or on the thread count. A request whose logits turn NaN finishes with
// FinishReason::nan and the others go on. Not thread-safe: one thread calls submit, cancel
// and step, and the callbacks run on it (nnx/engine/serving_loop.hpp runs a Scheduler on a
// thread of its own for servers).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/engine/decode_state.hpp"
#include "nnx/engine/engine.hpp"
#include "nnx/engine/request.hpp"
#include "nnx/text/tokenizer.hpp"

namespace nnx {

// A token and its log-probability under the model (log_softmax of the logits, before
// temperature, top-k and top-p).
struct TokenLogprob {
  std::int32_t token = 0;
  float log_prob = 0.0f;
};

// One generated token with its log-probability and, when asked, the most likely alternatives
// at its position (most likely first).
struct TokenLogprobs {
  std::int32_t token = 0;
  float log_prob = 0.0f;
  std::vector<TokenLogprob> top;
};

// A request that left the scheduler.
struct Completion {
  using Clock = std::chrono::steady_clock;
  std::string id;
  std::vector<std::int32_t> tokens;  // the generated tokens (a stop token included)
  std::string text;                  // their text (with a tokenizer), a stop string excluded
  std::vector<TokenLogprobs> logprobs;  // per token, when the request asked for logprobs
  FinishReason finish = FinishReason::none;
  std::string error;  // why the request failed (finish nan), empty otherwise
  std::int64_t prompt_tokens = 0;
  Clock::time_point submitted, first_token, finished;  // first_token: == finished if none

  // Time to first token (from submission, so queueing counts) and time per output token
  // after the first (0 for fewer than two tokens), in milliseconds.
  double ttft_ms() const { return std::chrono::duration<double, std::milli>(first_token - submitted).count(); }
  double tpot_ms() const {
    if (tokens.size() < 2) return 0.0;
    return std::chrono::duration<double, std::milli>(finished - first_token).count() /
           static_cast<double>(tokens.size() - 1);
  }
};

// What a request streams: one event per generated token, in order.
struct TokenEvent {
  std::string_view id;
  std::int64_t index = 0;  // among the request's generated tokens (0: the prefill's)
  std::int32_t token = 0;
  float log_prob = 0.0f;
  std::span<const TokenLogprob> top_logprobs;  // the request's `logprobs` most likely tokens
  std::string_view text;  // text this token releases (may be empty: held back, or a stop)
  bool last = false;      // the request finishes with this token
};

struct RequestCallbacks {
  std::function<void(const TokenEvent&)> on_token{};   // each generated token
  std::function<void(const Completion&)> on_finish{};  // once, when the request leaves
};

struct SchedulerOptions {
  // Prompt tokens prefilled per step while other requests decode (at least one chunk of the
  // engine's max_prefill_length runs); 0: one chunk.
  std::int64_t prefill_tokens_per_step = 0;
};

template <EngineModel Model>
class Scheduler {
 public:
  using Clock = Completion::Clock;

  // Keeps references to none: the engine is copied (it holds no mutable state), params and
  // the tokenizer are shared. Without a tokenizer, requests carry token ids only (no text,
  // no stop strings).
  Scheduler(const Engine<Model>& engine, State params, std::shared_ptr<const text::Tokenizer> tokenizer = nullptr,
            SchedulerOptions options = {})
      : engine_(engine), params_(std::move(params)), tokenizer_(std::move(tokenizer)), options_(options),
        state_(engine_.init_decode_state()), slots_(static_cast<std::size_t>(engine_.num_slots())) {
    if (options_.prefill_tokens_per_step < 0)
      throw InvalidArgument("SchedulerOptions::prefill_tokens_per_step " +
                            std::to_string(options_.prefill_tokens_per_step) + " < 0");
  }

  // Everything submit would reject about a request, checked without changing anything: a
  // text prompt is encoded (so `request.prompt` is filled in), then the engine checks it
  // (Engine::check_request). Throws InvalidArgument. Safe to call from any thread.
  void prepare(Request& request) const {
    if (request.prompt_text) {
      if (!request.prompt.empty()) throw InvalidArgument("a request has both prompt ids and a text prompt");
      request.prompt = require_tokenizer("a text prompt").encode(*request.prompt_text);
      request.prompt_text.reset();
      if (request.prompt.empty()) throw InvalidArgument("the prompt's text encodes to no tokens");
    }
    if (!request.stop_strings.empty()) (void)require_tokenizer("stop strings");
    for (const std::string& s : request.stop_strings)
      if (s.empty()) throw InvalidArgument("a stop string is empty");
    if (request.logprobs && (*request.logprobs < 0 || *request.logprobs > kMaxTopLogprobs))
      throw InvalidArgument("logprobs " + std::to_string(*request.logprobs) + " is outside [0, " +
                            std::to_string(kMaxTopLogprobs) + "]");
    engine_.check_request(request.prompt, request.sampling, request.stop);
  }

  // Queues a request (prepared first: a bad request throws InvalidArgument and nothing is
  // queued).
  void submit(std::string id, Request request, RequestCallbacks callbacks = {}) {
    prepare(request);
    enqueue(std::move(id), std::move(request), std::move(callbacks));
  }
  // Queues a request that prepare() has already accepted (ServingLoop checks requests on the
  // submitting thread); does not throw but for memory.
  void enqueue(std::string id, Request request, RequestCallbacks callbacks = {}) {
    waiting_.push_back(Running{});
    Running& r = waiting_.back();
    r.request = std::move(request);
    r.callbacks = std::move(callbacks);
    r.c.id = std::move(id);
    r.c.submitted = Clock::now();
    r.c.prompt_tokens = static_cast<std::int64_t>(r.request.prompt.size());
  }

  // Ends the request named `id`, waiting or running; its slot is free for the next step.
  // Its Completion (FinishReason::cancelled, with the tokens and text it had) is passed to
  // on_finish now and returned by the next step(). False if no such request is queued or
  // running.
  bool cancel(std::string_view id) {
    for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
      if (it->c.id == id) {
        Running r = std::move(*it);
        waiting_.erase(it);
        const Clock::time_point now = Clock::now();
        r.c.first_token = now;
        complete(std::move(r), FinishReason::cancelled, now, cancelled_);
        return true;
      }
    for (std::size_t slot = 0; slot < slots_.size(); ++slot)
      if (slots_[slot] && slots_[slot]->c.id == id) {
        finish(slot, FinishReason::cancelled, Clock::now(), cancelled_);
        return true;
      }
    return false;
  }

  // Cancels every request, waiting or running (in that order).
  void cancel_all() {
    while (!waiting_.empty()) cancel(std::string(waiting_.front().c.id));
    for (std::size_t slot = 0; slot < slots_.size(); ++slot)
      if (slots_[slot]) finish(slot, FinishReason::cancelled, Clock::now(), cancelled_);
  }

  bool idle() const { return waiting_.empty() && num_running() == 0 && cancelled_.empty(); }
  std::size_t num_waiting() const { return waiting_.size(); }
  // Requests holding a slot (prefilling or decoding).
  std::size_t num_running() const {
    std::size_t n = 0;
    for (const auto& r : slots_) n += r.has_value();
    return n;
  }
  // Tokens generated so far by the running requests.
  std::int64_t tokens_in_flight() const {
    std::int64_t n = 0;
    for (const auto& r : slots_)
      if (r) n += static_cast<std::int64_t>(r->c.tokens.size());
    return n;
  }
  const Engine<Model>& engine() const { return engine_; }
  const std::shared_ptr<const text::Tokenizer>& tokenizer() const { return tokenizer_; }

  // One round: free slots take the next waiting requests; prefill chunks run (all of them
  // while nothing decodes, else about prefill_tokens_per_step tokens' worth); then one
  // generate step advances every decoding request. Returns the requests that finished in
  // this round (and those cancelled since the last), in the order they finished. An
  // exception (an allocation failure) loses nothing: the chunk being prefilled is retried by
  // the next step, and the engine's state is unchanged by the call that threw (Engine calls
  // are all-or-nothing).
  std::vector<Completion> step() {
    std::vector<Completion> done = std::move(cancelled_);
    cancelled_.clear();
    run_prefills(done);
    if (state_.num_active() > 0) {
      auto [next, result] = engine_.generate(params_, std::move(state_));
      state_ = std::move(next);
      const Clock::time_point now = Clock::now();
      const std::int64_t V = engine_.vocab_size();
      for (std::size_t slot = 0; slot < slots_.size(); ++slot) {
        if (!slots_[slot] || !slots_[slot]->decoding) continue;
        const SlotResult& r = result.at(static_cast<std::int64_t>(slot));
        if (r.valid) {
          const float* row = result.logits.template data<float>() + static_cast<std::int64_t>(slot) * V;
          emit(slot, r.token, r.log_prob, row, r.done ? r.finish : FinishReason::none, now, done);
        } else if (r.done) {
          finish(slot, r.finish, now, done);
        }
      }
    }
    return done;
  }

 private:
  struct Running {
    Request request;
    RequestCallbacks callbacks;
    Completion c;
    std::optional<Prefix> prefix;  // while prefilling: the prompt's chunks done so far
    std::int64_t prefilled = 0;    // prompt tokens in `prefix`
    bool decoding = false;         // inserted into the engine's decode state
    std::uint64_t order = 0;       // admission order: prefills run first come, first served
    std::unique_ptr<text::IncrementalDecoder> decoder;
    std::string held;  // decoded text not yet released: it may begin a stop string
  };

  const text::Tokenizer& require_tokenizer(const char* what) const {
    if (!tokenizer_) throw InvalidArgument(std::string(what) + " needs a tokenizer, and the scheduler has none");
    return *tokenizer_;
  }

  bool any_decoding() const {
    for (const auto& r : slots_)
      if (r && r->decoding) return true;
    return false;
  }

  // The prefilling request admitted first, or none.
  std::optional<std::size_t> next_prefill() const {
    std::optional<std::size_t> best;
    for (std::size_t slot = 0; slot < slots_.size(); ++slot)
      if (slots_[slot] && !slots_[slot]->decoding && (!best || slots_[slot]->order < slots_[*best]->order))
        best = slot;
    return best;
  }

  void run_prefills(std::vector<Completion>& done) {
    const std::int64_t chunk = engine_.options().max_prefill_length;
    const std::int64_t budget = std::max(options_.prefill_tokens_per_step, chunk);
    std::int64_t used = 0;
    for (;;) {
      for (std::size_t slot = 0; slot < slots_.size() && !waiting_.empty(); ++slot)
        if (!slots_[slot]) {
          slots_[slot] = std::move(waiting_.front());
          waiting_.pop_front();
          slots_[slot]->order = next_order_++;
        }
      const std::optional<std::size_t> slot = next_prefill();
      if (!slot) return;
      Running& r = *slots_[*slot];
      const std::int64_t len = std::min(chunk, r.c.prompt_tokens - r.prefilled);
      if (used > 0 && used + len > budget && any_decoding()) return;
      prefill_chunk(*slot, len, done);
      used += len;
    }
  }

  // Prefills the next `len` prompt tokens of the request in `slot`; after its last chunk the
  // request is inserted and its first token emitted. One that fails at prefill (NaN logits)
  // completes at once with FinishReason::nan and the slot is free again.
  void prefill_chunk(std::size_t slot, std::int64_t len, std::vector<Completion>& done) {
    Running& r = *slots_[slot];
    if (len > 0) {  // 0: prefilled, the insert threw (memory) and is retried
      const auto from = r.request.prompt.begin() + r.prefilled;
      Tensor tokens = Tensor::from_vector(std::vector<std::int32_t>(from, from + len), {len});
      const RngKey key = key_from_seed(r.request.seed);
      try {
        r.prefix = r.prefix ? engine_.prefill(params_, std::move(*r.prefix), tokens, len, r.request.sampling, key,
                                              r.request.stop)
                            : engine_.prefill(params_, tokens, len, r.request.sampling, key, r.request.stop);
      } catch (const NumericalError& e) {
        r.c.error = e.what();
        finish(slot, FinishReason::nan, Clock::now(), done);
        return;
      }
      r.prefilled += len;
      if (r.prefilled < r.c.prompt_tokens) return;
    }
    state_ = engine_.insert(*r.prefix, std::move(state_), static_cast<std::int64_t>(slot));
    const Prefix prefix = std::move(*r.prefix);
    r.prefix.reset();
    r.decoding = true;
    if (tokenizer_) r.decoder = std::make_unique<text::IncrementalDecoder>(*tokenizer_, /*skip_special_tokens=*/true);
    const SlotState& s = state_.slots[slot];
    const Clock::time_point now = Clock::now();
    r.c.first_token = now;
    emit(slot, prefix.token, prefix.log_prob, prefix.last_logits.template data<float>(),
         s.done ? s.finish : FinishReason::none, now, done);
  }

  // Records a generated token, streams it, and finishes the request when `why` says it ends
  // here or its text reached a stop string.
  void emit(std::size_t slot, std::int32_t token, float log_prob, const float* logits, FinishReason why,
            Clock::time_point now, std::vector<Completion>& done) {
    Running& r = *slots_[slot];
    r.c.tokens.push_back(token);
    std::vector<TokenLogprob> top;
    if (r.request.logprobs) {
      top = top_logprobs(logits, engine_.vocab_size(), *r.request.logprobs);
      r.c.logprobs.push_back(TokenLogprobs{token, log_prob, top});
    }
    std::string released;
    if (r.decoder) {
      if (why != FinishReason::stop_token) r.held += r.decoder->push(token);
      if (std::optional<std::size_t> at = find_stop(r.held, r.request.stop_strings)) {
        r.held.resize(*at);
        why = FinishReason::stop_string;
      }
      if (why != FinishReason::none) {
        if (why != FinishReason::stop_string) r.held += r.decoder->flush();
        released = std::move(r.held);
        r.held.clear();
      } else {
        const std::size_t keep = held_back(r.held, r.request.stop_strings);
        released = r.held.substr(0, r.held.size() - keep);
        r.held.erase(0, r.held.size() - keep);
      }
      r.c.text += released;
    }
    if (r.callbacks.on_token) {
      TokenEvent e;
      e.id = r.c.id;
      e.index = static_cast<std::int64_t>(r.c.tokens.size()) - 1;
      e.token = token;
      e.log_prob = log_prob;
      e.top_logprobs = top;
      e.text = released;
      e.last = why != FinishReason::none;
      r.callbacks.on_token(e);
    }
    if (why != FinishReason::none) finish(slot, why, now, done);
  }

  // Frees the slot of a request that ends and completes it.
  void finish(std::size_t slot, FinishReason why, Clock::time_point now, std::vector<Completion>& done) {
    Running r = std::move(*slots_[slot]);
    slots_[slot].reset();
    if (r.decoding) state_ = engine_.release(std::move(state_), static_cast<std::int64_t>(slot));
    if (r.c.tokens.empty()) r.c.first_token = now;
    complete(std::move(r), why, now, done);
  }

  static void complete(Running&& r, FinishReason why, Clock::time_point now, std::vector<Completion>& done) {
    r.c.finish = why;
    r.c.finished = now;
    if (why == FinishReason::nan && r.c.error.empty())
      r.c.error = "the logits became NaN (or all -inf) after " + std::to_string(r.c.tokens.size()) + " tokens";
    if (r.callbacks.on_finish) r.callbacks.on_finish(r.c);
    done.push_back(std::move(r.c));
  }

  // Where the first stop string begins in `text` (the earliest occurrence of any).
  static std::optional<std::size_t> find_stop(std::string_view text, const std::vector<std::string>& stops) {
    std::optional<std::size_t> at;
    for (const std::string& s : stops)
      if (const std::size_t p = text.find(s); p != std::string_view::npos && (!at || p < *at)) at = p;
    return at;
  }

  // Bytes at the end of `text` that begin some stop string (the longest such suffix): they
  // must wait for the next token to tell whether the stop string follows.
  static std::size_t held_back(std::string_view text, const std::vector<std::string>& stops) {
    std::size_t keep = 0;
    for (const std::string& s : stops)
      for (std::size_t n = std::min(s.size() - 1, text.size()); n > keep; --n)
        if (text.substr(text.size() - n) == std::string_view(s).substr(0, n)) {
          keep = n;
          break;
        }
    return keep;
  }

  // The n most likely tokens of a row of logits with their log-probabilities (most likely
  // first; ties to the lower id).
  static std::vector<TokenLogprob> top_logprobs(const float* logits, std::int64_t vocab, std::int32_t n) {
    std::vector<TokenLogprob> top;
    if (n <= 0) return top;
    float max = -std::numeric_limits<float>::infinity();
    for (std::int64_t v = 0; v < vocab; ++v) max = std::max(max, logits[v]);
    double sum = 0.0;
    for (std::int64_t v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(logits[v]) - max);
    const double log_norm = max + std::log(sum);
    const auto better = [](const TokenLogprob& a, const TokenLogprob& b) {
      return a.log_prob > b.log_prob || (a.log_prob == b.log_prob && a.token < b.token);
    };
    top.reserve(static_cast<std::size_t>(n) + 1);
    for (std::int64_t v = 0; v < vocab; ++v) {
      const TokenLogprob t{static_cast<std::int32_t>(v), logits[v]};
      if (static_cast<std::int32_t>(top.size()) == n && !better(t, top.back())) continue;
      top.insert(std::upper_bound(top.begin(), top.end(), t, better), t);
      if (static_cast<std::int32_t>(top.size()) > n) top.pop_back();
    }
    for (TokenLogprob& t : top) t.log_prob = static_cast<float>(t.log_prob - log_norm);
    return top;
  }

  Engine<Model> engine_;
  State params_;
  std::shared_ptr<const text::Tokenizer> tokenizer_;
  SchedulerOptions options_;
  DecodeState state_;
  std::deque<Running> waiting_;
  std::vector<std::optional<Running>> slots_;  // per slot: the request it runs
  std::vector<Completion> cancelled_;          // returned by the next step()
  std::uint64_t next_order_ = 0;
};

}  // namespace nnx
