// examples/train, run as a user runs it: --dump-grads against the library on a Hugging Face
// fixture, a short training run whose saved model generate loads, a resumed run that ends
// bitwise where an unbroken one does, the CSV log, and its errors (one line, exit code 2).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/core.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/train.hpp>

#include "../io/io_test_util.hpp"
#include "../models/reference_fixture.hpp"
#include "../support/run_command.hpp"

using test_support::example_program;

namespace {

namespace fs = std::filesystem;
using test_support::run_command;

std::string run_train(const std::string& args) { return example_program("train") + " " + args; }

void write(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out << text;
}

// A tiny byte-level GPT-2 config and some text to learn.
void write_run_inputs(const fs::path& dir) {
  write(dir / "config.json",
        R"({"model_type": "gpt2", "vocab_size": 256, "n_positions": 32, "n_embd": 16, "n_layer": 1, "n_head": 2,
            "resid_pdrop": 0.1})");
  std::string text;
  for (int i = 0; i < 60; ++i) text += "the quick brown fox " + std::to_string(i) + " jumps over the lazy dog.\n";
  write(dir / "text.txt", text);
}

bool same_tensors(const fs::path& a, const fs::path& b) {
  auto fa = nnx::io::SafetensorsFile::open(a), fb = nnx::io::SafetensorsFile::open(b);
  if (fa.size() != fb.size()) return false;
  for (const auto& name : fa.names())
    if (!nnx::equal(fa.get(name), fb.get(name))) return false;
  return true;
}

// Resumes the run saved in `split` up to `steps` (into `split` again) and checks that its saved
// model and train state equal those of `whole`, the unbroken run, bit for bit. Returns the
// resumed run's output.
test_support::CommandResult resume_matches(const fs::path& split, int steps, const fs::path& whole) {
  auto rest = run_command(run_train("--resume " + split.string() + " --steps " + std::to_string(steps) + " --out " +
                                split.string()));
  INFO(rest.err);
  REQUIRE(rest.code == 0);
  for (const char* part : {"model", "state"}) {
    CAPTURE(part);
    CHECK(same_tensors(whole / part / "model.safetensors", split / part / "model.safetensors"));
  }
  return rest;
}

}  // namespace

TEST_CASE("train --dump-grads writes the library's loss and gradients under Hugging Face names", "[train][cli]") {
  io_test::TempDir tmp;
  const fs::path out = tmp.path / "grads.safetensors";
  const auto r = run_command(run_train("--model " + fixture::dir("gpt2_tiny").string() +
                                   " --tokens 5,17,99,3,64,8,127,0 --dump-grads " + out.string()));
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.err.empty());

  nnx::Gpt2 model = fixture::load<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny", nnx::Mode::train);
  const auto expected = nnx::train::value_and_grad(
      model, nnx::Tensor::from_vector(std::vector<std::int32_t>{5, 17, 99, 3, 64, 8, 127}, {1, 7}),
      nnx::Tensor::from_vector(std::vector<std::int32_t>{17, 99, 3, 64, 8, 127, 0}, {1, 7}));
  auto file = nnx::io::SafetensorsFile::open(out);
  CHECK(file.get("loss").data<float>()[0] == static_cast<float>(expected.loss));
  auto weights = nnx::io::SafetensorsFile::open(fixture::dir("gpt2_tiny") / "model.safetensors");
  CHECK(file.size() == expected.grads.size() + 1);
  for (const auto& name : file.names()) {
    if (name == "loss") continue;
    CAPTURE(name);
    CHECK(file.get(name).shape() == weights.get(name).shape());  // the Hugging Face layout
  }
  CHECK(nnx::equal(file.get("h.0.attn.c_attn.weight"),
                   expected.grads.at(nnx::Path::parse("h/0/attn/qkv/kernel")).tensor()));

  // --vocab-tiles: the same loss and gradients up to rounding.
  const fs::path tiled_out = tmp.path / "grads_tiled.safetensors";
  const auto tiled_run = run_command(run_train("--model " + fixture::dir("gpt2_tiny").string() +
                                           " --tokens 5,17,99,3,64,8,127,0 --vocab-tiles 4 --dump-grads " +
                                           tiled_out.string()));
  INFO(tiled_run.err);
  REQUIRE(tiled_run.code == 0);
  auto tiled = nnx::io::SafetensorsFile::open(tiled_out);
  REQUIRE(tiled.size() == file.size());
  for (const auto& name : file.names()) {
    CAPTURE(name);
    const auto a = file.get(name).span<float>(), b = tiled.get(name).span<float>();
    REQUIRE(a.size() == b.size());
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
      diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
      scale = std::max(scale, std::fabs(double(a[i])));
    }
    CHECK(diff <= 1e-6 * scale);
  }
}

