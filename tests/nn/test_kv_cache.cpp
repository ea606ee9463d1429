// Tests for nnx/nn/kv_cache.hpp: what each dtype stores (int8 with AQT numerics, its zero guard
// and NaN carried by the scale; bf16 rounded to nearest even), that attention over a compact
// cache is attention over the values it stores, and copy_cache_positions on any axis order.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <nnx/nn/attention.hpp>
#include <nnx/nn/kv_cache.hpp>

#include "../support/numeric.hpp"

namespace {

using i64 = std::int64_t;

std::vector<float> cache_values(std::size_t n, std::uint32_t seed) {
  return test_support::random_floats(n, seed, -3.0f, 3.0f);
}

}  // namespace

TEST_CASE("an int8 KV cache stores AQT absmax rows per position and KV head", "[nn][kv_cache]") {
  nnx::KVCache cache(2, 5, 2, 4, nnx::DType::i8);
  REQUIRE(cache.key_scale);
  CHECK(cache.key_scale->value().shape() == nnx::Shape{2, 5, 2});
  cache.make_writable();
  // Head 0: absmax 2.55 (scale 0.02; 0.01 / 0.02 = 0.5 rounds to even 0, 0.03 / 0.02 = 1.5 to 2);
  // head 1: all zeros.
  const float k[8] = {2.55f, -1.0f, 0.01f, 0.03f, 0.0f, 0.0f, 0.0f, -0.0f};
  const float v[8] = {1.0f, std::numeric_limits<float>::quiet_NaN(), 0.0f, 0.0f, 0.5f, -0.5f, 0.25f, 0.0f};
  cache.write(1, 3, k, v);
  const auto* q = cache.key.value().data<std::int8_t>() + ((1 * 5 + 3) * 2) * 4;
  const float* ks = cache.key_scale->value().data<float>() + (1 * 5 + 3) * 2;
  CHECK(ks[0] == 2.55f / 127.5f);
  CHECK(q[0] == 127);
  CHECK(q[1] == static_cast<std::int8_t>(std::nearbyint(-1.0f / (2.55f / 127.5f))));
  CHECK(q[2] == static_cast<std::int8_t>(std::nearbyint(0.01f / (2.55f / 127.5f))));
  CHECK(ks[1] == 1.0f);  // the zero guard: scale 1 and zeros, never 0 / 0
  for (int d = 4; d < 8; ++d) CHECK(q[d] == 0);
  // A NaN makes its row's scale NaN (attention over it is NaN); the other head is untouched.
  const float* vs = cache.value_scale->value().data<float>() + (1 * 5 + 3) * 2;
  CHECK(std::isnan(vs[0]));
  CHECK(vs[1] == 0.5f / 127.5f);
  const nnx::kernels::KvRows rows = cache.value_rows(1).at(3, 0, 4);
  CHECK(std::isnan(rows.value(0, 0)));
  CHECK(cache.value_rows(1).at(3, 1, 4).value(0, 1) == -127.0f * (0.5f / 127.5f));
}

TEST_CASE("a bf16 KV cache rounds to nearest even", "[nn][kv_cache]") {
  nnx::KVCache cache(1, 2, 1, 3, nnx::DType::bf16);
  CHECK_FALSE(cache.key_scale);
  cache.make_writable();
  const float k[3] = {1.00390625f, 1.01171875f, -2.5f};  // ties: to 1.0 and to 1.015625
  cache.write(0, 1, k, k);
  const nnx::kernels::KvRows rows = cache.key_rows(0);
  CHECK(rows.value(1, 0) == 1.0f);
  CHECK(rows.value(1, 1) == 1.015625f);
  CHECK(rows.value(1, 2) == -2.5f);
}

TEST_CASE("KVCache rejects dtypes and head sizes it cannot serve", "[nn][kv_cache][errors]") {
  CHECK_THROWS_WITH(nnx::KVCache(1, 4, 1, 8, nnx::DType::f16), Catch::Contains("expected f32, bf16 or i8"));
  CHECK_THROWS_WITH(nnx::KVCache(1, 4, 1, 512, nnx::DType::i8), Catch::Contains("head_dim up to 256"));
  CHECK_NOTHROW(nnx::KVCache(1, 4, 1, 512, nnx::DType::f32));
  CHECK(nnx::parse_kv_cache_dtype("int8") == nnx::DType::i8);
  CHECK_THROWS_WITH(nnx::parse_kv_cache_dtype("fp8"), Catch::Contains("'fp8'"));
}

