// nnx/io/checkpoint.hpp — native checkpoints: any State in safetensors files, saved
// atomically, restored zero-copy into an abstract target with every leaf checked.
//
// A checkpoint is a directory holding model.safetensors, or (above max_shard_bytes of tensor
// data) model-00001-of-0000N.safetensors shards plus model.safetensors.index.json. Tensors
// are named by their State paths ("blocks/0/attn/kernel"; a QTensor leaf "p" is stored as
// "p/qvalue", "p/scale/0", ...); kinds, the graphdef and a JSON config travel in the
// metadata. docs/checkpoint-format.md is the exact layout and commit protocol.
//
//   auto [graphdef, state] = nnx::split(model);
//   nnx::io::save_checkpoint("ckpt", state, graphdef, {{"n_layer", 12}});
//
//   auto abstract = nnx::eval_shape([&] { return Model(cfg, rngs); });  // no weights
//   nnx::State restored = nnx::io::restore_checkpoint("ckpt", nnx::state(abstract));
//   nnx::State params = nnx::io::restore_checkpoint("ckpt", nnx::state(abstract),
//                                                   nnx::of<nnx::Param>);  // partial
//   Model m = nnx::merge(graphdef, restored);  // tensors are views of the mapped files
//
// Saving is crash-safe: a crash at any point leaves the previous checkpoint or the new one,
// never a mix (one writer per directory at a time). A save never replaces what is not an nnx
// checkpoint (a Hugging Face directory) unless told to. Every file carries a checksum:
//
//   nnx::io::verify_checkpoint("ckpt");  // throws CheckpointError naming a corrupt file
//
// Every problem found while restoring is an nnx::CheckpointError naming the file, the leaf,
// and what was expected versus found.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graphdef.hpp"
#include "nnx/core/graphdef_json.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/io/safetensors.hpp"

namespace nnx::io {

// Value of "nnx.format" in every checkpoint this header writes.
inline constexpr std::string_view checkpoint_format = "nnx.checkpoint/1";
// The file of a one-file checkpoint, and the index (the commit point) of a sharded one.
inline constexpr std::string_view checkpoint_file_name = "model.safetensors";
inline constexpr std::string_view checkpoint_index_name = "model.safetensors.index.json";

struct CheckpointOptions {
  // Tensor bytes per file (headers not counted). A state above this is split into shards
  // filled in state order; a tensor larger than this gets a shard of its own.
  std::size_t max_shard_bytes = std::size_t{2} << 30;  // 2 GiB
  // Store an "nnx.checksum" (XXH64 of the file's contents) in every file, which
  // verify_checkpoint and RestoreOptions::verify_checksums check. One extra pass over the
  // tensors in memory at ~8 GB/s: about 6% of a save measured on the development machine
  // (docs/checkpoint-format.md, section 2, Checksums).
  bool checksums = true;
  // A directory holding something other than an nnx checkpoint (a Hugging Face config.json,
  // or a model.safetensors or index without "nnx.format") is refused with a CheckpointError.
  // true: delete those files first (weights, then config.json), then save as into an empty
  // directory. This is not atomic: a crash in between leaves no loadable model, never a mix.
  bool overwrite_foreign = false;
  // For tests: called before each durable step of the save with its name ("temp <file>",
  // "renamed <file>", "commit", "committed"). Throwing from it simulates a crash there: the
  // save stops at once and cleans nothing up.
  std::function<void(const std::string& event)> on_event;
};

// Which target leaves to read: bool(path, target leaf).
using LeafFilter = std::function<bool(const Path&, const VariableState&)>;

struct RestoreOptions {
  // Empty: restore every target leaf; a tensor in the checkpoint that the target lacks is an
  // error. Set: restore only the leaves it accepts (the result holds just those), and
  // tensors that are not needed are ignored.
  LeafFilter filter;
  // When valid(), the graphdef stored in the checkpoint must equal this one.
  GraphDef<> graphdef;
  // Check the "nnx.checksum" of every file the restore reads (the index or model.safetensors,
  // and the shards it opens) before returning; a mismatch is a CheckpointError naming the
  // file. Reads every byte of those files once more. Files saved without checksums pass.
  bool verify_checksums = false;
};

// What verify_checkpoint checked.
struct CheckpointVerification {
  std::size_t files_verified = 0;          // files whose "nnx.checksum" matched their contents
  std::size_t files_without_checksum = 0;  // files saved without one: nothing to verify there
  std::uint64_t bytes_hashed = 0;          // tensor bytes read to verify them
};

namespace detail {

namespace fs = std::filesystem;

inline constexpr const char* key_format = "nnx.format";
inline constexpr const char* key_save_id = "nnx.save_id";
inline constexpr const char* key_kinds = "nnx.kinds";
inline constexpr const char* key_axes = "nnx.axes";
inline constexpr const char* key_graphdef = "nnx.graphdef";
inline constexpr const char* key_config = "nnx.config";
inline constexpr const char* key_checksum = "nnx.checksum";
inline constexpr std::uint64_t max_index_bytes = safetensors_default_max_header_bytes;
// The file a Hugging Face directory is recognized by (engine's read_model_config does).
inline constexpr const char* hf_config_name = "config.json";

// XXH64 (xxHash's 64-bit hash, seed 0), streaming. Chosen for checksums because portable
// C++ runs it at memory speed (8 GB/s, measured in docs/checkpoint-format.md): a save
// already reads every byte to write it, and a checksum must not make it noticeably slower.
// Software CRC32C is several times slower and its fast form needs SSE4.2 intrinsics, which
// belong in kernels/; SHA-256 is 20-40x slower in portable code, and collision resistance is
// not the point (detecting corruption is). Same results as the reference `xxhsum -H64`.
class Xxh64 {
 public:
  void update(const void* data, std::size_t n) noexcept {
    const auto* p = static_cast<const unsigned char*>(data);
    total_ += n;
    if (buffered_ + n < 32) {
      if (n) std::memcpy(buf_ + buffered_, p, n);
      buffered_ += n;
      return;
    }
    if (buffered_) {
      const std::size_t fill = 32 - buffered_;
      std::memcpy(buf_ + buffered_, p, fill);
      stripe(buf_);
      p += fill;
      n -= fill;
      buffered_ = 0;
    }
    for (; n >= 32; p += 32, n -= 32) stripe(p);
    if (n) std::memcpy(buf_, p, n);
    buffered_ = n;
  }
  void update_u64(std::uint64_t v) noexcept {
    unsigned char b[8];
    for (int i = 0; i < 8; ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));  // little-endian
    update(b, 8);
  }
  // Length, then bytes: a string boundary cannot move without changing the hash.
  void update_string(std::string_view s) noexcept {
    update_u64(s.size());
    update(s.data(), s.size());
  }

