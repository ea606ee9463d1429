// bench_attention — the attention kernel (nnx/kernels/attention.hpp, attend_f32) per tier:
// a decode step's attention (every slot's query heads over its KV cache) and a prefill's (every
// token of a prompt over the keys before it), one layer.
//
//   build/benchmarks/bench_attention
//
//   BM_AttendDecode/<tier>/<slots>/<positions>/<group>/<kv>/<layers>
//       tier 0 = ref, 1 = avx2, 2 = avx512 (skipped on a CPU without it; a tier without its
//       own kernel runs the one below); 12 query heads of 64 dimensions per slot, 12 / group
//       KV heads, `positions` cached keys in a [slots, 1024, Hkv, 64] cache of kv 0 = f32,
//       1 = bf16, 2 = int8 (a scale per position and head). layers = 1 reads one layer's
//       cache again and again (it stays in L2/L3); layers = 16 reads 16 layers' [slots,
//       positions, Hkv, 64] caches in turn, from DRAM as a model's decode step does. Counters: kv_GBps, the KV bytes
//       read per second (2 * positions * Hkv * 64 * element bytes per slot, plus scales; caches
//       that fit in L2/L3 give a cache rate, not DRAM's); read_GBps, the read bandwidth of
//       one thread measured right after (the faster of read_bandwidth.hpp's probes over
//       512 MiB: this machine's DRAM rate moves by tens of percent from minute to minute), and
//       kv_share = kv_GBps / read_GBps, the figure the kernel-backend target quotes.
//   BM_AttendPrefill/<tier>/<tokens>
//       a causal prompt of `tokens` tokens, 12 heads of 64 (GPT-2 124M's layer): compare its
//       time with a prefill's GEMMs (bench_gemm) for attention's share of a prefill.
// The ratio of tiers in one run is the figure to quote (see RESULTS.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <nnx/kernels/attention.hpp>

#include "read_bandwidth.hpp"

namespace {

namespace k = nnx::kernels;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(gen);
  return v;
}

bool pick(benchmark::State& state, k::AttendFn& fn) {
  const auto isa = static_cast<k::Isa>(state.range(0));
  if (!k::isa_supported(isa)) {
    state.SkipWithError("tier not available on this CPU");
    return false;
  }
  fn = k::select(k::kAttend, isa);
  state.SetLabel(std::string(k::isa_name(isa)));
  return true;
}

// Bytes per second of one read of a 512 MiB buffer, the faster of the 1- and 8-stream probes
// (two passes each; the buffer is filled once, on first use).
double read_bandwidth() {
  static const std::vector<std::uint64_t> buffer(std::size_t{512} << 17, 1);
  const auto* data = reinterpret_cast<const std::byte*>(buffer.data());
  double best = 0.0;
  for (int pass = 0; pass < 4; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(pass % 2 ? nnx_bench::sum_streams<8>(data, buffer.size())
                                      : nnx_bench::sum_streams<1>(data, buffer.size()));
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(buffer.size() * sizeof(std::uint64_t)) / seconds);
  }
  return best;
}

