// train — trains a GPT-2 or Llama model on text, or computes one sequence's gradients.
//
//   train --config CONFIG.json --data FILE --steps N [--batch B] [--seq T] [--lr X] [--warmup N]
//         [--weight-decay X] [--grad-accum K] [--clip X] [--seed S] [--threads N] [--out DIR]
//         [--resume DIR] [--log FILE.csv]
//         [--log-every N] [--eval-batches N] [--save-every N] [--min-lr X] [--optimizer adamw|sgd]
//         [--vocab-tiles K] [--qk-clip TAU] [--layout per-layer|stacked]
//   train --model PATH --data FILE --steps N ...          fine-tunes a checkpoint instead
//   train --model PATH --lora-rank R [--lora-alpha A] [--lora-targets PATTERN] --data FILE --steps N ...
//                                                         trains LoRA adapters on a frozen base
//   train --model PATH --tokens 1,2,3 --dump-grads FILE   one sequence's loss and gradients
//   train --model PATH --reference PATH --dpo-beta B --data PAIRS.jsonl --steps N ...   DPO
//   train --model PATH --reference PATH --dpo-beta B --prompt-ids 1,2 --chosen-ids 3 --rejected-ids 4
//         --dump-grads FILE                              one preference pair's DPO loss and gradients
//
// CONFIG is a Hugging Face style config.json (model_type gpt2 or llama); the model starts from
// random weights drawn with --seed. --model PATH is a Hugging Face directory or a params-only
// checkpoint this program wrote (DIR/model). --data (repeatable; a directory means its files)
// is text read as bytes, one token per byte (the vocabulary must hold 256), or llm.c token
// files (.bin). The last 10% of each file is held out.
//
// Each step draws --batch windows of --seq tokens (a function of --seed and the step number, so
// a resumed run sees the batches an unbroken run would), accumulates their gradient over
// --grad-accum micro-batches, clips its global norm to --clip (0: off) and applies AdamW
// (decoupled --weight-decay on matrices and embeddings; --lr with --warmup linear warmup and
// cosine decay to --min-lr at the last step). Every --log-every steps a line reports the step,
// loss, held-out loss (over --eval-batches fixed held-out windows), learning rate and tokens/s;
// --log writes one CSV row per step. --vocab-tiles K computes the output head and the loss over
// K vocabulary tiles, so the [batch, seq, vocab] logits never exist whole (the same loss and
// gradients up to rounding, for the head's GEMM run twice). --qk-clip TAU applies QK-Clip after
// every update: attention heads whose largest pre-softmax logit in the batch exceeded TAU get
// their query and key projections scaled down to it (0, the default: off). --layout stacked
// trains with the decoder layers stacked (one leaf per parameter path with a leading layers
// axis, as `ckpt convert --layout stacked` writes them): the same losses and parameters bit for
// bit, and DIR/state and DIR/model are saved stacked (generate and serve_batch serve them so);
// not for a model with dropout (its layers share one random stream) or with --lora-rank.
//
// --out DIR writes DIR/state (the whole TrainState: model, AdamW moments, step, and the run's
// settings) and DIR/model (the parameters alone, with config.json-style config: generate and
// serve_batch load it) at the end and every --save-every steps. --resume DIR continues from
// DIR/state with its settings (the command line's --steps, --out, --log, --threads and
// --log-every apply) and ends bitwise where an unbroken run of as many steps would.
//
// --dump-grads FILE writes a safetensors file: "loss" f32 [1], the mean next-token
// cross-entropy of --tokens, and the gradient of every parameter, under its Hugging Face name
// and layout for a Hugging Face directory, its nnx path for a checkpoint of this program.
//
// DPO (--reference PATH --dpo-beta B): the policy --model trains against the frozen reference
// (a Hugging Face directory or a checkpoint of this program, same architecture) on --data
// JSON-lines files of {"prompt_ids": [...], "chosen_ids": [...], "rejected_ids": [...]},
// --batch pairs a step drawn by (seed, step); the loss is -log sigmoid(B ((log pi(chosen) -
// log ref(chosen)) - (log pi(rejected) - log ref(rejected)))) over the responses' tokens. The
// log reports loss, accuracy (pairs whose chosen reward is the larger) and reward margin;
// --out, --resume and --qk-clip work as for language modelling. With --dump-grads, one pair's
// loss and the policy's gradients, named as above.
//
// LoRA (--lora-rank R, with --model): adapters A [in, R] and B [R, out] (B starting at zero)
// on every Linear whose path matches the regex --lora-targets (default "attn": every attention
// projection; e.g. "attn/(query|value)$", "mlp", "lm_head"), scaled by --lora-alpha / R
// (default alpha 2R). The base weights are frozen: only the adapters get gradients and AdamW
// moments. DIR/model then holds the adapter alone (generate, serve_batch and server --lora
// serve it on the base; ckpt merge-lora merges it), DIR/state the adapters, their moments and
// the step; --resume reads the base again from the saved --model path. Not with --qk-clip
// (it would rescale frozen weights), DPO or --dump-grads.
//
// Errors: one line on stderr, exit code 2.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/core.hpp>
#include <nnx/engine/lora_checkpoint.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/json.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/train.hpp>

