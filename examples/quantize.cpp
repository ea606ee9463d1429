// quantize — turns a full-precision checkpoint into an int8 serve checkpoint.
//
//   quantize --in PATH --out PATH [--scheme weight-only|w8a8] [--include-head] [--force]
//
// --in is a Hugging Face directory (GPT-2 or Llama) or a native nnxcpp checkpoint with its
// config; --out receives a native checkpoint whose Linear kernels (and, with --include-head,
// the output head) are frozen QTensors — qvalue i8 [out, in], scale f32 [out] — under the
// kind QuantizedParam, every other parameter unchanged, and whose config records the
// quantization. examples/generate and examples/serve_batch load it directly into int8.
// --scheme defaults to w8a8 (int8 weights and activations; MaxText's "int8"); weight-only
// keeps activations in f32. Prints one summary line on stdout. Any error is one line on
// stderr and exit code 2; an existing checkpoint at --out is replaced atomically, and only
// once the new one is complete.
//
// quantize never destroys a model it was not asked to: without --force it refuses (exit 2,
// nothing written) an --out that is the --in directory (the full-precision weights would be
// replaced by int8 ones) or that holds a Hugging Face model or anything else that is not an
// nnx checkpoint (a config.json, or a model.safetensors or index without "nnx.format"):
// writing a native checkpoint there would either lose those weights or leave a config.json
// that makes every loader read the native file as Hugging Face weights. Both checks run
// before the model is read. With --force, the foreign weight files and config.json at --out
// are deleted and the directory then holds only the native checkpoint (other files, such as
// a tokenizer, stay); a crash during a forced replace leaves no loadable model, never a mix.
#include <filesystem>
#include <iostream>
#include <string>

#include <nnx/engine.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/models.hpp>
#include <nnx/quant.hpp>

#include "cli.hpp"

namespace {

struct Args {
  std::filesystem::path in, out;
  nnx::QuantConfig quant{.scheme = nnx::QuantScheme::w8a8};
  bool force = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--include-head" || flag == "--force") {
      (flag == "--force" ? a.force : a.quant.include_head) = true;
      continue;
    }
    if (flag != "--in" && flag != "--out" && flag != "--scheme") throw nnx::InvalidArgument("unknown option " + flag);
    if (i + 1 >= argc) throw nnx::InvalidArgument(flag + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--in") a.in = value;
    if (flag == "--out") a.out = value;
    if (flag == "--scheme") {
      if (value != "weight-only" && value != "w8a8")
        throw nnx::InvalidArgument("--scheme: '" + value + "' is not weight-only or w8a8");
      a.quant.scheme = nnx::parse_quant_scheme(value);
    }
  }
  if (a.in.empty()) throw nnx::InvalidArgument("--in is required");
  if (a.out.empty()) throw nnx::InvalidArgument("--out is required");
  return a;
}

// True when --out names --in, through any spelling or link.
bool same_place(const std::filesystem::path& in, const std::filesystem::path& out) {
  std::error_code ec;
  if (std::filesystem::equivalent(in, out, ec)) return true;
  // equivalent() fails when --out does not exist yet; then only the spellings can match.
  std::error_code ec_in, ec_out;
  const auto a = std::filesystem::weakly_canonical(in, ec_in), b = std::filesystem::weakly_canonical(out, ec_out);
  return !ec_in && !ec_out && a == b;
}

// Refuses a destination the save would wreck, before the (slow) read and quantization.
void check_destination(const Args& args) {
  if (args.force) return;
  if (same_place(args.in, args.out))
    throw nnx::InvalidArgument("--out " + args.out.string() + " is the --in directory: its full-precision weights " +
                               "would be replaced by int8 ones (choose another --out, or --force to replace them)");
  const std::string foreign = nnx::io::foreign_checkpoint_content(args.out);
  if (!foreign.empty())
    throw nnx::CheckpointError("--out " + args.out.string() + " holds " + foreign +
                               ": writing an int8 checkpoint there would destroy it or leave a directory no loader "
                               "reads correctly (choose another --out, or --force to replace it)");
}

template <class Model, class Config>
void convert(const Args& args, const nlohmann::json& model_config) {
  const Config cfg = Config::from_json(model_config);
  const nnx::Engine<Model> engine(cfg, {.max_prefill_length = 1, .max_target_length = 2, .slots = 1, .quant = args.quant});
  const nnx::State params = engine.load_params(args.in);  // read in full precision, quantized once
  nlohmann::json config = cfg.to_json();
  config["quantization"] = args.quant.to_json();
  nnx::io::CheckpointOptions options;
  options.overwrite_foreign = args.force;  // checked in check_destination unless --force
  nnx::io::save_checkpoint(args.out, params, {}, config, options);
  std::size_t frozen = 0;
  for (const auto& entry : params) frozen += entry.leaf.is_quantized();
  std::cout << "quantize: " << args.in.string() << " -> " << args.out.string() << ": "
            << nnx::quant_scheme_name(args.quant.scheme) << (args.quant.include_head ? " with the head" : "") << ", "
            << frozen << " of " << params.size() << " parameters int8, " << params.nbytes() << " bytes\n";
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    check_destination(args);
    const nlohmann::json config = nnx::read_model_config(args.in);
    if (nnx::QuantConfig::of_model_config(config).enabled())
      throw nnx::InvalidArgument(args.in.string() + " is already quantized");
    const std::string type = config.is_object() ? config.value("model_type", std::string()) : std::string();
    if (type == "gpt2")
      convert<nnx::Gpt2, nnx::Gpt2Config>(args, config);
    else if (type == "llama")
      convert<nnx::Llama, nnx::LlamaConfig>(args, config);
    else
      throw nnx::InvalidArgument(args.in.string() + ": unknown architecture \"" + type + "\" (gpt2, llama)");
    return 0;
  } catch (const std::exception& e) {
    return cli::report_error("quantize", e);
  }
}
