// Llama rope_scaling (linear, llama3): Llama 3.1 / 3.2 config.json files parse, validate with
// errors naming the field, round-trip through to_json and native checkpoints; the inverse
// frequencies match an independent float64 reference (gen_rope_scaling.py ->
// rope_scaling_fixture.hpp, transformers' formulas); a tiny scaled Llama's logits differ from
// the unscaled model's and equal a double-precision forward whose RoPE uses the fixture's
// frequencies; the backward of a scaled RoPE is its transpose.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/grad.hpp>

#include "../nn/nn_reference.hpp"
#include "rope_scaling_fixture.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using i64 = std::int64_t;

// Meta's Llama-3.1-8B config.json (as published on the Hugging Face hub).
json llama31_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

// Meta's Llama-3.2-1B config.json.
json llama32_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64, "hidden_act": "silu",
    "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": false, "model_type": "llama",
    "num_attention_heads": 32, "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0", "use_cache": true, "vocab_size": 128256})");
}

std::vector<float> inv_freq_of(const nnx::LlamaConfig& c) {
  std::vector<float> inv(static_cast<std::size_t>(c.dim_per_head() / 2));
  nnx::kernels::rope_inv_freq(static_cast<float>(c.rope_theta), c.dim_per_head(), inv.data(),
                              c.rope_scaling.frequencies());
  return inv;
}

// Our float32 frequencies against the float64 reference. HF computes in float32 too; both
// differ from float64 by a few roundings, amplified at most ~8x where the smoothing factor
// mixes inv and inv / factor: a relative 1e-5 bounds it with room.
void check_against(const std::vector<float>& got, const std::vector<double>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    INFO("i = " << i << ": " << got[i] << " vs " << want[i]);
    CHECK(std::fabs(got[i] - want[i]) <= 1e-5 * want[i]);
  }
}

nnx::LlamaConfig tiny_config(bool scaled) {
  nnx::LlamaConfig c;
  c.vocab_size = 48;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 16;
  c.max_position_embeddings = 512;
  c.rope_theta = 10000.0;
  if (scaled)
    c.rope_scaling = {.type = nnx::RopeScalingType::llama3,
                      .factor = 8.0,
                      .low_freq_factor = 1.0,
                      .high_freq_factor = 4.0,
                      .original_max_position_embeddings = 64};
  return c;
}

// Logits [T, V] of one sequence at positions 0..T-1 in double, each layer's RoPE at inv_freq.
nn_ref::Vec llama_logits_ref(const nnx::Llama& m, const std::vector<std::int32_t>& tokens, const nn_ref::Vec& inv) {
  const i64 T = static_cast<i64>(tokens.size()), C = m.config.hidden_size;
  const nn_ref::Vec table = nn_ref::to_double(m.embed_tokens.embedding->value());
  nn_ref::Vec x;
  for (std::int32_t t : tokens) x.insert(x.end(), table.begin() + t * C, table.begin() + (t + 1) * C);
  for (const auto& layer : m.layers) x = nn_ref::decoder_layer(x, T, layer, {}, {}, inv);
  return nn_ref::linear(nn_ref::norm(x, T, m.norm), T, *m.lm_head);
}

}  // namespace

