// examples/serve_batch, run as a user runs it: each request's tokens are the engine's for that
// request alone (and PyTorch's for the fixture prompt) whatever the slots, threads and prefill
// chunks; stop conditions; bad lines reported by line number and skipped; usage errors; the
// JetStream-style summary.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>
#include <nnx/quant.hpp>
#include <nnx/text.hpp>

#include "../io/io_test_util.hpp"
#include "../models/reference_fixture.hpp"
#include "../support/byte_tokenizer.hpp"
#include "../support/run_command.hpp"

using test_support::example_program;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Ids = std::vector<std::int32_t>;

struct Run {
  int code = -1;
  std::string out, err;
};

std::string quote(const std::string& s) { return "'" + s + "'"; }

// Runs serve_batch with `args`, stdout and stderr captured in files under `dir`.
Run serve_batch(const io_test::TempDir& dir, const std::string& args) {
  const fs::path out = dir / "stdout.txt", err = dir / "stderr.txt";
  const std::string cmd =
      quote(example_program("serve_batch")) + " " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
  const int status = std::system(cmd.c_str());
  Run r;
  r.code = (status != -1 && WIFEXITED(status)) ? WEXITSTATUS(status) : -1;
  r.out = io_test::read_bytes(out);
  r.err = io_test::read_bytes(err);
  return r;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

// A request as the test writes it, and as it runs on the engine alone.
struct Req {
  std::optional<std::string> id;  // none: serve_batch names it by its line number
  Ids prompt;
  std::optional<std::int64_t> max_new_tokens;
  nnx::SamplingParams sampling;
  std::uint64_t seed = 0;
  Ids stop_ids;

  json to_json() const {
    json j;
    if (id) j["id"] = *id;
    j["prompt_ids"] = prompt;
    if (max_new_tokens) j["max_new_tokens"] = *max_new_tokens;
    j["temperature"] = sampling.temperature;
    j["top_k"] = sampling.top_k;
    j["top_p"] = sampling.top_p;
    j["seed"] = seed;
    j["stop_ids"] = stop_ids;
    return j;
  }
};

// Writes lines to dir/name and returns the path.
fs::path write_file(const io_test::TempDir& dir, const std::string& name, const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& l : lines) text += l + "\n";
  io_test::write_bytes(dir / name, text);
  return dir / name;
}

nnx::EngineOptions options(std::int64_t max_prefill_length, std::int64_t max_target_length, std::int64_t slots) {
  nnx::EngineOptions o;
  o.max_prefill_length = max_prefill_length;
  o.max_target_length = max_target_length;  // 0: the context length
  o.slots = slots;
  return o;
}

// The tokens the engine produces for one request in a one-slot engine.
template <class Model>
Ids alone(const nnx::Engine<Model>& e, const nnx::State& params, const Req& r) {
  const auto T = static_cast<std::int64_t>(r.prompt.size());
  const nnx::Prefix p = e.prefill(params, nnx::Tensor::from_vector(r.prompt, {T}), T, r.sampling,
                                  nnx::key_from_seed(r.seed), {r.max_new_tokens, r.stop_ids});
  nnx::DecodeState state = e.insert(p, e.init_decode_state(), 0);
  Ids tokens{p.token};
  while (!state.slots[0].done) {
    auto [next, result] = e.generate(params, std::move(state));
    state = std::move(next);
    REQUIRE(result.at(0).valid);
    tokens.push_back(result.at(0).token);
  }
  return tokens;
}

struct Result {
  Ids tokens;
  double ttft_ms = 0, tpot_ms = 0;
  std::string finish;
};

// stdout of a successful run: one JSON object per line with exactly the five documented keys,
// by id, each id once; also returns the ids in completion order.
std::map<std::string, Result> parse_results(const std::string& out, std::vector<std::string>* order = nullptr) {
  std::map<std::string, Result> results;
  for (const std::string& line : lines_of(out)) {
    INFO("stdout line: " << line);
    json j;
    REQUIRE_NOTHROW(j = json::parse(line));
    REQUIRE(j.is_object());
    REQUIRE(j.size() == 5);
    REQUIRE(j["id"].is_string());
    REQUIRE(j["tokens"].is_array());
    REQUIRE(j["ttft_ms"].is_number());
    REQUIRE(j["tpot_ms"].is_number());
    REQUIRE(j["finish_reason"].is_string());
    Result r{j["tokens"].get<Ids>(), j["ttft_ms"].get<double>(), j["tpot_ms"].get<double>(),
             j["finish_reason"].get<std::string>()};
    CHECK((r.finish == "stop_token" || r.finish == "max_new_tokens" || r.finish == "nan"));
    CHECK(r.ttft_ms >= 0);
    CHECK(r.tpot_ms >= 0);
    if (r.tokens.size() == 1) CHECK(r.tpot_ms == 0);
    const std::string id = j["id"].get<std::string>();
    CHECK(results.count(id) == 0);
    results[id] = r;
    if (order) order->push_back(id);
  }
  return results;
}

