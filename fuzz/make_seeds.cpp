// Writes the seed corpora of the fuzz harnesses: fuzz_make_seeds <dir> (fuzz/corpus in the
// repository) fills <dir>/<harness>/ with small valid inputs, made by the library's own
// writers where it has one, and near-valid ones that each break one rule. Rerun it after
// changing a harness's fixture (checkpoint_fixture.hpp); the output is the same on every run
// but for the save id and checksums of one-file checkpoints, which every save draws anew.
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint_fixture.hpp"
#include "fuzz_support.hpp"
#include "nnx/core/graphdef_json.hpp"
#include "nnx/io/safetensors.hpp"
#include "nnx/models.hpp"
#include "nnx/quant.hpp"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
namespace ckpt = nnx_fuzz::checkpoint;

class Corpus {
 public:
  Corpus(const fs::path& root, const std::string& harness) : dir_(root / harness) {
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void add(const std::string& name, const std::string& bytes) const { nnx_fuzz::write_file(dir_ / name, bytes); }
  void add(const std::string& name, const json& j) const { add(name, j.dump()); }
  const fs::path& dir() const { return dir_; }

 private:
  fs::path dir_;
};

std::string u64_le(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
// A safetensors file as any writer could make it: header length, header, data.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  return u64_le(header.size()) + header + data;
}

std::string file_bytes(const fs::path& file) { return ckpt::Reference::read_file(file); }

void safetensors_seeds(const fs::path& root, const ckpt::Reference& ref, const fs::path& work) {
  const Corpus c(root, "safetensors");
  nnx::io::save_safetensors(work / "checkpoint.safetensors", ref.tensors, ref.metadata);
  c.add("checkpoint.safetensors", file_bytes(work / "checkpoint.safetensors"));

  std::vector<std::pair<std::string, nnx::Tensor>> dtypes;
  for (const nnx::DType d : {nnx::DType::f32, nnx::DType::bf16, nnx::DType::f16, nnx::DType::i8, nnx::DType::u8,
                             nnx::DType::i32, nnx::DType::u32, nnx::DType::i64, nnx::DType::u64})
    dtypes.emplace_back(std::string(nnx::dtype_name(d)), nnx::Tensor::zeros({2}, d));
  dtypes.emplace_back("scalar", nnx::Tensor::zeros({}, nnx::DType::f32));
  dtypes.emplace_back("empty", nnx::Tensor::zeros({0, 3}, nnx::DType::f32));
  nnx::io::save_safetensors(work / "dtypes.safetensors", dtypes, {{"format", "pt"}});
  c.add("all_dtypes.safetensors", file_bytes(work / "dtypes.safetensors"));

  // From writers that neither pad the header nor align the data.
  c.add("unaligned.safetensors",
        safetensors_bytes(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})",
                          std::string(9, '\x01')));
  c.add("metadata_only.safetensors", safetensors_bytes(R"({"__metadata__":{"format":"pt"}})", ""));
  c.add("empty_header.safetensors", safetensors_bytes("{}", ""));

  // Near misses, one broken rule each.
  const std::string data(8, '\x02');
  c.add("overlap.safetensors", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                                                 R"("b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
                                                 data));
  c.add("hole.safetensors", safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data));
  c.add("f64.safetensors", safetensors_bytes(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", data));
  c.add("shape_overflow.safetensors",
        safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", data));
  // More elements than a Shape holds (2^53) in fewer bytes than int64's range: once escaped the
  // reader as a ShapeError (found by fuzzing).
  c.add("numel_over_2p53.safetensors",
        safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,42949,84],"data_offsets":[0,8]}})", data));
  c.add("length_past_end.safetensors", u64_le(1000) + "{}");
  c.add("duplicate_key.safetensors",
        safetensors_bytes(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                          R"("a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                          data));
}

