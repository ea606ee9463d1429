// bench_server — what the OpenAI-compatible HTTP server (nnx/server/openai_server.hpp) costs
// over the library's scheduler, for the same requests in one process and one run (issue 13:
// "with 8 concurrent streaming clients, throughput stays >= 0.9 of serve_batch's for the same
// requests, and server overhead per token is reported").
//
//   build/benchmarks/bench_server                                   (every model and setting, ~3 min)
//   build/benchmarks/bench_server --benchmark_filter='Gpt2_124M/.*/threads:1'
//
// The model: random f32 weights (engine.init_params) in GPT-2 124M's shape (768 wide, 12
// layers, 12 heads) or a smaller 6-layer, 512-wide one ("Gpt2_6x512"), or a 2-layer, 64-wide
// one whose compute is next to nothing ("Gpt2_2x64": there the time is the server's and the
// scheduler's own, and overhead_us_per_token the server's cost per token), with a byte-level
// tokenizer (tests/support/byte_tokenizer.hpp: the 256 bytes, two merges and <|endoftext|>),
// so the vocabulary, and the output head, is 259 rather than GPT-2's 50257: every token is
// one byte of text. 8 slots, f32 KV cache, max_prefill_length 128, max_target_length 256.
//
// The requests: 16 fixed text prompts of 21-95 bytes (as many tokens, give or take the
// merges), greedy, 32 tokens each with no stop token (the end-of-text token ignored), so each
// run generates 512 tokens in two waves of 8.
//
// One iteration times, alternately, `rounds` times each:
//   (a) serve_batch's loop: the 16 requests submitted to an nnx::Scheduler, then step() until
//       idle (the scheduler decodes text, as serve_batch does);
//   (b) the same 16 requests as POST /v1/completions with "stream": true sent by 8 client
//       threads (httplib::Client over loopback, request i by thread i % 8, one after the other)
//       to an nnx::OpenAIServer on its own threads in this process; each client reads the
//       server-sent events as they come and parses every data line as JSON. keepalive:1 keeps
//       one connection per client thread with TCP_NODELAY (as client libraries do),
//       keepalive:0 connects anew for every request.
// The server raises its listen backlog (httplib's is 5: a burst of more connections waited for
// the kernel's 1 s SYN retry; `nstat -az TcpExtListenOverflows` counts them) and sets
// TCP_NODELAY; a keep-alive client that leaves Nagle's algorithm on still waits ~40 ms per
// request for the server's delayed ACK (benchmarks/RESULTS.md, "Server (issue 13)").
// The server is built and bound (and a short request run through (a) and by each client) before the
// timing. Both paths must give the same tokens for every request ("return_token_ids": true
// puts them in each choice's final chunk); the benchmark fails (SkipWithError) if not.
//
// Counters: a_tok_per_s, b_tok_per_s (generated tokens over the wall time of each path),
// ratio (b / a; the target is >= 0.9), overhead_us_per_token ((time_b - time_a) / tokens),
// cpu_overhead_us_per_token (the same with the CPU time of all of this process's threads,
// getrusage: what the server and its clients cost, which other tenants of a shared machine
// do not disturb as they do the wall time), events (server-sent events read per pass), tokens
// (per pass). The reported time is (b)'s.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/server/openai_server.hpp>
#include <nnx/text.hpp>

#include "../tests/support/byte_tokenizer.hpp"

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::int64_t kSlots = 8;
constexpr int kClients = 8;
constexpr int kRequests = 16;
constexpr std::int64_t kMaxTokens = 32;

nnx::Gpt2Config model_config(int model) {
  nnx::Gpt2Config c;  // GPT-2 124M's shape
  c.vocab_size = test_support::kByteTokenizerVocab;
  c.n_positions = 256;
  if (model == 1) {
    c.n_embd = 512;
    c.n_layer = 6;
    c.n_head = 8;
  } else if (model == 2) {  // compute next to nothing: the server's own cost shows
    c.n_embd = 64;
    c.n_layer = 2;
    c.n_head = 4;
  }
  return c;
}

std::vector<std::string> prompts() {
  const std::string text =
      "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
      "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light";
  std::vector<std::string> out;
  for (int i = 0; i < kRequests; ++i) {
    const std::size_t from = static_cast<std::size_t>(i * 7) % 60;
    const std::size_t len = 21 + static_cast<std::size_t>(i * 37) % 75;
    out.push_back(text.substr(from, len));
  }
  return out;
}

nnx::Request scheduler_request(const nnx::text::Tokenizer& tok, const std::string& prompt, std::int64_t max_tokens) {
  nnx::Request r;
  r.prompt = tok.encode(prompt);
  r.sampling.temperature = 0.0;
  r.seed = 0;
  r.stop.max_new_tokens = max_tokens;  // no stop ids: the end-of-text token does not end it
  return r;
}

