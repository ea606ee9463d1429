// nnx/core/graphdef_json.hpp — GraphDef to and from JSON (nlohmann/json).
//
// Checkpoints store the graphdef of what they hold, so a restore can check its target. The
// JSON form keeps integer path keys as JSON numbers and tags each static value with its
// type, so a graphdef read back compares equal to the one written:
//
//   nlohmann::json j = nnx::to_json(graphdef);
//   nnx::GraphDef<> back = nnx::graphdef_from_json(j);
//   assert(back == graphdef);
//
// Layout (version "nnx.graphdef/1"):
//   {"format": "nnx.graphdef/1", "type": "Model",
//    "nodes": [{"node": "module", "path": [], "type": "Model"},
//              {"node": "sequence", "path": ["blocks"], "size": 2},
//              {"node": "static", "path": ["blocks", 0, "heads"], "value": {"int": 12}},
//              {"node": "variable", "path": ["blocks", 0, "kernel"], "leaf": 0},
//              {"node": "shared", "path": ["head", "kernel"], "leaf": 3},
//              {"node": "absent", "path": ["bias"]}, {"node": "map", "path": ["rngs"], "size": 1}],
//    "leaves": [{"path": ["blocks", 0, "kernel"], "kind": "Param", "dtype": "f32",
//                "shape": [768, 2304], "axes": ["embed", "mlp"], "scales": [[2304]]}]}
// "scales" is present only for QTensor leaves. Static values are tagged "bool", "int",
// "float" (non-finite as "nan", "inf", "-inf"), "str", "ints", "floats" or "strs".
#pragma once

#include <cmath>
#include <limits>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/core/graphdef.hpp"

namespace nnx {
namespace detail {

inline constexpr const char* graphdef_format = "nnx.graphdef/1";

inline nlohmann::json path_to_json(const Path& p) {
  auto j = nlohmann::json::array();
  for (PathKey k : p) {
    if (k.is_index())
      j.push_back(k.index());
    else
      j.push_back(std::string(k.name()));
  }
  return j;
}

[[noreturn]] inline void bad_graphdef_json(const std::string& where, const std::string& what) {
  throw InvalidArgument("graphdef JSON: " + where + ": " + what);
}

inline const nlohmann::json& json_field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.is_object()) bad_graphdef_json(where, "expected an object, found " + std::string(j.type_name()));
  auto it = j.find(key);
  if (it == j.end()) bad_graphdef_json(where, std::string("missing field \"") + key + "\"");
  return *it;
}

inline std::uint64_t json_size(const nlohmann::json& j, const std::string& where) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<std::int64_t>() >= 0))
    bad_graphdef_json(where, "expected a non-negative integer, found " + j.dump());
  return j.get<std::uint64_t>();
}

inline Path path_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array()) bad_graphdef_json(where, "a path must be an array, found " + j.dump());
  Path p;
  try {
    for (const auto& k : j) {
      if (k.is_string())
        p.push_back(PathKey(k.get<std::string>()));
      else if (k.is_number_integer())
        p.push_back(PathKey(k.get<std::int64_t>()));
      else
        bad_graphdef_json(where, "path keys are strings or integers, found " + k.dump());
    }
  } catch (const InvalidArgument& e) {
    bad_graphdef_json(where, e.what());
  }
  return p;
}

inline Shape shape_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_array() || j.size() > Shape::max_rank)
    bad_graphdef_json(where, "a shape must be an array of at most " + std::to_string(Shape::max_rank) +
                                 " dimensions, found " + j.dump());
  std::vector<std::int64_t> dims;
  for (const auto& d : j) {
    const std::uint64_t n = json_size(d, where);
    if (n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      bad_graphdef_json(where, "shape " + j.dump() + ": dimension " + std::to_string(n) + " is above 2^63 - 1");
    dims.push_back(static_cast<std::int64_t>(n));
  }
  // Shape's own checks (at most 2^53 elements), reported as this reader's error, naming the leaf.
  try {
    return Shape(dims);
  } catch (const ShapeError& e) {
    bad_graphdef_json(where, e.what());
  }
}

