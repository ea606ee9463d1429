// nnx/core/layers.hpp — a model's stack of identical layers, held per layer or stacked.
//
// Layers<L> is a sequence of L-modules in one of two layouts, a choice of how the state is
// laid out, not of what the model computes:
//   - per_layer: one module per layer, leaves "h/0/attn/qkv/kernel", "h/1/...", as a
//     std::vector<L> field would give;
//   - stacked (MaxText's scanned layers): one leaf per parameter path with a leading "layers"
//     axis, "h/attn/qkv/kernel" [n_layer, C, 3C]. Layer i runs on zero-copy slices of them.
// Split, merge, update, checkpoints and for_each_module see the layout's own leaves and
// modules; layers[i] and iteration give each layer as a module in both layouts.
//
//   nnx::Layers<Block> blocks(std::move(vector_of_blocks), nnx::Layout::stacked);
//   for (auto& block : blocks) x = block(x);      // slices of the stacked leaves
//   blocks.set_layout(nnx::Layout::per_layer);    // each layer's leaves: views, no copy
//
// A stacked layer's variables are non-owning views: they add nothing to use_count(), so
// donation and copy-on-write see the stacked tensors exactly as they see per-layer ones (the
// stack copies its Cache tensors before a non-const access when they are held elsewhere).
// The views are rebuilt whenever the stacked leaves change (a merge, an update), checked
// on every access without allocating.
//
// The state-level conversion (stack_layer_leaves / unstack_layer_leaves) turns one layout's
// leaf paths and values into the other's for checkpoints, a TrainState's moments included.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {

enum class Layout : std::uint8_t { per_layer, stacked };

inline const char* layout_name(Layout l) { return l == Layout::stacked ? "stacked" : "per-layer"; }
// "stacked" or "per-layer" (also "per_layer"); InvalidArgument otherwise.
inline Layout parse_layout(std::string_view name) {
  if (name == "stacked") return Layout::stacked;
  if (name == "per-layer" || name == "per_layer") return Layout::per_layer;
  throw InvalidArgument("layout '" + std::string(name) + "': expected stacked or per-layer");
}

// The logical name of a stacked leaf's leading axis.
inline constexpr std::string_view layers_axis = "layers";

