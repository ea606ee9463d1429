// nnx/core/graphdef.hpp — GraphDef: everything about a module except its state.
//
// A graphdef records, in traversal order, every node of a module tree: module types, static
// configuration, vector and map sizes, absent optionals, and one entry per variable (the
// leaf's path, kind, dtype, shape and axis names; tied variables refer back to the first
// path). It is immutable and shared: copying one copies a pointer.
//
// split() returns a GraphDef<M>, which also holds a stripped prototype of M (no tensors), so
// merge() rebuilds an M from states. A graphdef read from JSON is a GraphDef<> (untyped): it
// compares, hashes and prints like any other, and checkpoints use it to check a target.
//
//   auto [graphdef, state] = nnx::split(model);
//   graphdef.leaves().size();   // number of leaves
//   graphdef == other;          // same structure, statics, kinds, dtypes and shapes
//   std::cout << graphdef.to_string();
#pragma once

#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {

// What a graphdef knows about one leaf.
struct LeafSpec {
  Path path;
  const KindInfo* kind = nullptr;
  DType dtype = DType::f32;  // of the value, or of a QTensor's qvalue
  Shape shape;
  bool quantized = false;
  std::vector<Shape> scale_shapes;  // a QTensor's scales (f32)
  std::shared_ptr<const Metadata> metadata;

  std::string_view kind_name() const noexcept { return *kind->name; }
  const std::vector<std::string>& axes() const noexcept {
    static const std::vector<std::string> none;
    return metadata ? metadata->axes : none;
  }
  // "Param f32[768, 2304]" or "QuantizedWeight i8[768, 2304] scale f32[2304]".
  std::string describe() const {
    std::string s = std::string(*kind->name) + " " + std::string(dtype_name(dtype)) + to_string(shape);
    for (const auto& sc : scale_shapes) s += " scale f32" + to_string(sc);
    return s;
  }
  friend bool operator==(const LeafSpec& a, const LeafSpec& b) {
    return a.path == b.path && a.kind == b.kind && a.dtype == b.dtype && a.shape == b.shape &&
           a.quantized == b.quantized && a.scale_shapes == b.scale_shapes && a.axes() == b.axes();
  }
};

enum class NodeType : std::uint8_t {
  module,          // type_name set
  sequence,        // size: element count
  string_map,      // size: entry count
  absent,          // an empty std::optional
  static_value,    // size: index into statics
  variable,        // size: leaf index (first occurrence of a variable)
  shared_variable  // size: leaf index (a tied variable seen before)
};

// One node in traversal order. Its path is the first depth-1 keys of the previous node's
// path, then `key` (the root has depth 0), which keeps a graphdef small to build and copy.
struct GraphNode {
  NodeType type;
  std::uint8_t depth = 0;
  PathKey key;
  std::uint64_t size = 0;
  const std::string* type_name = nullptr;  // interned; modules only

  friend bool operator==(const GraphNode&, const GraphNode&) = default;
};

namespace detail {

struct GraphData {
  const std::string* type_name = nullptr;  // the root module's type
  std::vector<GraphNode> nodes;
  std::vector<StaticValue> statics;
  std::vector<LeafSpec> leaves;
  std::vector<std::uint32_t> slot_leaf;  // variable slot (traversal order) -> leaf index
  mutable std::once_flag index_once;
  mutable PathIndex leaf_index;

  std::int64_t find_leaf(const Path& p) const {
    auto path_of = [this](std::uint32_t i) -> const Path& { return leaves[i].path; };
    std::call_once(index_once, [&] {
      for (std::uint32_t i = 0; i < leaves.size(); ++i) leaf_index.insert(leaves[i].path, i, path_of);
    });
    return leaf_index.find(p, path_of);
  }
};

// Bitwise for doubles, so a NaN in a config equals itself.
inline bool same_static(const StaticValue& a, const StaticValue& b) {
  auto same_double = [](double x, double y) { return std::memcmp(&x, &y, sizeof x) == 0; };
  if (const auto* x = std::get_if<double>(&a)) {
    const auto* y = std::get_if<double>(&b);
    return y && same_double(*x, *y);
  }
  if (const auto* x = std::get_if<std::vector<double>>(&a)) {
    const auto* y = std::get_if<std::vector<double>>(&b);
    return y && x->size() == y->size() && std::equal(x->begin(), x->end(), y->begin(), same_double);
  }
  return a == b;
}

inline bool same_graph(const GraphData& a, const GraphData& b) {
  return &a == &b ||
         (a.type_name == b.type_name && a.nodes == b.nodes && a.leaves == b.leaves && a.slot_leaf == b.slot_leaf &&
          std::equal(a.statics.begin(), a.statics.end(), b.statics.begin(), b.statics.end(), same_static));
}

inline std::string format_static(const StaticValue& v) {
  auto num = [](double d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return std::string(buf);
  };
  return std::visit(
      [&](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) {
          return x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<T, double>) {
          return num(x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          return "\"" + x + "\"";
        } else {
          std::string s = "[";
          for (std::size_t i = 0; i < x.size(); ++i) {
            if (i) s += ", ";
            if constexpr (std::is_same_v<typename T::value_type, double>)
              s += num(x[i]);
            else if constexpr (std::is_same_v<typename T::value_type, std::string>)
              s += "\"" + x[i] + "\"";
            else
              s += std::to_string(x[i]);
          }
          return s + "]";
        }
      },
      v);
}

// FNV-1a over text, so a graphdef's hash is the same in every process.
struct StableHasher {
  std::uint64_t h = 0xcbf29ce484222325ull;
  void bytes(const void* p, std::size_t n) {
    auto* c = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h = (h ^ c[i]) * 0x100000001b3ull;
  }
  void text(std::string_view s) {
    bytes(s.data(), s.size());
    bytes("\0", 1);
  }
  void u64(std::uint64_t v) { bytes(&v, sizeof v); }
};

}  // namespace detail

