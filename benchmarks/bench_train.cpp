// bench_train — a training step of the GPT-2-124M shape at B = 4, T = 64 (random weights and
// tokens), on 1 and 2 threads, beside the forward pass of the same batch (the ratio the
// training issue aims at: a step <= 3.2x its forward), and the GEMM of the step's largest
// shapes on its own (bench_gemm's kernel at those shapes, the step's ceiling).
//
//   build/benchmarks/bench_train
//
// LoraStep: the same step with LoRA adapters (rank 8, alpha 16) on every attention and MLP
// Linear and the base frozen (nnx/train/lora.hpp): gradients, AdamW moments and updates for
// the adapters alone; its ratio to TrainStep in the same run is the point.
//
// Counters: tokens_per_s; for the step, peak_rss_mb (the process's resident high-water mark,
// weights, AdamW moments and gradients included) and activations_mb (the bytes the forward
// keeps for the backward, each buffer counted once).
//
// HeadLoss: the tied output head and its cross-entropy, forward and backward, at GPT-2's
// vocabulary (50257 x 768) over B * T = 2048 positions, whole (tiles:1, as value_and_grad
// runs it by default: logits, cross_entropy in place, matmul_transposed_backward) and over
// vocabulary tiles (ops::head_cross_entropy). peak_tensor_mb is the high-water mark of live
// tensor bytes during one pass beyond its inputs (nnx::tensor_memory_stats; the logits are
// 411 MB whole).
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <cstdint>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/kernels/gemm.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/grad.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/train.hpp>

