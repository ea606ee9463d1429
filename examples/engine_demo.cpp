// engine_demo — the whole library in one run (the README's first command, scripts/demo).
//
//   build/examples/engine_demo [--slots 4] [--threads N]
//
// 1. models + core: builds a small GPT-2-family model with random weights and splits it into
//    a graphdef and a Param state;
// 2. io: saves the parameters as a native checkpoint (atomic, with its config) and reloads
//    them through the engine, checking every byte came back;
// 3. engine: serves eight requests (greedy and sampled, with stop ids and length limits)
//    over a few batch slots through nnx::Scheduler (continuous batching: a request waiting
//    for a slot is prefilled, in chunks between decode steps, as soon as one frees);
// 4. prints each request's tokens, then the throughput and mean time to first token and per
//    output token.
// It also checks the engine's promise: every request, run again alone, gives the same tokens.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/kernels.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/models.hpp>

#include "cli.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

struct Request {
  std::string name;
  std::vector<std::int32_t> prompt;
  nnx::SamplingParams sampling;
  std::uint64_t seed = 0;
  nnx::StopCondition stop;
  std::vector<std::int32_t> tokens;  // generated
  nnx::FinishReason finish = nnx::FinishReason::none;
  double ttft_ms = 0, tpot_ms = 0;
};

std::vector<std::int32_t> make_prompt(std::int64_t length, std::int32_t first, std::int64_t vocab) {
  std::vector<std::int32_t> p;
  for (std::int64_t i = 0; i < length; ++i) p.push_back(static_cast<std::int32_t>((first + 37 * i) % vocab));
  return p;
}

std::string join(const std::vector<std::int32_t>& ids, std::size_t max_shown = 16) {
  std::string s;
  for (std::size_t i = 0; i < ids.size() && i < max_shown; ++i) {
    if (i) s += ' ';
    s += std::to_string(ids[i]);
  }
  if (ids.size() > max_shown) s += " ...";
  return s;
}

