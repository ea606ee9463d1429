// nnx/io/huggingface.hpp — Hugging Face model directories: config.json plus model.safetensors
// (or shards listed in model.safetensors.index.json), read into and written from our states.
//
// Supported architectures and their tensor names:
//   gpt2:  wte.weight, wpe.weight, h.N.ln_1.*, h.N.attn.c_attn.* (Conv1D: [in, out]),
//          h.N.attn.c_proj.*, h.N.ln_2.*, h.N.mlp.c_fc.*, h.N.mlp.c_proj.*, ln_f.*; an optional
//          "transformer." prefix; h.N.attn.bias / masked_bias mask buffers are ignored.
//   llama: model.embed_tokens.weight, model.layers.N.input_layernorm.weight,
//          model.layers.N.self_attn.{q,k,v,o}_proj.weight (nn.Linear: [out, in]),
//          model.layers.N.post_attention_layernorm.weight, model.layers.N.mlp.{gate,up,down}_proj.weight,
//          model.norm.weight, lm_head.weight (absent when tie_word_embeddings).
// Files may hold f32, bf16 or f16; values are converted to each target leaf's dtype, and
// transposed between nn.Linear's [out, in] and our [in, out] kernels. A leaf of the file's
// dtype and layout (a bf16 Llama read into a model cast with nnx::cast_weights) is the
// mmap'ed tensor itself: no copy, no conversion.
//
//   auto hf = nnx::io::HfCheckpoint::open("models/gpt2");
//   hf.architecture();                        // "gpt2"
//   auto cfg = nnx::Gpt2Config::from_json(hf.config());
//   auto abstract = nnx::eval_shape([&] { return nnx::Gpt2(cfg, nnx::Mode::train, rngs); });
//   auto [graphdef, params] = nnx::split(abstract, nnx::of<nnx::Param>);
//   nnx::State loaded = hf.read_params(params);   // checked leaf by leaf
//   nnx::Gpt2 model = nnx::merge(graphdef, loaded);
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/io/json.hpp"
#include "nnx/io/safetensors.hpp"

