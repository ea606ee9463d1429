// The engine against PyTorch's greedy tokens; chunked and extended prefills against one long
// prefill; a request's bits alone versus batched; donation; stop conditions; multisampling;
// loading; and every documented error, after which the state is still usable.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/models.hpp>

#include "../io/io_test_util.hpp"
#include "engine_test_util.hpp"
#include "../models/reference_fixture.hpp"

namespace {

using Ids = std::vector<std::int32_t>;

using engine_test::ids_tensor;

bool same_bits(const float* a, const float* b, std::int64_t n) {
  return std::memcmp(a, b, static_cast<std::size_t>(n) * sizeof(float)) == 0;
}

nnx::StopCondition stop_after(std::int64_t max_new_tokens) { return {max_new_tokens, {}}; }
nnx::StopCondition stop_at(std::int32_t stop_id) { return {std::nullopt, {stop_id}}; }

template <class Engine>
nnx::Prefix prefill(const Engine& e, const nnx::State& params, const Ids& prompt, nnx::SamplingParams sampling = {},
                    std::uint64_t seed = 0, nnx::StopCondition stop = {}) {
  return e.prefill(params, ids_tensor(prompt), static_cast<std::int64_t>(prompt.size()), sampling,
                   nnx::key_from_seed(seed), stop);
}

// What one request produced: its tokens and the logits row each was sampled from.
struct Trace {
  Ids tokens;
  std::vector<std::vector<float>> logits;
  std::vector<float> log_probs;
};

using engine_test::small_gpt2;
using engine_test::small_llama;

// Runs requests to completion in the given slots, inserting each at its step; returns traces.
struct Request {
  Ids prompt;
  nnx::SamplingParams sampling;
  std::uint64_t seed = 0;
  std::int64_t slot = 0;
  std::int64_t start_step = 0;  // generate steps to run before inserting this request
  std::int64_t max_new_tokens = 8;
};

template <class Engine>
std::vector<Trace> run(const Engine& e, const nnx::State& params, const std::vector<Request>& requests) {
  std::vector<Trace> traces(requests.size());
  nnx::DecodeState state = e.init_decode_state();
  std::vector<int> running(static_cast<std::size_t>(e.num_slots()), -1);
  std::size_t finished = 0;
  for (std::int64_t step = 0; finished < requests.size(); ++step) {
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const Request& q = requests[r];
      if (q.start_step != step) continue;
      nnx::Prefix p = prefill(e, params, q.prompt, q.sampling, q.seed, stop_after(q.max_new_tokens));
      traces[r].tokens.push_back(p.token);
      traces[r].logits.emplace_back(p.last_logits.template span<float>().begin(),
                                    p.last_logits.template span<float>().end());
      traces[r].log_probs.push_back(p.log_prob);
      state = e.insert(p, std::move(state), q.slot);
      running[static_cast<std::size_t>(q.slot)] = static_cast<int>(r);
    }
    auto [next, result] = e.generate(params, std::move(state));
    state = std::move(next);
    for (std::int64_t s = 0; s < e.num_slots(); ++s) {
      const int r = running[static_cast<std::size_t>(s)];
      if (r < 0) continue;
      const nnx::SlotResult& out = result.at(s);
      if (out.valid) {
        traces[static_cast<std::size_t>(r)].tokens.push_back(out.token);
        const float* row = result.logits.template data<float>() + s * e.vocab_size();
        traces[static_cast<std::size_t>(r)].logits.emplace_back(row, row + e.vocab_size());
        traces[static_cast<std::size_t>(r)].log_probs.push_back(out.log_prob);
        CHECK(out.length == static_cast<std::int64_t>(traces[static_cast<std::size_t>(r)].tokens.size()));
      }
      if (state.slots[static_cast<std::size_t>(s)].done) {
        state = e.release(std::move(state), s);
        running[static_cast<std::size_t>(s)] = -1;
        ++finished;
      }
    }
    REQUIRE(step < 200);
  }
  return traces;
}

template <class Engine>
void check_same_bits(const Trace& a, const Trace& b, const Engine& e) {
  REQUIRE(a.tokens == b.tokens);
  REQUIRE(a.logits.size() == b.logits.size());
  for (std::size_t i = 0; i < a.logits.size(); ++i) CHECK(same_bits(a.logits[i].data(), b.logits[i].data(), e.vocab_size()));
  CHECK(a.log_probs == b.log_probs);
}

