// The checkpoints nnx_crash_save (tests/support/crash_save.cpp) writes, shared with
// tests/io/test_crash_save.cpp, which kills it mid-save and checks what the directory holds.
//
// Generation g is a State of about 3.5 MB whose every byte depends on g: a leaf
// "generation" (i64 [1] = g) and tensors of several dtypes filled from a generator seeded by
// (g, tensor), so any mix of two generations' files differs from both. Its config is
// {"generation": g}. The layout cycles with g (options_for), so consecutive saves cross every
// kind of re-save.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "nnx/core.hpp"
#include "nnx/io/checkpoint.hpp"

namespace crash_save {

struct LeafSpec {
  const char* path;
  nnx::Shape shape;
  nnx::DType dtype;
};

inline const LeafSpec kLeaves[] = {
    {"w/0", {256, 512}, nnx::DType::f32}, {"w/1", {256, 512}, nnx::DType::f32},
    {"w/2", {256, 512}, nnx::DType::f32}, {"w/3", {256, 512}, nnx::DType::f32},
    {"w/4", {256, 512}, nnx::DType::f32}, {"w/5", {256, 512}, nnx::DType::f32},
    {"emb", {300, 513}, nnx::DType::bf16}, {"q", {1001}, nnx::DType::i8},
    {"steps", {7, 3}, nnx::DType::i64},
};

inline std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Generation g's state; abstract (shapes and dtypes only) as a restore target.
inline nnx::State make_state(std::int64_t g, bool abstract = false) {
  nnx::State s;
  auto add = [&](const char* path, nnx::Tensor t) {
    s.insert(nnx::Path::parse(path), nnx::VariableState{&nnx::Param::kind_info(), std::move(t), nullptr});
  };
  if (abstract) {
    add("generation", nnx::Tensor::abstract({1}, nnx::DType::i64));
    for (const LeafSpec& l : kLeaves) add(l.path, nnx::Tensor::abstract(l.shape, l.dtype));
    return s;
  }
  add("generation", nnx::Tensor::from_vector(std::vector<std::int64_t>{g}, {1}));
  std::uint64_t tensor = 0;
  for (const LeafSpec& l : kLeaves) {
    nnx::Tensor t = nnx::Tensor::empty(l.shape, l.dtype);
    std::uint64_t seed = static_cast<std::uint64_t>(g) * 1000003u + ++tensor;
    auto* p = reinterpret_cast<unsigned char*>(t.raw_data());
    for (std::size_t i = 0; i < t.nbytes(); i += 8) {
      const std::uint64_t x = splitmix64(seed);
      std::memcpy(p + i, &x, std::min<std::size_t>(8, t.nbytes() - i));
    }
    add(l.path, std::move(t));
  }
  return s;
}

inline nlohmann::json config_of(std::int64_t g) { return {{"generation", g}}; }

// The layout of generation g, in a cycle of 5 that crosses every kind of re-save: one file
// (twice), 3 shards (twice: the second save must not reuse the live names), 4 shards (another
// count), and back to one file. (Few shards: each costs two fsyncs, the bulk of a save.)
inline constexpr int kLayouts = 5;
inline nnx::io::CheckpointOptions options_for(std::int64_t g) {
  nnx::io::CheckpointOptions o;
  const std::int64_t phase = g % kLayouts;
  if (phase == 2 || phase == 3) o.max_shard_bytes = 1'600'000;
  if (phase == 4) o.max_shard_bytes = std::size_t{1} << 20;
  return o;
}

}  // namespace crash_save
