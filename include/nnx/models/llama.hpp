// nnx/models/llama.hpp — the Llama family: RMSNorm, RoPE (rotate-half), SwiGLU MLP,
// grouped-query attention, an untied output head (or a tied one when the config says so).
//
// LlamaConfig reads and writes Hugging Face's Llama config.json keys, "rope_scaling" of type
// llama3 (Llama 3.1 / 3.2) and linear included (nnx/nn/rope_scaling.hpp).
//
//   auto cfg = nnx::LlamaConfig::from_json(json);
//   nnx::Llama model(cfg, nnx::Mode::autoregressive, rngs, {.cache_batch = 8, .cache_length = 512});
//   nnx::Tensor logits = model(tokens, positions);          // i32 [B, T] -> f32 [B, T, V]
//
// State paths: embed_tokens/embedding, layers/<i>/{attn_norm,mlp_norm}/scale,
// layers/<i>/attn/{query,key,value,out}/kernel, layers/<i>/mlp/{gate,up,down}/kernel,
// norm/scale, lm_head/kernel (absent when tied), layers/<i>/attn/cache/{key,value}. With
// ModelOptions::layout stacked, layers/... instead of layers/<i>/... (a leading layers axis). Served as
// stored in bf16/f16 (nnx::cast_weights), each kernel is a `weight` [out, in] instead.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/models/detail/config_json.hpp"
#include "nnx/models/detail/rope_scaling_json.hpp"
#include "nnx/models/transformer.hpp"
#include "nnx/nn.hpp"

namespace nnx {

struct LlamaConfig {
  std::int64_t vocab_size = 32000;
  std::int64_t hidden_size = 4096;
  std::int64_t intermediate_size = 11008;
  std::int64_t num_hidden_layers = 32;
  std::int64_t num_attention_heads = 32;
  std::int64_t num_key_value_heads = 32;
  std::int64_t head_dim = 0;  // 0: hidden_size / num_attention_heads
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // config.json "rope_scaling"; none by default
  bool tie_word_embeddings = false;
  NNX_FIELDS(vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
             head_dim, max_position_embeddings, rms_norm_eps, rope_theta, rope_scaling, tie_word_embeddings)

  std::int64_t dim_per_head() const { return head_dim ? head_dim : hidden_size / num_attention_heads; }
  std::int64_t context_length() const { return max_position_embeddings; }

  void validate() const {
    if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers <= 0 ||
        num_attention_heads <= 0 || num_key_value_heads <= 0 || max_position_embeddings <= 0 || head_dim < 0)
      throw InvalidArgument("llama config: sizes must be positive");
    if (num_attention_heads % num_key_value_heads != 0)
      throw InvalidArgument("llama config: num_attention_heads " + std::to_string(num_attention_heads) +
                            " is not a multiple of num_key_value_heads " + std::to_string(num_key_value_heads));
    if (!head_dim && hidden_size % num_attention_heads != 0)
      throw InvalidArgument("llama config: hidden_size " + std::to_string(hidden_size) +
                            " is not a multiple of num_attention_heads " + std::to_string(num_attention_heads));
    if (dim_per_head() % 2 != 0) throw InvalidArgument("llama config: RoPE needs an even head dimension");
    if (max_position_embeddings > INT32_MAX) throw InvalidArgument("llama config: max_position_embeddings too large");
    if (vocab_size > INT32_MAX) throw InvalidArgument("llama config: vocab_size above 2^31 - 1");
    if (!(rope_theta > 0)) throw InvalidArgument("llama config: \"rope_theta\" must be positive, found 0");
    rope_scaling.validate("llama config");
    const std::int64_t C = hidden_size, D = dim_per_head();
    // Per layer: query and out [C, H D], key and value [C, Hkv D], gate/up/down [C, I], norms.
    const auto per_layer =
        detail::checked_size({{2, C, num_attention_heads, D}, {2, C, num_key_value_heads, D}, {3, C, intermediate_size}, {2, C}});
    const auto total = per_layer ? detail::checked_size({{*per_layer, num_hidden_layers},
                                                         {tie_word_embeddings ? 1 : 2, vocab_size, C}, {C}})
                                 : std::nullopt;
    detail::check_config_size("llama", "num_hidden_layers", num_hidden_layers, total);
  }