void checkpoint_seeds(const fs::path& root, const ckpt::Reference& ref, const fs::path& work) {
  const Corpus c(root, "checkpoint");
  auto add = [&](const std::string& name, ckpt::InputKind kind, const std::string& body) {
    c.add(name, std::string(1, static_cast<char>(kind)) + body);
  };

  nnx::io::save_safetensors(work / "model.safetensors", ref.tensors, ref.metadata);
  add("file", ckpt::InputKind::file, file_bytes(work / "model.safetensors"));

  add("metadata", ckpt::InputKind::metadata, ckpt::encode_metadata(ref.metadata));
  auto without = [&](const std::string& key) {
    auto m = ref.metadata;
    m.erase(key);
    return ckpt::encode_metadata(m);
  };
  add("metadata_no_kinds", ckpt::InputKind::metadata, without("nnx.kinds"));
  add("metadata_no_format", ckpt::InputKind::metadata, without("nnx.format"));
  auto with = [&](const std::string& key, const std::string& value) {
    auto m = ref.metadata;
    m[key] = value;
    return ckpt::encode_metadata(m);
  };
  json graphdef = json::parse(ref.metadata.at("nnx.graphdef"));
  graphdef["leaves"][0]["shape"] = {3, 2};
  add("metadata_other_graphdef", ckpt::InputKind::metadata, with("nnx.graphdef", graphdef.dump()));
  json kinds = json::parse(ref.metadata.at("nnx.kinds"));
  kinds["cache"] = "Param";
  add("metadata_other_kind", ckpt::InputKind::metadata, with("nnx.kinds", kinds.dump()));
  add("metadata_config_not_json", ckpt::InputKind::metadata, with("nnx.config", "{\"width\": 2,"));
  add("metadata_bad_checksum", ckpt::InputKind::metadata, with("nnx.checksum", "xxh64:0123456789abcdef"));

  add("index", ckpt::InputKind::index, ref.index);
  const json index = json::parse(ref.index);
  auto index_with = [&](const std::string& pointer, const json& value) {
    json j = index;
    j[json::json_pointer(pointer)] = value;
    return j.dump(2);
  };
  add("index_other_save", ckpt::InputKind::index, index_with("/metadata/nnx.save_id", "0123456789abcdef"));
  add("index_bad_checksum", ckpt::InputKind::index, index_with("/metadata/nnx.checksum", "xxh64:0123456789abcdef"));

  add("index_path_escape", ckpt::InputKind::index, index_with("/weight_map/cache", "../model.safetensors"));
  add("index_missing_shard", ckpt::InputKind::index,
      index_with("/weight_map/cache", "model-00009-of-00009.safetensors"));
  add("index_metadata_not_strings", ckpt::InputKind::index, index_with("/metadata/nnx.kinds", json{{"cache", 1}}));
  json not_nnx = index;
  not_nnx["metadata"].erase("nnx.format");
  add("index_not_nnx", ckpt::InputKind::index, not_nnx.dump(2));
  json no_entry = index;
  no_entry["weight_map"].erase("qw/scale/1");
  add("index_tensor_unlisted", ckpt::InputKind::index, no_entry.dump(2));
}

void graphdef_seeds(const fs::path& root, const ckpt::Reference& ref) {
  const Corpus c(root, "graphdef_json");
  const json net = nnx::to_json(ref.graphdef);
  c.add("net.json", net);

  nnx::Rngs rngs{0};
  const auto gpt2 = nnx::eval_shape([&] {
    return nnx::Gpt2({.vocab_size = 16, .n_positions = 8, .n_embd = 4, .n_layer = 1, .n_head = 2},
                     nnx::Mode::autoregressive, rngs);
  });
  c.add("gpt2_decode.json", nnx::to_json(nnx::graphdef(gpt2)));
  auto llama = nnx::eval_shape([&] {
    return nnx::Llama({.vocab_size = 16, .hidden_size = 8, .intermediate_size = 8, .num_hidden_layers = 1,
                       .num_attention_heads = 2, .num_key_value_heads = 1, .tie_word_embeddings = true},
                      nnx::Mode::train, rngs);
  });
  nnx::quantize(llama, {.scheme = nnx::QuantScheme::w8a8, .include_head = true}, nnx::QuantMode::serve);
  c.add("llama_int8.json", nnx::to_json(nnx::graphdef(llama)));

  json unknown_kind = net;
  unknown_kind["leaves"][0]["kind"] = "Frozen";
  c.add("unknown_kind.json", unknown_kind);
  json negative_dim = net;
  negative_dim["leaves"][0]["shape"] = {2, -1};
  c.add("negative_dim.json", negative_dim);
  json huge_dims = net;
  huge_dims["leaves"][0]["shape"] = {std::uint64_t{1} << 62, 4};
  c.add("huge_dims.json", huge_dims);
  json statics = net;
  statics["nodes"][1]["value"] = {{"floats", {1.5, "nan", "-inf"}}};
  c.add("float_statics.json", statics);
  json ints = net;
  ints["nodes"][1]["value"] = {{"ints", {1, -2, std::int64_t{1} << 53}}};
  c.add("ints_static.json", ints);
  json strs = net;
  strs["nodes"][1]["value"] = {{"strs", {"gelu", ""}}};
  c.add("strs_static.json", strs);
  json order = net;
  std::swap(order["nodes"][1], order["nodes"][2]);
  c.add("out_of_order.json", order);
}