namespace nnx::io {
namespace detail {

// Where one of our parameters lives in a Hugging Face file.
struct HfName {
  std::string name;
  bool transpose = false;  // nn.Linear [out, in] <-> our kernel [in, out]
};

inline std::string key_text(const Path& p, std::size_t i) { return i < p.size() ? p[i].to_string() : ""; }

// Our path -> the Hugging Face tensor name (without the optional prefix), or nullopt.
inline std::optional<HfName> hf_name_gpt2(const Path& p) {
  const std::string s = p.to_string();
  if (s == "wte/embedding") return HfName{"wte.weight"};
  if (s == "wpe/embedding") return HfName{"wpe.weight"};
  if (s == "ln_f/scale") return HfName{"ln_f.weight"};
  if (s == "ln_f/bias") return HfName{"ln_f.bias"};
  if (p.size() == 5 || p.size() == 4) {
    if (key_text(p, 0) != "h" || !p[1].is_index()) return std::nullopt;
    const std::string n = "h." + std::to_string(p[1].index()) + ".";
    const std::string part = key_text(p, 2), sub = key_text(p, 3), leaf = p.back().to_string();
    const std::string suffix =
        leaf == "kernel" || leaf == "weight" || leaf == "scale" ? "weight" : leaf == "bias" ? "bias" : "";
    if (suffix.empty()) return std::nullopt;
    if (p.size() == 4 && part == "attn_norm") return HfName{n + "ln_1." + suffix};
    if (p.size() == 4 && part == "mlp_norm") return HfName{n + "ln_2." + suffix};
    // Conv1D stores [in, out], our kernel's layout; a served-as-stored `weight` is [out, in].
    const bool transpose = leaf == "weight";
    if (p.size() == 5 && part == "attn" && sub == "qkv") return HfName{n + "attn.c_attn." + suffix, transpose};
    if (p.size() == 5 && part == "attn" && sub == "out") return HfName{n + "attn.c_proj." + suffix, transpose};
    if (p.size() == 5 && part == "mlp" && sub == "up") return HfName{n + "mlp.c_fc." + suffix, transpose};
    if (p.size() == 5 && part == "mlp" && sub == "down") return HfName{n + "mlp.c_proj." + suffix, transpose};
  }
  return std::nullopt;
}

inline std::optional<HfName> hf_name_llama(const Path& p) {
  const std::string s = p.to_string();
  if (s == "embed_tokens/embedding") return HfName{"model.embed_tokens.weight"};
  if (s == "norm/scale") return HfName{"model.norm.weight"};
  // nn.Linear stores [out, in]: our kernels [in, out] are its transpose, a `weight` is it.
  if (s == "lm_head/kernel") return HfName{"lm_head.weight", true};
  if (s == "lm_head/weight") return HfName{"lm_head.weight"};
  if (key_text(p, 0) != "layers" || p.size() < 4 || !p[1].is_index()) return std::nullopt;
  const std::string n = "model.layers." + std::to_string(p[1].index()) + ".";
  const std::string part = key_text(p, 2), sub = key_text(p, 3);
  if (p.size() == 4 && part == "attn_norm" && sub == "scale") return HfName{n + "input_layernorm.weight"};
  if (p.size() == 4 && part == "mlp_norm" && sub == "scale") return HfName{n + "post_attention_layernorm.weight"};
  if (p.size() == 5 && (key_text(p, 4) == "kernel" || key_text(p, 4) == "weight")) {
    const bool transpose = key_text(p, 4) == "kernel";
    static const std::map<std::string, std::string> attn{
        {"query", "q_proj"}, {"key", "k_proj"}, {"value", "v_proj"}, {"out", "o_proj"}};
    static const std::map<std::string, std::string> mlp{{"gate", "gate_proj"}, {"up", "up_proj"}, {"down", "down_proj"}};
    if (part == "attn" && attn.count(sub)) return HfName{n + "self_attn." + attn.at(sub) + ".weight", transpose};
    if (part == "mlp" && mlp.count(sub)) return HfName{n + "mlp." + mlp.at(sub) + ".weight", transpose};
  }
  return std::nullopt;
}

// Buffers some exporters store that hold no parameters.
inline bool hf_ignorable(const std::string& arch, const std::string& name) {
  auto ends_with = [&](const char* suffix) {
    const std::string s(suffix);
    return name.size() >= s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
  };
  if (arch == "gpt2") return ends_with(".attn.bias") || ends_with(".attn.masked_bias") || name == "lm_head.weight";
  return ends_with(".rotary_emb.inv_freq");
}

// A JSON file read whole and parsed strictly (a key given twice is an error, not last-wins).
inline nlohmann::json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw CheckpointError(file.string() + ": cannot open");
  const std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (in.bad()) throw CheckpointError(file.string() + ": read error");
  try {
    return io::parse_json_strict(text);
  } catch (const InvalidArgument& e) {
    throw CheckpointError(file.string() + ": malformed JSON: " + e.what());
  }
}

}  // namespace detail