// The number after `label` in the summary (a line "label   value").
double summary_value(const std::string& err, const std::string& label) {
  const std::size_t at = err.find(label);
  INFO("stderr: " << err);
  REQUIRE(at != std::string::npos);
  return std::stod(err.substr(at + label.size()));
}

double numpy_percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

Ids random_ids(std::uint64_t seed, std::size_t n, std::int32_t vocab) {
  Ids ids(n);
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& id : ids) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    id = static_cast<std::int32_t>(x % static_cast<std::uint64_t>(vocab));
  }
  return ids;
}

void check_usage_error(const Run& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(count(r.err, "\n") == 1);
  CHECK(r.err.rfind("serve_batch: ", 0) == 0);
  CHECK(r.err.find(needle) != std::string::npos);
}

// serve_batch over 2 slots (and `extra` flags) with a greedy request on gpt2_tiny's prompt and
// a sampled one: each gets what `engine` gives it alone. Returns the run.
Run check_two_requests(const io_test::TempDir& tmp, const fs::path& model, const std::string& extra,
                       const nnx::Engine<nnx::Gpt2>& engine, const nnx::State& params) {
  const Req greedy{"greedy", fixture::expected("gpt2_tiny").prompt, 10, {}, 0, {}};
  const Req hot{"hot", random_ids(9, 6, 128), 12, {.temperature = 0.9, .top_k = 0, .top_p = 0.95}, 4, {}};
  const fs::path file = write_file(tmp, "requests.jsonl", {greedy.to_json().dump(), hot.to_json().dump()});
  const Run run =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " --slots 2" + extra);
  INFO("stderr: " << run.err);
  REQUIRE(run.code == 0);
  const auto got = parse_results(run.out);
  REQUIRE(got.size() == 2);
  CHECK(got.at("greedy").tokens == alone(engine, params, greedy));
  CHECK(got.at("hot").tokens == alone(engine, params, hot));
  return run;
}

}  // namespace

TEST_CASE("serve_batch: each request gets the engine's tokens for it alone, on any slots and threads",
          "[cli][serve_batch]") {
  const auto expected = fixture::expected("gpt2_tiny");
  const fs::path model = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;

  std::vector<Req> reqs;
  reqs.push_back({"reference", expected.prompt, static_cast<std::int64_t>(expected.greedy.size()), {}, 0, {}});
  reqs.push_back({"reference2", expected.prompt2, static_cast<std::int64_t>(expected.greedy2.size()), {}, 0, {}});
  reqs.push_back({"hot", random_ids(1, 9, 128), 20, {.temperature = 0.8, .top_k = 20, .top_p = 0.9}, 3, {}});
  reqs.push_back({"nucleus", random_ids(2, 5, 128), 12, {.temperature = 1.0, .top_k = 0, .top_p = 0.7}, 11, {}});
  reqs.push_back({"until-target", random_ids(3, 30, 128), std::nullopt, {}, 0, {}});  // 64 - 30 = 34 tokens
  reqs.push_back({"one", random_ids(4, 3, 128), 1, {.temperature = 1.2, .top_k = 0, .top_p = 1.0}, 5, {}});
  reqs.push_back({std::nullopt, random_ids(5, 17, 128), 7, {.temperature = 0.5, .top_k = 5, .top_p = 1.0}, 8, {}});
  std::vector<std::string> lines;
  for (const Req& r : reqs) lines.push_back(r.to_json().dump());
  lines.insert(lines.begin() + 3, "   ");  // blank lines are skipped silently
  const std::string unnamed_id = "8";      // the last request's line
  const fs::path file = write_file(tmp, "requests.jsonl", lines);

  // What the engine gives each request alone (one slot, other prefill chunking).
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(model));
  const nnx::Engine<nnx::Gpt2> engine(cfg, options(7, 0, 1));
  const nnx::State params = engine.load_params(model);
  std::map<std::string, Ids> want;
  for (const Req& r : reqs) want[r.id.value_or(unnamed_id)] = alone(engine, params, r);
  CHECK(want["reference"] == expected.greedy);  // PyTorch's greedy tokens
  CHECK(want["reference2"] == expected.greedy2);
  CHECK(want["until-target"].size() == 34);
  CHECK(want["one"].size() == 1);
  CHECK(want[unnamed_id].size() == 7);

  for (const std::string extra : {"--slots 1", "--slots 2", "--slots 3", "--slots 2 --threads 2",
                                  "--slots 4 --max-prefill-length 4", "--slots 7 --threads 3"}) {
    INFO("serve_batch " << extra);
    const Run run =
        serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " " + extra);
    INFO("stderr: " << run.err);
    REQUIRE(run.code == 0);
    std::vector<std::string> order;
    const auto got = parse_results(run.out, &order);
    CHECK(lines_of(run.out).size() == reqs.size());  // one line per request, nothing else
    REQUIRE(got.size() == reqs.size());
    for (const auto& [id, tokens] : want) {
      INFO("request " << id);
      REQUIRE(got.count(id) == 1);
      CHECK(got.at(id).tokens == tokens);
    }
    // Completion order: finish times (ttft + tpot * (tokens - 1)) do not decrease.
    double previous = 0;
    for (const std::string& id : order) {
      const Result& r = got.at(id);
      const double finish = r.ttft_ms + r.tpot_ms * static_cast<double>(r.tokens.size() - 1);
      CHECK(finish >= previous - 0.05);
      previous = std::max(previous, finish);
    }
    CHECK(run.err.find("line ") == std::string::npos);  // nothing reported
  }
}

