// bench_gemm — f32 GEMM at GPT-2 shapes: nnx::kernels against Eigen in the same run.
//
//   build/benchmarks/bench_gemm --benchmark_counters_tabular=true
//
// Shapes (M rows of activations; K x N weights): M = 1 (decode), 8 (batched decode), 128
// (prefill); K x N = 768 x 2304 (QKV), 768 x 3072 (MLP up), 3072 x 768 (MLP down) and
// 768 x 50257 (logits; stored [V, C] and multiplied transposed, as a tied embedding is).
// Each reports GFLOP/s (2 M N K per iteration, wall-clock time: the machines are shared). Baseline: Eigen 3.4's product
// on the same buffers (single-threaded, same flags), BM_Eigen* next to BM_Nnx*; the portable kernel (BM_Ref*) is shown
// too. Quote ratios from one run (the machines are noisy).
//
// Threads: BM_NnxGemmThreads / BM_NnxGemmBtThreads run the same products with
// nnx::set_num_threads(1) and (2) (the last argument), at the decode shapes (M = 1, 8) and
// prefill shapes (M = 128); compare the two rows of a shape. BM_ReadBandwidth1G gives the
// machine's single-thread DRAM read bandwidth in the same run (decode GEMV is bound by it).
//
// Tiers: BM_TierGemm/tier:<1 avx2, 2 avx512> runs each tier's own kernel at the same shapes in
// one run; BM_FmaPeak512 / BM_FmaPeak256 measure one core's FMA peak (registers only), the
// ceiling for the M = 128 rows.
#include <benchmark/benchmark.h>

// GCC 12 warns inside Eigen's AVX-512 packing (-march=native on AVX-512 machines); not ours.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <Eigen/Dense>
#include <immintrin.h>

#include <cstdint>
#include <nnx/kernels/gemm.hpp>
#include <string>
#include <nnx/ops/threads.hpp>
#include <random>
#include <vector>

