// serve_batch — continuous batching over nnx::Engine: requests from a JSON-lines file, one
// JSON line per finished request, and JetStream-style latency figures.
//
//   serve_batch --model PATH --requests FILE --slots B
//               [--max-target-length N] [--max-prefill-length N] [--threads N] [--kv-dtype T]
//               [--weight-dtype T] [--lora PATH] [--layout L]
//
//   --model PATH              a Hugging Face directory (config.json + safetensors) or a native
//                             checkpoint (nnx::io::save_checkpoint with a config holding
//                             "model_type"); gpt2 and llama. An int8 serve checkpoint (written
//                             by examples/quantize; its config has "quantization") is served
//                             in int8.
//   --requests FILE           JSON lines, one request per line ("-": standard input)
//   --slots B                 decode batch size: requests decoded together (>= 1; more slots
//                             than valid requests are not allocated)
//   --max-target-length N     positions per slot, prompt + generated (default: the model's
//                             context length)
//   --max-prefill-length N    tokens per prefill chunk; longer prompts are prefilled in chunks
//                             (default 512)
//   --threads N               threads for the kernels (default: NNX_NUM_THREADS, else 1);
//                             changes speed only, never tokens
//   --kv-dtype f32|bf16|int8  the KV cache's dtype (default f32): bf16 halves its memory and
//                             the bytes a decode step reads, int8 quarters them (plus a scale
//                             per position and KV head); nnx/nn/kv_cache.hpp states the numerics
//   --weight-dtype auto|f32|bf16|f16
//                             the dtype of the weights not quantized (default auto: as the
//                             checkpoint stores them, so a bf16 model is served in bf16,
//                             read in place from the file); others convert once at load
//   --lora PATH               a LoRA adapter (train --lora-rank's DIR/model) served unmerged
//                             on top of --model, the weights it was trained on
//   --layout auto|stacked|per-layer
//                             the decoder layers per layer or stacked (one leaf per parameter
//                             with a leading layers axis; ckpt convert writes such checkpoints);
//                             default auto: as --model stores them. Never changes tokens
//   --tokenizer PATH          tokenizer.json, or a directory with it or vocab.json + merges.txt
//                             (default: the model's directory, when it has one): request lines
//                             may then give a text "prompt" and "stop" strings, and each result
//                             line carries the generated "text"
//   --verify                  recompute a native checkpoint's per-file checksums before
//                             loading (exit 2 on a mismatch, or when there is nothing to verify)
//   --help                    this text
//
// A request line (only "prompt_ids", or "prompt", is required; unknown keys are ignored, with one warning
// per key name; null means "absent"; the format is nnx/engine/request.hpp's):
//
//   {"id": "a", "prompt_ids": [1,2,3], "max_new_tokens": 16, "temperature": 0, "top_k": 0,
//    "top_p": 1.0, "seed": 0, "stop_ids": []}
//
//   id              string; default: the line number ("7"). An id used by an earlier line is
//                   an error (the later line is skipped).
//   prompt_ids      non-empty array of non-negative integer token ids (< the vocabulary)
//   max_new_tokens  tokens to generate at most, the first one included; default: until
//                   prompt + generated tokens fill --max-target-length
//   temperature     0 (default): greedy; top_k 0 (default): no cut; top_p 1.0 (default): no
//                   cut (MaxText's order: top-k, then top-p, then temperature). A temperature
//                   so small that 1/temperature overflows (subnormal, e.g. 5e-324) is greedy.
//   seed            non-negative integer (default 0): token i is drawn with
//                   fold_in(key_from_seed(seed), i)
//   stop_ids        token ids that end the request (the stop token is its last token)
//   prompt          text instead of prompt_ids (needs a tokenizer)
//   stop            a string or an array of strings that end the request; its text stops
//                   before the stop string (needs a tokenizer)
//   logprobs        0-20: each result line gets "logprobs", per token {"token", "log_prob",
//                   "top": [[token, log_prob], ...]} with that many alternatives
//
// Blank lines are skipped silently. A line that is not a JSON object (or not strict JSON: a NUL
// byte, a key given twice, a number too large for a double), has a field of the wrong type,
// or that the engine rejects (token id outside the vocabulary, temperature < 0, top_k < 0,
// top_p outside (0, 1], max_new_tokens < 1 or beyond the target length, a prompt that does
// not fit the target length, a stop id outside the vocabulary) is reported on stderr as
//   serve_batch: line N: <reason>
// and skipped; the other requests still run. Every such line is reported before serving
// starts, in line order. A line longer than 64 MiB ends the run (exit 2): no request is that
// long, and a file without newlines (/dev/zero) must not be read forever.
//
// A request whose logits turn NaN (or all -inf: weights or a config that make the model
// diverge) finishes there with "finish_reason": "nan" and the tokens it had, is reported on
// stderr as "serve_batch: line N: request "id": <what happened>", and counts as failed (exit
// code 1); the other requests go on.
//
// Scheduling: every request arrives at the start (JetStream's benchmark with an infinite
// request rate) and waits in a FIFO in file order. Whenever a slot is free and a request
// waits, it is prefilled and inserted; then one generate step advances every active slot;
// a finished request is written out and its slot is freed for the next one at once.
// A request's tokens are exactly those the engine produces for it alone: they do not
// depend on --slots, on its neighbours, on --max-prefill-length or on --threads.
//
// stdout carries only results, one JSON line per finished request, in completion order:
//   {"id": "a", "tokens": [...], "ttft_ms": 12.3, "tpot_ms": 4.5, "finish_reason": "stop_token"}
// (and "text" with a tokenizer). finish_reason: stop_token, stop_string, max_new_tokens, or nan
// (see above).
// Times are measured with a steady clock from the start of serving (just before the first
// prefill, after the model is loaded): ttft_ms = when the first token was sampled (the end of
// the request's prefill, so it includes the time spent waiting for a slot); tpot_ms = (finish
// - first token) / (tokens - 1), the time per output token after the first, 0 for a
// one-token request (vLLM's definition; JetStream's benchmark_serving.py divides the whole
// latency, first token included, by the number of tokens).
//
// stderr carries the line errors, a progress line (redrawn in place on a terminal; otherwise
// a line per tenth of the requests finished, or every 10 s) and, at the end, a summary:
// requests finished and lines skipped, duration, request and input/output token throughput,
// and the mean, median and p99 of TTFT and TPOT in ms (numpy's median and linearly
// interpolated percentile, as JetStream's and vLLM's benchmark_serving.py compute them; TPOT
// figures are over the requests with at least two tokens, as vLLM's).
//
// Exit codes:
//   0  every request line finished
//   1  some lines were skipped or some requests failed (nan), each reported on stderr; every
//      other request finished
//   2  usage error, unreadable requests file, or a model that cannot be loaded (one line on
//      stderr, nothing on stdout); also any unexpected failure while serving
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <io.h>
#define NNX_ISATTY(fd) _isatty(fd)
#define NNX_FILENO(f) _fileno(f)
#else
#include <unistd.h>
#define NNX_ISATTY(fd) ::isatty(fd)
#define NNX_FILENO(f) ::fileno(f)
#endif

