// The KV cache dtypes on the PyTorch fixtures: a bf16 cache gives PyTorch's greedy tokens, and
// an int8 cache keeps a prompt's logits and the decode steps' within the bound
// nnx/nn/kv_cache.hpp documents (kInt8LogitBound of the logits' range) of f32's.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include "reference_fixture.hpp"

namespace {

// |int8-cache logits - f32 logits| <= kInt8LogitBound * (max - min of the f32 logits), per
// position; measured 0.56-1.1 % on these fixtures.
constexpr double kInt8LogitBound = 0.02;

template <class Model, class Config>
void check_cache_dtypes(const std::string& name) {
  INFO("fixture " << name);
  const fixture::Expected e = fixture::expected(name);
  const auto T = static_cast<std::int64_t>(e.prompt.size());

  Model bf16 = fixture::load<Model, Config>(
      name, nnx::Mode::autoregressive, {.cache_batch = 1, .cache_length = 32, .cache_dtype = nnx::DType::bf16});
  CHECK(fixture::greedy(bf16, e.prompt, 8) == e.greedy);
  CHECK(fixture::greedy(bf16, e.prompt2, 8) == e.greedy2);

  // int8: the prompt's logits (every position reads the quantized rows before it, and its own),
  // then decode steps over the prompt's remaining tokens.
  Model i8 = fixture::load<Model, Config>(name, nnx::Mode::autoregressive,
                                          {.cache_batch = 1, .cache_length = 32, .cache_dtype = nnx::DType::i8});
  const std::int64_t k = T / 2;
  std::vector<std::int32_t> head(e.prompt.begin(), e.prompt.begin() + k);
  const auto pre = nnx::prefill(i8, fixture::tokens(head), {k});
  double worst = 0;
  const auto check_row = [&](const float* got, const nnx::Tensor& want) {
    const float* w = want.data<float>();
    const auto [lo, hi] = std::minmax_element(w, w + want.numel());
    double diff = 0;
    for (std::int64_t v = 0; v < want.numel(); ++v) diff = std::max(diff, std::fabs(double(got[v]) - double(w[v])));
    worst = std::max(worst, diff / (double(*hi) - double(*lo)));
    return diff > 0;
  };
  bool differs = false;
  for (std::int64_t t = 0; t < k; ++t)
    differs |= check_row(pre.logits.select(0).select(t).clone().template data<float>(), e.logits.select(t).clone());
  for (std::int64_t t = k; t < T; ++t) {
    const nnx::Tensor step =
        nnx::decode_step(i8, nnx::Tensor::from_vector(std::vector<std::int32_t>{e.prompt[t]}, {1}), {t});
    differs |= check_row(step.template data<float>(), e.logits.select(t).clone());
  }
  INFO("worst |int8 - f32| / logit range: " << worst);
  CHECK(differs);  // the cache really is int8
  CHECK(worst <= kInt8LogitBound);
}

}  // namespace

TEST_CASE("KV cache dtypes: bf16 keeps PyTorch's greedy tokens, int8 its logits within the bound",
          "[models][reference][kv_cache]") {
  check_cache_dtypes<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny");
  check_cache_dtypes<nnx::Llama, nnx::LlamaConfig>("llama_tiny");
  check_cache_dtypes<nnx::Llama, nnx::LlamaConfig>("llama_gqa4");
  check_cache_dtypes<nnx::Llama, nnx::LlamaConfig>("llama_mqa");
  check_cache_dtypes<nnx::Llama, nnx::LlamaConfig>("llama_head_dim");
}
