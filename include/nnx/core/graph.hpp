// nnx/core/graph.hpp — split, merge, update, state, graphdef, eval_shape and clone.
//
// These are the functions that turn a module into (graphdef, states...) and back, without
// copying tensor data:
//
//   auto [graphdef, params, cache, rest] =
//       nnx::split(model, nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);
//   Model m = nnx::merge(graphdef, params, std::move(cache), rest);  // same buffers
//   Model c = nnx::merge_copy(graphdef, params, cache, rest);         // fresh buffers
//   nnx::update(model, new_params);            // replace values in place, checked
//   nnx::State caches = nnx::state(model, nnx::of<nnx::Cache>);
//   auto abstract = nnx::eval_shape([&] { return Model(cfg, rngs); });  // no tensor bytes
//
// Every function checks its inputs and throws an nnx::Error naming the first offending
// path: MissingLeafError, UnexpectedLeafError, KindError, DTypeError or ShapeError.
// Passing a state to merge as an rvalue donates it: the merged module then owns its tensors
// (use_count() == 1), so pure functions may update them in place.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graphdef.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {
namespace detail {

// Open-addressing map from a variable cell's address to a leaf index, for tied weights.
class CellIndex {
 public:
  void reserve(std::size_t n) {
    std::size_t cap = 64;
    while (cap < 2 * n + 2) cap *= 2;
    if (cap > slots_.size()) grow_to(cap);
  }
  // The index stored for `key`, or -1 after storing `value` for it.
  std::int64_t find_or_insert(const void* key, std::uint32_t value) {
    if ((count_ + 1) * 2 > slots_.size()) grow();
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      auto& s = slots_[i];
      if (s.key == nullptr) {
        s = {key, value};
        ++count_;
        return -1;
      }
      if (s.key == key) return s.value;
    }
  }

 private:
  struct Slot {
    const void* key = nullptr;
    std::uint32_t value = 0;
  };
  std::size_t slot_of(const void* key) const {
    auto x = reinterpret_cast<std::uintptr_t>(key);
    x ^= x >> 17;
    x *= 0xed5ad4bbu;
    x ^= x >> 11;
    return static_cast<std::size_t>(x) & mask_;
  }
  void grow() { grow_to(slots_.empty() ? 64 : slots_.size() * 2); }
  void grow_to(std::size_t cap) {
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    mask_ = slots_.size() - 1;
    for (const auto& s : old) {
      if (!s.key) continue;
      std::size_t i = slot_of(s.key);
      while (slots_[i].key) i = (i + 1) & mask_;
      slots_[i] = s;
    }
  }
  std::vector<Slot> slots_;
  std::size_t mask_ = 0;
  std::size_t count_ = 0;
};

inline void check_axes(const Path& path, const VariableState& v) {
  if (v.metadata && !v.metadata->axes.empty() && v.metadata->axes.size() != v.shape().rank())
    throw ShapeError("'" + path.to_string() + "': " + std::to_string(v.axes().size()) + " logical axis names for a " +
                     std::string(dtype_name(v.dtype())) + to_string(v.shape()) + " value (rank " +
                     std::to_string(v.shape().rank()) + ")");
}

[[noreturn]] inline void throw_empty_variable(const Path& path) {
  throw InvalidArgument("'" + path.to_string() +
                        "': the variable is empty (never given a value); use std::optional for fields that may be "
                        "absent");
}

// Counts nodes and variable slots, so the vectors of a flattening are allocated once: each
// split then makes a few exact allocations instead of a growth series whose frees make
// malloc return memory to the system (and take page faults again) on every call.
struct NodeCounter : NodeVisitor {
  std::size_t nodes = 0, slots = 0;
  void enter_module(const Path&, const std::string*) { ++nodes; }
  void sequence(const Path&, std::size_t) { ++nodes; }
  void string_map(const Path&, std::size_t) { ++nodes; }
  void absent(const Path&) { ++nodes; }
  template <class T>
  void static_field(const Path&, const T&) {
    ++nodes;
  }
  void variable(const Path&, const Variable&) {
    ++nodes;
    ++slots;
  }
};