#include <nlohmann/json.hpp>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/models.hpp>
#include <nnx/quant/config.hpp>
#include <nnx/text.hpp>

#include "cli.hpp"

namespace {

using cli::parse_int;
using cli::UsageError;

using Clock = std::chrono::steady_clock;
using nlohmann::json;

constexpr const char* kUsage =
    "usage: serve_batch --model PATH --requests FILE --slots B [--max-target-length N]\n"
    "                   [--max-prefill-length N] [--threads N] [--kv-dtype f32|bf16|int8]\n"
    "                   [--weight-dtype auto|f32|bf16|f16] [--tokenizer PATH] [--verify] [--lora PATH]\n"
    "                   [--layout auto|stacked|per-layer]\n"
    "Runs the JSON-lines requests of FILE (\"-\": stdin) over B decode slots with continuous\n"
    "batching; one JSON line per finished request on stdout, progress and a summary on stderr.\n"
    "A request line: {\"id\": \"a\", \"prompt_ids\": [1,2,3], \"max_new_tokens\": 16,\n"
    "  \"temperature\": 0, \"top_k\": 0, \"top_p\": 1.0, \"seed\": 0, \"stop_ids\": []}\n"
    "(only prompt_ids is required). Exit codes: 0 all requests finished, 1 some lines\n"
    "were skipped, 2 usage, file or model error.\n";

struct Args {
  std::filesystem::path model, tokenizer;
  std::string requests;
  std::int64_t slots = 0;
  std::int64_t max_target_length = 0;  // 0: the model's context length
  std::int64_t max_prefill_length = 512;
  int threads = 0;  // 0: leave the thread count as it is
  nnx::DType kv_dtype = nnx::DType::f32;
  nnx::WeightDType weight_dtype = nnx::WeightDType::as_stored;
  std::string lora;  // --lora: an adapter checkpoint
  std::optional<nnx::Layout> layout;  // --layout; std::nullopt (auto): as the checkpoint stores it
  bool help = false;
  bool verify = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (flag == "--verify") {
      a.verify = true;
      continue;
    }
    if (flag != "--model" && flag != "--requests" && flag != "--slots" && flag != "--max-target-length" &&
        flag != "--max-prefill-length" && flag != "--threads" && flag != "--kv-dtype" &&
        flag != "--weight-dtype" && flag != "--tokenizer" && flag != "--lora" && flag != "--layout")
      throw UsageError("unknown option " + flag + " (see --help)");
    if (i + 1 >= argc) throw UsageError(flag + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--model") {
      a.model = value;
    } else if (flag == "--requests") {
      a.requests = value;
    } else if (flag == "--tokenizer") {
      a.tokenizer = value;
    } else if (flag == "--lora") {
      a.lora = value;
    } else if (flag == "--layout") {
      a.layout = cli::parse_layout(flag, value);
    } else if (flag == "--slots") {
      a.slots = parse_int(flag, value, 1);
    } else if (flag == "--max-target-length") {
      a.max_target_length = parse_int(flag, value, 2);
    } else if (flag == "--max-prefill-length") {
      a.max_prefill_length = parse_int(flag, value, 1);
    } else if (flag == "--kv-dtype" || flag == "--weight-dtype") {
      try {
        if (flag == "--kv-dtype")
          a.kv_dtype = nnx::parse_kv_cache_dtype(value);
        else
          a.weight_dtype = nnx::parse_weight_dtype(value);
      } catch (const nnx::InvalidArgument& e) {
        throw UsageError(flag + ": " + e.what());
      }
    } else {
      a.threads = cli::parse_threads(flag, value);
    }
  }
  if (a.model.empty()) throw UsageError("--model is required");
  if (a.requests.empty()) throw UsageError("--requests is required");
  if (a.slots == 0) throw UsageError("--slots is required");
  return a;
}