void model_config_seeds(const fs::path& root) {
  const Corpus c(root, "model_config");
  const nnx::Gpt2Config gpt2{.vocab_size = 16, .n_positions = 8, .n_embd = 4, .n_layer = 1, .n_head = 2};
  c.add("gpt2_tiny.json", gpt2.to_json());  // fuzz_model_config's engine model: loads
  c.add("gpt2_124m.json", nnx::Gpt2Config{}.to_json());
  c.add("gpt2_hf.json", std::string(R"({"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
  "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024,
  "n_embd": 768, "n_head": 12, "n_inner": null, "n_layer": 12, "n_positions": 1024,
  "resid_pdrop": 0.1, "vocab_size": 50257}
)"));
  nnx::LlamaConfig llama{.vocab_size = 32, .hidden_size = 8, .intermediate_size = 16, .num_hidden_layers = 2,
                         .num_attention_heads = 4, .num_key_value_heads = 2};
  c.add("llama_tiny.json", llama.to_json());
  json quantized = llama.to_json();
  quantized["quantization"] = nnx::QuantConfig{.scheme = nnx::QuantScheme::w8a8,
                                               .rules = {{"*/mlp/*", nnx::QuantScheme::weight_only}},
                                               .include_head = true}
                                  .to_json();
  c.add("llama_int8.json", quantized);
  c.add("llama_hf.json", std::string(R"({"architectures": ["LlamaForCausalLM"], "bos_token_id": 1,
  "eos_token_id": 2, "hidden_act": "silu", "hidden_size": 4096, "intermediate_size": 11008,
  "max_position_embeddings": 4096, "model_type": "llama", "num_attention_heads": 32,
  "num_hidden_layers": 32, "num_key_value_heads": 32, "rms_norm_eps": 1e-05, "rope_scaling": null,
  "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float16", "vocab_size": 32000}
)"));

  json heads = gpt2.to_json();
  heads["n_head"] = 3;
  c.add("gpt2_heads_not_dividing.json", heads);
  json odd = llama.to_json();
  odd["head_dim"] = 3;
  c.add("llama_odd_head_dim.json", odd);
  json huge = llama.to_json();
  huge["hidden_size"] = std::int64_t{1} << 40;
  c.add("llama_huge.json", huge);
  json type = gpt2.to_json();
  type["model_type"] = 2;
  c.add("model_type_number.json", type);
  json bad_rule = quantized;
  bad_rule["quantization"]["rules"][0]["scheme"] = "int4";
  c.add("quant_unknown_scheme.json", bad_rule);
}

void request_line_seeds(const fs::path& root) {
  const Corpus c(root, "request_line");
  c.add("minimal.json", std::string(R"({"prompt_ids": [1, 2], "max_new_tokens": 8})"));
  c.add("full.json", std::string(R"({"id": "r1", "prompt_ids": [5, 6, 7], "max_new_tokens": 16, "temperature": 0.7,)"
                                 R"( "top_k": 40, "top_p": 0.9, "seed": 7, "stop_ids": [2, 3]})"));
  c.add("nulls_and_unknown.json",
        std::string(R"({"prompt_ids": [0], "temperature": null, "seed": null, "user": "x", "stream": true})"));
  c.add("negative_id.json", std::string(R"({"prompt_ids": [1, -2]})"));
  c.add("top_p_zero.json", std::string(R"({"prompt_ids": [1], "top_p": 0})"));
  c.add("huge_numbers.json",
        std::string(R"({"prompt_ids": [2147483648], "max_new_tokens": 18446744073709551615, "temperature": 1e308})"));
  c.add("duplicate_key.json", std::string(R"({"prompt_ids": [1], "prompt_ids": [2]})"));
  c.add("text_prompt.json", std::string(R"({"prompt": "top_p", "stop": ["\n", "."], "logprobs": 3})"));
  c.add("text_and_ids.json", std::string(R"({"prompt": "hi", "prompt_ids": [1]})"));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_make_seeds <corpus dir>   (fuzz/corpus in the repository)\n");
    return 2;
  }
  try {
    const fs::path root = argv[1];
    const nnx_fuzz::ScratchDir work("make_seeds");
    const ckpt::Reference reference(work / "reference");
    safetensors_seeds(root, reference, work.path());
    checkpoint_seeds(root, reference, work.path());
    graphdef_seeds(root, reference);
    model_config_seeds(root);
    request_line_seeds(root);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_make_seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
