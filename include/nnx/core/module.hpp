// nnx/core/module.hpp — modules: plain structs that list their fields once.
//
// A module is any struct with one NNX_FIELDS(...) line. Traversal (split, merge, update,
// printing, checkpoints) understands, for each listed field:
//   - Variables (Param, Cache, ... and your own kinds): the state's leaves;
//   - nested modules (or DynamicModule: children named at run time); std::vector<T> (integer keys 0, 1, ...); std::map<std::string, T>
//     (name keys); std::optional<T> (absent fields have no leaves); nnx::Layers<T> (per layer
//     like a vector, or stacked: one module of stacked leaves; nnx/core/layers.hpp);
//   - static configuration: bool, integers, enums, floating point, std::string, and
//     std::vector of those. It belongs to the graphdef, never to the state.
//
//   struct Mlp {
//     int hidden = 0;              // static
//     nnx::Param up, down;         // leaves "up", "down"
//     std::optional<nnx::Param> bias;
//     NNX_FIELDS(hidden, up, down, bias)
//   };
//
// Modules must be default-constructible and copyable (a copy shares its variables).
#pragma once

#include <concepts>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {
namespace detail {

// The comma-separated names of NNX_FIELDS, parsed and interned once per module type.
class FieldNames {
 public:
  explicit FieldNames(std::string_view list) {
    std::size_t start = 0;
    while (start <= list.size()) {
      std::size_t comma = list.find(',', start);
      std::string_view part = list.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
      while (!part.empty() && is_space(part.front())) part.remove_prefix(1);
      while (!part.empty() && is_space(part.back())) part.remove_suffix(1);
      if (!part.empty()) names_.push_back(detail::intern(part));
      if (comma == std::string_view::npos) break;
      start = comma + 1;
    }
  }
  std::size_t size() const noexcept { return names_.size(); }
  const std::string* operator[](std::size_t i) const noexcept { return names_[i]; }

 private:
  static bool is_space(char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; }
  std::vector<const std::string*> names_;
};

// The unqualified-as-written name of T ("demo::Block"), from the compiler's signature string.
template <class T>
std::string_view type_name() {
  std::string_view f = __PRETTY_FUNCTION__;
  auto start = f.find("T = ");
  if (start == std::string_view::npos) return "module";
  start += 4;
  auto end = f.find_first_of(";]", start);
  return f.substr(start, end - start);
}
template <class T>
const std::string* interned_type_name() {
  static const std::string* name = intern(type_name<T>());
  return name;
}

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_string_map : std::false_type {};
template <class T, class C, class A>
struct is_string_map<std::map<std::string, T, C, A>> : std::true_type {};

template <class T>
inline constexpr bool dependent_false = false;

}  // namespace detail

// A module: a struct with an NNX_FIELDS(...) line.
template <class T>
concept Module = requires(T& t) {
  t.nnx_fields();
  T::nnx_field_names();
};

// A module whose children are named at run time: nnx_children() returns a
// std::map<std::string, T> (Rngs uses it, so its streams sit at "rngs/params", ...).
template <class T>
concept DynamicModule = requires(T& t) { t.nnx_children(); };

// A sequence of layers held per layer or stacked (nnx::Layers, nnx/core/layers.hpp): walked
// as a std::vector of its layers, or as the one module of its stacked leaves.
template <class T>
concept LayerStack = requires(T& t) {
  t.nnx_stacked();
  t.nnx_layers();
};

// Static configuration, as it is stored in a graphdef.
using StaticValue = std::variant<bool, std::int64_t, double, std::string, std::vector<std::int64_t>,
                                 std::vector<double>, std::vector<std::string>>;

namespace detail {

template <class T>
concept StaticScalar = std::is_arithmetic_v<T> || std::is_enum_v<T> || std::same_as<T, std::string>;

template <class T>
concept StaticField = StaticScalar<T> || (is_vector<T>::value && StaticScalar<typename T::value_type>);

template <class T>
std::int64_t static_integer(T v) {
  if constexpr (std::is_enum_v<T>) {
    return static_integer(static_cast<std::underlying_type_t<T>>(v));
  } else {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (v > static_cast<T>(INT64_MAX))
        throw InvalidArgument("static field value " + std::to_string(v) + " does not fit in int64");
    }
    return static_cast<std::int64_t>(v);
  }
}

template <StaticField T>
StaticValue to_static_value(const T& v) {
  if constexpr (std::same_as<T, bool>) {
    return v;
  } else if constexpr (std::same_as<T, std::string>) {
    return v;
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<double>(v);
  } else if constexpr (StaticScalar<T>) {
    return static_integer(v);
  } else {
    using E = typename T::value_type;
    if constexpr (std::same_as<E, std::string>) {
      return v;
    } else if constexpr (std::is_floating_point_v<E>) {
      return std::vector<double>(v.begin(), v.end());
    } else {
      std::vector<std::int64_t> out;
      out.reserve(v.size());
      for (const auto& e : v) out.push_back(static_integer(static_cast<E>(e)));
      return out;
    }
  }
}

// Calls f(name, field) for each field listed in NNX_FIELDS.
template <class M, class F>
void for_each_field(M& module, F&& f) {
  using U = std::remove_const_t<M>;
  const FieldNames& names = U::nnx_field_names();
  auto fields = module.nnx_fields();
  constexpr std::size_t n = std::tuple_size_v<decltype(fields)>;
  if (names.size() != n)
    throw InvalidArgument(std::string("NNX_FIELDS of ") + std::string(type_name<U>()) + ": " +
                          std::to_string(names.size()) + " names parsed for " + std::to_string(n) +
                          " fields (list plain member names only)");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (f(names[I], std::get<I>(fields)), ...);
  }(std::make_index_sequence<n>{});
}