TEST_CASE("rope_scaling: Llama 3.1 and 3.2 config.json files parse", "[models][rope][config]") {
  const auto c31 = nnx::LlamaConfig::from_json(llama31_config());
  CHECK(c31.rope_scaling.type == nnx::RopeScalingType::llama3);
  CHECK(c31.rope_scaling.factor == 8.0);
  CHECK(c31.rope_scaling.low_freq_factor == 1.0);
  CHECK(c31.rope_scaling.high_freq_factor == 4.0);
  CHECK(c31.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(c31.rope_theta == 500000.0);
  CHECK(c31.dim_per_head() == 128);

  const auto c32 = nnx::LlamaConfig::from_json(llama32_config());
  CHECK(c32.rope_scaling.type == nnx::RopeScalingType::llama3);
  CHECK(c32.rope_scaling.factor == 32.0);
  CHECK(c32.dim_per_head() == 64);
  CHECK(c32.tie_word_embeddings);

  // to_json writes the scaling back as HF does; parsing that again gives the same config.
  for (const auto& c : {c31, c32}) {
    const json j = c.to_json();
    CHECK(j.at("rope_scaling") == json{{"rope_type", "llama3"},
                                       {"factor", c.rope_scaling.factor},
                                       {"low_freq_factor", 1.0},
                                       {"high_freq_factor", 4.0},
                                       {"original_max_position_embeddings", 8192}});
    const auto again = nnx::LlamaConfig::from_json(j);
    CHECK(again.rope_scaling == c.rope_scaling);
    CHECK(nnx::graphdef(again) == nnx::graphdef(c));
    CHECK(again.to_json() == j);
  }

  // No scaling: null, absent or "default" all mean none, written back as null.
  json plain = llama31_config();
  for (const json& none : {json(nullptr), json{{"rope_type", "default"}}}) {
    plain["rope_scaling"] = none;
    const auto c = nnx::LlamaConfig::from_json(plain);
    CHECK_FALSE(c.rope_scaling.enabled());
    CHECK(c.to_json().at("rope_scaling").is_null());
  }
  plain.erase("rope_scaling");
  CHECK(nnx::LlamaConfig::from_json(plain).rope_scaling == nnx::RopeScaling{});
  // A scaled and an unscaled config are different models.
  CHECK_FALSE(nnx::graphdef(nnx::LlamaConfig::from_json(plain)) == nnx::graphdef(c31));

  // Linear, with the legacy "type" key.
  json linear = llama31_config();
  linear["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}};
  const auto cl = nnx::LlamaConfig::from_json(linear);
  CHECK(cl.rope_scaling.type == nnx::RopeScalingType::linear);
  CHECK(cl.rope_scaling.factor == 4.0);
  CHECK(cl.to_json().at("rope_scaling") == json{{"rope_type", "linear"}, {"factor", 4.0}});
  CHECK(nnx::LlamaConfig::from_json(cl.to_json()).rope_scaling == cl.rope_scaling);
}

TEST_CASE("rope_scaling: bad settings are rejected naming the field", "[models][rope][config]") {
  const auto with = [](const json& scaling) {
    json j = llama31_config();
    j["rope_scaling"] = scaling;
    return j;
  };
  const json good = llama31_config().at("rope_scaling");
  const auto without = [&](const char* key) {
    json s = good;
    s.erase(key);
    return with(s);
  };
  const auto changed = [&](const char* key, const json& v) {
    json s = good;
    s[key] = v;
    return with(s);
  };
  using Catch::Contains;
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(without("factor")),
                    Contains("rope_scaling.factor is missing") && Contains("llama3"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(without("low_freq_factor")), Contains("rope_scaling.low_freq_factor"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(without("original_max_position_embeddings")),
                    Contains("rope_scaling.original_max_position_embeddings is missing"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("factor", 0.0)),
                    Contains("rope_scaling.factor must be a positive number, found 0"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("factor", -2.0)),
                    Contains("rope_scaling.factor must be a positive number, found -2"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("factor", "8")),
                    Contains("rope_scaling.factor must be a number, found \"8\""));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("low_freq_factor", 4.0)),
                    Contains("rope_scaling.high_freq_factor must be a number above low_freq_factor 4.0, found 4.0"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("low_freq_factor", 0.0)),
                    Contains("rope_scaling.low_freq_factor must be a positive number, found 0"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("original_max_position_embeddings", 0)),
                    Contains("rope_scaling.original_max_position_embeddings must be a positive integer, found 0"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("original_max_position_embeddings", 8192.5)),
                    Contains("original_max_position_embeddings must be a positive integer, found 8192.5"));
  CHECK(nnx::LlamaConfig::from_json(changed("original_max_position_embeddings", 8192.0))
            .rope_scaling.original_max_position_embeddings == 8192);
  for (const char* type : {"yarn", "dynamic", "longrope"})
    CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("rope_type", type)),
                      Contains(std::string("rope_scaling.rope_type \"") + type + "\" is not supported") &&
                          Contains("\"linear\", \"llama3\""));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(without("rope_type")), Contains("rope_scaling.rope_type is missing"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(changed("rope_type", 3)),
                    Contains("rope_scaling.rope_type must be a string"));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(with("llama3")),
                    Contains("\"rope_scaling\" must be a JSON object or null, found \"llama3\""));
  CHECK_THROWS_WITH(nnx::LlamaConfig::from_json(with(json{{"rope_type", "linear"}})),
                    Contains("rope_scaling.factor is missing (rope_type \"linear\""));

  // Configs built in code are held to the same rules.
  auto c = tiny_config(true);
  c.rope_scaling.high_freq_factor = 0.5;
  CHECK_THROWS_WITH(c.validate(), Contains("llama config: rope_scaling.high_freq_factor"));
  nnx::Rngs rngs{0};
  CHECK_THROWS_WITH(nnx::Llama(c, nnx::Mode::train, rngs), Contains("rope_scaling.high_freq_factor"));
  c = tiny_config(true);
  c.rope_scaling.factor = std::nan("");
  CHECK_THROWS_WITH(c.validate(), Contains("rope_scaling.factor must be a positive number"));
}

