// bench_split_merge — split and merge of a GPT-2-124M-shaped module tree (148 variables).
//
//   build/benchmarks/bench_split_merge
//
// Reports time per leaf ("per_leaf"). Baseline in the same run: BM_CopyModule, a plain copy
// of the module struct, which touches every variable handle once and is the least any
// traversal can cost. Results and the machine go in benchmarks/RESULTS.md.
#include <benchmark/benchmark.h>

#include <optional>
#include <vector>

#include <nnx/core.hpp>

namespace {

struct Linear {
  nnx::Param kernel, bias;
  NNX_FIELDS(kernel, bias)
};
struct LayerNorm {
  double epsilon = 1e-5;
  nnx::Param scale, bias;
  NNX_FIELDS(epsilon, scale, bias)
};
struct Block {
  LayerNorm ln_1, ln_2;
  Linear c_attn, attn_proj, c_fc, mlp_proj;
  NNX_FIELDS(ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj)
};
struct Gpt2 {
  std::int64_t vocab = 50257, n_ctx = 1024, d = 768, heads = 12;
  nnx::Param wte, wpe;
  std::vector<Block> h;
  LayerNorm ln_f;
  nnx::Param lm_head;  // tied to wte
  NNX_FIELDS(vocab, n_ctx, d, heads, wte, wpe, h, ln_f, lm_head)
};

// Real (uninitialized) storage, so every handle copy is a reference-count update.
nnx::Param param(nnx::Shape s) { return nnx::Param(nnx::Tensor::empty(s)); }
LayerNorm layer_norm(std::int64_t d) { return {1e-5, param({d}), param({d})}; }
Linear linear(std::int64_t in, std::int64_t out) { return {param({in, out}), param({out})}; }

const Gpt2& model() {
  static const Gpt2 m = [] {
    Gpt2 g;
    g.wte = param({g.vocab, g.d});
    g.wpe = param({g.n_ctx, g.d});
    for (int i = 0; i < 12; ++i)
      g.h.push_back({layer_norm(g.d), layer_norm(g.d), linear(g.d, 3 * g.d), linear(g.d, g.d),
                     linear(g.d, 4 * g.d), linear(4 * g.d, g.d)});
    g.ln_f = layer_norm(g.d);
    g.lm_head = g.wte;
    return g;
  }();
  return m;
}

void set_per_leaf(benchmark::State& state, std::size_t leaves) {
  state.counters["leaves"] = static_cast<double>(leaves);
  state.counters["per_leaf"] = benchmark::Counter(static_cast<double>(leaves),
                                                  benchmark::Counter::kIsIterationInvariantRate |
                                                      benchmark::Counter::kInvert);
}

void BM_CopyModule(benchmark::State& state) {
  const Gpt2& m = model();
  for (auto _ : state) {
    Gpt2 copy = m;
    benchmark::DoNotOptimize(copy);
  }
  set_per_leaf(state, nnx::state(m).size());
}

void BM_Split(benchmark::State& state) {
  const Gpt2& m = model();
  for (auto _ : state) {
    auto parts = nnx::split(m, nnx::of<nnx::Param>, nnx::everything);
    benchmark::DoNotOptimize(parts);
  }
  set_per_leaf(state, nnx::state(m).size());
}

void BM_Merge(benchmark::State& state) {
  auto [graphdef, params, rest] = nnx::split(model(), nnx::of<nnx::Param>, nnx::everything);
  for (auto _ : state) {
    Gpt2 m = nnx::merge(graphdef, params, rest);
    benchmark::DoNotOptimize(m);
  }
  set_per_leaf(state, params.size() + rest.size());
}

void BM_SplitMerge(benchmark::State& state) {
  const Gpt2& m = model();
  for (auto _ : state) {
    auto [graphdef, params, rest] = nnx::split(m, nnx::of<nnx::Param>, nnx::everything);
    Gpt2 back = nnx::merge(graphdef, std::move(params), std::move(rest));
    benchmark::DoNotOptimize(back);
  }
  set_per_leaf(state, nnx::state(m).size());
}

// The decode-loop pattern: the caches of a model, without building a graphdef.
void BM_StateFilter(benchmark::State& state) {
  const Gpt2& m = model();
  for (auto _ : state) {
    nnx::State s = nnx::state(m, nnx::of<nnx::Param>);
    benchmark::DoNotOptimize(s);
  }
  set_per_leaf(state, nnx::state(m).size());
}

}  // namespace

BENCHMARK(BM_CopyModule);
BENCHMARK(BM_Split);
BENCHMARK(BM_Merge);
BENCHMARK(BM_SplitMerge);
BENCHMARK(BM_StateFilter);
