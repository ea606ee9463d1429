// generate — decoding from a Hugging Face directory or a native nnxcpp checkpoint.
//
//   generate --model PATH --prompt-ids 1,2,3 --max-new-tokens 16 [--dump-logits FILE] [--verify]
//            [--weight-dtype auto|f32|bf16|f16] [--lora PATH]
//   generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
//            [--top-p P] [--seed S] [--stop STRING]... [--tokenizer PATH] [--threads N]
//            [--verify] [--weight-dtype auto|f32|bf16|f16] [--lora PATH]
//   generate --help
//
// With --prompt-ids: greedy decoding; prints the generated token ids, space-separated, on one
// line of stdout (and nothing else there). --dump-logits writes the prompt's full-sequence
// logits as a safetensors file with one tensor "logits" f32 [prompt length, vocab].
//
// With --prompt: the text is encoded with the model's tokenizer (tokenizer.json, or vocab.json
// + merges.txt, in the model directory or at --tokenizer) and the continuation's text is
// streamed to stdout as it is produced (never half a UTF-8 character), then a newline. It
// runs through the library's Scheduler, so it gives the tokens examples/serve_batch and
// examples/server give for the same request. Sampling: --temperature (default 0: greedy),
// --top-k (0: no cut), --top-p (1: no cut), --seed (default 0; token i is drawn with
// fold_in(key_from_seed(seed), i)). Generation ends at the tokenizer's end-of-text token, at
// --max-new-tokens (default: the context's end), or at a --stop string (repeatable), which is
// not printed.
//
// --weight-dtype: the dtype of the weights not quantized. auto (the default) serves them as
// the checkpoint stores them (a bf16 model is read in place and computed in bf16 weights, f32
// activations); f32, bf16 or f16 converts them once at load.
//
// --lora PATH serves a LoRA adapter (train --lora-rank's DIR/model) unmerged on top of the
// --model weights it was trained on (in whatever dtype they are served).
//
// --verify recomputes a native checkpoint's per-file checksums before loading (exit 2 on a
// mismatch, naming the file, or when there is nothing to verify).
//
// Any error (missing path, bad config, unknown architecture, a token id out of range, a prompt
// that does not fit the context, logits that turn NaN because the weights or the config make
// the model diverge) is one line on stderr and exit code 2.
//
// PATH is a directory holding config.json + model.safetensors (or sharded files with
// model.safetensors.index.json) for gpt2 or llama, or a checkpoint written by
// nnx::io::save_checkpoint with the model's config (including "model_type"), such as an int8
// serve checkpoint written by examples/quantize (its config's "quantization" entry says how).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/engine/engine.hpp>
#include <nnx/engine/scheduler.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/quant.hpp>
#include <nnx/text.hpp>

#include "cli.hpp"