template <class M = void>
class GraphDef;

// The untyped graphdef: structure, statics and leaf specifications.
template <>
class GraphDef<void> {
 public:
  GraphDef() = default;
  explicit GraphDef(std::shared_ptr<const detail::GraphData> data) : data_(std::move(data)) {}

  bool valid() const noexcept { return data_ != nullptr; }
  std::string_view type_name() const { return *data().type_name; }
  std::span<const GraphNode> nodes() const { return data().nodes; }
  std::span<const StaticValue> statics() const { return data().statics; }
  std::span<const LeafSpec> leaves() const { return data().leaves; }
  // Leaf index for `path`, or -1.
  std::int64_t find_leaf(const Path& path) const { return data().find_leaf(path); }
  // Number of parameters (elements) over all leaves.
  std::int64_t numel() const {
    std::int64_t n = 0;
    for (const auto& l : data().leaves) {
      n += l.shape.numel();
      for (const auto& s : l.scale_shapes) n += s.numel();
    }
    return n;
  }

  // Indented, one line per node.
  std::string to_string() const {
    std::string out;
    const auto& d = data();
    for (const auto& n : d.nodes) {
      std::string indent(2 * n.depth, ' ');
      std::string name = n.depth == 0 ? std::string("<root>") : n.key.to_string();
      switch (n.type) {
        case NodeType::module: out += indent + name + ": " + *n.type_name + "\n"; break;
        case NodeType::sequence: out += indent + name + ": sequence of " + std::to_string(n.size) + "\n"; break;
        case NodeType::string_map: out += indent + name + ": map of " + std::to_string(n.size) + "\n"; break;
        case NodeType::absent: out += indent + name + ": absent\n"; break;
        case NodeType::static_value: out += indent + name + " = " + detail::format_static(d.statics[n.size]) + "\n"; break;
        case NodeType::variable: {
          const auto& l = d.leaves[n.size];
          out += indent + name + ": " + l.describe();
          if (!l.axes().empty()) {
            out += " (";
            for (std::size_t i = 0; i < l.axes().size(); ++i) out += (i ? ", " : "") + l.axes()[i];
            out += ")";
          }
          out += "\n";
          break;
        }
        case NodeType::shared_variable:
          out += indent + name + ": shared with " + d.leaves[n.size].path.to_string() + "\n";
          break;
      }
    }
    return out;
  }

  // Stable across processes and runs (hashes text, not addresses).
  std::size_t hash() const {
    detail::StableHasher h;
    const auto& d = data();
    h.text(*d.type_name);
    for (const auto& n : d.nodes) {
      h.u64(static_cast<std::uint64_t>(n.type));
      h.u64(n.depth);
      h.text(n.key.to_string());
      h.u64(n.size);
      if (n.type_name) h.text(*n.type_name);
    }
    for (const auto& s : d.statics) h.text(detail::format_static(s));
    for (const auto& l : d.leaves) h.text(l.describe());
    return static_cast<std::size_t>(h.h);
  }

  friend bool operator==(const GraphDef& a, const GraphDef& b) {
    if (!a.data_ || !b.data_) return a.data_ == b.data_;
    return detail::same_graph(*a.data_, *b.data_);
  }

  const detail::GraphData& data() const {
    if (!data_) throw InvalidArgument("GraphDef: empty graphdef");
    return *data_;
  }

 protected:
  std::shared_ptr<const detail::GraphData> data_;
};

// A graphdef that can rebuild an M: it keeps a prototype of M whose variables are empty.
template <class M>
class GraphDef : public GraphDef<void> {
 public:
  GraphDef() = default;
  GraphDef(std::shared_ptr<const detail::GraphData> data, std::shared_ptr<const M> prototype)
      : GraphDef<void>(std::move(data)), prototype_(std::move(prototype)) {}
  const M& prototype() const {
    if (!prototype_) throw InvalidArgument("GraphDef: empty graphdef");
    return *prototype_;
  }

 private:
  std::shared_ptr<const M> prototype_;
};

}  // namespace nnx

template <class M>
struct std::hash<nnx::GraphDef<M>> {
  std::size_t operator()(const nnx::GraphDef<M>& g) const { return g.hash(); }
};