inline nlohmann::json float_to_json(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  return d;
}
inline double float_from_json(const nlohmann::json& j, const std::string& where) {
  if (j.is_number()) return j.get<double>();
  if (j == "nan") return std::numeric_limits<double>::quiet_NaN();
  if (j == "inf") return std::numeric_limits<double>::infinity();
  if (j == "-inf") return -std::numeric_limits<double>::infinity();
  bad_graphdef_json(where, "expected a number, found " + j.dump());
}

inline nlohmann::json static_to_json(const StaticValue& v) {
  return std::visit(
      [](const auto& x) -> nlohmann::json {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, bool>) return {{"bool", x}};
        if constexpr (std::is_same_v<T, std::int64_t>) return {{"int", x}};
        if constexpr (std::is_same_v<T, double>) return {{"float", float_to_json(x)}};
        if constexpr (std::is_same_v<T, std::string>) return {{"str", x}};
        if constexpr (std::is_same_v<T, std::vector<std::int64_t>>) return {{"ints", x}};
        if constexpr (std::is_same_v<T, std::vector<std::string>>) return {{"strs", x}};
        if constexpr (std::is_same_v<T, std::vector<double>>) {
          auto a = nlohmann::json::array();
          for (double d : x) a.push_back(float_to_json(d));
          return {{"floats", a}};
        }
      },
      v);
}

// An integer static. nlohmann would convert a float (undefined behaviour out of range) or an
// unsigned above 2^63 - 1 (wrapping to a negative) without a word; neither is what was written.
inline std::int64_t static_int_from_json(const nlohmann::json& j, const std::string& where) {
  const bool fits = j.is_number_unsigned()
                        ? j.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
                        : j.is_number_integer();
  if (!fits) bad_graphdef_json(where, "expected a 64-bit signed integer, found " + j.dump());
  return j.get<std::int64_t>();
}

inline StaticValue static_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || j.size() != 1) bad_graphdef_json(where, "a static value is {\"<type>\": value}, found " + j.dump());
  const std::string tag = j.begin().key();
  const nlohmann::json& v = j.begin().value();
  try {
    if (tag == "bool" && v.is_boolean()) return v.get<bool>();
    if (tag == "int") return static_int_from_json(v, where);
    if (tag == "float") return float_from_json(v, where);
    if (tag == "str" && v.is_string()) return v.get<std::string>();
    if (tag == "ints" && v.is_array()) {
      std::vector<std::int64_t> out;
      for (const auto& i : v) out.push_back(static_int_from_json(i, where));
      return out;
    }
    if (tag == "strs" && v.is_array()) return v.get<std::vector<std::string>>();
    if (tag == "floats" && v.is_array()) {
      std::vector<double> out;
      for (const auto& d : v) out.push_back(float_from_json(d, where));
      return out;
    }
  } catch (const nlohmann::json::exception& e) {
    bad_graphdef_json(where, e.what());
  }
  bad_graphdef_json(where, "unknown static value " + j.dump());
}

}  // namespace detail

