// Parity with the PyTorch reference (tests/reference/gen_reference.py): logits within 1e-4,
// identical greedy tokens, prefill-then-decode equal to full-sequence logits, padded batches
// equal to single prompts, GQA group sizes 2, 4 and 8 (MQA), an explicit head_dim, bf16/f16
// files of both architectures, and sharded directories.
#include <catch2/catch.hpp>

#include <set>

#include "reference_fixture.hpp"

using fixture::Expected;

namespace {

// `weights`: the dtype the model holds its Linear and Embed weights in (nnx::cast_weights).
template <class Model, class Config>
void check_reference(const std::string& name, nnx::DType weights = nnx::DType::f32) {
  INFO("fixture " << name << ", weights " << nnx::dtype_name(weights));
  const Expected e = fixture::expected(name);
  Model train = fixture::load<Model, Config>(name, nnx::Mode::train, {}, weights);
  const auto T = static_cast<std::int64_t>(e.prompt.size());

  // Full-sequence logits against PyTorch.
  nnx::Tensor logits = train(fixture::tokens(e.prompt), nnx::arange_positions(1, T));
  CHECK(fixture::max_abs_diff(logits, e.logits) <= 1e-4);
  nnx::Tensor logits2 = train(fixture::tokens(e.prompt2), nnx::arange_positions(1, e.prompt2.size()));
  CHECK(fixture::max_abs_diff(logits2, e.logits2) <= 1e-4);

  // Greedy tokens through prefill + autoregressive decoding.
  Model decoder =
      fixture::load<Model, Config>(name, nnx::Mode::autoregressive, {.cache_batch = 1, .cache_length = 32}, weights);
  CHECK(fixture::greedy(decoder, e.prompt, 8) == e.greedy);
  CHECK(fixture::greedy(decoder, e.prompt2, 8) == e.greedy2);

  // Prefill k tokens, decode the rest one by one: the logits equal the full sequence's.
  for (std::int64_t k : {std::int64_t{1}, T / 2, T - 1}) {
    std::vector<std::int32_t> head(e.prompt.begin(), e.prompt.begin() + k);
    auto pre = nnx::prefill(decoder, fixture::tokens(head), {k});
    CHECK(fixture::max_abs_diff(pre.logits.select(0), logits.select(0).slice(0, k)) <= 1e-5);
    for (std::int64_t t = k; t < T; ++t) {
      auto step = nnx::decode_step(decoder, nnx::Tensor::from_vector(std::vector<std::int32_t>{e.prompt[t]}, {1}), {t});
      CHECK(fixture::max_abs_diff(step, logits.select(0).select(t)) <= 1e-5);
      CHECK(fixture::max_abs_diff(step, e.logits.select(t)) <= 1e-4);
    }
  }
}

}  // namespace

TEST_CASE("GPT-2 matches PyTorch", "[models][reference]") {
  check_reference<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny");
}

TEST_CASE("GPT-2 with a transformer. prefix over two shards matches PyTorch", "[models][reference]") {
  check_reference<nnx::Gpt2, nnx::Gpt2Config>("gpt2_prefixed_sharded");
}

TEST_CASE("Llama with grouped-query attention matches PyTorch", "[models][reference]") {
  auto hf = nnx::io::HfCheckpoint::open(fixture::dir("llama_tiny"));
  const auto cfg = nnx::LlamaConfig::from_json(hf.config());
  REQUIRE(cfg.num_key_value_heads < cfg.num_attention_heads);  // GQA
  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_tiny");
}

TEST_CASE("Llama with 8 query heads over 2 KV heads (group size 4) matches PyTorch", "[models][reference][gqa]") {
  const auto cfg = nnx::LlamaConfig::from_json(nnx::io::HfCheckpoint::open(fixture::dir("llama_gqa4")).config());
  REQUIRE(cfg.num_attention_heads == 8);
  REQUIRE(cfg.num_key_value_heads == 2);
  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_gqa4");
  auto m = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_gqa4", nnx::Mode::autoregressive, {.cache_batch = 1, .cache_length = 32});
  CHECK(m.layers[0].attn.num_kv_heads == 2);
  CHECK(m.layers[0].attn.cache->key.value().shape() == nnx::Shape{1, 32, 2, 4});
}

