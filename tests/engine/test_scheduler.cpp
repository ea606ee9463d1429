// The Scheduler's serving features: chunked prefill between decode steps, streaming callbacks,
// text and stop strings, cancellation, logprobs and latency figures. Every token stream is
// checked against the engine's for the request alone (engine_test::greedy, or a sampled
// reference run through Engine calls), and logprobs against a double-precision log-softmax.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/text.hpp>

#include "../support/byte_tokenizer.hpp"
#include "engine_test_util.hpp"

namespace {

const nnx::Gpt2Config kTextGpt2 = engine_test::text_gpt2(96);

std::shared_ptr<const nnx::text::Tokenizer> byte_tokenizer() {
  return std::make_shared<const nnx::text::Tokenizer>(
      nnx::text::Tokenizer::from_tokenizer_json(test_support::byte_tokenizer_json(), "byte_tokenizer"));
}

std::vector<std::int32_t> ids(std::int32_t n, std::int32_t seed) {
  std::vector<std::int32_t> v;
  for (std::int32_t i = 0; i < n; ++i) v.push_back((seed * 31 + i * 7) % 250);
  return v;
}

nnx::Request greedy_request(std::vector<std::int32_t> prompt, std::int64_t max_new) {
  nnx::Request r;
  r.prompt = std::move(prompt);
  r.stop.max_new_tokens = max_new;
  return r;
}

std::map<std::string, nnx::Completion> run_all(nnx::Scheduler<nnx::Gpt2>& s) {
  std::map<std::string, nnx::Completion> done;
  while (!s.idle())
    for (nnx::Completion& c : s.step()) done.emplace(c.id, std::move(c));
  return done;
}

}  // namespace

TEST_CASE("Scheduler: chunked prefill keeps decoding going and gives the tokens of the request alone",
          "[engine][scheduler]") {
  const nnx::Engine<nnx::Gpt2> engine(kTextGpt2, {.max_prefill_length = 8, .max_target_length = 96, .slots = 3});
  const nnx::State params = engine.init_params(3);
  nnx::Scheduler<nnx::Gpt2> s(engine, params);
  const auto short_prompt = ids(5, 1), long_prompt = ids(61, 2);  // 61 tokens: 8 chunks
  std::int64_t a_tokens = 0, step = 0, b_first_token_step = 0;
  s.submit("a", greedy_request(short_prompt, 30), {.on_token = [&](const nnx::TokenEvent& e) { a_tokens = e.index + 1; }});
  (void)s.step();  // a: prefilled, and one generate step
  CHECK(a_tokens == 2);
  s.submit("b", greedy_request(long_prompt, 5), {.on_token = [&](const nnx::TokenEvent& e) {
             if (e.index == 0) b_first_token_step = step;
           }});
  std::map<std::string, nnx::Completion> done;
  while (!s.idle()) {
    ++step;
    const std::int64_t before = a_tokens;
    const bool a_running = done.count("a") == 0;
    for (nnx::Completion& c : s.step()) done.emplace(c.id, std::move(c));
    // While b is prefilled chunk by chunk, a still gets its token every step.
    if (a_running && done.count("a") == 0) CHECK(a_tokens == before + 1);
  }
  CHECK(b_first_token_step == 8);  // one chunk of 8 tokens per step while a decodes
  CHECK(done.at("a").tokens == engine_test::greedy(engine, params, short_prompt, 30));
  CHECK(done.at("b").tokens == engine_test::greedy(engine, params, long_prompt, 5));

  SECTION("with nothing decoding, a step prefills whole prompts") {
    nnx::Scheduler<nnx::Gpt2> idle(engine, params);
    idle.submit("b", greedy_request(long_prompt, 3));
    (void)idle.step();
    CHECK(idle.tokens_in_flight() == 2);  // prefilled (8 chunks) and one generate step
  }
}