void BM_AttendDecode(benchmark::State& state) {
  k::AttendFn fn = nullptr;
  if (!pick(state, fn)) return;
  const std::int64_t slots = state.range(1), n = state.range(2), group = state.range(3);
  const auto type = static_cast<k::KvType>(state.range(4));
  const std::int64_t layers = state.range(5);
  constexpr std::int64_t H = 12, D = 64;
  // One layer: a 1024-position cache per slot. Several: caches just long enough, so that
  // `layers` of them outgrow the last-level cache as a model's do.
  const std::int64_t S = layers == 1 ? 1024 : n;
  const std::int64_t Hkv = H / group, elements = layers * slots * S * Hkv * D, row = Hkv * D;
  // The cache in its dtype: f32 values, their bf16 top halves, or int8 with a scale per row.
  const auto keys = random_floats(static_cast<std::size_t>(elements), 1);
  const auto values = random_floats(keys.size(), 2);
  const std::size_t bytes = static_cast<std::size_t>(elements * k::kv_type_bytes(type));
  std::vector<std::byte> kc(bytes), vc(bytes);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const float kx = keys[i], vx = values[i];
    if (type == k::KvType::f32) {
      std::memcpy(kc.data() + 4 * i, &kx, 4);
      std::memcpy(vc.data() + 4 * i, &vx, 4);
    } else if (type == k::KvType::bf16) {
      std::memcpy(kc.data() + 2 * i, reinterpret_cast<const char*>(&kx) + 2, 2);
      std::memcpy(vc.data() + 2 * i, reinterpret_cast<const char*>(&vx) + 2, 2);
    } else {
      kc[i] = static_cast<std::byte>(static_cast<std::int8_t>(kx * 127.0f));
      vc[i] = static_cast<std::byte>(static_cast<std::int8_t>(vx * 127.0f));
    }
  }
  const std::vector<float> key_scales(static_cast<std::size_t>(layers * slots * S * Hkv), 1.0f / 127.0f);
  const std::vector<float> value_scales(key_scales);
  const auto q = random_floats(static_cast<std::size_t>(slots * H * D), 3);
  std::vector<float> out(q.size());
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (std::int64_t layer = 0; layer < layers; ++layer)
      for (std::int64_t b = 0; b < slots; ++b) {
        const k::KvRows kr{kc.data(), type, row, key_scales.data(), Hkv};
        const k::KvRows vr{vc.data(), type, row, value_scales.data(), Hkv};
        const std::int64_t first = (layer * slots + b) * S;
        fn(q.data() + b * H * D, H * D, D, 1, &n, group, Hkv, kr.at(first, 0, D), vr.at(first, 0, D), D, 0.125f,
           out.data() + b * H * D, H * D, D);
      }
    benchmark::DoNotOptimize(out.data());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double scale_bytes =
      type == k::KvType::i8 ? 2.0 * static_cast<double>(layers * slots * n * Hkv) * sizeof(float) : 0.0;
  const double kv_bytes =
      2.0 * static_cast<double>(layers * slots * n * Hkv * D) * static_cast<double>(k::kv_type_bytes(type)) +
      scale_bytes;
  const double kv_rate = kv_bytes * static_cast<double>(state.iterations()) / seconds;
  const double read = read_bandwidth();
  state.counters["kv_GBps"] = kv_rate * 1e-9;
  state.counters["read_GBps"] = read * 1e-9;
  state.counters["kv_share"] = kv_rate / read;
}

void BM_AttendPrefill(benchmark::State& state) {
  k::AttendFn fn = nullptr;
  if (!pick(state, fn)) return;
  const std::int64_t T = state.range(1);
  constexpr std::int64_t H = 12, D = 64;
  const auto q = random_floats(static_cast<std::size_t>(T * H * D), 4);
  const auto keys = random_floats(q.size(), 5);
  const auto values = random_floats(q.size(), 6);
  std::vector<float> out(q.size());
  std::vector<std::int64_t> n(64);
  for (auto _ : state) {
    // As nn/attention.hpp calls it: 64 query rows per call.
    for (std::int64_t t0 = 0; t0 < T; t0 += 64) {
      const std::int64_t tn = std::min<std::int64_t>(64, T - t0);
      for (std::int64_t t = 0; t < tn; ++t) n[t] = t0 + t + 1;
      fn(q.data() + t0 * H * D, H * D, D, tn, n.data(), 1, H, {keys.data(), k::KvType::f32, H * D},
         {values.data(), k::KvType::f32, H * D}, D, 0.125f, out.data() + t0 * H * D, H * D, D);
    }
    benchmark::DoNotOptimize(out.data());
  }
  // Multiply-adds: a score and a weighted value per (token, key <= token, head, dimension).
  state.counters["GFLOP_per_s"] = benchmark::Counter(2.0 * 2.0 * double(T) * double(T + 1) / 2.0 * H * D * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

BENCHMARK(BM_AttendDecode)
    ->ArgNames({"tier", "slots", "positions", "group", "kv", "layers"})
    ->ArgsProduct({{0, 1, 2}, {1, 8}, {288, 1024}, {1, 4}, {0, 1, 2}, {1}})
    ->ArgsProduct({{1, 2}, {8}, {288}, {1, 4}, {0, 1, 2}, {16}})
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_AttendPrefill)->ArgNames({"tier", "tokens"})->ArgsProduct({{0, 1, 2}, {128, 512}})->Unit(benchmark::kMicrosecond);
