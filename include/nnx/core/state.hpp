// nnx/core/state.hpp — State: a module's leaves as an ordered flat map Path -> VariableState.
//
// Entries keep traversal order; lookup by path is O(1). A State shares tensor storage with
// the module it came from: nothing here copies tensor bytes unless its name says so.
//
//   auto [graphdef, params, rest] = nnx::split(model, nnx::of<nnx::Param>, nnx::everything);
//   params.size();                                   // number of Param leaves
//   params["blocks/0/attn/kernel"].tensor();         // by path (string or nnx::Path)
//   for (const auto& [path, leaf] : params) ...      // in traversal order
//   auto scaled = params.map([](const nnx::Tensor& t) { return t.clone(); });
//   nnx::PureDict dict = params.to_pure_dict();      // path -> Tensor, QTensors flattened
//
// PureDict is the same flat map holding bare tensors; a QTensor leaf at "p" appears there
// as "p/qvalue", "p/scale/0", "p/scale/1", ...
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {
namespace detail {

// Open-addressing index from Path to entry number; the paths live in the owner's entries.
class PathIndex {
 public:
  PathIndex() = default;
  PathIndex(const PathIndex&) = default;
  PathIndex& operator=(const PathIndex&) = default;
  // A moved-from index is empty (its entries went with it).
  PathIndex(PathIndex&& o) noexcept : slots_(std::move(o.slots_)), mask_(o.mask_), count_(o.count_) { o.clear(); }
  PathIndex& operator=(PathIndex&& o) noexcept {
    slots_ = std::move(o.slots_);
    mask_ = o.mask_;
    count_ = o.count_;
    o.clear();
    return *this;
  }

  template <class PathOf>
  std::int64_t find(const Path& path, PathOf&& path_of) const {
    if (slots_.empty()) return -1;
    for (std::size_t i = path.hash() & mask_;; i = (i + 1) & mask_) {
      std::uint32_t s = slots_[i];
      if (s == 0) return -1;
      if (path_of(s - 1) == path) return static_cast<std::int64_t>(s - 1);
    }
  }
  // Adds entry `index` (the next one); returns the existing entry number for a duplicate path.
  template <class PathOf>
  std::int64_t insert(const Path& path, std::uint32_t index, PathOf&& path_of) {
    if ((count_ + 1) * 2 > slots_.size()) grow(path_of);
    for (std::size_t i = path.hash() & mask_;; i = (i + 1) & mask_) {
      std::uint32_t s = slots_[i];
      if (s == 0) {
        slots_[i] = index + 1;
        ++count_;
        return -1;
      }
      if (path_of(s - 1) == path) return static_cast<std::int64_t>(s - 1);
    }
  }
  // Room for n entries without growing.
  template <class PathOf>
  void reserve(std::size_t n, PathOf&& path_of) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    if (cap > slots_.size()) rehash(cap, path_of);
  }
  void clear() noexcept {
    slots_.clear();
    count_ = 0;
    mask_ = 0;
  }

 private:
  template <class PathOf>
  void grow(PathOf&& path_of) {
    rehash(slots_.empty() ? 16 : slots_.size() * 2, path_of);
  }
  template <class PathOf>
  void rehash(std::size_t cap, PathOf&& path_of) {
    slots_.assign(cap, 0);
    mask_ = cap - 1;
    for (std::uint32_t e = 0; e < count_; ++e) {
      std::size_t i = path_of(e).hash() & mask_;
      while (slots_[i] != 0) i = (i + 1) & mask_;
      slots_[i] = e + 1;
    }
  }
  std::vector<std::uint32_t> slots_;
  std::size_t mask_ = 0;
  std::uint32_t count_ = 0;  // entries 0 .. count_-1 are indexed
};

inline bool leaf_equal(const VariableState& a, const VariableState& b) { return a == b; }
inline bool leaf_equal(const Tensor& a, const Tensor& b) { return equal(a, b); }

}  // namespace detail

// An ordered flat map from Path to V with O(1) lookup; base of State and PureDict.
template <class V>
class PathMap {
 public:
  struct Entry {
    Path path;
    V leaf;
  };