namespace {

constexpr std::int64_t kB = 4, kT = 64;

nnx::Tensor random_tokens(std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::int32_t> ids(kB * kT);
  for (auto& x : ids) x = static_cast<std::int32_t>(gen() % 50257);
  return nnx::Tensor::from_vector(ids, {kB, kT});
}

nnx::Gpt2 make_model() {
  nnx::Rngs rngs{0};
  return nnx::Gpt2(nnx::Gpt2Config{}, nnx::Mode::train, rngs);
}

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// Bytes of the distinct buffers a GPT-2 forward keeps for its backward.
double activation_bytes(const nnx::train::Gpt2Saved& s) {
  std::set<const void*> seen;
  double bytes = 0;
  auto add = [&](const nnx::Tensor& t) {
    if (t.defined() && !t.is_abstract() && seen.insert(t.raw_data()).second) bytes += double(t.nbytes());
  };
  add(s.hidden);
  add(s.ln_f.x);
  for (const auto& l : s.layers) {
    for (const auto* t : {&l.attn_norm.x, &l.mlp_norm.x, &l.attn.qkv.x, &l.attn.out.x, &l.attn.projected.q,
                          &l.attn.projected.k, &l.attn.projected.v, &l.mlp.up.x, &l.mlp.down.x, &l.mlp.up_out})
      add(*t);
  }
  return bytes;
}

void BM_Gpt2_124M_Forward(benchmark::State& state) {
  nnx::set_num_threads(static_cast<int>(state.range(0)));
  nnx::Gpt2 model = make_model();
  const nnx::Tensor tokens = random_tokens(1);
  const nnx::Tensor positions = nnx::arange_positions(kB, kT);
  benchmark::DoNotOptimize(model(tokens, positions));  // steady state, as the step's
  for (auto _ : state) benchmark::DoNotOptimize(model(tokens, positions));
  state.counters["tokens_per_s"] = benchmark::Counter(double(kB * kT), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Gpt2_124M_TrainStep(benchmark::State& state) {
  nnx::set_num_threads(static_cast<int>(state.range(0)));
  nnx::train::TrainState<nnx::Gpt2> ts(make_model(), {.lr = {.peak = 1e-4}, .weight_decay = 0.1, .clip_norm = 1.0});
  const nnx::Tensor tokens = random_tokens(1), targets = random_tokens(2);
  // A run takes thousands of steps: the first one's allocation of the gradient buffers (kept
  // in the state afterwards) is not what a step costs.
  ts = nnx::train::train_step(std::move(ts), tokens, targets).first;
  for (auto _ : state) ts = nnx::train::train_step(std::move(ts), tokens, targets).first;
  state.counters["tokens_per_s"] = benchmark::Counter(double(kB * kT), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_rss_mb"] = peak_rss_mb();
  nnx::train::Gpt2Saved saved;
  (void)nnx::train::forward(ts.model, tokens, nnx::arange_positions(kB, kT), saved);
  state.counters["activations_mb"] = activation_bytes(saved) / 1e6;
}

void BM_Gpt2_124M_LoraStep(benchmark::State& state) {
  nnx::set_num_threads(static_cast<int>(state.range(0)));
  nnx::Gpt2 model = make_model();
  nnx::Rngs rngs{1};
  nnx::add_lora(model, {.rank = 8, .alpha = 16, .targets = "attn|mlp"}, rngs);
  nnx::train::freeze_base(model);
  nnx::train::TrainState<nnx::Gpt2> ts(std::move(model), {.lr = {.peak = 1e-4}, .clip_norm = 1.0});
  const nnx::Tensor tokens = random_tokens(1), targets = random_tokens(2);
  ts = nnx::train::train_step(std::move(ts), tokens, targets).first;
  for (auto _ : state) ts = nnx::train::train_step(std::move(ts), tokens, targets).first;
  state.counters["tokens_per_s"] = benchmark::Counter(double(kB * kT), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["trained_params_m"] = double(nnx::state(ts.model, nnx::of<nnx::Param>).numel()) / 1e6;
  state.counters["optimizer_mb"] = double(nnx::state(ts.mu, nnx::of<nnx::train::OptState>).nbytes() +
                                          nnx::state(*ts.nu, nnx::of<nnx::train::OptState>).nbytes()) / 1e6;
}

// The largest GEMMs of the step at their shapes: the MLP's [256, 768] x [768, 3072] forward.
void BM_StepGemm_256x768x3072(benchmark::State& state) {
  nnx::set_num_threads(static_cast<int>(state.range(0)));
  const std::int64_t M = kB * kT, K = 768, N = 3072;
  std::vector<float> a(M * K, 0.5f), b(K * N, 0.25f), c(M * N);
  for (auto _ : state) {
    nnx::kernels::gemm_f32(M, N, K, a.data(), K, b.data(), N, c.data(), N);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["GFLOPS"] =
      benchmark::Counter(2.0 * double(M * N * K), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

void BM_HeadLoss_2048x768x50257(benchmark::State& state) {
  const std::int64_t tiles = state.range(0);
  nnx::set_num_threads(static_cast<int>(state.range(1)));
  const std::int64_t M = 2048, C = 768, V = 50257;
  std::mt19937 gen(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  nnx::Tensor hidden = nnx::Tensor::empty({M, C}), table = nnx::Tensor::empty({V, C});
  for (float& x : hidden.span<float>()) x = dist(gen);
  for (float& x : table.span<float>()) x = 0.02f * dist(gen);
  std::vector<std::int32_t> ids(M);
  for (auto& x : ids) x = static_cast<std::int32_t>(gen() % V);
  const nnx::Tensor targets = nnx::Tensor::from_vector(ids, {M});
  nnx::Tensor dtable = nnx::Tensor::zeros({V, C});
  const float w = 1.0f / float(M);
  const auto pass = [&] {
    if (tiles == 1) {
      auto ce = nnx::ops::cross_entropy(nnx::ops::matmul_transposed(hidden, table), targets, w);
      benchmark::DoNotOptimize(nnx::ops::matmul_transposed_backward(hidden, table, ce.dlogits, dtable));
    } else {
      benchmark::DoNotOptimize(
          nnx::ops::head_cross_entropy(hidden, table, nnx::ops::HeadLayout::table, targets, w, -100, tiles, &dtable));
    }
  };
  const std::int64_t before = nnx::tensor_memory_stats().live_bytes;
  nnx::reset_tensor_memory_peak();
  pass();
  state.counters["peak_tensor_mb"] = double(nnx::tensor_memory_stats().peak_live_bytes - before) / 1e6;
  for (auto _ : state) pass();
  state.counters["tokens_per_s"] = benchmark::Counter(double(M), benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_HeadLoss_2048x768x50257)
    ->ArgsProduct({{1, 8}, {1, 2}})
    ->ArgNames({"tiles", "threads"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->Iterations(3);
BENCHMARK(BM_StepGemm_256x768x3072)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_Gpt2_124M_Forward)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(3.0);
BENCHMARK(BM_Gpt2_124M_TrainStep)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
BENCHMARK(BM_Gpt2_124M_LoraStep)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(5.0);
