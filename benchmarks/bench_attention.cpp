// bench_attention — the attention kernel (nnx/kernels/attention.hpp) per tier, on the shape of
// a GPT-2-124M decode step: every head of every slot against its KV cache.
//
//   build/benchmarks/bench_attention
//
//   BM_AttendDecode/<tier>/<slots>/<positions>
//       tier 0 = portable (ref::attend_f32), 1 = AVX2 (skipped on a CPU without it);
//       12 heads of 64 dimensions per slot over `positions` cached keys in a [slots, 1024,
//       12, 64] f32 cache, one layer. Counters: kv_GBps, the KV bytes read per second
//       (2 * positions * 12 * 64 * 4 per slot; for the caches that fit in L2 it is a cache
//       rate, not DRAM's), and the time per layer.
// The ratio of the two tiers in one run is the figure to quote (see RESULTS.md).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include <nnx/kernels/attention.hpp>

namespace {

using AttendFn = void (*)(const float*, const float*, const float*, std::int64_t, std::int64_t, std::int64_t, float,
                          float*, float*);

void BM_AttendDecode(benchmark::State& state) {
  const std::int64_t tier = state.range(0), slots = state.range(1), n = state.range(2);
  constexpr std::int64_t H = 12, D = 64, S = 1024;
  AttendFn fn = &nnx::kernels::ref::attend_f32;
#if NNX_KERNELS_X86_DISPATCH
  if (tier == 1) {
    if (!nnx::kernels::isa_supported(nnx::kernels::Isa::avx2)) return state.SkipWithError("no AVX2 on this CPU");
    fn = &nnx::kernels::avx2::attend_f32;
  }
#else
  if (tier == 1) return state.SkipWithError("no AVX2 kernels on this platform");
#endif
  std::vector<float> keys(static_cast<std::size_t>(slots * S * H * D)), values(keys.size());
  std::vector<float> q(static_cast<std::size_t>(slots * H * D)), out(q.size()), scores(S);
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (auto* v : {&keys, &values, &q})
    for (float& x : *v) x = u(gen);
  for (auto _ : state) {
    for (std::int64_t b = 0; b < slots; ++b)
      for (std::int64_t h = 0; h < H; ++h) {
        const std::int64_t head = (b * S * H + h) * D;
        fn(q.data() + (b * H + h) * D, keys.data() + head, values.data() + head, H * D, n, D, 0.125f, scores.data(),
           out.data() + (b * H + h) * D);
      }
    benchmark::DoNotOptimize(out.data());
  }
  const double kv_bytes = 2.0 * static_cast<double>(slots * n * H * D) * sizeof(float);
  state.counters["kv_GBps"] =
      benchmark::Counter(kv_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

BENCHMARK(BM_AttendDecode)
    ->ArgNames({"tier", "slots", "positions"})
    ->ArgsProduct({{0, 1}, {1, 8}, {288, 1024}})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