TEST_CASE("Llama with multi-query attention (8 query heads, 1 KV head: group size 8) matches PyTorch",
          "[models][reference][gqa]") {
  const auto cfg = nnx::LlamaConfig::from_json(nnx::io::HfCheckpoint::open(fixture::dir("llama_mqa")).config());
  REQUIRE(cfg.num_attention_heads == 8);
  REQUIRE(cfg.num_key_value_heads == 1);
  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_mqa");
  auto m = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_mqa", nnx::Mode::autoregressive, {.cache_batch = 1, .cache_length = 32});
  CHECK(m.layers[1].attn.key->kernel->value().shape() == nnx::Shape{32, 4});  // one head of 4
  CHECK(m.layers[1].attn.cache->key.value().shape() == nnx::Shape{1, 32, 1, 4});
}

TEST_CASE("Llama with an explicit head_dim other than hidden_size / heads matches PyTorch", "[models][reference]") {
  const auto cfg = nnx::LlamaConfig::from_json(nnx::io::HfCheckpoint::open(fixture::dir("llama_head_dim")).config());
  REQUIRE(cfg.head_dim == 12);
  REQUIRE(cfg.hidden_size / cfg.num_attention_heads == 6);
  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_head_dim");
  // Projections widen to heads * head_dim and o_proj narrows back to hidden_size.
  auto m = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_head_dim", nnx::Mode::autoregressive, {.cache_batch = 1, .cache_length = 32});
  const auto& attn = m.layers[0].attn;
  CHECK(attn.head_dim == 12);
  CHECK(attn.query->kernel->value().shape() == nnx::Shape{24, 48});
  CHECK(attn.key->kernel->value().shape() == nnx::Shape{24, 24});
  CHECK(attn.out.kernel->value().shape() == nnx::Shape{48, 24});
  CHECK(attn.cache->key.value().shape() == nnx::Shape{1, 32, 2, 12});
  CHECK(m.config.to_json().at("head_dim") == 12);
}