TEST_CASE("serve_batch: stop ids and max_new_tokens end requests", "[cli][serve_batch]") {
  const auto expected = fixture::expected("gpt2_tiny");
  const Ids& greedy = expected.greedy;  // PyTorch's 8 greedy tokens after the prompt
  const fs::path model = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;

  const std::int32_t stop = greedy[3];
  const auto first = static_cast<std::size_t>(std::find(greedy.begin(), greedy.end(), stop) - greedy.begin());
  std::vector<Req> reqs;
  reqs.push_back({"stop", expected.prompt, 8, {}, 0, {stop}});
  reqs.push_back({"stop-first", expected.prompt, 8, {}, 0, {99 == greedy[0] ? 98 : 99, greedy[0]}});
  reqs.push_back({"max5", expected.prompt, 5, {}, 0, {}});
  reqs.push_back({"max1", expected.prompt, 1, {}, 0, {}});
  reqs.push_back({"max-target", Ids(60, 7), 4, {}, 0, {}});  // 60 + 4 = 64: fills the slot exactly
  std::vector<std::string> lines;
  for (const Req& r : reqs) lines.push_back(r.to_json().dump());
  const fs::path file = write_file(tmp, "requests.jsonl", lines);

  const Run run =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " --slots 2");
  INFO("stderr: " << run.err);
  REQUIRE(run.code == 0);
  const auto got = parse_results(run.out);
  REQUIRE(got.size() == reqs.size());
  CHECK(got.at("stop").tokens == Ids(greedy.begin(), greedy.begin() + static_cast<std::ptrdiff_t>(first) + 1));
  CHECK(got.at("stop-first").tokens == Ids{greedy[0]});
  CHECK(got.at("stop-first").tpot_ms == 0);
  CHECK(got.at("max5").tokens == Ids(greedy.begin(), greedy.begin() + 5));
  CHECK(got.at("max1").tokens == Ids{greedy[0]});
  CHECK(got.at("max-target").tokens.size() == 4);
}

TEST_CASE("serve_batch: bad lines are reported with their line number and skipped", "[cli][serve_batch][errors]") {
  const fs::path model = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  const std::vector<std::string> lines = {
      R"({"id": "good1", "prompt_ids": [1, 2, 3], "max_new_tokens": 4})",            // 1
      R"({"id": "broken", "prompt_ids": [1, 2)",                                     // 2 invalid JSON
      R"({"prompt_ids": [1, 500, 3]})",                                              // 3 token id >= vocab 128
      R"({"prompt_ids": [1, 2], "top_p": 0})",                                       // 4
      "",                                                                            // 5 blank: silent
      R"({"prompt_ids": [1, 2], "temperature": -1})",                                // 6
      R"({"prompt_ids": [1, 2], "top_k": -1})",                                      // 7
      R"({"prompt_ids": [1, 2], "max_new_tokens": 1000})",                           // 8 beyond target length 64
      R"({"id": "nothing", "max_new_tokens": 3})",                                   // 9 missing prompt_ids
      R"({"id": "good1", "prompt_ids": [4]})",                                       // 10 duplicate id
      R"({"id": "good2", "prompt_ids": [5, 6], "max_new_tokens": 3, "note": "x"})",  // 11 unknown key: ok
      R"({"prompt_ids": [1, -2]})",                                                  // 12
      R"({"prompt_ids": [1, 2.5]})",                                                 // 13
      R"([1, 2, 3])",                                                                // 14
      R"({"prompt_ids": [5], "stop_ids": [999]})",                                   // 15
      R"({"prompt_ids": [5], "id": 7})",                                             // 16
      R"({"prompt_ids": [5], "temperature": "hot"})",                                // 17
      json{{"prompt_ids", Ids(64, 1)}}.dump(),                                       // 18 prompt too long
      R"({"prompt_ids": [], "max_new_tokens": 2})",                                  // 19
      R"({"prompt_ids": [9, 9, 9], "max_new_tokens": 2, "seed": null})",             // 20 null = absent: ok
  };
  const fs::path file = write_file(tmp, "requests.jsonl", lines);
  const Run run =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " --slots 2");
  INFO("stderr: " << run.err);
  CHECK(run.code == 1);  // some lines were skipped

  const auto got = parse_results(run.out);
  CHECK(lines_of(run.out).size() == 3);
  CHECK(got.count("good1") == 1);
  CHECK(got.count("good2") == 1);
  CHECK(got.count("20") == 1);
  if (got.count("good1")) CHECK(got.at("good1").tokens.size() == 4);

  const std::map<int, std::string> reasons = {
      {2, "not valid JSON"},
      {3, "token id 500"},
      {4, "top_p"},
      {6, "temperature"},
      {7, "top_k"},
      {8, "max_new_tokens 1000"},
      {9, "missing \"prompt_ids\""},
      {10, "duplicate id \"good1\" (first used on line 1)"},
      {12, "prompt_ids[1]"},
      {13, "prompt_ids[1]"},
      {14, "JSON object"},
      {15, "stop id 999"},
      {16, "\"id\" must be a string"},
      {17, "\"temperature\" must be a number"},
      {18, "64 tokens"},
      {19, "non-empty array"},
  };
  for (const auto& [line, reason] : reasons) {
    const std::string prefix = "serve_batch: line " + std::to_string(line) + ": ";
    INFO("line " << line << ", expecting '" << reason << "'");
    REQUIRE(count(run.err, prefix) == 1);
    const std::size_t at = run.err.find(prefix);
    const std::string message = run.err.substr(at, run.err.find('\n', at) - at);
    CHECK(message.find(reason) != std::string::npos);
  }
  // The unknown key is a warning, the blank line nothing; no other line is reported.
  CHECK(count(run.err, "serve_batch: line 11: ignoring unknown key \"note\"") == 1);
  for (int line : {1, 5, 20}) CHECK(count(run.err, "serve_batch: line " + std::to_string(line) + ":") == 0);
  CHECK(count(run.err, ": line ") == reasons.size() + 1);
  CHECK(summary_value(run.err, "Successful requests:") == 3);
  CHECK(summary_value(run.err, "Skipped lines:") == static_cast<double>(reasons.size()));

  // Without the bad lines, exit code 0.
  std::vector<std::string> good = {lines[0], lines[10], lines[19]};
  const fs::path good_file = write_file(tmp, "good.jsonl", good);
  const Run ok =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(good_file.string()) + " --slots 2");
  INFO("stderr: " << ok.err);
  CHECK(ok.code == 0);
  CHECK(parse_results(ok.out).size() == 3);
  CHECK(count(ok.err, ": line ") == 1);  // the unknown-key warning only
}