// Collects a module's unique variables in traversal order; with BuildGraph, its graphdef too.
template <bool BuildGraph>
struct Flattener : NodeVisitor {
  GraphData* graph = nullptr;                   // BuildGraph only
  std::vector<Path> paths;                      // !BuildGraph only (else graph->leaves)
  std::vector<const VariableState*> cells;      // one per leaf
  CellIndex seen;

  void add_node(NodeType type, const Path& p, std::uint64_t size, const std::string* type_name = nullptr) {
    graph->nodes.push_back(
        {type, static_cast<std::uint8_t>(p.size()), p.empty() ? PathKey() : p.back(), size, type_name});
  }
  void enter_module(const Path& p, const std::string* type) {
    if constexpr (BuildGraph) add_node(NodeType::module, p, 0, type);
  }
  void sequence(const Path& p, std::size_t n) {
    if constexpr (BuildGraph) add_node(NodeType::sequence, p, n);
  }
  void string_map(const Path& p, std::size_t n) {
    if constexpr (BuildGraph) add_node(NodeType::string_map, p, n);
  }
  void absent(const Path& p) {
    if constexpr (BuildGraph) add_node(NodeType::absent, p, 0);
  }
  template <class T>
  void static_field(const Path& p, const T& value) {
    if constexpr (BuildGraph) {
      add_node(NodeType::static_value, p, graph->statics.size());
      graph->statics.push_back(to_static_value(value));
    }
  }
  void variable(const Path& p, const Variable& v) {
    if (!v.has_value()) throw_empty_variable(p);
    const VariableState& cell = v.state();
    auto leaf = static_cast<std::uint32_t>(cells.size());
    std::int64_t seen_as = seen.find_or_insert(&cell, leaf);
    if (seen_as >= 0) {
      if constexpr (BuildGraph) {
        add_node(NodeType::shared_variable, p, static_cast<std::uint64_t>(seen_as));
        graph->slot_leaf.push_back(static_cast<std::uint32_t>(seen_as));
      }
      return;
    }
    check_axes(p, cell);
    cells.push_back(&cell);
    if constexpr (BuildGraph) {
      LeafSpec spec{p, cell.kind, cell.dtype(), cell.shape(), cell.is_quantized(), {}, cell.metadata};
      if (const auto* q = std::get_if<QTensor>(&cell.value)) {
        for (const auto& s : q->scale) {
          if (s.dtype() != DType::f32)
            throw DTypeError("'" + p.to_string() + "': QTensor scale must be f32, found " + describe(s));
          spec.scale_shapes.push_back(s.shape());
        }
        if (q->qvalue.dtype() != DType::i8)
          throw DTypeError("'" + p.to_string() + "': QTensor qvalue must be i8, found " + describe(q->qvalue));
      }
      graph->leaves.push_back(std::move(spec));
      add_node(NodeType::variable, p, leaf);
      graph->slot_leaf.push_back(leaf);
    } else {
      paths.push_back(p);
    }
  }
  const Path& path(std::size_t leaf) const {
    if constexpr (BuildGraph)
      return graph->leaves[leaf].path;
    else
      return paths[leaf];
  }
};

// Gives each variable slot, in traversal order, the cell chosen by `cell_for(slot)`.
template <class CellFor>
struct Binder : NodeVisitor {
  CellFor cell_for;
  std::size_t slot = 0;
  void variable(const Path&, Variable& v) { v.bind(cell_for(slot++)); }
};
template <class C>
Binder(NodeVisitor, C) -> Binder<C>;  // for compilers without aggregate deduction (clang 14)

