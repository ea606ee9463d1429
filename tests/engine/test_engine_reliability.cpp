// The engine's promises under failure: calls are all-or-nothing, a request whose logits turn
// NaN finishes with FinishReason::nan while the others go on bit for bit, every finished slot
// is reported until released, and request lines are parsed strictly.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

#include "engine_test_util.hpp"

namespace {

using Ids = std::vector<std::int32_t>;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

using engine_test::ids_tensor;

using engine_test::small_llama;

using LlamaEngine = nnx::Engine<nnx::Llama>;

nnx::Prefix prefill(const LlamaEngine& e, const nnx::State& params, const Ids& prompt, nnx::StopCondition stop = {}) {
  return e.prefill(params, ids_tensor(prompt), static_cast<std::int64_t>(prompt.size()), {}, nnx::key_from_seed(0),
                   stop);
}

// A request's greedy tokens alone in a 1-slot engine.
Ids alone(const nnx::State& params, const Ids& prompt, std::int64_t max_new_tokens) {
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  nnx::Prefix p = prefill(e, params, prompt, {max_new_tokens, {}});
  Ids out{p.token};
  nnx::DecodeState state = e.insert(p, e.init_decode_state(), 0);
  while (!state.slots[0].done) {
    auto [next, r] = e.generate(params, std::move(state));
    state = std::move(next);
    if (r.at(0).valid) out.push_back(r.at(0).token);
  }
  return out;
}

// params with token `id`'s embedding row set to NaN: any request that feeds `id` diverges.
nnx::State poison_token(const nnx::State& params, std::int32_t id) {
  nnx::State out = params.map([](const nnx::Tensor& t) { return t.clone(); });
  out.at(nnx::Path::parse("embed_tokens/embedding")).tensor().select(id).fill(kNaN);
  return out;
}

// Two requests on clean params: A's first generated token X does not occur in A's prompt, and
// B never sees X (prompt or tokens), so with X poisoned A diverges at its first generate step
// and B is untouched.
struct Scenario {
  nnx::State clean, poisoned;
  Ids prompt_a, prompt_b, tokens_b;
  std::int32_t x = 0;
};

Scenario make_scenario() {
  Scenario s;
  s.clean = LlamaEngine(small_llama(), {.max_target_length = 32}).init_params(11);
  s.prompt_a = {5, 17, 42};
  const Ids a = alone(s.clean, s.prompt_a, 6);
  s.x = a[0];
  REQUIRE(std::find(s.prompt_a.begin(), s.prompt_a.end(), s.x) == s.prompt_a.end());
  for (std::int32_t first = 1; first < 80 && s.tokens_b.empty(); ++first) {
    const Ids prompt{first, first + 3, first + 7};
    const Ids b = alone(s.clean, prompt, 6);
    const auto has_x = [&](const Ids& v) { return std::find(v.begin(), v.end(), s.x) != v.end(); };
    if (!has_x(prompt) && !has_x(b)) {
      s.prompt_b = prompt;
      s.tokens_b = b;
    }
  }
  REQUIRE_FALSE(s.tokens_b.empty());
  s.poisoned = poison_token(s.clean, s.x);
  return s;
}

}  // namespace

TEST_CASE("a slot that finishes at insert is reported done by generate until released", "[engine][stop]") {
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 24, .slots = 2});
  const nnx::State params = e.init_params(3);
  nnx::DecodeState state = e.insert(prefill(e, params, {1, 2, 3}, {1, {}}), e.init_decode_state(), 1);
  REQUIRE(state.slots[1].done);

  // No slot is active, yet the finished one is in the result, until it is released.
  for (int step = 0; step < 2; ++step) {
    auto [next, r] = e.generate(params, std::move(state));
    state = std::move(next);
    CHECK_FALSE(r.at(0).done);
    CHECK_FALSE(r.at(1).valid);
    CHECK(r.at(1).done);
    CHECK(r.at(1).finish == nnx::FinishReason::max_new_tokens);
    CHECK(r.at(1).length == 1);
  }
  // Beside an active slot too.
  state = e.insert(prefill(e, params, {4, 5}), std::move(state), 0);
  auto [next, r] = e.generate(params, std::move(state));
  CHECK(r.at(0).valid);
  CHECK(r.at(1).done);
  state = e.release(std::move(next), 1);
  CHECK_FALSE(e.generate(params, std::move(state)).result.at(1).done);
}

