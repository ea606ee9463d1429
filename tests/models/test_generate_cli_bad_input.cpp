// examples/generate on the bad inputs a new user tried (issue 14): each is one line on stderr
// and exit code 2 naming what is wrong, never a token printed from NaN logits, an integer
// overflow or a bare library message without the file.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/io/checkpoint.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>

#include "../io/io_test_util.hpp"
#include "../support/run_command.hpp"
#include "reference_fixture.hpp"

using test_support::example_program;

namespace {

namespace fs = std::filesystem;

test_support::CommandResult run_generate(const std::string& args) {
  return test_support::run_command(example_program("generate") + " " + args);
}

void check_error(const test_support::CommandResult& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.rfind("generate: ", 0) == 0);
  CHECK(r.err.find(needle) != std::string::npos);
}

// The gpt2_tiny fixture's directory with its config.json edited.
fs::path with_config(const io_test::TempDir& tmp, const std::string& name, const nlohmann::json& changes) {
  const fs::path dir = tmp / name;
  fs::create_directories(dir);
  fs::copy_file(fixture::dir("gpt2_tiny") / "model.safetensors", dir / "model.safetensors");
  nlohmann::json cfg = nlohmann::json::parse(io_test::read_bytes(fixture::dir("gpt2_tiny") / "config.json"));
  cfg.merge_patch(changes);
  io_test::write_bytes(dir / "config.json", cfg.dump());
  return dir;
}

}  // namespace

TEST_CASE("generate: --help prints the usage and exits 0", "[cli][generate]") {
  const auto r = run_generate("--help");
  CHECK(r.code == 0);
  CHECK(r.out.rfind("usage: generate --model PATH --prompt-ids", 0) == 0);
  CHECK(r.err.empty());
}

TEST_CASE("generate: malformed ids and lengths are usage errors, never overflows", "[cli][generate][errors]") {
  const std::string gpt2 = fixture::dir("gpt2_tiny").string();
  check_error(run_generate("--model " + gpt2 + " --prompt-ids 1,2, --max-new-tokens 2"), "'' is not a token id");
  check_error(run_generate("--model " + gpt2 + " --prompt-ids 1,,2 --max-new-tokens 2"), "'' is not a token id");
  check_error(run_generate("--model " + gpt2 + " --prompt-ids , --max-new-tokens 2"), "'' is not a token id");
  check_error(run_generate("--model " + gpt2 + " --prompt-ids 1,2 --max-new-tokens 9223372036854775807"),
              "exceeds the context length 64");
  check_error(run_generate("--model " + gpt2 + " --prompt-ids 1,2 --max-new-tokens 9223372036854775808"),
              "is not a non-negative integer");
}

TEST_CASE("generate: NaN logits are an error, not token 0", "[cli][generate][nan]") {
  io_test::TempDir tmp;
  // Every weight of the fixture, with ln_f's scale NaN: every logit is NaN.
  auto model = fixture::load<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny", nnx::Mode::train);
  auto [graphdef, params] = nnx::split(model, nnx::of<nnx::Param>);
  params.at(nnx::Path::parse("ln_f/scale")).tensor().fill(std::nanf(""));
  nnx::io::save_hf(tmp / "nan", model.config.to_json(), params);
  check_error(run_generate("--model " + (tmp / "nan").string() + " --prompt-ids 1,2,3 --max-new-tokens 4"),
              "logits at position 2 are NaN");
  // An infinite embedding row: inf - inf in the norm gives NaN.
  params.at(nnx::Path::parse("ln_f/scale")).tensor().fill(1.0f);
  params.at(nnx::Path::parse("wte/embedding")).tensor().select(5).fill(INFINITY);
  nnx::io::save_hf(tmp / "inf", model.config.to_json(), params);
  check_error(run_generate("--model " + (tmp / "inf").string() + " --prompt-ids 5 --max-new-tokens 2"), "NaN");
}

TEST_CASE("generate: configs that overflow or make no sense are rejected naming the key", "[cli][generate][errors]") {
  io_test::TempDir tmp;
  const auto run = [&](const std::string& name, const nlohmann::json& changes) {
    return run_generate("--model " + with_config(tmp, name, changes).string() + " --prompt-ids 1 --max-new-tokens 1");
  };
  check_error(run("embd", {{"n_embd", std::int64_t{1} << 62}, {"n_head", 1}}), "parameters; at most 2^42");
  check_error(run("layers", {{"n_layer", 1000000000}}), "\"n_layer\" is 1000000000; at most 10000 layers");
  check_error(run("type", {{"model_type", 5}}), "config.json: \"model_type\" must be a string");
  const fs::path twice = tmp / "twice";
  fs::create_directories(twice);
  io_test::write_bytes(twice / "config.json", R"({"model_type": "gpt2", "n_layer": 2, "n_layer": 3})");
  check_error(run_generate("--model " + twice.string() + " --prompt-ids 1 --max-new-tokens 1"), "\"n_layer\" twice");

  // Llama: an explicit head_dim whose products overflow int64, and rope_theta 0.
  nnx::LlamaConfig llama;
  llama.vocab_size = 32;
  llama.hidden_size = 16;
  llama.intermediate_size = 32;
  llama.num_hidden_layers = 1;
  llama.num_attention_heads = 2;
  llama.num_key_value_heads = 1;
  llama.max_position_embeddings = 16;
  for (const auto& [name, key, value, needle] :
       std::vector<std::tuple<std::string, std::string, nlohmann::json, std::string>>{
           {"head_dim", "head_dim", std::int64_t{1} << 61, "at most 2^42"},
           {"theta", "rope_theta", 0, "\"rope_theta\" must be positive"}}) {
    const fs::path dir = tmp / ("llama_" + name);
    fs::create_directories(dir);
    nlohmann::json cfg = llama.to_json();
    cfg[key] = value;
    io_test::write_bytes(dir / "config.json", cfg.dump());
    nnx::io::save_safetensors(dir / "model.safetensors", {});  // the config is refused before any weight is read
    check_error(run_generate("--model " + dir.string() + " --prompt-ids 1 --max-new-tokens 1"), needle);
  }
}

TEST_CASE("generate --verify checks a native checkpoint's checksums before loading", "[cli][generate][verify]") {
  io_test::TempDir tmp;
  auto model = fixture::load<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny", nnx::Mode::train);
  auto [graphdef, params] = nnx::split(model, nnx::of<nnx::Param>);
  const fs::path ckpt = tmp / "ckpt";
  nnx::io::save_checkpoint(ckpt, params, graphdef, model.config.to_json());
  const std::string args = " --prompt-ids 1,2,3 --max-new-tokens 3";
  const auto plain = run_generate("--model " + ckpt.string() + args);
  const auto verified = run_generate("--model " + ckpt.string() + args + " --verify");
  INFO("stderr: " << verified.err);
  CHECK(verified.code == 0);
  CHECK(verified.out == plain.out);

  // One flipped bit in the last tensor byte: the unverified run still loads it, --verify refuses.
  std::string bytes = io_test::read_bytes(ckpt / "model.safetensors");
  bytes.back() = static_cast<char>(bytes.back() ^ 0x01);
  io_test::write_bytes(ckpt / "model.safetensors", bytes);
  check_error(run_generate("--model " + ckpt.string() + args + " --verify"), "model.safetensors");
  check_error(run_generate("--model " + fixture::dir("gpt2_tiny").string() + args + " --verify"), "no checksums");
}
