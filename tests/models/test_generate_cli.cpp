// examples/generate, run as a user runs it: its output, its logits dump, native checkpoints,
// and its errors (one line on stderr, exit code 2, nothing on stdout).
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <nnx/io/checkpoint.hpp>
#include <nnx/kernels/isa.hpp>

#include "reference_fixture.hpp"
#include "../io/io_test_util.hpp"
#include "../support/run_command.hpp"

using test_support::example_program;

namespace {

namespace fs = std::filesystem;

struct Run {
  int code = -1;
  std::string out, err;
};

// Runs generate with `args`; `env` (e.g. "NNX_ISA=avx2") is set for it alone.
Run generate(const std::string& args, const std::string& env = "") {
  const fs::path err_file = fs::temp_directory_path() / ("nnx_generate_err_" + std::to_string(::getpid()));
  const std::string cmd =
      (env.empty() ? std::string() : env + " ") + example_program("generate") + " " + args + " 2>" + err_file.string();
  Run r;
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  fs::remove(err_file);
  return r;
}

std::string join(const std::vector<std::int32_t>& ids, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? sep : "") + std::to_string(ids[i]);
  return s;
}

void check_error(const Run& r, const std::string& needle) {
  INFO("stderr: " << r.err);
  CHECK(r.code == 2);
  CHECK(r.out.empty());
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.find(needle) != std::string::npos);
}

}  // namespace

TEST_CASE("generate prints the greedy tokens and dumps the prompt's logits", "[cli][generate]") {
  // 16-bit files are served as stored (the default, --weight-dtype auto) or widened at load.
  for (const auto& [name, weights] : {std::pair{"gpt2_tiny", ""}, {"gpt2_prefixed_sharded", ""}, {"llama_tiny", ""},
                                      {"llama_tiny_bf16", ""}, {"llama_tiny_bf16", " --weight-dtype f32"},
                                      {"gpt2_small_f16", ""}}) {
    INFO(name << weights);
    const auto e = fixture::expected(name);
    io_test::TempDir tmp;
    const auto dump = tmp.path / "logits.safetensors";
    const Run r = generate("--model " + fixture::dir(name).string() + " --prompt-ids " + join(e.prompt, ",") +
                           " --max-new-tokens 8 --dump-logits " + dump.string() + weights);
    INFO("stderr: " << r.err);
    REQUIRE(r.code == 0);
    CHECK(r.out == join(e.greedy, " ") + "\n");
    auto f = nnx::io::SafetensorsFile::open(dump);
    REQUIRE(f.names().size() == 1);
    const nnx::Tensor logits = f.get("logits");
    CHECK(logits.shape() == e.logits.shape());
    CHECK(fixture::max_abs_diff(logits, e.logits) <= 1e-4);
  }
}

// Kernel tiers (nnx/kernels/isa.hpp): each run of generate is pinned to one with NNX_ISA. The
// avx512 kernels keep avx2's reduction orders, so the two give the same bits: a server on a
// Zen 3 (avx2) and one on a Zen 5 (avx512) answer with the same tokens. One exception, stated
// in nnx/kernels/avx512/gemm_w16.hpp: bf16 weights, whose avx512 products sum in an order of
// their own (identity would cost one tier or the other 10-25 %); there the two tiers' logits
// differ by rounding (3.8e-6 at most on this fixture, logits up to 7.5). The portable tier
// differs from them by rounding only.
TEST_CASE("generate gives the same tokens on every kernel tier, and avx2 and avx512 the same logits bits "
          "(bf16 weights: the same logits within rounding)",
          "[cli][generate][isa]") {
  for (const char* name : {"gpt2_tiny", "llama_tiny", "llama_gqa4", "llama_head_dim", "llama_tiny_bf16"}) {
    INFO(name);
    const auto e = fixture::expected(name);
    io_test::TempDir tmp;
    std::map<std::string, nnx::Tensor> logits;
    for (nnx::kernels::Isa isa : nnx::kernels::kAllIsas) {
      if (!nnx::kernels::isa_supported(isa)) continue;
      const std::string tier(nnx::kernels::isa_name(isa));
      INFO("NNX_ISA=" << tier);
      const auto dump = tmp.path / (tier + ".safetensors");
      const Run r = generate("--model " + fixture::dir(name).string() + " --prompt-ids " + join(e.prompt, ",") +
                                 " --max-new-tokens 8 --dump-logits " + dump.string(),
                             "NNX_ISA=" + tier);
      INFO("stderr: " << r.err);
      REQUIRE(r.code == 0);
      CHECK(r.out == join(e.greedy, " ") + "\n");
      logits[tier] = nnx::io::SafetensorsFile::open(dump).get("logits").clone();
      CHECK(fixture::max_abs_diff(logits[tier], e.logits) <= 1e-4);
    }
    if (logits.count("avx2") && logits.count("avx512")) {
      const nnx::Tensor& a = logits["avx2"];
      const nnx::Tensor& b = logits["avx512"];
      REQUIRE(a.nbytes() == b.nbytes());
      if (std::string(name).find("bf16") != std::string::npos)
        CHECK(fixture::max_abs_diff(a, b) <= 2e-5);
      else
        CHECK(std::memcmp(a.raw_data(), b.raw_data(), static_cast<std::size_t>(a.nbytes())) == 0);
    }
  }
}

