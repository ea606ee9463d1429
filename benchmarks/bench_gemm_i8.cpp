// bench_gemm_i8 — int8 matrix products against our f32 GEMM at GPT-2 shapes, in one run.
//
//   build/benchmarks/bench_gemm_i8 --benchmark_counters_tabular=true
//
// Kernels (nnx/kernels/gemm_i8.hpp, nnx/kernels/gemm.hpp):
//   BM_F32Gemm    gemm_f32, weights [K, N] f32 (what our f32 Linear runs): the baseline
//   BM_F32GemmBt  gemm_f32_bt, weights [N, K] f32 (the tied-embedding logits), N = 50257 only
//   BM_W8Gemm     gemm_f32_w8, weights [N, K] int8 + per-channel scales, f32 activations
//   BM_Bf16Gemm   gemm_f32_bf16, weights [N, K] bf16 as a checkpoint stores them (nn.Linear),
//                 f32 activations (nnx/kernels/gemm_w16.hpp)
//   BM_I8Gemm     gemm_i8_i8, activations already int8 (W8A8 product alone)
//   BM_I8Linear   quantize_rows_absmax of the activations + gemm_i8_i8 (a W8A8 Linear call)
//   BM_TierI8Gemm, BM_TierW8Gemm  one tier's kernel (tier 1 avx2, 2 avx512), split between
//                 threads as the entry points split it: tier ratios from one run
//   BM_TierQuantizeRows  one tier's quantize_rows_absmax (activations), one thread
//   BM_ReadBandwidth  sums a 512 MiB buffer (1 and 2 threads): the DRAM floor decode is held to
//   BM_VnniPeak   one core's vpdpbusd peak, 512 or 256 bits wide (registers only): the ceiling
//                 of the VNNI tiles, in BM_I8Gemm's GOP/s (an AMX Xeon: ~290 on zmm, ~340 on
//                 ymm, so 512 bits bought nothing there)
// Shapes (args M, K, N, threads, cold): M = 1, 8 (decode) and 128 (prefill); K x N = 768 x
// 2304 (QKV), 768 x 3072 (MLP up), 3072 x 768 (MLP down), 768 x 50257 (logits); 1 and 2
// threads (nnx::set_num_threads). BM_I8Gemm also runs M = 2-8 from DRAM at 3072 x 768, 2048 x
// 2048 and 5632 x 2048, where the avx512 entry moves from its VNNI tiles to AMX (compare with
// NNX_AMX=0). cold = 1 rotates through copies of the weights totalling more than 192 MiB, so
// they come from DRAM as in a model too large for the L3 cache; cold = 0 reuses one copy
// (which fits in the 32 MiB L3 except for the logits).
// Counters: GOP/s = 2 M N K per iteration (a multiply and an add each; integer ops for
// W8A8); weight GB/s = bytes of weights read per second (int8: N K, bf16: 2 N K, f32: 4 N K), the figure
// to hold against DRAM bandwidth for decode. Wall-clock time (the machines are shared):
// quote ratios from one run.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <nnx/kernels/gemm.hpp>
#include <nnx/core/dtype.hpp>
#include <nnx/core/tensor.hpp>
#include <nnx/kernels/gemm_i8.hpp>
#include <nnx/kernels/gemm_w16.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/kernels/quantize.hpp>
#include <random>
#include <string>
#include <vector>