template <class Fn>
void expect_invalid(Fn&& fn, const std::string& part) {
  try {
    fn();
    FAIL("expected nnx::InvalidArgument mentioning '" << part << "'");
  } catch (const nnx::InvalidArgument& e) {
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(part) != std::string::npos);
  }
}

}  // namespace

TEST_CASE("engine greedy decoding matches PyTorch on the reference fixtures", "[engine][reference]") {
  auto check = [](auto engine, const std::string& name) {
    const auto expected = fixture::expected(name);
    const nnx::State params = engine.load_params(fixture::dir(name));
    nnx::DecodeState state = engine.init_decode_state();
    nnx::Prefix p = prefill(engine, params, expected.prompt, nnx::SamplingParams::greedy(), 0,
                            stop_after(static_cast<std::int64_t>(expected.greedy.size())));
    const auto T = static_cast<std::int64_t>(expected.prompt.size());
    CHECK(p.next_position == T);
    CHECK(fixture::max_abs_diff(p.last_logits, expected.logits.select(T - 1)) < 1e-4);
    Ids tokens{p.token};
    state = engine.insert(p, std::move(state), 1);
    while (!state.slots[1].done) {
      auto [next, result] = engine.generate(params, std::move(state));
      state = std::move(next);
      REQUIRE(result.at(1).valid);
      CHECK_FALSE(result.at(0).valid);
      tokens.push_back(result.at(1).token);
    }
    CHECK(state.slots[1].finish == nnx::FinishReason::max_new_tokens);
    CHECK(tokens == expected.greedy);
  };
  const auto gpt2 = nnx::Gpt2Config::from_json(nnx::read_model_config(fixture::dir("gpt2_tiny")));
  check(nnx::Engine<nnx::Gpt2>(gpt2, {.max_prefill_length = 4, .max_target_length = 64, .slots = 3}), "gpt2_tiny");
  const auto llama = nnx::LlamaConfig::from_json(nnx::read_model_config(fixture::dir("llama_tiny")));
  check(nnx::Engine<nnx::Llama>(llama, {.max_prefill_length = 64, .max_target_length = 40, .slots = 2}), "llama_tiny");
}

TEST_CASE("bf16 and f16 checkpoints are served as stored and decode as PyTorch does on their weights",
          "[engine][reference][weights]") {
  auto check = [](const auto& engine, const std::string& name, nnx::DType served) {
    INFO(name << " served in " << nnx::dtype_name(served));
    const auto expected = fixture::expected(name);
    const nnx::State params = engine.load_params(fixture::dir(name));
    std::set<nnx::DType> dtypes;
    for (const auto& [path, leaf] : params) dtypes.insert(leaf.dtype());
    // Weights in the served dtype; norm scales (and GPT-2's biases) stay f32.
    CHECK(dtypes == (served == nnx::DType::f32 ? std::set{nnx::DType::f32} : std::set{nnx::DType::f32, served}));
    nnx::DecodeState state = engine.init_decode_state();
    nnx::Prefix p = prefill(engine, params, expected.prompt, nnx::SamplingParams::greedy(), 0,
                            stop_after(static_cast<std::int64_t>(expected.greedy.size())));
    CHECK(fixture::max_abs_diff(p.last_logits, expected.logits.select(static_cast<std::int64_t>(expected.prompt.size()) - 1)) < 1e-4);
    Ids tokens{p.token};
    state = engine.insert(p, std::move(state), 0);
    while (!state.slots[0].done) {
      auto [next, result] = engine.generate(params, std::move(state));
      state = std::move(next);
      tokens.push_back(result.at(0).token);
    }
    CHECK(tokens == expected.greedy);
    return params;
  };
  const auto llama = nnx::LlamaConfig::from_json(nnx::read_model_config(fixture::dir("llama_tiny_bf16")));
  const nnx::EngineOptions options{.max_prefill_length = 64, .max_target_length = 40, .slots = 2};
  using nnx::DType;
  const nnx::Engine<nnx::Llama> as_stored(llama, options);
  const nnx::State bf16 = check(as_stored, "llama_tiny_bf16", DType::bf16);
  (void)check(as_stored, "llama_tiny_f16", DType::f16);
  (void)check(as_stored, "llama_tiny", DType::f32);
  // Converted at load: a bf16 file served in f32 gives the same tokens.
  nnx::EngineOptions to_f32 = options;
  to_f32.weight_dtype = nnx::WeightDType::f32;
  (void)check(nnx::Engine<nnx::Llama>(llama, to_f32), "llama_tiny_bf16", DType::f32);
  const auto gpt2 = nnx::Gpt2Config::from_json(nnx::read_model_config(fixture::dir("gpt2_small_f16")));
  (void)check(nnx::Engine<nnx::Gpt2>(gpt2, {.max_prefill_length = 4, .max_target_length = 32, .slots = 1}),
              "gpt2_small_f16", DType::f16);

  // A native checkpoint of bf16 parameters loads back as bf16, or converted where asked.
  io_test::TempDir tmp;
  nnx::io::save_checkpoint(tmp / "ckpt", bf16, {}, llama.to_json());
  CHECK(nnx::io::checkpoint_weight_dtype(tmp / "ckpt") == DType::bf16);
  CHECK(as_stored.load_params(tmp / "ckpt") == bf16);
  const nnx::State widened = nnx::Engine<nnx::Llama>(llama, to_f32).load_params(tmp / "ckpt");
  CHECK(widened == nnx::Engine<nnx::Llama>(llama, to_f32).load_params(fixture::dir("llama_tiny_bf16")));
}

