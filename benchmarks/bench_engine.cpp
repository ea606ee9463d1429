// bench_engine — the inference engine (nnx::Engine) end to end on a GPT-2-124M-shaped model
// and a ~1.2B Llama-3.2-1B-shaped model (2048 wide, 16 layers, 32 query / 8 kv heads, MLP
// 8192, vocab 128256, tied embeddings), random f32 weights from engine.init_params.
//
//   build/benchmarks/bench_engine --benchmark_filter='ReadBandwidth|Gpt2'
//   build/benchmarks/bench_engine --benchmark_filter='ReadBandwidth|Llama1B'
//   build/benchmarks/bench_engine --benchmark_filter='ReadBandwidth|Gpt2W8A8_'   (int8; Gpt2W8_: weight-only)
//   build/benchmarks/bench_engine --benchmark_filter='ReadBandwidth|Llama162M_'  (and Llama162MW8A8_,
//                                    Llama953MW8A8_: the shapes of the kernel-backend targets;
//                                    Llama162MW8A8KV8_ and KV16_: int8 and bf16 KV caches;
//                                    Llama162MBF16_: bf16 weights served from a bf16 file)
//
// Run one model per process: each model is built once, lazily, the first time one of its
// benchmarks runs, and its peak-memory counters (VmHWM, VmRSS) describe that process. The
// bandwidth probe runs before any model is loaded and the peak RSS is reset after it
// (/proc/self/clear_refs), so its 1 GiB buffer does not count toward a model's peak.
//
// What is measured (every benchmark takes the thread count, nnx::set_num_threads, as its
// last argument):
//   BM_ReadBandwidth/<threads>/<streams>
//                                    an integer sum over 1 GiB: the DRAM read bandwidth
//                                    that bounds batch-1 decoding (see below).
//   BM_<M>_TTFT/<tokens>/<threads>   engine.prefill of a 128- or 512-token prompt (one chunk,
//                                    max_prefill_length 512, max_target_length 1024) and
//                                    its greedy first token: the time to first token.
//   BM_<M>_Decode/<slots>/<sampling>/<threads>
//                                    engine.generate with every slot active, the state
//                                    donated; sampling 0 = greedy, 1 = temperature 0.8 and
//                                    top_p 0.9. Each slot starts from a 256-token prompt
//                                    and decodes positions 256..319 (re-inserted, untimed,
//                                    every 64 steps; each repetition starts again at 256),
//                                    so the context is 256-320 tokens. Counters: tok_per_s,
//                                    the weight-read floor, the share of it, the mean
//                                    context and the KV bytes read per step, step_bytes_share
//                                    (weights + KV read per step, per second, over the
//                                    bandwidth), peak memory.
//   BM_<M>_DecodeActive/<slots>/<active>/<threads>
//                                    Decode (greedy) with `active` of the slots busy, the
//                                    others idle: compare 8 slots, 1 active with Decode/1.
//   BM_<M>_DecodeStepRaw/<slots>/<threads>
//                                    nnx::decode_step on a model merged once, no engine:
//                                    generate minus this is the engine's per-step cost.
//   BM_<M>_MergeSplit/<slots>        merge(decode graphdef, params, cache) + state(of<Cache>),
//                                    as generate does once per step.
//   BM_<M>_SampleToken/<sampling>    sample_token on one row of the model's own logits.
//   BM_<M>_PrefixCacheZeros          the zeroed [1, 1024, Hkv, D] caches every prefill
//                                    allocates.
//   BM_<M>_Insert/<slots>            insert of a 256-token prefix into every slot.
//
// Weight bytes read per token: every parameter once, except GPT-2's wpe table and an untied
// Llama's embed_tokens, of which a token reads one row (a tied table is read whole by the
// output head, and its embedding row again, which is not counted). Floor tokens/s = bandwidth / weight bytes per token,
// times the slots for batch > 1 (a step reads the weights once). The bandwidth is measured
// during each decode benchmark, at its thread count, by summing the weights themselves as
// integer words (1 and 8 streams per thread, the faster counts): one pass of each between
// every 64 decode steps (while the slots are refilled, untimed) and 3 right after, the median
// taken. This machine's DRAM rate moves by ±30 % from minute to minute (other tenants of the
// host), so a probe run minutes earlier is not a floor (decode once beat the 1 GiB probe run
// before it), and one run only after the decode drifted from it by up to 20 %.
// KV-cache reads are not in the floor (the counters kv_read_mb_per_step give their size).
#include <benchmark/benchmark.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/models.hpp>

#if __has_include(<nnx/ops/threads.hpp>)
#include <nnx/ops/threads.hpp>
#define NNX_BENCH_HAS_THREADS 1
#else
#define NNX_BENCH_HAS_THREADS 0
#endif

#include "read_bandwidth.hpp"

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::int64_t kPrompts[] = {128, 512};  // TTFT prompt tokens
constexpr std::int64_t kTarget = 1024;       // max_target_length
constexpr std::int64_t kPrefillChunk = 512;  // max_prefill_length
constexpr std::int64_t kDecodePrompt = 256;  // tokens in a slot when decoding starts
constexpr std::int64_t kDecodeSpan = 64;     // steps between re-inserts: positions 256..319
constexpr double kMiB = 1024.0 * 1024.0;