  PathMap() = default;
  PathMap(const PathMap& other) : entries_(other.entries_) { reindex(); }
  PathMap(PathMap&&) noexcept = default;
  PathMap& operator=(const PathMap& other) {
    if (this != &other) {
      entries_ = other.entries_;
      reindex();
    }
    return *this;
  }
  PathMap& operator=(PathMap&&) noexcept = default;

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }
  auto begin() noexcept { return entries_.begin(); }
  auto end() noexcept { return entries_.end(); }
  auto begin() const noexcept { return entries_.begin(); }
  auto end() const noexcept { return entries_.end(); }
  const Entry& entry(std::size_t i) const { return entries_.at(i); }
  void reserve(std::size_t n) {
    entries_.reserve(n);
    index_.reserve(n, path_of());
  }
  void clear() noexcept {
    entries_.clear();
    index_.clear();
  }

  const V* find(const Path& path) const {
    auto i = index_.find(path, path_of());
    return i < 0 ? nullptr : &entries_[static_cast<std::size_t>(i)].leaf;
  }
  V* find(const Path& path) { return const_cast<V*>(std::as_const(*this).find(path)); }
  bool contains(const Path& path) const { return find(path) != nullptr; }
  // The leaf at `path`; throws MissingLeafError naming it.
  // Position of `path` in traversal order, or -1.
  std::int64_t index_of(const Path& path) const { return index_.find(path, path_of()); }
  const V& at(const Path& path) const {
    if (const V* v = find(path)) return *v;
    throw MissingLeafError("no leaf '" + path.to_string() + "' among the " + std::to_string(size()) + " leaves");
  }
  V& at(const Path& path) { return const_cast<V&>(std::as_const(*this).at(path)); }
  const V& operator[](const Path& path) const { return at(path); }
  V& operator[](const Path& path) { return at(path); }
  const V& operator[](std::string_view path) const { return at(Path::parse(path)); }
  V& operator[](std::string_view path) { return at(Path::parse(path)); }

  // Appends a leaf; throws InvalidArgument when the path is already present.
  void insert(const Path& path, V leaf) {
    auto n = static_cast<std::uint32_t>(entries_.size());
    entries_.push_back(Entry{path, std::move(leaf)});
    if (index_.insert(path, n, path_of()) >= 0) {
      entries_.pop_back();
      throw InvalidArgument("duplicate leaf '" + path.to_string() + "'");
    }
  }

  friend bool operator==(const PathMap& a, const PathMap& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
      if (!(a.entries_[i].path == b.entries_[i].path) || !detail::leaf_equal(a.entries_[i].leaf, b.entries_[i].leaf))
        return false;
    return true;
  }

 protected:
  auto path_of() const {
    return [this](std::uint32_t i) -> const Path& { return entries_[i].path; };
  }
  void reindex() {
    index_.clear();
    for (std::uint32_t i = 0; i < entries_.size(); ++i)
      if (index_.insert(entries_[i].path, i, path_of()) >= 0)
        throw InvalidArgument("duplicate leaf '" + entries_[i].path.to_string() + "'");
  }

  std::vector<Entry> entries_;
  detail::PathIndex index_;
};

// Path -> Tensor, without kinds: what Flax calls a pure dict.
using PureDict = PathMap<Tensor>;

class State;
namespace detail {
template <class>
using StateFor = State;
}  // namespace detail

class State : public PathMap<VariableState> {
 public:
  using PathMap::PathMap;

  // Leaves matching f, in order.
  template <Filter F>
  State filter(const F& f) const {
    State out;
    for (const auto& e : entries_)
      if (f(e.path, e.leaf)) out.insert(e.path, e.leaf);
    return out;
  }

  // One state per filter, each leaf in the first filter that matches it. A leaf that matches
  // none is an InvalidArgument naming its path (end with nnx::everything to keep the rest).
  template <Filter... F>
  std::tuple<detail::StateFor<F>...> split(const F&... filters) const;

