// ckpt — inspect, compare and export checkpoints (native nnx checkpoints and Hugging Face
// model directories). The work is done by nnx/engine/checkpoint_tools.hpp.
//
//   ckpt info PATH
//       The tree: one line per leaf (path, kind, dtype, shape, axes when stored), then the
//       parameter count (and the LoRA adapters' when there are any: an adapter checkpoint holds
//       only those), bytes, quantization, layout (stacked or per-layer) and format (native
//       TrainState / native params-only / native LoRA adapter / hugging face). examples/train
//       --out DIR writes DIR/state (a TrainState) and DIR/model.
//   ckpt compare A B [--rtol R] [--atol A]
//       A per-leaf table: path, dtype, shape, max abs diff, max rel diff, status (equal, differs,
//       missing in A, missing in B, shape mismatch, dtype mismatch). Either side may be a
//       Hugging Face directory: its tensors are mapped to native paths. A stacked checkpoint
//       against a per-layer one is compared per layer. Values are compared in
//       double (bf16/f16 widened exactly); an int8 QTensor is compared as stored (qvalue, then
//       scales), not dequantized. Exit 0 when every leaf is in both, of the same dtype and shape,
//       and |a - b| <= atol + rtol * |b| (defaults rtol 1e-5, atol 1e-8, as numpy.allclose); 1 when not.
//   ckpt export --in TRAINSTATE --out PATH [--dtype bf16|f32] [--hf]
//       The model's parameters only (optimizer moments and step dropped), optionally rounded to
//       bf16 (to nearest even), as a native checkpoint that generate loads (in bf16 it holds the
//       layout generate serves: Linear `weight` [out, in] and embeddings bf16, biases and norms
//       f32), or with --hf as a Hugging Face directory.
//   ckpt convert --in PATH --out PATH --layout stacked|per-layer
//       The native checkpoint --in (params-only or a TrainState: optimizer moments follow their
//       parameters) written with its decoder layers stacked (one leaf per parameter path with a
//       leading "layers" axis: h/attn/qkv/kernel [n_layer, ...]) or per layer (h/<i>/...). The
//       input's layout is detected; kinds, axes, config and every value carry over, so a round
//       trip gives back the same leaves bit for bit (compare --rtol 0 --atol 0 exits 0).
//   ckpt merge-lora --in PATH --lora PATH --out PATH [--hf]
//       The base model --in (a Hugging Face directory or a native params checkpoint) with the
//       LoRA adapter --lora (train --lora-rank's DIR/model) folded into its weights in f32
//       (W += alpha/rank · A·B), as a native checkpoint or with --hf a Hugging Face directory:
//       generate then gives the tokens generate --lora gives (up to rounding).
//
// Bad input (a missing directory, a corrupt file, an unknown flag or subcommand, a bad number):
// one line "ckpt: ..." on stderr and exit code 2.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include <nnx/engine/checkpoint_tools.hpp>
#include <nnx/engine/lora_checkpoint.hpp>

#include "cli.hpp"

