// A request's logits do not depend on the thread count: a tiny GPT-2 and a tiny Llama (GQA)
// prefill a padded batch of two prompts and decode a few steps on 1, 2 and 3 threads, with the
// kernels' parallel threshold at its default and forced to 1 (so that every GEMM and every
// attention call is split, even at these sizes); the logits agree bit for bit.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

#include <nnx/ops/threads.hpp>
#include <nnx/models.hpp>

#include "../support/thread_settings.hpp"

namespace {

using i64 = std::int64_t;

using test_support::ThreadSettings;

nnx::Gpt2Config small_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 300;
  c.n_positions = 32;
  c.n_embd = 64;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

nnx::LlamaConfig small_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 300;
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

void append(std::vector<float>& out, const nnx::Tensor& t) {
  const float* d = t.data<float>();
  out.insert(out.end(), d, d + t.numel());
}

// Every logit of a prefill of two prompts (lengths 8 and 5, padded to 8) and four decode
// steps, the model built from the same seed each time.
template <class Model, class Config>
std::vector<float> run(const Config& cfg) {
  nnx::Rngs rngs{7};
  Model model(cfg, nnx::Mode::prefill, rngs, {.cache_batch = 2, .cache_length = 16});
  const auto tokens = nnx::Tensor::from_vector(
      std::vector<std::int32_t>{3, 14, 15, 92, 65, 35, 89, 79, 2, 71, 82, 81, 28, 0, 0, 0}, {2, 8});
  std::vector<float> logits;
  append(logits, nnx::prefill(model, tokens, {8, 5}).logits);
  std::vector<std::int32_t> next{11, 47};
  for (i64 step = 0; step < 4; ++step) {
    const nnx::Tensor out =
        nnx::decode_step(model, nnx::Tensor::from_vector(next, {2}), {8 + step, 5 + step});
    append(logits, out);
    next = {static_cast<std::int32_t>((next[0] * 7 + 3) % 300), static_cast<std::int32_t>((next[1] * 5 + 1) % 300)};
  }
  return logits;
}

template <class Model, class Config>
void check_thread_independence(const Config& cfg) {
  ThreadSettings restore;
  for (i64 min_work : {i64{1}, restore.min_work}) {
    nnx::kernels::set_parallel_min_work(min_work);
    nnx::set_num_threads(1);
    const std::vector<float> one = run<Model>(cfg);
    for (int threads : {2, 3}) {
      nnx::set_num_threads(threads);
      const std::vector<float> many = run<Model>(cfg);
      INFO("threads=" << threads << " min_work=" << min_work);
      REQUIRE(many.size() == one.size());
      CHECK(std::memcmp(many.data(), one.data(), one.size() * sizeof(float)) == 0);
    }
  }
}

}  // namespace

TEST_CASE("GPT-2 logits are bitwise the same on 1, 2 and 3 threads", "[models][threads][determinism]") {
  check_thread_independence<nnx::Gpt2>(small_gpt2());
}

TEST_CASE("Llama (GQA) logits are bitwise the same on 1, 2 and 3 threads", "[models][threads][determinism]") {
  check_thread_independence<nnx::Llama>(small_llama());
}
