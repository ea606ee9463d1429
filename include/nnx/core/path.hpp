// nnx/core/path.hpp — Path: where a leaf lives in a module tree.
//
// A path is a sequence of keys, each either a name (a struct field, a map key) or an integer
// index (a std::vector element). Integer keys stay integers: "blocks/0/attn" holds the
// integer 0, and it is written as a JSON number wherever a path is serialized. Names are
// interned, so a Path is a small inline array that copies, hashes and compares without
// allocating — split and merge build one per leaf.
//
//   nnx::Path p{"blocks", 0, "attn", "kernel"};
//   p.to_string();                                  // "blocks/0/attn/kernel"
//   nnx::Path::parse("blocks/0/attn/kernel") == p;  // true
//   p[1].is_index();                                // true
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>

#include "nnx/core/error.hpp"

namespace nnx {
namespace detail {

struct InternTable {
  std::mutex mutex;
  std::unordered_set<std::string> names;
};
inline InternTable& intern_table() {
  static InternTable* table = new InternTable;  // never destroyed: interned pointers live forever
  return *table;
}
// A stable pointer shared by every equal string.
inline const std::string* intern(std::string_view s) {
  auto& t = intern_table();
  std::lock_guard lock(t.mutex);
  return &*t.names.emplace(s).first;
}

inline bool is_all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

}  // namespace detail

class PathKey {
 public:
  // The index 0.
  PathKey() = default;
  // An integer index (a std::vector element).
  PathKey(int index) : PathKey(static_cast<std::int64_t>(index)) {}  // NOLINT: keys read like literals
  PathKey(std::size_t index) : PathKey(static_cast<std::int64_t>(index)) {}
  PathKey(std::int64_t index) {
    if (index < 0) throw InvalidArgument("PathKey: negative index " + std::to_string(index));
    bits_ = (static_cast<std::uint64_t>(index) << 1) | 1u;
  }
  // A name. It must be non-empty, hold no '/', and not be all digits (that is an index).
  PathKey(const char* name) : PathKey(std::string_view(name)) {}
  PathKey(const std::string& name) : PathKey(std::string_view(name)) {}
  PathKey(std::string_view name) {
    if (name.empty() || name.find('/') != std::string_view::npos || detail::is_all_digits(name))
      throw InvalidArgument("PathKey: invalid name '" + std::string(name) +
                            "' (names are non-empty, hold no '/', and are not all digits)");
    bits_ = reinterpret_cast<std::uintptr_t>(detail::intern(name));
  }
  // From an already interned name (the fast path used by module traversal).
  static PathKey from_interned(const std::string* name) noexcept {
    PathKey k;
    k.bits_ = reinterpret_cast<std::uintptr_t>(name);
    return k;
  }

  bool is_index() const noexcept { return bits_ & 1u; }
  bool is_name() const noexcept { return !is_index(); }
  std::int64_t index() const {
    if (!is_index()) throw InvalidArgument("PathKey: '" + std::string(name()) + "' is a name, not an index");
    return static_cast<std::int64_t>(bits_ >> 1);
  }
  std::string_view name() const {
    if (is_index()) throw InvalidArgument("PathKey: " + std::to_string(bits_ >> 1) + " is an index, not a name");
    return *reinterpret_cast<const std::string*>(bits_);
  }
  std::string to_string() const {
    return is_index() ? std::to_string(bits_ >> 1) : std::string(*reinterpret_cast<const std::string*>(bits_));
  }
  std::uint64_t bits() const noexcept { return bits_; }

  friend bool operator==(PathKey a, PathKey b) noexcept { return a.bits_ == b.bits_; }

 private:
  std::uint64_t bits_ = 1;  // interned pointers are aligned, so the low bit tags indices
};

class Path {
 public:
  static constexpr std::size_t max_depth = 12;