  std::uint64_t digest() const noexcept {
    std::uint64_t h;
    if (total_ >= 32) {
      h = rotl(v_[0], 1) + rotl(v_[1], 7) + rotl(v_[2], 12) + rotl(v_[3], 18);
      for (std::uint64_t v : v_) h = (h ^ round(0, v)) * p1 + p4;
    } else {
      h = p5;  // seed 0 + PRIME64_5
    }
    h += total_;
    const unsigned char* p = buf_;
    std::size_t n = buffered_;
    for (; n >= 8; p += 8, n -= 8) h = rotl(h ^ round(0, read64(p)), 27) * p1 + p4;
    if (n >= 4) {
      h = rotl(h ^ (read32(p) * p1), 23) * p2 + p3;
      p += 4;
      n -= 4;
    }
    for (; n > 0; ++p, --n) h = rotl(h ^ (*p * p5), 11) * p1;
    h ^= h >> 33;
    h *= p2;
    h ^= h >> 29;
    h *= p3;
    h ^= h >> 32;
    return h;
  }

 private:
  static constexpr std::uint64_t p1 = 0x9E3779B185EBCA87ull, p2 = 0xC2B2AE3D27D4EB4Full, p3 = 0x165667B19E3779F9ull,
                                 p4 = 0x85EBCA77C2B2AE63ull, p5 = 0x27D4EB2F165667C5ull;
  static std::uint64_t rotl(std::uint64_t x, int r) noexcept { return (x << r) | (x >> (64 - r)); }
  static std::uint64_t round(std::uint64_t acc, std::uint64_t in) noexcept { return rotl(acc + in * p2, 31) * p1; }
  static std::uint64_t read64(const unsigned char* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);  // little-endian host (asserted in safetensors.hpp)
    return v;
  }
  static std::uint64_t read32(const unsigned char* p) noexcept {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
  }
  void stripe(const unsigned char* p) noexcept {
    for (int i = 0; i < 4; ++i) v_[i] = round(v_[i], read64(p + 8 * i));
  }

  std::uint64_t v_[4] = {p1 + p2, p2, 0, 0 - p1};
  unsigned char buf_[32] = {};
  std::size_t buffered_ = 0;
  std::uint64_t total_ = 0;
};

inline std::string checksum_text(std::uint64_t h) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "xxh64:%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// The metadata part of a checksum: every entry but the checksum itself, in key order.
inline void hash_metadata(Xxh64& h, const std::map<std::string, std::string>& metadata) {
  h.update_u64(metadata.size() - metadata.count(key_checksum));
  for (const auto& [k, v] : metadata) {
    if (k == key_checksum) continue;
    h.update_string(k);
    h.update_string(v);
  }
}

// One tensor of a file as its checksum sees it.
struct HashedTensor {
  std::string_view name;
  DType dtype;
  const Shape* shape;
  const void* data;
  std::size_t nbytes;
};

// The checksum of one safetensors file of a checkpoint: what a reader gets from it (the
// metadata but "nnx.checksum", and each tensor's name, dtype, shape and bytes, in name
// order), independent of JSON spacing and data layout. See docs/checkpoint-format.md.
inline std::uint64_t file_checksum(const std::map<std::string, std::string>& metadata,
                                   std::vector<HashedTensor> tensors) {
  std::sort(tensors.begin(), tensors.end(), [](const HashedTensor& a, const HashedTensor& b) { return a.name < b.name; });
  Xxh64 h;
  h.update_string("nnx.safetensors");
  hash_metadata(h, metadata);
  h.update_u64(tensors.size());
  for (const HashedTensor& t : tensors) {
    h.update_string(t.name);
    h.update_string(safetensors_dtype_name(t.dtype));
    h.update_u64(static_cast<std::uint64_t>(t.shape->rank()));
    for (std::int64_t d : *t.shape) h.update_u64(static_cast<std::uint64_t>(d));
    h.update_u64(t.nbytes);
    h.update(t.data, t.nbytes);
  }
  return h.digest();
}

inline std::uint64_t file_checksum(const std::map<std::string, std::string>& metadata,
                                   std::span<const std::pair<std::string, Tensor>> tensors) {
  std::vector<HashedTensor> v;
  v.reserve(tensors.size());
  for (const auto& [name, t] : tensors) v.push_back({name, t.dtype(), &t.shape(), t.raw_data(), t.nbytes()});
  return file_checksum(metadata, std::move(v));
}

// The checksum of an index: its metadata (numbers as their JSON text, as the reader holds
// them) and its weight_map, both in key order.
inline std::uint64_t index_checksum(const std::map<std::string, std::string>& metadata,
                                    const std::map<std::string, std::string>& weight_map) {
  Xxh64 h;
  h.update_string("nnx.index");
  hash_metadata(h, metadata);
  h.update_u64(weight_map.size());
  for (const auto& [tensor, file] : weight_map) {
    h.update_string(tensor);
    h.update_string(file);
  }
  return h.digest();
}