TEST_CASE("serve_batch: usage, file and model errors are one line on stderr with exit code 2",
          "[cli][serve_batch][errors]") {
  const std::string gpt2 = quote(fixture::dir("gpt2_tiny").string());
  io_test::TempDir tmp;
  const std::string file = quote(write_file(tmp, "r.jsonl", {R"({"prompt_ids": [1, 2]})"}).string());

  check_usage_error(serve_batch(tmp, "--requests " + file + " --slots 2"), "--model is required");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --slots 2"), "--requests is required");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file), "--slots is required");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots 0"), "--slots");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots two"), "two");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots 2 --bogus 1"), "--bogus");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots"), "missing value");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots 2 --threads 0"),
                    "--threads");
  check_usage_error(
      serve_batch(tmp, "--model " + quote((tmp / "nope").string()) + " --requests " + file + " --slots 2"), "nope");
  check_usage_error(
      serve_batch(tmp, "--model " + gpt2 + " --requests " + quote((tmp / "none.jsonl").string()) + " --slots 2"),
      "none.jsonl");
  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots 2 --max-target-length 65"),
                    "max_target_length 65");

  const fs::path other = tmp / "other";
  fs::create_directories(other);
  io_test::write_bytes(other / "config.json", R"({"model_type": "mamba"})");
  check_usage_error(serve_batch(tmp, "--model " + quote(other.string()) + " --requests " + file + " --slots 2"),
                    "mamba");

  const Run help = serve_batch(tmp, "--help");
  CHECK(help.code == 0);
  CHECK(help.out.find("usage: serve_batch --model PATH --requests FILE --slots B") != std::string::npos);
}