void set_threads(std::int64_t n) {
#if NNX_BENCH_HAS_THREADS
  nnx::set_num_threads(static_cast<int>(n));
#else
  if (n != 1) throw std::runtime_error("this build has no nnx::set_num_threads");
#endif
}

// ---- process memory -----------------------------------------------------------------------

struct ProcMem {
  double rss_mib = 0.0;  // VmRSS
  double hwm_mib = 0.0;  // VmHWM (peak RSS)
};

ProcMem proc_mem() {
  ProcMem m;
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    long kb = 0;
    if (std::sscanf(line.c_str(), "VmRSS: %ld kB", &kb) == 1) m.rss_mib = static_cast<double>(kb) / 1024.0;
    if (std::sscanf(line.c_str(), "VmHWM: %ld kB", &kb) == 1) m.hwm_mib = static_cast<double>(kb) / 1024.0;
  }
  return m;
}

// Resets VmHWM to the current RSS (Linux >= 4.0). Returns false where not permitted.
bool reset_peak_rss() {
  std::ofstream f("/proc/self/clear_refs");
  f << "5";
  f.flush();
  return static_cast<bool>(f);
}

// ---- memory bandwidth -----------------------------------------------------------------------
//
// Two probes (read_bandwidth.hpp), each summing a 1 GiB buffer of integer words split into one
// contiguous part per thread:
//   streams 1: each thread reads its part front to back (bench_models' probe);
//   streams 8: each thread reads its part as 8 interleaved sequential streams. On this
//              machine that reads ~1.5x faster on one thread, and decode itself beats the
//              one-stream rate.
// The floor uses the faster probe (the larger bandwidth gives the stricter floor).

constexpr std::size_t kBandwidthWords = (std::size_t{1} << 30) / sizeof(std::uint64_t);
std::map<std::pair<std::int64_t, std::int64_t>, std::vector<double>> g_bandwidth;  // (threads, streams) -> B/s

using nnx_bench::sum_streams;

// Sums n 8-byte words, one contiguous part per thread.
std::uint64_t sum_words(const std::byte* data, std::size_t n, std::int64_t streams) {
  const auto part_sum = [streams](const std::byte* d, std::size_t m) noexcept {
    return streams == 1 ? sum_streams<1>(d, m) : sum_streams<8>(d, m);
  };
#if NNX_BENCH_HAS_THREADS
  std::uint64_t partial[nnx::kMaxThreads] = {};
  nnx::kernels::parallel_for(static_cast<std::int64_t>(n), [&](std::int64_t b, std::int64_t e, int chunk) noexcept {
    partial[chunk] = part_sum(data + 8 * b, static_cast<std::size_t>(e - b));
  });
  return std::accumulate(std::begin(partial), std::end(partial), std::uint64_t{0});
#else
  return part_sum(data, n);
#endif
}

// The probe's 1 GiB of words, allocated as tensors are (in 2 MiB pages where the kernel has
// transparent huge pages, as the weights are): 4 KiB pages would understate the machine.
nnx::Tensor probe_buffer() {
  return nnx::Tensor::full({static_cast<std::int64_t>(kBandwidthWords)}, 1, nnx::DType::u64);
}

std::uint64_t sum_buffer(const nnx::Tensor& buffer, std::int64_t streams) {
  return sum_words(buffer.raw_data(), buffer.nbytes() / sizeof(std::uint64_t), streams);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Bytes/s of one pass over the buffer (after one untimed pass that faults the pages in).
double time_pass(const nnx::Tensor& buffer, std::int64_t streams) {
  benchmark::DoNotOptimize(sum_buffer(buffer, streams));
  const auto t0 = Clock::now();
  benchmark::DoNotOptimize(sum_buffer(buffer, streams));
  return static_cast<double>(buffer.nbytes()) /
         std::chrono::duration<double>(Clock::now() - t0).count();
}

// Bytes/s of reading every parameter once with a probe (the weights are far larger than
// the 32 MiB L3, and reading them needs no extra memory), at the current thread count.
double weight_read_pass(const nnx::State& params, std::int64_t streams) {
  double bytes = 0.0;
  std::uint64_t sum = 0;
  const auto t0 = Clock::now();
  const auto read = [&](const nnx::Tensor& t) {
    const std::size_t words = t.nbytes() / 8;
    sum += sum_words(t.raw_data(), words, streams);
    bytes += static_cast<double>(words * 8);
  };
  for (const auto& [path, leaf] : params) {
    if (leaf.is_quantized()) {
      read(leaf.qtensor().qvalue);
      for (const nnx::Tensor& sc : leaf.qtensor().scale) read(sc);
    } else {
      read(leaf.tensor());
    }
  }
  benchmark::DoNotOptimize(sum);
  return bytes / std::chrono::duration<double>(Clock::now() - t0).count();
}

void BM_ReadBandwidth(benchmark::State& state) {
  const std::int64_t threads = state.range(0), streams = state.range(1);
  set_threads(threads);
  const nnx::Tensor buffer = probe_buffer();  // freed on return: not a model's peak
  benchmark::DoNotOptimize(sum_buffer(buffer, streams));  // fault the pages in
  double seconds = 0.0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    std::uint64_t sum = sum_buffer(buffer, streams);
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    benchmark::DoNotOptimize(sum);
  }
  const double bytes = static_cast<double>(kBandwidthWords * sizeof(std::uint64_t)) *
                       static_cast<double>(state.iterations());
  g_bandwidth[{threads, streams}].push_back(bytes / seconds);
  state.counters["GB_per_s"] = benchmark::Counter(bytes / seconds / 1e9);
}