#include "cli.hpp"

namespace {

using cli::parse_double;
using cli::parse_int;
using cli::UsageError;

namespace fs = std::filesystem;
namespace train = nnx::train;

constexpr const char* kUsage =
    "usage: train --config CONFIG.json --data FILE --steps N [--batch B] [--seq T] [--lr X] [--warmup N]\n"
    "             [--weight-decay X] [--grad-accum K] [--clip X] [--seed S] [--threads N] [--out DIR]\n"
    "             [--resume DIR] [--log FILE.csv] [--log-every N] [--eval-batches N] [--save-every N]\n"
    "             [--min-lr X] [--optimizer adamw|sgd] [--vocab-tiles K] [--qk-clip TAU]\n"
    "             [--layout per-layer|stacked]\n"
    "       train --model PATH --data FILE --steps N ...   (fine-tune a checkpoint)\n"
    "       train --model PATH --lora-rank R [--lora-alpha A] [--lora-targets REGEX] --data FILE --steps N ...\n"
    "       train --model PATH --tokens 1,2,3 --dump-grads FILE\n"
    "       train --model PATH --reference PATH --dpo-beta B --data PAIRS.jsonl --steps N ...   (DPO)\n"
    "       train --model PATH --reference PATH --dpo-beta B --prompt-ids IDS --chosen-ids IDS --rejected-ids IDS\n"
    "             --dump-grads FILE\n"
    "Trains a gpt2 or llama model on text (one token per byte) or llm.c .bin token files.\n"
    "Errors are one line on stderr, exit code 2.\n";

// The run's settings; saved in DIR/state so that --resume continues with them.
struct Settings {
  std::vector<std::string> data;
  std::int64_t batch = 8, seq = 128, warmup = 0, grad_accum = 1, eval_batches = 16, vocab_tiles = 1;
  double lr = 1e-3, min_lr = 1e-4, weight_decay = 0.1, clip = 1.0, qk_clip = 0.0;
  std::string reference;  // DPO: the frozen reference model
  double dpo_beta = 0.0;  // > 0: DPO against `reference` on preference pairs
  std::uint64_t seed = 0;
  std::string optimizer = "adamw";
  std::string base;  // --model: where a LoRA run's frozen base is read again on --resume
  std::int64_t lora_rank = 0;  // > 0: train LoRA adapters on the frozen base
  double lora_alpha = 0.0;     // 0: 2 * rank
  std::string lora_targets = "attn";
  nnx::Layout layout = nnx::Layout::per_layer;  // of the decoder layers while training and in what is saved

  nnx::LoraConfig lora() const { return {lora_rank, lora_alpha > 0 ? lora_alpha : 2.0 * lora_rank, lora_targets}; }

