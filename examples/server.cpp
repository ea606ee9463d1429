// server — an OpenAI-compatible HTTP server (nnx/server/openai_server.hpp) for a Hugging Face
// directory or a native nnxcpp checkpoint.
//
//   server --model PATH [--slots B] [--kv-dtype f32|bf16|int8] [--threads N]
//          [--host ADDR] [--port P] [--api-key KEY] [--chat-template chatml|llama-2|llama-3]
//          [--tokenizer PATH] [--model-name NAME] [--max-queue N] [--max-body-bytes N]
//          [--max-target-length N] [--max-prefill-length N] [--weight-dtype auto|f32|bf16|f16]
//          [--lora PATH] [--layout auto|stacked|per-layer]
//
//   --model PATH            gpt2 or llama: config.json + safetensors, or a native checkpoint
//                           (an int8 serve checkpoint is served in int8)
//   --slots B               requests decoded together (default 4)
//   --lora PATH             a LoRA adapter (train --lora-rank's DIR/model) served unmerged
//   --kv-dtype T            the KV cache's dtype (default f32)
//   --layout L              decoder layers stacked or per-layer (default auto: as stored)
//   --threads N             threads for the kernels (default: NNX_NUM_THREADS, else 1)
//   --host ADDR, --port P   where to listen (default 127.0.0.1:8080; port 0: any free port)
//   --api-key KEY           require "Authorization: Bearer KEY" on /v1/* (default: none)
//   --chat-template T       how /v1/chat/completions renders messages (default: the one the
//                           model's tokenizer_config.json names, if it is one of these)
//   --tokenizer PATH        tokenizer.json, or a directory with it or vocab.json +
//                           merges.txt (default: the model's directory)
//   --model-name NAME       the model's name in /v1/models and responses (default: the last
//                           component of --model)
//   --max-queue N           requests waiting for a slot at most; more get HTTP 429 (default 64)
//   --max-body-bytes N      larger request bodies get HTTP 413 (default 1 MiB)
//
// Prints "listening on http://HOST:PORT" on stdout once it accepts connections (with the
// weights, KV cache and tokenizer on stderr before), and serves until SIGINT or SIGTERM.
// Usage errors and a model or tokenizer that cannot be loaded: one line on stderr, exit 2.
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include <nnx/core.hpp>
#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/ops/threads.hpp>
#include <nnx/quant/config.hpp>
#include <nnx/server/openai_server.hpp>
#include <nnx/text.hpp>

#include "cli.hpp"

namespace {

using cli::parse_int;
using cli::UsageError;

constexpr const char* kUsage =
    "usage: server --model PATH [--slots B] [--kv-dtype f32|bf16|int8] [--threads N]\n"
    "              [--host ADDR] [--port P] [--api-key KEY] [--chat-template chatml|llama-2|llama-3]\n"
    "              [--tokenizer PATH] [--model-name NAME] [--max-queue N] [--max-body-bytes N]\n"
    "              [--max-target-length N] [--max-prefill-length N] [--weight-dtype auto|f32|bf16|f16]\n"
    "              [--lora PATH] [--layout auto|stacked|per-layer]\n"
    "An OpenAI-compatible HTTP server: POST /v1/completions, /v1/chat/completions (stream: true\n"
    "for server-sent events), GET /v1/models, /health, /metrics.\n";

struct Args {
  std::filesystem::path model, tokenizer;
  std::int64_t slots = 4, max_target_length = 0, max_prefill_length = 512, max_queue = 64;
  std::int64_t max_body_bytes = 1 << 20;
  int threads = 0;
  nnx::DType kv_dtype = nnx::DType::f32;
  nnx::WeightDType weight_dtype = nnx::WeightDType::as_stored;
  std::string lora;  // --lora: an adapter checkpoint served unmerged
  std::optional<nnx::Layout> layout;  // --layout; std::nullopt (auto): as the checkpoint stores it
  std::optional<nnx::ChatTemplate> chat_template;
  nnx::OpenAIServerOptions server;
  bool help = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (i + 1 >= argc) throw UsageError(flag + ": missing value (or unknown option; see --help)");
    const std::string value = argv[++i];
    try {
      if (flag == "--model") a.model = value;
      else if (flag == "--tokenizer") a.tokenizer = value;
      else if (flag == "--slots") a.slots = parse_int(flag, value, 1);
      else if (flag == "--kv-dtype") a.kv_dtype = nnx::parse_kv_cache_dtype(value);
      else if (flag == "--weight-dtype") a.weight_dtype = nnx::parse_weight_dtype(value);
      else if (flag == "--lora") a.lora = value;
      else if (flag == "--layout") a.layout = cli::parse_layout(flag, value);
      else if (flag == "--max-target-length") a.max_target_length = parse_int(flag, value, 2);
      else if (flag == "--max-prefill-length") a.max_prefill_length = parse_int(flag, value, 1);
      else if (flag == "--max-queue") a.max_queue = parse_int(flag, value, 1);
      else if (flag == "--max-body-bytes") a.max_body_bytes = parse_int(flag, value, 1);
      else if (flag == "--host") a.server.host = value;
      else if (flag == "--port") a.server.port = static_cast<int>(parse_int(flag, value, 0));
      else if (flag == "--api-key") a.server.api_key = value;
      else if (flag == "--model-name") a.server.model_name = value;
      else if (flag == "--chat-template") a.chat_template = nnx::chat_template_from_name(value);
      else if (flag == "--threads") a.threads = cli::parse_threads(flag, value);
      else throw UsageError("unknown option " + flag + " (see --help)");
    } catch (const nnx::InvalidArgument& e) {
      throw UsageError(flag + ": " + e.what());
    }
  }
  if (a.model.empty()) throw UsageError("--model is required");
  if (a.server.port > 65535) throw UsageError("--port: " + std::to_string(a.server.port) + " is not a port");
  if (a.server.model_name == nnx::OpenAIServerOptions{}.model_name) {
    const std::filesystem::path name = std::filesystem::path(a.model).lexically_normal();
    a.server.model_name = (name.has_filename() ? name.filename() : name.parent_path().filename()).string();
  }
  if (a.tokenizer.empty()) a.tokenizer = a.model;
  a.server.max_body_bytes = static_cast<std::size_t>(a.max_body_bytes);
  return a;
}

