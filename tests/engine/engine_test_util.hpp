// Small model configs the engine tests share: fast to build, big enough to have real
// attention (4 heads, GQA for Llama) and a vocabulary that sampling can spread over.
#pragma once

#include <nnx/models.hpp>

namespace engine_test {

inline nnx::Gpt2Config small_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 97;
  c.n_positions = 48;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

// Untied, so a poisoned embedding row affects one input token and not the output head.
inline nnx::LlamaConfig small_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 89;
  c.hidden_size = 32;
  c.intermediate_size = 56;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 48;
  c.tie_word_embeddings = false;
  return c;
}

}  // namespace engine_test