  // Hugging Face Llama config.json (non-silu activations and rope_scaling types other than
  // linear and llama3 are rejected).
  static LlamaConfig from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw InvalidArgument("llama config: expected a JSON object");
    if (auto it = j.find("hidden_act"); it != j.end() && it->is_string() && *it != "silu")
      throw InvalidArgument("llama config: hidden_act " + it->dump() + " is not supported (silu is)");
    LlamaConfig c;
    c.vocab_size = detail::config_int(j, "vocab_size", c.vocab_size, true, "llama");
    c.hidden_size = detail::config_int(j, "hidden_size", c.hidden_size, true, "llama");
    c.intermediate_size = detail::config_int(j, "intermediate_size", c.intermediate_size, true, "llama");
    c.num_hidden_layers = detail::config_int(j, "num_hidden_layers", c.num_hidden_layers, true, "llama");
    c.num_attention_heads = detail::config_int(j, "num_attention_heads", c.num_attention_heads, true, "llama");
    c.num_key_value_heads = detail::config_int(j, "num_key_value_heads", c.num_attention_heads, false, "llama");
    c.head_dim = detail::config_int(j, "head_dim", 0, false, "llama");
    c.max_position_embeddings =
        detail::config_int(j, "max_position_embeddings", c.max_position_embeddings, false, "llama");
    c.rms_norm_eps = detail::config_double(j, "rms_norm_eps", c.rms_norm_eps, "llama");
    c.rope_theta = detail::config_double(j, "rope_theta", c.rope_theta, "llama");
    c.rope_scaling = detail::rope_scaling_from_json(j, "llama");
    c.tie_word_embeddings = detail::config_bool(j, "tie_word_embeddings", false, "llama");
    c.validate();
    return c;
  }
  nlohmann::json to_json() const {
    nlohmann::json j{{"model_type", "llama"},
                     {"architectures", {"LlamaForCausalLM"}},
                     {"vocab_size", vocab_size},
                     {"hidden_size", hidden_size},
                     {"intermediate_size", intermediate_size},
                     {"num_hidden_layers", num_hidden_layers},
                     {"num_attention_heads", num_attention_heads},
                     {"num_key_value_heads", num_key_value_heads},
                     {"max_position_embeddings", max_position_embeddings},
                     {"rms_norm_eps", rms_norm_eps},
                     {"rope_theta", rope_theta},
                     {"rope_scaling", detail::rope_scaling_to_json(rope_scaling)},  // null when none
                     {"hidden_act", "silu"},
                     {"tie_word_embeddings", tie_word_embeddings}};
    if (head_dim) j["head_dim"] = head_dim;
    return j;
  }
};

struct Llama {
  LlamaConfig config;
  Mode mode = Mode::train;
  Embed embed_tokens;  // [V, C]
  Layers<DecoderLayer<RMSNorm>> layers;  // per-layer or stacked (ModelOptions::layout)
  RMSNorm norm;
  std::optional<Linear> lm_head;  // [C, V]; absent when tied
  NNX_FIELDS(config, mode, embed_tokens, layers, norm, lm_head)

  Llama() = default;
  Llama(const LlamaConfig& cfg, Mode m, Rngs& rngs, const ModelOptions& options = {}) : config(cfg), mode(m) {
    config.validate();
    const std::int64_t C = cfg.hidden_size;
    embed_tokens = Embed(cfg.vocab_size, C, rngs, 0.02f, "vocab");
    AttentionOptions attn{.num_heads = cfg.num_attention_heads,
                          .num_kv_heads = cfg.num_key_value_heads,
                          .head_dim = cfg.dim_per_head(),
                          .fused_qkv = false,
                          .use_bias = false,
                          .use_rope = true,
                          .rope_theta = cfg.rope_theta,
                          .rope_scaling = cfg.rope_scaling,
                          .mode = m,
                          .cache_batch = options.cache_batch,
                          .cache_length = options.cache_length ? options.cache_length : cfg.max_position_embeddings,
                          .cache_dtype = options.cache_dtype};
    std::vector<DecoderLayer<RMSNorm>> blocks;
    blocks.reserve(static_cast<std::size_t>(cfg.num_hidden_layers));
    for (std::int64_t i = 0; i < cfg.num_hidden_layers; ++i)
      blocks.push_back({RMSNorm(C, cfg.rms_norm_eps), Attention(C, attn, rngs), RMSNorm(C, cfg.rms_norm_eps),
                        Mlp(C, cfg.intermediate_size, Activation::swiglu, rngs, /*use_bias=*/false), std::nullopt});
    layers = Layers<DecoderLayer<RMSNorm>>(std::move(blocks), options.layout);
    norm = RMSNorm(C, cfg.rms_norm_eps);
    if (!cfg.tie_word_embeddings)
      lm_head = Linear(C, cfg.vocab_size, rngs,
                       {.use_bias = false, .init_stddev = 0.0f, .in_axis = "embed", .out_axis = "vocab"});
  }

  // The path key of the decoder layers: layers/<i>/... per layer, layers/... stacked.
  static constexpr std::string_view layers_key = "layers";
  Layers<DecoderLayer<RMSNorm>>& decoder_layers() { return layers; }

  std::int64_t vocab_size() const { return config.vocab_size; }
  // Positions the model was trained for (RoPE itself has no table to run out of).
  std::int64_t context_length() const { return config.context_length(); }
  // The output head (for quantization): lm_head, or the token embedding when tied.
  std::string_view head_path() const { return lm_head ? "lm_head" : "embed_tokens"; }

  // tokens, positions: i32 [B, T] -> final hidden states f32 [B, T, C] (after norm). Row b
  // uses KV cache row cache_rows[b] (default: b; see Attention).
  Tensor hidden_states(const Tensor& tokens, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    Tensor x = embed_tokens(tokens);
    for (auto& layer : layers) x = layer(x, positions, cache_rows);
    return norm(x);
  }
  // f32 [..., C] -> logits f32 [..., V].
  Tensor logits_from_hidden_states(const Tensor& hidden) const {
    return lm_head ? (*lm_head)(hidden) : embed_tokens.attend(hidden);
  }
  Tensor operator()(const Tensor& tokens, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    return logits_from_hidden_states(hidden_states(tokens, positions, cache_rows));
  }
};

}  // namespace nnx