TEST_CASE("a request whose logits turn NaN mid-decode finishes with nan; its neighbour is untouched",
          "[engine][nan]") {
  const Scenario s = make_scenario();
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 2});
  nnx::Prefix a = prefill(e, s.poisoned, s.prompt_a, {6, {}});
  REQUIRE(a.token == s.x);  // A's prompt avoids X, so its prefill is clean
  nnx::DecodeState state = e.insert(a, e.init_decode_state(), 0);
  state = e.insert(prefill(e, s.poisoned, s.prompt_b, {6, {}}), std::move(state), 1);

  Ids b{state.slots[1].last_token};
  bool a_reported = false;
  while (!state.slots[1].done) {
    auto [next, r] = e.generate(s.poisoned, std::move(state));  // never throws for A's NaN
    state = std::move(next);
    if (r.at(1).valid) b.push_back(r.at(1).token);
    if (r.at(0).done && !a_reported) {
      a_reported = true;
      CHECK_FALSE(r.at(0).valid);
      CHECK(r.at(0).finish == nnx::FinishReason::nan);
      CHECK(r.at(0).length == 1);  // only the first token, drawn at prefill
    }
  }
  CHECK(a_reported);
  CHECK(state.slots[0].finish == nnx::FinishReason::nan);
  CHECK(b == s.tokens_b);
  CHECK(nnx::finish_reason_name(nnx::FinishReason::nan) == "nan");
}

TEST_CASE("a prompt whose logits are NaN fails at prefill with NumericalError", "[engine][nan]") {
  const Scenario s = make_scenario();
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  try {
    (void)prefill(e, s.poisoned, {1, s.x, 2});
    FAIL("expected nnx::NumericalError");
  } catch (const nnx::NumericalError& err) {
    CHECK(std::string(err.what()).find("NaN") != std::string::npos);
  }
}

TEST_CASE("a donated prefix survives a failed extension and extends as an untouched one", "[engine][errors]") {
  const Scenario s = make_scenario();
  const LlamaEngine e(small_llama(), {.max_prefill_length = 4, .max_target_length = 32, .slots = 1});
  nnx::Prefix donated = prefill(e, s.poisoned, s.prompt_b);
  const nnx::Prefix untouched = prefill(e, s.poisoned, s.prompt_b);
  const auto extend = [&](nnx::Prefix&& p, const Ids& more) {
    return e.prefill(s.poisoned, std::move(p), ids_tensor(more), static_cast<std::int64_t>(more.size()), {},
                     nnx::key_from_seed(1));
  };
  CHECK_THROWS_AS(extend(std::move(donated), {3, 200}), nnx::InvalidArgument);  // token id 200 >= vocab
  CHECK_THROWS_AS(extend(std::move(donated), Ids(40, 1)), nnx::InvalidArgument);  // does not fit
  CHECK_THROWS_AS(extend(std::move(donated), {3, s.x, 4, 5, 6}), nnx::NumericalError);  // ran, then diverged
  REQUIRE(donated.cache.size() > 0);
  CHECK(donated.next_position == static_cast<std::int64_t>(s.prompt_b.size()));

  const nnx::Prefix a = extend(std::move(donated), {7, 8, 9});
  const nnx::Prefix b = extend(nnx::Prefix(untouched), {7, 8, 9});
  CHECK(a.token == b.token);
  CHECK(std::memcmp(a.last_logits.raw_data(), b.last_logits.raw_data(), a.last_logits.nbytes()) == 0);
}

