// bench_models — prefill (128 tokens) and batch-1 decode of GPT-2-124M-shaped and
// Llama-shaped (768 wide, 12 layers, vocab 32000: the model llama.cpp was measured on in
// PERFORMANCE.md) models with random f32 weights; the Llama shape also with its layers stacked
// (ModelOptions::layout: each layer runs on slices of [12, ...] leaves), which should cost
// nothing against the per-layer model measured beside it.
//
//   build/benchmarks/bench_models
//
// Baselines in the same run: BM_ReadBandwidth sums a 1 GiB buffer (the DRAM read bandwidth
// that bounds batch-1 decoding: floor = weight bytes per token / bandwidth). Counters:
// tokens_per_s, and for decode the weight bytes read per token.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <memory>
#include <numeric>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/models.hpp>

namespace {

nnx::Gpt2Config gpt2_124m() { return nnx::Gpt2Config{}; }

nnx::LlamaConfig llama_162m() {
  nnx::LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 768;
  c.intermediate_size = 2048;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 12;
  c.max_position_embeddings = 2048;
  return c;
}

template <class Model, class Config>
Model& model(const Config& cfg, nnx::Mode mode, nnx::Layout layout) {
  static std::unique_ptr<Model> m;
  static nnx::Mode built = nnx::Mode::train;
  static nnx::Layout built_layout = nnx::Layout::per_layer;
  if (!m || built != mode || built_layout != layout) {
    m.reset();
    nnx::Rngs rngs{0};
    m = std::make_unique<Model>(cfg, mode, rngs,
                                nnx::ModelOptions{.cache_batch = 1, .cache_length = 512, .layout = layout});
    built = mode;
    built_layout = layout;
  }
  return *m;
}

template <class Model>
double param_bytes(const Model& m) {
  return static_cast<double>(nnx::state(m, nnx::of<nnx::Param>).nbytes());
}

template <class Model, class Config>
void prefill_128(benchmark::State& state, const Config& cfg, nnx::Layout layout = nnx::Layout::per_layer) {
  Model& m = model<Model>(cfg, nnx::Mode::prefill, layout);
  std::vector<std::int32_t> ids(128);
  std::iota(ids.begin(), ids.end(), 1);
  const auto tokens = nnx::Tensor::from_vector(ids, {1, 128});
  for (auto _ : state) {
    auto out = nnx::prefill(m, tokens, {128});
    benchmark::DoNotOptimize(out.last_logits.raw_data());
  }
  state.counters["tokens_per_s"] = benchmark::Counter(128.0 * state.iterations(), benchmark::Counter::kIsRate);
}

template <class Model, class Config>
void decode_batch1(benchmark::State& state, const Config& cfg, nnx::Layout layout = nnx::Layout::per_layer) {
  Model& m = model<Model>(cfg, nnx::Mode::autoregressive, layout);
  const auto token = nnx::Tensor::from_vector(std::vector<std::int32_t>{42}, {1});
  std::int64_t pos = 0;
  for (auto _ : state) {
    auto logits = nnx::decode_step(m, token, {pos});
    benchmark::DoNotOptimize(logits.raw_data());
    pos = (pos + 1) % 256;  // stay in the cache; attention cost stays small next to the weights
  }
  state.counters["tokens_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
  state.counters["weight_bytes_per_token"] = param_bytes(m);
}

// Integer words, so the compiler vectorizes the sum (a float sum's order is fixed, and its
// add latency, not memory, would be measured). The 1 GiB is a tensor, so it lies in 2 MiB
// pages where the kernel has transparent huge pages, as the weights do.
void BM_ReadBandwidth(benchmark::State& state) {
  const std::size_t n = (std::size_t{1} << 30) / sizeof(std::uint64_t);
  static const nnx::Tensor buffer = nnx::Tensor::full({static_cast<std::int64_t>(n)}, 1, nnx::DType::u64);
  const auto* words = reinterpret_cast<const std::uint64_t*>(buffer.raw_data());
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += words[i];
    benchmark::DoNotOptimize(sum);
  }
  state.counters["bytes_per_s"] = benchmark::Counter(static_cast<double>(n * sizeof(std::uint64_t)) *
                                                         static_cast<double>(state.iterations()),
                                                     benchmark::Counter::kIsRate);
}

void BM_Gpt2Prefill128(benchmark::State& s) { prefill_128<nnx::Gpt2>(s, gpt2_124m()); }
void BM_Gpt2DecodeBatch1(benchmark::State& s) { decode_batch1<nnx::Gpt2>(s, gpt2_124m()); }
void BM_LlamaPrefill128(benchmark::State& s) { prefill_128<nnx::Llama>(s, llama_162m()); }
void BM_LlamaDecodeBatch1(benchmark::State& s) { decode_batch1<nnx::Llama>(s, llama_162m()); }
void BM_LlamaPrefill128Stacked(benchmark::State& s) { prefill_128<nnx::Llama>(s, llama_162m(), nnx::Layout::stacked); }
void BM_LlamaDecodeBatch1Stacked(benchmark::State& s) {
  decode_batch1<nnx::Llama>(s, llama_162m(), nnx::Layout::stacked);
}

}  // namespace

BENCHMARK(BM_ReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gpt2Prefill128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_Gpt2DecodeBatch1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LlamaPrefill128)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LlamaDecodeBatch1)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LlamaPrefill128Stacked)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_LlamaDecodeBatch1Stacked)->Unit(benchmark::kMillisecond)->UseRealTime();