// The median bandwidth measured so far by one probe; measured now (3 passes) if
// BM_ReadBandwidth did not run (filtered out).
double bandwidth(std::int64_t threads, std::int64_t streams) {
  auto& v = g_bandwidth[{threads, streams}];
  if (v.empty()) {
    set_threads(threads);
    const nnx::Tensor buffer = probe_buffer();
    for (int r = 0; r < 3; ++r) v.push_back(time_pass(buffer, streams));
  }
  return median(v);
}

// ---- models -------------------------------------------------------------------------------

nnx::Gpt2Config gpt2_124m() { return nnx::Gpt2Config{}; }

// Llama-3.2-1B's shape (1.24B parameters, 4.94 GB in f32); context cut to 2048 positions.
nnx::LlamaConfig llama_1b() {
  nnx::LlamaConfig c;
  c.vocab_size = 128256;
  c.hidden_size = 2048;
  c.intermediate_size = 8192;
  c.num_hidden_layers = 16;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 8;
  c.max_position_embeddings = 2048;
  c.rope_theta = 500000.0;
  c.tie_word_embeddings = true;
  return c;
}

// The Llama shapes of the kernel-backend targets (issue 9, PERFORMANCE.md): 162M (768 wide,
// 12 layers, 12 heads, MLP 3072, vocab 32000, untied) and 953M (2048 wide, 16 layers, 32
// heads, MLP 5632, vocab 32000, untied), the models llama.cpp was measured on.
nnx::LlamaConfig llama_shape(std::int64_t width, std::int64_t layers, std::int64_t heads, std::int64_t mlp) {
  nnx::LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = width;
  c.intermediate_size = mlp;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads;
  c.max_position_embeddings = 2048;
  c.tie_word_embeddings = false;
  return c;
}

nnx::SamplingParams sampling_of(std::int64_t mode) {
  return mode == 0 ? nnx::SamplingParams::greedy() : nnx::SamplingParams{.temperature = 0.8, .top_p = 0.9};
}

template <class Model>
struct Bench {
  using Config = std::remove_cvref_t<decltype(std::declval<Model&>().config)>;

  Config config;
  nnx::QuantConfig quant;  // int8 layers, as the engine serves them (none: f32)
  nnx::DType kv_dtype;     // the KV cache's
  nnx::DType weights;      // the dtype of the weights not quantized
  nnx::State params;
  double file_bytes = 0.0;     // 16-bit weights: the bf16 Hugging Face file they are served from
  double resident_bytes = 0.0;  // the RSS that loading and reading every weight once added
  double weight_bytes = 0.0;            // every parameter
  double weight_bytes_per_token = 0.0;  // read by one decode step (see the file comment)
  double params_count = 0.0;
  double load_seconds = 0.0;
  ProcMem before_load, after_load;
  bool peak_reset = false;
  std::map<std::int64_t, std::unique_ptr<nnx::Engine<Model>>> engines;  // by slots
  std::map<std::int64_t, std::vector<nnx::Prefix>> prefixes;              // by sampling mode
  std::vector<std::int32_t> prompt;         // kPrefillChunk tokens: TTFT's prompts, and decode's first kDecodePrompt
  std::int64_t max_slots_run = 0;  // the largest decode state this process has held

  explicit Bench(const Config& c, nnx::QuantConfig q = {}, nnx::DType kv = nnx::DType::f32,
                 nnx::DType w = nnx::DType::f32)
      : config(c), quant(std::move(q)), kv_dtype(kv), weights(w) {
    // The bandwidth probes allocate 1 GiB: done before the model, then the peak is reset.
    for (std::int64_t threads : {1, NNX_BENCH_HAS_THREADS ? 2 : 1})
      for (std::int64_t streams : {1, 8}) bandwidth(threads, streams);
    // 16-bit weights are served from a file, as a user serves a Hugging Face model (written
    // by a child process, so that the random f32 init does not count in this one's memory).
    const std::filesystem::path dir = std::filesystem::temp_directory_path() / "nnx_bench_weights";
    if (weights != nnx::DType::f32) write_hf_file(dir);
    peak_reset = reset_peak_rss();
    before_load = proc_mem();
    const auto t0 = Clock::now();
    params = weights == nnx::DType::f32 ? engine(1).init_params(0) : engine(1).load_params(dir);
    load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    after_load = proc_mem();
    if (weights != nnx::DType::f32) {
      file_bytes = static_cast<double>(std::filesystem::file_size(dir / "model.safetensors"));
      (void)weight_read_pass(params, 8);  // every page of the file touched, as decoding does
      resident_bytes = (proc_mem().rss_mib - before_load.rss_mib) * kMiB;
      std::filesystem::remove_all(dir);  // the mapping stays valid; the space returns at exit
    }
    weight_bytes = static_cast<double>(params.nbytes());
    weight_bytes_per_token = weight_bytes;
    bool has_lm_head = false;
    for (const auto& [path, leaf] : params) has_lm_head |= path.to_string().starts_with("lm_head");
    for (const auto& [path, leaf] : params) {
      params_count += static_cast<double>(leaf.is_quantized() ? leaf.qtensor().qvalue.numel() : leaf.tensor().numel());
      const std::string p = path.to_string();
      const auto ends_with = [&](std::string_view tail) {
        return p.size() >= tail.size() && p.compare(p.size() - tail.size(), tail.size(), tail) == 0;
      };
      // A lookup table of which a token reads one row: GPT-2's wpe, and an untied Llama's
      // token embedding (its lm_head is the one read whole).
      if (ends_with("wpe/embedding") || (ends_with("embed_tokens/embedding") && has_lm_head))
        weight_bytes_per_token -= static_cast<double>(leaf.nbytes()) -
                                  static_cast<double>(leaf.tensor().dim(1) * nnx::dtype_size(leaf.dtype()));
    }
    const std::int64_t V = engine(1).vocab_size();
    for (std::int64_t i = 0; i < kPrefillChunk; ++i) prompt.push_back(static_cast<std::int32_t>((i * 7919 + 13) % V));
  }