namespace {

using cli::UsageError;

constexpr const char* kUsage =
    "usage: generate --model PATH --prompt-ids 1,2,3 --max-new-tokens N [--dump-logits FILE] [--verify]\n"
    "                [--weight-dtype auto|f32|bf16|f16] [--lora PATH]\n"
    "       generate --model PATH --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]\n"
    "                [--top-p P] [--seed S] [--stop STRING]... [--tokenizer PATH] [--threads N]\n"
    "Decoding from a Hugging Face directory or a native nnxcpp checkpoint (gpt2, llama).\n"
    "--prompt-ids: greedy; prints the generated token ids on one line. --prompt: streams the\n"
    "continuation's text. Errors are one line on stderr, exit code 2.\n";

struct Args {
  std::filesystem::path model;
  std::vector<std::int64_t> prompt;
  std::int64_t max_new_tokens = -1;
  std::string dump_logits;
  nnx::WeightDType weight_dtype = nnx::WeightDType::as_stored;
  std::string lora;  // --lora: an adapter checkpoint
  // --prompt (text) mode
  std::optional<std::string> text;
  std::filesystem::path tokenizer;
  nnx::SamplingParams sampling;
  std::uint64_t seed = 0;
  std::vector<std::string> stop;
  int threads = 0;
  bool help = false;
  bool verify = false;
};

// "1,2,3": every item between commas must be an id ("1,2," and "1,,2" are errors).
std::vector<std::int64_t> parse_ids(const std::string& text) {
  std::vector<std::int64_t> ids;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, comma - begin);
    begin = comma + 1;
    std::size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0) throw UsageError("--prompt-ids: '" + item + "' is not a token id");
    ids.push_back(v);
  }
  if (ids.empty()) throw UsageError("--prompt-ids: empty prompt");
  return ids;
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (flag == "--verify") {
      a.verify = true;
      continue;
    }
    if (i + 1 >= argc) throw UsageError(flag + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--model") {
      a.model = value;
    } else if (flag == "--prompt-ids") {
      a.prompt = parse_ids(value);
    } else if (flag == "--max-new-tokens") {
      std::size_t used = 0;
      try {
        a.max_new_tokens = std::stoll(value, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != value.size() || a.max_new_tokens < 0)
        throw UsageError("--max-new-tokens: '" + value + "' is not a non-negative integer");
    } else if (flag == "--dump-logits") {
      a.dump_logits = value;
    } else if (flag == "--prompt") {
      a.text = value;
    } else if (flag == "--tokenizer") {
      a.tokenizer = value;
    } else if (flag == "--temperature") {
      a.sampling.temperature = cli::parse_double(flag, value, 0.0);
    } else if (flag == "--top-k") {
      a.sampling.top_k = cli::parse_int(flag, value, 0);
    } else if (flag == "--top-p") {
      a.sampling.top_p = cli::parse_double(flag, value, 0.0);
      if (!(a.sampling.top_p > 0.0 && a.sampling.top_p <= 1.0))
        throw UsageError("--top-p: '" + value + "' is not in (0, 1]");
    } else if (flag == "--seed") {
      a.seed = static_cast<std::uint64_t>(cli::parse_int(flag, value, 0));
    } else if (flag == "--stop") {
      if (value.empty()) throw UsageError("--stop: empty string");
      a.stop.push_back(value);
    } else if (flag == "--threads") {
      a.threads = cli::parse_threads(flag, value);
    } else if (flag == "--lora") {
      a.lora = value;
    } else if (flag == "--weight-dtype") {
      try {
        a.weight_dtype = nnx::parse_weight_dtype(value);
      } catch (const nnx::InvalidArgument& e) {
        throw UsageError(flag + ": " + e.what());
      }
    } else {
      throw UsageError("unknown option " + flag);
    }
  }
  if (a.model.empty()) throw UsageError("--model is required");
  if (a.text) {
    if (!a.prompt.empty()) throw UsageError("--prompt and --prompt-ids exclude each other");
    if (!a.dump_logits.empty()) throw UsageError("--dump-logits goes with --prompt-ids");
    if (a.max_new_tokens == 0) throw UsageError("--max-new-tokens: 0 tokens with --prompt");
    if (a.tokenizer.empty()) a.tokenizer = a.model;
    return a;
  }
  if (a.prompt.empty()) throw UsageError("--prompt-ids (or --prompt) is required");
  if (a.max_new_tokens < 0) throw UsageError("--max-new-tokens is required");
  if (!a.tokenizer.empty() || !a.stop.empty()) throw UsageError("--tokenizer and --stop go with --prompt");
  return a;
}

// The first index of the largest logit. Throws NumericalError for a row with a NaN, whose
// argmax would otherwise be an arbitrary token (index 0 for a row of NaNs).
std::int64_t argmax(const float* row, std::int64_t n, std::int64_t position) {
  std::int64_t best = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    if (std::isnan(row[i]))
      throw nnx::NumericalError("the logits at position " + std::to_string(position) + " are NaN (token " +
                                std::to_string(i) +
                                "): the weights or the config make the model diverge on this prompt");
    if (row[i] > row[best]) best = i;
  }
  return best;
}

// Builds Model from its config without allocating weights (int8 where the checkpoint is
// quantized, 16-bit where it stores 16-bit weights, its layers stacked where it stores them
// so), then loads the weights (a Hugging Face
// file straight into `weight_dtype`, a native checkpoint as stored and then converted).
template <class Model, class Config>
Model load(const std::filesystem::path& path, const Config& cfg, const nnx::QuantConfig& quant, bool hugging_face,
           std::int64_t cache_length, nnx::WeightDType weight_dtype) {
  nnx::Rngs rngs{0};
  // Served in the layout stored: a checkpoint with stacked layers (ckpt convert) runs stacked.
  const nnx::Layout layout = nnx::stored_layout<Model>(path);
  Model abstract = nnx::eval_shape([&] {
    return Model(cfg, nnx::Mode::autoregressive, rngs,
                 {.cache_batch = 1, .cache_length = cache_length, .layout = layout});
  });
  const nnx::DType stored = hugging_face ? nnx::io::HfCheckpoint::open(path).stored_weight_dtype()
                                         : nnx::io::checkpoint_weight_dtype(path);
  const nnx::DType served = weight_dtype == nnx::WeightDType::as_stored ? stored : nnx::to_dtype(weight_dtype);
  nnx::cast_weights(abstract, hugging_face ? served : stored);
  nnx::quantize(abstract, quant, nnx::QuantMode::serve);
  auto [graphdef, params, cache] = nnx::split(abstract, nnx::of<nnx::Param>, nnx::everything);
  nnx::State weights = hugging_face ? nnx::io::HfCheckpoint::open(path).read_params(params)
                                    : nnx::io::restore_checkpoint(path, params);
  nnx::State zeros = cache.map([](const nnx::Tensor& t) { return nnx::Tensor::zeros(t.shape(), t.dtype()); });
  Model model = nnx::merge(graphdef, std::move(weights), std::move(zeros));
  nnx::cast_weights(model, served);
  return model;
}