  nlohmann::json to_json() const {
    return {{"data", data},   {"batch", batch},         {"seq", seq},     {"warmup", warmup},
            {"grad_accum", grad_accum}, {"eval_batches", eval_batches}, {"lr", lr},
            {"min_lr", min_lr}, {"weight_decay", weight_decay}, {"clip", clip}, {"seed", seed},
            {"optimizer", optimizer}, {"vocab_tiles", vocab_tiles}, {"qk_clip", qk_clip},
            {"reference", reference}, {"dpo_beta", dpo_beta}, {"base", base}, {"lora_rank", lora_rank},
            {"lora_alpha", lora_alpha}, {"lora_targets", lora_targets}, {"layout", nnx::layout_name(layout)}};
  }
  static Settings from_json(const nlohmann::json& j, const std::string& source) {
    try {
      Settings s;
      s.data = j.at("data").get<std::vector<std::string>>();
      s.batch = j.at("batch").get<std::int64_t>();
      s.seq = j.at("seq").get<std::int64_t>();
      s.warmup = j.at("warmup").get<std::int64_t>();
      s.grad_accum = j.at("grad_accum").get<std::int64_t>();
      s.eval_batches = j.at("eval_batches").get<std::int64_t>();
      s.lr = j.at("lr").get<double>();
      s.min_lr = j.at("min_lr").get<double>();
      s.weight_decay = j.at("weight_decay").get<double>();
      s.clip = j.at("clip").get<double>();
      s.seed = j.at("seed").get<std::uint64_t>();
      s.optimizer = j.at("optimizer").get<std::string>();
      s.vocab_tiles = j.value("vocab_tiles", std::int64_t{1});  // absent before they existed
      s.qk_clip = j.value("qk_clip", 0.0);
      s.reference = j.value("reference", std::string());
      s.dpo_beta = j.value("dpo_beta", 0.0);
      s.base = j.value("base", std::string());
      s.lora_rank = j.value("lora_rank", std::int64_t{0});
      s.lora_alpha = j.value("lora_alpha", 0.0);
      s.lora_targets = j.value("lora_targets", std::string("attn"));
      s.layout = nnx::parse_layout(j.value("layout", std::string("per-layer")));
      return s;
    } catch (const std::exception& e) {
      throw nnx::CheckpointError(source + ": the saved run settings are incomplete (" + e.what() + ")");
    }
  }
};

struct Args {
  Settings settings;
  std::string config, model, resume, out, log, dump_grads;
  std::vector<std::int64_t> tokens, prompt_ids, chosen_ids, rejected_ids;
  std::int64_t steps = -1, log_every = 10, save_every = 0;
  int threads = 0;
  bool help = false;
  std::vector<std::string> given;  // the options on the command line
};

std::vector<std::int64_t> parse_ids(const std::string& flag, const std::string& text) {
  std::vector<std::int64_t> ids;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    ids.push_back(parse_int(flag, text.substr(begin, comma - begin), 0));
    begin = comma + 1;
  }
  return ids;
}

