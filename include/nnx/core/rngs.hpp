// nnx/core/rngs.hpp — Rngs: counter-based, splittable random streams.
//
// Random numbers come from Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy
// as 1, 2, 3", SC'11): a pure function of (counter, key). Element i of a random tensor
// depends only on the key and i, so the numbers are the same on every run, platform and
// thread count.
//
// Rngs holds named streams (params, dropout, sample, or names of your own). Each stream is
// a module of two RngState variables, a key and a counter, so Rngs splits, merges and
// checkpoints like any other state ("rngs/params/key", "rngs/params/count").
//
//   nnx::Rngs rngs{0};                                   // one "default" stream
//   nnx::Rngs named{{"params", 0}, {"dropout", 1}};      // independent named streams
//   nnx::RngKey k = rngs.params();                       // falls back to "default"
//   auto w = nnx::init::normal(k, {768, 3072}, 0.02f);   // see nnx/core/init.hpp
//   auto keys = nnx::split_key(k, 4);                    // four independent keys
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {

// A Philox key: 64 bits naming an independent random sequence.
struct RngKey {
  std::uint32_t k0 = 0;
  std::uint32_t k1 = 0;
  friend bool operator==(RngKey, RngKey) = default;
};

namespace detail {

using PhiloxBlock = std::array<std::uint32_t, 4>;

inline PhiloxBlock philox4x32_10(PhiloxBlock ctr, RngKey key) noexcept {
  constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;  // multipliers
  constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;  // Weyl key increments
  std::uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(m0) * ctr[0];
    const std::uint64_t p1 = static_cast<std::uint64_t>(m1) * ctr[2];
    ctr = {static_cast<std::uint32_t>(p1 >> 32) ^ ctr[1] ^ k0, static_cast<std::uint32_t>(p1),
           static_cast<std::uint32_t>(p0 >> 32) ^ ctr[3] ^ k1, static_cast<std::uint32_t>(p0)};
    k0 += w0;
    k1 += w1;
  }
  return ctr;
}

// The last counter word separates the uses of a key, so they never share a counter.
enum PhiloxDomain : std::uint32_t {
  domain_bits = 0,            // tensor data: {block, block >> 32, attempt, 0}
  domain_truncated = 1,       // truncated normal: {element, element >> 32, attempt, 1}
  domain_fold_in = 0xF01D1u,  // fold_in(key, data)
  domain_split = 0x5B1170u,   // split(key, n)
  domain_stream = 0x57EA3u,   // a stream's successive keys
  domain_sample_token = 0x5A3B7u,  // the uniform of a sampled token (nnx/engine/sampling.hpp)
};

inline RngKey key_from_block(const PhiloxBlock& b) noexcept { return {b[0], b[1]}; }

inline std::uint64_t fnv1a64(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

}  // namespace detail

// A key derived from `key` and `data`; different data give independent keys.
inline RngKey fold_in(RngKey key, std::uint64_t data) noexcept {
  return detail::key_from_block(detail::philox4x32_10(
      {static_cast<std::uint32_t>(data), static_cast<std::uint32_t>(data >> 32), 0, detail::domain_fold_in}, key));
}

// n independent keys derived from `key`.
inline std::vector<RngKey> split_key(RngKey key, std::uint32_t n = 2) {
  std::vector<RngKey> out;
  out.reserve(n);
  for (std::uint32_t i = 0; i < n; ++i)
    out.push_back(detail::key_from_block(detail::philox4x32_10({i, 0, 0, detail::domain_split}, key)));
  return out;
}

// The key of a seed.
inline RngKey key_from_seed(std::uint64_t seed) noexcept {
  return {static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
}

// One named stream: a key and how many keys it has handed out.
struct RngStream {
  RngState key;    // u32[2]
  RngState count;  // u64[]
  NNX_FIELDS(key, count)

  RngStream() = default;
  explicit RngStream(RngKey k) {
    detail::ConcreteTensorScope concrete;  // streams hold real numbers even inside eval_shape
    key = RngState(Tensor::from_vector(std::vector<std::uint32_t>{k.k0, k.k1}));
    count = RngState(Tensor::zeros({}, DType::u64));
  }
  // The stream's next key; advances the counter seen by every handle to this stream. The
  // counter is written in place only when this stream holds the only reference to its
  // tensor; a state it was merged from (shared, not donated) keeps its value.
  RngKey next() {
    const auto* k = key.value().data<std::uint32_t>();
    Tensor& counter = count.value();
    if (counter.use_count() > 1) {
      detail::ConcreteTensorScope concrete;  // a real copy even inside eval_shape
      Tensor copy = counter.clone();
      counter = std::move(copy);
    }
    auto* c = counter.data<std::uint64_t>();
    const std::uint64_t n = (*c)++;
    return detail::key_from_block(detail::philox4x32_10(
        {static_cast<std::uint32_t>(n), static_cast<std::uint32_t>(n >> 32), 0, detail::domain_stream}, {k[0], k[1]}));
  }
};

class Rngs {
 public:
  // No streams (for default construction; asking for a key throws).
  Rngs() = default;
  // One stream, "default", which every stream name falls back to.
  explicit Rngs(std::uint64_t seed) { add_stream("default", seed); }
  // Named streams with their own seeds: Rngs{{"params", 0}, {"dropout", 1}}.
  Rngs(std::initializer_list<std::pair<std::string_view, std::uint64_t>> streams) {
    for (const auto& [name, seed] : streams) add_stream(name, seed);
  }

  void add_stream(std::string_view name, std::uint64_t seed) {
    PathKey check{name};  // validates the name: it becomes a path key
    (void)check;
    auto [it, inserted] = streams_.try_emplace(std::string(name));
    if (!inserted) throw InvalidArgument("Rngs: stream '" + std::string(name) + "' already exists");
    it->second = RngStream(fold_in(key_from_seed(seed), detail::fnv1a64(name)));
  }
  bool has_stream(std::string_view name) const { return streams_.find(std::string(name)) != streams_.end(); }

  // The next key of stream `name`, or of "default" when there is no such stream.
  RngKey operator()(std::string_view name = "default") { return stream(name).next(); }
  RngKey params() { return (*this)("params"); }
  RngKey dropout() { return (*this)("dropout"); }
  RngKey sample() { return (*this)("sample"); }

  // New, independent Rngs with the same stream names (advances each of this one's streams).
  Rngs fork() {
    Rngs out;
    for (auto& [name, s] : streams_) out.streams_.emplace(name, RngStream(s.next()));
    return out;
  }

  std::map<std::string, RngStream>& nnx_children() { return streams_; }
  const std::map<std::string, RngStream>& nnx_children() const { return streams_; }

 private:
  RngStream& stream(std::string_view name) {
    auto it = streams_.find(std::string(name));
    if (it == streams_.end()) it = streams_.find("default");
    if (it == streams_.end())
      throw InvalidArgument("Rngs: no stream '" + std::string(name) + "' and no 'default' stream");
    return it->second;
  }
  std::map<std::string, RngStream> streams_;
};

}  // namespace nnx