// Compares a file's stored checksum with the one computed from what it holds.
inline void check_checksum(const fs::path& file, const std::string& stored, std::uint64_t computed) {
  const std::string found = checksum_text(computed);
  if (!stored.starts_with("xxh64:") || stored.size() != found.size() ||
      stored.find_first_not_of("0123456789abcdef", 6) != std::string::npos)
    file_error(file, std::string("\"") + key_checksum + "\" is \"" + stored +
                         "\", expected \"xxh64:\" and 16 lowercase hex digits");
  if (stored != found)
    file_error(file, std::string("checksum mismatch: \"") + key_checksum + "\" says " + stored +
                         ", the contents hash to " + found + " (the file was modified or is corrupt)");
}

// "model-00002-of-00005.safetensors" (with "-<tag>" before the extension when given).
inline std::string shard_name(std::size_t i, std::size_t n, const std::string& tag) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu", i + 1, n);
  return std::string(buf) + (tag.empty() ? "" : "-" + tag) + ".safetensors";
}

// Names save_checkpoint owns in a checkpoint directory (it deletes stale ones).
inline bool is_checkpoint_file(std::string_view n) {
  auto ends_with = [&](std::string_view s) { return n.size() >= s.size() && n.substr(n.size() - s.size()) == s; };
  return n == checkpoint_file_name || n == checkpoint_index_name ||
         (n.starts_with("model-") && ends_with(".safetensors")) || (n.starts_with(".model") && is_temp_name(n));
}

// A shard name from an index must be a plain file in the directory, never a path.
inline bool is_plain_file_name(std::string_view n) {
  return !n.empty() && n != "." && n != ".." && n.find('/') == std::string_view::npos &&
         n.find('\0') == std::string_view::npos;
}