Args parse_args(int argc, char** argv) {
  Args a;
  Settings& s = a.settings;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (i + 1 >= argc) throw UsageError(flag + ": missing value");
    const std::string value = argv[++i];
    a.given.push_back(flag);
    if (flag == "--config") a.config = value;
    else if (flag == "--model") a.model = value;
    else if (flag == "--data") s.data.push_back(value);
    else if (flag == "--steps") a.steps = parse_int(flag, value, 0);
    else if (flag == "--batch") s.batch = parse_int(flag, value, 1);
    else if (flag == "--seq") s.seq = parse_int(flag, value, 1);
    else if (flag == "--lr") s.lr = parse_double(flag, value, 0.0);
    else if (flag == "--min-lr") s.min_lr = parse_double(flag, value, 0.0);
    else if (flag == "--warmup") s.warmup = parse_int(flag, value, 0);
    else if (flag == "--weight-decay") s.weight_decay = parse_double(flag, value, 0.0);
    else if (flag == "--grad-accum") s.grad_accum = parse_int(flag, value, 1);
    else if (flag == "--vocab-tiles") s.vocab_tiles = parse_int(flag, value, 1);
    else if (flag == "--qk-clip") s.qk_clip = parse_double(flag, value, 0.0);
    else if (flag == "--clip") s.clip = parse_double(flag, value, 0.0);
    else if (flag == "--seed") s.seed = static_cast<std::uint64_t>(parse_int(flag, value, 0));
    else if (flag == "--eval-batches") s.eval_batches = parse_int(flag, value, 1);
    else if (flag == "--optimizer") {
      if (value != "adamw" && value != "sgd") throw UsageError("--optimizer: expected adamw or sgd, got '" + value + "'");
      s.optimizer = value;
    } else if (flag == "--threads") a.threads = cli::parse_threads(flag, value);
    else if (flag == "--out") a.out = value;
    else if (flag == "--resume") a.resume = value;
    else if (flag == "--log") a.log = value;
    else if (flag == "--log-every") a.log_every = parse_int(flag, value, 1);
    else if (flag == "--save-every") a.save_every = parse_int(flag, value, 0);
    else if (flag == "--tokens") a.tokens = parse_ids(flag, value);
    else if (flag == "--prompt-ids") a.prompt_ids = parse_ids(flag, value);
    else if (flag == "--chosen-ids") a.chosen_ids = parse_ids(flag, value);
    else if (flag == "--rejected-ids") a.rejected_ids = parse_ids(flag, value);
    else if (flag == "--reference") s.reference = value;
    else if (flag == "--dpo-beta") {
      s.dpo_beta = parse_double(flag, value, 0.0);
      if (s.dpo_beta == 0) throw UsageError("--dpo-beta: must be > 0");
    }
    else if (flag == "--dump-grads") a.dump_grads = value;
    else if (flag == "--layout") {
      if (value != "per-layer" && value != "stacked")
        throw UsageError("--layout: expected per-layer or stacked, got '" + value + "'");
      s.layout = nnx::parse_layout(value);
    }
    else if (flag == "--lora-rank") s.lora_rank = parse_int(flag, value, 1);
    else if (flag == "--lora-alpha") {
      s.lora_alpha = parse_double(flag, value, 0.0);
      if (s.lora_alpha == 0) throw UsageError("--lora-alpha: must be > 0");
    } else if (flag == "--lora-targets") {
      if (value.empty()) throw UsageError("--lora-targets: empty pattern");
      s.lora_targets = value;
    }
    else throw UsageError("unknown option " + flag);
  }
  if (s.reference.empty() != (s.dpo_beta == 0))
    throw UsageError("DPO needs both --reference PATH and --dpo-beta B");
  const bool dpo = s.dpo_beta > 0;
  const bool lora = s.lora_rank > 0;
  const bool lora_option = std::any_of(a.given.begin(), a.given.end(), [](const std::string& f) {
    return f == "--lora-alpha" || f == "--lora-targets";
  });
  if (lora_option && !lora) throw UsageError("--lora-alpha and --lora-targets need --lora-rank R");
  if (lora && (dpo || !a.dump_grads.empty() || s.qk_clip > 0))
    throw UsageError("--lora-rank trains adapters by language modelling; it does not combine with DPO, --dump-grads "
                     "or --qk-clip");
  if (lora && a.model.empty()) throw UsageError("--lora-rank needs --model (the base the adapters train on)");
  if (lora && s.layout != nnx::Layout::per_layer)
    throw UsageError("--lora-rank trains adapters per layer (an adapter checkpoint is served on per-layer Linears); "
                     "it does not combine with --layout stacked");
  if (!a.dump_grads.empty()) {
    if (a.model.empty()) throw UsageError("--dump-grads needs --model");
    if (s.layout != nnx::Layout::per_layer) throw UsageError("--layout applies to training runs, not --dump-grads");
    if (dpo && (a.prompt_ids.empty() || a.chosen_ids.empty() || a.rejected_ids.empty()))
      throw UsageError("--dump-grads with --reference needs --prompt-ids, --chosen-ids and --rejected-ids");
    if (!dpo && a.tokens.size() < 2) throw UsageError("--dump-grads needs --tokens with at least 2 ids");
    return a;
  }
  if (dpo && !a.config.empty()) throw UsageError("DPO starts from a trained policy: give --model, not --config");
  const int sources = !a.config.empty() + !a.model.empty() + !a.resume.empty();
  if (sources != 1) throw UsageError("give exactly one of --config, --model and --resume");
  if (a.steps < 0) throw UsageError("--steps is required");
  if (a.resume.empty() && s.data.empty()) throw UsageError("--data is required");
  if (s.batch % s.grad_accum != 0)
    throw UsageError("--batch " + std::to_string(s.batch) + " is not a multiple of --grad-accum " +
                     std::to_string(s.grad_accum));
  s.base = a.model;
  return a;
}

// A model's parameters from a Hugging Face directory or a params-only checkpoint, into a model
// built with random weights (which gives its other variables, e.g. dropout's RNG state).
template <class Model>
void load_params(Model& model, const fs::path& path) {
  const nnx::State target = nnx::state(model, nnx::of<nnx::Param>);
  nnx::State params = fs::exists(path / "config.json") ? nnx::io::HfCheckpoint::open(path).read_params(target)
                                                       : nnx::io::restore_checkpoint_any_layout(path, target,
                                                                                                 Model::layers_key);
  nnx::update(model, params.map([](const nnx::Tensor& t) { return t.astype(nnx::DType::f32); }));
}