TEST_CASE("rope_scaling: inverse frequencies match the float64 reference of transformers' formulas",
          "[models][rope]") {
  check_against(inv_freq_of(nnx::LlamaConfig::from_json(llama31_config())), rope_scaling_fixture::llama31);
  check_against(inv_freq_of(nnx::LlamaConfig::from_json(llama32_config())), rope_scaling_fixture::llama32);
  check_against(inv_freq_of(tiny_config(true)), rope_scaling_fixture::tiny);
  nnx::LlamaConfig linear = tiny_config(false);
  linear.rope_scaling = {.type = nnx::RopeScalingType::linear, .factor = 4.0};
  check_against(inv_freq_of(linear), rope_scaling_fixture::linear);

  // Llama 3.1's bands: the 29 highest frequencies unchanged, the lowest divided by 8, some between.
  const auto unscaled = inv_freq_of(tiny_config(false));
  const auto scaled = inv_freq_of(tiny_config(true));
  CHECK(scaled[0] == unscaled[0]);                          // wavelen 6.3 < 64 / 4
  CHECK(scaled[1] < unscaled[1]);                           // 19.9: smoothed
  CHECK(scaled[1] > unscaled[1] / 8);
  CHECK(scaled[7] == unscaled[7] / 8.0f);                   // wavelen > 64
}

TEST_CASE("rope_scaling: a tiny scaled Llama runs RoPE at the scaled frequencies", "[models][rope]") {
  nnx::Rngs rngs{3};
  nnx::Llama scaled(tiny_config(true), nnx::Mode::train, rngs);
  nn_ref::randomize_biases_and_norms(scaled, 4);
  nnx::Rngs other{5};
  nnx::Llama plain(tiny_config(false), nnx::Mode::train, other);
  nn_ref::copy_params(scaled, plain);
  for (const auto& layer : scaled.layers) CHECK(layer.attn.rope_scaling == scaled.config.rope_scaling);

  // Positions well past the high-frequency band's wavelength, so every band turns visibly.
  const i64 T = 40;
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(T));
  std::mt19937 gen(9);
  for (auto& t : tokens) t = static_cast<std::int32_t>(gen() % 48);
  const auto x = nnx::Tensor::from_vector(tokens, {1, T});
  const nnx::Tensor pos = nn_ref::positions(1, T);
  const nnx::Tensor got = scaled(x, pos);
  const nnx::Tensor base = plain(x, pos);

  const nn_ref::Vec want = llama_logits_ref(scaled, tokens, rope_scaling_fixture::tiny);
  const nn_ref::Vec want_plain = llama_logits_ref(plain, tokens, {});
  const auto g = got.span<float>(), b = base.span<float>();
  REQUIRE(g.size() == want.size());
  double err = 0, err_plain = 0, scale = 0, differ = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::fabs(g[i] - want[i]));
    err_plain = std::max(err_plain, std::fabs(b[i] - want_plain[i]));
    scale = std::max(scale, std::fabs(want[i]));
    differ = std::max(differ, std::fabs(want[i] - want_plain[i]));
  }
  INFO("max |logit| " << scale << ", error " << err << ", unscaled error " << err_plain << ", scaled vs not "
                      << differ);
  CHECK(err <= 2e-5 * (1 + scale));
  CHECK(err_plain <= 2e-5 * (1 + scale));
  // The scaling changes the logits by far more than the float error.
  CHECK(differ > 100 * (err + 1e-6));
  // Position 0 turns nothing: the first row is the same with or without scaling.
  for (i64 v = 0; v < 48; ++v) CHECK(g[static_cast<std::size_t>(v)] == b[static_cast<std::size_t>(v)]);

  // Decoding token by token with a KV cache gives the same logits as the whole sequence.
  nnx::Rngs r2{3};
  nnx::Llama decode(tiny_config(true), nnx::Mode::autoregressive, r2, {.cache_batch = 1, .cache_length = T});
  nn_ref::copy_params(scaled, decode);
  double decode_err = 0;
  for (i64 t = 0; t < T; ++t) {
    const auto tok = nnx::Tensor::from_vector(std::vector<std::int32_t>{tokens[static_cast<std::size_t>(t)]}, {1, 1});
    const auto p = nnx::Tensor::from_vector(std::vector<std::int32_t>{static_cast<std::int32_t>(t)}, {1, 1});
    const auto step = decode(tok, p).span<float>();
    for (i64 v = 0; v < 48; ++v)
      decode_err = std::max(decode_err, double(std::fabs(step[static_cast<std::size_t>(v)] -
                                                         g[static_cast<std::size_t>(t * 48 + v)])));
  }
  CHECK(decode_err <= 2e-5 * (1 + scale));
}