// ---- requests ----

// A non-blank line of the requests file.
struct Line {
  std::size_t number = 0;  // 1-based
  std::string id;          // the request's id, else the line number
  nnx::Request request;
  std::string error;  // why the line is skipped; empty for a request that runs
};

constexpr std::size_t kMaxLineBytes = std::size_t{64} << 20;

// The file's lines, read whole before anything else (so a file error comes before loading).
std::vector<std::string> read_lines(const std::string& name) {
  std::vector<std::string> lines;
  auto read = [&](std::istream& in) {
    std::string line;
    bool open_line = false;
    char buffer[1 << 16];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
      const std::string_view chunk(buffer, static_cast<std::size_t>(in.gcount()));
      for (std::size_t at = 0; at < chunk.size();) {
        const std::size_t nl = chunk.find('\n', at);
        const std::size_t end = nl == std::string_view::npos ? chunk.size() : nl;
        if (line.size() + (end - at) > kMaxLineBytes)
          throw nnx::InvalidArgument(name + ": line " + std::to_string(lines.size() + 1) +
                                     " is longer than 64 MiB (no request is; is this a requests file?)");
        line.append(chunk.substr(at, end - at));
        open_line = true;
        if (nl == std::string_view::npos) break;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(std::move(line));
        line.clear();
        open_line = false;
        at = nl + 1;
      }
    }
    if (open_line) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      lines.push_back(std::move(line));
    }
  };
  if (name == "-") {
    read(std::cin);
    if (std::cin.bad()) throw nnx::InvalidArgument("--requests -: cannot read standard input");
    return lines;
  }
  if (!std::filesystem::exists(name)) throw nnx::InvalidArgument(name + ": no such file");
  if (std::filesystem::is_directory(name)) throw nnx::InvalidArgument(name + ": is a directory, not a file");
  std::ifstream in(name, std::ios::binary);
  if (!in) throw nnx::InvalidArgument(name + ": cannot open");
  read(in);
  if (in.bad()) throw nnx::InvalidArgument(name + ": read error");
  return lines;
}