TEST_CASE("a sharded Hugging Face Llama (three files and an index) matches PyTorch", "[models][reference][sharded]") {
  namespace fs = std::filesystem;
  const fs::path d = fixture::dir("llama_sharded");
  // The layout under test: no model.safetensors, three shards, a layer split across files.
  REQUIRE_FALSE(fs::exists(d / "model.safetensors"));
  const auto index = nnx::io::detail::read_json_file(d / "model.safetensors.index.json");
  const auto& map = index.at("weight_map");
  std::set<std::string> files;
  for (const auto& [name, file] : map.items()) files.insert(file.get<std::string>());
  REQUIRE(files == std::set<std::string>{"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                                         "model-00003-of-00003.safetensors"});
  REQUIRE(map.at("model.layers.0.mlp.gate_proj.weight") != map.at("model.layers.0.mlp.up_proj.weight"));
  REQUIRE(nnx::io::HfCheckpoint::open(d).tensor_names().size() == map.size());

  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_sharded");
  // Every value equals the single-file copy of the same weights.
  auto sharded = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_sharded", nnx::Mode::train);
  auto single = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_gqa4", nnx::Mode::train);
  CHECK(nnx::state(sharded, nnx::of<nnx::Param>) == nnx::state(single, nnx::of<nnx::Param>));
}

TEST_CASE("Llama with tied embeddings matches PyTorch", "[models][reference]") {
  check_reference<nnx::Llama, nnx::LlamaConfig>("llama_tied");
  auto m = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tied", nnx::Mode::train);
  CHECK_FALSE(m.lm_head.has_value());
}

TEST_CASE("bf16 and f16 files load to the right values", "[models][reference][dtype]") {
  for (const char* name : {"llama_tiny_bf16", "llama_tiny_f16"}) {
    INFO(name);
    check_reference<nnx::Llama, nnx::LlamaConfig>(name);
    // A loaded value is the file's 16-bit value widened exactly.
    auto model = fixture::load<nnx::Llama, nnx::LlamaConfig>(name, nnx::Mode::train);
    auto file = nnx::io::SafetensorsFile::open(fixture::dir(name) / "model.safetensors");
    const nnx::Tensor stored = file.get("model.norm.weight");
    REQUIRE(stored.dtype() != nnx::DType::f32);
    const nnx::Tensor widened = stored.astype(nnx::DType::f32);
    CHECK(nnx::equal(model.norm.scale.value(), widened));
    // A transposed nn.Linear weight: q_proj [out, in] -> our kernel [in, out].
    const nnx::Tensor q = file.get("model.layers.1.self_attn.q_proj.weight").astype(nnx::DType::f32);
    const nnx::Tensor& kernel = model.layers[1].attn.query->kernel->value();
    REQUIRE(kernel.dim(0) == q.dim(1));
    CHECK(kernel.data<float>()[3 * kernel.dim(1) + 5] == q.data<float>()[5 * q.dim(1) + 3]);
  }
}

TEST_CASE("GPT-2 bf16 and f16 files match PyTorch on the rounded weights", "[models][reference][dtype]") {
  for (const auto& [name, dtype] : {std::pair{"gpt2_small_bf16", nnx::DType::bf16}, std::pair{"gpt2_small_f16", nnx::DType::f16}}) {
    INFO(name);
    check_reference<nnx::Gpt2, nnx::Gpt2Config>(name);
    // Loaded values are the file's 16-bit values widened exactly: a Conv1D weight (stored
    // [in, out] like our kernel), its bias, and the tied embedding.
    auto model = fixture::load<nnx::Gpt2, nnx::Gpt2Config>(name, nnx::Mode::train);
    auto file = nnx::io::SafetensorsFile::open(fixture::dir(name) / "model.safetensors");
    const nnx::Tensor c_attn = file.get("h.1.attn.c_attn.weight");
    REQUIRE(c_attn.dtype() == dtype);
    CHECK(nnx::equal(model.h[1].attn.qkv->kernel->value(), c_attn.astype(nnx::DType::f32)));
    CHECK(nnx::equal(model.h[1].attn.qkv->bias->value(), file.get("h.1.attn.c_attn.bias").astype(nnx::DType::f32)));
    CHECK(nnx::equal(model.wte.embedding->value(), file.get("wte.weight").astype(nnx::DType::f32)));
  }
  // Same weights rounded two ways: the references differ by far more than the tolerance, so
  // decoding one format as the other would fail.
  CHECK(fixture::max_abs_diff(fixture::expected("gpt2_small_bf16").logits, fixture::expected("gpt2_small_f16").logits) > 1e-2);
}

TEST_CASE("bf16 and f16 files served as stored match PyTorch on the rounded weights", "[models][reference][dtype]") {
  for (const auto& [name, dtype] : {std::pair{"llama_tiny_bf16", nnx::DType::bf16}, std::pair{"llama_tiny_f16", nnx::DType::f16},
                                    std::pair{"gpt2_small_bf16", nnx::DType::bf16}, std::pair{"gpt2_small_f16", nnx::DType::f16}}) {
    INFO(name);
    REQUIRE(nnx::io::HfCheckpoint::open(fixture::dir(name)).stored_weight_dtype() == dtype);
    if (std::string(name).rfind("llama", 0) == 0)
      check_reference<nnx::Llama, nnx::LlamaConfig>(name, dtype);
    else
      check_reference<nnx::Gpt2, nnx::Gpt2Config>(name, dtype);
  }
  // A Llama's nn.Linear weights and embedding table are the file's tensors themselves: two
  // reads share one mapping (a copy would have its own address), holding the stored bits.
  auto hf = nnx::io::HfCheckpoint::open(fixture::dir("llama_tiny_bf16"));
  nnx::Rngs rngs{0};
  auto abstract = nnx::eval_shape([&] { return nnx::Llama(nnx::LlamaConfig::from_json(hf.config()), nnx::Mode::train, rngs); });
  nnx::cast_weights(abstract, nnx::DType::bf16);
  const nnx::State spec = nnx::state(abstract, nnx::of<nnx::Param>);
  const nnx::State a = hf.read_params(spec), b = hf.read_params(spec);
  auto file = nnx::io::SafetensorsFile::open(fixture::dir("llama_tiny_bf16") / "model.safetensors");
  for (const auto& [path, hf_name] : {std::pair{"layers/1/attn/query/weight", "model.layers.1.self_attn.q_proj.weight"},
                                      std::pair{"lm_head/weight", "lm_head.weight"},
                                      std::pair{"embed_tokens/embedding", "model.embed_tokens.weight"}}) {
    INFO(path);
    const nnx::Tensor& t = a.at(nnx::Path::parse(path)).tensor();
    CHECK(t.dtype() == nnx::DType::bf16);
    CHECK(t.raw_data() == b.at(nnx::Path::parse(path)).tensor().raw_data());
    CHECK(nnx::equal(t, file.get(hf_name)));
  }
  // GPT-2's Conv1D stores [in, out]: its served weight is the transpose, same values.
  auto gpt2 = fixture::load<nnx::Gpt2, nnx::Gpt2Config>("gpt2_small_bf16", nnx::Mode::train, {}, nnx::DType::bf16);
  auto gpt2_file = nnx::io::SafetensorsFile::open(fixture::dir("gpt2_small_bf16") / "model.safetensors");
  CHECK(nnx::equal(gpt2.h[1].attn.qkv->weight->value(),
                   nnx::transpose_2d(gpt2_file.get("h.1.attn.c_attn.weight"), nnx::DType::bf16)));
  CHECK_FALSE(gpt2.h[1].attn.qkv->kernel.has_value());
}

TEST_CASE("a padded batch gives each prompt's own logits, and decodes rows independently", "[models][batch]") {
  const Expected e = fixture::expected("llama_tiny");
  const auto T1 = static_cast<std::int64_t>(e.prompt.size()), T2 = static_cast<std::int64_t>(e.prompt2.size());
  REQUIRE(T1 != T2);
  const std::int64_t T = std::max(T1, T2);
  auto batched = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::prefill,
                                                              {.cache_batch = 2, .cache_length = 32});
  std::vector<std::int32_t> ids(2 * T, 0);  // padding id 0
  std::copy(e.prompt.begin(), e.prompt.end(), ids.begin());
  std::copy(e.prompt2.begin(), e.prompt2.end(), ids.begin() + T);
  auto out = nnx::prefill(batched, nnx::Tensor::from_vector(ids, {2, T}), {T1, T2});

  auto alone = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::prefill,
                                                            {.cache_batch = 1, .cache_length = 32});
  auto one = nnx::prefill(alone, fixture::tokens(e.prompt), {T1});
  auto two = nnx::prefill(alone, fixture::tokens(e.prompt2), {T2});
  // Row by row, bitwise: no kernel's result depends on the other rows of the batch.
  CHECK(nnx::equal(out.logits.select(0).slice(0, T1), one.logits.select(0)));
  CHECK(nnx::equal(out.logits.select(1).slice(0, T2), two.logits.select(0)));
  CHECK(nnx::equal(out.last_logits.select(1), two.last_logits.select(0)));
  CHECK(fixture::max_abs_diff(out.logits.select(1).slice(0, T2), e.logits2) <= 1e-4);

  // Both rows decode together, each at its own position, and match decoding alone.
  auto step = nnx::decode_step(batched, nnx::Tensor::from_vector(std::vector<std::int32_t>{e.greedy[0], e.greedy2[0]}, {2}),
                               {T1, T2});
  auto solo = nnx::decode_step(alone, nnx::Tensor::from_vector(std::vector<std::int32_t>{e.greedy2[0]}, {1}), {T2});
  CHECK(nnx::equal(step.select(1), solo.select(0)));
  CHECK(fixture::argmax(step.select(0).data<float>(), step.dim(1)) == e.greedy[1]);
}