class HfCheckpoint {
 public:
  // Reads dir/config.json and opens dir/model.safetensors or the shards named by
  // dir/model.safetensors.index.json. Throws CheckpointError naming the file on any problem,
  // InvalidArgument for an architecture other than gpt2 and llama.
  static HfCheckpoint open(const std::filesystem::path& dir) {
    if (!std::filesystem::is_directory(dir)) throw CheckpointError(dir.string() + ": not a directory");
    HfCheckpoint c;
    c.dir_ = dir;
    c.config_ = detail::read_json_file(dir / "config.json");
    if (!c.config_.is_object()) throw CheckpointError((dir / "config.json").string() + ": expected a JSON object");
    const auto type_it = c.config_.find("model_type");
    if (type_it != c.config_.end() && !type_it->is_string())
      throw InvalidArgument((dir / "config.json").string() +
                            ": \"model_type\" must be a string naming the architecture (gpt2, llama), found " +
                            type_it->dump());
    const auto type = c.config_.value("model_type", std::string());
    if (type != "gpt2" && type != "llama")
      throw InvalidArgument((dir / "config.json").string() + ": unknown architecture (model_type \"" + type +
                            "\"); supported: gpt2, llama");
    c.architecture_ = type;

    const auto index = dir / "model.safetensors.index.json";
    if (std::filesystem::exists(index)) {
      const auto j = detail::read_json_file(index);
      if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
        throw CheckpointError(index.string() + ": expected an object with a \"weight_map\"");
      std::map<std::string, std::size_t> file_ids;
      for (const auto& [name, file] : j["weight_map"].items()) {
        if (!file.is_string()) throw CheckpointError(index.string() + ": weight_map[\"" + name + "\"] is not a file name");
        const auto fname = file.get<std::string>();
        if (fname.find('/') != std::string::npos || fname.find("..") != std::string::npos)
          throw CheckpointError(index.string() + ": shard name \"" + fname + "\" must be a plain file name");
        auto [it, added] = file_ids.emplace(fname, c.files_.size());
        if (added) c.files_.push_back(SafetensorsFile::open(dir / fname));
        if (!c.files_[it->second].contains(name))
          throw CheckpointError((dir / fname).string() + ": missing tensor \"" + name + "\" listed in " +
                                index.string());
        c.where_[name] = it->second;
      }
    } else {
      c.files_.push_back(SafetensorsFile::open(dir / "model.safetensors"));
      for (const auto& name : c.files_[0].names()) c.where_[name] = 0;
    }
    if (c.architecture_ == "gpt2" && !c.where_.count("wte.weight") && c.where_.count("transformer.wte.weight"))
      c.prefix_ = "transformer.";
    return c;
  }

  const std::string& architecture() const noexcept { return architecture_; }
  const nlohmann::json& config() const noexcept { return config_; }
  const std::filesystem::path& directory() const noexcept { return dir_; }
  // Every tensor name in the files.
  std::vector<std::string> tensor_names() const {
    std::vector<std::string> out;
    for (const auto& [name, file] : where_) out.push_back(name);
    return out;
  }

  // The dtype the files store their weights in (io::stored_weight_dtype).
  DType stored_weight_dtype() const {
    std::set<DType> dtypes;
    for (const auto& [name, file] : where_) dtypes.insert(files_[file].info(name).dtype);
    return io::stored_weight_dtype(dtypes);
  }

  // A State with target's paths, kinds and metadata holding the checkpoint's values,
  // converted to each target leaf's dtype (and transposed where the layouts differ).
  // target: the Param state of a model built from config() (abstract is fine). Every target
  // leaf must be present with the right shape and every tensor in the files must be used
  // (mask buffers aside): otherwise CheckpointError naming the file and tensor.
  State read_params(const State& target) const {
    State out;
    out.reserve(target.size());
    std::set<std::string> used;
    for (const auto& [path, leaf] : target) {
      auto hf = hf_name(path);
      if (!hf)
        throw CheckpointError(dir_.string() + ": no " + architecture_ + " tensor corresponds to parameter '" +
                              path.to_string() + "'");
      const std::string name = prefix_ + hf->name;
      auto it = where_.find(name);
      if (it == where_.end())
        throw CheckpointError(dir_.string() + ": missing tensor \"" + name + "\" for parameter '" + path.to_string() +
                              "'");
      const SafetensorsFile& file = files_[it->second];
      Tensor t = file.get(name);
      if (!is_floating(t.dtype()))
        throw CheckpointError(file.path().string() + ": tensor \"" + name + "\" is " + describe(t) +
                              ", expected a floating dtype");
      Tensor value = hf->transpose && t.rank() == 2 ? transpose_2d(t, leaf.dtype()) : t;
      if (value.shape() != leaf.shape())
        throw CheckpointError(file.path().string() + ": tensor \"" + name + "\" has shape " + to_string(t.shape()) +
                              (hf->transpose ? " (transposed: " + to_string(value.shape()) + ")" : std::string()) +
                              ", parameter '" + path.to_string() + "' expects " + to_string(leaf.shape()));
      if (value.dtype() != leaf.dtype()) value = value.astype(leaf.dtype());
      VariableState v = leaf;
      v.value = value;
      out.insert(path, std::move(v));
      used.insert(name);
    }
    for (const auto& [name, file] : where_)
      if (!used.count(name) && !detail::hf_ignorable(architecture_, name.substr(name.rfind(prefix_, 0) == 0 ? prefix_.size() : 0)))
        throw CheckpointError(files_[file].path().string() + ": tensor \"" + name +
                              "\" does not belong to any parameter of this " + architecture_ + " model");
    return out;
  }

