// nnx/engine/checkpoint_tools.hpp — what examples/ckpt does, as library calls: read a native
// checkpoint or a Hugging Face directory into one flat list of leaves under native paths,
// compare two such lists leaf by leaf (numpy allclose's tolerance), and export a TrainState
// checkpoint's parameters (optionally as bf16) as a native checkpoint or a Hugging Face
// directory. It lives in engine/ because a Hugging Face directory's tensors are mapped to
// native paths through the model its config.json describes (models/ sits above io/).
//
//   nnx::CheckpointContents a = nnx::read_checkpoint_contents("run/state");   // TrainState
//   nnx::CheckpointContents b = nnx::read_checkpoint_contents("hf/gpt2");     // Hugging Face
//   std::vector<nnx::CompareRow> rows = nnx::compare_checkpoints(a, b, {.rtol = 1e-5, .atol = 1e-8});
//   nnx::export_params("run/state", "out", {.dtype = nnx::DType::bf16, .hugging_face = false});
//   nnx::convert_checkpoint("run/state", "stacked", nnx::Layout::stacked);   // layers/... [L, ...]
//
// Leaves keep the kind their checkpoint recorded as a name ("Param", "OptState", ...), so a
// kind this program does not define (a train state's OptState read without nnx/train) is
// still listed. Every problem with a file is an nnx::CheckpointError naming it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/io/checkpoint.hpp"
#include "nnx/io/huggingface.hpp"
#include "nnx/io/json.hpp"
#include "nnx/io/safetensors.hpp"
#include "nnx/models/dispatch.hpp"
#include "nnx/quant/weight_dtype.hpp"

namespace nnx {

enum class CheckpointSource : std::uint8_t { native, hugging_face };

// One leaf of a checkpoint under its native path ("h/0/attn/qkv/kernel"; in a train state
// "model/h/0/...", "mu/...", "nu/...", "step").
struct CheckpointLeaf {
  std::string path;
  std::string kind;               // as recorded ("Param", "OptState", ...); "Param" for Hugging Face
  Value value;                    // a Tensor, or a QTensor (qvalue + scales)
  std::vector<std::string> axes;  // logical axis names, when stored
  std::string source_name;        // Hugging Face: the tensor name it was read from

  const Tensor& primary() const { return std::holds_alternative<Tensor>(value) ? std::get<Tensor>(value)
                                                                                : std::get<QTensor>(value).qvalue; }
  bool quantized() const noexcept { return std::holds_alternative<QTensor>(value); }
  std::int64_t numel() const {
    if (!quantized()) return std::get<Tensor>(value).numel();
    return std::get<QTensor>(value).qvalue.numel();
  }
  std::size_t nbytes() const {
    if (!quantized()) return std::get<Tensor>(value).nbytes();
    std::size_t n = std::get<QTensor>(value).qvalue.nbytes();
    for (const Tensor& s : std::get<QTensor>(value).scale) n += s.nbytes();
    return n;
  }
};

struct CheckpointContents {
  std::filesystem::path dir;
  CheckpointSource source = CheckpointSource::native;
  bool train_state = false;     // a TrainState (model/, mu/, nu/, step), as examples/train saves DIR/state
  bool lora_adapter = false;    // adapters alone (nnx/engine/lora_checkpoint.hpp): train --lora-rank's DIR/model
  nlohmann::json model_config;  // the model's config (a train state's "model" entry); null when none
  std::vector<CheckpointLeaf> leaves;  // native: in the file's order; Hugging Face: the model's order