namespace detail::layers {

// Every variable of a module in traversal order (ties listed at each place they occur).
struct Collect : NodeVisitor {
  std::vector<Path> paths;
  std::vector<Variable*> variables;
  void variable(const Path& p, Variable& v) {
    if (!v.has_value()) throw InvalidArgument("Layers: '" + p.to_string() + "' is an empty variable");
    paths.push_back(p);
    variables.push_back(&v);
  }
};
template <class M>
Collect collect(M& module) {
  Collect c;
  Path path;
  walk(module, path, c);
  return c;
}

inline std::shared_ptr<const Metadata> with_axes(std::vector<std::string> axes) {
  if (axes.empty()) return nullptr;
  return std::make_shared<const Metadata>(Metadata{std::move(axes)});
}
inline std::vector<std::string> stacked_axes(const std::vector<std::string>& axes) {
  if (axes.empty()) return {};
  std::vector<std::string> out{std::string(layers_axis)};
  out.insert(out.end(), axes.begin(), axes.end());
  return out;
}
inline std::vector<std::string> layer_axes(const std::vector<std::string>& axes) {
  if (axes.empty()) return {};
  return {axes.begin() + 1, axes.end()};
}

// One tensor per layer -> [n, ...] (abstract in, abstract out). The callers checked shapes.
inline Tensor stack_tensors(const std::vector<const Tensor*>& parts) {
  const Tensor& first = *parts.front();
  std::vector<std::int64_t> dims{static_cast<std::int64_t>(parts.size())};
  for (std::int64_t d : first.shape().dims()) dims.push_back(d);
  if (first.is_abstract()) return Tensor::abstract(Shape(dims), first.dtype());
  Tensor out = Tensor::empty(Shape(dims), first.dtype());
  auto* dst = static_cast<std::byte*>(out.raw_data());
  for (const Tensor* t : parts) {
    if (t->is_abstract()) throw InvalidArgument("Layers: cannot stack an abstract tensor with concrete ones");
    std::memcpy(dst, t->raw_data(), t->nbytes());
    dst += t->nbytes();
  }
  return out;
}

// Layer i of a stacked tensor: an owning view, or (borrowed) one adding nothing to use_count().
inline Tensor layer_slice(const Tensor& t, std::int64_t i, bool borrowed) {
  Tensor s = t.select(i);
  if (!borrowed || s.is_abstract()) return s;
  return Tensor::borrow(const_cast<void*>(static_cast<const void*>(s.raw_data())), s.shape(), s.dtype(), nullptr);
}

inline std::vector<const Tensor*> tensors_of(const Value& v) {
  if (const auto* t = std::get_if<Tensor>(&v)) return {t};
  const auto& q = std::get<QTensor>(v);
  std::vector<const Tensor*> out{&q.qvalue};
  for (const Tensor& s : q.scale) out.push_back(&s);
  return out;
}

// The stacked value of one leaf over all layers; `where` names the leaf for errors.
inline Value stack_values(const std::vector<const Value*>& values, const std::string& where) {
  const Value& first = *values.front();
  const auto first_parts = tensors_of(first);
  std::vector<std::vector<const Tensor*>> by_part(first_parts.size());
  for (std::size_t l = 0; l < values.size(); ++l) {
    const auto parts = tensors_of(*values[l]);
    if (values[l]->index() != first.index() || parts.size() != first_parts.size())
      throw ShapeError(where + ": layer " + std::to_string(l) + " holds " +
                       (std::holds_alternative<QTensor>(*values[l]) ? "a QTensor" : "a Tensor") +
                       " unlike layer 0; stacked layers must agree");
    for (std::size_t k = 0; k < parts.size(); ++k) {
      if (parts[k]->shape() != first_parts[k]->shape() || parts[k]->dtype() != first_parts[k]->dtype())
        throw ShapeError(where + ": layer " + std::to_string(l) + " holds " + describe(*parts[k]) + ", layer 0 " +
                         describe(*first_parts[k]) + "; stacked layers must agree");
      by_part[k].push_back(parts[k]);
    }
  }
  if (std::holds_alternative<Tensor>(first)) return Value(stack_tensors(by_part[0]));
  QTensor q{stack_tensors(by_part[0]), {}};
  for (std::size_t k = 1; k < by_part.size(); ++k) q.scale.push_back(stack_tensors(by_part[k]));
  return Value(std::move(q));
}

inline Value slice_value(const Value& v, std::int64_t i, bool borrowed) {
  return map_tensors(v, [&](const Tensor& t) { return layer_slice(t, i, borrowed); });
}

}  // namespace detail::layers

template <class Layer>
class Layers {
 public:
  Layers() = default;
  explicit Layers(std::vector<Layer> layers, Layout layout = Layout::per_layer) : layers_(std::move(layers)) {
    count_ = layers_.size();
    set_layout(layout);
  }
  // The view cache is rebuilt, never copied: a copy shares the variables, not the views.
  Layers(const Layers& o) : layers_(o.layers_), stacked_(o.stacked_), count_(o.count_) {}
  Layers(Layers&& o) noexcept : layers_(std::move(o.layers_)), stacked_(std::move(o.stacked_)), count_(o.count_) {}
  Layers& operator=(const Layers& o) {
    if (this != &o) *this = Layers(o);
    return *this;
  }
  Layers& operator=(Layers&& o) noexcept {
    layers_ = std::move(o.layers_);
    stacked_ = std::move(o.stacked_);
    count_ = o.count_;
    views_ = {};
    return *this;
  }

  Layout layout() const noexcept { return stacked_ ? Layout::stacked : Layout::per_layer; }
  std::size_t size() const noexcept { return count_; }
  bool empty() const noexcept { return count_ == 0; }