TEST_CASE("chunked and extended prefills equal one long prefill bit for bit", "[engine][prefill]") {
  const nnx::Engine<nnx::Llama> whole(small_llama(), {.max_prefill_length = 64, .max_target_length = 40, .slots = 2});
  const nnx::Engine<nnx::Llama> chunked(small_llama(), {.max_prefill_length = 3, .max_target_length = 40, .slots = 2});
  const nnx::State params = whole.init_params(5);
  const Ids prompt{4, 8, 15, 16, 23, 42, 7, 1, 0, 88, 3};
  const nnx::SamplingParams sampling{.temperature = 0.9, .top_k = 20, .top_p = 0.95};

  const nnx::Prefix a = prefill(whole, params, prompt, sampling, 11);
  const nnx::Prefix b = prefill(chunked, params, prompt, sampling, 11);
  CHECK(b.next_position == 11);
  CHECK(nnx::equal(a.last_logits, b.last_logits));
  CHECK(a.token == b.token);
  CHECK(a.log_prob == b.log_prob);
  for (const auto& [path, leaf] : a.cache) {
    const nnx::Tensor x = leaf.tensor().select(0).slice(0, 11), y = b.cache.at(path).tensor().select(0).slice(0, 11);
    CHECK(nnx::equal(x, y));
  }

  // A common prefix extended by each request's own tokens.
  const Ids head(prompt.begin(), prompt.begin() + 6), tail(prompt.begin() + 6, prompt.end());
  const nnx::Prefix shared = prefill(chunked, params, head, sampling, 99);
  const nnx::State shared_before = shared.cache.map([](const nnx::Tensor& t) { return t.clone(); });
  const nnx::Prefix extended = chunked.prefill(params, shared, ids_tensor(tail), static_cast<std::int64_t>(tail.size()),
                                               sampling, nnx::key_from_seed(11));
  CHECK(shared.cache == shared_before);  // extended through a copy: the shared prefix is unchanged
  CHECK(extended.next_position == 11);
  CHECK(nnx::equal(extended.last_logits, a.last_logits));
  CHECK(extended.token == a.token);

  // Donated: extended in place.
  nnx::Prefix own = prefill(chunked, params, head, sampling, 99);
  const std::byte* buffer = own.cache.entry(0).leaf.tensor().raw_data();
  nnx::Prefix moved = chunked.prefill(params, std::move(own), ids_tensor(tail), static_cast<std::int64_t>(tail.size()),
                                      sampling, nnx::key_from_seed(11));
  CHECK(moved.cache.entry(0).leaf.tensor().raw_data() == buffer);
  CHECK(nnx::equal(moved.last_logits, a.last_logits));

  // And the generations that follow are the same.
  auto continue_from = [&](const nnx::Prefix& p) {
    nnx::DecodeState s = chunked.insert(p, chunked.init_decode_state(), 0);
    Ids out;
    for (int i = 0; i < 5; ++i) {
      auto [next, r] = chunked.generate(params, std::move(s));
      s = std::move(next);
      out.push_back(r.at(0).token);
    }
    return out;
  };
  CHECK(continue_from(a) == continue_from(moved));
}