  const CheckpointLeaf* find(const std::string& path) const {
    for (const CheckpointLeaf& l : leaves)
      if (l.path == path) return &l;
    return nullptr;
  }
  // The model's parameters: Param (and QuantizedParam) leaves, a train state's under model/.
  std::int64_t parameter_count() const {
    std::int64_t n = 0;
    for (const CheckpointLeaf& l : leaves)
      if (is_param(l)) n += l.numel();
    return n;
  }
  // The LoRA adapters' parameters (LoraParam leaves): an adapter checkpoint holds only these.
  std::int64_t lora_parameter_count() const {
    std::int64_t n = 0;
    for (const CheckpointLeaf& l : leaves)
      if (l.kind == "LoraParam" && in_model(l)) n += l.numel();
    return n;
  }
  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const CheckpointLeaf& l : leaves) n += l.nbytes();
    return n;
  }
  bool is_param(const CheckpointLeaf& l) const {
    return (l.kind == "Param" || l.kind == "QuantizedParam") && in_model(l);
  }
  // A leaf of the model (not of a train state's optimizer or step).
  bool in_model(const CheckpointLeaf& l) const { return !train_state || l.path.starts_with("model/"); }
};

namespace detail {

inline CheckpointContents read_native_contents(const std::filesystem::path& dir) {
  io::detail::CheckpointReader ckpt(dir);
  CheckpointContents out;
  out.dir = dir;
  out.source = CheckpointSource::native;
  const auto kinds = ckpt.json_entry(io::detail::key_kinds);
  if (!kinds || !kinds->is_object())
    io::detail::file_error(ckpt.metadata_file(),
                           std::string("no \"") + io::detail::key_kinds + "\" object in the metadata");
  const auto axes = ckpt.json_entry(io::detail::key_axes);
  // QTensor leaves: "p/qvalue" stored, "p" a recorded leaf, "p" itself no tensor.
  std::set<std::string> quantized;
  for (const std::string& name : ckpt.names())
    if (name.ends_with("/qvalue") && !kinds->contains(name) && kinds->contains(name.substr(0, name.size() - 7)))
      quantized.insert(name.substr(0, name.size() - 7));
  // The quantized leaf a tensor name ("p/qvalue", "p/scale/3") belongs to, or "".
  auto quantized_leaf = [&](const std::string& name) -> std::string {
    for (std::size_t at = name.rfind('/'); at != std::string::npos && at > 0; at = name.rfind('/', at - 1))
      if (quantized.count(name.substr(0, at))) return name.substr(0, at);
    return "";
  };
  std::set<std::string> used;
  // Leaves in the order their first tensor is stored.
  for (const std::string& name : ckpt.names()) {
    if (used.count(name)) continue;
    const std::string qpath = kinds->contains(name) ? std::string() : quantized_leaf(name);
    const bool q = !qpath.empty();
    const std::string path = q ? qpath : name;
    CheckpointLeaf leaf;
    leaf.path = path;
    const auto kind = kinds->find(path);
    if (kind == kinds->end() || !kind->is_string())
      io::detail::file_error(ckpt.file_of(name), "tensor '" + name + "' has no kind recorded in \"" +
                                                     io::detail::key_kinds + "\"");
    leaf.kind = kind->get<std::string>();
    if (!q) {
      leaf.value = ckpt.get(name);
      used.insert(name);
    } else {
      QTensor qt{ckpt.get(path + "/qvalue"), {}};
      used.insert(path + "/qvalue");
      for (std::size_t i = 0; ckpt.contains(path + "/scale/" + std::to_string(i)); ++i) {
        qt.scale.push_back(ckpt.get(path + "/scale/" + std::to_string(i)));
        used.insert(path + "/scale/" + std::to_string(i));
      }
      leaf.value = std::move(qt);
    }
    if (axes && axes->is_object() && axes->contains(path) && (*axes)[path].is_array())
      for (const auto& a : (*axes)[path])
        if (a.is_string()) leaf.axes.push_back(a.get<std::string>());
    out.leaves.push_back(std::move(leaf));
  }
  nlohmann::json config = io::checkpoint_config(dir);
  const bool has_step = out.find("step") != nullptr;
  bool under_model = !out.leaves.empty();
  for (const CheckpointLeaf& l : out.leaves)
    under_model = under_model && (l.path.starts_with("model/") || l.path.starts_with("mu/") ||
                                  l.path.starts_with("nu/") || l.path == "step");
  out.train_state = has_step && under_model;
  // An adapter checkpoint keeps its base model's config under "model", beside "lora".
  out.lora_adapter = !out.train_state && config.is_object() && config.contains("lora") && config.contains("model");
  if ((out.train_state || out.lora_adapter) && config.is_object() && config.contains("model"))
    out.model_config = config["model"];
  else if (!out.train_state)
    out.model_config = config;
  return out;
}

// The dtype each tensor of a Hugging Face directory is stored in, by name.
inline std::map<std::string, DType> hf_tensor_dtypes(const std::filesystem::path& dir) {
  std::map<std::string, DType> out;
  const auto index = dir / "model.safetensors.index.json";
  std::set<std::string> files;
  if (std::filesystem::exists(index)) {
    const nlohmann::json j = io::detail::read_json_file(index);
    for (const auto& [name, file] : j.at("weight_map").items()) files.insert(file.get<std::string>());
  } else {
    files.insert("model.safetensors");
  }
  for (const std::string& f : files) {
    const io::SafetensorsFile file = io::SafetensorsFile::open(dir / f);
    for (const std::string& name : file.names()) out[name] = file.info(name).dtype;
  }
  return out;
}

inline CheckpointContents read_hf_contents(const std::filesystem::path& dir) {
  const io::HfCheckpoint hf = io::HfCheckpoint::open(dir);
  CheckpointContents out;
  out.dir = dir;
  out.source = CheckpointSource::hugging_face;
  out.model_config = hf.config();
  const std::map<std::string, DType> dtypes = hf_tensor_dtypes(dir);
  std::string prefix;
  if (hf.architecture() == "gpt2" && !dtypes.count("wte.weight") && dtypes.count("transformer.wte.weight"))
    prefix = "transformer.";
  // The model's parameter paths, from an abstract model built from config.json; each target
  // leaf in its tensor's stored dtype, so the values are the file's own (transposed where
  // the layouts differ), never rounded.
  const State target = with_model_type(hf.config(), (dir / "config.json").string(), [&]<class Model, class Config>() {
    const Config cfg = Config::from_json(hf.config());
    Rngs rngs{0};
    Model abstract = eval_shape([&] { return Model(cfg, Mode::train, rngs); });
    State params = state(abstract, of<Param>);
    State typed;
    for (const auto& [p, leaf] : params) {
      const auto name = hf.hf_name(p);
      const auto it = name ? dtypes.find(prefix + name->name) : dtypes.end();
      VariableState v = leaf;
      if (it != dtypes.end() && is_floating(it->second)) v.value = Tensor::abstract(leaf.shape(), it->second);
      typed.insert(p, std::move(v));
    }
    return typed;
  });
  const State params = hf.read_params(target);
  for (const auto& [path, leaf] : params) {
    CheckpointLeaf l;
    l.path = path.to_string();
    l.kind = std::string(leaf.kind_name());
    l.value = leaf.value;
    l.axes = leaf.axes();
    if (const auto name = hf.hf_name(path)) l.source_name = prefix + name->name;
    out.leaves.push_back(std::move(l));
  }
  return out;
}

}  // namespace detail