  // Layer i as a module (stacked: variables that are zero-copy slices of the stacked leaves).
  Layer& operator[](std::size_t i) { return all()[i]; }
  const Layer& operator[](std::size_t i) const { return all()[i]; }
  Layer* begin() { return all().data(); }
  Layer* end() { return all().data() + count_; }
  const Layer* begin() const { return all().data(); }
  const Layer* end() const { return all().data() + count_; }

  // The module of stacked leaves (every leaf [size(), ...]); InvalidArgument when per-layer.
  const Layer& stacked() const {
    if (!stacked_) throw InvalidArgument("Layers: the layers are per-layer, not stacked");
    return *stacked_;
  }

  // Converts in place. To stacked: each leaf path's values over the layers are copied into one
  // [size(), ...] leaf (the layers must agree in structure, kinds, dtypes and shapes; abstract
  // layers stack into abstract leaves). To per-layer: each layer's variables become views of
  // the stacked ones (no copy). Variables of the other layout held elsewhere are unaffected.
  void set_layout(Layout layout) {
    if (layout == this->layout()) return;
    views_ = {};
    if (layout == Layout::per_layer) {
      std::vector<Layer> out(count_);
      for (std::size_t i = 0; i < count_; ++i) out[i] = slice(static_cast<std::int64_t>(i), /*borrowed=*/false);
      layers_ = std::move(out);
      stacked_.reset();
      return;
    }
    if (layers_.empty()) throw InvalidArgument("Layers: cannot stack zero layers");
    std::vector<detail::layers::Collect> per(layers_.size());
    for (std::size_t l = 0; l < layers_.size(); ++l) per[l] = detail::layers::collect(layers_[l]);
    Layer stacked = layers_[0];
    detail::layers::Collect into = detail::layers::collect(stacked);
    for (std::size_t l = 1; l < layers_.size(); ++l)
      if (per[l].paths != per[0].paths)
        throw ShapeError("Layers: layer " + std::to_string(l) + " differs in structure from layer 0 (" +
                         std::to_string(per[l].paths.size()) + " leaves vs " + std::to_string(per[0].paths.size()) +
                         "); only identical layers stack");
    for (std::size_t j = 0; j < into.variables.size(); ++j) {
      const VariableState& first = per[0].variables[j]->state();
      const std::string where = "Layers: leaf '" + per[0].paths[j].to_string() + "'";
      std::vector<const Value*> values;
      for (std::size_t l = 0; l < layers_.size(); ++l) {
        // One variable shared by the layers (dropout's random stream, which every layer advances
        // in turn) would become a copy per layer, each drawing what the others draw.
        if (l > 0 && per[l].variables[j]->cell_ptr() == per[0].variables[j]->cell_ptr())
          throw InvalidArgument(where + " is one variable shared by every layer (a random stream, as dropout's); "
                                "stacking would give each layer its own copy, drawing the same numbers: only "
                                "layers without shared variables stack");
        const VariableState& s = per[l].variables[j]->state();
        if (s.kind != first.kind || s.axes() != first.axes())
          throw ShapeError(where + ": layer " + std::to_string(l) + " is a " + std::string(s.kind_name()) +
                           " with other kind or axes than layer 0's; only identical layers stack");
        values.push_back(&s.value);
      }
      auto cell = std::make_shared<VariableState>();
      cell->kind = first.kind;
      cell->value = detail::layers::stack_values(values, where);
      cell->metadata = detail::layers::with_axes(detail::layers::stacked_axes(first.axes()));
      into.variables[j]->bind(std::move(cell));
    }
    stacked_ = std::move(stacked);
    layers_.clear();
  }

  // For traversal (nnx/core/module.hpp): the stacked module, or nullptr when per-layer.
  Layer* nnx_stacked() noexcept { return stacked_ ? &*stacked_ : nullptr; }
  const Layer* nnx_stacked() const noexcept { return stacked_ ? &*stacked_ : nullptr; }
  std::vector<Layer>& nnx_layers() noexcept { return layers_; }
  const std::vector<Layer>& nnx_layers() const noexcept { return layers_; }

