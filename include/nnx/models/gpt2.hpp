// nnx/models/gpt2.hpp — the GPT-2 / GPT-3 family: learned positions, pre-LayerNorm blocks,
// fused QKV attention, gelu (tanh) MLP, tied input/output embeddings.
//
// Gpt2Config reads and writes Hugging Face's GPT-2 config.json keys, so a checkpoint's
// config.json builds the model directly.
//
//   nnx::Rngs rngs{0};
//   auto cfg = nnx::Gpt2Config::from_json(json);            // or Gpt2Config{} (124M)
//   nnx::Gpt2 model(cfg, nnx::Mode::prefill, rngs, {.cache_batch = 1});
//   nnx::Tensor logits = model(tokens, positions);          // i32 [B, T] -> f32 [B, T, V]
//
// State paths: wte/embedding, wpe/embedding, h/<i>/{attn_norm,mlp_norm}/{scale,bias},
// h/<i>/attn/qkv/{kernel,bias}, h/<i>/attn/out/{kernel,bias}, h/<i>/mlp/{up,down}/{kernel,bias},
// ln_f/{scale,bias}, and in prefill/autoregressive modes h/<i>/attn/cache/{key,value}. Served
// as stored in bf16/f16 (nnx::cast_weights), each kernel is a `weight` [out, in] instead. With
// ModelOptions::layout stacked, h/... instead of h/<i>/... (each leaf with a leading layers axis).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/models/detail/config_json.hpp"
#include "nnx/models/transformer.hpp"
#include "nnx/nn.hpp"
#include "nnx/ops.hpp"

namespace nnx {

struct Gpt2Config {
  std::int64_t vocab_size = 50257;
  std::int64_t n_positions = 1024;
  std::int64_t n_embd = 768;
  std::int64_t n_layer = 12;
  std::int64_t n_head = 12;
  std::int64_t n_inner = 0;  // 0: 4 * n_embd
  double layer_norm_epsilon = 1e-5;
  double dropout = 0.0;      // resid/embd/attn pdrop; used in train mode only
  NNX_FIELDS(vocab_size, n_positions, n_embd, n_layer, n_head, n_inner, layer_norm_epsilon, dropout)

  std::int64_t inner() const { return n_inner ? n_inner : 4 * n_embd; }
  std::int64_t context_length() const { return n_positions; }

  void validate() const {
    if (vocab_size <= 0 || n_positions <= 0 || n_embd <= 0 || n_layer <= 0 || n_head <= 0 || n_inner < 0)
      throw InvalidArgument("gpt2 config: sizes must be positive");
    if (n_embd % n_head != 0)
      throw InvalidArgument("gpt2 config: n_embd " + std::to_string(n_embd) + " is not a multiple of n_head " +
                            std::to_string(n_head));
    if (n_positions > INT32_MAX) throw InvalidArgument("gpt2 config: n_positions too large");
    if (vocab_size > INT32_MAX) throw InvalidArgument("gpt2 config: vocab_size above 2^31 - 1");
    const std::int64_t C = n_embd;
    const std::int64_t I = n_inner ? n_inner : (C > INT64_MAX / 4 ? INT64_MAX : 4 * C);
    // Per layer: qkv [C, 3C], out [C, C], up [C, I], down [I, C], biases and norms.
    const auto per_layer = detail::checked_size({{3, C, C}, {C, C}, {2, C, I}, {I}, {9, C}});
    const auto total = per_layer ? detail::checked_size({{*per_layer, n_layer}, {vocab_size, C}, {n_positions, C}, {2, C}})
                                 : std::nullopt;
    detail::check_config_size("gpt2", "n_layer", n_layer, total);
  }