void report(std::size_t line, const std::string& reason) {
  std::string msg = reason;
  for (char& c : msg)
    if (c == '\n' || c == '\0') c = ' ';
  std::cerr << "serve_batch: line " << line << ": " << msg << "\n";
}

// Every non-blank line, parsed (nnx::parse_request_line) or with the reason it is skipped.
std::vector<Line> parse_lines(const std::vector<std::string>& lines) {
  std::vector<Line> out;
  std::set<std::string> warned_keys;
  std::unordered_map<std::string, std::size_t> first_line;  // id -> line
  for (std::size_t i = 0; i < lines.size(); ++i) {
    const std::size_t number = i + 1;
    if (lines[i].find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
    Line l{number, std::to_string(number), {}, {}};
    try {
      std::vector<std::string> unknown;
      l.request = nnx::parse_request_line(lines[i], &unknown);
      for (const std::string& key : unknown)
        if (warned_keys.insert(key).second)
          std::cerr << "serve_batch: line " << number << ": ignoring unknown key " << json(key).dump()
                    << " (not reported again)\n";
      if (l.request.id) l.id = *l.request.id;
      const auto [it, fresh] = first_line.emplace(l.id, number);
      if (!fresh)
        throw nnx::InvalidArgument("duplicate id " + json(l.id).dump() + " (first used on line " +
                                   std::to_string(it->second) + ")");
    } catch (const nnx::InvalidArgument& e) {
      l.error = e.what();
    }
    out.push_back(std::move(l));
  }
  return out;
}

// ---- statistics (numpy's definitions) ----

struct Stats {
  double mean = 0, median = 0, p99 = 0;
};

// np.percentile(v, q) with linear interpolation between the closest ranks.
double percentile(const std::vector<double>& sorted, double q) {
  const double pos = q / 100.0 * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - static_cast<double>(lo));
}

std::optional<Stats> stats(std::vector<double> v) {
  if (v.empty()) return std::nullopt;
  std::sort(v.begin(), v.end());
  double sum = 0;
  for (double x : v) sum += x;
  return Stats{sum / static_cast<double>(v.size()), percentile(v, 50), percentile(v, 99)};
}

std::string fixed(double v, int digits = 2) {
  std::ostringstream s;
  s.setf(std::ios::fixed);
  s.precision(digits);
  s << v;
  return s.str();
}

// ---- progress on stderr ----

class Progress {
 public:
  explicit Progress(std::size_t total) : total_(total), tty_(NNX_ISATTY(NNX_FILENO(stderr)) != 0) {}

  // Called after each scheduling step; `final` once at the end.
  void update(std::size_t done, std::size_t running, std::size_t waiting, std::int64_t tokens, Clock::time_point now,
              Clock::time_point start, bool final = false) {
    if (total_ == 0) return;
    const double elapsed = std::chrono::duration<double>(now - start).count();
    if (tty_) {
      if (!final && drawn_ > 0 && now - last_ < std::chrono::milliseconds(100)) return;
      last_ = now;
      std::string line = text(done, running, waiting, tokens, elapsed);
      const std::size_t width = line.size();
      if (line.size() < drawn_) line.append(drawn_ - line.size(), ' ');
      std::cerr << '\r' << line << (final ? "\n" : "") << std::flush;
      drawn_ = final ? 0 : width;
    } else {
      const std::size_t tenth = total_ ? done * 10 / total_ : 0;
      if (tenth > last_tenth_ || (!final && now - last_ >= std::chrono::seconds(10))) {
        last_tenth_ = tenth;
        last_ = now;
        std::cerr << text(done, running, waiting, tokens, elapsed) << "\n";
      }
    }
  }
  // Erases a progress line drawn on the terminal, before another message is printed.
  void clear() {
    if (tty_ && drawn_ > 0) {
      std::cerr << '\r' << std::string(drawn_, ' ') << '\r';
      drawn_ = 0;
    }
  }

 private:
  std::string text(std::size_t done, std::size_t running, std::size_t waiting, std::int64_t tokens,
                   double elapsed) const {
    return "serve_batch: " + std::to_string(done) + "/" + std::to_string(total_) + " finished, " +
           std::to_string(running) + " running, " + std::to_string(waiting) + " waiting, " + std::to_string(tokens) +
           " tokens in " + fixed(elapsed, 1) + " s (" +
           fixed(elapsed > 0 ? static_cast<double>(tokens) / elapsed : 0.0, 1) + " tokens/s)";
  }