template <class Model, class Config>
std::vector<std::int64_t> run(const Args& args, const Config& cfg, const nnx::QuantConfig& quant, bool hugging_face) {
  const std::int64_t vocab = cfg.vocab_size;
  const std::int64_t context = cfg.context_length();
  const auto T = static_cast<std::int64_t>(args.prompt.size());
  for (std::int64_t id : args.prompt)
    if (id >= vocab)
      throw nnx::InvalidArgument("token id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                 std::to_string(vocab) + ")");
  if (args.max_new_tokens > context - T)  // not T + max_new_tokens: that can overflow
    throw nnx::InvalidArgument("prompt of " + std::to_string(T) + " tokens plus " +
                               std::to_string(args.max_new_tokens) + " new tokens exceeds the context length " +
                               std::to_string(context));
  Model model = load<Model>(args.model, cfg, quant, hugging_face, T + args.max_new_tokens, args.weight_dtype);
  if (!args.lora.empty()) {
    nnx::Rngs rngs{0};
    nnx::load_lora_adapter(model, args.lora, rngs);
  }

  std::vector<std::int32_t> ids(args.prompt.begin(), args.prompt.end());
  auto tokens = nnx::Tensor::from_vector(ids, {1, T});
  auto out = nnx::prefill(model, tokens, {T});
  if (!args.dump_logits.empty()) {
    std::vector<std::pair<std::string, nnx::Tensor>> dump{{"logits", out.logits.select(0)}};
    nnx::io::save_safetensors(args.dump_logits, dump);
  }
  std::vector<std::int64_t> generated;
  nnx::Tensor last = out.last_logits;
  for (std::int64_t step = 0; step < args.max_new_tokens; ++step) {
    const std::int64_t next = argmax(last.data<float>(), vocab, T - 1 + step);
    generated.push_back(next);
    if (step + 1 == args.max_new_tokens) break;
    auto next_token = nnx::Tensor::from_vector(std::vector<std::int32_t>{static_cast<std::int32_t>(next)}, {1});
    last = nnx::decode_step(model, next_token, {T + step});
  }
  return generated;
}

// --prompt: one request through the Scheduler, its text streamed as it comes.
template <class Model, class Config>
void run_text(const Args& args, const nlohmann::json& config) {
  auto tokenizer = std::make_shared<const nnx::text::Tokenizer>(nnx::text::Tokenizer::load(args.tokenizer));
  nnx::EngineOptions options;
  options.slots = 1;
  options.quant = nnx::QuantConfig::of_model_config(config);
  options.weight_dtype = args.weight_dtype;
  options.lora_adapter = args.lora;
  const nnx::Engine<Model> engine(Config::from_json(config), options);
  nnx::Request request;
  request.prompt_text = *args.text;
  request.sampling = args.sampling;
  request.seed = args.seed;
  request.stop_strings = args.stop;
  if (args.max_new_tokens > 0) request.stop.max_new_tokens = args.max_new_tokens;
  if (auto eos = tokenizer->eos_id()) request.stop.stop_ids.push_back(*eos);
  nnx::Scheduler<Model> scheduler(engine, engine.load_params(args.model), tokenizer);
  scheduler.submit("generate", std::move(request), {.on_token = [](const nnx::TokenEvent& e) {
                     std::cout << e.text << std::flush;
                   }});
  while (!scheduler.idle())
    for (const nnx::Completion& c : scheduler.step())
      if (c.finish == nnx::FinishReason::nan) throw nnx::NumericalError(c.error);
  std::cout << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    if (!std::filesystem::exists(args.model)) throw nnx::InvalidArgument(args.model.string() + ": no such path");
    if (args.verify) (void)nnx::verify_model_files(args.model);
    const bool hugging_face = std::filesystem::exists(args.model / "config.json");
    const nlohmann::json config = hugging_face ? nnx::io::HfCheckpoint::open(args.model).config()
                                               : nnx::io::checkpoint_config(args.model);
    const nnx::QuantConfig quant = nnx::QuantConfig::of_model_config(config);
    if (args.threads > 0) nnx::set_num_threads(args.threads);
    if (args.text) {
      nnx::with_model_type(config, args.model.string(),
                           [&]<class Model, class Config>() { run_text<Model, Config>(args, config); });
      return 0;
    }
    const std::vector<std::int64_t> generated =
        nnx::with_model_type(config, args.model.string(), [&]<class Model, class Config>() {
          const Config cfg = Config::from_json(config);
          return run<Model>(args, cfg, quant, hugging_face);
        });
    std::string line;
    for (std::size_t i = 0; i < generated.size(); ++i) {
      if (i) line += ' ';
      line += std::to_string(generated[i]);
    }
    std::cout << line << "\n";
    return 0;
  } catch (const std::exception& e) {
    return cli::report_error("generate", e);
  }
}