inline std::string read_small_file(const fs::path& file, std::uint64_t limit) {
  FileDescriptor fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));  // a FIFO must not hang
  if (fd.get() < 0) file_error(file, "cannot open: " + errno_message(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) file_error(file, "cannot stat: " + errno_message(errno));
  if (!S_ISREG(st.st_mode)) file_error(file, "not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) > limit)
    file_error(file, "file is " + std::to_string(st.st_size) + " bytes, above the limit of " + std::to_string(limit));
  std::string out(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t r = ::read(fd.get(), out.data() + got, out.size() - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) file_error(file, "read failed: " + errno_message(errno));
    if (r == 0) break;  // shrank meanwhile
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

// The checkpoint in a directory: where its metadata and each tensor live. Shards are opened
// (mapped and validated) when first needed, so a partial restore reads only what it uses.
// With `verify`, every file is checked against its "nnx.checksum" when it is opened.
class CheckpointReader {
 public:
  explicit CheckpointReader(const fs::path& dir, bool verify = false) : dir_(dir), verify_(verify) {
    std::error_code ec;
    const fs::path index = dir / checkpoint_index_name;
    const fs::path single = dir / checkpoint_file_name;
    if (fs::exists(index, ec)) {
      // The index is the commit point: when present it wins over a stray model.safetensors.
      metadata_file_ = index;
      read_index();
    } else if (fs::exists(single, ec)) {
      metadata_file_ = single;
      auto file = std::make_shared<SafetensorsFile>(SafetensorsFile::open(single));
      metadata_ = file->metadata();
      for (const std::string& name : file->names()) {
        weight_map_.emplace(name, std::string(checkpoint_file_name));
        names_.push_back(name);
      }
      if (verify_) verify_file(*file);
      shards_.emplace(std::string(checkpoint_file_name), std::move(file));
    } else if (!fs::is_directory(dir, ec)) {
      file_error(dir, "no such checkpoint directory");
    } else {
      file_error(dir, "no checkpoint here (neither " + std::string(checkpoint_index_name) + " nor " +
                          std::string(checkpoint_file_name) + ")");
    }
    auto format = metadata_.find(key_format);
    if (format == metadata_.end())
      file_error(metadata_file_, std::string("not an nnx checkpoint: no \"") + key_format + "\" in its metadata");
    if (format->second != checkpoint_format)
      file_error(metadata_file_, "checkpoint format \"" + format->second + "\", this library reads \"" +
                                     std::string(checkpoint_format) + "\"");
  }

  const fs::path& metadata_file() const noexcept { return metadata_file_; }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  // Every tensor name, in index (or file) order.
  const std::vector<std::string>& names() const noexcept { return names_; }
  bool contains(const std::string& name) const { return weight_map_.count(name) != 0; }
  // The file holding `name` (which must be present).
  fs::path file_of(const std::string& name) const { return dir_ / weight_map_.at(name); }

  // The tensor `name`, zero-copy from its (validated) shard.
  Tensor get(const std::string& name) { return shard(weight_map_.at(name)).get(name); }

  // Opens (and, when verifying, checks) every shard.
  void open_all() {
    for (const auto& [file, names] : by_file_) shard(file);
  }
  const CheckpointVerification& verification() const noexcept { return verification_; }

  // A metadata entry holding JSON text, parsed; nullopt when absent.
  std::optional<nlohmann::json> json_entry(const char* key) const {
    auto it = metadata_.find(key);
    if (it == metadata_.end()) return std::nullopt;
    const std::string& s = it->second;
    return parse_json_strict(s.data(), s.data() + s.size(), metadata_file_,
                             (std::string("metadata \"") + key + "\"").c_str());
  }

 private:
  void read_index() {
    const std::string text = read_small_file(metadata_file_, max_index_bytes);
    const nlohmann::json j = parse_json_strict(text.data(), text.data() + text.size(), metadata_file_, "index");
    if (!j.is_object()) file_error(metadata_file_, "index must be a JSON object");
    auto meta = j.find("metadata");
    if (meta != j.end()) {
      if (!meta->is_object()) file_error(metadata_file_, "\"metadata\" must be an object");
      for (auto it = meta->begin(); it != meta->end(); ++it) {
        if (it->is_string())
          metadata_.emplace(it.key(), it->get<std::string>());
        else if (it->is_number())
          metadata_.emplace(it.key(), it->dump());  // "total_size" is a number, as Hugging Face writes it
        else
          file_error(metadata_file_, "\"metadata\" value for \"" + it.key() + "\" must be a string or a number");
      }
    }
    auto map = j.find("weight_map");
    if (map == j.end() || !map->is_object()) file_error(metadata_file_, "missing \"weight_map\" object");
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it->is_string() || !is_plain_file_name(it->get<std::string>()) ||
          it->get<std::string>() == checkpoint_index_name)
        file_error(metadata_file_, "weight_map: tensor '" + it.key() + "' maps to " + it->dump() +
                                       ", which is not a file name in the checkpoint directory");
      weight_map_.emplace(it.key(), it->get<std::string>());
      by_file_[it->get<std::string>()].push_back(it.key());
      names_.push_back(it.key());
    }
    if (!verify_) return;
    auto sum = metadata_.find(key_checksum);
    if (sum == metadata_.end()) {
      ++verification_.files_without_checksum;
      return;
    }
    check_checksum(metadata_file_, sum->second, index_checksum(metadata_, weight_map_));
    ++verification_.files_verified;
  }

  void verify_file(const SafetensorsFile& f) {
    auto sum = f.metadata().find(key_checksum);
    if (sum == f.metadata().end()) {
      // Checksums are all or nothing per save: a shard without one under an index with one
      // was altered after the save.
      if (metadata_file_ != f.path() && metadata_.count(key_checksum))
        file_error(f.path(), std::string("no \"") + key_checksum + "\" in its metadata, but " +
                                 metadata_file_.filename().string() + " has one (the shard was altered)");
      ++verification_.files_without_checksum;
      return;
    }
    std::vector<Tensor> held;  // keeps each view alive while it is hashed
    std::vector<HashedTensor> hashed;
    held.reserve(f.size());
    hashed.reserve(f.size());
    for (const std::string& name : f.names()) {
      held.push_back(f.get(name));
      const Tensor& t = held.back();
      hashed.push_back({name, t.dtype(), &t.shape(), t.raw_data(), t.nbytes()});
      verification_.bytes_hashed += t.nbytes();
    }
    check_checksum(f.path(), sum->second, file_checksum(f.metadata(), std::move(hashed)));
    ++verification_.files_verified;
  }

  // Maps a shard on first use and checks it against the index: the same save, and exactly
  // the tensors the index puts there.
  const SafetensorsFile& shard(const std::string& file) {
    auto it = shards_.find(file);
    if (it != shards_.end()) return *it->second;
    const fs::path path = dir_ / file;
    auto f = std::make_shared<SafetensorsFile>(SafetensorsFile::open(path));
    auto id = metadata_.find(key_save_id);
    if (id != metadata_.end()) {
      auto sid = f->metadata().find(key_save_id);
      if (sid == f->metadata().end() || sid->second != id->second)
        file_error(path, "shard belongs to another save (nnx.save_id " +
                             (sid == f->metadata().end() ? std::string("absent") : "\"" + sid->second + "\"") +
                             ", the index says \"" + id->second + "\")");
    }
    for (const std::string& name : f->names()) {
      auto w = weight_map_.find(name);
      if (w == weight_map_.end() || w->second != file)
        file_error(path, "holds tensor '" + name + "', which " + metadata_file_.filename().string() +
                             (w == weight_map_.end() ? " does not list" : " places in " + w->second));
    }
    for (const std::string& name : by_file_[file])
      if (!f->contains(name))
        file_error(path, "no tensor '" + name + "', which " + metadata_file_.filename().string() + " places here");
    if (verify_) verify_file(*f);
    return *shards_.emplace(file, std::move(f)).first->second;
  }

  fs::path dir_;
  bool verify_ = false;
  CheckpointVerification verification_;
  fs::path metadata_file_;
  std::map<std::string, std::string> metadata_;
  std::map<std::string, std::string> weight_map_;  // tensor -> file name
  std::map<std::string, std::vector<std::string>> by_file_;
  std::vector<std::string> names_;
  std::map<std::string, std::shared_ptr<SafetensorsFile>> shards_;
};

// The files the committed checkpoint in `dir` uses. If its index cannot be read, every
// checkpoint-named file counts as used, so a new save never overwrites one of them.
inline std::set<std::string> live_checkpoint_files(const fs::path& dir) {
  std::set<std::string> out;
  std::error_code ec;
  const fs::path index = dir / checkpoint_index_name;
  if (fs::exists(index, ec)) {
    try {
      const std::string text = read_small_file(index, max_index_bytes);
      const auto j = nlohmann::json::parse(text);
      for (const auto& [name, file] : j.at("weight_map").items()) out.insert(file.get<std::string>());
      return out;
    } catch (const std::exception&) {
      for (const auto& e : fs::directory_iterator(dir, ec))
        if (is_checkpoint_file(e.path().filename().string())) out.insert(e.path().filename().string());
      return out;
    }
  }
  if (fs::exists(dir / checkpoint_file_name, ec)) out.insert(std::string(checkpoint_file_name));
  return out;
}

// What in a directory is not an nnx checkpoint and would be lost or contradicted by saving
// one there: a config.json (which makes loaders read the directory as Hugging Face), or a
// committed model (the index, else model.safetensors) without "nnx.format".
struct ForeignContent {
  std::vector<std::string> found;  // one phrase per finding, for the error message
  std::vector<fs::path> weights;   // foreign weight files a forced save deletes
  bool config = false;             // config.json is there
};

inline ForeignContent foreign_content(const fs::path& dir) {
  ForeignContent out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  const fs::path config = dir / hf_config_name;
  if (fs::exists(fs::symlink_status(config, ec))) {
    out.config = true;
    out.found.push_back(std::string(hf_config_name) + " (a Hugging Face model's config)");
  }
  const fs::path index = dir / checkpoint_index_name;
  const fs::path single = dir / checkpoint_file_name;
  if (fs::exists(fs::symlink_status(index, ec))) {
    // The index decides what the directory holds; a model.safetensors beside it is hidden.
    try {
      const std::string text = read_small_file(index, max_index_bytes);
      const nlohmann::json j = parse_json_strict(text.data(), text.data() + text.size(), index, "index");
      const auto meta = j.is_object() ? j.find("metadata") : j.end();
      if (meta != j.end() && meta->is_object() && meta->contains(key_format)) return out;
      out.found.push_back(std::string(checkpoint_index_name) + " without \"" + key_format +
                          "\" (not an nnx checkpoint's index)");
      out.weights.push_back(index);
      const auto map = j.is_object() ? j.find("weight_map") : j.end();
      // Only shards that are there: a name the index makes up (one past NAME_MAX, say) is
      // nothing to remove, and removing it would fail.
      if (map != j.end() && map->is_object())
        for (const auto& file : *map)
          if (file.is_string() && is_plain_file_name(file.get<std::string>()) &&
              file.get<std::string>().ends_with(".safetensors") &&
              fs::exists(fs::symlink_status(dir / file.get<std::string>(), ec)))
            out.weights.push_back(dir / file.get<std::string>());
    } catch (const Error& e) {
      out.found.push_back(std::string(checkpoint_index_name) + " that cannot be read (" + e.what() + ")");
      out.weights.push_back(index);
    }
    if (fs::exists(fs::symlink_status(single, ec))) out.weights.push_back(single);
  } else if (fs::exists(fs::symlink_status(single, ec))) {
    try {
      if (SafetensorsFile::open(single).metadata().count(key_format)) return out;
      out.found.push_back(std::string(checkpoint_file_name) + " without \"" + key_format +
                          "\" in its metadata (not an nnx checkpoint)");
    } catch (const Error& e) {
      out.found.push_back(std::string(checkpoint_file_name) + " that cannot be read (" + e.what() + ")");
    }
    out.weights.push_back(single);
  }
  return out;
}

// Best effort: the save is already committed, so failing to delete stale files is harmless.
inline void remove_stale_files(const fs::path& dir, const std::set<std::string>& keep) noexcept {
  try {
    std::error_code ec;
    std::vector<fs::path> stale;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (is_checkpoint_file(name) && !keep.count(name)) stale.push_back(e.path());
    }
    for (const auto& p : stale) fs::remove(p, ec);
    if (!stale.empty()) fsync_directory(dir);
  } catch (const std::exception&) {
  }
}