// Reads `dir`: a Hugging Face directory when it holds config.json, else a native checkpoint.
// Throws CheckpointError naming the path when it is neither (or is corrupt), InvalidArgument
// for an unknown architecture.
inline CheckpointContents read_checkpoint_contents(const std::filesystem::path& dir) {
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec))
    throw CheckpointError(dir.string() + ": no such directory (expected a native checkpoint or a Hugging Face "
                                         "model directory)");
  if (!std::filesystem::is_directory(dir, ec))
    throw CheckpointError(dir.string() + ": not a directory (expected a native checkpoint or a Hugging Face "
                                         "model directory)");
  if (std::filesystem::exists(dir / "config.json", ec)) return detail::read_hf_contents(dir);
  return detail::read_native_contents(dir);
}

// The path key of the decoder layers ("h", "layers") of the model `config` describes.
inline std::string layers_key_of(const nlohmann::json& config, const std::string& source) {
  return with_model_type(config, source, []<class Model, class Config>() { return std::string(Model::layers_key); });
}

// The layout of the checkpoint's layers (a Hugging Face directory's are per layer); std::nullopt
// when it has no model config or no layers.
inline std::optional<Layout> checkpoint_contents_layout(const CheckpointContents& c) {
  if (c.source == CheckpointSource::hugging_face) return Layout::per_layer;
  if (!c.model_config.is_object()) return std::nullopt;
  std::vector<Path> paths;
  for (const CheckpointLeaf& l : c.leaves) paths.push_back(Path::parse(l.path));
  return detect_layout(paths, layers_key_of(c.model_config, c.dir.string()));
}