  nnx::Engine<Model>& engine(std::int64_t slots) {
    auto& e = engines[slots];
    if (!e) {
      nnx::EngineOptions o;
      o.max_prefill_length = kPrefillChunk;
      o.max_target_length = kTarget;
      o.slots = slots;
      o.quant = quant;
      o.kv_dtype = kv_dtype;
      o.weight_dtype = weights == nnx::DType::f32 ? nnx::WeightDType::f32
                       : weights == nnx::DType::bf16 ? nnx::WeightDType::bf16
                                                     : nnx::WeightDType::f16;
      e = std::make_unique<nnx::Engine<Model>>(config, o);
    }
    return *e;
  }

  // A Hugging Face directory of this model's random weights in `weights`, written by a child.
  void write_hf_file(const std::filesystem::path& dir) {
    const pid_t child = ::fork();
    if (child == 0) {
      int code = 0;
      try {
        set_threads(1);  // the child has no worker threads
        nnx::io::save_hf(dir, config.to_json(), engine(1).init_params(0), weights);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_engine: writing %s: %s\n", dir.c_str(), e.what());
        code = 1;
      }
      std::_Exit(code);
    }
    int status = 0;
    if (child < 0 || ::waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw std::runtime_error("bench_engine: could not write the weights file " + dir.string());
  }

  nnx::Tensor prompt_tensor(std::int64_t n) const {
    return nnx::Tensor::from_vector(std::span<const std::int32_t>(prompt.data(), static_cast<std::size_t>(n)), {n});
  }

  // Eight first tokens of the decode prompt (one forward pass, one shared cache, keys
  // fold_in(7, j)).
  const std::vector<nnx::Prefix>& prefix(std::int64_t sampling) {
    auto& p = prefixes[sampling];
    if (p.empty())
      p = engine(1).prefill_multisampling(params, prompt_tensor(kDecodePrompt), kDecodePrompt, 8,
                                          sampling_of(sampling), nnx::key_from_seed(7));
    return p;
  }

  // Bytes of the KV cache of a decode state with `slots` slots, and of one prefix.
  // (A prefix's cache is one slot's: [1, max_target_length, Hkv, D] per layer, K and V.)
  double kv_bytes(std::int64_t slots) { return static_cast<double>(prefix(0)[0].cache.nbytes()) * slots; }
  // Bytes of the prefix caches held (one per sampling mode used).
  double prefix_kv_bytes() { return kv_bytes(1) * static_cast<double>(prefixes.size()); }
  // K and V bytes one step reads per slot at context `positions`.
  double kv_read_bytes(double positions) { return kv_bytes(1) / static_cast<double>(kTarget) * positions; }
};

Bench<nnx::Gpt2>& gpt2() {
  static Bench<nnx::Gpt2> b(gpt2_124m());
  return b;
}
// The same GPT-2 served in int8 (every Linear and the tied head), quantized once at load.
nnx::QuantConfig int8(nnx::QuantScheme scheme) {
  nnx::QuantConfig q;
  q.scheme = scheme;
  q.include_head = true;
  return q;
}
Bench<nnx::Gpt2>& gpt2_w8a8() {
  static Bench<nnx::Gpt2> b(gpt2_124m(), int8(nnx::QuantScheme::w8a8));
  return b;
}
Bench<nnx::Gpt2>& gpt2_weight_only() {
  static Bench<nnx::Gpt2> b(gpt2_124m(), int8(nnx::QuantScheme::weight_only));
  return b;
}
Bench<nnx::Llama>& llama() {
  static Bench<nnx::Llama> b(llama_1b());
  return b;
}
Bench<nnx::Llama>& llama_162m() {
  static Bench<nnx::Llama> b(llama_shape(768, 12, 12, 3072));
  return b;
}
Bench<nnx::Llama>& llama_162m_w8a8() {
  static Bench<nnx::Llama> b(llama_shape(768, 12, 12, 3072), int8(nnx::QuantScheme::w8a8));
  return b;
}
// The 162M W8A8 Llama with an int8 or bf16 KV cache (the compact-serving targets).
Bench<nnx::Llama>& llama_162m_w8a8_kv8() {
  static Bench<nnx::Llama> b(llama_shape(768, 12, 12, 3072), int8(nnx::QuantScheme::w8a8), nnx::DType::i8);
  return b;
}
Bench<nnx::Llama>& llama_162m_w8a8_kv16() {
  static Bench<nnx::Llama> b(llama_shape(768, 12, 12, 3072), int8(nnx::QuantScheme::w8a8), nnx::DType::bf16);
  return b;
}
// The 162M Llama served in bf16 as a Hugging Face file stores it (the bf16-weights target).
Bench<nnx::Llama>& llama_162m_bf16() {
  static Bench<nnx::Llama> b(llama_shape(768, 12, 12, 3072), {}, nnx::DType::f32, nnx::DType::bf16);
  return b;
}
Bench<nnx::Llama>& llama_953m_w8a8() {
  static Bench<nnx::Llama> b(llama_shape(2048, 16, 32, 5632), int8(nnx::QuantScheme::w8a8));
  return b;
}

template <class Model>
void model_counters(benchmark::State& state, Bench<Model>& b) {
  state.counters["params_M"] = b.params_count / 1e6;
  state.counters["weight_MB"] = b.weight_bytes / 1e6;
  state.counters["weight_MB_per_tok"] = b.weight_bytes_per_token / 1e6;
}

void memory_counters(benchmark::State& state, double weights_and_kv_bytes, const ProcMem& m = proc_mem()) {
  state.counters["rss_MiB"] = m.rss_mib;
  state.counters["peak_rss_MiB"] = m.hwm_mib;
  state.counters["weights_kv_MiB"] = weights_and_kv_bytes / kMiB;
  state.counters["peak_over_weights_kv"] = m.hwm_mib / (weights_and_kv_bytes / kMiB);
}

// ---- benchmarks ----------------------------------------------------------------------------

// Loading (random init) and the memory after it; one iteration.
template <class Model>
void load(benchmark::State& state, Bench<Model>& b) {
  for (auto _ : state) benchmark::DoNotOptimize(b.params.size());
  model_counters(state, b);
  state.counters["load_s"] = b.load_seconds;
  state.counters["rss_before_MiB"] = b.before_load.rss_mib;
  state.counters["rss_after_MiB"] = b.after_load.rss_mib;
  state.counters["peak_after_MiB"] = b.after_load.hwm_mib;
  state.counters["peak_reset"] = b.peak_reset;
  if (b.file_bytes > 0) {
    state.counters["file_MB"] = b.file_bytes / 1e6;
    state.counters["resident_MB"] = b.resident_bytes / 1e6;
    state.counters["resident_over_file"] = b.resident_bytes / b.file_bytes;
  }
}

template <class Model>
void ttft(benchmark::State& state, Bench<Model>& b) {
  const std::int64_t n = state.range(0);
  set_threads(state.range(1));
  auto& e = b.engine(1);
  const nnx::Tensor tokens = b.prompt_tensor(n);
  for (auto _ : state) {
    nnx::Prefix p = e.prefill(b.params, tokens, n, nnx::SamplingParams::greedy(), nnx::key_from_seed(1));
    benchmark::DoNotOptimize(p.token);
  }
  state.counters["prefill_tok_per_s"] =
      benchmark::Counter(static_cast<double>(n * state.iterations()), benchmark::Counter::kIsRate);
  model_counters(state, b);
}

template <class Model>
nnx::DecodeState insert_all(nnx::Engine<Model>& e, const std::vector<nnx::Prefix>& prefixes, nnx::DecodeState s,
                            std::int64_t active = -1) {  // the first `active` slots (-1: all)
  for (std::int64_t i = 0; i < (active < 0 ? e.num_slots() : active); ++i) {
    if (s.slots[static_cast<std::size_t>(i)].occupied) s = e.release(std::move(s), i);
    s = e.insert(prefixes[static_cast<std::size_t>(i % 8)], std::move(s), i);
  }
  return s;
}

// Decoding with `active` of the engine's `slots` slots busy (the others idle).
template <class Model>
void decode_with(benchmark::State& state, Bench<Model>& b, std::int64_t slots, std::int64_t active,
                 std::int64_t sampling, std::int64_t threads) {
  const auto& prefixes = b.prefix(sampling);
  auto& e = b.engine(slots);
  set_threads(threads);
  nnx::DecodeState s = insert_all(e, prefixes, e.init_decode_state(), active);
  std::int64_t steps = 0;
  double seconds = 0.0, tokens = 0.0, context = 0.0;
  std::vector<double> bw_weights_1, bw_weights_8;  // probe passes interleaved with the decode
  for (auto _ : state) {
    if (steps == kDecodeSpan) {
      state.PauseTiming();
      bw_weights_1.push_back(weight_read_pass(b.params, 1));
      bw_weights_8.push_back(weight_read_pass(b.params, 8));
      s = insert_all(e, prefixes, std::move(s), active);
      steps = 0;
      state.ResumeTiming();
    }
    context += static_cast<double>(s.slots[0].next_position);
    const auto t0 = Clock::now();
    auto out = e.generate(b.params, std::move(s));
    seconds += std::chrono::duration<double>(Clock::now() - t0).count();
    s = std::move(out.state);
    ++steps;
    for (std::int64_t i = 0; i < active; ++i)
      if (!out.result.at(i).valid) {
        state.SkipWithError("a slot was not active");
        return;
      }
    tokens += static_cast<double>(active);
    benchmark::DoNotOptimize(out.result.at(0).token);
  }
  const double tok_s = tokens / seconds;
  // The floor's bandwidth (same threads): the faster of the two probes reading the weights
  // themselves, the median of the passes between the decode's spans and 3 more right after.
  // The 1 GiB probes (BM_ReadBandwidth, before the model was loaded) are reported beside it.
  const ProcMem mem = proc_mem();  // with the decode state still held
  s = nnx::DecodeState{};
  for (int r = 0; r < 3; ++r) {
    bw_weights_1.push_back(weight_read_pass(b.params, 1));
    bw_weights_8.push_back(weight_read_pass(b.params, 8));
  }
  const double bw = std::max(median(bw_weights_1), median(bw_weights_8));
  const double floor = bw / b.weight_bytes_per_token * static_cast<double>(active);
  state.counters["tok_per_s"] = tok_s;
  state.counters["bandwidth_GB_per_s"] = bw / 1e9;
  state.counters["bw_weights_1stream_GB_per_s"] = median(bw_weights_1) / 1e9;
  state.counters["bw_weights_8stream_GB_per_s"] = median(bw_weights_8) / 1e9;
  state.counters["bw_probe_passes"] = static_cast<double>(bw_weights_1.size());
  state.counters["bw_1GiB_1stream_GB_per_s"] = bandwidth(threads, 1) / 1e9;
  state.counters["bw_1GiB_8stream_GB_per_s"] = bandwidth(threads, 8) / 1e9;
  state.counters["floor_tok_per_s"] = floor;
  state.counters["share_of_floor"] = tok_s / floor;
  const double mean_context = context / (tokens / static_cast<double>(active));
  state.counters["mean_context"] = mean_context;
  state.counters["kv_read_MB_per_step"] = b.kv_read_bytes(mean_context) * static_cast<double>(active) / 1e6;
  // What a step reads (the weights once, every busy slot's K and V) per second, against the
  // bandwidth.
  const double step_bytes = b.weight_bytes_per_token + b.kv_read_bytes(mean_context) * static_cast<double>(active);
  state.counters["step_bytes_share"] = step_bytes * tok_s / static_cast<double>(active) / bw;
  model_counters(state, b);
  // The peak so far in this process, against the weights, the largest decode state run so
  // far in it (the peak keeps it after it is freed) and the prefix caches held.
  b.max_slots_run = std::max(b.max_slots_run, slots);
  memory_counters(state, b.weight_bytes + b.kv_bytes(b.max_slots_run) + b.prefix_kv_bytes(), mem);
}

template <class Model>
void decode(benchmark::State& state, Bench<Model>& b) {
  decode_with(state, b, state.range(0), state.range(0), state.range(1), state.range(2));
}
template <class Model>
void decode_active(benchmark::State& state, Bench<Model>& b) {
  decode_with(state, b, state.range(0), state.range(1), 0, state.range(2));
}

// decode_step on a model merged once: the forward pass alone, without the engine.
template <class Model>
void decode_step_raw(benchmark::State& state, Bench<Model>& b) {
  const std::int64_t slots = state.range(0), threads = state.range(1);
  set_threads(threads);
  nnx::Rngs rngs{0};
  Model abstract = nnx::eval_shape(
      [&] {
        return Model(b.config, nnx::Mode::autoregressive, rngs,
                     {.cache_batch = slots, .cache_length = kTarget, .cache_dtype = b.kv_dtype});
      });
  nnx::cast_weights(abstract, b.weights);
  nnx::quantize(abstract, b.quant, nnx::QuantMode::serve);
  auto [graphdef, abstract_params, abstract_cache] = nnx::split(abstract, nnx::of<nnx::Param>, nnx::of<nnx::Cache>);
  nnx::State cache = abstract_cache.map([](const nnx::Tensor& t) { return nnx::Tensor::zeros(t.shape(), t.dtype()); });
  Model m = nnx::merge(graphdef, b.params, std::move(cache));
  const nnx::Tensor tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>(static_cast<std::size_t>(slots), 42),
                                                      {slots});
  std::vector<std::int64_t> positions(static_cast<std::size_t>(slots), kDecodePrompt);
  for (auto _ : state) {
    nnx::Tensor logits = nnx::decode_step(m, tokens, positions);
    benchmark::DoNotOptimize(logits.raw_data());
    for (auto& p : positions) p = p + 1 == kDecodePrompt + kDecodeSpan ? kDecodePrompt : p + 1;
  }
  state.counters["tok_per_s"] = benchmark::Counter(static_cast<double>(slots * state.iterations()),
                                                   benchmark::Counter::kIsRate);
}