// Replaces each unique variable by make(old) (ties stay tied); empty handles are an error.
template <class Make>
struct Rebinder : NodeVisitor {
  Make make;
  CellIndex seen;
  std::vector<std::shared_ptr<VariableState>> made;
  void variable(const Path& p, Variable& v) {
    if (!v.has_value()) throw_empty_variable(p);
    std::int64_t i = seen.find_or_insert(v.cell_ptr().get(), static_cast<std::uint32_t>(made.size()));
    if (i >= 0) {
      v.bind(made[static_cast<std::size_t>(i)]);
      return;
    }
    made.push_back(std::make_shared<VariableState>(make(v.state())));
    v.bind(made.back());
  }
};

template <class T, class V>
void walk_root(T& module, V& visitor) {
  Path path;
  walk(module, path, visitor);
}

template <class M, class Make>
M rebuild_variables(const M& module, Make&& make) {
  M out = module;
  Rebinder<std::decay_t<Make>> r{{}, std::forward<Make>(make), {}, {}};
  walk_root(out, r);
  return out;
}

template <bool BuildGraph, class M>
Flattener<BuildGraph> flatten(const M& module, GraphData* graph = nullptr) {
  NodeCounter count;
  walk_root(module, count);
  Flattener<BuildGraph> f;
  f.graph = graph;
  f.cells.reserve(count.slots);
  f.seen.reserve(count.slots);
  if constexpr (BuildGraph) {
    graph->nodes.reserve(count.nodes);
    graph->leaves.reserve(count.slots);
    graph->slot_leaf.reserve(count.slots);
  } else {
    f.paths.reserve(count.slots);
  }
  walk_root(module, f);
  return f;
}

// Puts leaf i in the state of the first filter matching it; states are sized exactly first.
template <bool BuildGraph, class... F>
std::tuple<StateFor<F>...> route_leaves(const Flattener<BuildGraph>& flat, bool unmatched_is_error,
                                        const F&... filters) {
  const std::size_t n = flat.cells.size();
  std::vector<std::uint8_t> target(n);
  std::array<std::size_t, sizeof...(F) + 1> counts{};
  for (std::size_t i = 0; i < n; ++i) {
    target[i] = first_match(flat.path(i), *flat.cells[i], unmatched_is_error, filters...);
    ++counts[target[i]];
  }
  std::tuple<StateFor<F>...> states;
  [&]<std::size_t... K>(std::index_sequence<K...>) {
    (std::get<K>(states).reserve(counts[K]), ...);
    for (std::size_t i = 0; i < n; ++i)
      ((target[i] == K ? std::get<K>(states).insert(flat.path(i), *flat.cells[i]) : void()), ...);
  }(std::index_sequence_for<F...>{});
  return states;
}

template <class M>
GraphDef<M> make_graphdef(const M& module, std::shared_ptr<GraphData> data) {
  data->type_name = interned_type_name<M>();
  auto prototype = std::make_shared<M>(module);
  Binder strip{{}, [](std::size_t) { return std::shared_ptr<VariableState>(); }};
  walk_root(*prototype, strip);
  return GraphDef<M>(std::move(data), std::move(prototype));
}

// Throws unless `leaf` fits `spec` (same kind, value type, dtype and shapes).
inline void check_leaf(const char* op, const LeafSpec& spec, const VariableState& leaf) {
  auto where = [&] { return std::string(op) + ": leaf '" + spec.path.to_string() + "' "; };
  if (leaf.kind != spec.kind)
    throw KindError(where() + "is a " + std::string(leaf.kind_name()) + " in the state; expected " +
                    std::string(*spec.kind->name));
  if (leaf.is_quantized() != spec.quantized)
    throw DTypeError(where() + "holds a " + (leaf.is_quantized() ? "QTensor" : "Tensor") + "; expected a " +
                     (spec.quantized ? "QTensor" : "Tensor"));
  if (leaf.dtype() != spec.dtype)
    throw DTypeError(where() + "expected " + spec.describe() + ", found " + describe(leaf.primary()));
  if (leaf.shape() != spec.shape)
    throw ShapeError(where() + "expected " + spec.describe() + ", found " + describe(leaf.primary()));
  if (spec.quantized) {
    const auto& scale = leaf.qtensor().scale;
    bool same = scale.size() == spec.scale_shapes.size();
    for (std::size_t i = 0; same && i < scale.size(); ++i)
      same = scale[i].dtype() == DType::f32 && scale[i].shape() == spec.scale_shapes[i];
    if (!same) throw ShapeError(where() + "expected " + spec.describe() + ", found scales that differ");
  }
}