TEST_CASE("Scheduler: a diverging request finishes with nan, the others get their tokens alone",
          "[engine][scheduler][nan]") {
  const Scenario s = make_scenario();
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 2});
  nnx::Scheduler<nnx::Llama> scheduler(e, s.poisoned);
  const auto request = [](Ids prompt) {
    nnx::Request r;
    r.prompt = std::move(prompt);
    r.stop.max_new_tokens = 6;
    return r;
  };
  scheduler.submit("a", request(s.prompt_a));          // diverges at its first generate step
  scheduler.submit("x", request({2, s.x, 3}));         // diverges at prefill
  scheduler.submit("b", request(s.prompt_b));          // unaffected
  CHECK_THROWS_AS(scheduler.submit("bad", request({1, 89})), nnx::InvalidArgument);  // nothing queued
  CHECK(scheduler.num_waiting() == 3);

  std::map<std::string, nnx::Completion> done;
  for (int round = 0; !scheduler.idle(); ++round) {
    REQUIRE(round < 50);
    for (nnx::Completion& c : scheduler.step()) done.emplace(c.id, std::move(c));
  }
  REQUIRE(done.size() == 3);
  CHECK(done.at("a").finish == nnx::FinishReason::nan);
  CHECK(done.at("a").tokens == Ids{s.x});
  CHECK(done.at("a").error.find("NaN") != std::string::npos);
  CHECK(done.at("x").finish == nnx::FinishReason::nan);
  CHECK(done.at("x").tokens.empty());
  CHECK(done.at("b").finish == nnx::FinishReason::max_new_tokens);
  CHECK(done.at("b").tokens == s.tokens_b);
}

TEST_CASE("Engine::check_request rejects what prefill rejects, without running the model", "[engine][errors]") {
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 20, .slots = 1});
  const auto rejects = [&](const Ids& prompt, nnx::SamplingParams sampling, nnx::StopCondition stop,
                           const std::string& part) {
    try {
      e.check_request(prompt, sampling, stop);
      FAIL("expected InvalidArgument mentioning " << part);
    } catch (const nnx::InvalidArgument& err) {
      INFO(err.what());
      CHECK(std::string(err.what()).find(part) != std::string::npos);
    }
  };
  rejects({1, 89}, {}, {}, "token id 89");
  rejects(Ids(20, 1), {}, {}, "20 tokens");
  rejects({}, {}, {}, "empty prompt");
  rejects({1}, {.temperature = -1}, {}, "temperature");
  rejects({1, 2}, {}, {19, {}}, "max_new_tokens 19");
  rejects({1, 2}, {}, {0, {}}, "max_new_tokens 0");
  rejects({1, 2}, {}, {std::nullopt, {89}}, "stop id 89");
  CHECK_NOTHROW(e.check_request(Ids{1, 2}, {}, {18, {88}}));
}

TEST_CASE("parse_request_line: strict JSON, typed fields, reasons that name the key", "[engine][request]") {
  const nnx::Request r = nnx::parse_request_line(
      R"({"id": "q", "prompt_ids": [1, 2], "max_new_tokens": 3, "temperature": 0.5, "top_k": 4,)"
      R"( "top_p": 0.9, "seed": 18446744073709551615, "stop_ids": [7], "extra": 1})");
  CHECK(r.id == std::optional<std::string>("q"));
  CHECK(r.prompt == Ids{1, 2});
  CHECK(r.stop.max_new_tokens == std::optional<std::int64_t>(3));
  CHECK(r.sampling.temperature == 0.5);
  CHECK(r.sampling.top_k == 4);
  CHECK(r.sampling.top_p == 0.9);
  CHECK(r.seed == 18446744073709551615ull);
  CHECK(r.stop.stop_ids == Ids{7});
  std::vector<std::string> unknown;
  (void)nnx::parse_request_line(R"({"prompt_ids": [1], "foo": null, "bar": 2})", &unknown);
  CHECK(unknown == std::vector<std::string>{"bar"});
  CHECK_FALSE(nnx::parse_request_line(R"({"prompt_ids": [1], "id": null})").id.has_value());

  const auto rejects = [](std::string_view line, const std::string& part) {
    try {
      (void)nnx::parse_request_line(line);
      FAIL("expected InvalidArgument mentioning " << part << " for " << line);
    } catch (const nnx::InvalidArgument& err) {
      INFO(err.what());
      CHECK(std::string(err.what()).find(part) != std::string::npos);
    }
  };
  rejects(R"({"prompt_ids": [1], "temperature": 1e400})", "not valid JSON");  // nlohmann's out_of_range
  rejects(R"({"prompt_ids": [1], "seed": 1)" + std::string(400, '0') + "}", "not valid JSON");
  rejects(std::string(R"({"prompt_ids": [1]})") + '\0' + "garbage", "NUL byte at offset 19");
  rejects(R"({"prompt_ids": [1], "prompt_ids": [2]})", "\"prompt_ids\" twice");
  rejects(R"({"prompt_ids": [1], "x": {"a": 1, "a": 2}})", "\"a\" twice");
  rejects(R"([1, 2])", "expected a JSON object");
  rejects(R"({"max_new_tokens": 2})", "missing \"prompt_ids\"");
  rejects(R"({"prompt_ids": []})", "non-empty array");
  rejects(R"({"prompt_ids": [1, -2]})", "prompt_ids[1]");
  rejects(R"({"prompt_ids": [1, 2147483648]})", "prompt_ids[1]");
  rejects(R"({"prompt_ids": [1.5]})", "prompt_ids[0]");
  rejects(R"({"prompt_ids": [1], "max_new_tokens": 0})", "\"max_new_tokens\" must be an integer >= 1");
  rejects(R"({"prompt_ids": [1], "temperature": "hot"})", "\"temperature\" must be a number");
  rejects(R"({"prompt_ids": [1], "temperature": -0.5})", "temperature");
  rejects(R"({"prompt_ids": [1], "top_p": 0})", "top_p");
  rejects(R"({"prompt_ids": [1], "top_k": -1})", "top_k");
  rejects(R"({"prompt_ids": [1], "seed": -1})", "\"seed\"");
  rejects(R"({"prompt_ids": [1], "stop_ids": 3})", "\"stop_ids\" must be an array");
  rejects(R"({"prompt_ids": [1], "id": 3})", "\"id\" must be a string");
}

