// nn::DecoderLayer against the reference composed of the reference pieces (norm, attention,
// MLP, residual adds): pre-LayerNorm with MHA and gelu as GPT-2, pre-RMSNorm with GQA, RoPE
// and SwiGLU as Llama; with dropout, whose masks are reproduced from the same seed.
#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>

#include <nnx/nn.hpp>

#include "nn_reference.hpp"

namespace {

using i64 = std::int64_t;

// A norm, attention and an MLP in sequence: errors near 1e-6 on O(1) outputs; a missing
// residual, a norm on the wrong input or a swapped sub-block moves them by 1e-2 or more.
constexpr double kLayerTol = 3e-5;

nnx::DecoderLayer<nnx::LayerNorm> gpt2_layer(i64 C, nnx::Rngs& rngs) {
  return {nnx::LayerNorm(C, 1e-5), nnx::Attention(C, {.num_heads = 4, .fused_qkv = true, .use_bias = true}, rngs),
          nnx::LayerNorm(C, 1e-5), nnx::Mlp(C, 4 * C, nnx::Activation::gelu_tanh, rngs), std::nullopt};
}

nnx::DecoderLayer<nnx::RMSNorm> llama_layer(i64 C, nnx::Rngs& rngs) {
  return {nnx::RMSNorm(C, 1e-6),
          nnx::Attention(C, {.num_heads = 4, .num_kv_heads = 2, .use_bias = false, .use_rope = true}, rngs),
          nnx::RMSNorm(C, 1e-6), nnx::Mlp(C, 56, nnx::Activation::swiglu, rngs, false), std::nullopt};
}

template <class Layer>
void check_layer(Layer& layer, i64 C, std::uint32_t seed) {
  nn_ref::randomize_biases_and_norms(layer, seed);
  const i64 B = 2, T = 7;
  const nnx::Tensor x = nn_ref::random_tensor({B, T, C}, seed + 1);
  const nnx::Tensor y = layer(x, nn_ref::positions(B, T));
  REQUIRE(y.shape() == x.shape());
  for (i64 b = 0; b < B; ++b) {
    const nn_ref::Vec want = nn_ref::decoder_layer(nn_ref::rows(x, b, 0, T), T, layer);
    INFO("row " << b);
    CHECK(nn_ref::max_abs_diff(y.data<float>() + b * T * C, want) <= kLayerTol);
  }
}

}  // namespace

TEST_CASE("DecoderLayer (LayerNorm, MHA, gelu) matches the composed reference", "[nn][decoder_layer]") {
  nnx::Rngs rngs{1};
  auto layer = gpt2_layer(32, rngs);
  check_layer(layer, 32, 2);
}

TEST_CASE("DecoderLayer (RMSNorm, GQA with RoPE, SwiGLU) matches the composed reference", "[nn][decoder_layer]") {
  nnx::Rngs rngs{3};
  auto layer = llama_layer(32, rngs);
  check_layer(layer, 32, 4);
}

TEST_CASE("DecoderLayer with dropout drops the attention and MLP outputs, not the residual", "[nn][decoder_layer][dropout]") {
  const i64 C = 32, T = 6;
  nnx::Rngs rngs{5};
  auto layer = gpt2_layer(C, rngs);
  nn_ref::randomize_biases_and_norms(layer, 6);
  nnx::Rngs drop_rngs{{"dropout", 9}};
  layer.dropout = nnx::Dropout(0.25, drop_rngs);
  const nnx::Tensor x = nn_ref::random_tensor({1, T, C}, 7);
  const nnx::Tensor y = layer(x, nn_ref::positions(1, T));

  // The layer's two dropout calls use the stream's first and second keys: the same masks
  // as a Dropout on a fresh Rngs of the same seed, applied to ones.
  nnx::Rngs same{{"dropout", 9}};
  nnx::Dropout twin(0.25, same);
  const nnx::Tensor ones = nnx::Tensor::full({1, T, C}, 1.0);
  const nn_ref::Vec m1 = nn_ref::to_double(twin(ones)), m2 = nn_ref::to_double(twin(ones));
  const nn_ref::Vec want = nn_ref::decoder_layer(nn_ref::rows(x, 0, 0, T), T, layer, m1, m2);
  CHECK(nn_ref::max_abs_diff(y.data<float>(), want) <= kLayerTol);
  // ... and not the layer without dropout (the masks did something).
  const nn_ref::Vec plain = nn_ref::decoder_layer(nn_ref::rows(x, 0, 0, T), T, layer);
  CHECK(nn_ref::max_abs_diff(y.data<float>(), plain) > 1e-2);

  // In deterministic mode the layer is the plain one.
  layer.dropout->deterministic = true;
  CHECK(nn_ref::max_abs_diff(layer(x, nn_ref::positions(1, T)).data<float>(), plain) <= kLayerTol);
}