inline nlohmann::json to_json(const GraphDef<>& graphdef) {
  const auto& d = graphdef.data();
  auto nodes = nlohmann::json::array();
  Path path;
  for (const auto& n : d.nodes) {
    while (path.size() >= n.depth && !path.empty()) path.pop_back();
    if (n.depth > 0) path.push_back(n.key);
    nlohmann::json j{{"path", detail::path_to_json(path)}};
    switch (n.type) {
      case NodeType::module: j["node"] = "module"; j["type"] = *n.type_name; break;
      case NodeType::sequence: j["node"] = "sequence"; j["size"] = n.size; break;
      case NodeType::string_map: j["node"] = "map"; j["size"] = n.size; break;
      case NodeType::absent: j["node"] = "absent"; break;
      case NodeType::static_value: j["node"] = "static"; j["value"] = detail::static_to_json(d.statics[n.size]); break;
      case NodeType::variable: j["node"] = "variable"; j["leaf"] = n.size; break;
      case NodeType::shared_variable: j["node"] = "shared"; j["leaf"] = n.size; break;
    }
    nodes.push_back(std::move(j));
  }
  auto leaves = nlohmann::json::array();
  for (const auto& l : d.leaves) {
    nlohmann::json j{{"path", detail::path_to_json(l.path)},
                     {"kind", *l.kind->name},
                     {"dtype", std::string(dtype_name(l.dtype))},
                     {"shape", std::vector<std::int64_t>(l.shape.begin(), l.shape.end())},
                     {"axes", l.axes()}};
    if (l.quantized) {
      auto scales = nlohmann::json::array();
      for (const auto& s : l.scale_shapes) scales.push_back(std::vector<std::int64_t>(s.begin(), s.end()));
      j["scales"] = std::move(scales);
    }
    leaves.push_back(std::move(j));
  }
  return {{"format", detail::graphdef_format}, {"type", *d.type_name}, {"nodes", nodes}, {"leaves", leaves}};
}