  // Applies f to every tensor (Tensor leaves, and each QTensor's qvalue and scales).
  template <class F>
  State map(F&& f) const {
    State out;
    out.reserve(size());
    for (const auto& e : entries_) {
      VariableState leaf = e.leaf;
      leaf.value = map_tensors(e.leaf.value, f);
      out.insert(e.path, std::move(leaf));
    }
    return out;
  }
  // f(path, leaf) returns the new Value of each leaf (kind and metadata are kept).
  template <class F>
  State map_with_path(F&& f) const {
    State out;
    out.reserve(size());
    for (const auto& e : entries_) {
      VariableState leaf = e.leaf;
      leaf.value = Value(f(e.path, e.leaf));
      out.insert(e.path, std::move(leaf));
    }
    return out;
  }

  // Path -> Tensor; a QTensor at "p" becomes "p/qvalue" and "p/scale/<i>".
  PureDict to_pure_dict() const {
    PureDict out;
    out.reserve(size());
    for (const auto& e : entries_) {
      if (const auto* t = std::get_if<Tensor>(&e.leaf.value)) {
        out.insert(e.path, *t);
      } else {
        const auto& q = std::get<QTensor>(e.leaf.value);
        out.insert(e.path / "qvalue", q.qvalue);
        for (std::size_t i = 0; i < q.scale.size(); ++i) out.insert(e.path / "scale" / PathKey(i), q.scale[i]);
      }
    }
    return out;
  }

  // Replaces every leaf's tensors by those in `dict` (zero-copy), checking each against the
  // leaf it replaces: a missing tensor -> MissingLeafError, an unknown path ->
  // UnexpectedLeafError, another dtype -> DTypeError, another shape -> ShapeError. With
  // allow_missing, leaves absent from dict keep their value. On error nothing is changed.
  void replace_by_pure_dict(const PureDict& dict, bool allow_missing = false) {
    std::vector<Value> replaced;
    replaced.reserve(size());
    std::size_t used = 0;
    auto take = [&](const Path& p, const Tensor& old) -> Tensor {
      const Tensor* t = dict.find(p);
      if (!t) {
        if (allow_missing) return old;
        throw MissingLeafError("replace_by_pure_dict: no tensor for leaf '" + p.to_string() + "' (expected " +
                               describe(old) + ")");
      }
      ++used;
      if (t->dtype() != old.dtype())
        throw DTypeError("replace_by_pure_dict: '" + p.to_string() + "' expected " + describe(old) + ", found " +
                         describe(*t));
      if (t->shape() != old.shape())
        throw ShapeError("replace_by_pure_dict: '" + p.to_string() + "' expected " + describe(old) + ", found " +
                         describe(*t));
      return *t;
    };
    for (const auto& e : entries_) {
      if (const auto* t = std::get_if<Tensor>(&e.leaf.value)) {
        replaced.emplace_back(take(e.path, *t));
      } else {
        const auto& q = std::get<QTensor>(e.leaf.value);
        QTensor nq{take(e.path / "qvalue", q.qvalue), {}};
        for (std::size_t i = 0; i < q.scale.size(); ++i)
          nq.scale.push_back(take(e.path / "scale" / PathKey(i), q.scale[i]));
        replaced.emplace_back(std::move(nq));
      }
    }
    if (used != dict.size()) {
      for (const auto& e : dict)
        if (!covers(e.path))
          throw UnexpectedLeafError("replace_by_pure_dict: '" + e.path.to_string() + "' is not a leaf of this state");
    }
    for (std::size_t i = 0; i < entries_.size(); ++i) entries_[i].leaf.value = std::move(replaced[i]);
  }

  // Bytes of tensor data (abstract leaves count the bytes they would hold).
  std::size_t nbytes() const {
    std::size_t n = 0;
    for (const auto& e : entries_) n += e.leaf.nbytes();
    return n;
  }
  // Number of elements over all leaves (QTensor leaves count qvalue and scales).
  std::int64_t numel() const {
    std::int64_t n = 0;
    for (const auto& e : entries_) n += e.leaf.numel();
    return n;
  }