// A prefill of two rows at their own positions, then a decode step, over an int8 or bf16 cache
// stays near the same attention over an f32 cache (the kernels' tests show it is exactly the
// attention over the stored values; this shows the rows are stored where they are read).
TEST_CASE("attention over a compact cache stays near the f32 cache's", "[nn][kv_cache]") {
  for (const auto& [dtype, bound] : {std::pair{nnx::DType::bf16, 1e-2}, std::pair{nnx::DType::i8, 3e-2}}) {
    INFO(nnx::dtype_name(dtype));
    nnx::Rngs rngs{3};
    const nnx::AttentionOptions o{.num_heads = 4, .num_kv_heads = 2, .use_rope = true, .mode = nnx::Mode::prefill,
                                  .cache_batch = 2, .cache_length = 12, .cache_dtype = dtype};
    nnx::Attention compact(16, o, rngs);
    std::uint32_t seed = 7;
    for (nnx::Linear* l : {&*compact.query, &*compact.key, &*compact.value, &compact.out}) {
      const auto w = cache_values(static_cast<std::size_t>(l->kernel->value().numel()), seed++);
      for (std::size_t i = 0; i < w.size(); ++i) l->kernel->value().data<float>()[i] = w[i] * 0.25f;
    }
    nnx::Attention exact = compact;  // shares the weights; gets its own f32 cache
    exact.cache = nnx::KVCache(2, 12, 2, 4, nnx::DType::f32);
    nnx::Tensor positions = nnx::Tensor::empty({2, 5}, nnx::DType::i32);
    for (i64 i = 0; i < 10; ++i) positions.data<std::int32_t>()[i] = static_cast<std::int32_t>(i % 5 + (i / 5) * 3);
    nnx::Tensor next = nnx::Tensor::from_vector(std::vector<std::int32_t>{5, 8}, {2, 1});
    const nnx::Tensor x = nnx::Tensor::from_vector(cache_values(2 * 5 * 16, 11), {2, 5, 16});
    const nnx::Tensor x1 = nnx::Tensor::from_vector(cache_values(2 * 16, 12), {2, 1, 16});
    for (const auto& [input, pos] : {std::pair{x, positions}, std::pair{x1, next}}) {
      const nnx::Tensor want = exact(input, pos), got = compact(input, pos);
      double worst = 0, largest = 0;
      for (i64 i = 0; i < want.numel(); ++i) {
        worst = std::max(worst, static_cast<double>(std::fabs(want.data<float>()[i] - got.data<float>()[i])));
        largest = std::max(largest, static_cast<double>(std::fabs(want.data<float>()[i])));
      }
      INFO("worst " << worst << " of " << largest);
      CHECK(worst > 0);
      CHECK(worst <= bound * largest);
    }
  }
}

// Positions [0, n) of a one-row cache land in the slot's row, found by the axis names alone:
// sequence before batch, an axis between them, and bytes of any dtype.
TEST_CASE("copy_cache_positions finds slots and positions by axis name", "[nn][kv_cache]") {
  nnx::State src, dst;
  nnx::Tensor s = nnx::Tensor::empty({6, 1, 3, 2}, nnx::DType::i8);  // [seq, batch, x, y]
  for (i64 i = 0; i < s.numel(); ++i) s.data<std::int8_t>()[i] = static_cast<std::int8_t>(i + 1);
  src.insert(nnx::Path::parse("a"), nnx::Cache(s, {"cache_sequence", "cache_batch", "x", "y"}).state());
  dst.insert(nnx::Path::parse("a"),
             nnx::Cache(nnx::Tensor::zeros({6, 4, 3, 2}, nnx::DType::i8), {"cache_sequence", "cache_batch", "x", "y"})
                 .state());
  nnx::copy_cache_positions(src, dst, 2, 4);
  const nnx::Tensor& d = dst.entry(0).leaf.tensor();
  for (i64 p = 0; p < 6; ++p)
    for (i64 b = 0; b < 4; ++b)
      for (i64 e = 0; e < 6; ++e) {
        const std::int8_t got = d.data<std::int8_t>()[(p * 4 + b) * 6 + e];
        const std::int8_t want = b == 2 && p < 4 ? s.data<std::int8_t>()[p * 6 + e] : 0;
        REQUIRE(got == want);
      }
  // A leaf without the axis names, or a source of another shape, is an error naming the leaf.
  nnx::State bare;
  bare.insert(nnx::Path::parse("b"), nnx::Cache(nnx::Tensor::zeros({2, 3})).state());
  CHECK_THROWS_WITH(nnx::copy_cache_positions(bare, bare, 0, 1),
                    Catch::Contains("'b'") && Catch::Contains("cache_batch"));
  nnx::State wrong;
  wrong.insert(nnx::Path::parse("a"),
               nnx::Cache(nnx::Tensor::zeros({5, 1, 3, 2}, nnx::DType::i8), {"cache_sequence", "cache_batch", "x", "y"})
                   .state());
  CHECK_THROWS_WITH(nnx::copy_cache_positions(wrong, dst, 0, 1), Catch::Contains("'a'"));
}

// A batch of some of the cache's rows (a decode step of the busy slots) names each row once,
// inside the cache; anything else is an error naming the row.
TEST_CASE("Attention checks the cache rows a batch names", "[nn][kv_cache][errors]") {
  nnx::Rngs rngs{1};
  nnx::Attention attn(8, {.num_heads = 2, .mode = nnx::Mode::autoregressive, .cache_batch = 3, .cache_length = 4},
                      rngs);
  const nnx::Tensor x = nnx::Tensor::zeros({2, 1, 8});
  const nnx::Tensor pos = nnx::Tensor::zeros({2, 1}, nnx::DType::i32);
  const std::vector<std::int64_t> good{2, 0}, outside{0, 3}, twice{1, 1}, one{1};
  CHECK_NOTHROW(attn(x, pos, good));
  CHECK_THROWS_WITH(attn(x, pos, outside), Catch::Contains("cache row 3") && Catch::Contains("[0, 3)"));
  CHECK_THROWS_WITH(attn(x, pos, twice), Catch::Contains("both name cache row 1"));
  CHECK_THROWS_WITH(attn(x, pos, one), Catch::Contains("1 cache rows for an input batch of 2"));
  CHECK_THROWS_WITH(attn(x, pos), Catch::Contains("the KV cache has 3 rows"));
  nnx::Attention train(8, {.num_heads = 2}, rngs);
  CHECK_THROWS_WITH(train(x, pos, good), Catch::Contains("without a KV cache"));
}
