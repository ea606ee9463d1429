// nn::Attention against a double-precision reference written from the formula (causal
// softmax(q kᵀ / sqrt(D)) v, grouped kv heads, rotate-half RoPE): MHA as GPT-2 uses it, GQA and
// MQA as Llama does, fused and separate projections; and the KV-cache path: a prefill of a
// padded batch, then decode steps at each row's own position, give what the full sequences give.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include <nnx/nn.hpp>

#include "nn_reference.hpp"

namespace {

using i64 = std::int64_t;
using nn_ref::Vec;

// Outputs are O(1) sums of O(100) float roundings each (32-64 term dot products, softmax over
// at most 16 keys, two projections): their error stays near 1e-6. A wrong mask, scale, head
// mapping, rotation or projection split moves outputs by 1e-2 or more.
constexpr double kAttentionTol = 2e-5;

struct Style {
  std::string name;
  i64 d_model;
  nnx::AttentionOptions options;
};

std::vector<Style> styles() {
  return {
      {"MHA, fused qkv with bias (GPT-2)", 32, {.num_heads = 4, .fused_qkv = true, .use_bias = true}},
      {"GQA 4:2, separate, RoPE, head_dim 16 != d_model / heads (Llama)",
       32,
       {.num_heads = 4, .num_kv_heads = 2, .head_dim = 16, .use_bias = false, .use_rope = true}},
      {"MQA 6:1, fused with bias, RoPE theta 500000",
       24,
       {.num_heads = 6, .num_kv_heads = 1, .fused_qkv = true, .use_bias = true, .use_rope = true,
        .rope_theta = 500000.0}},
  };
}

nnx::Tensor positions_of(const std::vector<std::vector<std::int32_t>>& rows) {
  std::vector<std::int32_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  return nnx::Tensor::from_vector(flat, {static_cast<i64>(rows.size()), static_cast<i64>(rows[0].size())});
}

// Tokens 0..t_end of row b of a [B, T, C] tensor: one sequence for the reference.
Vec sequence(const nnx::Tensor& x, i64 b, i64 t_end) { return nn_ref::rows(x, b, 0, t_end); }

}  // namespace

TEST_CASE("Attention over full sequences matches the double reference", "[nn][attention]") {
  for (const Style& st : styles()) {
    INFO(st.name);
    nnx::Rngs rngs{11};
    nnx::Attention attn(st.d_model, st.options, rngs);
    nn_ref::randomize_biases_and_norms(attn, 12);
    const i64 B = 3, T = 9, C = st.d_model;
    const nnx::Tensor x = nn_ref::random_tensor({B, T, C}, 13);
    const nnx::Tensor y = attn(x, nn_ref::positions(B, T));
    REQUIRE(y.shape() == nnx::Shape{B, T, C});
    for (i64 b = 0; b < B; ++b) {
      const Vec want = nn_ref::attention(nn_ref::rows(x, b, 0, T), T, attn);
      INFO("row " << b << ", largest output " << nn_ref::max_abs(want));
      CHECK(nn_ref::max_abs(want) > 0.1);  // not a degenerate case
      CHECK(nn_ref::max_abs_diff(y.data<float>() + b * T * C, want) <= kAttentionTol);
    }
  }
}

TEST_CASE("Attention is causal: a token's output ignores every later token", "[nn][attention]") {
  for (const Style& st : styles()) {
    INFO(st.name);
    nnx::Rngs rngs{21};
    nnx::Attention attn(st.d_model, st.options, rngs);
    const i64 T = 8, C = st.d_model;
    nnx::Tensor x = nn_ref::random_tensor({1, T, C}, 22);
    const nnx::Tensor before = attn(x, nn_ref::positions(1, T));
    // Change token 5 only: outputs 0..4 keep their bits, 5..7 change.
    for (i64 c = 0; c < C; ++c) x.data<float>()[5 * C + c] += 1.0f;
    const nnx::Tensor after = attn(x, nn_ref::positions(1, T));
    CHECK(nnx::equal(before.select(0).slice(0, 5), after.select(0).slice(0, 5)));
    for (i64 t = 5; t < T; ++t) CHECK_FALSE(nnx::equal(before.select(0).select(t), after.select(0).select(t)));
  }
}