  Path() = default;
  Path(std::initializer_list<PathKey> keys) {
    for (PathKey k : keys) push_back(k);
  }
  // "blocks/0/attn/kernel" -> {"blocks", 0, "attn", "kernel"}; all-digit parts are indices.
  static Path parse(std::string_view text) {
    Path p;
    if (text.empty()) return p;
    std::size_t start = 0;
    while (true) {
      std::size_t slash = text.find('/', start);
      std::string_view part = text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
      if (part.empty()) throw InvalidArgument("Path::parse: empty key in '" + std::string(text) + "'");
      if (detail::is_all_digits(part)) {
        // One spelling per index, so that parse and to_string are inverses.
        if (part.size() > 1 && part[0] == '0')
          throw InvalidArgument("Path::parse: index '" + std::string(part) + "' has leading zeros in '" +
                                std::string(text) + "'");
        if (part.size() > 18) throw InvalidArgument("Path::parse: index too large in '" + std::string(text) + "'");
        p.push_back(PathKey(static_cast<std::int64_t>(std::stoll(std::string(part)))));
      } else {
        p.push_back(PathKey(part));
      }
      if (slash == std::string_view::npos) break;
      start = slash + 1;
    }
    return p;
  }

  std::size_t size() const noexcept { return depth_; }
  bool empty() const noexcept { return depth_ == 0; }
  PathKey operator[](std::size_t i) const noexcept { return keys_[i]; }
  const PathKey* begin() const noexcept { return keys_.data(); }
  const PathKey* end() const noexcept { return keys_.data() + depth_; }
  PathKey back() const noexcept { return keys_[depth_ - 1]; }

  void push_back(PathKey key) {
    if (depth_ == max_depth) [[unlikely]]
      throw_too_deep();
    keys_[depth_++] = key;
  }
  void pop_back() noexcept { --depth_; }
  // This path extended by one key.
  Path operator/(PathKey key) const {
    Path p = *this;
    p.push_back(key);
    return p;
  }
  Path parent() const {
    Path p = *this;
    if (p.depth_) --p.depth_;
    return p;
  }
  bool starts_with(const Path& prefix) const noexcept {
    if (prefix.depth_ > depth_) return false;
    for (std::size_t i = 0; i < prefix.depth_; ++i)
      if (!(keys_[i] == prefix.keys_[i])) return false;
    return true;
  }
  bool contains(PathKey key) const noexcept {
    for (std::size_t i = 0; i < depth_; ++i)
      if (keys_[i] == key) return true;
    return false;
  }

  std::string to_string() const {
    std::string out;
    for (std::size_t i = 0; i < depth_; ++i) {
      if (i) out += '/';
      out += keys_[i].to_string();
    }
    return out;
  }

  // Each key's bits go through a full 64-bit mix (splitmix64's finalizer) before the next
  // key: a name's bits are its interned pointer, so names allocated a few bytes apart differ
  // in a few low bits, and a shift-xor combine let 150 leaves of one tree collide, depending
  // on where the heap put the names. State tables index by the low bits of this hash.
  std::size_t hash() const noexcept {
    const auto mix = [](std::uint64_t x) noexcept {
      x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
      x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
      return x ^ (x >> 31);
    };
    std::uint64_t h = mix(0x9e3779b97f4a7c15ull ^ depth_);
    for (std::size_t i = 0; i < depth_; ++i) h = mix(h ^ keys_[i].bits());
    return static_cast<std::size_t>(h);
  }

  friend bool operator==(const Path& a, const Path& b) noexcept {
    if (a.depth_ != b.depth_) return false;
    for (std::size_t i = 0; i < a.depth_; ++i)
      if (!(a.keys_[i] == b.keys_[i])) return false;
    return true;
  }

 private:
  [[noreturn, gnu::cold, gnu::noinline]] void throw_too_deep() const {
    throw InvalidArgument("Path: '" + to_string() + "' is deeper than " + std::to_string(max_depth) + " keys");
  }
  std::array<PathKey, max_depth> keys_{};
  std::uint8_t depth_ = 0;
};

inline std::string to_string(const Path& p) { return p.to_string(); }

}  // namespace nnx

template <>
struct std::hash<nnx::Path> {
  std::size_t operator()(const nnx::Path& p) const noexcept { return p.hash(); }
};