TEST_CASE("Scheduler: streamed text equals the completion's, stop strings end it before them",
          "[engine][scheduler][text]") {
  const nnx::Engine<nnx::Gpt2> engine(kTextGpt2, {.max_prefill_length = 16, .max_target_length = 96, .slots = 2});
  const nnx::State params = engine.init_params(11);
  const auto tok = byte_tokenizer();

  nnx::Request r;
  r.prompt_text = "Hello there, tell me";
  r.stop.max_new_tokens = 40;
  r.sampling.temperature = 1.0;
  r.seed = 5;

  // Unconstrained first: the text to cut.
  nnx::Scheduler<nnx::Gpt2> s(engine, params, tok);
  std::string streamed;
  std::int64_t events = 0, finishes = 0;
  s.submit("free", r, {.on_token = [&](const nnx::TokenEvent& e) {
                         CHECK(e.index == events++);
                         streamed += e.text;
                       },
                       .on_finish = [&](const nnx::Completion&) { ++finishes; }});
  auto done = run_all(s);
  const nnx::Completion free = done.at("free");
  CHECK(finishes == 1);
  CHECK(events == static_cast<std::int64_t>(free.tokens.size()));
  CHECK(streamed == free.text);
  std::vector<std::int32_t> special_free;
  for (std::int32_t t : free.tokens)
    if (!tok->is_special(t)) special_free.push_back(t);
  CHECK(free.text == tok->decode(special_free, /*skip_special_tokens=*/true));
  REQUIRE(free.text.size() >= 12);

  // A stop string from the middle of that text: the same tokens up to the one completing it,
  // and the text before it.
  const std::size_t at = free.text.size() / 2;
  const std::string stop = free.text.substr(at, 3);
  const std::size_t first = free.text.find(stop);
  r.stop_strings = {"never appears \x01", stop};
  std::string streamed_stop;
  s.submit("stop", r, {.on_token = [&](const nnx::TokenEvent& e) { streamed_stop += e.text; }});
  done = run_all(s);
  const nnx::Completion cut = done.at("stop");
  CHECK(cut.finish == nnx::FinishReason::stop_string);
  CHECK(cut.text == free.text.substr(0, first));
  CHECK(streamed_stop == cut.text);
  REQUIRE(cut.tokens.size() <= free.tokens.size());
  CHECK(std::equal(cut.tokens.begin(), cut.tokens.end(), free.tokens.begin()));
  // The last token completed the stop string; one token fewer did not.
  const std::string with = tok->decode(cut.tokens, true);
  const std::string without = tok->decode(std::span(cut.tokens).first(cut.tokens.size() - 1), true);
  CHECK(with.find(stop) != std::string::npos);
  CHECK(without.find(stop) == std::string::npos);

  SECTION("a stop token's text is not emitted") {
    nnx::Request g = r;
    g.stop_strings.clear();
    g.stop.stop_ids = {free.tokens[3]};
    s.submit("stop_id", g);
    done = run_all(s);
    const nnx::Completion& c = done.at("stop_id");
    CHECK(c.finish == nnx::FinishReason::stop_token);
    const std::vector<std::int32_t> before(c.tokens.begin(), c.tokens.end() - 1);
    CHECK(c.text == tok->decode(before, true));
  }
  SECTION("without a tokenizer, text prompts and stop strings are rejected") {
    nnx::Scheduler<nnx::Gpt2> plain(engine, params);
    CHECK_THROWS_WITH(plain.submit("x", r), Catch::Contains("needs a tokenizer"));
    CHECK(plain.idle());
  }
}

TEST_CASE("Scheduler: cancel frees the slot for the next request, waiting or running", "[engine][scheduler]") {
  const nnx::Engine<nnx::Gpt2> engine(kTextGpt2, {.max_prefill_length = 16, .max_target_length = 96, .slots = 1});
  const nnx::State params = engine.init_params(4);
  nnx::Scheduler<nnx::Gpt2> s(engine, params);
  std::vector<std::string> finished;
  const nnx::RequestCallbacks cb{.on_finish = [&](const nnx::Completion& c) { finished.push_back(c.id); }};
  s.submit("long", greedy_request(ids(6, 1), 60), cb);
  s.submit("queued", greedy_request(ids(6, 2), 4), cb);
  s.submit("next", greedy_request(ids(7, 3), 4), cb);
  (void)s.step();
  (void)s.step();
  CHECK(s.num_running() == 1);
  CHECK(s.cancel("queued"));
  CHECK(s.cancel("long"));
  CHECK_FALSE(s.cancel("long"));
  CHECK_FALSE(s.cancel("unknown"));
  CHECK(finished == std::vector<std::string>{"queued", "long"});
  CHECK(s.num_running() == 0);
  auto done = run_all(s);
  CHECK(done.at("long").finish == nnx::FinishReason::cancelled);
  CHECK(done.at("long").tokens.size() == 3);
  CHECK(done.at("queued").finish == nnx::FinishReason::cancelled);
  CHECK(done.at("queued").tokens.empty());
  CHECK(done.at("next").tokens == engine_test::greedy(engine, params, ids(7, 3), 4));
}

