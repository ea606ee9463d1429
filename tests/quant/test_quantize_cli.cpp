// examples/quantize, run as a user runs it, and its serve checkpoints run by examples/generate
// (and examples/serve_batch, whose own tests cover the rest of its interface).
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>

#include "../io/io_test_util.hpp"
#include "../models/reference_fixture.hpp"
#include "../support/run_command.hpp"

#if defined(NNX_QUANTIZE_BIN) && defined(NNX_GENERATE_BIN)

namespace {

test_support::CommandResult quantize(const std::string& args) {
  return test_support::run_command(std::string(NNX_QUANTIZE_BIN) + " " + args);
}
test_support::CommandResult generate(const std::string& args) {
  return test_support::run_command(std::string(NNX_GENERATE_BIN) + " " + args);
}

std::string join(const std::vector<std::int32_t>& ids, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

void check_error(const test_support::CommandResult& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("quantize writes serve checkpoints that generate runs in int8", "[quant][cli]") {
  io_test::TempDir tmp;
  const auto e = fixture::expected("gpt2_tiny");
  const std::string out = (tmp / "gpt2_int8").string();
  const auto q = quantize("--in " + fixture::dir("gpt2_tiny").string() + " --out " + out + " --scheme weight-only");
  INFO("stderr: " << q.err);
  REQUIRE(q.code == 0);
  CHECK(q.out.find("weight-only") != std::string::npos);

  // The checkpoint says how it was quantized and holds no f32 kernel.
  const nlohmann::json config = nnx::io::checkpoint_config(out);
  CHECK(nnx::QuantConfig::of_model_config(config).scheme == nnx::QuantScheme::weight_only);
  const nnx::Engine<nnx::Gpt2> engine(nnx::Gpt2Config::from_json(config),
                                      {.max_prefill_length = 64, .max_target_length = 64, .slots = 1,
                                       .quant = nnx::QuantConfig::of_model_config(config)});
  std::size_t frozen = 0;
  for (const auto& [path, leaf] : engine.load_params(out)) {
    CHECK_FALSE(path.to_string().ends_with("/kernel"));
    frozen += leaf.is_quantized();
  }
  CHECK(frozen == 2 * 4);

  // generate reads it and, weight-only, keeps PyTorch's greedy tokens on this model.
  const auto g = generate("--model " + out + " --prompt-ids " + join(e.prompt, ",") + " --max-new-tokens " +
                          std::to_string(e.greedy.size()));
  INFO("generate stderr: " << g.err);
  REQUIRE(g.code == 0);
  CHECK(g.out == join(e.greedy, " ") + "\n");

  // W8A8 with the head, from a Llama: generate's tokens are the engine's int8 tokens.
  const std::string llama_out = (tmp / "llama_int8").string();
  REQUIRE(quantize("--in " + fixture::dir("llama_tiny").string() + " --out " + llama_out + " --include-head").code == 0);
  const nlohmann::json llama_config = nnx::io::checkpoint_config(llama_out);
  const nnx::QuantConfig llama_quant = nnx::QuantConfig::of_model_config(llama_config);
  CHECK(llama_quant.scheme == nnx::QuantScheme::w8a8);
  CHECK(llama_quant.include_head);
  const nnx::Engine<nnx::Llama> llama(nnx::LlamaConfig::from_json(llama_config),
                                      {.max_prefill_length = 64, .max_target_length = 64, .slots = 1, .quant = llama_quant});
  const nnx::State params = llama.load_params(llama_out);
  const auto l = fixture::expected("llama_tiny");
  const auto T = static_cast<std::int64_t>(l.prompt.size());
  nnx::Prefix p = llama.prefill(params, fixture::tokens(l.prompt), T, {}, {}, {6, {}});
  std::vector<std::int32_t> tokens{p.token};
  nnx::DecodeState state = llama.insert(p, llama.init_decode_state(), 0);
  while (state.num_active() > 0) {
    auto [next, r] = llama.generate(params, std::move(state));
    state = std::move(next);
    tokens.push_back(r.at(0).token);
  }
  const auto lg = generate("--model " + llama_out + " --prompt-ids " + join(l.prompt, ",") + " --max-new-tokens 6");
  INFO("generate stderr: " << lg.err);
  CHECK(lg.out == join(tokens, " ") + "\n");
}

TEST_CASE("quantize reports bad arguments on one line with exit code 2", "[quant][cli]") {
  io_test::TempDir tmp;
  const std::string in = fixture::dir("gpt2_tiny").string();
  check_error(quantize("--out " + (tmp / "x").string()), "--in is required");
  check_error(quantize("--in " + in), "--out is required");
  check_error(quantize("--in " + in + " --out " + (tmp / "x").string() + " --scheme int4"), "int4");
  check_error(quantize("--in " + in + " --out " + (tmp / "x").string() + " --bits 8"), "--bits");
  check_error(quantize("--in " + (tmp / "missing").string() + " --out " + (tmp / "x").string()), "missing");
  REQUIRE(quantize("--in " + in + " --out " + (tmp / "q").string()).code == 0);
  check_error(quantize("--in " + (tmp / "q").string() + " --out " + (tmp / "q2").string()), "already quantized");
}

#endif