nlohmann::json model_config_of(const fs::path& path) {
  if (!fs::exists(path)) throw nnx::InvalidArgument(path.string() + ": no such path");
  return fs::exists(path / "config.json") ? nnx::io::HfCheckpoint::open(path).config()
                                          : nnx::io::checkpoint_config(path);
}

// --dump-grads's file: "loss" and the gradients, under Hugging Face names for a Hugging Face
// --model, else under their nnx paths.
void write_grads(const Args& args, const nlohmann::json& config, double loss, const nnx::State& grads) {
  std::vector<std::pair<std::string, nnx::Tensor>> out;
  out.emplace_back("loss", nnx::Tensor::full({1}, loss));
  if (fs::exists(fs::path(args.model) / "config.json")) {
    for (auto& named : nnx::io::hf_tensors(config.at("model_type").get<std::string>(), grads))
      out.push_back(std::move(named));
  } else {
    for (const auto& [path, leaf] : grads) out.emplace_back(path.to_string(), leaf.tensor());
  }
  nnx::io::save_safetensors(args.dump_grads, out);
}

// --dump-grads: the loss and gradients of one sequence, written as safetensors.
template <class Model, class Config>
void dump_grads(const Args& args, const nlohmann::json& config) {
  const Config cfg = Config::from_json(config);
  nnx::Rngs rngs{0};
  Model model(cfg, nnx::Mode::train, rngs);
  load_params(model, args.model);
  const auto n = static_cast<std::int64_t>(args.tokens.size()) - 1;
  nnx::Tensor tokens = nnx::Tensor::empty({1, n}, nnx::DType::i32), targets = nnx::Tensor::empty({1, n}, nnx::DType::i32);
  for (std::int64_t i = 0; i <= n; ++i) {
    if (args.tokens[i] >= cfg.vocab_size)
      throw nnx::InvalidArgument("--tokens: id " + std::to_string(args.tokens[i]) + " is outside the vocabulary [0, " +
                                 std::to_string(cfg.vocab_size) + ")");
    if (i < n) tokens.data<std::int32_t>()[i] = static_cast<std::int32_t>(args.tokens[i]);
    if (i > 0) targets.data<std::int32_t>()[i - 1] = static_cast<std::int32_t>(args.tokens[i]);
  }
  const auto result = train::value_and_grad(model, tokens, targets, {.vocab_tiles = args.settings.vocab_tiles});
  write_grads(args, config, result.loss, result.grads);
}

std::vector<std::int32_t> to_i32(const std::vector<std::int64_t>& ids) { return {ids.begin(), ids.end()}; }

// --dump-grads with --reference: the DPO loss of one preference pair and the policy's gradients.
template <class Model, class Config>
void dump_dpo_grads(const Args& args, const nlohmann::json& config) {
  const Config cfg = Config::from_json(config);
  nnx::Rngs rngs{0};
  Model policy(cfg, nnx::Mode::train, rngs), reference(cfg, nnx::Mode::train, rngs);
  load_params(policy, args.model);
  load_params(reference, args.settings.reference);
  const std::vector<train::PreferencePair> pair = {
      {to_i32(args.prompt_ids), to_i32(args.chosen_ids), to_i32(args.rejected_ids)}};
  const train::PreferenceBatch batch = train::preference_batch(pair, cfg.vocab_size);
  const auto result = train::dpo_value_and_grad(policy, reference, batch, args.settings.dpo_beta);
  write_grads(args, config, result.loss, result.grads);
}

// A LoRA run's frozen base is not saved: DIR/state holds what trains (adapters, moments, step)
// and DIR/model the adapter alone.
template <class Model>
void save(const fs::path& dir, const train::TrainState<Model>& state, const nlohmann::json& model_config,
          const Settings& settings) {
  auto [graphdef, trained, frozen] = nnx::split(state, nnx::Not(nnx::of<train::FrozenParam>), nnx::everything);
  nnx::io::save_checkpoint(dir / "state", trained, {}, {{"model", model_config}, {"run", settings.to_json()}});
  if (settings.lora_rank > 0)
    nnx::save_lora_adapter(dir / "model", state.model, model_config, settings.lora());
  else
    nnx::io::save_checkpoint(dir / "model", nnx::state(state.model, nnx::of<nnx::Param>), {}, model_config);
}