// Runs every request through the library's Scheduler (continuous batching over
// engine.num_slots() slots, prompts prefilled in chunks between decode steps).
template <class Engine>
void serve(const Engine& engine, const nnx::State& params, std::vector<Request>& requests) {
  nnx::Scheduler<nnx::Gpt2> scheduler(engine, params);
  for (std::size_t i = 0; i < requests.size(); ++i) {
    nnx::Request r;
    r.prompt = requests[i].prompt;
    r.sampling = requests[i].sampling;
    r.seed = requests[i].seed;
    r.stop = requests[i].stop;
    scheduler.submit(std::to_string(i), std::move(r));
  }
  while (!scheduler.idle())
    for (nnx::Completion& c : scheduler.step()) {
      Request& r = requests[std::stoul(c.id)];
      r.tokens = std::move(c.tokens);
      r.finish = c.finish;
      r.ttft_ms = c.ttft_ms();
      r.tpot_ms = c.tpot_ms();
    }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    std::int64_t slots = 4;
    for (int i = 1; i + 1 < argc; i += 2) {
      const std::string flag = argv[i];
      if (flag == "--slots") slots = cli::parse_int(flag, argv[i + 1], 1);
      else if (flag == "--threads") nnx::set_num_threads(cli::parse_threads(flag, argv[i + 1]));
      else throw cli::UsageError("unknown option " + flag + " (--slots N, --threads N)");
    }
    if (argc % 2 == 0) throw cli::UsageError(std::string(argv[argc - 1]) + ": missing value");
    std::printf("nnxcpp engine demo  (kernels: %s, %d thread%s)\n\n",
                std::string(nnx::kernels::isa_name()).c_str(), nnx::num_threads(),
                nnx::num_threads() == 1 ? "" : "s");

    // 1. A small GPT-2: 4 layers, d_model 256, 8 heads, 4096-token vocabulary, 256 positions.
    nnx::Gpt2Config config;
    config.vocab_size = 4096;
    config.n_positions = 256;
    config.n_embd = 256;
    config.n_layer = 4;
    config.n_head = 8;
    const nnx::Engine<nnx::Gpt2> engine(config, {.max_prefill_length = 64, .max_target_length = 256, .slots = slots});
    auto t0 = Clock::now();
    const nnx::State params = engine.init_params(/*seed=*/2026);
    std::printf("1. model   GPT-2 family, %lld layers, d_model %lld: %zu parameter tensors, %.1f M parameters "
                "(%.1f MB f32), random init in %.0f ms\n",
                static_cast<long long>(config.n_layer), static_cast<long long>(config.n_embd), params.size(),
                static_cast<double>(params.numel()) / 1e6, static_cast<double>(params.nbytes()) / 1e6,
                seconds_since(t0) * 1e3);

    // 2. Save and reload through a native checkpoint.
    const auto dir = std::filesystem::temp_directory_path() / ("nnx_engine_demo_" + std::to_string(::getpid()));
    t0 = Clock::now();
    nnx::io::save_checkpoint(dir, params, {}, config.to_json());
    const double save_s = seconds_since(t0);
    t0 = Clock::now();
    const nnx::State loaded = engine.load_params(dir);
    const double load_s = seconds_since(t0);
    const bool identical = loaded == params;
    std::printf("2. io      saved %s in %.0f ms, reloaded (mmap) in %.1f ms: %s\n", dir.c_str(), save_s * 1e3,
                load_s * 1e3, identical ? "every tensor identical" : "MISMATCH");
    if (!identical) return 1;

    // 3. Eight requests over the slots.
    std::vector<Request> requests;
    const std::int64_t V = config.vocab_size;
    for (int i = 0; i < 8; ++i) {
      Request r;
      r.name = std::string(1, static_cast<char>('a' + i));
      r.prompt = make_prompt(8 + 13 * i, 100 * i + 1, V);
      r.seed = static_cast<std::uint64_t>(i);
      if (i % 2 == 1) r.sampling = {.temperature = 0.8, .top_k = 40, .top_p = 0.95};
      r.stop.max_new_tokens = 24 + 4 * i;
      if (i == 5) r.stop.stop_ids = {1002};  // one of the tokens this request samples
      requests.push_back(std::move(r));
    }
    std::vector<Request> alone = requests;
    t0 = Clock::now();
    serve(engine, loaded, requests);
    const double total_s = seconds_since(t0);
    std::printf("3. engine  %zu requests over %lld slots (continuous batching):\n", requests.size(),
                static_cast<long long>(slots));
    std::int64_t prompt_tokens = 0, generated = 0;
    double ttft_ms = 0, tpot_ms = 0;
    for (const auto& r : requests) {
      std::printf("   %s  %-7s prompt %3zu tokens -> %2zu tokens (%s): %s\n", r.name.c_str(),
                  r.sampling.is_greedy() ? "greedy" : "sampled", r.prompt.size(), r.tokens.size(),
                  std::string(nnx::finish_reason_name(r.finish)).c_str(), join(r.tokens, 12).c_str());
      prompt_tokens += std::ssize(r.prompt);
      generated += std::ssize(r.tokens);
      ttft_ms += r.ttft_ms / static_cast<double>(requests.size());
      tpot_ms += r.tpot_ms / static_cast<double>(requests.size());
    }
    std::printf("4. speed   %lld prompt + %lld generated tokens in %.2f s: %.0f tok/s out, mean TTFT %.1f ms, "
                "mean TPOT %.2f ms\n",
                static_cast<long long>(prompt_tokens), static_cast<long long>(generated), total_s,
                static_cast<double>(generated) / total_s, ttft_ms, tpot_ms);

    // The same requests one at a time (one slot) give the same tokens, bit for bit.
    const nnx::Engine<nnx::Gpt2> single(config, {.max_prefill_length = 64, .max_target_length = 256, .slots = 1});
    serve(single, loaded, alone);
    bool same = true;
    for (std::size_t i = 0; i < requests.size(); ++i) same = same && requests[i].tokens == alone[i].tokens;
    std::printf("          each request alone in one slot gives the same tokens: %s\n", same ? "yes" : "NO");

    std::filesystem::remove_all(dir);
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    return cli::report_error("engine_demo", e);
  }
}