template <class S>
inline constexpr bool donated = !std::is_lvalue_reference_v<S> && !std::is_const_v<std::remove_reference_t<S>>;

template <bool DeepCopy, class M, class... S>
M merge_impl(const GraphDef<M>& graphdef, S&&... states) {
  const GraphData& d = graphdef.data();
  const std::size_t n = d.leaves.size();
  std::vector<const VariableState*> found(n, nullptr);
  std::vector<char> movable(n, 0);

  [[maybe_unused]] auto collect = [&](const State& state, bool can_move) {
    std::size_t guess = 0;  // states from split list leaves in graphdef order
    for (const auto& [path, leaf] : state) {
      std::int64_t i = (guess < n && d.leaves[guess].path == path) ? static_cast<std::int64_t>(guess) : d.find_leaf(path);
      if (i < 0)
        throw UnexpectedLeafError("merge: leaf '" + path.to_string() + "' (" + std::string(leaf.kind_name()) + " " +
                                  describe(leaf.primary()) + ") is not in the graphdef of " + *d.type_name);
      auto u = static_cast<std::size_t>(i);
      if (found[u]) throw InvalidArgument("merge: leaf '" + path.to_string() + "' is given by two states");
      check_leaf("merge", d.leaves[u], leaf);
      found[u] = &leaf;
      movable[u] = can_move;
      guess = u + 1;
    }
  };
  (collect(states, donated<S>), ...);
  for (std::size_t i = 0; i < n; ++i)
    if (!found[i])
      throw MissingLeafError("merge: missing leaf '" + d.leaves[i].path.to_string() + "' (" + d.leaves[i].describe() +
                             ") in the given states");

  std::vector<std::shared_ptr<VariableState>> cells(n);
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (DeepCopy) {
      VariableState copy = *found[i];
      copy.value = map_tensors(found[i]->value, [](const Tensor& t) { return t.clone(); });
      cells[i] = std::make_shared<VariableState>(std::move(copy));
    } else if (movable[i]) {
      cells[i] = std::make_shared<VariableState>(std::move(*const_cast<VariableState*>(found[i])));
    } else {
      cells[i] = std::make_shared<VariableState>(*found[i]);
    }
  }
  // A donated state gave its values away; leave it empty rather than full of husks.
  ([&](auto&& s) {
    if constexpr (donated<decltype(s)>) s.clear();
  }(std::forward<S>(states)), ...);
  M module = graphdef.prototype();
  Binder bind{{}, [&](std::size_t slot) { return cells[d.slot_leaf[slot]]; }};
  walk_root(module, bind);
  return module;
}

}  // namespace detail

// (graphdef, state per filter): each leaf goes to the first filter that matches it; a leaf no
// filter matches is an InvalidArgument naming its path. With no filters: (graphdef, state).
// No tensor data is copied; the states share storage with the module.
template <Module M, Filter... F>
auto split(const M& module, const F&... filters) {
  if constexpr (sizeof...(F) == 0) {
    return split(module, everything);
  } else {
    static_assert(detail::everything_only_last<F...>(), "nnx::everything must be the last filter");
    auto data = std::make_shared<detail::GraphData>();
    auto flat = detail::flatten<true>(module, data.get());
    auto states = detail::route_leaves(flat, /*unmatched_is_error=*/true, filters...);
    return std::tuple_cat(std::make_tuple(detail::make_graphdef(module, std::move(data))), std::move(states));
  }
}

// Rebuilds a module from its graphdef and states (together, exactly the graphdef's leaves).
// Zero-copy: the module's variables share the states' tensors; rvalue states are donated.
template <class M, class... S>
  requires(std::same_as<std::remove_cvref_t<S>, State> && ...)
