// eval_shape of a GPT-2-124M-sized model, measured with a replaced global operator new:
// building the abstract model (and splitting it) must use far less heap than the model's
// ~498 MB of f32 weights, i.e. no tensor storage is allocated behind tensor_memory_stats'
// back.
//
// This translation unit replaces the global allocation functions for the whole test
// executable. They forward to malloc / aligned_alloc / free and only count while a
// measurement is running (g_counting), so every other test is unaffected.
#include "nnx/core.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>
#include <vector>

#include "../support/counting_new.hpp"

using counting_new::heap_use;

// ---- a GPT-2-124M-sized module tree -------------------------------------------------------

namespace {

using nnx::Tensor;

struct Config {
  std::int64_t vocab = 50257, ctx = 1024, layers = 12, d = 768, mlp = 3072;
};

struct LayerNorm {
  nnx::Param scale, bias;
  NNX_FIELDS(scale, bias)
  LayerNorm() = default;
  explicit LayerNorm(std::int64_t d) : scale(Tensor::full({d}, 1.0)), bias(Tensor::zeros({d})) {}
};

struct Linear {
  nnx::Param kernel, bias;
  NNX_FIELDS(kernel, bias)
  Linear() = default;
  Linear(std::int64_t din, std::int64_t dout, nnx::Rngs& rngs)
      : kernel(nnx::init::normal(rngs.params(), {din, dout}, 0.02f), {"embed", "mlp"}),
        bias(Tensor::zeros({dout})) {}
};

struct Block {
  LayerNorm ln_1;
  Linear c_attn, attn_proj;
  LayerNorm ln_2;
  Linear c_fc, mlp_proj;
  NNX_FIELDS(ln_1, c_attn, attn_proj, ln_2, c_fc, mlp_proj)
  Block() = default;
  Block(const Config& c, nnx::Rngs& rngs)
      : ln_1(c.d),
        c_attn(c.d, 3 * c.d, rngs),
        attn_proj(c.d, c.d, rngs),
        ln_2(c.d),
        c_fc(c.d, c.mlp, rngs),
        mlp_proj(c.mlp, c.d, rngs) {}
};

struct Gpt2Sized {
  std::int64_t vocab = 0, d = 0;
  nnx::Param wte, wpe;
  std::vector<Block> h;
  LayerNorm ln_f;
  nnx::Param lm_head;  // tied to wte
  NNX_FIELDS(vocab, d, wte, wpe, h, ln_f, lm_head)
  Gpt2Sized() = default;
  Gpt2Sized(const Config& c, nnx::Rngs& rngs)
      : vocab(c.vocab),
        d(c.d),
        wte(nnx::init::normal(rngs.params(), {c.vocab, c.d}, 0.02f)),
        wpe(nnx::init::normal(rngs.params(), {c.ctx, c.d}, 0.01f)),
        ln_f(c.d),
        lm_head(wte) {
    for (std::int64_t i = 0; i < c.layers; ++i) h.emplace_back(c, rngs);
  }
};

constexpr std::int64_t kParams = 124'439'808;
constexpr std::int64_t kFourMB = 4 << 20;

}  // namespace

TEST_CASE("the replaced operator new counts what it should", "[eval_shape][alloc]") {
  auto [bytes, count] = heap_use([] {
    std::vector<char> v(12345);
    (void)v;
  });
  CHECK(bytes == 12345);
  CHECK(count == 1);
  nnx::release_cached_tensor_memory();
  auto [tbytes, tcount] = heap_use([] {
    auto t = Tensor::zeros({1000});  // 4000 bytes of aligned storage + the shared_ptr control block
    (void)t;
  });
  CHECK(tbytes >= 4000);
  CHECK(tbytes < 4000 + 1024);  // plus the storage pool's bookkeeping for a new size
  CHECK(tcount >= 2);
  // The same size again comes from the storage pool: no heap allocation at all.
  auto [again_bytes, again_count] = heap_use([] {
    auto t = Tensor::zeros({1000});
    (void)t;
  });
  CHECK(again_bytes == 0);
  CHECK(again_count == 0);
}

TEST_CASE("eval_shape of a GPT-2-124M-sized model stays far below its size on the heap", "[eval_shape][alloc][gpt2]") {
  const Config cfg;
  nnx::Rngs rngs{0};
  Gpt2Sized model;
  const auto stats_before = nnx::tensor_memory_stats();
  auto [bytes, count] = heap_use([&] { model = nnx::eval_shape([&] { return Gpt2Sized(cfg, rngs); }); });
  INFO("heap bytes " << bytes << " in " << count << " allocations");
  CHECK(bytes < kFourMB);
  CHECK(nnx::tensor_memory_stats().allocated_bytes == stats_before.allocated_bytes);
  CHECK(model.wte.value().is_abstract());
  CHECK(model.lm_head.same_as(model.wte));

  nnx::GraphDef<Gpt2Sized> g;
  nnx::State s;
  auto [split_bytes, split_count] = heap_use([&] { std::tie(g, s) = nnx::split(model); });
  INFO("split: heap bytes " << split_bytes << " in " << split_count << " allocations");
  CHECK(split_bytes < kFourMB);
  CHECK(g.numel() == kParams);
  CHECK(s.numel() == kParams);
  CHECK(s.size() == 148);

  // merging the abstract state back is as cheap
  auto [merge_bytes, merge_count] = heap_use([&] {
    Gpt2Sized r = nnx::merge(g, s);
    CHECK(r.lm_head.same_as(r.wte));
  });
  CHECK(merge_bytes < kFourMB);

  // and eval_shape of a concrete module (rebuilding its variables abstractly) too
  auto [es_bytes, es_count] = heap_use([&] {
    Gpt2Sized a = nnx::eval_shape(model);
    CHECK(a.h[3].c_fc.kernel.value().shape() == nnx::Shape{768, 3072});
  });
  CHECK(es_bytes < kFourMB);
}