 private:
  // Layer i of the stacked leaves, as a module of its own.
  Layer slice(std::int64_t i, bool borrowed) const {
    Layer view = *stacked_;
    detail::layers::Collect c = detail::layers::collect(view);
    for (Variable* v : c.variables) {
      const VariableState& s = v->state();
      auto cell = std::make_shared<VariableState>();
      cell->kind = s.kind;
      cell->value = detail::layers::slice_value(s.value, i, borrowed);
      cell->metadata = detail::layers::with_axes(detail::layers::layer_axes(s.axes()));
      v->bind(std::move(cell));
    }
    return view;
  }

  // The stacked leaves' cells and tensor addresses, compared on each access (no allocation).
  struct Signature : detail::NodeVisitor {
    const std::vector<const void*>* expected = nullptr;
    std::vector<const void*>* record = nullptr;
    std::size_t at = 0;
    bool same = true;
    void note(const void* p) {
      if (record) {
        record->push_back(p);
      } else if (same) {
        same = at < expected->size() && (*expected)[at] == p;
        ++at;
      }
    }
    void variable(const Path&, const Variable& v) {
      note(v.cell_ptr().get());
      const auto address = [&](const Tensor& t) { note(t.is_abstract() ? nullptr : t.raw_data()); };
      if (const auto* t = std::get_if<Tensor>(&v.state().value)) {
        address(*t);
      } else {
        const QTensor& q = std::get<QTensor>(v.state().value);
        address(q.qvalue);
        for (const Tensor& scale : q.scale) address(scale);
      }
    }
  };
  // Copy-on-write of the stacked Cache tensors, as KVCache::make_writable does per layer.
  struct CopyCachesOnWrite : detail::NodeVisitor {
    void variable(const Path&, Variable& v) {
      if (!v.kind().is_a(Cache::kind_info()) || v.is_quantized()) return;
      Tensor& t = v.value();
      if (!t.is_abstract() && t.use_count() > 1) t = t.clone();
    }
  };

  std::vector<Layer>& all() {
    if (!stacked_) return layers_;
    CopyCachesOnWrite cow;
    Path path;
    walk(*stacked_, path, cow);
    return std::as_const(*this).views();
  }
  const std::vector<Layer>& all() const { return stacked_ ? views() : layers_; }
  std::vector<Layer>& views() const {
    Signature check;
    check.expected = &views_.signature;
    Path path;
    walk(*stacked_, path, check);
    if (!check.same || check.at != views_.signature.size() || views_.layers.size() != count_) {
      views_.layers.clear();
      for (std::size_t i = 0; i < count_; ++i) views_.layers.push_back(slice(static_cast<std::int64_t>(i), true));
      views_.signature.clear();
      Signature record;
      record.record = &views_.signature;
      walk(*stacked_, path, record);
    }
    return views_.layers;
  }

  struct ViewCache {
    std::vector<Layer> layers;
    std::vector<const void*> signature;
  };
  std::vector<Layer> layers_;     // per-layer
  std::optional<Layer> stacked_;  // stacked
  std::size_t count_ = 0;
  mutable ViewCache views_;       // stacked: layer i's slices
};

// True when `model` (through model.decoder_layers(), the hook the transformers here provide)
// holds its layers stacked.
template <class M>
bool has_stacked_layers(M& model) {
  if constexpr (requires { model.decoder_layers(); })
    return model.decoder_layers().layout() == Layout::stacked;
  else
    return false;
}