namespace {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMajor>;
using ConstMap = Eigen::Map<const RowMajor>;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

struct Buffers {
  std::vector<float> a, b, c;
  Buffers(std::int64_t M, std::int64_t N, std::int64_t K)
      : a(random_floats(static_cast<std::size_t>(M * K), 1)),
        b(random_floats(static_cast<std::size_t>(K * N), 2)),
        c(static_cast<std::size_t>(M * N)) {}
};

void set_flops(benchmark::State& state, std::int64_t M, std::int64_t N, std::int64_t K) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(M * N * K) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// Args: M, K, N.
void BM_NnxGemm(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  Buffers buf(M, N, K);
  for (auto _ : state) {
    nnx::kernels::gemm_f32(M, N, K, buf.a.data(), K, buf.b.data(), N, buf.c.data(), N);
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

// The tier's own gemm_f32 (single-threaded, one chain over K: the dispatching gemm_f32 of
// BM_NnxGemm halves K from kSplitDepth on), for every tier the CPU runs. Args: tier, M, K, N.
void BM_TierGemm(benchmark::State& state) {
  const auto isa = static_cast<nnx::kernels::Isa>(state.range(0));
  const std::int64_t M = state.range(1), K = state.range(2), N = state.range(3);
  if (!nnx::kernels::isa_supported(isa)) return state.SkipWithError("tier not available on this CPU");
  const auto gemm = nnx::kernels::select(nnx::kernels::kGemmF32, isa);
  state.SetLabel(std::string(nnx::kernels::isa_name(isa)));
  Buffers buf(M, N, K);
  for (auto _ : state) {
    gemm(M, N, K, buf.a.data(), K, buf.b.data(), N, buf.c.data(), N, false, {});
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

// The FMA peak of one core: kChains independent chains of vfmadd231ps on registers only (no
// memory operand), 512 or 256 bits wide. The ratio GEMM / peak is the GEMM's efficiency. The
// chains and the two operands must fit the register file: 16 ymm chains plus two operands
// spill on an AVX2-only CPU (measured on a Zen 3: 56 GFLOP/s with 16 chains, 100 with 12),
// so the 256-bit probe runs 12 (enough for two FMA pipes of latency 4 or 5).
template <int kChains, class V, class Fma, class Set>
void fma_peak(benchmark::State& state, int lanes, Fma fma, Set set) {
  V acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = set(1.0f + 1e-7f * float(i));
  const V mul = set(0.9999999f), add = set(1e-7f);
  constexpr std::int64_t kIters = 1 << 16;
  for (auto _ : state) {
    for (std::int64_t it = 0; it < kIters; ++it)
#pragma GCC unroll 16
      for (int i = 0; i < kChains; ++i) acc[i] = fma(acc[i], mul, add);
    for (int i = 0; i < kChains; ++i) benchmark::DoNotOptimize(acc[i]);
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * lanes * kChains * double(kIters) * 1e-9,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}

#if defined(__AVX512F__)
void BM_FmaPeak512(benchmark::State& state) {
  fma_peak<16, __m512>(state, 16, [](__m512 a, __m512 b, __m512 c) { return _mm512_fmadd_ps(a, b, c); },
                       [](float x) { return _mm512_set1_ps(x); });
}
BENCHMARK(BM_FmaPeak512)->UseRealTime();
#endif
#if defined(__AVX2__) && defined(__FMA__)
void BM_FmaPeak256(benchmark::State& state) {
  fma_peak<12, __m256>(state, 8, [](__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); },
                       [](float x) { return _mm256_set1_ps(x); });
}
BENCHMARK(BM_FmaPeak256)->UseRealTime();
#endif

void tier_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tier", "M", "K", "N"});
  for (auto isa : {nnx::kernels::Isa::avx2, nnx::kernels::Isa::avx512})
    for (std::int64_t M : {1, 8, 128})
      for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {768, 3072}, {3072, 768}})
        b->Args({static_cast<std::int64_t>(isa), M, K, N});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}
BENCHMARK(BM_TierGemm)->Apply(tier_shapes);

void BM_RefGemm(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  Buffers buf(M, N, K);
  for (auto _ : state) {
    nnx::kernels::ref::gemm_f32(M, N, K, buf.a.data(), K, buf.b.data(), N, buf.c.data(), N);
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

void BM_EigenGemm(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  Buffers buf(M, N, K);
  ConstMap a(buf.a.data(), M, K), b(buf.b.data(), K, N);
  Map c(buf.c.data(), M, N);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

// B stored [N, K] (tied embedding), C = A · Bᵀ.
void BM_NnxGemmBt(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  Buffers buf(M, N, K);
  for (auto _ : state) {
    nnx::kernels::gemm_f32_bt(M, N, K, buf.a.data(), K, buf.b.data(), K, buf.c.data(), N);
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

void BM_EigenGemmBt(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  Buffers buf(M, N, K);
  ConstMap a(buf.a.data(), M, K), b(buf.b.data(), N, K);
  Map c(buf.c.data(), M, N);
  for (auto _ : state) {
    c.noalias() = a * b.transpose();
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, M, N, K);
}

// Args: M, K, N, threads.
void BM_NnxGemmThreads(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int before = nnx::num_threads();
  nnx::set_num_threads(static_cast<int>(state.range(3)));
  Buffers buf(M, N, K);
  for (auto _ : state) {
    nnx::kernels::gemm_f32(M, N, K, buf.a.data(), K, buf.b.data(), N, buf.c.data(), N);
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  nnx::set_num_threads(before);
  set_flops(state, M, N, K);
}

void BM_NnxGemmBtThreads(benchmark::State& state) {
  const std::int64_t M = state.range(0), K = state.range(1), N = state.range(2);
  const int before = nnx::num_threads();
  nnx::set_num_threads(static_cast<int>(state.range(3)));
  Buffers buf(M, N, K);
  for (auto _ : state) {
    nnx::kernels::gemm_f32_bt(M, N, K, buf.a.data(), K, buf.b.data(), K, buf.c.data(), N);
    benchmark::DoNotOptimize(buf.c.data());
    benchmark::ClobberMemory();
  }
  nnx::set_num_threads(before);
  set_flops(state, M, N, K);
}

// A sum over 1 GiB of 64-bit words (vectorized: the memory, not the adds, is measured).
void BM_ReadBandwidth1G(benchmark::State& state) {
  const std::size_t n = (std::size_t{1} << 30) / sizeof(std::uint64_t);
  static std::vector<std::uint64_t> buffer(n, 1);
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += buffer[i];
    benchmark::DoNotOptimize(sum);
  }
  state.counters["GB/s"] = benchmark::Counter(static_cast<double>(n * sizeof(std::uint64_t)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void thread_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads"});
  for (std::int64_t M : {1, 8, 128})
    for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{768, 768}, {768, 2304}, {768, 3072}, {3072, 768}})
      for (std::int64_t t : {1, 2}) b->Args({M, K, N, t});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void thread_logits_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N", "threads"});
  for (std::int64_t M : {1, 8, 128})
    for (std::int64_t t : {1, 2}) b->Args({M, 768, 50257, t});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void gemm_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N"});
  for (std::int64_t M : {1, 8, 128})
    for (auto [K, N] : {std::pair<std::int64_t, std::int64_t>{768, 2304}, {768, 3072}, {3072, 768}, {768, 50257}})
      b->Args({M, K, N});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void logits_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N"});
  for (std::int64_t M : {1, 8, 128}) b->Args({M, 768, 50257});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

void ref_shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "K", "N"});
  for (std::int64_t M : {1, 8, 128}) b->Args({M, 768, 2304});
  b->Unit(benchmark::kMicrosecond)->UseRealTime();
}

}  // namespace

BENCHMARK(BM_NnxGemm)->Apply(gemm_shapes);
BENCHMARK(BM_EigenGemm)->Apply(gemm_shapes);
BENCHMARK(BM_NnxGemmBt)->Apply(logits_shapes);
BENCHMARK(BM_EigenGemmBt)->Apply(logits_shapes);
BENCHMARK(BM_RefGemm)->Apply(ref_shapes);
BENCHMARK(BM_NnxGemmThreads)->Apply(thread_shapes);
BENCHMARK(BM_NnxGemmBtThreads)->Apply(thread_logits_shapes);
BENCHMARK(BM_ReadBandwidth1G)->Unit(benchmark::kMillisecond)->UseRealTime();