std::string http_body(const std::string& prompt, std::int64_t max_tokens) {
  return json{{"prompt", prompt},     {"max_tokens", max_tokens},    {"temperature", 0},   {"seed", 0},
              {"stream", true},       {"return_token_ids", true},    {"ignore_eos", true}}
      .dump();
}

// (a): every request submitted, then step() until idle. Returns the tokens per request.
std::vector<std::vector<std::int32_t>> run_scheduler(nnx::Scheduler<nnx::Gpt2>& scheduler,
                                                     const nnx::text::Tokenizer& tok,
                                                     const std::vector<std::string>& texts, std::int64_t max_tokens) {
  std::vector<std::vector<std::int32_t>> tokens(texts.size());
  for (std::size_t i = 0; i < texts.size(); ++i)
    scheduler.submit(std::to_string(i), scheduler_request(tok, texts[i], max_tokens));
  while (!scheduler.idle())
    for (nnx::Completion& c : scheduler.step()) tokens[std::stoul(c.id)] = std::move(c.tokens);
  return tokens;
}

// One streamed completion over HTTP: the token ids of the final chunk; counts the events.
// Throws std::runtime_error on an HTTP error or a stream that does not end with [DONE].
std::vector<std::int32_t> stream_one(httplib::Client& client, const std::string& body, std::int64_t& events) {
  std::vector<std::int32_t> ids;
  std::string buffer;
  bool done = false;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body;
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, std::size_t n, std::uint64_t, std::uint64_t) {
    buffer.append(data, n);
    std::size_t end;
    while ((end = buffer.find("\n\n")) != std::string::npos) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;  // an SSE comment (": waiting")
      ++events;
      const std::string_view payload = std::string_view(event).substr(6);
      if (payload == "[DONE]") {
        done = true;
        continue;
      }
      const json chunk = json::parse(payload);
      for (const json& c : chunk.at("choices"))
        if (c.contains("token_ids")) ids = c["token_ids"].get<std::vector<std::int32_t>>();
    }
    return true;
  };
  const httplib::Result res = client.send(req);
  if (!res) throw std::runtime_error("HTTP error " + httplib::to_string(res.error()));
  if (res->status != 200) throw std::runtime_error("HTTP " + std::to_string(res->status));
  if (!done) throw std::runtime_error("the stream did not end with [DONE]");
  return ids;
}

// (b): 8 client threads, request i on thread i % 8, each through its client of `clients`
// (keep-alive connections reused from one call to the next), or with a new connection per
// request when `clients` is empty.
std::vector<std::vector<std::int32_t>> run_server(int port, std::vector<std::unique_ptr<httplib::Client>>& clients,
                                                  const std::vector<std::string>& texts, std::int64_t max_tokens,
                                                  std::int64_t& events, std::string& error) {
  std::vector<std::vector<std::int32_t>> tokens(texts.size());
  std::vector<std::int64_t> counts(kClients, 0);
  std::vector<std::string> errors(kClients);
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t)
    threads.emplace_back([&, t] {
      try {
        for (std::size_t i = static_cast<std::size_t>(t); i < texts.size(); i += kClients) {
          std::unique_ptr<httplib::Client> own;
          if (clients.empty()) {
            own = std::make_unique<httplib::Client>("127.0.0.1", port);
            own->set_read_timeout(600, 0);
          }
          httplib::Client& client = clients.empty() ? *own : *clients[static_cast<std::size_t>(t)];
          tokens[i] = stream_one(client, http_body(texts[i], max_tokens), counts[static_cast<std::size_t>(t)]);
        }
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(t)] = e.what();
      }
    });
  for (std::thread& c : threads) c.join();
  for (int t = 0; t < kClients; ++t) {
    events += counts[static_cast<std::size_t>(t)];
    if (!errors[static_cast<std::size_t>(t)].empty()) error = errors[static_cast<std::size_t>(t)];
  }
  return tokens;
}

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// CPU seconds used by every thread of this process so far (user + system).
double process_cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