// Runs f() with the model's stacked layers turned per layer, then stacks them again: the
// transforms written per Linear or Attention (quantize, cast_weights, add_lora, qk_clip, ...)
// serve stacked models this way, at the cost of one copy of the layers' leaves, and see
// per-layer paths ("h/3/attn/qkv"). On an exception the model keeps its original layers.
template <class M, class F>
auto with_per_layer_layers(M& model, F&& f) {
  if constexpr (!requires { model.decoder_layers(); }) {
    return f();  // no layers to turn
  } else {
    auto& layers = model.decoder_layers();
    auto saved = layers;  // shares the variables
    layers.set_layout(Layout::per_layer);
    try {
      if constexpr (std::is_void_v<decltype(f())>) {
        f();
        layers.set_layout(Layout::stacked);
      } else {
        auto result = f();
        layers.set_layout(Layout::stacked);
        return result;
      }
    } catch (...) {
      layers = std::move(saved);
      throw;
    }
  }
}

// ---- the same conversion on a flat list of leaves (checkpoints) ----------------------------

// One leaf of a state or checkpoint, as the layout conversion sees it. `source` is the
// caller's index of the leaf it came from (stacking: layer 0's), carrying what the conversion
// does not look at (the kind).
struct LayoutLeaf {
  Path path;
  Value value;
  std::vector<std::string> axes;
  std::size_t source = 0;
};

namespace detail::layers {

// Where `key` followed by a layer index occurs in p ("h/3/attn" -> 0), or -1.
inline std::int64_t per_layer_at(const Path& p, std::string_view key) {
  for (std::size_t i = 0; i + 1 < p.size(); ++i)
    if (p[i].is_name() && p[i].name() == key && p[i + 1].is_index()) return static_cast<std::int64_t>(i);
  return -1;
}
// Where `key` followed by a name occurs in p ("h/attn/qkv" -> 0), or -1.
inline std::int64_t stacked_at(const Path& p, std::string_view key) {
  for (std::size_t i = 0; i + 1 < p.size(); ++i)
    if (p[i].is_name() && p[i].name() == key && p[i + 1].is_name()) return static_cast<std::int64_t>(i);
  return -1;
}
inline Path subpath(const Path& p, std::size_t begin, std::size_t end) {
  Path out;
  for (std::size_t i = begin; i < end; ++i) out.push_back(p[i]);
  return out;
}
inline Path concat(const Path& a, const Path& b) {
  Path out = a;
  for (std::size_t i = 0; i < b.size(); ++i) out.push_back(b[i]);
  return out;
}

}  // namespace detail::layers

// The layout of a list of leaves whose layers sit under `key` ("h", "layers"): stacked when
// some leaf is key/<name>/..., per-layer when some is key/<index>/...; std::nullopt when
// neither (no layers) or both (InvalidArgument naming a leaf of each).
inline std::optional<Layout> detect_layout(const std::vector<Path>& paths, std::string_view key) {
  const Path* stacked = nullptr;
  const Path* per_layer = nullptr;
  for (const Path& p : paths) {
    if (!stacked && detail::layers::stacked_at(p, key) >= 0) stacked = &p;
    if (!per_layer && detail::layers::per_layer_at(p, key) >= 0) per_layer = &p;
  }
  if (stacked && per_layer)
    throw InvalidArgument("mixed layouts: '" + stacked->to_string() + "' is stacked, '" + per_layer->to_string() +
                          "' per-layer");
  if (stacked) return Layout::stacked;
  if (per_layer) return Layout::per_layer;
  return std::nullopt;
}