TEST_CASE("serve_batch: the summary has JetStream's figures, computed from the requests", "[cli][serve_batch]") {
  const fs::path model = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  std::vector<std::string> lines;
  std::int64_t input_tokens = 0;
  for (int i = 0; i < 12; ++i) {
    const auto n = static_cast<std::uint64_t>(i);
    Req r;
    r.id = std::string("r") + std::to_string(i);
    r.prompt = random_ids(100 + n, 2 + n, 128);
    r.max_new_tokens = 1 + (i * 5) % 13;  // 1 to 13 tokens
    r.sampling = {.temperature = 0.9, .top_k = 0, .top_p = 1.0};
    r.seed = n;
    input_tokens += static_cast<std::int64_t>(r.prompt.size());
    lines.push_back(r.to_json().dump());
  }
  const fs::path file = write_file(tmp, "requests.jsonl", lines);
  const Run run =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " --slots 3");
  INFO("stderr: " << run.err);
  REQUIRE(run.code == 0);
  const auto got = parse_results(run.out);
  REQUIRE(got.size() == 12);

  std::vector<double> ttfts, tpots;
  std::int64_t output_tokens = 0;
  for (const auto& [id, r] : got) {
    ttfts.push_back(r.ttft_ms);
    if (r.tokens.size() > 1) tpots.push_back(r.tpot_ms);
    output_tokens += static_cast<std::int64_t>(r.tokens.size());
  }
  CHECK(summary_value(run.err, "Successful requests:") == 12);
  CHECK(summary_value(run.err, "Skipped lines:") == 0);
  CHECK(summary_value(run.err, "Total input tokens:") == static_cast<double>(input_tokens));
  CHECK(summary_value(run.err, "Total generated tokens:") == static_cast<double>(output_tokens));
  const double seconds = summary_value(run.err, "Benchmark duration (s):");
  CHECK(seconds > 0);
  CHECK(summary_value(run.err, "Input token throughput (tok/s):") > 0);
  CHECK(summary_value(run.err, "Output token throughput (tok/s):") > 0);
  CHECK(summary_value(run.err, "Request throughput (req/s):") > 0);

  // Mean, median (numpy's: the middle two averaged) and p99 (linear interpolation), from the
  // per-request figures (rounded to the microsecond there; printed to 0.01 ms here).
  auto mean = [](const std::vector<double>& v) {
    double s = 0;
    for (double x : v) s += x;
    return s / static_cast<double>(v.size());
  };
  const double tol = 0.006;
  CHECK(summary_value(run.err, "Mean TTFT (ms):") == Approx(mean(ttfts)).margin(tol));
  CHECK(summary_value(run.err, "Median TTFT (ms):") == Approx(numpy_percentile(ttfts, 50)).margin(tol));
  CHECK(summary_value(run.err, "P99 TTFT (ms):") == Approx(numpy_percentile(ttfts, 99)).margin(tol));
  REQUIRE(tpots.size() >= 2);
  CHECK(summary_value(run.err, "Mean TPOT (ms):") == Approx(mean(tpots)).margin(tol));
  CHECK(summary_value(run.err, "Median TPOT (ms):") == Approx(numpy_percentile(tpots, 50)).margin(tol));
  CHECK(summary_value(run.err, "P99 TPOT (ms):") == Approx(numpy_percentile(tpots, 99)).margin(tol));
  // Every request arrives at the start, so every first token comes within the run (whose
  // duration is printed rounded to the millisecond: a 3.24 ms run reads 0.003 s).
  CHECK(*std::max_element(ttfts.begin(), ttfts.end()) <= seconds * 1000.0 + 0.51);
}

TEST_CASE("serve_batch: llama from a Hugging Face directory and from a native checkpoint", "[cli][serve_batch]") {
  const auto expected = fixture::expected("llama_tiny");
  io_test::TempDir tmp;
  auto model = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  auto [graphdef, params] = nnx::split(model, nnx::of<nnx::Param>);
  nnx::io::save_checkpoint(tmp / "ckpt", params, graphdef, model.config.to_json());

  const Req ref{"ref", expected.prompt, static_cast<std::int64_t>(expected.greedy.size()), {}, 0, {}};
  const Req ref2{"ref2", expected.prompt2, static_cast<std::int64_t>(expected.greedy2.size()), {}, 0, {}};
  const Req hot{"hot", Ids{3, 1, 4, 1, 5}, 9, {.temperature = 1.0, .top_k = 8, .top_p = 0.95}, 42, {}};
  const fs::path file =
      write_file(tmp, "requests.jsonl", {ref.to_json().dump(), ref2.to_json().dump(), hot.to_json().dump()});

  const auto cfg = nnx::LlamaConfig::from_json(nnx::read_model_config(fixture::dir("llama_tiny")));
  const nnx::Engine<nnx::Llama> engine(cfg, options(512, 40, 1));
  const Ids hot_alone = alone(engine, engine.load_params(fixture::dir("llama_tiny")), hot);

  for (const fs::path& path : {fixture::dir("llama_tiny"), tmp / "ckpt"}) {
    INFO(path.string());
    const Run run = serve_batch(tmp, "--model " + quote(path.string()) + " --requests " + quote(file.string()) +
                                         " --slots 2 --max-target-length 40 --max-prefill-length 3");
    INFO("stderr: " << run.err);
    REQUIRE(run.code == 0);
    const auto got = parse_results(run.out);
    REQUIRE(got.size() == 3);
    CHECK(got.at("ref").tokens == expected.greedy);
    CHECK(got.at("ref2").tokens == expected.greedy2);
    CHECK(got.at("hot").tokens == hot_alone);
  }
}

TEST_CASE("serve_batch: an int8 serve checkpoint is served in int8", "[cli][serve_batch][quant]") {
  const fs::path hf = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  // A serve checkpoint as examples/quantize writes it: int8 parameters, the scheme in the config.
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(hf));
  nnx::EngineOptions q8 = options(512, 0, 1);
  q8.quant.scheme = nnx::QuantScheme::w8a8;
  const nnx::Engine<nnx::Gpt2> engine(cfg, q8);
  const nnx::State params = engine.load_params(hf);
  nlohmann::json config = cfg.to_json();
  config["quantization"] = q8.quant.to_json();
  nnx::io::save_checkpoint(tmp / "q8", params, {}, config);
  (void)check_two_requests(tmp, tmp / "q8", "", engine, params);
}