// Continues `state` from the TrainState checkpoint DIR/state (everything but frozen weights).
template <class State>
void restore_state(State& state, const std::string& resume) {
  auto [graphdef, trained, frozen] = nnx::split(state, nnx::Not(nnx::of<train::FrozenParam>), nnx::everything);
  state = nnx::merge(graphdef, nnx::io::restore_checkpoint(fs::path(resume) / "state", trained), frozen);
}

train::OptimizerConfig optimizer_config(const Settings& s, std::int64_t steps) {
  return {.kind = s.optimizer == "sgd" ? train::OptimizerKind::sgd : train::OptimizerKind::adamw,
          .lr = {.peak = s.lr,
                 .warmup_steps = s.warmup,
                 .decay_steps = std::max(steps, s.warmup + 1),
                 .final_fraction = s.lr > 0 ? s.min_lr / s.lr : 0.0},
          .beta1 = 0.9,
          .beta2 = 0.95,
          .eps = 1e-8,
          .weight_decay = s.weight_decay,
          .clip_norm = s.clip};
}

template <class Model, class Config>
void run(const Args& args, const nlohmann::json& model_config, const Settings& s, const std::string& resume) {
  const Config cfg = Config::from_json(model_config);
  const train::TokenData data = train::load_token_data({s.data.begin(), s.data.end()});
  if (data.max_token >= cfg.vocab_size)
    throw nnx::InvalidArgument("the data holds token " + std::to_string(data.max_token) + " but the vocabulary has " +
                               std::to_string(cfg.vocab_size) + " entries");
  if (s.seq > cfg.context_length())
    throw nnx::InvalidArgument("--seq " + std::to_string(s.seq) + " exceeds the model's context " +
                               std::to_string(cfg.context_length()));
  const train::OptimizerConfig opt = optimizer_config(s, args.steps);
  nnx::Rngs rngs{s.seed};
  Model model(cfg, nnx::Mode::train, rngs);
  if (!args.model.empty()) load_params(model, args.model);
  std::string adapters;
  if (s.lora_rank > 0) {
    if (args.model.empty()) load_params(model, s.base);  // resuming: the base is not in the state
    const std::size_t attached = nnx::add_lora(model, s.lora(), rngs).size();
    train::freeze_base(model);
    adapters = " (LoRA rank " + std::to_string(s.lora_rank) + " on " + std::to_string(attached) + " Linears)";
  }
  train::TrainState<Model> state(nnx::to_layout(std::move(model), s.layout), opt);
  if (!resume.empty()) restore_state(state, resume);
  std::int64_t params = 0;
  for (const auto& [path, leaf] : nnx::state(state.model, nnx::of<nnx::Param>)) params += leaf.tensor().numel();
  std::printf("train: %s, %.2f M trained parameters%s; data %zu files, %zu training and %zu held-out tokens; %s "
              "threads\n",
              model_config.at("model_type").get<std::string>().c_str(), double(params) / 1e6, adapters.c_str(),
              data.files.size(), data.train.size(), data.held_out.size(), std::to_string(nnx::num_threads()).c_str());
  const train::Batch eval = train::held_out_windows(data.held_out, s.seq, s.eval_batches);

  std::ofstream log;
  if (!args.log.empty()) {
    const bool append = !resume.empty() && fs::exists(args.log);
    log.open(args.log, append ? std::ios::app : std::ios::trunc);
    if (!log) throw nnx::InvalidArgument(args.log + ": cannot write");
    if (!append) log << "step,loss,held_out_loss,lr,grad_norm,tokens_per_s\n";
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::int64_t first = state.steps_done();
  for (std::int64_t step = first; step < args.steps; ++step) {
    const train::Batch batch = train::sample_batch(data.train, s.batch, s.seq, s.seed, step);
    const auto start = std::chrono::steady_clock::now();
    auto [next, m] =
        train::train_step(std::move(state), batch.tokens, batch.targets,
                          {.grad_accum = s.grad_accum, .vocab_tiles = s.vocab_tiles, .qk_clip = s.qk_clip});
    state = std::move(next);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tokens_per_s = double(s.batch * s.seq) / seconds;
    if (!std::isfinite(m.loss))
      throw nnx::NumericalError("the loss is " + std::to_string(m.loss) + " at step " + std::to_string(m.step) +
                                " (try a lower --lr or a --clip)");
    const bool report = m.step % args.log_every == 0 || m.step == args.steps;
    std::optional<double> held_out;
    if (report) {
      held_out = train::evaluate_loss(state.model, eval.tokens, eval.targets, {.vocab_tiles = s.vocab_tiles});
      const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("step %6lld/%lld  loss %.4f  held-out %.4f  lr %.2e  %7.0f tok/s  %6.1f s", (long long)m.step,
                  (long long)args.steps, m.loss, *held_out, m.lr, tokens_per_s, elapsed);
      if (s.qk_clip > 0)
        std::printf("  max logit %.2f, %lld heads clipped", m.max_attention_logit, (long long)m.clipped_heads);
      std::printf("\n");
      std::fflush(stdout);
    }
    if (log) {
      log << m.step << ',' << m.loss << ',' << (held_out ? std::to_string(*held_out) : "") << ',' << m.lr << ','
          << m.grad_norm << ',' << tokens_per_s << '\n';
      log.flush();
    }
    if (!args.out.empty() && args.save_every > 0 && m.step % args.save_every == 0 && m.step != args.steps)
      save(args.out, state, model_config, s);
  }
  if (!args.out.empty()) {
    save(args.out, state, model_config, s);
    std::printf("saved %s/state (train state) and %s/model (%s)\n", args.out.c_str(), args.out.c_str(),
                s.lora_rank > 0 ? "LoRA adapter" : "parameters");
  }
}

// The preference pairs of JSON-lines files: {"prompt_ids": [...], "chosen_ids": [...],
// "rejected_ids": [...]} per line; a bad line is an error naming the file and line.
std::vector<train::PreferencePair> load_pairs(const std::vector<std::string>& files, std::int64_t vocab_size) {
  std::vector<train::PreferencePair> pairs;
  for (const std::string& file : files) {
    std::ifstream in(file);
    if (!in) throw nnx::InvalidArgument(file + ": no such file");
    std::string line;
    for (std::int64_t n = 1; std::getline(in, line); ++n) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const std::string where = file + ":" + std::to_string(n);
      try {
        const nlohmann::json j = nnx::io::parse_json_strict(line);
        const auto ids = [&](const char* key) {
          if (!j.is_object() || !j.contains(key) || !j[key].is_array() || j[key].empty())
            throw nnx::InvalidArgument(std::string("expected a non-empty array \"") + key + "\"");
          std::vector<std::int32_t> out;
          for (const auto& v : j[key]) {
            if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= vocab_size)
              throw nnx::InvalidArgument(std::string("\"") + key + "\": " + v.dump() +
                                         " is not a token id in [0, " + std::to_string(vocab_size) + ")");
            out.push_back(v.get<std::int32_t>());
          }
          return out;
        };
        pairs.push_back({ids("prompt_ids"), ids("chosen_ids"), ids("rejected_ids")});
      } catch (const nnx::InvalidArgument& e) {
        throw nnx::InvalidArgument(where + ": " + e.what());
      }
    }
  }
  if (pairs.empty()) throw nnx::InvalidArgument("the DPO data holds no preference pairs");
  return pairs;
}