TEST_CASE("Attention with a KV cache: padded prefill, then decode steps, equal the full sequences",
          "[nn][attention][cache]") {
  for (const Style& st : styles()) {
    INFO(st.name);
    const i64 C = st.d_model, S = 16;
    nnx::Rngs rngs{31};
    nnx::Attention full(C, st.options, rngs);  // train mode: no cache
    nn_ref::randomize_biases_and_norms(full, 32);
    nnx::AttentionOptions cached_options = st.options;
    cached_options.mode = nnx::Mode::prefill;
    cached_options.cache_batch = 2;
    cached_options.cache_length = S;
    nnx::Attention cached(C, cached_options, rngs);
    nn_ref::copy_params(full, cached);
    REQUIRE(cached.cache.has_value());

    // Row 0 is a 6-token prompt; row 1 a 4-token prompt padded with 2 junk tokens.
    const nnx::Tensor prompt = nn_ref::random_tensor({2, 6, C}, 33);
    const nnx::Tensor pre = cached(prompt, nn_ref::positions(2, 6));
    {
      const Vec want0 = nn_ref::attention(sequence(prompt, 0, 6), 6, full);
      const Vec want1 = nn_ref::attention(sequence(prompt, 1, 4), 4, full);
      CHECK(nn_ref::max_abs_diff(pre.data<float>(), want0) <= kAttentionTol);
      CHECK(nn_ref::max_abs_diff(pre.data<float>() + 6 * C, want1) <= kAttentionTol);
    }

    // Two decode steps: row 0 at positions 6, 7; row 1 at 4, 5 (overwriting its padding).
    // hist0 and hist1 hold each row's sequence so far, for the references.
    Vec hist0 = sequence(prompt, 0, 6), hist1 = sequence(prompt, 1, 4);
    for (std::int32_t step = 0; step < 2; ++step) {
      INFO("decode step " << step);
      const nnx::Tensor token = nn_ref::random_tensor({2, 1, C}, 40u + static_cast<std::uint32_t>(step));
      const nnx::Tensor y = cached(token, positions_of({{6 + step}, {4 + step}}));
      REQUIRE(y.shape() == nnx::Shape{2, 1, C});
      const Vec t0 = nn_ref::rows(token, 0, 0, 1), t1 = nn_ref::rows(token, 1, 0, 1);
      hist0.insert(hist0.end(), t0.begin(), t0.end());
      hist1.insert(hist1.end(), t1.begin(), t1.end());
      const i64 T0 = static_cast<i64>(hist0.size()) / C, T1 = static_cast<i64>(hist1.size()) / C;
      const Vec want0 = nn_ref::attention(hist0, T0, full), want1 = nn_ref::attention(hist1, T1, full);
      CHECK(nn_ref::max_abs_diff(y.data<float>(), Vec(want0.end() - C, want0.end())) <= kAttentionTol);
      CHECK(nn_ref::max_abs_diff(y.data<float>() + C, Vec(want1.end() - C, want1.end())) <= kAttentionTol);

      // The module without a cache, run on the whole sequence, agrees within float rounding.
      for (const auto& [hist, T, row] : {std::tuple{&hist0, T0, 0}, std::tuple{&hist1, T1, 1}}) {
        std::vector<float> xs(hist->begin(), hist->end());
        const nnx::Tensor whole = full(nnx::Tensor::from_vector(xs, {1, T, C}), nn_ref::positions(1, T));
        const float* last = whole.data<float>() + (T - 1) * C;
        double worst = 0.0;
        for (i64 c = 0; c < C; ++c)
          worst = std::max(worst, std::fabs(static_cast<double>(last[c]) - y.data<float>()[row * C + c]));
        CHECK(worst <= 2 * kAttentionTol);
      }
    }
  }
}

TEST_CASE("Attention rejects bad head counts, shapes and positions outside the cache", "[nn][attention][errors]") {
  nnx::Rngs rngs{0};
  CHECK_THROWS_AS(nnx::Attention(32, {.num_heads = 4, .num_kv_heads = 3}, rngs), nnx::InvalidArgument);
  CHECK_THROWS_AS(nnx::Attention(32, {.num_heads = 4, .head_dim = 7, .use_rope = true}, rngs), nnx::InvalidArgument);
  nnx::Attention attn(32, {.num_heads = 4, .mode = nnx::Mode::prefill, .cache_batch = 1, .cache_length = 4}, rngs);
  const nnx::Tensor x = nn_ref::random_tensor({1, 1, 32}, 1);
  CHECK_THROWS_AS(attn(x, positions_of({{4}})), nnx::InvalidArgument);
  CHECK_THROWS_AS(attn(x, positions_of({{-1}})), nnx::InvalidArgument);
  CHECK_THROWS_AS(attn(nn_ref::random_tensor({2, 1, 32}, 2), positions_of({{0}, {0}})), nnx::ShapeError);
  CHECK_THROWS_AS(attn(x, nn_ref::positions(1, 2)), nnx::ShapeError);
}