 private:
  // True when `p` names a Tensor leaf or a part of a QTensor leaf (".../qvalue",
  // ".../scale/<i>" with i below its scale count).
  bool covers(const Path& p) const {
    if (const auto* leaf = find(p)) return !leaf->is_quantized();
    if (p.size() >= 2 && p.back().is_name() && p.back().name() == "qvalue") {
      const auto* leaf = find(p.parent());
      return leaf && leaf->is_quantized();
    }
    if (p.size() >= 3 && p.back().is_index() && p[p.size() - 2].is_name() && p[p.size() - 2].name() == "scale") {
      const auto* leaf = find(p.parent().parent());
      return leaf && leaf->is_quantized() && p.back().index() < static_cast<std::int64_t>(leaf->qtensor().scale.size());
    }
    return false;
  }
};

namespace detail {

// The index of the first filter matching the leaf; sizeof...(F) when none does, which is an
// InvalidArgument naming the path if `unmatched_is_error`.
template <class... F>
std::uint8_t first_match(const Path& path, const VariableState& leaf, bool unmatched_is_error,
                         const F&... filters) {
  static_assert(sizeof...(F) < 255, "too many filters");
  std::uint8_t index = 0;
  bool found = ((filters(path, leaf) ? true : (++index, false)) || ...);
  if (!found && unmatched_is_error)
    throw InvalidArgument("split: leaf '" + path.to_string() + "' (" + std::string(leaf.kind_name()) +
                          ") matches none of the " + std::to_string(sizeof...(F)) +
                          " filters; add nnx::everything last to keep the rest");
  return index;
}

}  // namespace detail

template <Filter... F>
std::tuple<detail::StateFor<F>...> State::split(const F&... filters) const {
  static_assert(sizeof...(F) > 0, "State::split needs at least one filter");
  static_assert(detail::everything_only_last<F...>(), "nnx::everything must be the last filter");
  std::tuple<detail::StateFor<F>...> out;
  for (const auto& e : entries_) {
    const std::uint8_t k = detail::first_match(e.path, e.leaf, /*unmatched_is_error=*/true, filters...);
    [&]<std::size_t... K>(std::index_sequence<K...>) {
      ((k == K ? std::get<K>(out).insert(e.path, e.leaf) : void()), ...);
    }(std::index_sequence_for<F...>{});
  }
  return out;
}

// Concatenates states (in argument order); a path present in two of them is an InvalidArgument.
template <class... S>
  requires(std::same_as<std::remove_cvref_t<S>, State> && ...)
State merge_states(const S&... states) {
  State out;
  out.reserve((states.size() + ... + 0));
  [[maybe_unused]] auto add = [&](const State& s) {
    for (const auto& [path, leaf] : s) out.insert(path, leaf);
  };
  (add(states), ...);
  return out;
}

// A table of the state: path, kind, dtype, shape, bytes; one line per leaf and a total.
inline std::string format_table(const State& state) {
  std::size_t wp = 4, wk = 4, wd = 5, ws = 5;
  auto dtype_col = [](const VariableState& l) {
    return l.is_quantized() ? std::string(dtype_name(l.dtype())) + "+scale" : std::string(dtype_name(l.dtype()));
  };
  for (const auto& [p, l] : state) {
    wp = std::max(wp, p.to_string().size());
    wk = std::max(wk, l.kind_name().size());
    wd = std::max(wd, dtype_col(l).size());
    ws = std::max(ws, to_string(l.shape()).size());
  }
  auto pad = [](std::string s, std::size_t w) {
    s.resize(std::max(w, s.size()), ' ');
    return s;
  };
  std::string out = pad("path", wp) + "  " + pad("kind", wk) + "  " + pad("dtype", wd) + "  " + pad("shape", ws) +
                    "  bytes\n";
  for (const auto& [p, l] : state)
    out += pad(p.to_string(), wp) + "  " + pad(std::string(l.kind_name()), wk) + "  " + pad(dtype_col(l), wd) + "  " +
           pad(to_string(l.shape()), ws) + "  " + std::to_string(l.nbytes()) + "\n";
  out += std::to_string(state.size()) + " leaves, " + std::to_string(state.numel()) + " elements, " +
         std::to_string(state.nbytes()) + " bytes\n";
  return out;
}

}  // namespace nnx