TEST_CASE("a request's tokens and logits do not depend on its neighbours or its slot", "[engine][invariance]") {
  auto check = [](const auto& alone_engine, const auto& batch_engine, std::uint64_t param_seed) {
    const nnx::State params = alone_engine.init_params(param_seed);
    const Request a{{5, 9, 2, 33, 17, 40}, {.temperature = 0.8, .top_k = 0, .top_p = 0.9}, 21, 0, 0, 9};
    const Request b{{1, 2, 3}, {.temperature = 1.0, .top_k = 10, .top_p = 1.0}, 5, 0, 0, 12};
    const Request c{{60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70}, nnx::SamplingParams::greedy(), 0, 0, 0, 6};
    const Request d{{7}, {.temperature = 1.3, .top_k = 0, .top_p = 1.0}, 8, 0, 0, 10};

    Request a_alone = a;
    const Trace alone = run(alone_engine, params, {a_alone})[0];
    REQUIRE(alone.tokens.size() == 9);

    // Beside three others, inserted in another slot, later, with slots freeing and refilling.
    Request a2 = a, b2 = b, c2 = c, d2 = d;
    a2.slot = 2;
    a2.start_step = 3;
    b2.slot = 0;
    c2.slot = 1;
    c2.start_step = 1;
    d2.slot = 1;
    d2.start_step = 8;  // reuses c's slot after c (6 tokens from step 1) has finished
    const auto batched = run(batch_engine, params, {a2, b2, c2, d2});
    check_same_bits(alone, batched[0], batch_engine);
    check_same_bits(run(alone_engine, params, {b})[0], batched[1], batch_engine);
    check_same_bits(run(alone_engine, params, {c})[0], batched[2], batch_engine);
    check_same_bits(run(alone_engine, params, {d})[0], batched[3], batch_engine);

    // The same seed gives the same tokens; another seed other tokens.
    Request other = a;
    other.seed = 22;
    CHECK(run(alone_engine, params, {other})[0].tokens != alone.tokens);
  };
  for (nnx::DType kv : {nnx::DType::f32, nnx::DType::bf16, nnx::DType::i8})
    for (nnx::WeightDType w : {nnx::WeightDType::f32, nnx::WeightDType::bf16, nnx::WeightDType::f16}) {
      INFO("KV cache " << nnx::dtype_name(kv) << ", weights " << nnx::weight_dtype_name(w));
      check(nnx::Engine<nnx::Gpt2>(small_gpt2(), {.max_prefill_length = 4, .max_target_length = 40, .slots = 1,
                                                  .kv_dtype = kv, .weight_dtype = w}),
            nnx::Engine<nnx::Gpt2>(small_gpt2(), {.max_prefill_length = 5, .max_target_length = 40, .slots = 4,
                                                  .kv_dtype = kv, .weight_dtype = w}),
            3);
      check(nnx::Engine<nnx::Llama>(small_llama(), {.max_prefill_length = 8, .max_target_length = 40, .slots = 1,
                                                    .kv_dtype = kv, .weight_dtype = w}),
            nnx::Engine<nnx::Llama>(small_llama(), {.max_prefill_length = 2, .max_target_length = 40, .slots = 3,
                                                    .kv_dtype = kv, .weight_dtype = w}),
            4);
    }
}

TEST_CASE("a request's tokens and logits do not depend on the thread count", "[engine][invariance][threads]") {
  const int threads_before = nnx::num_threads();
  const std::int64_t min_work_before = nnx::kernels::parallel_min_work();
  auto traces = [](const auto& engine, const nnx::State& params, int threads) {
    nnx::set_num_threads(threads);
    nnx::kernels::set_parallel_min_work(1);  // split even these tiny shapes across threads
    const Request a{{5, 9, 2, 33, 17, 40, 1, 2}, {.temperature = 0.8, .top_k = 0, .top_p = 0.9}, 21, 0, 0, 9};
    const Request b{{1, 2, 3}, nnx::SamplingParams::greedy(), 5, 1, 2, 12};
    return run(engine, params, {a, b});
  };
  for (auto [kv, w] : {std::pair{nnx::DType::f32, nnx::WeightDType::f32}, {nnx::DType::bf16, nnx::WeightDType::f32},
                       {nnx::DType::i8, nnx::WeightDType::bf16}, {nnx::DType::f32, nnx::WeightDType::f16}}) {
    INFO("KV cache " << nnx::dtype_name(kv) << ", weights " << nnx::weight_dtype_name(w));
    const nnx::Engine<nnx::Gpt2> gpt2(small_gpt2(), {.max_prefill_length = 4, .max_target_length = 40, .slots = 2,
                                                     .kv_dtype = kv, .weight_dtype = w});
    const nnx::Engine<nnx::Llama> llama(small_llama(), {.max_prefill_length = 3, .max_target_length = 40, .slots = 2,
                                                        .kv_dtype = kv, .weight_dtype = w});
    const nnx::State gpt2_params = gpt2.init_params(8), llama_params = llama.init_params(8);
    for (int threads : {2, 3}) {
      const auto one = traces(gpt2, gpt2_params, 1), many = traces(gpt2, gpt2_params, threads);
      for (std::size_t i = 0; i < one.size(); ++i) check_same_bits(one[i], many[i], gpt2);
      const auto one_l = traces(llama, llama_params, 1), many_l = traces(llama, llama_params, threads);
      for (std::size_t i = 0; i < one_l.size(); ++i) check_same_bits(one_l[i], many_l[i], llama);
    }
  }
  nnx::set_num_threads(threads_before);
  nnx::kernels::set_parallel_min_work(min_work_before);
}