TEST_CASE("rope_scaling: the backward of a scaled RoPE is its transpose", "[models][rope]") {
  const i64 B = 2, T = 9, H = 3, D = 16;
  const auto s = tiny_config(true).rope_scaling.frequencies();
  const nnx::Tensor x = nn_ref::random_tensor({B, T, H, D}, 11);
  const nnx::Tensor dy = nn_ref::random_tensor({B, T, H, D}, 12);
  std::vector<std::int32_t> p;
  for (i64 i = 0; i < B * T; ++i) p.push_back(static_cast<std::int32_t>(7 * i));
  const auto pos = nnx::Tensor::from_vector(p, {B, T});
  nnx::Tensor y = x.clone(), dx = dy.clone(), y_plain = x.clone();
  nnx::ops::rope_(y, pos, 10000.0f, s);
  nnx::ops::rope_(y_plain, pos, 10000.0f);
  nnx::ops::rope_backward_(dx, pos, 10000.0f, s);
  // <rope(x), dy> == <x, rope_backward(dy)>
  double lhs = 0, rhs = 0;
  const auto xs = x.span<float>(), dys = dy.span<float>();
  const auto ys = y.span<float>(), dxs = dx.span<float>();
  for (std::size_t i = 0; i < xs.size(); ++i) {
    lhs += double(ys[i]) * dys[i];
    rhs += double(xs[i]) * dxs[i];
  }
  CHECK(std::fabs(lhs - rhs) <= 1e-4 * (1 + std::fabs(lhs)));
  CHECK_FALSE(y.span<float>()[static_cast<std::size_t>(H * D + D - 1)] ==
              y_plain.span<float>()[static_cast<std::size_t>(H * D + D - 1)]);
  // The same as precomputed scaled frequencies.
  std::vector<float> inv(static_cast<std::size_t>(D / 2));
  nnx::kernels::rope_inv_freq(10000.0f, D, inv.data(), s);
  nnx::Tensor z = x.clone();
  nnx::ops::rope_(z, pos, nnx::Tensor::from_vector(inv, {D / 2}));
  CHECK(z.span<float>()[0] == y.span<float>()[0]);
  for (std::size_t i = 0; i < xs.size(); ++i) REQUIRE(z.span<float>()[i] == y.span<float>()[i]);
}

TEST_CASE("rope_scaling: a native checkpoint keeps the scaling", "[models][rope][io]") {
  const fs::path dir = fs::temp_directory_path() / ("nnx_rope_scaling_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  nnx::Rngs rngs{1};
  nnx::Llama model(tiny_config(true), nnx::Mode::train, rngs);
  auto [graphdef, params] = nnx::split(model);
  nnx::io::save_checkpoint(dir, params, graphdef, model.config.to_json());

  const auto cfg = nnx::LlamaConfig::from_json(nnx::io::checkpoint_config(dir));
  CHECK(cfg.rope_scaling == model.config.rope_scaling);
  CHECK(cfg.to_json() == model.config.to_json());
  // The stored graphdef holds the scaling: it equals the model's, and a model rebuilt from the
  // stored config restores from the checkpoint with the graphdef checked.
  const auto stored = nnx::io::checkpoint_graphdef(dir);
  CHECK(stored == nnx::GraphDef<>(graphdef));
  nnx::Rngs r2{2};
  nnx::Llama rebuilt(cfg, nnx::Mode::train, r2);
  auto [g2, target] = nnx::split(rebuilt);
  nnx::io::RestoreOptions checked;
  checked.graphdef = g2;
  const nnx::State restored = nnx::io::restore_checkpoint(dir, target, checked);
  auto merged = nnx::merge(g2, restored);
  CHECK(merged.layers[1].attn.rope_scaling == model.config.rope_scaling);
  // An unscaled model's graphdef does not match the checkpoint.
  nnx::Rngs r3{2};
  nnx::Llama unscaled(tiny_config(false), nnx::Mode::train, r3);
  auto [g3, t3] = nnx::split(unscaled);
  checked.graphdef = g3;
  CHECK_THROWS_WITH(nnx::io::restore_checkpoint(dir, t3, checked), Catch::Contains("graphdef differs"));
  fs::remove_all(dir);
}