// args: model (0: GPT-2 124M shape, 1: 6 x 512, 2: 2 x 64), threads, rounds, keepalive (1: each
// client thread keeps one connection, as client libraries do; 0: a new connection per request).
void BM_Server(benchmark::State& state) {
  const int model = static_cast<int>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const int rounds = static_cast<int>(state.range(2));
  const bool keepalive = state.range(3) != 0;
  nnx::set_num_threads(threads);
  const nnx::Gpt2Config config = model_config(model);
  const nnx::Engine<nnx::Gpt2> engine(config, {.max_prefill_length = 128, .max_target_length = 256, .slots = kSlots});
  const nnx::State params = engine.init_params(5);
  const auto tokenizer = std::make_shared<const nnx::text::Tokenizer>(
      nnx::text::Tokenizer::from_tokenizer_json(test_support::byte_tokenizer_json(), "byte_tokenizer"));
  const std::vector<std::string> texts = prompts();

  nnx::Scheduler<nnx::Gpt2> scheduler(engine, params, tokenizer);
  nnx::OpenAIServerOptions options;
  options.port = 0;  // any free port
  options.model_name = "bench";
  nnx::OpenAIServer<nnx::Gpt2> server(nnx::Scheduler<nnx::Gpt2>(engine, params, tokenizer), {.max_waiting = 64},
                                      options);
  const int port = server.bind();
  std::thread serving([&] { server.serve(); });
  std::vector<std::unique_ptr<httplib::Client>> clients;
  for (int t = 0; keepalive && t < kClients; ++t) {
    clients.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
    clients.back()->set_keep_alive(true);
    clients.back()->set_tcp_nodelay(true);
    clients.back()->set_read_timeout(600, 0);
  }
  const auto stop_server = [&] {
    server.stop();
    serving.join();
  };
  // Warm up both paths (first touches of the KV caches, the HTTP threads, the connections).
  {
    std::int64_t events = 0;
    std::string error;
    (void)run_scheduler(scheduler, *tokenizer, {texts[0]}, 4);
    std::vector<std::string> first(kClients, texts[0]);  // every client connects
    (void)run_server(port, clients, first, 4, events, error);
    if (!error.empty()) {
      stop_server();
      state.SkipWithError(("warm-up request failed: " + error).c_str());
      return;
    }
  }

  double time_a = 0, time_b = 0, cpu_a = 0, cpu_b = 0;
  std::int64_t tokens = 0, events = 0, passes = 0;
  for (auto _ : state) {
    double iteration_b = 0;
    for (int r = 0; r < rounds; ++r) {
      Clock::time_point t0 = Clock::now();
      double c0 = process_cpu_seconds();
      const auto a = run_scheduler(scheduler, *tokenizer, texts, kMaxTokens);
      time_a += seconds_since(t0);
      cpu_a += process_cpu_seconds() - c0;

      std::string error;
      std::int64_t ev = 0;
      t0 = Clock::now();
      c0 = process_cpu_seconds();
      const auto b = run_server(port, clients, texts, kMaxTokens, ev, error);
      const double tb = seconds_since(t0);
      cpu_b += process_cpu_seconds() - c0;
      time_b += tb;
      iteration_b += tb;
      if (!error.empty()) {
        stop_server();
        state.SkipWithError(("a streamed request failed: " + error).c_str());
        return;
      }
      for (std::size_t i = 0; i < texts.size(); ++i)
        if (a[i] != b[i] || static_cast<std::int64_t>(a[i].size()) != kMaxTokens) {
          stop_server();
          state.SkipWithError(("request " + std::to_string(i) + ": the server's tokens (" + std::to_string(b[i].size()) +
                               ") differ from the scheduler's (" + std::to_string(a[i].size()) + ")")
                                  .c_str());
          return;
        }
      for (const auto& t : a) tokens += static_cast<std::int64_t>(t.size());
      events += ev;
      ++passes;
    }
    state.SetIterationTime(iteration_b);
  }
  stop_server();
  state.counters["a_tok_per_s"] = static_cast<double>(tokens) / time_a;
  state.counters["b_tok_per_s"] = static_cast<double>(tokens) / time_b;
  state.counters["ratio"] = time_a / time_b;
  state.counters["overhead_us_per_token"] = (time_b - time_a) / static_cast<double>(tokens) * 1e6;
  state.counters["cpu_overhead_us_per_token"] = (cpu_b - cpu_a) / static_cast<double>(tokens) * 1e6;
  state.counters["tokens"] = static_cast<double>(tokens) / static_cast<double>(passes);
  state.counters["events"] = static_cast<double>(events) / static_cast<double>(passes);
}

BENCHMARK(BM_Server)
    ->Name("BM_Server/Gpt2_124M")
    ->ArgNames({"model", "threads", "rounds", "keepalive"})
    ->Args({0, 1, 3, 0})
    ->Args({0, 1, 3, 1})
    ->Args({0, 2, 3, 1})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Server)
    ->Name("BM_Server/Gpt2_6x512")
    ->ArgNames({"model", "threads", "rounds", "keepalive"})
    ->Args({1, 1, 3, 0})
    ->Args({1, 1, 3, 1})
    ->Args({1, 2, 3, 1})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Server)
    ->Name("BM_Server/Gpt2_2x64")
    ->ArgNames({"model", "threads", "rounds", "keepalive"})
    ->Args({2, 1, 10, 0})
    ->Args({2, 1, 10, 1})
    ->Iterations(1)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