  std::size_t total_;
  bool tty_;
  std::size_t drawn_ = 0;  // characters of the line on the terminal
  std::size_t last_tenth_ = 0;
  Clock::time_point last_ = Clock::now();  // when a line was last written
};

// ---- serving ----

// One stderr line at start: what the weights and the KV cache take, and in which dtypes.
template <class Model>
void report_memory(const nnx::Engine<Model>& engine, const nnx::State& params) {
  const auto name = [](nnx::DType t) {
    return t == nnx::DType::i8 ? std::string("int8") : std::string(nnx::dtype_name(t));
  };
  std::set<std::string> weight_dtypes;
  for (const auto& [path, leaf] : params)
    weight_dtypes.insert(leaf.is_quantized() ? "int8" : name(leaf.dtype()));
  std::string weights;
  for (const std::string& d : weight_dtypes) weights += (weights.empty() ? "" : "+") + d;
  std::fprintf(stderr,
               "serve_batch: memory: weights %.1f MB (%s), KV cache %.1f MB (%s, %lld slots x %lld positions), "
               "layers %s\n",
               static_cast<double>(params.nbytes()) * 1e-6, weights.c_str(),
               static_cast<double>(engine.kv_cache_bytes()) * 1e-6, name(engine.options().kv_dtype).c_str(),
               static_cast<long long>(engine.num_slots()), static_cast<long long>(engine.max_target_length()),
               nnx::layout_name(engine.options().layout));
}

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }
double rounded_us(double ms_value) { return std::round(ms_value * 1000.0) / 1000.0; }

// Serves every line without an error; returns how many failed (finished with nan).
template <class Model>
std::size_t serve(nnx::Scheduler<Model>& scheduler, const std::unordered_map<std::string, std::size_t>& line_of,
                  std::size_t total, std::size_t skipped) {
  std::size_t finished = 0, failed = 0;
  std::vector<double> ttfts, tpots;
  std::int64_t input_tokens = 0, output_tokens = 0;
  Progress progress(total);

  const Clock::time_point start = Clock::now();
  while (!scheduler.idle()) {
    for (const nnx::Completion& c : scheduler.step()) {
      const double ttft = ms(c.first_token - start);
      const double tpot = c.tokens.size() > 1 ? ms(c.finished - c.first_token) / static_cast<double>(c.tokens.size() - 1)
                                              : 0.0;
      nlohmann::ordered_json line;
      line["id"] = c.id;
      line["tokens"] = c.tokens;
      line["ttft_ms"] = rounded_us(ttft);
      line["tpot_ms"] = rounded_us(tpot);
      line["finish_reason"] = nnx::finish_reason_name(c.finish);
      if (scheduler.tokenizer()) line["text"] = c.text;
      if (!c.logprobs.empty()) {
        nlohmann::ordered_json lps = nlohmann::ordered_json::array();
        for (const nnx::TokenLogprobs& t : c.logprobs) {
          nlohmann::ordered_json top = nlohmann::ordered_json::array();
          for (const nnx::TokenLogprob& a : t.top) top.push_back({a.token, a.log_prob});
          lps.push_back({{"token", t.token}, {"log_prob", t.log_prob}, {"top", top}});
        }
        line["logprobs"] = std::move(lps);
      }
      std::cout << line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n" << std::flush;
      if (c.finish == nnx::FinishReason::nan) {
        progress.clear();
        report(line_of.at(c.id), "request " + json(c.id).dump() + ": " + c.error);
        ++failed;
      }
      ttfts.push_back(ttft);
      if (c.tokens.size() > 1) tpots.push_back(tpot);
      input_tokens += c.prompt_tokens;
      output_tokens += static_cast<std::int64_t>(c.tokens.size());
      ++finished;
    }
    progress.update(finished, scheduler.num_running(), scheduler.num_waiting(),
                    output_tokens + scheduler.tokens_in_flight(), Clock::now(), start);
  }
  const Clock::time_point end = Clock::now();
  progress.update(finished, 0, 0, output_tokens, end, start, /*final=*/true);

  // The summary, in the layout of vLLM's benchmark_serving.py (JetStream's names).
  const double seconds = std::chrono::duration<double>(end - start).count();
  const double per_s = seconds > 0 ? 1.0 / seconds : 0.0;
  auto row = [](const std::string& label, const std::string& value) {
    std::string l = label;
    if (l.size() < 40) l.append(40 - l.size(), ' ');
    std::cerr << l << ' ' << value << "\n";
  };
  auto stat_rows = [&](const char* name, const std::vector<double>& values) {
    const std::optional<Stats> st = stats(values);
    row(std::string("Mean ") + name + " (ms):", st ? fixed(st->mean) : "n/a");
    row(std::string("Median ") + name + " (ms):", st ? fixed(st->median) : "n/a");
    row(std::string("P99 ") + name + " (ms):", st ? fixed(st->p99) : "n/a");
  };
  std::cerr << "============ serve_batch summary =============\n";
  row("Successful requests:", std::to_string(finished - failed));
  row("Failed requests (nan):", std::to_string(failed));
  row("Skipped lines:", std::to_string(skipped));
  row("Slots:", std::to_string(scheduler.engine().num_slots()));
  row("Benchmark duration (s):", fixed(seconds, 3));
  row("Total input tokens:", std::to_string(input_tokens));
  row("Total generated tokens:", std::to_string(output_tokens));
  row("Request throughput (req/s):", fixed(static_cast<double>(finished) * per_s));
  row("Input token throughput (tok/s):", fixed(static_cast<double>(input_tokens) * per_s));
  row("Output token throughput (tok/s):", fixed(static_cast<double>(output_tokens) * per_s));
  std::cerr << "------------ Time to First Token -------------\n";
  stat_rows("TTFT", ttfts);
  std::cerr << "--- Time per Output Token (excl. 1st token) --\n";
  stat_rows("TPOT", tpots);
  std::cerr << "==============================================\n";
  return failed;
}