namespace {

using i64 = std::int64_t;

constexpr std::size_t kColdBytes = std::size_t{192} << 20;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Bytes in tensor storage (in 2 MiB pages where the kernel has transparent huge pages), as a
// model's weights and the engine's packed weights are.
nnx::Tensor tensor_bytes(std::size_t n) {
  return nnx::Tensor::empty({static_cast<std::int64_t>(n)}, nnx::DType::u8);
}

// One weight matrix, or (cold) enough copies of it, one after another in one buffer as the
// engine packs a model's weights, to exceed kColdBytes.
template <class T>
struct Weights {
  nnx::Tensor buffer;
  std::size_t count = 0, elements = 0, next = 0;
  Weights(const std::vector<T>& w, bool cold) : elements(w.size()) {
    const std::size_t bytes = w.size() * sizeof(T);
    count = cold ? std::max<std::size_t>(2, (kColdBytes + bytes - 1) / bytes) : 1;
    buffer = tensor_bytes(count * bytes);
    for (std::size_t c = 0; c < count; ++c) std::memcpy(buffer.raw_data() + c * bytes, w.data(), bytes);
  }
  const T* get() {
    const T* p = reinterpret_cast<const T*>(buffer.raw_data()) + next * elements;
    next = (next + 1) % count;
    return p;
  }
};

struct Shape {
  i64 M, K, N;
  int threads;
  bool cold;
  explicit Shape(const benchmark::State& s)
      : M(s.range(0)), K(s.range(1)), N(s.range(2)), threads(static_cast<int>(s.range(3))), cold(s.range(4) != 0) {}
  Shape(i64 m, i64 k, i64 n, int t, bool c) : M(m), K(k), N(n), threads(t), cold(c) {}
};

// Restores the thread count after a benchmark.
struct Threads {
  int saved = nnx::num_threads();
  explicit Threads(int n) { nnx::set_num_threads(n); }
  ~Threads() { nnx::set_num_threads(saved); }
};

void set_counters(benchmark::State& state, const Shape& s, double weight_bytes) {
  state.counters["GOP/s"] = benchmark::Counter(2.0 * static_cast<double>(s.M * s.N * s.K) * 1e-9,
                                               benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight GB/s"] =
      benchmark::Counter(weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Int8 weights [N, K] and their scales, quantized from random floats.
struct QuantizedWeights {
  std::vector<std::int8_t> q;
  std::vector<float> scale;
  QuantizedWeights(i64 N, i64 K) : q(static_cast<std::size_t>(N * K)), scale(static_cast<std::size_t>(N)) {
    const auto w = random_floats(static_cast<std::size_t>(N * K), 2);
    nnx::kernels::quantize_rows_absmax(N, K, w.data(), K, q.data(), K, scale.data());
  }
};

void BM_F32Gemm(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  Weights<float> w(random_floats(static_cast<std::size_t>(s.K * s.N), 2), s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::gemm_f32(s.M, s.N, s.K, x.data(), s.K, w.get(), s.N, y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, 4.0 * static_cast<double>(s.N * s.K));
}

void BM_F32GemmBt(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  Weights<float> w(random_floats(static_cast<std::size_t>(s.K * s.N), 2), s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::gemm_f32_bt(s.M, s.N, s.K, x.data(), s.K, w.get(), s.K, y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, 4.0 * static_cast<double>(s.N * s.K));
}

void BM_W8Gemm(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  const QuantizedWeights qw(s.N, s.K);
  Weights<std::int8_t> w(qw.q, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::gemm_f32_w8(s.M, s.N, s.K, x.data(), s.K, w.get(), s.K, qw.scale.data(), y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, static_cast<double>(s.N * s.K));
}

void BM_Bf16Gemm(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  const auto wf = random_floats(static_cast<std::size_t>(s.N * s.K), 2);
  std::vector<std::uint16_t> bits(wf.size());
  for (std::size_t i = 0; i < wf.size(); ++i) bits[i] = nnx::f32_to_bf16_bits(wf[i]);
  Weights<std::uint16_t> w(bits, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::gemm_f32_bf16(s.M, s.N, s.K, x.data(), s.K, w.get(), s.K, y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, 2.0 * static_cast<double>(s.N * s.K));
}

void BM_I8Gemm(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  std::vector<std::int8_t> xq(x.size());
  std::vector<float> xs(static_cast<std::size_t>(s.M));
  nnx::kernels::quantize_rows_absmax(s.M, s.K, x.data(), s.K, xq.data(), s.K, xs.data());
  const QuantizedWeights qw(s.N, s.K);
  Weights<std::int8_t> w(qw.q, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::gemm_i8_i8(s.M, s.N, s.K, xq.data(), s.K, xs.data(), w.get(), s.K, qw.scale.data(), y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, static_cast<double>(s.N * s.K));
}

void BM_I8Linear(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  std::vector<std::int8_t> xq(x.size());
  std::vector<float> xs(static_cast<std::size_t>(s.M));
  const QuantizedWeights qw(s.N, s.K);
  Weights<std::int8_t> w(qw.q, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    nnx::kernels::quantize_rows_absmax(s.M, s.K, x.data(), s.K, xq.data(), s.K, xs.data());
    nnx::kernels::gemm_i8_i8(s.M, s.N, s.K, xq.data(), s.K, xs.data(), w.get(), s.K, qw.scale.data(), y.data(), s.N);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, static_cast<double>(s.N * s.K));
}

// Quantizing a float Linear kernel [K, N] to int8 [N, K] (conversion, and "train" mode's
// every forward). GOP/s here counts 2 N K per call, for comparison with one M = 1 product.
void BM_QuantizeColumns(benchmark::State& state) {
  const Shape s(state);
  const Threads threads(s.threads);
  const auto w = random_floats(static_cast<std::size_t>(s.K * s.N), 2);
  std::vector<std::int8_t> q(w.size());
  std::vector<float> scale(static_cast<std::size_t>(s.N));
  for (auto _ : state) {
    nnx::kernels::quantize_columns_absmax(s.K, s.N, w.data(), s.N, q.data(), s.K, scale.data());
    benchmark::DoNotOptimize(q.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, 4.0 * static_cast<double>(s.N * s.K));
}

// One tier's kernel (args tier, M, K, N, threads, cold), split between threads exactly as the
// public entry point splits it (parallel_blocks over blocks of kGemmI8ChannelBlock channels):
// the same call with the tier forced, so tiers compare in one run.
template <class Fn>
void run_tier(const Shape& s, Fn f) {
  nnx::kernels::parallel_blocks(s.N, nnx::kernels::kGemmI8ChannelBlock, double(s.M) * double(s.N) * double(s.K),
                                [&](i64 n0, i64 n1) noexcept { f(n0, n1); });
}

struct TierShape : Shape {
  nnx::kernels::Isa isa;
  explicit TierShape(const benchmark::State& st)
      : Shape(st.range(1), st.range(2), st.range(3), static_cast<int>(st.range(4)), st.range(5) != 0),
        isa(static_cast<nnx::kernels::Isa>(st.range(0))) {}
};

void BM_TierI8Gemm(benchmark::State& state) {
  const TierShape s(state);
  if (!nnx::kernels::isa_supported(s.isa)) return state.SkipWithError("tier not available on this CPU");
  state.SetLabel(std::string(nnx::kernels::isa_name(s.isa)));
  const auto f = nnx::kernels::select(nnx::kernels::kGemmI8I8, s.isa);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  std::vector<std::int8_t> xq(x.size());
  std::vector<float> xs(static_cast<std::size_t>(s.M));
  nnx::kernels::quantize_rows_absmax(s.M, s.K, x.data(), s.K, xq.data(), s.K, xs.data());
  const QuantizedWeights qw(s.N, s.K);
  Weights<std::int8_t> w(qw.q, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    const std::int8_t* q = w.get();
    run_tier(s, [&](i64 n0, i64 n1) {
      f(s.M, n1 - n0, s.K, xq.data(), s.K, xs.data(), q + n0 * s.K, s.K, qw.scale.data() + n0, y.data() + n0, s.N);
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, static_cast<double>(s.N * s.K));
}

void BM_TierW8Gemm(benchmark::State& state) {
  const TierShape s(state);
  if (!nnx::kernels::isa_supported(s.isa)) return state.SkipWithError("tier not available on this CPU");
  state.SetLabel(std::string(nnx::kernels::isa_name(s.isa)));
  const auto f = nnx::kernels::select(nnx::kernels::kGemmF32W8, s.isa);
  const Threads threads(s.threads);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  const QuantizedWeights qw(s.N, s.K);
  Weights<std::int8_t> w(qw.q, s.cold);
  std::vector<float> y(static_cast<std::size_t>(s.M * s.N));
  for (auto _ : state) {
    const std::int8_t* q = w.get();
    run_tier(s, [&](i64 n0, i64 n1) {
      f(s.M, n1 - n0, s.K, x.data(), s.K, q + n0 * s.K, s.K, qw.scale.data() + n0, y.data() + n0, s.N);
    });
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_counters(state, s, static_cast<double>(s.N * s.K));
}

// Quantizing activations x[M, K] per row (every W8A8 Linear call), one tier, one thread.
// GOP/s counts 2 M K (so "weight GB/s" is meaningless here); compare tiers by time.
void BM_TierQuantizeRows(benchmark::State& state) {
  const TierShape s(state);
  if (!nnx::kernels::isa_supported(s.isa)) return state.SkipWithError("tier not available on this CPU");
  state.SetLabel(std::string(nnx::kernels::isa_name(s.isa)));
  const auto f = nnx::kernels::select(nnx::kernels::kQuantizeRowsAbsmax, s.isa);
  const auto x = random_floats(static_cast<std::size_t>(s.M * s.K), 1);
  std::vector<std::int8_t> xq(x.size());
  std::vector<float> xs(static_cast<std::size_t>(s.M));
  for (auto _ : state) {
    f(s.M, s.K, x.data(), s.K, xq.data(), s.K, xs.data());
    benchmark::DoNotOptimize(xq.data());
    benchmark::ClobberMemory();
  }
  state.counters["GB/s in"] = benchmark::Counter(4.0 * static_cast<double>(s.M * s.K) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

#if NNX_KERNELS_X86_DISPATCH
// kVnniChains independent vpdpbusd chains, kVnniIters steps (registers only: the empty asm
// keeps a and b in registers and unknown to the compiler). Returns a lane of each chain so
// none is dropped.
constexpr int kVnniChains = 24;
constexpr std::int64_t kVnniIters = 1 << 16;

NNX_TARGET_AVX512 std::int64_t vnni_chains_512() {
  __m512i acc[kVnniChains];
  for (int i = 0; i < kVnniChains; ++i) acc[i] = _mm512_set1_epi32(i);
  __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(5);
  for (std::int64_t it = 0; it < kVnniIters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kVnniChains; ++i) acc[i] = _mm512_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a), "+v"(b));
  }
  std::int64_t sum = 0;
  alignas(64) std::int32_t lanes[16];
  for (int i = 0; i < kVnniChains; ++i) {
    _mm512_store_si512(lanes, acc[i]);
    sum += lanes[0];
  }
  return sum;
}

NNX_TARGET_AVX512 std::int64_t vnni_chains_256() {
  __m256i acc[kVnniChains];
  for (int i = 0; i < kVnniChains; ++i) acc[i] = _mm256_set1_epi32(i);
  __m256i a = _mm256_set1_epi8(3), b = _mm256_set1_epi8(5);
  for (std::int64_t it = 0; it < kVnniIters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < kVnniChains; ++i) acc[i] = _mm256_dpbusd_epi32(acc[i], a, b);
    asm volatile("" : "+v"(a), "+v"(b));
  }
  std::int64_t sum = 0;
  alignas(32) std::int32_t lanes[8];
  for (int i = 0; i < kVnniChains; ++i) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), acc[i]);
    sum += lanes[0];
  }
  return sum;
}

// Args: bits (512, 256). GOP/s: 2 per byte product, as BM_I8Gemm counts them.
void BM_VnniPeak(benchmark::State& state) {
  if (!nnx::kernels::isa_supported(nnx::kernels::Isa::avx512))
    return state.SkipWithError("AVX512_VNNI not available on this CPU");
  const int bits = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(bits == 512 ? vnni_chains_512() : vnni_chains_256());
  state.counters["GOP/s"] = benchmark::Counter(2.0 * (bits / 8) * kVnniChains * double(kVnniIters) * 1e-9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
#endif

// The memory-bandwidth floor in the same run: a sum over 512 MiB of int64 (in tensor storage,
// as the weights), split between the threads as the kernels split weights.
void BM_ReadBandwidth(benchmark::State& state) {
  const Threads threads(static_cast<int>(state.range(0)));
  const std::size_t n = (std::size_t{512} << 20) / sizeof(std::int64_t);
  const nnx::Tensor buffer = nnx::Tensor::full({static_cast<i64>(n)}, 1, nnx::DType::i64);
  const std::int64_t* buf = buffer.data<std::int64_t>();
  std::int64_t sums[2] = {0, 0};
  for (auto _ : state) {
    nnx::kernels::parallel_for(static_cast<i64>(n), [&](i64 b, i64 e, int chunk) noexcept {
      std::int64_t s = 0;
      for (i64 i = b; i < e; ++i) s += buf[i];
      sums[chunk] = s;
    });
    benchmark::DoNotOptimize(sums);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(std::int64_t)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

constexpr std::pair<i64, i64> kShapes[] = {{768, 2304}, {768, 3072}, {3072, 768}, {768, 50257}};

void decode_and_prefill(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads", "cold"});
  for (int threads : {1, 2})
    for (i64 M : {1, 8, 128})
      for (auto [K, N] : kShapes) {
        b->Args({M, K, N, threads, 0});
        if (M <= 8) b->Args({M, K, N, threads, 1});
      }
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// 2-8 rows, weights from DRAM, shallow and deep (a ~1B Llama's 2048 x 2048 and 5632 x 2048
// beside the 162M's 3072 x 768): where avx512's W8A8 entry hands a product from the VNNI tiles
// to AMX (amx_takes in kernels/avx512/gemm_i8.hpp); run again with NNX_AMX=0 for the VNNI side.
void amx_depth_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads", "cold"});
  for (int threads : {1, 2})
    for (i64 M : {2, 4, 5, 6, 7, 8})
      for (auto [K, N] : {std::pair<i64, i64>{3072, 768}, {2048, 2048}, {5632, 2048}})
        if (M != 8 || K != 3072) b->Args({M, K, N, threads, 1});  // decode_and_prefill has that one
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void logits_only(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads", "cold"});
  for (int threads : {1, 2})
    for (i64 M : {1, 8, 128}) b->Args({M, 768, 50257, threads, 0});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void quantize_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads", "cold"});
  for (int threads : {1, 2})
    for (auto [K, N] : kShapes) b->Args({1, K, N, threads, 0});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

// Tiers avx2 and avx512 at M = 1, 8 (decode, weights hot and from DRAM) and 128 (prefill).
void tier_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tier", "M", "K", "N", "threads", "cold"});
  for (int threads : {1, 2})
    for (i64 M : {1, 8, 128})
      for (auto [K, N] : {std::pair<i64, i64>{768, 3072}, {3072, 768}})
        for (int cold : {0, 1})
          if (cold == 0 || M <= 8)
            for (auto isa : {nnx::kernels::Isa::avx2, nnx::kernels::Isa::avx512})
              b->Args({static_cast<i64>(isa), M, K, N, threads, cold});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void tier_quantize_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tier", "M", "K", "N", "threads", "cold"});
  for (i64 M : {1, 8, 128})
    for (i64 K : {768, 3072})
      for (auto isa : {nnx::kernels::Isa::avx2, nnx::kernels::Isa::avx512})
        b->Args({static_cast<i64>(isa), M, K, 0, 1, 0});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_TierI8Gemm)->Apply(tier_shapes);
BENCHMARK(BM_TierW8Gemm)->Apply(tier_shapes);
BENCHMARK(BM_TierQuantizeRows)->Apply(tier_quantize_shapes);
#if NNX_KERNELS_X86_DISPATCH
BENCHMARK(BM_VnniPeak)->ArgName("bits")->Arg(512)->Arg(256)->UseRealTime();
#endif
BENCHMARK(BM_ReadBandwidth)->ArgName("threads")->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_F32Gemm)->Apply(decode_and_prefill);
BENCHMARK(BM_W8Gemm)->Apply(decode_and_prefill);
BENCHMARK(BM_Bf16Gemm)->Apply(decode_and_prefill);
BENCHMARK(BM_I8Gemm)->Apply(decode_and_prefill);
BENCHMARK(BM_I8Gemm)->Apply(amx_depth_shapes);
BENCHMARK(BM_I8Linear)->Apply(decode_and_prefill);
BENCHMARK(BM_F32GemmBt)->Apply(logits_only);
BENCHMARK(BM_QuantizeColumns)->Apply(quantize_shapes);