// DPO: the policy (--model) against the frozen --reference on --batch pairs a step, drawn by
// (seed, step).
template <class Model, class Config>
void run_dpo(const Args& args, const nlohmann::json& model_config, const Settings& s, const std::string& resume) {
  const Config cfg = Config::from_json(model_config);
  const std::vector<train::PreferencePair> pairs = load_pairs(s.data, cfg.vocab_size);
  nnx::Rngs rngs{s.seed};
  Model policy(cfg, nnx::Mode::train, rngs), reference(cfg, nnx::Mode::train, rngs);
  if (!args.model.empty()) load_params(policy, args.model);
  load_params(reference, s.reference);
  train::DpoState<Model> state{
      train::TrainState<Model>(nnx::to_layout(std::move(policy), s.layout), optimizer_config(s, args.steps)),
      nnx::to_layout(std::move(reference), s.layout)};
  if (!resume.empty()) restore_state(state.policy, resume);
  std::printf("train (DPO, beta %g): %s policy, reference %s; %zu preference pairs; %d threads\n", s.dpo_beta,
              model_config.at("model_type").get<std::string>().c_str(), s.reference.c_str(), pairs.size(),
              nnx::num_threads());
  std::ofstream log;
  if (!args.log.empty()) {
    const bool append = !resume.empty() && fs::exists(args.log);
    log.open(args.log, append ? std::ios::app : std::ios::trunc);
    if (!log) throw nnx::InvalidArgument(args.log + ": cannot write");
    if (!append) log << "step,loss,accuracy,reward_margin,lr,grad_norm\n";
  }
  for (std::int64_t step = state.policy.steps_done(); step < args.steps; ++step) {
    std::mt19937_64 gen(s.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(step));
    std::vector<train::PreferencePair> chosen;
    for (std::int64_t i = 0; i < s.batch; ++i) chosen.push_back(pairs[gen() % pairs.size()]);
    auto [next, m] = train::dpo_step(std::move(state), train::preference_batch(chosen, cfg.vocab_size),
                                     {.beta = s.dpo_beta, .qk_clip = s.qk_clip});
    state = std::move(next);
    if (!std::isfinite(m.loss))
      throw nnx::NumericalError("the DPO loss is " + std::to_string(m.loss) + " at step " + std::to_string(m.step));
    const double margin = m.chosen_reward - m.rejected_reward;
    if (m.step % args.log_every == 0 || m.step == args.steps) {
      std::printf("step %6lld/%lld  loss %.4f  accuracy %.2f  reward margin %.4f  lr %.2e\n", (long long)m.step,
                  (long long)args.steps, m.loss, m.accuracy, margin, m.lr);
      std::fflush(stdout);
    }
    if (log) {
      log << m.step << ',' << m.loss << ',' << m.accuracy << ',' << margin << ',' << m.lr << ',' << m.grad_norm << '\n';
      log.flush();
    }
    if (!args.out.empty() && args.save_every > 0 && m.step % args.save_every == 0 && m.step != args.steps)
      save(args.out, state.policy, model_config, s);
  }
  if (!args.out.empty()) {
    save(args.out, state.policy, model_config, s);
    std::printf("saved %s/state (train state) and %s/model (parameters)\n", args.out.c_str(), args.out.c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args args = parse_args(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    if (args.threads > 0) nnx::set_num_threads(args.threads);
    if (!args.dump_grads.empty()) {
      const nlohmann::json config = model_config_of(args.model);
      nnx::with_model_type(config, args.model, [&]<class Model, class Config>() {
        if (args.settings.dpo_beta > 0)
          dump_dpo_grads<Model, Config>(args, config);
        else
          dump_grads<Model, Config>(args, config);
      });
      return 0;
    }
    nlohmann::json model_config;
    Settings settings = args.settings;
    if (!args.resume.empty()) {
      const fs::path state_dir = fs::path(args.resume) / "state";
      if (!fs::exists(state_dir)) throw nnx::InvalidArgument(state_dir.string() + ": no such path");
      const nlohmann::json saved = nnx::io::checkpoint_config(state_dir);
      if (!saved.is_object() || !saved.contains("model") || !saved.contains("run"))
        throw nnx::CheckpointError(state_dir.string() + ": not a train state written by this program");
      model_config = saved.at("model");
      settings = Settings::from_json(saved.at("run"), state_dir.string());
      for (const std::string& flag : args.given)
        if (flag != "--resume" && flag != "--steps" && flag != "--out" && flag != "--log" && flag != "--threads" &&
            flag != "--log-every" && flag != "--save-every")
          throw UsageError(flag + " cannot be changed when resuming (the run continues with its saved settings)");
    } else if (!args.config.empty()) {
      model_config = nnx::io::detail::read_json_file(args.config);
    } else {
      model_config = model_config_of(args.model);
    }
    const std::string source = !args.config.empty() ? args.config : !args.model.empty() ? args.model : args.resume;
    nnx::with_model_type(model_config, source, [&]<class Model, class Config>() {
      const nlohmann::json normalized = Config::from_json(model_config).to_json();
      if (settings.dpo_beta > 0)
        run_dpo<Model, Config>(args, normalized, settings, args.resume);
      else
        run<Model, Config>(args, normalized, settings, args.resume);
    });
    return 0;
  } catch (const std::exception& e) {
    return cli::report_error("train", e);
  }
}