TEST_CASE("serve_batch: --kv-dtype serves the KV cache in bf16 or int8 and reports the memory",
          "[cli][serve_batch][kv_cache]") {
  const fs::path hf = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(hf));
  // gpt2_tiny: 2 layers of K and V, [2 slots, 64 positions, 4 heads, 16] each; int8 adds a
  // 4-byte scale per (slot, position, head).
  const std::size_t rows = 2 * 2 * 2 * 64 * 4;
  for (const auto& [flag, dtype, kv_bytes] :
       {std::tuple{"bf16", nnx::DType::bf16, rows * 16 * 2}, std::tuple{"int8", nnx::DType::i8, rows * (16 + 4)}}) {
    INFO("--kv-dtype " << flag);
    nnx::EngineOptions o = options(512, 0, 1);
    o.kv_dtype = dtype;
    const nnx::Engine<nnx::Gpt2> engine(cfg, o);
    CHECK(engine.kv_cache_bytes() * 2 == kv_bytes);  // one slot
    const Run run = check_two_requests(tmp, hf, std::string(" --kv-dtype ") + flag, engine, engine.load_params(hf));
    char kv[64];
    std::snprintf(kv, sizeof kv, "KV cache %.1f MB (%s, 2 slots x 64 positions)", static_cast<double>(kv_bytes) * 1e-6,
                  flag);
    CHECK(count(run.err, "serve_batch: memory: weights ") == 1);
    CHECK(count(run.err, kv) == 1);
  }
  check_usage_error(serve_batch(tmp, "--model " + quote(hf.string()) + " --requests " +
                                         quote((tmp / "requests.jsonl").string()) + " --slots 2 --kv-dtype f16"),
                    "--kv-dtype: KV cache dtype 'f16'");
}

TEST_CASE("serve_batch: a checkpoint with stacked layers is served stacked, with the same tokens",
          "[cli][serve_batch][layout]") {
  const fs::path hf = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(hf));
  const nnx::Engine<nnx::Gpt2> engine(cfg, options(512, 0, 1));
  const nnx::State params = engine.load_params(hf);
  nnx::io::save_checkpoint(tmp / "stacked", nnx::to_layout(params, "h", nnx::Layout::stacked), {}, cfg.to_json());
  const Run stacked = check_two_requests(tmp, tmp / "stacked", "", engine, params);
  CHECK(count(stacked.err, "layers stacked\n") == 1);
  const Run per_layer = check_two_requests(tmp, tmp / "stacked", " --layout per-layer", engine, params);
  CHECK(count(per_layer.err, "layers per-layer\n") == 1);
  const Run from_hf = check_two_requests(tmp, hf, " --layout stacked", engine, params);
  CHECK(count(from_hf.err, "layers stacked\n") == 1);
  check_usage_error(serve_batch(tmp, "--model " + quote(hf.string()) + " --requests " +
                                         quote((tmp / "requests.jsonl").string()) + " --slots 2 --layout rows"),
                    "--layout: 'rows', expected auto, stacked or per-layer");
}

TEST_CASE("serve_batch: --weight-dtype serves the weights in bf16 or f16, or as stored, and reports them",
          "[cli][serve_batch][weights]") {
  const fs::path hf = fixture::dir("gpt2_tiny");  // stored in f32
  io_test::TempDir tmp;
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(hf));
  for (const auto& [flag, served] : {std::pair{"bf16", "bf16+f32"}, std::pair{"f16", "f16+f32"}, std::pair{"auto", "f32"}}) {
    INFO("--weight-dtype " << flag);
    nnx::EngineOptions o = options(512, 0, 1);
    o.weight_dtype = nnx::parse_weight_dtype(flag);
    const nnx::Engine<nnx::Gpt2> engine(cfg, o);
    const nnx::State params = engine.load_params(hf);
    const Run run = check_two_requests(tmp, hf, std::string(" --weight-dtype ") + flag, engine, params);
    char weights[64];
    std::snprintf(weights, sizeof weights, "memory: weights %.1f MB (%s)", static_cast<double>(params.nbytes()) * 1e-6,
                  served);
    CHECK(count(run.err, weights) == 1);
  }
  check_usage_error(serve_batch(tmp, "--model " + quote(hf.string()) + " --requests " +
                                         quote((tmp / "requests.jsonl").string()) + " --slots 2 --weight-dtype int8"),
                    "--weight-dtype: unknown weight dtype \"int8\"");
}