  // Hugging Face GPT-2 config.json (unknown keys are ignored; a non-tanh activation or
  // untied embeddings are rejected, since this family does not implement them).
  static Gpt2Config from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw InvalidArgument("gpt2 config: expected a JSON object");
    if (auto it = j.find("activation_function"); it != j.end() && it->is_string() && *it != "gelu_new" &&
                                                 *it != "gelu_pytorch_tanh" && *it != "gelu_fast")
      throw InvalidArgument("gpt2 config: activation_function " + it->dump() +
                            " is not supported (gelu with the tanh approximation is)");
    if (!detail::config_bool(j, "tie_word_embeddings", true, "gpt2"))
      throw InvalidArgument("gpt2 config: untied embeddings are not supported by the GPT-2 family");
    Gpt2Config c;
    c.vocab_size = detail::config_int(j, "vocab_size", c.vocab_size, true, "gpt2");
    c.n_positions = detail::config_int(j, "n_positions", c.n_positions, true, "gpt2");
    c.n_embd = detail::config_int(j, "n_embd", c.n_embd, true, "gpt2");
    c.n_layer = detail::config_int(j, "n_layer", c.n_layer, true, "gpt2");
    c.n_head = detail::config_int(j, "n_head", c.n_head, true, "gpt2");
    c.n_inner = detail::config_int(j, "n_inner", 0, false, "gpt2");
    c.layer_norm_epsilon = detail::config_double(j, "layer_norm_epsilon", c.layer_norm_epsilon, "gpt2");
    c.dropout = detail::config_double(j, "resid_pdrop", 0.0, "gpt2");
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    return {{"model_type", "gpt2"},
            {"architectures", {"GPT2LMHeadModel"}},
            {"vocab_size", vocab_size},
            {"n_positions", n_positions},
            {"n_ctx", n_positions},
            {"n_embd", n_embd},
            {"n_layer", n_layer},
            {"n_head", n_head},
            {"n_inner", n_inner ? nlohmann::json(n_inner) : nlohmann::json(nullptr)},
            {"layer_norm_epsilon", layer_norm_epsilon},
            {"activation_function", "gelu_new"},
            {"resid_pdrop", dropout},
            {"embd_pdrop", dropout},
            {"attn_pdrop", dropout},
            {"tie_word_embeddings", true}};
  }
};

struct Gpt2 {
  Gpt2Config config;
  Mode mode = Mode::train;
  Embed wte;  // [V, C], also the output head
  Embed wpe;  // [n_positions, C]
  Layers<DecoderLayer<LayerNorm>> h;  // per-layer or stacked (ModelOptions::layout)
  LayerNorm ln_f;
  NNX_FIELDS(config, mode, wte, wpe, h, ln_f)

  Gpt2() = default;
  Gpt2(const Gpt2Config& cfg, Mode m, Rngs& rngs, const ModelOptions& options = {}) : config(cfg), mode(m) {
    config.validate();
    const std::int64_t C = cfg.n_embd;
    wte = Embed(cfg.vocab_size, C, rngs, 0.02f, "vocab");
    wpe = Embed(cfg.n_positions, C, rngs, 0.01f, "length");
    AttentionOptions attn{.num_heads = cfg.n_head,
                          .num_kv_heads = cfg.n_head,
                          .head_dim = C / cfg.n_head,
                          .fused_qkv = true,
                          .use_bias = true,
                          .use_rope = false,
                          .rope_theta = 10000.0,
                          .mode = m,
                          .cache_batch = options.cache_batch,
                          .cache_length = options.cache_length ? options.cache_length : cfg.n_positions,
                          .cache_dtype = options.cache_dtype};
    std::vector<DecoderLayer<LayerNorm>> blocks;
    blocks.reserve(static_cast<std::size_t>(cfg.n_layer));
    for (std::int64_t i = 0; i < cfg.n_layer; ++i) {
      DecoderLayer<LayerNorm> layer{LayerNorm(C, cfg.layer_norm_epsilon), Attention(C, attn, rngs),
                                    LayerNorm(C, cfg.layer_norm_epsilon),
                                    Mlp(C, cfg.inner(), Activation::gelu_tanh, rngs), std::nullopt};
      if (m == Mode::train && cfg.dropout > 0) layer.dropout = Dropout(cfg.dropout, rngs);
      blocks.push_back(std::move(layer));
    }
    h = Layers<DecoderLayer<LayerNorm>>(std::move(blocks), options.layout);
    ln_f = LayerNorm(C, cfg.layer_norm_epsilon);
  }

  // The path key of the decoder layers: h/<i>/... per layer, h/... stacked.
  static constexpr std::string_view layers_key = "h";
  Layers<DecoderLayer<LayerNorm>>& decoder_layers() { return h; }

  std::int64_t vocab_size() const { return config.vocab_size; }
  // Positions the model can address (its learned position table).
  std::int64_t context_length() const { return config.context_length(); }
  // The output head (for quantization): the tied token embedding.
  std::string_view head_path() const { return "wte"; }

  // tokens, positions: i32 [B, T] -> final hidden states f32 [B, T, C] (after ln_f). Row b
  // uses KV cache row cache_rows[b] (default: b; see Attention).
  Tensor hidden_states(const Tensor& tokens, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    Tensor x = wte(tokens);
    ops::add_(x, wpe(positions));
    for (auto& layer : h) x = layer(x, positions, cache_rows);
    return ln_f(x);
  }
  // f32 [..., C] -> logits f32 [..., V] through the tied embedding.
  Tensor logits_from_hidden_states(const Tensor& hidden) const { return wte.attend(hidden); }
  // tokens, positions: i32 [B, T] -> logits f32 [B, T, V].
  Tensor operator()(const Tensor& tokens, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    return logits_from_hidden_states(hidden_states(tokens, positions, cache_rows));
  }
};

}  // namespace nnx