M merge(const GraphDef<M>& graphdef, S&&... states) {
  return detail::merge_impl<false>(graphdef, std::forward<S>(states)...);
}

// As merge, but every tensor is copied: the module shares no buffer with the states.
template <class M, class... S>
  requires(std::same_as<std::remove_cvref_t<S>, State> && ...)
M merge_copy(const GraphDef<M>& graphdef, const S&... states) {
  return detail::merge_impl<true>(graphdef, states...);
}

// The module's graphdef alone.
template <Module M>
GraphDef<M> graphdef(const M& module) {
  auto data = std::make_shared<detail::GraphData>();
  detail::flatten<true>(module, data.get());
  return detail::make_graphdef(module, std::move(data));
}

// The module's leaves (all of them, those matching a filter, or one state per filter).
template <Module M, Filter... F>
auto state(const M& module, const F&... filters) {
  if constexpr (sizeof...(F) == 0) {
    return state(module, everything);
  } else {
    // Unlike split, a leaf that no filter matches is simply left out.
    auto states = detail::route_leaves(detail::flatten<false>(module), /*unmatched_is_error=*/false, filters...);
    if constexpr (sizeof...(F) == 1)
      return std::get<0>(std::move(states));
    else
      return states;
  }
}

// Replaces, in place, the values of the module's variables found in `state` (zero-copy, seen
// by every handle). Each leaf is checked first: a path the module does not have ->
// UnexpectedLeafError; another kind, dtype or shape -> KindError, DTypeError, ShapeError. On
// error the module is unchanged.
template <Module M>
void update(M& module, const State& state) {
  auto flat = detail::flatten<false>(module);
  std::vector<char> used(state.size(), 0);
  std::vector<std::pair<VariableState*, const VariableState*>> writes;
  writes.reserve(state.size());
  for (std::size_t i = 0; i < flat.cells.size(); ++i) {
    std::int64_t j = state.index_of(flat.path(i));
    if (j < 0) continue;
    const VariableState& cell = *flat.cells[i];
    LeafSpec spec{flat.path(i), cell.kind, cell.dtype(), cell.shape(), cell.is_quantized(), {}, nullptr};
    if (const auto* q = std::get_if<QTensor>(&cell.value))
      for (const auto& s : q->scale) spec.scale_shapes.push_back(s.shape());
    const VariableState& leaf = state.entry(static_cast<std::size_t>(j)).leaf;
    detail::check_leaf("update", spec, leaf);
    used[static_cast<std::size_t>(j)] = 1;
    writes.emplace_back(const_cast<VariableState*>(&cell), &leaf);
  }
  for (std::size_t j = 0; j < state.size(); ++j)
    if (!used[j])
      throw UnexpectedLeafError("update: leaf '" + state.entry(j).path.to_string() + "' is not a variable of " +
                                std::string(detail::type_name<M>()));
  for (auto [cell, leaf] : writes) cell->value = leaf->value;
}

// Runs fn with tensor factories producing abstract tensors (shape and dtype only): builds a
// module's structure without allocating its weights.
template <class Fn>
  requires std::invocable<Fn>
auto eval_shape(Fn&& fn) {
  detail::AbstractTensorScope scope;
  return std::forward<Fn>(fn)();
}

// An abstract copy of a module: same structure, shapes and dtypes; no tensor data.
template <Module M>
M eval_shape(const M& module) {
  return detail::rebuild_variables(module, [](const VariableState& v) {
    VariableState a = v;
    a.value = map_tensors(v.value, [](const Tensor& t) { return Tensor::abstract(t.shape(), t.dtype()); });
    return a;
  });
}

// A deep copy of a module: fresh variables and buffers, tied weights still tied.
template <Module M>
M clone(const M& module) {
  return detail::rebuild_variables(module, [](const VariableState& v) {
    VariableState c = v;
    c.value = map_tensors(v.value, [](const Tensor& t) { return t.clone(); });
    return c;
  });
}

}  // namespace nnx