TEST_CASE("serve_batch: lines that are not strict JSON are skipped, the other requests run",
          "[cli][serve_batch][errors]") {
  const fs::path model = fixture::dir("gpt2_tiny");
  io_test::TempDir tmp;
  const std::vector<std::string> lines = {
      R"({"id": "a", "prompt_ids": [1, 2, 3], "max_new_tokens": 3})",              // 1
      R"({"id": "big", "prompt_ids": [1], "temperature": 1e400})",                  // 2 beyond a double
      R"({"id": "long", "prompt_ids": [1], "seed": 1)" + std::string(400, '7') + "}",  // 3
      std::string(R"({"id": "nul", "prompt_ids": [4, 5]})") + '\0' + R"(, "x": 1)",  // 4 NUL byte
      R"({"id": "dup", "prompt_ids": [4], "prompt_ids": [5]})",                     // 5 key twice
      R"({"id": "tiny", "prompt_ids": [7, 8], "max_new_tokens": 4, "temperature": 5e-324, "seed": 3})",  // 6
      R"({"id": "b", "prompt_ids": [9], "max_new_tokens": 2})",                     // 7
  };
  const fs::path file = write_file(tmp, "requests.jsonl", lines);
  const Run run =
      serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) + " --slots 3");
  INFO("stderr: " << run.err);
  CHECK(run.code == 1);
  const auto got = parse_results(run.out);
  REQUIRE(got.size() == 3);
  for (const auto& [line, reason] : std::map<int, std::string>{
           {2, "not valid JSON"}, {3, "not valid JSON"}, {4, "NUL byte at offset 35"}, {5, "\"prompt_ids\" twice"}}) {
    const std::string prefix = "serve_batch: line " + std::to_string(line) + ": ";
    INFO("line " << line);
    REQUIRE(count(run.err, prefix) == 1);
    const std::size_t at = run.err.find(prefix);
    CHECK(run.err.substr(at, run.err.find('\n', at) - at).find(reason) != std::string::npos);
  }
  // A subnormal temperature is served greedily (1/temperature would overflow).
  const auto cfg = nnx::Gpt2Config::from_json(nnx::read_model_config(model));
  const nnx::Engine<nnx::Gpt2> engine(cfg, options(512, 0, 1));
  const nnx::State params = engine.load_params(model);
  CHECK(got.at("tiny").tokens == alone(engine, params, Req{"tiny", {7, 8}, 4, {}, 3, {}}));
  CHECK(got.at("a").tokens == alone(engine, params, Req{"a", {1, 2, 3}, 3, {}, 0, {}}));
  CHECK(got.at("b").finish == "max_new_tokens");
}

TEST_CASE("serve_batch: a request whose logits turn NaN finishes with nan; the others run", "[cli][serve_batch][nan]") {
  io_test::TempDir tmp;
  // A Llama whose token 13 has a NaN embedding: a request that feeds 13 diverges.
  nnx::LlamaConfig cfg;
  cfg.vocab_size = 64;
  cfg.hidden_size = 32;
  cfg.intermediate_size = 48;
  cfg.num_hidden_layers = 2;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.max_position_embeddings = 32;
  const nnx::Engine<nnx::Llama> engine(cfg, options(512, 0, 1));
  const nnx::State clean = engine.init_params(7);
  const std::int32_t x = 13;
  nnx::State poisoned = clean.map([](const nnx::Tensor& t) { return t.clone(); });
  poisoned.at(nnx::Path::parse("embed_tokens/embedding")).tensor().select(x).fill(std::nanf(""));
  nnx::io::save_checkpoint(tmp / "nan", poisoned, {}, cfg.to_json());

  // "early" feeds 13 in its prompt (fails at prefill); "late" makes 13 its first generated
  // token, so it diverges at the first decode step; "ok" never sees 13.
  Ids late_prompt;
  for (std::int32_t t = 0; t < 64 && late_prompt.empty(); ++t) {
    if (t == x) continue;
    const Req probe{"p", {t}, 1, {}, 0, {}};
    if (alone(engine, clean, probe)[0] == x) late_prompt = {t};
  }
  Ids ok_prompt;
  for (std::int32_t t = 0; t < 64 && ok_prompt.empty(); ++t) {
    const Ids tokens = alone(engine, clean, Req{"p", {t}, 5, {}, 0, {}});
    if (t != x && std::find(tokens.begin(), tokens.end(), x) == tokens.end()) ok_prompt = {t};
  }
  REQUIRE_FALSE(ok_prompt.empty());
  std::vector<std::string> lines = {
      Req{"early", {1, x, 2}, 4, {}, 0, {}}.to_json().dump(),
      Req{"ok", ok_prompt, 5, {}, 0, {}}.to_json().dump(),
  };
  if (!late_prompt.empty()) lines.push_back(Req{"late", late_prompt, 4, {}, 0, {}}.to_json().dump());
  const fs::path file = write_file(tmp, "requests.jsonl", lines);
  const Run run = serve_batch(
      tmp, "--model " + quote((tmp / "nan").string()) + " --requests " + quote(file.string()) + " --slots 2");
  INFO("stderr: " << run.err);
  CHECK(run.code == 1);
  const auto got = parse_results(run.out);
  REQUIRE(got.size() == lines.size());
  CHECK(got.at("early").finish == "nan");
  CHECK(got.at("early").tokens.empty());
  CHECK(count(run.err, "serve_batch: line 1: request \"early\": prefill: ") == 1);
  CHECK(got.at("ok").finish == "max_new_tokens");
  CHECK(got.at("ok").tokens == alone(engine, clean, Req{"ok", ok_prompt, 5, {}, 0, {}}));
  if (!late_prompt.empty()) {
    CHECK(got.at("late").finish == "nan");
    CHECK(got.at("late").tokens == Ids{x});
    CHECK(count(run.err, "serve_batch: line 3: request \"late\": the logits became NaN") == 1);
  }
  CHECK(summary_value(run.err, "Failed requests (nan):") == static_cast<double>(lines.size() - 1));
}