// Per-layer leaves (A/key/<i>/B for i in [0, n)) -> stacked ones (A/key/B [n, ...], the
// "layers" axis first), each at the place of its layer-0 leaf; other leaves unchanged. Every
// A/key group must hold layers 0..n-1 with the same paths, kinds (by `source`, compared with
// same_kind), dtypes and shapes. Throws ShapeError / InvalidArgument naming the leaf.
template <class SameKind>
std::vector<LayoutLeaf> stack_layer_leaves(const std::vector<LayoutLeaf>& in, std::string_view key,
                                           SameKind&& same_kind) {
  using namespace detail::layers;
  struct Group {
    Path stacked_path;
    std::vector<const LayoutLeaf*> layers;
  };
  std::vector<LayoutLeaf> out;
  std::vector<Group> groups;  // parallel to out; empty layers for leaves left as they are
  // (prefix A/key, the largest layer count of its groups), to check every group has them all.
  std::vector<std::pair<Path, std::size_t>> counts;
  for (const LayoutLeaf& leaf : in) {
    const std::int64_t at = per_layer_at(leaf.path, key);
    if (at < 0) {
      out.push_back(leaf);
      groups.push_back({});
      continue;
    }
    const auto a = static_cast<std::size_t>(at);
    const std::int64_t index = static_cast<std::int64_t>(leaf.path[a + 1].index());
    const Path stacked_path = concat(subpath(leaf.path, 0, a + 1), subpath(leaf.path, a + 2, leaf.path.size()));
    std::size_t g = 0;
    while (g < groups.size() && !(groups[g].layers.size() && groups[g].stacked_path == stacked_path)) ++g;
    if (g == groups.size()) {
      if (index != 0)
        throw InvalidArgument("stack layers: '" + leaf.path.to_string() + "' has no layer-0 leaf before it");
      out.push_back(leaf);
      groups.push_back({stacked_path, {&leaf}});
      continue;
    }
    Group& group = groups[g];
    if (static_cast<std::size_t>(index) != group.layers.size())
      throw InvalidArgument("stack layers: '" + leaf.path.to_string() + "' follows layer " +
                            std::to_string(group.layers.size() - 1) + " (layers must run 0, 1, ... in order)");
    if (!same_kind(leaf.source, group.layers[0]->source) || leaf.axes != group.layers[0]->axes)
      throw ShapeError("stack layers: '" + leaf.path.to_string() + "' differs in kind or axes from layer 0's");
    group.layers.push_back(&leaf);
  }
  // Every group under one A/key must have that A/key's largest layer count; the message names
  // a group that falls short (in a state, a variable shared by every layer is stored once,
  // under layer 0).
  const auto prefix_of = [&](const Group& group) {
    return subpath(group.stacked_path, 0, static_cast<std::size_t>(stacked_at(group.stacked_path, key)) + 1);
  };
  for (const Group& group : groups) {
    if (group.layers.empty()) continue;
    const Path prefix = prefix_of(group);
    auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == prefix; });
    if (it == counts.end())
      counts.emplace_back(prefix, group.layers.size());
    else
      it->second = std::max(it->second, group.layers.size());
  }
  for (std::size_t g = 0; g < groups.size(); ++g) {
    if (groups[g].layers.empty()) continue;
    const Path prefix = prefix_of(groups[g]);
    const std::size_t n = groups[g].layers.size();
    const std::size_t most =
        std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == prefix; })->second;
    if (n != most)
      throw InvalidArgument("stack layers: '" + groups[g].layers[0]->path.to_string() + "' is in " +
                            std::to_string(n) + " layer" + (n == 1 ? "" : "s") + ", other leaves under '" +
                            prefix.to_string() + "' in " + std::to_string(most) +
                            (n == 1 ? " (a variable shared by every layer, such as dropout's random stream, is "
                                      "stored once and cannot be stacked)"
                                    : ""));
    std::vector<const Value*> values;
    for (const LayoutLeaf* l : groups[g].layers) values.push_back(&l->value);
    LayoutLeaf& leaf = out[g];
    leaf.value = stack_values(values, "stack layers: '" + groups[g].layers[0]->path.to_string() + "'");
    leaf.path = groups[g].stacked_path;
    leaf.axes = stacked_axes(leaf.axes);
  }
  return out;
}