TEST_CASE("donated decode states are written in place; shared ones are left unchanged", "[engine][donation]") {
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 2});
  const nnx::State params = e.init_params(1);
  const nnx::Prefix p = prefill(e, params, {3, 1, 4, 1, 5});
  nnx::DecodeState state = e.insert(p, e.init_decode_state(), 1);
  const std::byte* buffer = state.cache.entry(0).leaf.tensor().raw_data();

  // Shared: generate copies first; the caller's state is as it was.
  const nnx::DecodeState kept = e.insert(p, e.init_decode_state(), 1);
  const nnx::State snapshot = state.cache.map([](const nnx::Tensor& t) { return t.clone(); });
  auto shared = e.generate(params, kept);
  CHECK(kept.cache == snapshot);
  CHECK(kept.slots[1].next_position == 5);
  CHECK(shared.state.slots[1].next_position == 6);
  CHECK_FALSE(shared.state.cache.entry(0).leaf.tensor().shares_storage_with(kept.cache.entry(0).leaf.tensor()));

  // Donated: the same buffers, and the same result.
  shared = {};
  auto donated = e.generate(params, std::move(state));
  CHECK(donated.state.cache.entry(0).leaf.tensor().raw_data() == buffer);
  CHECK(donated.state.cache.entry(0).leaf.tensor().use_count() == 1);
  CHECK(e.generate(params, kept).result.at(1).token == donated.result.at(1).token);
  for (int i = 0; i < 4; ++i) donated = e.generate(params, std::move(donated.state));
  CHECK(donated.state.cache.entry(0).leaf.tensor().raw_data() == buffer);
}

TEST_CASE("insert copies only the prefix's used positions", "[engine][insert]") {
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 3});
  const nnx::State params = e.init_params(1);
  nnx::Prefix p = prefill(e, params, {3, 1, 4, 1});
  for (auto& [path, leaf] : p.cache)  // poison everything past the used length
    leaf.tensor().select(0).slice(4, 32).fill(std::numeric_limits<float>::quiet_NaN());
  const nnx::DecodeState state = e.insert(p, e.init_decode_state(), 2);
  for (const auto& [path, leaf] : state.cache) {
    const nnx::Tensor row = leaf.tensor().select(2);
    CHECK(nnx::equal(row.slice(0, 4), p.cache.at(path).tensor().select(0).slice(0, 4)));
    for (float v : row.slice(4, 32).span<float>()) REQUIRE(v == 0.0f);
    for (float v : leaf.tensor().select(0).span<float>()) REQUIRE(v == 0.0f);
  }
  const auto& slot = state.slots[2];
  CHECK(slot.occupied);
  CHECK(slot.next_position == 4);
  CHECK(slot.generated == 1);
  CHECK(slot.last_token == p.token);
}

