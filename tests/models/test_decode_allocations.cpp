// A decode step allocates nothing once warm: every tensor buffer (and its control block)
// comes back from the storage pool and the attention scratch is reused. Counted with the
// replaced global operator new of tests/support/counting_new.hpp (this executable only).
#include <catch2/catch.hpp>

#include <nnx/models.hpp>

#include "../support/counting_new.hpp"

TEST_CASE("a warm decode step makes no heap allocation", "[models][allocation]") {
  nnx::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  nnx::Rngs rngs{0};
  nnx::Llama model(c, nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
  const auto tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>{5, 9}, {2});
  nnx::decode_step(model, tokens, {0, 3});  // the warm-up step fills the storage pool
  bool shapes_ok = true;
  auto [bytes, count] = counting_new::heap_use([&] {
    for (std::int64_t step = 1; step <= 8; ++step) {
      nnx::Tensor out = nnx::decode_step(model, tokens, {step, step + 3});
      shapes_ok = shapes_ok && out.shape() == nnx::Shape{2, 64};
    }
  });
  CHECK(shapes_ok);
  CHECK(count == 0);
  CHECK(bytes == 0);
}