// `c` with its layers in `layout`: stacked leaves are copies, per-layer ones views (no copy).
// Unchanged when already so or when it has no layers. Throws CheckpointError naming c.dir when
// the layers do not convert (no model config, layers that differ).
inline CheckpointContents contents_in_layout(const CheckpointContents& c, Layout layout) {
  const std::optional<Layout> found = checkpoint_contents_layout(c);
  if (!found || *found == layout) return c;
  std::vector<LayoutLeaf> leaves;
  for (std::size_t i = 0; i < c.leaves.size(); ++i)
    leaves.push_back({Path::parse(c.leaves[i].path), c.leaves[i].value, c.leaves[i].axes, i});
  const std::string key = layers_key_of(c.model_config, c.dir.string());
  std::vector<LayoutLeaf> converted;
  try {
    converted = layout == Layout::stacked
                    ? stack_layer_leaves(leaves, key,
                                         [&](std::size_t a, std::size_t b) { return c.leaves[a].kind == c.leaves[b].kind; })
                    : unstack_layer_leaves(leaves, key);
  } catch (const Error& e) {
    throw CheckpointError(c.dir.string() + ": " + e.what());
  }
  CheckpointContents out = c;
  out.leaves.clear();
  for (const LayoutLeaf& l : converted) {
    CheckpointLeaf leaf = c.leaves[l.source];
    leaf.path = l.path.to_string();
    leaf.value = l.value;
    leaf.axes = l.axes;
    out.leaves.push_back(std::move(leaf));
  }
  return out;
}

// Every element of a tensor as double (floating dtypes widened exactly, integers converted).
inline std::vector<double> tensor_as_doubles(const Tensor& t) {
  std::vector<double> out(static_cast<std::size_t>(t.numel()));
  auto copy = [&]<class T>(const T* p) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<double>(p[i]);
  };
  switch (t.dtype()) {
    case DType::f32: copy(t.data<float>()); break;
    case DType::bf16:
    case DType::f16: {
      const Tensor w = t.astype(DType::f32);  // exact
      copy(w.data<float>());
      break;
    }
    case DType::i8: copy(t.data<std::int8_t>()); break;
    case DType::u8: copy(t.data<std::uint8_t>()); break;
    case DType::i32: copy(t.data<std::int32_t>()); break;
    case DType::u32: copy(t.data<std::uint32_t>()); break;
    case DType::i64: copy(t.data<std::int64_t>()); break;
    case DType::u64: copy(t.data<std::uint64_t>()); break;
  }
  return out;
}

struct CompareOptions {
  double rtol = 1e-5;  // a pair is close when |a - b| <= atol + rtol * |b| (numpy.allclose)
  double atol = 1e-8;
};

enum class CompareStatus : std::uint8_t { equal, differs, missing_in_a, missing_in_b, shape_mismatch, dtype_mismatch };

inline const char* compare_status_name(CompareStatus s) {
  switch (s) {
    case CompareStatus::equal: return "equal";
    case CompareStatus::differs: return "differs";
    case CompareStatus::missing_in_a: return "missing in A";
    case CompareStatus::missing_in_b: return "missing in B";
    case CompareStatus::shape_mismatch: return "shape mismatch";
    case CompareStatus::dtype_mismatch: return "dtype mismatch";
  }
  return "?";
}

struct CompareRow {
  std::string path;
  std::string dtype;  // "f32", "bf16"; "f32/bf16" when the two differ; a QTensor "i8+scale"
  std::string shape;  // "[2, 3]"; "[2, 3]/[3, 2]" when the two differ
  double max_abs_diff = 0.0;  // over all elements (NaN when not compared)
  double max_rel_diff = 0.0;  // max |a - b| / |b| (inf where b == 0 and a != b)
  CompareStatus status = CompareStatus::equal;
};