TEST_CASE("generate reads a native checkpoint", "[cli][generate][checkpoint]") {
  const auto e = fixture::expected("llama_tiny");
  auto model = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  io_test::TempDir tmp;
  auto [graphdef, params] = nnx::split(model, nnx::of<nnx::Param>);
  nnx::io::save_checkpoint(tmp.path / "ckpt", params, graphdef, model.config.to_json());
  const Run r = generate("--model " + (tmp.path / "ckpt").string() + " --prompt-ids " + join(e.prompt, ",") +
                         " --max-new-tokens 8");
  INFO("stderr: " << r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out == join(e.greedy, " ") + "\n");
}

TEST_CASE("generate reports bad input on one line with exit code 2", "[cli][generate][errors]") {
  const std::string gpt2 = fixture::dir("gpt2_tiny").string();
  io_test::TempDir tmp;
  check_error(generate("--model " + (tmp.path / "nope").string() + " --prompt-ids 1,2 --max-new-tokens 2"),
              "no such path");
  check_error(generate("--model " + gpt2 + " --prompt-ids 1,128 --max-new-tokens 2"), "128");
  check_error(generate("--model " + gpt2 + " --prompt-ids 1,x --max-new-tokens 2"), "x");
  check_error(generate("--model " + gpt2 + " --prompt-ids 1,2"), "--max-new-tokens");
  check_error(generate("--model " + gpt2 + " --prompt-ids 1,2 --max-new-tokens 2 --bogus 1"), "--bogus");
  std::string long_prompt = "1";
  for (int i = 1; i < 70; ++i) long_prompt += ",1";
  check_error(generate("--model " + gpt2 + " --prompt-ids " + long_prompt + " --max-new-tokens 1"), "context");

  // A directory with a broken config, and one with an unknown architecture.
  const auto broken = tmp.path / "broken";
  fs::create_directories(broken);
  std::ofstream(broken / "config.json") << "{ \"model_type\": \"gpt2\", ";
  check_error(generate("--model " + broken.string() + " --prompt-ids 1 --max-new-tokens 1"), "config.json");
  const auto other = tmp.path / "other";
  fs::create_directories(other);
  std::ofstream(other / "config.json") << R"({"model_type": "mamba"})";
  check_error(generate("--model " + other.string() + " --prompt-ids 1 --max-new-tokens 1"), "mamba");
  // A config whose sizes do not match the weights.
  const auto mismatch = tmp.path / "mismatch";
  fs::create_directories(mismatch);
  fs::copy_file(fixture::dir("gpt2_tiny") / "model.safetensors", mismatch / "model.safetensors");
  std::ifstream cfg_in(fixture::dir("gpt2_tiny") / "config.json");
  auto cfg = nlohmann::json::parse(cfg_in);
  cfg["n_embd"] = 32;
  std::ofstream(mismatch / "config.json") << cfg.dump();
  check_error(generate("--model " + mismatch.string() + " --prompt-ids 1 --max-new-tokens 1"), "shape");
}