namespace {

namespace fs = std::filesystem;
using cli::UsageError;

constexpr const char* usage =
    "usage: ckpt info PATH\n"
    "       ckpt compare A B [--rtol R] [--atol A]\n"
    "       ckpt export --in TRAINSTATE --out PATH [--dtype bf16|f32] [--hf]\n"
    "       ckpt convert --in PATH --out PATH --layout stacked|per-layer\n"
    "       ckpt merge-lora --in PATH --lora PATH --out PATH [--hf]";

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

std::string pad(std::string s, std::size_t w) {
  s.resize(std::max(w, s.size()), ' ');
  return s;
}

std::string format_name(const nnx::CheckpointContents& c) {
  if (c.source == nnx::CheckpointSource::hugging_face)
    return "hugging face (" + c.model_config.value("model_type", std::string("?")) + ")";
  return std::string("native, ") + (c.train_state ? "TrainState" : c.lora_adapter ? "LoRA adapter" : "params-only");
}

// The value after the flag args[i], moving i onto it; a UsageError when the flag ends the line.
const std::string& flag_value(const std::vector<std::string>& args, std::size_t& i) {
  if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
  return args[++i];
}

int info(const std::vector<std::string>& args) {
  if (args.size() != 1) throw UsageError("info takes one PATH");
  const nnx::CheckpointContents c = nnx::read_checkpoint_contents(args[0]);
  std::size_t wp = 4, wk = 4, wd = 5, ws = 5;
  for (const auto& l : c.leaves) {
    wp = std::max(wp, l.path.size());
    wk = std::max(wk, l.kind.size());
    wd = std::max(wd, nnx::detail::leaf_dtype_text(l).size());
    ws = std::max(ws, nnx::detail::leaf_shape_text(l).size());
  }
  std::printf("%s  %s  %s  %s  axes\n", pad("path", wp).c_str(), pad("kind", wk).c_str(), pad("dtype", wd).c_str(),
              pad("shape", ws).c_str());
  std::size_t quantized = 0;
  for (const auto& l : c.leaves) {
    quantized += l.quantized();
    std::printf("%s  %s  %s  %s  %s\n", pad(l.path, wp).c_str(), pad(l.kind, wk).c_str(),
                pad(nnx::detail::leaf_dtype_text(l), wd).c_str(), pad(nnx::detail::leaf_shape_text(l), ws).c_str(),
                l.axes.empty() ? "-" : join(l.axes).c_str());
  }
  std::printf("leaves: %zu\n", c.leaves.size());
  std::printf("parameters: %lld\n", static_cast<long long>(c.parameter_count()));
  if (const std::int64_t lora = c.lora_parameter_count())
    std::printf("lora parameters: %lld\n", static_cast<long long>(lora));
  std::printf("bytes: %zu\n", c.nbytes());
  if (quantized)
    std::printf("quantization: int8 (%zu QTensor leaves)\n", quantized);
  else
    std::printf("quantization: none\n");
  const std::optional<nnx::Layout> layout = nnx::checkpoint_contents_layout(c);
  std::printf("layout: %s\n", layout ? nnx::layout_name(*layout) : "-");
  std::printf("format: %s\n", format_name(c).c_str());
  return 0;
}

int compare(const std::vector<std::string>& args) {
  std::vector<std::string> paths;
  nnx::CompareOptions options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--rtol" || a == "--atol") {
      (a == "--rtol" ? options.rtol : options.atol) = cli::parse_double(a, flag_value(args, i), 0.0);
    } else if (a.starts_with("--")) {
      throw UsageError("compare: unknown flag " + a + " (expected --rtol or --atol)");
    } else {
      paths.push_back(a);
    }
  }
  if (paths.size() != 2) throw UsageError("compare takes two paths, A and B, found " + std::to_string(paths.size()));
  const nnx::CheckpointContents ca = nnx::read_checkpoint_contents(paths[0]);
  const nnx::CheckpointContents cb = nnx::read_checkpoint_contents(paths[1]);
  const std::vector<nnx::CompareRow> rows = nnx::compare_checkpoints(ca, cb, options);
  std::size_t wp = 4, wd = 5, ws = 5;
  for (const auto& r : rows) {
    wp = std::max(wp, r.path.size());
    wd = std::max(wd, r.dtype.size());
    ws = std::max(ws, r.shape.size());
  }
  std::printf("%s  %s  %s  %-12s  %-12s  status\n", pad("path", wp).c_str(), pad("dtype", wd).c_str(),
              pad("shape", ws).c_str(), "max_abs_diff", "max_rel_diff");
  std::size_t bad = 0;
  for (const auto& r : rows) {
    bad += r.status != nnx::CompareStatus::equal;
    std::printf("%s  %s  %s  %-12.6g  %-12.6g  %s\n", pad(r.path, wp).c_str(), pad(r.dtype, wd).c_str(),
                pad(r.shape, ws).c_str(), r.max_abs_diff, r.max_rel_diff, nnx::compare_status_name(r.status));
  }
  std::printf("%zu leaves, %zu equal, %zu not (rtol %g, atol %g)\n", rows.size(), rows.size() - bad, bad,
              options.rtol, options.atol);
  return bad == 0 ? 0 : 1;
}