TEST_CASE("Scheduler: logprobs match a double-precision log-softmax of the engine's logits",
          "[engine][scheduler]") {
  const nnx::Engine<nnx::Gpt2> engine(kTextGpt2, {.max_prefill_length = 16, .max_target_length = 96, .slots = 2});
  const nnx::State params = engine.init_params(8);
  nnx::Scheduler<nnx::Gpt2> s(engine, params);
  nnx::Request r = greedy_request(ids(9, 4), 6);
  r.logprobs = 5;
  s.submit("lp", r);
  s.submit("other", greedy_request(ids(4, 5), 6));  // a neighbour must not change anything
  const nnx::Completion c = run_all(s).at("lp");
  REQUIRE(c.logprobs.size() == 6);

  // The reference: the engine alone, the logits of every position.
  const auto T = static_cast<std::int64_t>(r.prompt.size());
  nnx::Prefix p = engine.prefill(params, nnx::Tensor::from_vector(r.prompt, {T}), T, {}, {}, r.stop);
  std::vector<std::vector<float>> rows{std::vector<float>(p.last_logits.data<float>(),
                                                          p.last_logits.data<float>() + engine.vocab_size())};
  nnx::DecodeState state = engine.insert(p, engine.init_decode_state(), 0);
  while (state.num_active() > 0) {
    auto [next, res] = engine.generate(params, std::move(state));
    state = std::move(next);
    const float* row = res.logits.data<float>();
    rows.emplace_back(row, row + engine.vocab_size());
  }
  for (std::size_t i = 0; i < c.logprobs.size(); ++i) {
    const std::vector<float>& row = rows[i];
    const double max = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float x : row) sum += std::exp(x - max);
    std::vector<std::pair<double, std::int32_t>> ref;
    for (std::size_t v = 0; v < row.size(); ++v) ref.emplace_back(row[v] - max - std::log(sum), static_cast<std::int32_t>(v));
    std::sort(ref.begin(), ref.end(), [](auto a, auto b) { return a.first > b.first || (a.first == b.first && a.second < b.second); });
    const nnx::TokenLogprobs& got = c.logprobs[i];
    CHECK(got.token == c.tokens[i]);
    CHECK(got.token == ref[0].second);  // greedy
    CHECK(got.log_prob == Approx(ref[0].first).margin(1e-5));
    REQUIRE(got.top.size() == 5);
    for (std::size_t k = 0; k < 5; ++k) {
      CHECK(got.top[k].token == ref[k].second);
      CHECK(got.top[k].log_prob == Approx(ref[k].first).margin(1e-5));
    }
  }
  CHECK(c.ttft_ms() >= 0.0);
  CHECK(c.tpot_ms() >= 0.0);
  CHECK(c.finished >= c.first_token);
  CHECK(c.first_token >= c.submitted);
}

TEST_CASE("ServingLoop: requests from many threads, each gets its tokens alone; a full queue says so",
          "[engine][scheduler]") {
  const nnx::Engine<nnx::Gpt2> engine(kTextGpt2, {.max_prefill_length = 8, .max_target_length = 96, .slots = 2});
  const nnx::State params = engine.init_params(6);
  std::mutex m;
  std::condition_variable cv;
  std::map<std::string, nnx::Completion> done;
  {
    nnx::ServingLoop<nnx::Gpt2> loop(nnx::Scheduler<nnx::Gpt2>(engine, params), {.max_waiting = 3});
    const auto on_finish = [&](const nnx::Completion& c) {
      std::lock_guard lock(m);
      done.emplace(c.id, c);
      cv.notify_all();
    };
    std::vector<std::thread> clients;
    for (int i = 0; i < 3; ++i)
      clients.emplace_back([&, i] {
        loop.submit("r" + std::to_string(i), greedy_request(ids(5 + i * 9, i), 12), {.on_finish = on_finish});
      });
    for (auto& t : clients) t.join();
    CHECK_THROWS_AS(loop.submit("bad", greedy_request({1, 999}, 3)), nnx::InvalidArgument);
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return done.size() == 3; });
  }
  for (int i = 0; i < 3; ++i)
    CHECK(done.at("r" + std::to_string(i)).tokens == engine_test::greedy(engine, params, ids(5 + i * 9, i), 12));

  // One slot busy (its request's callback holds the loop), the queue holds one: the third is
  // refused, and nothing is lost.
  std::vector<std::string> finished;
  {
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<bool> holding{false};
    nnx::ServingLoop<nnx::Gpt2> loop(nnx::Scheduler<nnx::Gpt2>(engine, params), {.max_waiting = 1});
    const auto on_finish = [&](const nnx::Completion& c) {
      std::lock_guard lock(m);
      finished.push_back(c.id);
    };
    loop.submit("a", greedy_request(ids(5, 1), 4), {.on_token = [&](const nnx::TokenEvent& e) {
                                                       if (e.index > 0) return;
                                                       holding = true;
                                                       released.wait();
                                                     },
                                                     .on_finish = on_finish});
    while (!holding) std::this_thread::yield();
    loop.submit("b", greedy_request(ids(5, 2), 4), {.on_finish = on_finish});
    CHECK_THROWS_AS(loop.submit("c", greedy_request(ids(5, 3), 4), {.on_finish = on_finish}), nnx::QueueFull);
    release.set_value();
    for (;; std::this_thread::yield()) {
      std::lock_guard lock(m);
      if (finished.size() == 2) break;
    }
  }
  CHECK(finished == std::vector<std::string>{"a", "b"});
}
