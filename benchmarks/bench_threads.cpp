// bench_threads — what a second thread buys, on a quiet machine and on one where another
// process holds a core.
//
//   build/benchmarks/bench_threads --benchmark_counters_tabular=true
//
// Products at the 162M Llama's shapes (K 768, N 3072): a decode GEMV (M = 1, weights from
// cache) and a prefill GEMM (M = 128), f32 and W8A8, each at 1 and 2 threads (nnx::
// set_num_threads, the second argument). The third argument adds `competitors` threads that
// spin for the whole benchmark: on a 2-core machine one competitor takes a core from our two
// threads, as another tenant's process does. Without the pool's straggler guard a 2-thread
// GEMV then ran at a fraction of its 1-thread speed (a worker preempted mid-chunk makes the
// caller wait a scheduler time slice); with it, 2 threads stay about as fast as 1.
// Compare rows of one shape: speedup = time(1 thread) / time(2 threads).
#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include <nnx/kernels/gemm.hpp>
#include <nnx/kernels/gemm_i8.hpp>
#include <nnx/kernels/quantize.hpp>
#include <nnx/ops/threads.hpp>

namespace {

constexpr std::int64_t kK = 768, kN = 3072;

std::vector<float> random_floats(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

// Threads that spin until destroyed: another process's load on the same cores.
class Competitors {
 public:
  explicit Competitors(std::int64_t n) {
    for (std::int64_t i = 0; i < n; ++i)
      threads_.emplace_back([this] {
        std::uint64_t x = 1;
        while (!stop_.load(std::memory_order_relaxed)) x = x * 6364136223846793005u + 1;
        sink_.fetch_add(x, std::memory_order_relaxed);
      });
  }
  ~Competitors() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<std::uint64_t> sink_{0};
  std::vector<std::thread> threads_;
};

struct Threads {
  int saved = nnx::num_threads();
  explicit Threads(std::int64_t n) { nnx::set_num_threads(static_cast<int>(n)); }
  ~Threads() { nnx::set_num_threads(saved); }
};

void BM_GemmF32(benchmark::State& state) {
  const std::int64_t M = state.range(0);
  const auto A = random_floats(static_cast<std::size_t>(M * kK), 1);
  const auto B = random_floats(static_cast<std::size_t>(kK * kN), 2);
  std::vector<float> C(static_cast<std::size_t>(M * kN));
  Threads threads(state.range(1));
  Competitors load(state.range(2));
  for (auto _ : state) {
    nnx::kernels::gemm_f32(M, kN, kK, A.data(), kK, B.data(), kN, C.data(), kN);
    benchmark::DoNotOptimize(C.data());
  }
  state.counters["GFLOP_per_s"] =
      benchmark::Counter(2.0 * double(M) * double(kN) * double(kK), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

void BM_GemmW8A8(benchmark::State& state) {
  const std::int64_t M = state.range(0);
  const auto x = random_floats(static_cast<std::size_t>(M * kK), 3);
  const auto w = random_floats(static_cast<std::size_t>(kK * kN), 4);
  std::vector<std::int8_t> q(static_cast<std::size_t>(kN * kK)), xq(static_cast<std::size_t>(M * kK));
  std::vector<float> ws(static_cast<std::size_t>(kN)), xs(static_cast<std::size_t>(M)), y(static_cast<std::size_t>(M * kN));
  nnx::kernels::quantize_columns_absmax(kK, kN, w.data(), kN, q.data(), kK, ws.data());
  Threads threads(state.range(1));
  Competitors load(state.range(2));
  for (auto _ : state) {
    nnx::kernels::quantize_rows_absmax(M, kK, x.data(), kK, xq.data(), kK, xs.data());
    nnx::kernels::gemm_i8_i8(M, kN, kK, xq.data(), kK, xs.data(), q.data(), kK, ws.data(), y.data(), kN);
    benchmark::DoNotOptimize(y.data());
  }
  state.counters["GOP_per_s"] =
      benchmark::Counter(2.0 * double(M) * double(kN) * double(kK), benchmark::Counter::kIsIterationInvariantRate,
                         benchmark::Counter::kIs1000);
}

void shapes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"M", "threads", "competitors"});
  for (std::int64_t M : {1, 128})
    for (std::int64_t competitors : {0, 1})
      for (std::int64_t threads : {1, 2}) b->Args({M, threads, competitors});
  b->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(0.5);
}

}  // namespace

BENCHMARK(BM_GemmF32)->Apply(shapes);
BENCHMARK(BM_GemmW8A8)->Apply(shapes);