  // The Hugging Face name of one of our parameters (without prefix), or nullopt.
  std::optional<detail::HfName> hf_name(const Path& path) const {
    return architecture_ == "gpt2" ? detail::hf_name_gpt2(path) : detail::hf_name_llama(path);
  }

 private:
  std::filesystem::path dir_;
  nlohmann::json config_;
  std::string architecture_;
  std::string prefix_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index in files_
};

// Writes params (a model's Param state) as a Hugging Face directory: config.json (the given
// config, e.g. Gpt2Config::to_json(), with "torch_dtype" set to the stored dtype) and
// model.safetensors with Hugging Face names and layouts, in `dtype` (f32, bf16 or f16), each
// value rounded once from its f32 value (round to nearest even).
// The tensors of `params` (a model's Param state, or anything with its paths and shapes, such
// as its gradients) under their Hugging Face names and layouts for `arch` ("gpt2" or "llama"),
// in `dtype`. Throws InvalidArgument naming a path with no Hugging Face name.
inline std::vector<std::pair<std::string, Tensor>> hf_tensors(const std::string& arch, const State& params,
                                                              DType dtype = DType::f32) {
  if (arch != "gpt2" && arch != "llama") throw InvalidArgument("hf_tensors: unknown model_type \"" + arch + "\"");
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [path, leaf] : params) {
    auto hf = arch == "gpt2" ? detail::hf_name_gpt2(path) : detail::hf_name_llama(path);
    if (!hf) throw InvalidArgument("hf_tensors: parameter '" + path.to_string() + "' has no " + arch + " name");
    Tensor t = leaf.tensor();
    if (hf->transpose) t = transpose_2d(t, dtype);
    if (t.dtype() != dtype) t = t.astype(dtype);
    tensors.emplace_back(hf->name, std::move(t));
  }
  return tensors;
}

inline void save_hf(const std::filesystem::path& dir, const nlohmann::json& config, const State& params,
                    DType dtype = DType::f32) {
  if (!is_floating(dtype)) throw InvalidArgument("save_hf: dtype must be f32, bf16 or f16");
  const auto arch = config.value("model_type", std::string());
  if (arch != "gpt2" && arch != "llama") throw InvalidArgument("save_hf: unknown model_type \"" + arch + "\"");
  const std::vector<std::pair<std::string, Tensor>> tensors = hf_tensors(arch, params, dtype);
  // transformers loads with torch_dtype="auto" in the dtype the config names, so a config
  // passed through from an f32 checkpoint must not keep claiming float32 over 16-bit data.
  nlohmann::json cfg = config;
  cfg["torch_dtype"] = dtype == DType::f32 ? "float32" : dtype == DType::bf16 ? "bfloat16" : "float16";
  std::filesystem::create_directories(dir);
  save_safetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
  const auto tmp = dir / "config.json.tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << cfg.dump(2) << "\n";
    if (!out) throw CheckpointError(tmp.string() + ": write failed");
  }
  std::filesystem::rename(tmp, dir / "config.json");
}

}  // namespace nnx::io