// The per-step merge and split of generate.
template <class Model>
void merge_split(benchmark::State& state, Bench<Model>& b) {
  const std::int64_t slots = state.range(0);
  nnx::Rngs rngs{0};
  Model abstract = nnx::eval_shape(
      [&] {
        return Model(b.config, nnx::Mode::autoregressive, rngs,
                     {.cache_batch = slots, .cache_length = kTarget, .cache_dtype = b.kv_dtype});
      });
  nnx::cast_weights(abstract, b.weights);
  nnx::quantize(abstract, b.quant, nnx::QuantMode::serve);
  auto [graphdef, abstract_params, abstract_cache] = nnx::split(abstract, nnx::of<nnx::Param>, nnx::of<nnx::Cache>);
  nnx::State cache = abstract_cache.map([](const nnx::Tensor& t) { return nnx::Tensor::zeros(t.shape(), t.dtype()); });
  for (auto _ : state) {
    Model m = nnx::merge(graphdef, b.params, std::move(cache));
    cache = nnx::state(m, nnx::of<nnx::Cache>);
    benchmark::DoNotOptimize(cache.size());
  }
  state.counters["leaves"] = static_cast<double>(b.params.size() + cache.size());
}

// sample_token on one row of this model's logits (those of the prompt's last position).
template <class Model>
void sample(benchmark::State& state, Bench<Model>& b) {
  const std::int64_t mode = state.range(0);
  const nnx::Prefix& p = b.prefix(0)[0];
  const nnx::SamplingParams params = sampling_of(mode);
  const std::int64_t V = p.last_logits.numel();
  std::uint64_t step = 0;
  for (auto _ : state) {
    const nnx::SampledToken t = nnx::sample_token(p.last_logits.data<float>(), V, params,
                                                  nnx::fold_in(nnx::key_from_seed(3), step++));
    benchmark::DoNotOptimize(t);
  }
  state.counters["vocab"] = static_cast<double>(V);
}