TEST_CASE("stop tokens, max_new_tokens and slot reuse", "[engine][stop]") {
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 24, .slots = 2});
  const nnx::State params = e.init_params(2);
  const Ids prompt{10, 20, 30};
  // The greedy continuation, to pick a stop token from.
  const Trace greedy = run(e, params, {Request{prompt, {}, 0, 0, 0, 21}})[0];
  REQUIRE(greedy.tokens.size() == 21);  // fills the target length: 3 + 21 = 24

  // Stop at the third generated token (the first position where it occurs).
  const std::int32_t stop_id = greedy.tokens[2];
  const auto first = static_cast<std::size_t>(std::find(greedy.tokens.begin(), greedy.tokens.end(), stop_id) -
                                              greedy.tokens.begin());
  nnx::DecodeState state = e.insert(prefill(e, params, prompt, {}, 0, stop_at(stop_id)), e.init_decode_state(), 0);
  Ids out{state.slots[0].last_token};
  while (!state.slots[0].done) {
    auto [next, r] = e.generate(params, std::move(state));
    state = std::move(next);
    out.push_back(r.at(0).token);
    if (r.at(0).done) CHECK(r.at(0).finish == nnx::FinishReason::stop_token);
  }
  CHECK(out == Ids(greedy.tokens.begin(), greedy.tokens.begin() + static_cast<std::ptrdiff_t>(first) + 1));
  CHECK(state.slots[0].finish == nnx::FinishReason::stop_token);

  // A finished slot no longer advances, and stays busy until released.
  auto [after, r] = e.generate(params, std::move(state));
  CHECK_FALSE(r.at(0).valid);
  CHECK(after.slots[0].generated == static_cast<std::int64_t>(first) + 1);
  expect_invalid([&] { (void)e.insert(prefill(e, params, prompt), after, 0); }, "slot 0 is busy");
  state = e.release(std::move(after), 0);
  CHECK(state.num_free() == 2);

  // A first token that is a stop token, or max_new_tokens = 1, finishes at insert.
  state = e.insert(prefill(e, params, prompt, {}, 0, stop_after(1)), std::move(state), 0);
  CHECK(state.slots[0].done);
  CHECK(state.slots[0].finish == nnx::FinishReason::max_new_tokens);
  state = e.insert(prefill(e, params, prompt, {}, 0, stop_at(greedy.tokens[0])), std::move(state), 1);
  CHECK(state.slots[1].finish == nnx::FinishReason::stop_token);
  CHECK(state.num_active() == 0);
  auto idle = e.generate(params, std::move(state));
  CHECK_FALSE(idle.result.at(0).valid);
  CHECK_FALSE(idle.result.logits.defined());
}

TEST_CASE("prefill_multisampling draws n first tokens from one forward pass", "[engine][multisampling]") {
  const nnx::Engine<nnx::Llama> e(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 4});
  const nnx::State params = e.init_params(7);
  const Ids prompt{5, 6, 7, 8, 9};
  const nnx::SamplingParams sampling{.temperature = 1.5, .top_k = 0, .top_p = 1.0};
  const auto rng = nnx::key_from_seed(42);
  const auto samples = e.prefill_multisampling(params, ids_tensor(prompt), 5, 4, sampling, rng, stop_after(6));
  REQUIRE(samples.size() == 4);
  std::vector<std::int64_t> slots{3, 0, 2, 1};
  nnx::DecodeState state = e.init_decode_state();
  for (std::size_t j = 0; j < 4; ++j) {
    CHECK(samples[j].cache.entry(0).leaf.tensor().shares_storage_with(samples[0].cache.entry(0).leaf.tensor()));
    const nnx::Prefix single = e.prefill(params, ids_tensor(prompt), 5, sampling, nnx::fold_in(rng, j), stop_after(6));
    CHECK(single.token == samples[j].token);
    CHECK(single.log_prob == samples[j].log_prob);
    state = e.insert(samples[j], std::move(state), slots[j]);
  }
  // Each continues as its own request would alone.
  std::vector<Ids> batched(4);
  for (std::size_t j = 0; j < 4; ++j) batched[j].push_back(samples[j].token);
  while (state.num_active() > 0) {
    auto [next, r] = e.generate(params, std::move(state));
    state = std::move(next);
    for (std::size_t j = 0; j < 4; ++j)
      if (r.at(slots[j]).valid) batched[j].push_back(r.at(slots[j]).token);
  }
  for (std::size_t j = 0; j < 4; ++j) {
    nnx::DecodeState one = e.insert(samples[j], e.init_decode_state(), 0);
    Ids alone{samples[j].token};
    while (one.num_active() > 0) {
      auto [next, r] = e.generate(params, std::move(one));
      one = std::move(next);
      alone.push_back(r.at(0).token);
    }
    CHECK(alone == batched[j]);
    CHECK(alone.size() == 6);
  }
  // Several samples differ (temperature 1.5 over 89 tokens).
  CHECK_FALSE((samples[0].token == samples[1].token && samples[1].token == samples[2].token &&
               samples[2].token == samples[3].token));

  // bulk_insert: one prefix into several slots.
  nnx::DecodeState bulk = e.bulk_insert(samples[0], e.init_decode_state(), std::vector<std::int64_t>{0, 2});
  CHECK(bulk.slots[0].occupied);
  CHECK(bulk.slots[2].occupied);
  CHECK_FALSE(bulk.slots[1].occupied);
}

