// The two calling styles agree bit for bit; donation writes the cache in place and a shared
// cache is copied first; modes build the right state; bad inputs are clear errors.
#include <catch2/catch.hpp>

#include "reference_fixture.hpp"

namespace {

nnx::Gpt2Config tiny_gpt2() {
  nnx::Gpt2Config c;
  c.vocab_size = 50;
  c.n_positions = 16;
  c.n_embd = 32;
  c.n_layer = 2;
  c.n_head = 4;
  return c;
}

}  // namespace

TEST_CASE("object and pure-function calls agree bit for bit", "[models][apply]") {
  nnx::Rngs rngs{1};
  nnx::Gpt2 model(tiny_gpt2(), nnx::Mode::prefill, rngs, {.cache_batch = 1, .cache_length = 16});
  auto [graphdef, params, cache, rest] = nnx::split(model, nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);
  const nnx::State cache0 = cache.map([](const nnx::Tensor& t) { return t.clone(); });

  const auto tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>{3, 14, 15, 9, 2}, {1, 5});
  const auto positions = nnx::arange_positions(1, 5);
  nnx::Gpt2 object = nnx::clone(model);
  model = nnx::Gpt2();  // the states are now the only holders of their tensors
  const nnx::Tensor by_object = object(tokens, positions);

  // Not donated: the caller's cache must stay as it was.
  auto shared = nnx::apply(graphdef, params, cache, rest, tokens, positions);
  CHECK(nnx::equal(shared.logits, by_object));
  CHECK(cache == cache0);
  CHECK(shared.cache == nnx::state(object, nnx::of<nnx::Cache>));

  // Donated: the same buffers are written in place.
  const std::byte* key_buffer = cache["h/0/attn/cache/key"].tensor().raw_data();
  auto donated = nnx::apply(graphdef, params, std::move(cache), rest, tokens, positions);
  CHECK(nnx::equal(donated.logits, by_object));
  CHECK(donated.cache["h/0/attn/cache/key"].tensor().raw_data() == key_buffer);
  CHECK(donated.cache["h/0/attn/cache/key"].tensor().use_count() == 1);

  // A decode step through both styles.
  const auto next = nnx::Tensor::from_vector(std::vector<std::int32_t>{7}, {1, 1});
  const auto pos = nnx::Tensor::from_vector(std::vector<std::int32_t>{5}, {1, 1});
  auto step = nnx::apply(graphdef, params, std::move(donated.cache), rest, next, pos);
  CHECK(nnx::equal(step.logits, object(next, pos)));
}

TEST_CASE("the KV cache exists only in prefill and autoregressive modes", "[models][modes]") {
  nnx::Rngs rngs{0};
  nnx::Gpt2 train(tiny_gpt2(), nnx::Mode::train, rngs);
  CHECK(nnx::state(train, nnx::of<nnx::Cache>).empty());
  nnx::Gpt2 decode(tiny_gpt2(), nnx::Mode::autoregressive, rngs, {.cache_batch = 3, .cache_length = 8});
  nnx::State cache = nnx::state(decode, nnx::of<nnx::Cache>);
  CHECK(cache.size() == 4);  // key and value for 2 layers
  CHECK(cache["h/1/attn/cache/value"].shape() == nnx::Shape{3, 8, 4, 8});
  // Same parameters in every mode: their graphdefs differ only by the cache.
  CHECK(nnx::state(train, nnx::of<nnx::Param>).size() == nnx::state(decode, nnx::of<nnx::Param>).size());
}

TEST_CASE("GPT-2 and Llama configs round-trip through JSON", "[models][config]") {
  const auto g = tiny_gpt2();
  const auto g2 = nnx::Gpt2Config::from_json(g.to_json());
  CHECK(nnx::graphdef(g2) == nnx::graphdef(g));
  nnx::LlamaConfig l;
  l.num_key_value_heads = 8;
  l.tie_word_embeddings = true;
  CHECK(nnx::graphdef(nnx::LlamaConfig::from_json(l.to_json())) == nnx::graphdef(l));

  auto bad = g.to_json();
  bad["n_head"] = 5;  // 32 is not a multiple of 5
  CHECK_THROWS_WITH(nnx::Gpt2Config::from_json(bad), Catch::Contains("n_head"));
  bad = g.to_json();
  bad["vocab_size"] = "many";
  CHECK_THROWS_WITH(nnx::Gpt2Config::from_json(bad), Catch::Contains("vocab_size"));
  bad = g.to_json();
  bad.erase("n_embd");
  CHECK_THROWS_WITH(nnx::Gpt2Config::from_json(bad), Catch::Contains("n_embd"));
  auto lbad = l.to_json();
  lbad["num_key_value_heads"] = 5;
  CHECK_THROWS_AS(nnx::LlamaConfig::from_json(lbad), nnx::InvalidArgument);
}

TEST_CASE("bad model inputs are clear errors and leave the model usable", "[models][errors]") {
  nnx::Rngs rngs{0};
  nnx::Gpt2 model(tiny_gpt2(), nnx::Mode::autoregressive, rngs, {.cache_batch = 1, .cache_length = 8});
  const auto out_of_vocab = nnx::Tensor::from_vector(std::vector<std::int32_t>{1, 50}, {1, 2});
  CHECK_THROWS_WITH(model(out_of_vocab, nnx::arange_positions(1, 2)), Catch::Contains("50"));
  const auto ok = nnx::Tensor::from_vector(std::vector<std::int32_t>{1, 2}, {1, 2});
  const auto past_cache = nnx::Tensor::from_vector(std::vector<std::int32_t>{7, 8}, {1, 2});
  CHECK_THROWS_AS(model(ok, past_cache), nnx::InvalidArgument);
  const auto wrong_batch = nnx::Tensor::from_vector(std::vector<std::int32_t>{1, 2}, {2, 1});
  CHECK_THROWS_AS(model(wrong_batch, nnx::arange_positions(2, 1)), nnx::ShapeError);
  CHECK_THROWS_AS(nnx::prefill(model, ok, {3}), nnx::InvalidArgument);
  // Still usable.
  CHECK(model(ok, nnx::arange_positions(1, 2)).shape() == nnx::Shape{1, 2, 50});
}

TEST_CASE("dropout is active in train mode only and draws from the dropout stream", "[models][dropout]") {
  auto cfg = tiny_gpt2();
  cfg.dropout = 0.5;
  nnx::Rngs rngs{{"params", 0}, {"dropout", 1}};
  nnx::Gpt2 train(cfg, nnx::Mode::train, rngs);
  nnx::Rngs rngs2{{"params", 0}, {"dropout", 1}};
  nnx::Gpt2 decode(cfg, nnx::Mode::prefill, rngs2, {.cache_batch = 1, .cache_length = 16});
  const auto tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>{1, 2, 3}, {1, 3});
  const auto pos = nnx::arange_positions(1, 3);
  const auto a = train(tokens, pos);
  const auto b = train(tokens, pos);
  CHECK_FALSE(nnx::equal(a, b));  // a fresh mask each call
  const auto c = decode(tokens, pos);
  const auto d = decode(tokens, pos);
  CHECK(nnx::equal(c, d));  // no dropout outside training
}