inline void emit_event(const CheckpointOptions& options, const std::string& event) {
  if (options.on_event) options.on_event(event);
}

// One line per leaf for messages: "Param f32[2, 3]" or "Param i8[2, 3] scale f32[3]".
inline std::string describe_target_leaf(const VariableState& leaf) {
  std::string s = std::string(leaf.kind_name()) + " " + describe(leaf.primary());
  if (const auto* q = std::get_if<QTensor>(&leaf.value))
    for (const auto& sc : q->scale) s += " scale " + describe(sc);
  return s;
}

inline std::string leaf_json_text(const nlohmann::json& leaf) {
  std::string path;
  if (auto p = leaf.find("path"); p != leaf.end() && p->is_array())
    for (const auto& k : *p) path += (path.empty() ? "" : "/") + (k.is_string() ? k.get<std::string>() : k.dump());
  return "'" + path + "' " + leaf.dump();
}

// Where two graphdefs (as JSON) first differ: the root type, then the leaves in order, then
// the nodes in order.
inline std::string first_graphdef_difference(const nlohmann::json& expected, const nlohmann::json& found) {
  if (expected.value("type", "") != found.value("type", ""))
    return "module type: expected " + expected.value("type", "") + ", found " + found.value("type", "");
  for (const char* part : {"leaves", "nodes"}) {
    const nlohmann::json& a = expected.at(part);
    const nlohmann::json& b = found.at(part);
    const bool leaves = std::string_view(part) == "leaves";
    for (std::size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
      const std::string where = std::string(leaves ? "leaf " : "node ") + std::to_string(i) + ": ";
      auto text = [&](const nlohmann::json& x) { return leaves ? leaf_json_text(x) : x.dump(); };
      if (i >= b.size()) return where + "expected " + text(a[i]) + ", absent from the checkpoint";
      if (i >= a.size()) return where + "not expected, found " + text(b[i]);
      if (a[i] != b[i]) return where + "expected " + text(a[i]) + ", found " + text(b[i]);
    }
  }
  return "the graphdefs differ";
}

inline GraphDef<> stored_graphdef(const CheckpointReader& ckpt) {
  auto j = ckpt.json_entry(key_graphdef);
  if (!j) file_error(ckpt.metadata_file(), std::string("the checkpoint stores no graphdef (\"") + key_graphdef + "\")");
  try {
    return graphdef_from_json(*j);
  } catch (const Error& e) {
    file_error(ckpt.metadata_file(), std::string("stored graphdef: ") + e.what());
  }
}

inline void check_graphdef(const CheckpointReader& ckpt, const GraphDef<>& expected) {
  const GraphDef<> found = stored_graphdef(ckpt);
  if (found == expected) return;
  file_error(ckpt.metadata_file(), "the stored graphdef differs from the expected one at " +
                                       first_graphdef_difference(to_json(expected), to_json(found)));
}

}  // namespace detail

