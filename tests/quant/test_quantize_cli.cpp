// examples/quantize, run as a user runs it, and its serve checkpoints run by examples/generate
// (and examples/serve_batch, whose own tests cover the rest of its interface); quantize never
// destroys a Hugging Face directory or its own input without --force (issue 14).
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>

#include "../engine/engine_test_util.hpp"
#include "../io/io_test_util.hpp"
#include "../models/reference_fixture.hpp"
#include "../support/run_command.hpp"

using test_support::example_program;

namespace {

test_support::CommandResult quantize(const std::string& args) {
  return test_support::run_command(example_program("quantize") + " " + args);
}
test_support::CommandResult generate(const std::string& args) {
  return test_support::run_command(example_program("generate") + " " + args);
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

// Every file of a directory, name -> bytes.
std::map<std::string, std::string> snapshot(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    out[e.path().filename().string()] = io_test::read_bytes(e.path());
  return out;
}

// A copy of a reference fixture that a test may let quantize write into.
std::filesystem::path copy_fixture(const io_test::TempDir& tmp, const std::string& name) {
  const std::filesystem::path dir = tmp / name;
  std::filesystem::copy(fixture::dir(name), dir);
  return dir;
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
  const auto l = fixture::expected("llama_tiny");
  const auto lg = generate("--model " + llama_out + " --prompt-ids " + join(l.prompt, ",") + " --max-new-tokens 6");
  INFO("generate stderr: " << lg.err);
  CHECK(lg.out == join(engine_test::greedy(llama, llama.load_params(llama_out), l.prompt, 6), " ") + "\n");

  // A bf16 input: the Linears are quantized from the stored bf16 values, the embedding tables
  // are kept in bf16 as stored, and generate serves the checkpoint as the engine does.
  const std::string bf16_out = (tmp / "gpt2_bf16_int8").string();
  const auto qb = quantize("--in " + fixture::dir("gpt2_small_bf16").string() + " --out " + bf16_out +
                           " --scheme weight-only");
  INFO("stderr: " << qb.err);
  REQUIRE(qb.code == 0);
  CHECK(nnx::io::checkpoint_weight_dtype(bf16_out) == nnx::DType::bf16);
  const nlohmann::json small_config = nnx::io::checkpoint_config(bf16_out);
  const nnx::Engine<nnx::Gpt2> small(nnx::Gpt2Config::from_json(small_config),
                                     {.max_prefill_length = 32, .max_target_length = 32, .slots = 1,
                                      .quant = nnx::QuantConfig::of_model_config(small_config)});
  const nnx::State small_params = small.load_params(bf16_out);
  CHECK(small_params.at(nnx::Path::parse("wte/embedding")).dtype() == nnx::DType::bf16);
  CHECK(small_params.at(nnx::Path::parse("h/0/attn/qkv/qkernel")).is_quantized());
  const auto s = fixture::expected("gpt2_small_bf16");
  const auto sg = generate("--model " + bf16_out + " --prompt-ids " + join(s.prompt, ",") + " --max-new-tokens 6");
  INFO("generate stderr: " << sg.err);
  CHECK(sg.out == join(engine_test::greedy(small, small_params, s.prompt, 6), " ") + "\n");
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

TEST_CASE("quantize refuses an --out holding a Hugging Face model, or equal to --in, and changes nothing",
          "[quant][cli]") {
  io_test::TempDir tmp;
  const std::string in = fixture::dir("gpt2_tiny").string();
  const auto hf = copy_fixture(tmp, "gpt2_tiny");
  const auto hf_sharded = copy_fixture(tmp, "llama_sharded");
  const auto before = snapshot(hf), before_sharded = snapshot(hf_sharded);

  // --out at a Hugging Face directory: quantizing over it would replace model.safetensors and
  // keep config.json, which every loader then reads as the (gone) Hugging Face model.
  check_error(quantize("--in " + in + " --out " + hf.string()), "holds config.json");
  check_error(quantize("--in " + in + " --out " + hf.string() + " --scheme weight-only --include-head"),
              "model.safetensors without \"nnx.format\"");
  check_error(quantize("--in " + fixture::dir("llama_tiny").string() + " --out " + hf_sharded.string()),
              "model.safetensors.index.json without \"nnx.format\"");
  // --out = --in, however spelled.
  for (const std::string& out : {hf.string(), hf.string() + "/", (tmp.path / "." / "gpt2_tiny").string()})
    check_error(quantize("--in " + hf.string() + " --out " + out), "is the --in directory");
  std::filesystem::create_directory_symlink(hf, tmp / "link");
  check_error(quantize("--in " + (tmp / "link").string() + " --out " + hf.string()), "is the --in directory");

  // Every file is as it was, byte for byte, and nothing was added.
  CHECK(snapshot(hf) == before);
  CHECK(snapshot(hf_sharded) == before_sharded);
  const auto g = generate("--model " + hf.string() + " --prompt-ids 1,2,3 --max-new-tokens 2");
  INFO("generate stderr: " << g.err);
  CHECK(g.code == 0);
}

TEST_CASE("quantize --force replaces a Hugging Face directory whole, in place too", "[quant][cli]") {
  io_test::TempDir tmp;
  const auto e = fixture::expected("gpt2_tiny");
  const auto hf = copy_fixture(tmp, "gpt2_tiny");
  const auto q = quantize("--in " + hf.string() + " --out " + hf.string() + " --scheme weight-only --force");
  INFO("stderr: " << q.err);
  REQUIRE(q.code == 0);
  // No config.json is left to make loaders read the native checkpoint as Hugging Face; the
  // files quantize does not own stay.
  const auto files = snapshot(hf);
  CHECK(files.count("config.json") == 0);
  CHECK(files.count("model.safetensors") == 1);
  CHECK(files.count("expected.safetensors") == 1);
  CHECK(files.count("grads.safetensors") == 1);
  CHECK(files.size() == 3);
  CHECK(nnx::io::checkpoint_metadata(hf).at("nnx.format") == "nnx.checkpoint/1");
  // generate loads it as the int8 checkpoint it is, with PyTorch's greedy tokens (weight-only).
  const auto g = generate("--model " + hf.string() + " --prompt-ids " + join(e.prompt, ",") + " --max-new-tokens " +
                          std::to_string(e.greedy.size()));
  INFO("generate stderr: " << g.err);
  REQUIRE(g.code == 0);
  CHECK(g.out == join(e.greedy, " ") + "\n");

  // A sharded Hugging Face --out: its index and shards go too.
  const auto sharded = copy_fixture(tmp, "llama_sharded");
  REQUIRE(quantize("--in " + fixture::dir("llama_tiny").string() + " --out " + sharded.string() + " --force").code == 0);
  CHECK(snapshot(sharded).size() == 2);  // model.safetensors and expected.safetensors
  const auto lg = generate("--model " + sharded.string() + " --prompt-ids 1,2,3 --max-new-tokens 2");
  INFO("generate stderr: " << lg.err);
  CHECK(lg.code == 0);
}