TEST_CASE("serve_batch: slots beyond the requests are not allocated; endless lines end the run",
          "[cli][serve_batch][errors]") {
  const std::string gpt2 = quote(fixture::dir("gpt2_tiny").string());
  io_test::TempDir tmp;
  const std::string file =
      quote(write_file(tmp, "r.jsonl", {R"({"prompt_ids": [1, 2], "max_new_tokens": 2})", R"({"prompt_ids": [3]})"})
                .string());
  const Run many = serve_batch(tmp, "--model " + gpt2 + " --requests " + file + " --slots 100000");
  INFO("stderr: " << many.err);
  CHECK(many.code == 0);
  CHECK(summary_value(many.err, "Slots:") == 2);
  CHECK(parse_results(many.out).size() == 2);

  check_usage_error(serve_batch(tmp, "--model " + gpt2 + " --requests /dev/zero --slots 2"), "longer than 64 MiB");

  const fs::path typed = tmp / "typed";
  fs::create_directories(typed);
  io_test::write_bytes(typed / "config.json", R"({"model_type": 5})");
  check_usage_error(serve_batch(tmp, "--model " + quote(typed.string()) + " --requests " + file + " --slots 2"),
                    (typed / "config.json").string() + ": \"model_type\" must be a string");
  const fs::path twice = tmp / "twice";
  fs::create_directories(twice);
  io_test::write_bytes(twice / "config.json", R"({"model_type": "gpt2", "n_embd": 32, "n_embd": 64})");
  check_usage_error(serve_batch(tmp, "--model " + quote(twice.string()) + " --requests " + file + " --slots 2"),
                    "\"n_embd\" twice");
}

TEST_CASE("serve_batch: text prompts and stop strings with the model directory's tokenizer",
          "[cli][serve_batch][text]") {
  io_test::TempDir tmp;
  nnx::Gpt2Config config;
  config.vocab_size = test_support::kByteTokenizerVocab;
  config.n_positions = 64;
  config.n_embd = 32;
  config.n_layer = 2;
  config.n_head = 4;
  const nnx::Engine<nnx::Gpt2> engine(config, options(8, 64, 1));
  const nnx::State params = engine.init_params(17);
  const fs::path model = tmp / "model";
  nnx::io::save_checkpoint(model, params, {}, config.to_json());
  io_test::write_bytes(model / "tokenizer.json", test_support::byte_tokenizer_json());
  auto tokenizer = std::make_shared<const nnx::text::Tokenizer>(nnx::text::Tokenizer::load(model));

  // The library's answer: each request alone through a one-slot Scheduler.
  const auto library = [&](const std::string& line) {
    nnx::Scheduler<nnx::Gpt2> s(engine, params, tokenizer);
    s.submit("x", nnx::parse_request_line(line));
    std::vector<nnx::Completion> done;
    while (!s.idle())
      for (nnx::Completion& c : s.step()) done.push_back(std::move(c));
    REQUIRE(done.size() == 1);
    return done[0];
  };
  const std::string plain = R"({"id": "plain", "prompt": "Once upon a time", "max_new_tokens": 20, "temperature": 0.9, "seed": 3})";
  const nnx::Completion free = library(plain);
  REQUIRE(free.text.size() > 6);
  const std::string stop = test_support::utf8_chars(free.text, 3, 2);
  json cut_request = json::parse(plain);
  cut_request["id"] = "cut";
  cut_request["stop"] = json::array({stop});
  const nnx::Completion cut = library(cut_request.dump());
  CHECK(cut.finish == nnx::FinishReason::stop_string);

  const fs::path file = write_file(tmp, "requests.jsonl", {plain, cut_request.dump()});
  const Run run = serve_batch(tmp, "--model " + quote(model.string()) + " --requests " + quote(file.string()) +
                                       " --slots 2 --max-prefill-length 4");
  INFO("stderr: " << run.err);
  REQUIRE(run.code == 0);
  std::map<std::string, json> got;
  for (const std::string& line : lines_of(run.out)) {
    const json j = json::parse(line);
    got[j["id"].get<std::string>()] = j;
  }
  REQUIRE(got.size() == 2);
  CHECK(got["plain"]["tokens"].get<Ids>() == free.tokens);
  CHECK(got["plain"]["text"] == free.text);
  CHECK(got["cut"]["tokens"].get<Ids>() == cut.tokens);
  CHECK(got["cut"]["text"] == cut.text);
  CHECK(got["cut"]["finish_reason"] == "stop_string");
  CHECK(cut.text == free.text.substr(0, free.text.find(stop)));

  // Without a tokenizer, a text prompt is a bad line.
  const fs::path bare = tmp / "bare";
  nnx::io::save_checkpoint(bare, params, {}, config.to_json());
  const Run no_tok = serve_batch(tmp, "--model " + quote(bare.string()) + " --requests " + quote(file.string()) +
                                          " --slots 1");
  CHECK(no_tok.code == 1);
  CHECK(no_tok.err.find("line 1: a text prompt needs a tokenizer") != std::string::npos);
}