TEST_CASE("load_params reads native checkpoints and Hugging Face directories and checks them", "[engine][load]") {
  io_test::TempDir tmp;
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  const nnx::State params = e.init_params(9);
  nnx::io::save_checkpoint(tmp / "ckpt", params, {}, e.config().to_json());
  const nnx::State loaded = e.load_params(tmp / "ckpt");
  CHECK(loaded == params);
  CHECK(e.load_params(params) == params);

  // A checkpoint of another configuration is refused by name.
  nnx::Gpt2Config other = small_gpt2();
  other.layer_norm_epsilon = 1e-6;
  const nnx::Engine<nnx::Gpt2> e2(other, {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  expect_invalid([&] { (void)e2.load_params(tmp / "ckpt"); }, "layer_norm_epsilon");
  const nnx::Engine<nnx::Llama> llama(small_llama(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  expect_invalid([&] { (void)llama.load_params(tmp / "ckpt"); }, "model_type");
  expect_invalid([&] { (void)e.load_params(tmp / "missing"); }, "missing");

  // An in-memory State with a leaf missing names it.
  nnx::State partial = params.filter(nnx::Not(nnx::path_contains("ln_f")));
  CHECK_THROWS_WITH(e.load_params(partial), Catch::Contains("ln_f"));
}

TEST_CASE("weights quantized at load lie in one buffer; leaves left as given stay shared", "[engine][load]") {
  const nnx::EngineOptions f32_options{.max_prefill_length = 8, .max_target_length = 32, .slots = 1};
  nnx::EngineOptions w8a8_options = f32_options;
  w8a8_options.quant.scheme = nnx::QuantScheme::w8a8;
  const nnx::State given = nnx::Engine<nnx::Llama>(small_llama(), f32_options).init_params(4);
  const nnx::Engine<nnx::Llama> e(small_llama(), w8a8_options);
  const nnx::State served = e.load_params(given);

  // Every quantized tensor (values, then scales) starts at the next 64-byte boundary after the
  // one before it, in the state's order; the norms and the embedding, not quantized, are the
  // given tensors themselves.
  std::uintptr_t next = 0;
  std::int64_t packed = 0, shared = 0;
  for (const auto& [path, leaf] : served) {
    INFO(path.to_string());
    if (!leaf.is_quantized()) {
      CHECK(leaf.tensor().shares_storage_with(given.at(path).tensor()));
      ++shared;
      continue;
    }
    nnx::map_tensors(leaf.value, [&](const nnx::Tensor& t) {
      const auto begin = reinterpret_cast<std::uintptr_t>(t.raw_data());
      if (next != 0) CHECK(begin == next);
      next = (begin + t.nbytes() + 63) / 64 * 64;
      ++packed;
      return nnx::Tensor();
    });
  }
  CHECK(packed == 2 * 2 * 7);  // 2 layers x 7 projections, each values and one scale
  CHECK(shared == 2 * 2 + 3);  // 2 norms per layer, the final norm, embedding and head
}

// Found by fuzz/fuzz_model_config: a stored config whose model_type is not a string (or that
// is not an object) made load_params throw nlohmann's type_error instead of InvalidArgument.
TEST_CASE("load_params refuses a stored config of the wrong JSON type with InvalidArgument", "[engine][load]") {
  io_test::TempDir tmp;
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 32, .slots = 1});
  const nnx::State params = e.init_params(9);
  nlohmann::json numbered = e.config().to_json();
  numbered["model_type"] = 5;
  nnx::io::save_checkpoint(tmp / "numbered", params, {}, numbered);
  expect_invalid([&] { (void)e.load_params(tmp / "numbered"); }, "model_type 5");
  nnx::io::save_checkpoint(tmp / "array", params, {}, nlohmann::json::array({1, 2}));
  expect_invalid([&] { (void)e.load_params(tmp / "array"); }, "the model config is array, expected a JSON object");
}

TEST_CASE("bad requests are InvalidArgument naming the value, and the state stays usable", "[engine][errors]") {
  const nnx::Engine<nnx::Gpt2> e(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 20, .slots = 2});
  const nnx::State params = e.init_params(4);
  const Ids prompt{1, 2, 3};
  nnx::DecodeState state = e.insert(prefill(e, params, prompt), e.init_decode_state(), 0);
  const nnx::Prefix ok = prefill(e, params, {9, 8});

  expect_invalid([&] { state = e.insert(ok, std::move(state), 2); }, "slot 2");
  expect_invalid([&] { state = e.insert(ok, std::move(state), -1); }, "slot -1");
  expect_invalid([&] { state = e.insert(ok, std::move(state), 0); }, "slot 0 is busy");
  expect_invalid([&] { state = e.release(std::move(state), 1); }, "slot 1 is not occupied");
  expect_invalid([&] { (void)prefill(e, params, Ids(20, 1)); }, "20 tokens");
  expect_invalid([&] { (void)prefill(e, params, {1, 97, 2}); }, "token id 97");
  expect_invalid([&] { (void)prefill(e, params, {1, -3}); }, "token id -3");
  expect_invalid([&] { (void)prefill(e, params, prompt, {.temperature = 1.0, .top_k = 0, .top_p = 0.0}); }, "top_p");
  expect_invalid([&] { (void)prefill(e, params, prompt, {.temperature = 1.0, .top_k = 0, .top_p = 1.5}); }, "1.5");
  expect_invalid([&] { (void)prefill(e, params, prompt, {.temperature = -1.0}); }, "temperature");
  expect_invalid([&] { (void)prefill(e, params, prompt, {.temperature = 1.0, .top_k = -2}); }, "top_k");
  expect_invalid([&] { (void)prefill(e, params, prompt, {}, 0, stop_after(18)); }, "max_new_tokens 18");
  expect_invalid([&] { (void)prefill(e, params, prompt, {}, 0, stop_after(0)); }, "max_new_tokens 0");
  expect_invalid([&] { (void)prefill(e, params, prompt, {}, 0, stop_at(500)); }, "stop id 500");
  expect_invalid([&] { (void)e.prefill(params, ids_tensor(prompt), 4, {}, {}); }, "true_length 4");
  CHECK_THROWS_AS(e.prefill(params, nnx::Tensor::zeros({3}), 3, {}, {}), nnx::ShapeError);
  const nnx::Engine<nnx::Gpt2> three(small_gpt2(), {.max_prefill_length = 8, .max_target_length = 20, .slots = 3});
  expect_invalid([&] { state = three.insert(ok, std::move(state), 1); }, "3");
  expect_invalid([] { nnx::Engine<nnx::Gpt2>(small_gpt2(), {.max_target_length = 49}); }, "max_target_length 49");
  expect_invalid([] { nnx::Engine<nnx::Gpt2>(small_gpt2(), {.slots = 0}); }, "slots 0");

  // After all that, the state still decodes exactly as an untouched one.
  const nnx::DecodeState fresh = e.insert(prefill(e, params, prompt), e.init_decode_state(), 0);
  REQUIRE(state.cache.size() == fresh.cache.size());
  CHECK(state.cache == fresh.cache);
  state = e.insert(ok, std::move(state), 1);
  auto [next, r] = e.generate(params, std::move(state));
  CHECK(r.at(0).token == e.generate(params, fresh).result.at(0).token);
  CHECK(r.at(1).valid);
}

// A step runs the active slots alone: the other slots' cache rows are not written (they used
// to decode a scratch token), their logits rows are zeros, and the active slot's tokens and
// logits are the bits it gets when every slot is busy (the invariance tests above).
TEST_CASE("generate computes only the active slots", "[engine][active]") {
  for (nnx::DType kv : {nnx::DType::f32, nnx::DType::i8}) {
    INFO("KV cache " << nnx::dtype_name(kv));
    const nnx::Engine<nnx::Llama> e(small_llama(),
                                    {.max_prefill_length = 8, .max_target_length = 32, .slots = 4, .kv_dtype = kv});
    const nnx::State params = e.init_params(2);
    nnx::DecodeState state = e.insert(prefill(e, params, {3, 1, 4, 1, 5}), e.init_decode_state(), 2);
    state = e.insert(prefill(e, params, {2, 7}), std::move(state), 0);
    state = e.release(std::move(state), 0);  // slot 0's rows hold a released request's cache
    const nnx::State before = state.cache.map([](const nnx::Tensor& t) { return t.clone(); });
    auto [next, result] = e.generate(params, std::move(state));
    for (const auto& [path, leaf] : next.cache)
      for (std::int64_t slot : {0, 1, 3}) {
        INFO(path.to_string() << " slot " << slot);
        CHECK(nnx::equal(leaf.tensor().select(slot), before.at(path).tensor().select(slot)));
      }
    REQUIRE(result.at(2).valid);
    for (std::int64_t slot : {0, 1, 3})
      for (float x : result.logits.select(slot).span<float>()) REQUIRE(x == 0.0f);
  }
}