// Visitor base with no-op callbacks; walkers override what they need.
struct NodeVisitor {
  void enter_module(const Path&, const std::string* /*type_name*/) {}
  void sequence(const Path&, std::size_t) {}
  void string_map(const Path&, std::size_t) {}
  void absent(const Path&) {}
  // `value` is the field itself; visitors that record it call to_static_value.
  template <class T>
  void static_field(const Path&, const T& /*value*/) {}
};

// Depth-first traversal in field order. `path` is the node's path and is restored on return.
// V provides variable(const Path&, Variable-or-const-Variable&) plus NodeVisitor's callbacks.
template <class T, class V>
void walk(T& node, Path& path, V& visitor) {
  using U = std::remove_const_t<T>;
  if constexpr (std::derived_from<U, Variable>) {
    visitor.variable(path, node);
  } else if constexpr (LayerStack<U>) {
    if (auto* stacked = node.nnx_stacked())
      walk(*stacked, path, visitor);
    else
      walk(node.nnx_layers(), path, visitor);
  } else if constexpr (Module<U>) {
    visitor.enter_module(path, interned_type_name<U>());
    for_each_field(node, [&](const std::string* name, auto& field) {
      path.push_back(PathKey::from_interned(name));
      walk(field, path, visitor);
      path.pop_back();
    });
  } else if constexpr (DynamicModule<U>) {
    visitor.enter_module(path, interned_type_name<U>());
    for (auto& [key, child] : node.nnx_children()) {
      path.push_back(PathKey(std::string_view(key)));
      walk(child, path, visitor);
      path.pop_back();
    }
  } else if constexpr (is_optional<U>::value) {
    if (node.has_value())
      walk(*node, path, visitor);
    else
      visitor.absent(path);
  } else if constexpr (StaticField<U>) {
    visitor.static_field(path, node);
  } else if constexpr (is_vector<U>::value) {
    visitor.sequence(path, node.size());
    for (std::size_t i = 0; i < node.size(); ++i) {
      path.push_back(PathKey(i));
      walk(node[i], path, visitor);
      path.pop_back();
    }
  } else if constexpr (is_string_map<U>::value) {
    visitor.string_map(path, node.size());
    for (auto& [key, child] : node) {
      path.push_back(PathKey(std::string_view(key)));
      walk(child, path, visitor);
      path.pop_back();
    }
  } else {
    static_assert(dependent_false<U>,
                  "nnx: unsupported field type. Fields are Variables, modules (NNX_FIELDS), std::vector, "
                  "std::map<std::string, T>, std::optional, or static configuration (bool, numbers, enums, "
                  "std::string and vectors of those). Wrap tensors in a Variable kind such as nnx::Param.");
  }
}

// for_each_module's traversal: walk's, calling f at each node of type T instead of descending.
template <class T, class Node, class F>
void find_modules(Node& node, Path& path, F& f) {
  using U = std::remove_const_t<Node>;
  if constexpr (std::same_as<U, T>) {
    f(std::as_const(path), node);
  } else if constexpr (std::derived_from<U, Variable> || StaticField<U>) {
    // leaves and static configuration hold no modules
  } else if constexpr (LayerStack<U>) {
    if (auto* stacked = node.nnx_stacked())
      find_modules<T>(*stacked, path, f);
    else
      find_modules<T>(node.nnx_layers(), path, f);
  } else if constexpr (Module<U>) {
    for_each_field(node, [&](const std::string* name, auto& field) {
      path.push_back(PathKey::from_interned(name));
      find_modules<T>(field, path, f);
      path.pop_back();
    });
  } else if constexpr (DynamicModule<U>) {
    for (auto& [key, child] : node.nnx_children()) {
      path.push_back(PathKey(std::string_view(key)));
      find_modules<T>(child, path, f);
      path.pop_back();
    }
  } else if constexpr (is_optional<U>::value) {
    if (node.has_value()) find_modules<T>(*node, path, f);
  } else if constexpr (is_vector<U>::value) {
    for (std::size_t i = 0; i < node.size(); ++i) {
      path.push_back(PathKey(i));
      find_modules<T>(node[i], path, f);
      path.pop_back();
    }
  } else if constexpr (is_string_map<U>::value) {
    for (auto& [key, child] : node) {
      path.push_back(PathKey(std::string_view(key)));
      find_modules<T>(child, path, f);
      path.pop_back();
    }
  }
}

}  // namespace detail

// Calls f(path, sub) for every submodule of type T inside `module` (the module itself
// included), depth-first in field order; the inside of a T is not searched. Use it to
// reconfigure every layer of one type, e.g. every Linear of a model.
template <class T, class M, class F>
void for_each_module(M& module, F&& f) {
  Path path;
  detail::find_modules<T>(module, path, f);
}

}  // namespace nnx

// Lists a module's fields once; place it inside the struct. Every field it names is traversed.
#define NNX_FIELDS(...)                                                      \
  static const ::nnx::detail::FieldNames& nnx_field_names() {                \
    static const ::nnx::detail::FieldNames nnx_names_(#__VA_ARGS__);        \
    return nnx_names_;                                                       \
  }                                                                          \
  auto nnx_fields() { return std::tie(__VA_ARGS__); }                        \
  auto nnx_fields() const { return std::tie(__VA_ARGS__); }