TEST_CASE("a subnormal temperature is served greedily, not as NaN weights", "[engine][sampling]") {
  const nnx::SamplingParams tiny{.temperature = 5e-324};
  CHECK_NOTHROW(tiny.validate());
  CHECK(tiny.is_greedy());
  CHECK_FALSE(nnx::SamplingParams{.temperature = 1e-300}.is_greedy());  // 1/t = 1e300 is finite
  std::vector<float> logits(301);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = std::sin(static_cast<float>(i) * 0.37f) * 3.0f;
  const auto best = std::max_element(logits.begin(), logits.end()) - logits.begin();
  for (std::uint64_t seed = 0; seed < 20; ++seed) {
    for (const double t : {5e-324, 1e-310, 1e-300}) {
      const nnx::SampledToken tok = nnx::sample_token(logits.data(), static_cast<std::int64_t>(logits.size()),
                                                      {.temperature = t, .top_k = 0, .top_p = 0.9},
                                                      nnx::key_from_seed(seed));
      CHECK(tok.token == best);
      CHECK(std::isfinite(tok.log_prob));
    }
  }
}

TEST_CASE("generate and prefill with the wrong parameters throw and leave donated states as they were",
          "[engine][errors]") {
  const LlamaEngine e(small_llama(), {.max_prefill_length = 8, .max_target_length = 24, .slots = 2});
  const nnx::State params = e.init_params(5);
  nnx::LlamaConfig other_cfg = small_llama();
  other_cfg.intermediate_size = 48;
  const nnx::State wrong = LlamaEngine(other_cfg, {.max_target_length = 24}).init_params(5);

  nnx::DecodeState state = e.insert(prefill(e, params, {1, 2, 3}), e.init_decode_state(), 0);
  const nnx::DecodeState untouched = e.insert(prefill(e, params, {1, 2, 3}), e.init_decode_state(), 0);
  const nnx::State snapshot = state.cache.map([](const nnx::Tensor& t) { return t.clone(); });
  CHECK_THROWS_AS(e.generate(wrong, std::move(state)), nnx::ShapeError);
  REQUIRE(state.cache.size() == snapshot.size());
  CHECK(state.cache == snapshot);
  CHECK(state.slots[0].next_position == 3);

  nnx::Prefix p = prefill(e, params, {4, 5});
  CHECK_THROWS_AS(e.prefill(wrong, std::move(p), ids_tensor({6}), 1, {}, nnx::key_from_seed(0)), nnx::ShapeError);
  CHECK(p.cache.size() == snapshot.size());
  CHECK(p.next_position == 2);

  const auto a = e.generate(params, std::move(state));
  const auto b = e.generate(params, untouched);
  CHECK(a.result.at(0).token == b.result.at(0).token);
  CHECK(std::memcmp(a.result.logits.raw_data(), b.result.logits.raw_data(), a.result.logits.nbytes()) == 0);
}