// The zeroed prefix cache every prefill allocates ([1, max_target_length, Hkv, D] per layer).
template <class Model>
void prefix_cache_zeros(benchmark::State& state, Bench<Model>& b) {
  const nnx::State spec = b.prefix(0)[0].cache;
  for (auto _ : state) {
    nnx::State c = spec.map([](const nnx::Tensor& t) { return nnx::Tensor::zeros(t.shape(), t.dtype()); });
    benchmark::DoNotOptimize(c.size());
  }
  state.counters["MB"] = static_cast<double>(spec.nbytes()) / 1e6;
}

template <class Model>
void insert(benchmark::State& state, Bench<Model>& b) {
  const std::int64_t slots = state.range(0);
  auto& e = b.engine(slots);
  const auto& prefixes = b.prefix(0);
  nnx::DecodeState s = insert_all(e, prefixes, e.init_decode_state());
  for (auto _ : state) {
    s = insert_all(e, prefixes, std::move(s));
    benchmark::DoNotOptimize(s.slots.data());
  }
}

#define NNX_MODEL_BENCHES(NAME, BENCH)                                                                       \
  void BM_##NAME##_Load(benchmark::State& s) { load(s, BENCH()); }                                           \
  void BM_##NAME##_TTFT(benchmark::State& s) { ttft(s, BENCH()); }                                           \
  void BM_##NAME##_Decode(benchmark::State& s) { decode(s, BENCH()); }                                       \
  void BM_##NAME##_DecodeActive(benchmark::State& s) { decode_active(s, BENCH()); }                          \
  void BM_##NAME##_DecodeStepRaw(benchmark::State& s) { decode_step_raw(s, BENCH()); }                       \
  void BM_##NAME##_MergeSplit(benchmark::State& s) { merge_split(s, BENCH()); }                              \
  void BM_##NAME##_SampleToken(benchmark::State& s) { sample(s, BENCH()); }                                  \
  void BM_##NAME##_PrefixCacheZeros(benchmark::State& s) { prefix_cache_zeros(s, BENCH()); }                 \
  void BM_##NAME##_Insert(benchmark::State& s) { insert(s, BENCH()); }

