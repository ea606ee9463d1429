// Small model configs the engine tests share: fast to build, big enough to have real
// attention (4 heads, GQA for Llama) and a vocabulary that sampling can spread over; and the
// engine's greedy tokens for a prompt.
#pragma once

#include <cstdint>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

#include "../support/byte_tokenizer.hpp"

namespace engine_test {

// Token ids as an i32 [n] tensor.
inline nnx::Tensor ids_tensor(const std::vector<std::int32_t>& ids) {
  return nnx::Tensor::from_vector(ids, {static_cast<std::int64_t>(ids.size())});
}

inline nnx::Gpt2Config small_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 97;
  c.n_positions = 48;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

// small_gpt2 over the byte-level test tokenizer's vocabulary, for text in and out.
inline nnx::Gpt2Config text_gpt2(std::int64_t n_positions) {
  nnx::Gpt2Config c = small_gpt2();
  c.vocab_size = test_support::kByteTokenizerVocab;
  c.n_positions = n_positions;
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

// The engine's greedy tokens for `prompt` in slot 0: the first from prefill, then n - 1 generated.
template <class Model>
std::vector<std::int32_t> greedy(const nnx::Engine<Model>& engine, const nnx::State& params,
                                 const std::vector<std::int32_t>& prompt, std::int64_t n) {
  const auto T = static_cast<std::int64_t>(prompt.size());
  nnx::Prefix p = engine.prefill(params, nnx::Tensor::from_vector(prompt, {1, T}), T, {}, {}, {n, {}});
  std::vector<std::int32_t> tokens{p.token};
  nnx::DecodeState state = engine.insert(p, engine.init_decode_state(), 0);
  while (state.num_active() > 0) {
    auto [next, r] = engine.generate(params, std::move(state));
    state = std::move(next);
    tokens.push_back(r.at(0).token);
  }
  return tokens;
}

}  // namespace engine_test