// Stacked leaves (A/key/B [n, ...]) -> per-layer ones (A/key/<i>/B), zero-copy views; each run
// of consecutive stacked leaves under one A/key is written layer by layer (all of layer 0's
// leaves, then layer 1's), the order a per-layer model's traversal has. Other leaves
// unchanged. ShapeError naming a leaf without a leading axis or with another layer count.
inline std::vector<LayoutLeaf> unstack_layer_leaves(const std::vector<LayoutLeaf>& in, std::string_view key) {
  using namespace detail::layers;
  std::vector<LayoutLeaf> out;
  std::size_t i = 0;
  while (i < in.size()) {
    const std::int64_t at = stacked_at(in[i].path, key);
    if (at < 0) {
      out.push_back(in[i++]);
      continue;
    }
    const Path prefix = subpath(in[i].path, 0, static_cast<std::size_t>(at) + 1);
    std::size_t end = i;
    while (end < in.size() && stacked_at(in[end].path, key) == at &&
           subpath(in[end].path, 0, static_cast<std::size_t>(at) + 1) == prefix)
      ++end;
    const auto leading = [](const LayoutLeaf& l) {
      const Tensor& t = std::holds_alternative<Tensor>(l.value) ? std::get<Tensor>(l.value)
                                                                : std::get<QTensor>(l.value).qvalue;
      return t.rank() == 0 ? std::int64_t{-1} : t.dim(0);
    };
    const std::int64_t n = leading(in[i]);
    for (std::size_t j = i; j < end; ++j) {
      bool ok = leading(in[j]) == n && n >= 0;
      if (ok && std::holds_alternative<QTensor>(in[j].value))
        for (const Tensor& s : std::get<QTensor>(in[j].value).scale) ok = ok && s.rank() > 0 && s.dim(0) == n;
      if (!ok)
        throw ShapeError("unstack layers: '" + in[j].path.to_string() + "' has no leading layers axis of " +
                         std::to_string(n) + " (as '" + in[i].path.to_string() + "')");
      if (!in[j].axes.empty() && in[j].axes.front() != layers_axis)
        throw ShapeError("unstack layers: '" + in[j].path.to_string() + "': its first axis is '" +
                         in[j].axes.front() + "', not '" + std::string(layers_axis) + "'");
    }
    for (std::int64_t layer = 0; layer < n; ++layer)
      for (std::size_t j = i; j < end; ++j) {
        const Path& p = in[j].path;
        Path per = prefix;
        per.push_back(PathKey(static_cast<std::size_t>(layer)));
        per = concat(per, subpath(p, prefix.size(), p.size()));
        out.push_back({per, slice_value(in[j].value, layer, /*borrowed=*/false), layer_axes(in[j].axes), in[j].source});
      }
    i = end;
  }
  return out;
}

// The layout of a state's layers under `key` (see detect_layout).
inline std::optional<Layout> layout_of(const State& state, std::string_view key) {
  std::vector<Path> paths;
  paths.reserve(state.size());
  for (const auto& [path, leaf] : state) paths.push_back(path);
  return detect_layout(paths, key);
}

// `state` with its layers under `key` in `layout`: stacked copies, per-layer views (no copy).
// Unchanged when already so or when it holds no layers. Abstract leaves convert to abstract.
inline State to_layout(const State& state, std::string_view key, Layout layout) {
  const std::optional<Layout> found = layout_of(state, key);
  if (!found || *found == layout) return state;
  std::vector<LayoutLeaf> leaves;
  std::vector<const VariableState*> sources;
  leaves.reserve(state.size());
  for (const auto& [path, leaf] : state) {
    leaves.push_back({path, leaf.value, leaf.axes(), sources.size()});
    sources.push_back(&leaf);
  }
  const std::vector<LayoutLeaf> converted =
      layout == Layout::stacked
          ? stack_layer_leaves(leaves, key, [&](std::size_t a, std::size_t b) { return sources[a]->kind == sources[b]->kind; })
          : unstack_layer_leaves(leaves, key);
  State out;
  for (const LayoutLeaf& l : converted) {
    VariableState v;
    v.kind = sources[l.source]->kind;
    v.value = l.value;
    v.metadata = detail::layers::with_axes(l.axes);
    out.insert(l.path, std::move(v));
  }
  return out;
}

}  // namespace nnx