TEST_CASE("train learns, saves a model generate loads, logs every step, and resumes bitwise", "[train][cli]") {
  io_test::TempDir tmp;
  write_run_inputs(tmp.path);
  const std::string common = "--config " + (tmp.path / "config.json").string() + " --data " +
                             (tmp.path / "text.txt").string() + " --batch 4 --seq 16 --lr 3e-3 --warmup 2 --seed 7" +
                             " --grad-accum 2 --log-every 3 --vocab-tiles 3 --qk-clip 0.5";
  const auto whole = run_command(run_train(common + " --steps 6 --out " + (tmp.path / "whole").string() + " --log " +
                                       (tmp.path / "whole.csv").string()));
  INFO(whole.err);
  REQUIRE(whole.code == 0);
  CHECK(whole.out.find("step      3/6  loss") != std::string::npos);
  CHECK(whole.out.find("held-out") != std::string::npos);
  CHECK(whole.out.find("heads clipped") != std::string::npos);
  CHECK(whole.out.find(" 0 heads clipped") == std::string::npos);  // --qk-clip 0.5 is below these logits

  std::ifstream csv(tmp.path / "whole.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(csv, line);) lines.push_back(line);
  REQUIRE(lines.size() == 7);
  CHECK(lines[0] == "step,loss,held_out_loss,lr,grad_norm,tokens_per_s");
  CHECK(lines[6].rfind("6,", 0) == 0);

  const auto gen = run_command(example_program("generate") + " --model " + (tmp.path / "whole" / "model").string() +
                               " --prompt-ids 116,104,101 --max-new-tokens 4");
  INFO(gen.err);
  CHECK(gen.code == 0);

  const auto first = run_command(run_train(common + " --steps 3 --out " + (tmp.path / "split").string()));
  REQUIRE(first.code == 0);
  CHECK(resume_matches(tmp.path / "split", 6, tmp.path / "whole").out.find("step      6/6") != std::string::npos);
}

TEST_CASE("train rejects bad input with one line and exit code 2", "[train][cli]") {
  io_test::TempDir tmp;
  write_run_inputs(tmp.path);
  const std::string config = " --config " + (tmp.path / "config.json").string();
  const std::string data = " --data " + (tmp.path / "text.txt").string();
  // An llm.c token file whose tokens exceed a byte vocabulary, and one with a bad header.
  {
    std::vector<std::int32_t> header(256, 0);
    header[0] = 20240520;
    header[1] = 1;
    header[2] = 40;
    std::ofstream out(tmp.path / "big.bin", std::ios::binary);
    out.write(reinterpret_cast<const char*>(header.data()), 1024);
    for (std::uint16_t i = 0; i < 40; ++i) {
      const std::uint16_t t = static_cast<std::uint16_t>(300 + i);
      out.write(reinterpret_cast<const char*>(&t), 2);
    }
  }
  write(tmp.path / "bad.bin", "not a token file");
  write(tmp.path / "pairs.jsonl", "{\"prompt_ids\": [1], \"chosen_ids\": [2], \"rejected_ids\": [3]}\n"
                                  "{\"prompt_ids\": [1], \"chosen_ids\": [500], \"rejected_ids\": [3]}\n");
  write(tmp.path / "pair.jsonl", "{\"prompt_ids\": [1], \"chosen_ids\": [2], \"rejected_ids\": [3]}\n");
  const std::vector<std::pair<std::string, std::string>> cases{
      {config + " --steps 2", "--data is required"},
      {config + data, "--steps is required"},
      {config + data + " --steps 2 --frobnicate 1", "unknown option --frobnicate"},
      {config + data + " --steps 2 --batch 3 --grad-accum 2", "not a multiple"},
      {config + data + " --steps 2 --qk-clip -1", "--qk-clip: '-1' is not a number >= 0"},
      {config + data + " --steps 2 --vocab-tiles 0", "--vocab-tiles: '0' is not an integer >= 1"},
      {config + " --data " + (tmp.path / "missing.txt").string() + " --steps 2", "missing.txt: no such file"},
      {config + " --data " + (tmp.path / "big.bin").string() + " --steps 2", "token 339"},
      {config + " --data " + (tmp.path / "bad.bin").string() + " --steps 2", "not an llm.c token file"},
      {config + data + " --steps 2 --seq 64", "exceeds the model's context"},
      {" --config " + (tmp.path / "text.txt").string() + data + " --steps 2", "malformed JSON"},
      {" --resume " + (tmp.path / "nowhere").string() + " --steps 2", "no such path"},
      {" --model " + fixture::dir("gpt2_tiny").string() + " --tokens 5,400 --dump-grads x.st", "id 400"},
      {" --model " + fixture::dir("llama_tiny").string() + " --reference " + fixture::dir("llama_tiny").string() +
           data + " --steps 2",
       "DPO needs both --reference PATH and --dpo-beta B"},
      {" --model " + fixture::dir("llama_tiny").string() + " --reference " + fixture::dir("llama_tiny").string() +
           " --dpo-beta 0.1 --data " + (tmp.path / "pairs.jsonl").string() + " --steps 2",
       "pairs.jsonl:2: \"chosen_ids\": 500 is not a token id in [0, 112)"},
      {" --model " + fixture::dir("llama_tiny").string() + " --reference " + fixture::dir("gpt2_tiny").string() +
           " --dpo-beta 0.1 --data " + (tmp.path / "pair.jsonl").string() + " --steps 2",
       "gpt2_tiny: no gpt2 tensor corresponds to parameter 'embed_tokens/embedding'"},
  };
  for (const auto& [args, message] : cases) {
    CAPTURE(args);
    const auto r = run_command(run_train(args));
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
  // A resumed run keeps its settings.
  const std::string first_run = config + data + " --steps 1 --batch 2 --seq 8 --out " + (tmp.path / "run").string();
  REQUIRE(run_command(run_train(first_run)).code == 0);
  const auto r = run_command(run_train("--resume " + (tmp.path / "run").string() + " --steps 2 --lr 1"));
  CHECK(r.code == 2);
  CHECK(r.err.find("--lr cannot be changed when resuming") != std::string::npos);
}

TEST_CASE("train with --reference: DPO's gradients of one pair, and a DPO run lowering the loss", "[train][cli][dpo]") {
  io_test::TempDir tmp;
  const std::string models = " --model " + fixture::dir("llama_tiny").string() + " --reference " +
                             fixture::dir("llama_tiny_dpo_ref").string() + " --dpo-beta 0.5";
  nnx::Llama policy = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  const nnx::Llama reference = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny_dpo_ref", nnx::Mode::train);
  const std::vector<nnx::train::PreferencePair> pairs = {{{5, 17, 3}, {9, 22, 40, 2}, {61, 7, 8}},
                                                         {{30, 1, 12}, {6, 6}, {70, 33, 21}},
                                                         {{2, 2}, {11, 12, 13}, {90, 91}}};
  {
    const fs::path out = tmp.path / "dpo_grads.safetensors";
    const auto r = run_command(run_train(models + " --prompt-ids 5,17,3 --chosen-ids 9,22,40,2 --rejected-ids 61,7,8" +
                                     " --dump-grads " + out.string()));
    INFO(r.err);
    REQUIRE(r.code == 0);
    const auto expected = nnx::train::dpo_value_and_grad(
        policy, reference, nnx::train::preference_batch(std::span(pairs).first(1), policy.vocab_size()), 0.5);
    auto file = nnx::io::SafetensorsFile::open(out);
    CHECK(file.get("loss").data<float>()[0] == static_cast<float>(expected.loss));
    CHECK(file.size() == expected.grads.size() + 1);
    CHECK(nnx::equal(file.get("model.layers.0.mlp.up_proj.weight"),
                     nnx::transpose_2d(expected.grads.at(nnx::Path::parse("layers/0/mlp/up/kernel")).tensor(),
                                       nnx::DType::f32)));
  }
  std::string jsonl;
  for (const auto& p : pairs)
    jsonl += nlohmann::json{{"prompt_ids", p.prompt}, {"chosen_ids", p.chosen}, {"rejected_ids", p.rejected}}.dump() +
             "\n";
  write(tmp.path / "pairs.jsonl", jsonl);
  const auto r = run_command(run_train(models + " --data " + (tmp.path / "pairs.jsonl").string() +
                                   " --steps 6 --batch 3 --lr 3e-3 --log-every 2 --out " + (tmp.path / "dpo").string()));
  INFO(r.err);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("train (DPO, beta 0.5)") != std::string::npos);
  CHECK(r.out.find("step      6/6  loss") != std::string::npos);
  CHECK(r.out.find("accuracy") != std::string::npos);
  // The trained policy (DIR/model) has a lower DPO loss on the pairs than the one it started from.
  const auto batch = nnx::train::preference_batch(pairs, policy.vocab_size());
  const double before = nnx::train::dpo_value_and_grad(policy, reference, batch, 0.5).loss;
  nnx::update(policy, nnx::io::restore_checkpoint(tmp.path / "dpo" / "model", nnx::state(policy, nnx::of<nnx::Param>)));
  const double after = nnx::train::dpo_value_and_grad(policy, reference, batch, 0.5).loss;
  CAPTURE(before, after);
  CHECK(after < 0.5 * before);
}

namespace {

// An llm.c token file (uint16 tokens after a 1024-byte header) of a repeating pattern below 112,
// llama_tiny's vocabulary.
void write_token_file(const fs::path& file) {
  std::vector<std::uint16_t> tokens;
  for (int i = 0; i < 600; ++i) tokens.push_back(static_cast<std::uint16_t>((i * 7 + i / 13) % 40 + 3));
  std::vector<std::int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = static_cast<std::int32_t>(tokens.size());
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  out.write(reinterpret_cast<const char*>(tokens.data()), static_cast<std::streamsize>(tokens.size() * 2));
}

std::string generate_tokens(const std::string& args) {
  const auto r = run_command(example_program("generate") + " --prompt-ids 5,12,19,26 --max-new-tokens 12 " + args);
  INFO(r.err);
  REQUIRE(r.code == 0);
  return r.out;
}

}  // namespace

TEST_CASE("train --lora-rank: adapters alone saved, resumed bitwise, served unmerged and merged alike",
          "[train][cli][lora]") {
  io_test::TempDir tmp;
  write_token_file(tmp.path / "tokens.bin");
  const std::string base = fixture::dir("llama_tiny").string();
  const std::string common = "--model " + base + " --data " + (tmp.path / "tokens.bin").string() +
                             " --lora-rank 4 --lora-alpha 8 --lora-targets 'attn|mlp' --batch 4 --seq 16 --lr 2e-2 --warmup 3" +
                             " --seed 3 --log-every 4 --vocab-tiles 2";
  const auto whole = run_command(run_train(common + " --steps 8 --out " + (tmp.path / "whole").string()));
  INFO(whole.err);
  REQUIRE(whole.code == 0);
  CHECK(whole.out.find("LoRA rank 4 on 14 Linears") != std::string::npos);  // 2 layers x (4 attn + 3 mlp)
  CHECK(whole.out.find("LoRA adapter") != std::string::npos);

  // DIR/model: the adapters alone, trained (B moved off zero).
  auto adapter = nnx::io::SafetensorsFile::open(tmp.path / "whole" / "model" / "model.safetensors");
  CHECK(adapter.size() == 28);
  bool trained = false;
  for (const auto& name : adapter.names()) {
    CAPTURE(name);
    CHECK((name.find("/lora/a") != std::string::npos || name.find("/lora/b") != std::string::npos));
    if (name.find("/lora/b") != std::string::npos)
      for (float x : adapter.get(name).span<float>()) trained = trained || x != 0.0f;
  }
  CHECK(trained);
  // ckpt info reads an adapter checkpoint (its config holds the base model's under "model") and
  // counts the adapters' parameters apart (it holds no base Param).
  std::int64_t adapter_numel = 0;
  for (const auto& name : adapter.names()) adapter_numel += adapter.get(name).numel();
  const auto adapter_info = run_command(example_program("ckpt") + " info " + (tmp.path / "whole" / "model").string());
  INFO(adapter_info.err);
  REQUIRE(adapter_info.code == 0);
  CHECK(adapter_info.out.find("\nparameters: 0\nlora parameters: " + std::to_string(adapter_numel) + "\n") !=
        std::string::npos);
  CHECK(adapter_info.out.find("layout: per-layer\n") != std::string::npos);
  CHECK(adapter_info.out.find("format: native, LoRA adapter\n") != std::string::npos);
  // DIR/state: adapters, their moments and the step; no base weight.
  auto state = nnx::io::SafetensorsFile::open(tmp.path / "whole" / "state" / "model.safetensors");
  for (const auto& name : state.names()) {
    CAPTURE(name);
    CHECK((name.find("/lora/") != std::string::npos || name == "step"));
  }

  const auto first = run_command(run_train(common + " --steps 4 --out " + (tmp.path / "split").string()));
  REQUIRE(first.code == 0);
  resume_matches(tmp.path / "split", 8, tmp.path / "whole");

  // Served unmerged, and merged by ckpt: the same greedy tokens.
  const std::string unmerged = generate_tokens("--model " + base + " --lora " + (tmp.path / "whole" / "model").string());
  const auto merge = run_command(example_program("ckpt") + " merge-lora --in " + base + " --lora " +
                                 (tmp.path / "whole" / "model").string() + " --out " + (tmp.path / "merged").string());
  INFO(merge.err);
  REQUIRE(merge.code == 0);
  CHECK(merge.out.find("merged the adapters of 14 Linears") != std::string::npos);
  CHECK(generate_tokens("--model " + (tmp.path / "merged").string()) == unmerged);
  const auto merge_hf = run_command(example_program("ckpt") + " merge-lora --hf --in " + base + " --lora " +
                                    (tmp.path / "whole" / "model").string() + " --out " +
                                    (tmp.path / "merged_hf").string());
  REQUIRE(merge_hf.code == 0);
  CHECK(generate_tokens("--model " + (tmp.path / "merged_hf").string()) == unmerged);
  // The adapter moved the model: the base alone decodes otherwise.
  CHECK(generate_tokens("--model " + base) != unmerged);

  // Bad input: one line, exit 2.
  const std::vector<std::pair<std::string, std::string>> cases{
      {run_train("--model " + base + " --data x --steps 1 --lora-alpha 4"), "need --lora-rank"},
      {run_train("--model " + base + " --data " + (tmp.path / "tokens.bin").string() +
                 " --steps 1 --seq 16 --lora-rank 2 --lora-targets nothing_here"),
       "match no Linear"},
      {run_train("--model " + base + " --data x --steps 1 --lora-rank 2 --qk-clip 1"), "does not combine"},
      {example_program("generate") + " --model " + base + " --lora " + base + " --prompt-ids 1 --max-new-tokens 1",
       "not a LoRA adapter"},
      {example_program("generate") + " --model " + fixture::dir("gpt2_tiny").string() + " --lora " +
           (tmp.path / "whole" / "model").string() + " --prompt-ids 1 --max-new-tokens 1",
       "trained on another model"},
      {example_program("ckpt") + " merge-lora --in " + fixture::dir("llama_tied").string() + " --lora " +
           (tmp.path / "whole" / "model").string() + " --out " + (tmp.path / "bad").string(),
       "trained on another model"},
  };
  for (const auto& [command, message] : cases) {
    CAPTURE(command);
    const auto r = run_command(command);
    CHECK(r.code == 2);
    CHECK(r.err.find(message) != std::string::npos);
    CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  }
}

TEST_CASE("train --layout stacked: the per-layer run (and DPO) bit for bit, saved stacked, resumed bitwise",
          "[train][cli][layout]") {
  io_test::TempDir tmp;
  write_token_file(tmp.path / "tokens.bin");
  const std::string common = "--model " + fixture::dir("llama_tiny").string() + " --data " +
                             (tmp.path / "tokens.bin").string() +
                             " --batch 4 --seq 16 --lr 1e-2 --warmup 2 --seed 5 --log-every 2 --qk-clip 2";
  const auto run = [&](const std::string& layout, const std::string& name, int steps) {
    const auto r = run_command(run_train(common + " --steps " + std::to_string(steps) + " --layout " + layout +
                                         " --out " + (tmp.path / name).string() + " --log " +
                                         (tmp.path / (name + ".csv")).string()));
    INFO(r.err);
    REQUIRE(r.code == 0);
  };
  // The log without its tokens/s column.
  const auto losses = [&](const std::string& name) {
    std::ifstream csv(tmp.path / (name + ".csv"));
    std::vector<std::string> rows;
    for (std::string line; std::getline(csv, line);) rows.push_back(line.substr(0, line.rfind(',')));
    return rows;
  };
  run("per-layer", "per", 4);
  run("stacked", "stacked", 4);
  CHECK(losses("stacked").size() == 5);
  CHECK(losses("stacked") == losses("per"));

  const std::string ckpt = example_program("ckpt");
  for (const char* part : {"state", "model"}) {
    CAPTURE(part);
    const auto info = run_command(ckpt + " info " + (tmp.path / "stacked" / part).string());
    REQUIRE(info.code == 0);
    CHECK(info.out.find("layout: stacked\n") != std::string::npos);
    CHECK(info.out.find("layers/attn/query/kernel") != std::string::npos);  // one leaf for every layer
    // Compared layer by layer against the per-layer run's: equal bit for bit.
    const auto same = run_command(ckpt + " compare " + (tmp.path / "per" / part).string() + " " +
                                  (tmp.path / "stacked" / part).string() + " --rtol 0 --atol 0");
    INFO(same.out << same.err);
    CHECK(same.code == 0);
  }
  CHECK(generate_tokens("--model " + (tmp.path / "stacked" / "model").string()) ==
        generate_tokens("--model " + (tmp.path / "per" / "model").string()));

  // Resumed with its saved layout: the unbroken run's state.
  run("stacked", "split", 2);
  resume_matches(tmp.path / "split", 4, tmp.path / "stacked");

  // DPO: policy and reference stacked, the same updates.
  write(tmp.path / "pairs.jsonl",
        "{\"prompt_ids\": [5, 17, 3], \"chosen_ids\": [9, 22, 40], \"rejected_ids\": [61, 7]}\n"
        "{\"prompt_ids\": [30, 1], \"chosen_ids\": [6, 6], \"rejected_ids\": [70, 33, 21]}\n");
  for (const char* layout : {"per-layer", "stacked"}) {
    const auto r = run_command(run_train("--model " + fixture::dir("llama_tiny").string() + " --reference " +
                                     fixture::dir("llama_tiny_dpo_ref").string() + " --dpo-beta 0.5 --data " +
                                     (tmp.path / "pairs.jsonl").string() + " --steps 2 --batch 2 --layout " + layout +
                                     " --out " + (tmp.path / (std::string("dpo_") + layout)).string()));
    INFO(r.err);
    REQUIRE(r.code == 0);
  }
  const auto dpo = run_command(ckpt + " compare " + (tmp.path / "dpo_per-layer" / "state").string() + " " +
                               (tmp.path / "dpo_stacked" / "state").string() + " --rtol 0 --atol 0");
  INFO(dpo.out << dpo.err);
  CHECK(dpo.code == 0);

  const std::string model = "--model " + fixture::dir("llama_tiny").string() + " --data " +
                            (tmp.path / "tokens.bin").string() + " --steps 1";
  for (const std::string& bad : {std::string(" --layout diagonal"), std::string(" --layout stacked --lora-rank 2")}) {
    const auto r = run_command(run_train(model + bad));
    INFO(bad << ": " << r.err);
    CHECK(r.code == 2);
    CHECK(r.err.find("--layout") != std::string::npos);
  }
  // Dropout draws every layer's masks from one stream: refused stacked, not silently changed.
  write_run_inputs(tmp.path);  // a GPT-2 config with resid_pdrop 0.1, and a second layer
  write(tmp.path / "config.json",
        R"({"model_type": "gpt2", "vocab_size": 256, "n_positions": 32, "n_embd": 16, "n_layer": 2, "n_head": 2,
            "resid_pdrop": 0.1})");
  const auto dropout = run_command(run_train("--config " + (tmp.path / "config.json").string() + " --data " +
                                         (tmp.path / "text.txt").string() + " --seq 16 --steps 1 --layout stacked"));
  CHECK(dropout.code == 2);
  CHECK(dropout.err.find("dropout") != std::string::npos);
  // Trained per layer, its train state stores the stream once (under layer 0): ckpt convert to
  // stacked is refused naming that leaf; the parameters alone convert.
  const auto per_layer = run_command(run_train("--config " + (tmp.path / "config.json").string() + " --data " +
                                           (tmp.path / "text.txt").string() + " --seq 16 --steps 1 --out " +
                                           (tmp.path / "dropout_run").string()));
  INFO(per_layer.err);
  REQUIRE(per_layer.code == 0);
  const auto state = run_command(ckpt + " convert --in " + (tmp.path / "dropout_run" / "state").string() +
                                 " --out " + (tmp.path / "dropout_state_stacked").string() + " --layout stacked");
  CHECK(state.code == 2);
  CHECK(state.err.find("model/h/0/dropout/rngs/default/") != std::string::npos);
  CHECK(state.err.find("shared by every layer") != std::string::npos);
  CHECK_FALSE(fs::exists(tmp.path / "dropout_state_stacked"));
  const auto params = run_command(ckpt + " convert --in " + (tmp.path / "dropout_run" / "model").string() +
                                  " --out " + (tmp.path / "dropout_model_stacked").string() + " --layout stacked");
  INFO(params.err);
  CHECK(params.code == 0);
}
