// examples/engine_demo, run as the README's first command runs it: every request line it
// prints (kind, prompt length, token count, finish reason, first tokens) is what the engine
// computes for that request alone, recomputed here from the demo's stated setup (its model
// config, seed 2026, requests a..h) with a decode loop of this test's own.
#include <catch2/catch.hpp>

#include <cstdint>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

#include "../support/run_command.hpp"

using test_support::example_program;

namespace {

using Ids = std::vector<std::int32_t>;

struct Outcome {
  Ids tokens;
  nnx::FinishReason finish = nnx::FinishReason::none;
};

// One request from prefill to its end in a one-slot engine.
Outcome run_alone(const nnx::Engine<nnx::Gpt2>& e, const nnx::State& params, const Ids& prompt,
                  const nnx::SamplingParams& sampling, std::uint64_t seed, const nnx::StopCondition& stop) {
  const nnx::Prefix p = e.prefill(params, nnx::Tensor::from_vector(prompt, {static_cast<std::int64_t>(prompt.size())}),
                                  static_cast<std::int64_t>(prompt.size()), sampling, nnx::key_from_seed(seed), stop);
  Outcome out{{p.token}, {}};
  nnx::DecodeState state = e.insert(p, e.init_decode_state(), 0);
  while (!state.slots[0].done) {
    auto step = e.generate(params, std::move(state));
    if (step.result.at(0).valid) out.tokens.push_back(step.result.at(0).token);
    state = std::move(step.state);
  }
  out.finish = state.slots[0].finish;
  return out;
}

}  // namespace

TEST_CASE("engine_demo prints each request's tokens as the engine computes them alone", "[cli][engine_demo]") {
  const auto r = test_support::run_command(example_program("engine_demo"));
  INFO("stdout:\n" << r.out << "\nstderr:\n" << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.empty());

  // The demo's setup: a GPT-2 with 4 layers, d_model 256, 8 heads, a 4096-token vocabulary
  // and 256 positions, random weights from seed 2026; request i (named 'a' + i) has the
  // prompt (100 i + 1 + 37 t) mod 4096 of 8 + 13 i tokens, seed i, max_new_tokens 24 + 4 i,
  // greedy for even i, else temperature 0.8, top-k 40, top-p 0.95; request f stops at 1002.
  nnx::Gpt2Config config;
  config.vocab_size = 4096;
  config.n_positions = 256;
  config.n_embd = 256;
  config.n_layer = 4;
  config.n_head = 8;
  const nnx::Engine<nnx::Gpt2> e(config, {.max_prefill_length = 64, .max_target_length = 256, .slots = 1});
  const nnx::State params = e.init_params(2026);

  // "   a  greedy  prompt   8 tokens -> 24 tokens (max_new_tokens): 1809 3381 ... ..."
  const std::regex line(R"(^   ([a-h])  (greedy|sampled) +prompt +([0-9]+) tokens -> +([0-9]+) tokens \(([a-z_]+)\): ([0-9 ]+?)( \.\.\.)?$)");
  std::istringstream in(r.out);
  int seen = 0;
  for (std::string text; std::getline(in, text);) {
    std::smatch m;
    if (!std::regex_match(text, m, line)) continue;
    const int i = m[1].str()[0] - 'a';
    INFO(text);
    REQUIRE(i == seen++);  // a..h, in order
    Ids prompt;
    for (int t = 0; t < 8 + 13 * i; ++t) prompt.push_back((100 * i + 1 + 37 * t) % 4096);
    nnx::SamplingParams sampling;
    if (i % 2 == 1) sampling = {.temperature = 0.8, .top_k = 40, .top_p = 0.95};
    nnx::StopCondition stop{24 + 4 * i, {}};
    if (i == 5) stop.stop_ids = {1002};
    const Outcome want = run_alone(e, params, prompt, sampling, static_cast<std::uint64_t>(i), stop);

    CHECK(m[2].str() == (i % 2 ? "sampled" : "greedy"));
    CHECK(std::stoul(m[3].str()) == prompt.size());
    CHECK(std::stoul(m[4].str()) == want.tokens.size());
    CHECK(m[5].str() == nnx::finish_reason_name(want.finish));
    std::string first;  // the demo shows the first 12 tokens, then " ..." if there are more
    for (std::size_t t = 0; t < want.tokens.size() && t < 12; ++t) {
      if (t) first += ' ';
      first += std::to_string(want.tokens[t]);
    }
    CHECK(m[6].str() == first);
    CHECK(m[7].matched == (want.tokens.size() > 12));
  }
  CHECK(seen == 8);
  CHECK(r.out.find("each request alone in one slot gives the same tokens: yes") != std::string::npos);
}