template <class Model, class Config>
int run(const Args& args, const nlohmann::json& config, const std::vector<std::string>& text) {
  std::vector<Line> lines = parse_lines(text);
  const auto valid = static_cast<std::int64_t>(
      std::count_if(lines.begin(), lines.end(), [](const Line& l) { return l.error.empty(); }));
  nnx::EngineOptions options;
  options.max_prefill_length = args.max_prefill_length;
  options.max_target_length = args.max_target_length;  // 0: the model's context length
  options.slots = std::max<std::int64_t>(1, std::min(args.slots, valid));  // an unused slot still costs its cache
  options.quant = nnx::QuantConfig::of_model_config(config);  // an int8 serve checkpoint loads as int8
  options.kv_dtype = args.kv_dtype;
  options.weight_dtype = args.weight_dtype;
  options.lora_adapter = args.lora;
  options.layout = args.layout.value_or(nnx::stored_layout<Model>(args.model));
  const nnx::Engine<Model> engine(Config::from_json(config), options);
  nnx::State params = engine.load_params(args.model);
  report_memory(engine, params);
  // The tokenizer named, else the model directory's if it has one, else none (token ids only).
  std::shared_ptr<const nnx::text::Tokenizer> tokenizer;
  const std::filesystem::path tok = args.tokenizer.empty() ? args.model : args.tokenizer;
  if (!args.tokenizer.empty() || std::filesystem::exists(tok / "tokenizer.json") ||
      std::filesystem::exists(tok / "vocab.json"))
    tokenizer = std::make_shared<const nnx::text::Tokenizer>(nnx::text::Tokenizer::load(tok));
  nnx::Scheduler<Model> scheduler(engine, std::move(params), tokenizer);

  // Every bad line is reported before serving starts, in line order.
  std::unordered_map<std::string, std::size_t> line_of;  // id -> line number
  std::size_t skipped = 0;
  for (Line& l : lines) {
    if (l.error.empty()) {
      try {
        scheduler.submit(l.id, std::move(l.request));
        line_of.emplace(l.id, l.number);
        continue;
      } catch (const nnx::InvalidArgument& e) {
        l.error = e.what();
      }
    }
    report(l.number, l.error);
    ++skipped;
  }
  const std::size_t failed = serve(scheduler, line_of, line_of.size(), skipped);
  return skipped + failed > 0 ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    if (args.threads > 0) nnx::set_num_threads(args.threads);
    const std::vector<std::string> lines = read_lines(args.requests);
    if (args.verify) (void)nnx::verify_model_files(args.model);
    const nlohmann::json config = nnx::read_model_config(args.model);
    return nnx::with_model_type(config, args.model.string(), [&]<class Model, class Config>() {
      return run<Model, Config>(args, config, lines);
    });
  } catch (const std::exception& e) {
    return cli::report_error("serve_batch", e);
  }
}