int export_cmd(const std::vector<std::string>& args) {
  std::string in, out;
  nnx::ExportOptions options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--in") {
      in = flag_value(args, i);
    } else if (a == "--out") {
      out = flag_value(args, i);
    } else if (a == "--dtype") {
      const std::string& d = flag_value(args, i);
      if (d == "bf16")
        options.dtype = nnx::DType::bf16;
      else if (d == "f32")
        options.dtype = nnx::DType::f32;
      else
        throw UsageError("--dtype: '" + d + "', expected bf16 or f32");
    } else if (a == "--hf") {
      options.hugging_face = true;
    } else {
      throw UsageError("export: unknown argument " + a + " (expected --in, --out, --dtype, --hf)");
    }
  }
  if (in.empty() || out.empty()) throw UsageError("export needs --in TRAINSTATE and --out PATH");
  const nnx::State params = nnx::export_params(in, out, options);
  std::printf("exported %zu parameter tensors (%lld parameters, %s) from %s to %s (%s)\n", params.size(),
              static_cast<long long>(params.numel()), nnx::dtype_name(options.dtype).data(), in.c_str(), out.c_str(),
              options.hugging_face ? "hugging face" : "native");
  return 0;
}

int convert_cmd(const std::vector<std::string>& args) {
  std::string in, out, layout;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--in") in = flag_value(args, i);
    else if (a == "--out") out = flag_value(args, i);
    else if (a == "--layout") layout = flag_value(args, i);
    else throw UsageError("convert: unknown argument " + a + " (expected --in, --out, --layout)");
  }
  if (in.empty() || out.empty() || layout.empty())
    throw UsageError("convert needs --in PATH, --out PATH and --layout stacked|per-layer");
  if (layout != "stacked" && layout != "per-layer")
    throw UsageError("--layout: '" + layout + "', expected stacked or per-layer");
  const nnx::ConvertResult r = nnx::convert_checkpoint(in, out, nnx::parse_layout(layout));
  std::printf("converted %s (%s) to %s (%s): %zu leaves\n", in.c_str(), nnx::layout_name(r.from), out.c_str(),
              nnx::layout_name(r.to), r.leaves);
  return 0;
}

int merge_lora_cmd(const std::vector<std::string>& args) {
  std::string in, lora, out;
  bool hugging_face = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--in") in = flag_value(args, i);
    else if (a == "--lora") lora = flag_value(args, i);
    else if (a == "--out") out = flag_value(args, i);
    else if (a == "--hf") hugging_face = true;
    else throw UsageError("merge-lora: unknown argument " + a + " (expected --in, --lora, --out, --hf)");
  }
  if (in.empty() || lora.empty() || out.empty()) throw UsageError("merge-lora needs --in PATH, --lora PATH and --out PATH");
  const std::vector<nnx::Path> merged = nnx::merge_lora_checkpoint(in, lora, out, hugging_face);
  std::printf("merged the adapters of %zu Linears from %s into %s, written to %s (%s)\n", merged.size(), lora.c_str(),
              in.c_str(), out.c_str(), hugging_face ? "hugging face" : "native");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc < 2)
      throw UsageError("no subcommand (expected info, compare, export, convert or merge-lora; --help for usage)");
    const std::string cmd = argv[1];
    const std::vector<std::string> args(argv + 2, argv + argc);
    if (cmd == "info") return info(args);
    if (cmd == "compare") return compare(args);
    if (cmd == "export") return export_cmd(args);
    if (cmd == "convert") return convert_cmd(args);
    if (cmd == "merge-lora") return merge_lora_cmd(args);
    if (cmd == "--help" || cmd == "-h") {
      std::puts(usage);
      return 0;
    }
    throw UsageError("unknown subcommand '" + cmd + "' (expected info, compare, export, convert or merge-lora)");
  } catch (const std::exception& e) {
    return cli::report_error("ckpt", e);
  }
}