NNX_MODEL_BENCHES(Gpt2, gpt2)
NNX_MODEL_BENCHES(Llama1B, llama)
NNX_MODEL_BENCHES(Gpt2W8A8, gpt2_w8a8)
NNX_MODEL_BENCHES(Gpt2W8, gpt2_weight_only)
NNX_MODEL_BENCHES(Llama162M, llama_162m)
NNX_MODEL_BENCHES(Llama162MW8A8, llama_162m_w8a8)
NNX_MODEL_BENCHES(Llama162MW8A8KV8, llama_162m_w8a8_kv8)
NNX_MODEL_BENCHES(Llama162MW8A8KV16, llama_162m_w8a8_kv16)
NNX_MODEL_BENCHES(Llama162MBF16, llama_162m_bf16)
NNX_MODEL_BENCHES(Llama953MW8A8, llama_953m_w8a8)

#if NNX_BENCH_HAS_THREADS
const std::vector<std::int64_t> kThreads = {1, 2};
#else
const std::vector<std::int64_t> kThreads = {1};
#endif

// Heavy models: fixed iteration counts (a 1B prefill is seconds), fewer for the batch.
void register_model(const char* name, void (*load_fn)(benchmark::State&), void (*ttft_fn)(benchmark::State&),
                    void (*decode_fn)(benchmark::State&), void (*active_fn)(benchmark::State&),
                    void (*raw_fn)(benchmark::State&),
                    void (*merge_fn)(benchmark::State&), void (*sample_fn)(benchmark::State&),
                    void (*zeros_fn)(benchmark::State&), void (*insert_fn)(benchmark::State&), bool heavy) {
  const std::string n = name;
  benchmark::RegisterBenchmark((n + "_Load").c_str(), load_fn)->Iterations(1)->Unit(benchmark::kMillisecond);
  auto* t = benchmark::RegisterBenchmark((n + "_TTFT").c_str(), ttft_fn)->Unit(benchmark::kMillisecond)->UseRealTime();
  t->ArgNames({"tokens", "threads"});
  for (auto tokens : kPrompts)
    for (auto th : kThreads) t->Args({tokens, th});
  if (heavy) t->Iterations(3);
  // Decode: batch 1 and 8 greedy; batch 8 sampled (the sampling cost).
  auto* d = benchmark::RegisterBenchmark((n + "_Decode").c_str(), decode_fn)->Unit(benchmark::kMillisecond)->UseRealTime();
  d->ArgNames({"slots", "sampling", "threads"});
  for (auto th : kThreads) {
    d->Args({1, 0, th});
    d->Args({8, 0, th});
    d->Args({8, 1, th});
  }
  if (heavy) d->Iterations(20); else d->MinTime(2.0);
  // One busy slot of 8 (compare with Decode/slots:1).
  auto* a = benchmark::RegisterBenchmark((n + "_DecodeActive").c_str(), active_fn)
                ->Unit(benchmark::kMillisecond)
                ->UseRealTime();
  a->ArgNames({"slots", "active", "threads"});
  for (auto th : kThreads) a->Args({8, 1, th});
  if (heavy) a->Iterations(20); else a->MinTime(2.0);
  auto* r = benchmark::RegisterBenchmark((n + "_DecodeStepRaw").c_str(), raw_fn)->Unit(benchmark::kMillisecond)->UseRealTime();
  r->ArgNames({"slots", "threads"});
  for (auto th : kThreads) {
    r->Args({1, th});
    r->Args({8, th});
  }
  if (heavy) r->Iterations(20); else r->MinTime(2.0);
  benchmark::RegisterBenchmark((n + "_MergeSplit").c_str(), merge_fn)->Arg(1)->Arg(8)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark((n + "_SampleToken").c_str(), sample_fn)
      ->ArgName("sampling")->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark((n + "_PrefixCacheZeros").c_str(), zeros_fn)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark((n + "_Insert").c_str(), insert_fn)->Arg(8)->Unit(benchmark::kMicrosecond)->UseRealTime();
}