// Reads a graphdef written by to_json, checking every field; errors are InvalidArgument
// naming the node or leaf (KindError for a kind this program does not define).
inline GraphDef<> graphdef_from_json(const nlohmann::json& j) {
  using detail::bad_graphdef_json;
  using detail::json_field;
  const auto& format = json_field(j, "format", "root");
  if (format != detail::graphdef_format)
    bad_graphdef_json("root", "format " + format.dump() + ", expected \"" + detail::graphdef_format + "\"");
  auto data = std::make_shared<detail::GraphData>();
  const auto& type = json_field(j, "type", "root");
  if (!type.is_string()) bad_graphdef_json("root", "\"type\" must be a string");
  data->type_name = detail::intern(type.get<std::string>());

  const auto& leaves = json_field(j, "leaves", "root");
  if (!leaves.is_array()) bad_graphdef_json("root", "\"leaves\" must be an array");
  std::unordered_set<Path> leaf_paths;
  for (std::size_t i = 0; i < leaves.size(); ++i) {
    const std::string where = "leaves[" + std::to_string(i) + "]";
    const auto& lj = leaves[i];
    LeafSpec spec;
    spec.path = detail::path_from_json(json_field(lj, "path", where), where);
    const auto& kind = json_field(lj, "kind", where);
    const auto& dtype = json_field(lj, "dtype", where);
    if (!kind.is_string() || !dtype.is_string()) bad_graphdef_json(where, "\"kind\" and \"dtype\" must be strings");
    spec.kind = find_kind(kind.get<std::string>());
    if (!spec.kind)
      throw KindError("graphdef JSON: " + where + " ('" + spec.path.to_string() + "'): unknown variable kind '" +
                      kind.get<std::string>() + "' (a kind registers when its type is first used)");
    auto dt = dtype_from_name(dtype.get<std::string>());
    if (!dt) bad_graphdef_json(where, "unknown dtype " + dtype.dump());
    spec.dtype = *dt;
    spec.shape = detail::shape_from_json(json_field(lj, "shape", where), where);
    if (auto it = lj.find("axes"); it != lj.end() && !it->empty()) {
      if (!it->is_array()) bad_graphdef_json(where, "\"axes\" must be an array of strings");
      Metadata m;
      for (const auto& a : *it) {
        if (!a.is_string()) bad_graphdef_json(where, "\"axes\" must be an array of strings");
        m.axes.push_back(a.get<std::string>());
      }
      spec.metadata = std::make_shared<const Metadata>(std::move(m));
    }
    if (auto it = lj.find("scales"); it != lj.end()) {
      if (!it->is_array()) bad_graphdef_json(where, "\"scales\" must be an array of shapes");
      spec.quantized = true;
      for (const auto& s : *it) spec.scale_shapes.push_back(detail::shape_from_json(s, where));
    }
    if (!leaf_paths.insert(spec.path).second)
      bad_graphdef_json(where, "duplicate leaf path '" + spec.path.to_string() + "'");
    data->leaves.push_back(std::move(spec));
  }

  const auto& nodes = json_field(j, "nodes", "root");
  if (!nodes.is_array()) bad_graphdef_json("root", "\"nodes\" must be an array");
  std::vector<char> leaf_seen(data->leaves.size(), 0);
  Path previous;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const std::string where = "nodes[" + std::to_string(i) + "]";
    const auto& nj = nodes[i];
    const auto& kind = json_field(nj, "node", where);
    const Path path = detail::path_from_json(json_field(nj, "path", where), where);
    // Depth-first order: a node's parent is a prefix of the previous node's path.
    if (i == 0 ? !path.empty() : (path.empty() || !previous.starts_with(path.parent())))
      bad_graphdef_json(where, "path '" + path.to_string() + "' does not follow '" + previous.to_string() +
                                   "' in depth-first order");
    previous = path;
    GraphNode n{NodeType::absent, static_cast<std::uint8_t>(path.size()), path.empty() ? PathKey() : path.back(), 0,
                nullptr};
    auto leaf_ref = [&]() {
      auto leaf = detail::json_size(json_field(nj, "leaf", where), where);
      if (leaf >= data->leaves.size())
        bad_graphdef_json(where, "leaf " + std::to_string(leaf) + " out of range (" +
                                     std::to_string(data->leaves.size()) + " leaves)");
      return leaf;
    };
    if (kind == "module") {
      n.type = NodeType::module;
      const auto& t = json_field(nj, "type", where);
      if (!t.is_string()) bad_graphdef_json(where, "\"type\" must be a string");
      n.type_name = detail::intern(t.get<std::string>());
    } else if (kind == "sequence" || kind == "map") {
      n.type = kind == "map" ? NodeType::string_map : NodeType::sequence;
      n.size = detail::json_size(json_field(nj, "size", where), where);
    } else if (kind == "absent") {
      n.type = NodeType::absent;
    } else if (kind == "static") {
      n.type = NodeType::static_value;
      n.size = data->statics.size();
      data->statics.push_back(detail::static_from_json(json_field(nj, "value", where), where));
    } else if (kind == "variable") {
      n.type = NodeType::variable;
      n.size = leaf_ref();
      if (leaf_seen[n.size]) bad_graphdef_json(where, "leaf " + std::to_string(n.size) + " defined twice");
      if (!(data->leaves[n.size].path == path))
        bad_graphdef_json(where, "variable at '" + path.to_string() + "' names leaf " + std::to_string(n.size) +
                                     " at '" + data->leaves[n.size].path.to_string() + "'");
      leaf_seen[n.size] = 1;
      data->slot_leaf.push_back(static_cast<std::uint32_t>(n.size));
    } else if (kind == "shared") {
      n.type = NodeType::shared_variable;
      n.size = leaf_ref();
      if (!leaf_seen[n.size]) bad_graphdef_json(where, "shared variable refers to leaf " + std::to_string(n.size) + " before it is defined");
      data->slot_leaf.push_back(static_cast<std::uint32_t>(n.size));
    } else {
      bad_graphdef_json(where, "unknown node kind " + kind.dump());
    }
    data->nodes.push_back(std::move(n));
  }
  for (std::size_t i = 0; i < leaf_seen.size(); ++i)
    if (!leaf_seen[i]) bad_graphdef_json("leaves[" + std::to_string(i) + "]", "no variable node defines this leaf");
  return GraphDef<>(std::move(data));
}

}  // namespace nnx
