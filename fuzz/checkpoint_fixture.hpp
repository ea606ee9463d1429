// fuzz/checkpoint_fixture.hpp — the reference checkpoint fuzz_checkpoint reads its inputs
// against, shared with make_seeds so that the seeds name exactly these tensors.
//
// A small state holding every kind of leaf a native checkpoint stores: Param (f32 and bf16,
// with axes), a QTensor (qvalue and two scales), Cache (f32 and i32), a zero-size
// Intermediate and RngState. Its bytes come from a fixed seed, and the shards of its sharded
// form carry a fixed nnx.save_id, so an index seed written earlier matches the shards the
// harness writes. (One-file seeds keep the save id and checksum of the save that made them.)
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core.hpp"
#include "nnx/io/checkpoint.hpp"
#include "nnx/io/safetensors.hpp"

namespace nnx_fuzz::checkpoint {

namespace fs = std::filesystem;

struct Block {
  nnx::Param kernel;  // f32 [W, W], axes {embed, mlp}
  nnx::Param bias;    // bf16 [W]
  NNX_FIELDS(kernel, bias)
};

struct Net {
  std::int64_t width = 0;
  std::vector<Block> blocks;
  nnx::Param qw;                  // QTensor: i8 [W, 2W], scales f32 [2W] and f32 [1]
  nnx::Cache cache;               // f32 [2, W]
  std::optional<nnx::Cache> pos;  // i32 [2]
  nnx::Intermediate stats;        // f32 [0, 3]: zero-size
  nnx::Rngs rngs;                 // RngState: rngs/default/{key,count}
  NNX_FIELDS(width, blocks, qw, cache, pos, stats, rngs)
};

inline constexpr std::int64_t width = 2;
inline constexpr int num_blocks = 2;
// Small enough that the sharded save puts each block in a shard of its own.
inline constexpr std::size_t max_shard_bytes = 24;
inline constexpr const char* save_id = "00000000f0220000";
inline constexpr const char* checksum_key = "nnx.checksum";

inline Net make_net() {
  std::mt19937_64 bits(2024);
  auto tensor = [&](const nnx::Shape& shape, nnx::DType dtype) {
    nnx::Tensor t = nnx::Tensor::empty(shape, dtype);
    if (t.is_abstract()) return t;
    auto* p = reinterpret_cast<unsigned char*>(t.raw_data());
    for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(bits());
    return t;
  };
  constexpr std::int64_t w = width;
  Net n;
  n.width = w;
  for (int i = 0; i < num_blocks; ++i)
    n.blocks.push_back(Block{nnx::Param(tensor({w, w}, nnx::DType::f32), {"embed", "mlp"}),
                             nnx::Param(tensor({w}, nnx::DType::bf16))});
  n.qw = nnx::Param(nnx::QTensor{tensor({w, 2 * w}, nnx::DType::i8),
                                 {tensor({2 * w}, nnx::DType::f32), tensor({1}, nnx::DType::f32)}});
  n.cache = nnx::Cache(tensor({2, w}, nnx::DType::f32));
  n.pos = nnx::Cache(tensor({2}, nnx::DType::i32));
  n.stats = nnx::Intermediate(tensor({0, 3}, nnx::DType::f32));
  n.rngs = nnx::Rngs(7);
  return n;
}

// What the first byte of a fuzz_checkpoint input says the rest of it is.
enum class InputKind : char {
  file = 'f',      // the whole model.safetensors of a one-file checkpoint
  metadata = 'm',  // the "__metadata__" of a one-file checkpoint holding the reference tensors
  index = 'i',     // model.safetensors.index.json, beside the reference shards
};

// The "metadata" input form: one "key=value" line per entry (JSON values written compactly
// never hold a raw newline, so seeds stay readable and a mutation edits one value at a time).
// A line without '=' is a key with an empty value; a key given twice keeps its first value.
inline std::string encode_metadata(const std::map<std::string, std::string>& metadata) {
  std::string out;
  for (const auto& [key, value] : metadata) out += key + "=" + value + "\n";
  return out;
}
inline std::map<std::string, std::string> decode_metadata(std::string_view text) {
  std::map<std::string, std::string> out;
  while (!text.empty()) {
    const std::string_view line = text.substr(0, text.find('\n'));
    text.remove_prefix(std::min(text.size(), line.size() + 1));
    const std::size_t eq = line.find('=');
    if (eq == std::string_view::npos)
      out.emplace(std::string(line), std::string());
    else
      out.emplace(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
  }
  return out;
}

// The reference checkpoint, one-file and sharded, as save_checkpoint writes them; the sharded
// form with the fixed save id instead of a random one, and so without checksums.
struct Reference {
  nnx::GraphDef<> graphdef;
  nnx::State state;
  nnx::State target;  // state's abstract twin: what a program restores into
  nlohmann::json config{{"width", width}, {"blocks", num_blocks}, {"activation", "gelu"}};

  // One-file checkpoint: model.safetensors holds `tensors` with `metadata`.
  std::vector<std::pair<std::string, nnx::Tensor>> tensors;
  std::map<std::string, std::string> metadata;

  // Sharded checkpoint: the index text and each shard file's bytes.
  std::string index;
  std::map<std::string, std::string> shards;

  // Saves both forms under `work` (created, then left for the caller to remove).
  explicit Reference(const fs::path& work) {
    Net net = make_net();
    auto [gd, st] = nnx::split(net);
    graphdef = gd;
    state = st;
    target = nnx::state(nnx::eval_shape([] { return make_net(); }));
    for (const auto& [path, t] : state.to_pure_dict()) tensors.emplace_back(path.to_string(), t);

    const fs::path single = work / "single";
    nnx::io::save_checkpoint(single, state, graphdef, config);
    metadata = nnx::io::checkpoint_metadata(single);  // its own save id: only an index compares them

    const fs::path sharded = work / "sharded";
    nnx::io::CheckpointOptions options;
    options.max_shard_bytes = max_shard_bytes;
    nnx::io::save_checkpoint(sharded, state, graphdef, config, options);
    // The index and each shard with the fixed save id, and without their checksums (which
    // cover the save id, and are optional: one-file inputs exercise them).
    nlohmann::json index_json = nnx::io::parse_json_strict(read_file(sharded / "model.safetensors.index.json"));
    index_json["metadata"]["nnx.save_id"] = save_id;
    index_json["metadata"].erase(checksum_key);
    index = index_json.dump(2) + "\n";
    const fs::path restamped = work / "restamped";
    fs::create_directories(restamped);
    for (const auto& [name, file] : index_json["weight_map"].items()) {
      const std::string shard = file.get<std::string>();
      if (shards.count(shard)) continue;
      const auto f = nnx::io::SafetensorsFile::open(sharded / shard);
      std::vector<std::pair<std::string, nnx::Tensor>> part;
      for (const std::string& tensor : f.names()) part.emplace_back(tensor, f.get(tensor));
      auto shard_metadata = f.metadata();
      shard_metadata.at("nnx.save_id") = save_id;
      shard_metadata.erase(checksum_key);
      nnx::io::save_safetensors(restamped / shard, part, shard_metadata);
      shards.emplace(shard, read_file(restamped / shard));
    }
  }

  static std::string read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  }
};

}  // namespace nnx_fuzz::checkpoint