// What `dir` holds that is not an nnx checkpoint and that saving one there would destroy or
// contradict, as a phrase for messages ("config.json (a Hugging Face model's config) and
// model.safetensors without ..."): a config.json, which makes loaders read the directory as
// Hugging Face, or a model.safetensors or index without "nnx.format". Empty when `dir` is
// absent, holds no model, or holds an nnx checkpoint. save_checkpoint refuses a directory
// where this is not empty (unless CheckpointOptions::overwrite_foreign); programs call it to
// refuse a destination before doing the work of a save.
inline std::string foreign_checkpoint_content(const std::filesystem::path& dir) {
  const detail::ForeignContent foreign = detail::foreign_content(dir);
  std::string what;
  for (std::size_t i = 0; i < foreign.found.size(); ++i) what += (i ? " and " : "") + foreign.found[i];
  return what;
}

// Saves `state` as a checkpoint in `dir` (created if needed), replacing the checkpoint there
// atomically. `graphdef` (when valid()) and `config` (when not null) are stored too; read
// them back with checkpoint_graphdef / checkpoint_config. Throws InvalidArgument before
// writing anything if a leaf is abstract or undefined; CheckpointError naming the directory,
// before writing anything, if it holds a foreign model (see foreign_checkpoint_content;
// options.overwrite_foreign replaces it); CheckpointError naming the file if writing fails.
// Files in `dir` named model*.safetensors, the index, and ".model*.tmp-*" belong to the
// checkpoint: those the new save does not use are deleted, including temp files of crashed
// saves; others are left alone. One writer per directory at a time.
inline void save_checkpoint(const std::filesystem::path& dir, const State& state, const GraphDef<>& graphdef = {},
                            const nlohmann::json& config = nullptr, const CheckpointOptions& options = {}) {
  namespace fs = std::filesystem;
  using detail::emit_event;

  // ---- everything that can be checked is checked before the file system is touched ----
  const PureDict dict = state.to_pure_dict();
  std::vector<std::pair<std::string, Tensor>> tensors;
  tensors.reserve(dict.size());
  for (const auto& [path, t] : dict) {
    if (!t.defined() || t.is_abstract())
      throw InvalidArgument("save_checkpoint " + dir.string() + ": leaf tensor '" + path.to_string() + "' is " +
                            describe(t) + " (it has no data)");
    tensors.emplace_back(path.to_string(), t);
  }

  const std::string save_id = io::detail::unique_hex();
  nlohmann::ordered_json kinds = nlohmann::ordered_json::object();
  nlohmann::ordered_json axes = nlohmann::ordered_json::object();
  for (const auto& [path, leaf] : state) {
    kinds[path.to_string()] = std::string(leaf.kind_name());
    if (!leaf.axes().empty()) axes[path.to_string()] = leaf.axes();
  }
  std::map<std::string, std::string> metadata{{detail::key_format, std::string(checkpoint_format)},
                                              {detail::key_save_id, save_id}};
  try {
    metadata[detail::key_kinds] = kinds.dump();
    if (!axes.empty()) metadata[detail::key_axes] = axes.dump();
    if (graphdef.valid()) metadata[detail::key_graphdef] = to_json(graphdef).dump();
    if (!config.is_null()) metadata[detail::key_config] = config.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument("save_checkpoint " + dir.string() + ": metadata is not UTF-8 (" + e.what() + ")");
  }

  // Fill shards in state order, starting a new one when the next tensor would overflow it.
  std::vector<std::vector<std::size_t>> shards(1);
  std::size_t shard_bytes = 0;
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::size_t nb = tensors[i].second.nbytes();
    if (!shards.back().empty() && shard_bytes + nb > options.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(i);
    shard_bytes += nb;
  }
  const std::size_t n = shards.size();
  if (n > 99999)
    throw InvalidArgument("save_checkpoint " + dir.string() + ": " + std::to_string(n) +
                          " shards (at most 99999); raise max_shard_bytes");

  // ---- the directory, and what the committed checkpoint in it uses ----
  fs::path d = dir.lexically_normal();
  if (!d.has_filename() && d.has_parent_path()) d = d.parent_path();  // "ckpt/" -> "ckpt"
  if (!options.overwrite_foreign) {
    const std::string foreign = foreign_checkpoint_content(d);
    if (!foreign.empty())
      detail::file_error(d, "holds " + foreign + "; saving an nnx checkpoint here would destroy or contradict it " +
                                "(save elsewhere, or set CheckpointOptions::overwrite_foreign to replace it)");
  } else {
    // Weights first, config.json last: a crash in between leaves a config without weights,
    // which no loader mistakes for a model, rather than foreign weights that look native.
    const detail::ForeignContent foreign = detail::foreign_content(d);
    for (const fs::path& f : foreign.weights)
      if (::unlink(f.c_str()) != 0 && errno != ENOENT)
        detail::file_error(f, "cannot remove it to replace it: " + io::detail::errno_message(errno));
    if (!foreign.weights.empty()) io::detail::fsync_directory(d);
    const fs::path config = d / detail::hf_config_name;
    if (foreign.config) {
      if (::unlink(config.c_str()) != 0 && errno != ENOENT)
        detail::file_error(config, "cannot remove it to replace the model: " + io::detail::errno_message(errno));
      io::detail::fsync_directory(d);
    }
  }
  std::error_code ec;
  const bool created = fs::create_directories(d, ec);
  if (ec) detail::file_error(d, "cannot create directory: " + ec.message());
  if (created) io::detail::fsync_directory(d.parent_path());
  const std::set<std::string> live = detail::live_checkpoint_files(d);

  // A one-file save may always write model.safetensors: if it is live, the rename is the
  // commit; if an index is live, the index wins until it is removed. A sharded save must not
  // overwrite a live shard, so it tags its names when the plain ones are in use.
  std::vector<std::string> names(n);
  if (n == 1) {
    names[0] = std::string(checkpoint_file_name);
  } else {
    bool clash = false;
    for (std::size_t i = 0; i < n; ++i) clash = clash || live.count(detail::shard_name(i, n, "")) != 0;
    for (std::size_t i = 0; i < n; ++i) names[i] = detail::shard_name(i, n, clash ? save_id.substr(0, 8) : "");
  }

  // ---- write ----
  const fs::path index = d / checkpoint_index_name;
  if (n == 1) {
    // With no live index, renaming model.safetensors into place is the commit; otherwise
    // removing the index is.
    std::error_code exists_ec;
    const bool index_live = fs::exists(index, exists_ec);
    if (options.checksums) metadata[detail::key_checksum] = detail::checksum_text(detail::file_checksum(metadata, tensors));
    io::detail::save_safetensors_impl(d / names[0], tensors, metadata, [&](const std::string& event) {
      emit_event(options, event);
      if (!index_live && event.starts_with("temp ")) emit_event(options, "commit");
    });
    if (index_live) emit_event(options, "commit");
    if (::unlink(index.c_str()) == 0) {
      io::detail::fsync_directory(d);
    } else if (errno != ENOENT) {
      detail::file_error(index, "cannot remove the previous index: " + io::detail::errno_message(errno));
    }
  } else {
    const std::map<std::string, std::string> shard_metadata{{detail::key_format, std::string(checkpoint_format)},
                                                            {detail::key_save_id, save_id}};
    nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
    std::map<std::string, std::string> hashed_map;  // weight_map as a reader holds it
    std::uint64_t total = 0;
    for (std::size_t s = 0; s < n; ++s) {
      std::vector<std::pair<std::string, Tensor>> part;
      part.reserve(shards[s].size());
      for (std::size_t i : shards[s]) {
        part.push_back(tensors[i]);
        weight_map[tensors[i].first] = names[s];
        hashed_map[tensors[i].first] = names[s];
        total += tensors[i].second.nbytes();
      }
      std::map<std::string, std::string> part_metadata = shard_metadata;
      if (options.checksums)
        part_metadata[detail::key_checksum] = detail::checksum_text(detail::file_checksum(part_metadata, part));
      io::detail::save_safetensors_impl(d / names[s], part, part_metadata, options.on_event);
    }
    nlohmann::ordered_json index_meta = nlohmann::ordered_json::object();
    index_meta["total_size"] = total;
    for (const auto& [k, v] : metadata) index_meta[k] = v;
    if (options.checksums) {
      std::map<std::string, std::string> hashed_meta = metadata;
      hashed_meta["total_size"] = std::to_string(total);  // a number, read back as its JSON text
      index_meta[detail::key_checksum] = detail::checksum_text(detail::index_checksum(hashed_meta, hashed_map));
    }
    const std::string text = nlohmann::ordered_json{{"metadata", index_meta}, {"weight_map", weight_map}}.dump(2) + "\n";
    emit_event(options, "commit");
    io::detail::write_file_atomically(
        index, [&](int fd) { io::detail::write_all(fd, text.data(), text.size(), index); }, options.on_event);
  }
  emit_event(options, "committed");

  std::set<std::string> keep(names.begin(), names.end());
  if (n > 1) keep.insert(std::string(checkpoint_index_name));
  detail::remove_stale_files(d, keep);
}