namespace detail {

inline std::string leaf_dtype_text(const CheckpointLeaf& l) {
  return std::string(dtype_name(l.primary().dtype())) + (l.quantized() ? "+scale" : "");
}

// The leaf's elements as doubles: a Tensor's values; a QTensor's qvalue then each scale (a
// quantized leaf is compared as stored, never dequantized).
inline std::vector<double> leaf_doubles(const CheckpointLeaf& l) {
  if (!l.quantized()) return tensor_as_doubles(std::get<Tensor>(l.value));
  std::vector<double> out = tensor_as_doubles(std::get<QTensor>(l.value).qvalue);
  for (const Tensor& s : std::get<QTensor>(l.value).scale) {
    const std::vector<double> v = tensor_as_doubles(s);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

inline std::string leaf_shape_text(const CheckpointLeaf& l) {
  std::string s = to_string(l.primary().shape());
  if (l.quantized())
    for (const Tensor& sc : std::get<QTensor>(l.value).scale) {
      s += '+';
      s += to_string(sc.shape());
    }
  return s;
}

}  // namespace detail

// One row per leaf of a, in a's order, then the leaves only b holds; when one stores its layers
// stacked and the other per layer, both are compared per layer. Values are compared in
// double (bf16 and f16 widened exactly); a QTensor leaf is compared as stored (its int8
// qvalue, then its scales), not dequantized, and a QTensor against a Tensor is a dtype
// mismatch. Leaves of different dtypes but the same shape still get their differences
// measured, with status dtype_mismatch.
inline std::vector<CompareRow> compare_checkpoints(const CheckpointContents& a_in, const CheckpointContents& b_in,
                                                   const CompareOptions& options = {}) {
  // Checkpoints of different layouts are compared per layer (the stacked side's views).
  const std::optional<Layout> la_layout = checkpoint_contents_layout(a_in), lb_layout = checkpoint_contents_layout(b_in);
  const bool per_layer = la_layout && lb_layout && *la_layout != *lb_layout;
  const CheckpointContents a = per_layer ? contents_in_layout(a_in, Layout::per_layer) : a_in;
  const CheckpointContents b = per_layer ? contents_in_layout(b_in, Layout::per_layer) : b_in;
  std::vector<CompareRow> rows;
  constexpr double nan = std::numeric_limits<double>::quiet_NaN();
  for (const CheckpointLeaf& la : a.leaves) {
    CompareRow r;
    r.path = la.path;
    r.dtype = detail::leaf_dtype_text(la);
    r.shape = detail::leaf_shape_text(la);
    const CheckpointLeaf* lb = b.find(la.path);
    if (!lb) {
      r.status = CompareStatus::missing_in_b;
      r.max_abs_diff = r.max_rel_diff = nan;
      rows.push_back(std::move(r));
      continue;
    }
    const std::string db = detail::leaf_dtype_text(*lb), sb = detail::leaf_shape_text(*lb);
    if (db != r.dtype) r.dtype += "/" + db;
    if (sb != r.shape) {
      r.shape += "/" + sb;
      r.status = CompareStatus::shape_mismatch;
      r.max_abs_diff = r.max_rel_diff = nan;
      rows.push_back(std::move(r));
      continue;
    }
    if (la.quantized() != lb->quantized()) {
      r.status = CompareStatus::dtype_mismatch;
      r.max_abs_diff = r.max_rel_diff = nan;
      rows.push_back(std::move(r));
      continue;
    }
    const std::vector<double> va = detail::leaf_doubles(la), vb = detail::leaf_doubles(*lb);
    bool close = true;
    for (std::size_t i = 0; i < va.size(); ++i) {
      const double d = std::fabs(va[i] - vb[i]);
      if (std::isnan(d)) {
        if (std::isnan(va[i]) && std::isnan(vb[i])) continue;  // NaN where both hold NaN: equal
        r.max_abs_diff = r.max_rel_diff = nan;
        close = false;
        continue;
      }
      r.max_abs_diff = std::max(r.max_abs_diff, d);
      const double rel = d == 0.0 ? 0.0 : vb[i] == 0.0 ? std::numeric_limits<double>::infinity() : d / std::fabs(vb[i]);
      r.max_rel_diff = std::max(r.max_rel_diff, rel);
      if (!(d <= options.atol + options.rtol * std::fabs(vb[i]))) close = false;
    }
    r.status = db != detail::leaf_dtype_text(la) ? CompareStatus::dtype_mismatch
               : close                           ? CompareStatus::equal
                                                 : CompareStatus::differs;
    rows.push_back(std::move(r));
  }
  for (const CheckpointLeaf& lb : b.leaves) {
    if (a.find(lb.path)) continue;
    CompareRow r;
    r.path = lb.path;
    r.dtype = detail::leaf_dtype_text(lb);
    r.shape = detail::leaf_shape_text(lb);
    r.status = CompareStatus::missing_in_a;
    r.max_abs_diff = r.max_rel_diff = nan;
    rows.push_back(std::move(r));
  }
  return rows;
}

struct ExportOptions {
  DType dtype = DType::f32;   // f32 or bf16 (f32 -> bf16 rounds to nearest even)
  bool hugging_face = false;  // write a Hugging Face directory (io::save_hf) instead of a native checkpoint
};

// The model's parameters of `in` (a TrainState checkpoint's model/ Params, or a params-only
// checkpoint's Params) as a State under the model's own paths, in `dtype`.
inline State params_of(const CheckpointContents& in, DType dtype = DType::f32) {
  State out;
  for (const CheckpointLeaf& l : in.leaves) {
    if (!in.is_param(l)) continue;
    if (l.quantized())
      throw InvalidArgument(in.dir.string() + ": parameter '" + l.path +
                            "' is int8-quantized; export needs floating-point parameters");
    VariableState v;
    v.kind = &Param::kind_info();
    const Tensor& t = std::get<Tensor>(l.value);
    v.value = t.dtype() == dtype ? t : t.astype(dtype);
    if (!l.axes.empty()) v.metadata = std::make_shared<const Metadata>(Metadata{l.axes});
    out.insert(Path::parse(in.train_state ? l.path.substr(6) : l.path), std::move(v));
  }
  return out;
}

// Writes the parameters of the native checkpoint `in` (optimizer moments and step dropped) to
// `out`, as a native checkpoint with the model's config (examples/generate loads it) or a
// Hugging Face directory. A native bf16 export holds the layout cast_weights serves: every
// Linear's `weight` [out, in] and the embedding tables in bf16 (each value its f32 one rounded
// to nearest even), biases and norm scales f32. Returns what was exported. Throws CheckpointError naming `in` when it
// is a Hugging Face directory, holds no parameters or no model config; InvalidArgument for a
// dtype other than f32 and bf16.
inline State export_params(const std::filesystem::path& in, const std::filesystem::path& out,
                           const ExportOptions& options = {}) {
  if (options.dtype != DType::f32 && options.dtype != DType::bf16)
    throw InvalidArgument("export: dtype must be f32 or bf16, found " + std::string(dtype_name(options.dtype)));
  const CheckpointContents stored = read_checkpoint_contents(in);
  if (stored.source != CheckpointSource::native)
    throw CheckpointError(in.string() + ": a Hugging Face directory; expected a native checkpoint (a TrainState)");
  // A stacked checkpoint is exported per layer (Hugging Face names, and cast_weights' models,
  // are per layer), then, natively, stacked again.
  const std::optional<Layout> layout = checkpoint_contents_layout(stored);
  const CheckpointContents c = contents_in_layout(stored, Layout::per_layer);
  const auto restack = [&](const State& params) {
    return layout == Layout::stacked ? to_layout(params, layers_key_of(c.model_config, in.string()), Layout::stacked)
                                     : params;
  };
  const State params = params_of(c, options.dtype);
  if (params.size() == 0) throw CheckpointError(in.string() + ": no parameters (no Param leaves) to export");
  if (!c.model_config.is_object() || !c.model_config.contains("model_type"))
    throw CheckpointError(in.string() + ": no model config with a \"model_type\" stored; expected a checkpoint "
                                        "written by examples/train");
  if (options.hugging_face) {
    io::save_hf(out, c.model_config, params, options.dtype);
    return params;
  }
  if (options.dtype == DType::f32) {
    const State saved = restack(params);
    io::save_checkpoint(out, saved, {}, c.model_config);
    return saved;
  }
  // A 16-bit native checkpoint is stored as cast_weights serves it (what generate restores
  // into): each Linear's bf16 `weight` [out, in], bf16 embedding tables, f32 biases and norms.
  const State f32 = params_of(c, DType::f32);
  const State cast = with_model_type(c.model_config, in.string(), [&]<class Model, class Config>() {
    Rngs rngs{0};
    Model abstract = eval_shape([&] { return Model(Config::from_json(c.model_config), Mode::train, rngs); });
    auto [graphdef, target, rest] = split(abstract, of<Param>, everything);
    State ordered;
    for (const auto& [path, leaf] : target) {
      const VariableState* v = f32.find(path);
      if (!v)
        throw CheckpointError(in.string() + ": no parameter '" + path.to_string() +
                              "', which the model its config describes has");
      ordered.insert(path, *v);
    }
    Model model = merge(graphdef, ordered, rest);
    cast_weights(model, options.dtype);
    return restack(state(model, of<Param>));
  });
  io::save_checkpoint(out, cast, {}, c.model_config);
  return cast;
}

namespace detail {

// The kind named `name`: the registered one, or (a kind this program does not define, kept by
// name only) an unregistered stand-in that writes the same name back.
inline const KindInfo* kind_named(const std::string& name) {
  if (const KindInfo* k = find_kind(name)) return k;
  static std::mutex mutex;
  static std::map<std::string, std::unique_ptr<KindInfo>>* unknown = new std::map<std::string, std::unique_ptr<KindInfo>>;
  std::lock_guard lock(mutex);
  auto& k = (*unknown)[name];
  if (!k) k = std::make_unique<KindInfo>(KindInfo{nnx::detail::intern(name), &Variable::kind_info()});
  return k.get();
}

}  // namespace detail

struct ConvertResult {
  Layout from = Layout::per_layer;
  Layout to = Layout::per_layer;
  std::size_t leaves = 0;  // leaves written
};

// Writes the native checkpoint `in` (params-only or a TrainState, whose optimizer moments follow
// their parameters) to `out` with its decoder layers in `layout`, detecting the layout `in`
// stores. Kinds, axes, the config and every value's bytes carry over (stacking copies, so a
// stacked -> per-layer -> stacked round trip gives the same leaves, bit for bit, in the same
// order); a stored graphdef, which describes the old layout, is not. Converting to the layout
// `in` already has writes a copy. Throws CheckpointError naming `in` when it is a Hugging Face
// directory, has no model config, or its layers do not convert.
inline ConvertResult convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                        Layout layout) {
  const CheckpointContents c = read_checkpoint_contents(in);
  if (c.source != CheckpointSource::native)
    throw CheckpointError(in.string() + ": a Hugging Face directory (its layers are per layer); convert native "
                                        "checkpoints, e.g. one generate or train wrote");
  if (!c.model_config.is_object() || !c.model_config.contains("model_type"))
    throw CheckpointError(in.string() + ": no model config with a \"model_type\" stored, so where its layers are is "
                                        "unknown");
  const std::optional<Layout> found = checkpoint_contents_layout(c);
  if (!found) throw CheckpointError(in.string() + ": no decoder layers found to convert");
  const CheckpointContents converted = contents_in_layout(c, layout);
  State state;
  for (const CheckpointLeaf& l : converted.leaves) {
    VariableState v;
    v.kind = detail::kind_named(l.kind);
    v.value = l.value;
    if (!l.axes.empty()) v.metadata = std::make_shared<const Metadata>(Metadata{l.axes});
    state.insert(Path::parse(l.path), std::move(v));
  }
  io::save_checkpoint(out, state, {}, io::checkpoint_config(in));
  return {*found, layout, state.size()};
}

}  // namespace nnx