const bool registered = [] {
  auto* bw = benchmark::RegisterBenchmark("BM_ReadBandwidth", BM_ReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
  bw->ArgNames({"threads", "streams"});
  for (auto th : kThreads) bw->Args({th, 1})->Args({th, 8});
  register_model("BM_Gpt2", BM_Gpt2_Load, BM_Gpt2_TTFT, BM_Gpt2_Decode, BM_Gpt2_DecodeActive, BM_Gpt2_DecodeStepRaw,
                 BM_Gpt2_MergeSplit,
                 BM_Gpt2_SampleToken, BM_Gpt2_PrefixCacheZeros, BM_Gpt2_Insert, false);
  register_model("BM_Gpt2W8A8", BM_Gpt2W8A8_Load, BM_Gpt2W8A8_TTFT, BM_Gpt2W8A8_Decode, BM_Gpt2W8A8_DecodeActive,
                 BM_Gpt2W8A8_DecodeStepRaw,
                 BM_Gpt2W8A8_MergeSplit, BM_Gpt2W8A8_SampleToken, BM_Gpt2W8A8_PrefixCacheZeros, BM_Gpt2W8A8_Insert, false);
  register_model("BM_Gpt2W8", BM_Gpt2W8_Load, BM_Gpt2W8_TTFT, BM_Gpt2W8_Decode, BM_Gpt2W8_DecodeActive,
                 BM_Gpt2W8_DecodeStepRaw,
                 BM_Gpt2W8_MergeSplit, BM_Gpt2W8_SampleToken, BM_Gpt2W8_PrefixCacheZeros, BM_Gpt2W8_Insert, false);
#define NNX_REGISTER_MODEL(NAME, HEAVY)                                                                        \
  register_model("BM_" #NAME, BM_##NAME##_Load, BM_##NAME##_TTFT, BM_##NAME##_Decode, BM_##NAME##_DecodeActive,   \
                 BM_##NAME##_DecodeStepRaw,                                                                    \
                 BM_##NAME##_MergeSplit, BM_##NAME##_SampleToken, BM_##NAME##_PrefixCacheZeros, BM_##NAME##_Insert, HEAVY)
  NNX_REGISTER_MODEL(Llama162M, false);
  NNX_REGISTER_MODEL(Llama162MW8A8, false);
  NNX_REGISTER_MODEL(Llama162MW8A8KV8, false);
  NNX_REGISTER_MODEL(Llama162MW8A8KV16, false);
  NNX_REGISTER_MODEL(Llama162MBF16, false);
  NNX_REGISTER_MODEL(Llama953MW8A8, true);
#undef NNX_REGISTER_MODEL
  register_model("BM_Llama1B", BM_Llama1B_Load, BM_Llama1B_TTFT, BM_Llama1B_Decode, BM_Llama1B_DecodeActive,
                 BM_Llama1B_DecodeStepRaw,
                 BM_Llama1B_MergeSplit, BM_Llama1B_SampleToken, BM_Llama1B_PrefixCacheZeros, BM_Llama1B_Insert, true);
  return true;
}();

}  // namespace