// Restores the checkpoint in `dir` into the shape of `target` (abstract or concrete: only its
// paths, kinds, dtypes and shapes are used). Returns a State with target's paths (in target
// order), kinds and metadata whose tensors are zero-copy views of the mapped files.
// Throws CheckpointError, naming the file, the leaf and expected versus found, when:
// a file is missing or corrupt; a target leaf has no tensor; a tensor has another dtype or
// shape; the stored kind differs; a leaf is a QTensor on one side and a Tensor on the other,
// or has another number of scales; the checkpoint holds a tensor the target lacks (unless
// options.filter is set); options.graphdef is valid and differs from the stored graphdef;
// options.verify_checksums is set and a file it reads does not match its "nnx.checksum".
inline State restore_checkpoint(const std::filesystem::path& dir, const State& target,
                                const RestoreOptions& options = {}) {
  using detail::file_error;
  detail::CheckpointReader ckpt(dir, options.verify_checksums);
  if (options.graphdef.valid()) detail::check_graphdef(ckpt, options.graphdef);
  const auto kinds = ckpt.json_entry(detail::key_kinds);
  if (!kinds || !kinds->is_object())
    file_error(ckpt.metadata_file(), std::string("no \"") + detail::key_kinds + "\" object in the metadata");
  const bool partial = static_cast<bool>(options.filter);

  State out;
  std::set<std::string> expected;  // every tensor name the target needs
  for (const auto& [path, leaf] : target) {
    if (partial && !options.filter(path, leaf)) continue;
    const std::string name = path.to_string();
    const std::string want = detail::describe_target_leaf(leaf);

    // Read one tensor of the leaf, checking it against what the target holds there.
    auto read = [&](const std::string& tname, const Tensor& like) {
      expected.insert(tname);
      if (!ckpt.contains(tname))
        file_error(ckpt.metadata_file(), "leaf '" + name + "': no tensor '" + tname + "' (expected " + want + ")");
      Tensor t = ckpt.get(tname);
      if (t.dtype() != like.dtype() || t.shape() != like.shape())
        file_error(ckpt.file_of(tname), "leaf '" + name + "': tensor '" + tname + "' is " + describe(t) +
                                            ", expected " + std::string(dtype_name(like.dtype())) +
                                            to_string(like.shape()) + " (" + want + ")");
      return t;
    };

    const auto* q = std::get_if<QTensor>(&leaf.value);
    const bool stored_as_q = ckpt.contains(name + "/qvalue");
    if (!q && !ckpt.contains(name) && stored_as_q)
      file_error(ckpt.metadata_file(), "leaf '" + name + "': the checkpoint holds a QTensor ('" + name +
                                           "/qvalue', ...); the target expects a Tensor (" + want + ")");
    if (q && !stored_as_q && ckpt.contains(name))
      file_error(ckpt.file_of(name), "leaf '" + name + "': the checkpoint holds a Tensor; the target expects a QTensor (" +
                                         want + ")");
    if (q && ckpt.contains(name + "/scale/" + std::to_string(q->scale.size())))
      file_error(ckpt.metadata_file(), "leaf '" + name + "': the checkpoint holds more than the " +
                                           std::to_string(q->scale.size()) + " scales the target expects (" + want +
                                           ")");
    // Presence first (a missing tensor says more than a missing kind), then the kind.
    if (!ckpt.contains(q ? name + "/qvalue" : name))
      file_error(ckpt.metadata_file(), "leaf '" + name + "': no tensor '" + (q ? name + "/qvalue" : name) +
                                           "' (expected " + want + ")");
    auto kind = kinds->find(name);
    if (kind == kinds->end() || !kind->is_string())
      file_error(ckpt.metadata_file(), "leaf '" + name + "': no kind recorded in \"" + detail::key_kinds + "\"");
    if (kind->get<std::string>() != leaf.kind_name())
      file_error(ckpt.metadata_file(), "leaf '" + name + "': stored as a " + kind->get<std::string>() +
                                           ", the target expects a " + std::string(leaf.kind_name()) + " (" + want +
                                           ")");

    VariableState restored;
    restored.kind = leaf.kind;
    restored.metadata = leaf.metadata;
    if (!q) {
      restored.value.emplace<Tensor>(read(name, leaf.tensor()));
    } else {
      QTensor r{read(name + "/qvalue", q->qvalue), {}};
      r.scale.reserve(q->scale.size());
      for (std::size_t i = 0; i < q->scale.size(); ++i)
        r.scale.push_back(read(name + "/scale/" + std::to_string(i), q->scale[i]));
      restored.value.emplace<QTensor>(std::move(r));
    }
    out.insert(path, std::move(restored));
  }

  if (!partial)
    for (const std::string& name : ckpt.names())
      if (!expected.count(name))
        file_error(ckpt.file_of(name), "tensor '" + name +
                                           "' is not a leaf of the target (restore with a filter to read a subset)");
  return out;
}