// The server, for SIGINT/SIGTERM to stop (httplib's stop is safe from another thread; the
// signal handler only sets a flag a watcher thread polls).
volatile std::sig_atomic_t g_stop = 0;

template <class Model, class Config>
int run(Args& args, const nlohmann::json& config) {
  nnx::EngineOptions options;
  options.max_prefill_length = args.max_prefill_length;
  options.max_target_length = args.max_target_length;
  options.slots = args.slots;
  options.quant = nnx::QuantConfig::of_model_config(config);
  options.kv_dtype = args.kv_dtype;
  options.weight_dtype = args.weight_dtype;
  options.lora_adapter = args.lora;
  options.layout = args.layout.value_or(nnx::stored_layout<Model>(args.model));
  const nnx::Engine<Model> engine(Config::from_json(config), options);
  auto tokenizer = std::make_shared<const nnx::text::Tokenizer>(nnx::text::Tokenizer::load(args.tokenizer));
  if (tokenizer->vocab_size() > engine.vocab_size())
    throw nnx::InvalidArgument(args.tokenizer.string() + ": the tokenizer has " +
                               std::to_string(tokenizer->vocab_size()) + " tokens, the model only " +
                               std::to_string(engine.vocab_size()));
  args.server.chat_template =
      args.chat_template ? args.chat_template
                         : nnx::chat_template_of(std::filesystem::is_directory(args.tokenizer) ? args.tokenizer
                                                                                               : args.model);
  nnx::State params = engine.load_params(args.model);
  std::cerr << "server: " << args.server.model_name << ": weights " << params.nbytes() / 1e6 << " MB, KV cache "
            << engine.kv_cache_bytes() / 1e6 << " MB (" << nnx::dtype_name(args.kv_dtype) << ", " << args.slots
            << " slots x " << engine.max_target_length() << " positions), tokenizer " << tokenizer->vocab_size()
            << " tokens, chat template "
            << (args.server.chat_template ? nnx::chat_template_name(*args.server.chat_template) : "none") << "\n";

  nnx::OpenAIServer<Model> server(nnx::Scheduler<Model>(engine, std::move(params), tokenizer),
                                  {.max_waiting = static_cast<std::size_t>(args.max_queue)}, args.server);
  const int port = server.bind();
  std::thread watcher([&] {
    while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    server.stop();
  });
  std::cout << "listening on http://" << args.server.host << ":" << port << std::endl;
  server.serve();
  g_stop = 1;
  watcher.join();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Args args = parse_args(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    std::signal(SIGINT, [](int) { g_stop = 1; });
    std::signal(SIGTERM, [](int) { g_stop = 1; });
    if (args.threads > 0) nnx::set_num_threads(args.threads);
    const nlohmann::json config = nnx::read_model_config(args.model);
    return nnx::with_model_type(config, args.model.string(),
                                [&]<class Model, class Config>() { return run<Model, Config>(args, config); });
  } catch (const std::exception& e) {
    return cli::report_error("server", e);
  }
}