// Partial restore: only the target leaves matching `filter` (any nnx filter, e.g.
// nnx::of<nnx::Param>); tensors they do not need are ignored.
template <Filter F>
State restore_checkpoint(const std::filesystem::path& dir, const State& target, const F& filter,
                         const GraphDef<>& graphdef = {}) {
  RestoreOptions options;
  options.filter = [&filter](const Path& p, const VariableState& v) { return static_cast<bool>(filter(p, v)); };
  options.graphdef = graphdef;
  return restore_checkpoint(dir, target, options);
}

// Checks the checkpoint in `dir` against its checksums: opens the index or model.safetensors
// and every shard (each passing restore's file checks: format, safetensors structure, save
// id, the tensors the index places there) and recomputes every file's "nnx.checksum".
// Throws CheckpointError naming the first bad file and, for a mismatch, the stored versus the
// computed checksum. A checkpoint saved without checksums (before they existed, or with
// CheckpointOptions::checksums off) passes with files_verified == 0: read
// files_without_checksum to tell "verified" from "nothing to verify".
inline CheckpointVerification verify_checkpoint(const std::filesystem::path& dir) {
  detail::CheckpointReader ckpt(dir, /*verify=*/true);
  ckpt.open_all();
  return ckpt.verification();
}

// The graphdef stored in the checkpoint. Throws CheckpointError if there is none or it is
// malformed (a kind this program does not define is malformed too).
inline GraphDef<> checkpoint_graphdef(const std::filesystem::path& dir) {
  return detail::stored_graphdef(detail::CheckpointReader(dir));
}

// The dtype a checkpoint stores its weights in (stored_weight_dtype).
inline DType checkpoint_weight_dtype(const std::filesystem::path& dir) {
  detail::CheckpointReader ckpt(dir);
  std::set<DType> dtypes;
  for (const std::string& name : ckpt.names()) dtypes.insert(ckpt.get(name).dtype());
  return stored_weight_dtype(dtypes);
}

// The layout of the layers under `key` ("h", "layers") the checkpoint stores, from its tensor
// names (nnx/core/layers.hpp); std::nullopt when it holds no such layers.
inline std::optional<Layout> checkpoint_layout(const std::filesystem::path& dir, std::string_view key) {
  detail::CheckpointReader ckpt(dir);
  std::vector<Path> paths;
  for (const std::string& name : ckpt.names()) paths.push_back(Path::parse(name));
  return detect_layout(paths, key);
}

// restore_checkpoint into `target` whatever layout the checkpoint stores the layers under `key`
// in: read in the stored layout, returned in the target's (stacked leaves become per-layer
// views without a copy; per-layer leaves are stacked by copying).
inline State restore_checkpoint_any_layout(const std::filesystem::path& dir, const State& target,
                                           std::string_view key) {
  const std::optional<Layout> stored = checkpoint_layout(dir, key);
  const std::optional<Layout> wanted = layout_of(target, key);
  if (!stored || !wanted || *stored == *wanted) return restore_checkpoint(dir, target);
  return to_layout(restore_checkpoint(dir, to_layout(target, key, *stored)), key, *wanted);
}

// The config stored in the checkpoint, or null when none was saved.
inline nlohmann::json checkpoint_config(const std::filesystem::path& dir) {
  auto j = detail::CheckpointReader(dir).json_entry(detail::key_config);
  return j ? std::move(*j) : nlohmann::json(nullptr);
}

// All metadata strings of the checkpoint ("nnx.format", "nnx.kinds", ...).
inline std::map<std::string, std::string> checkpoint_metadata(const std::filesystem::path& dir) {
  return detail::CheckpointReader(dir).metadata();
}

}  // namespace nnx::io
