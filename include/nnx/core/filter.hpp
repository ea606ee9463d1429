// nnx/core/filter.hpp — filters: which leaves go to which state.
//
// A filter is anything callable as bool(const Path&, const VariableState&). split(module,
// f1, f2, ..., everything) puts each leaf in the state of the first filter that matches it.
//
//   nnx::of<nnx::Param>                      // kind Param, or a kind derived from it
//   nnx::path_contains("attn")               // a path key equal to "attn"
//   nnx::Not(nnx::of<nnx::Cache>)
//   nnx::All(nnx::of<nnx::Param>, nnx::path_contains("bias"))
//   nnx::Any(nnx::of<nnx::Cache>, nnx::of<nnx::RngState>)
//   nnx::everything, nnx::nothing
//   [](const nnx::Path& p, const nnx::VariableState& v) { return v.shape().rank() == 2; }
#pragma once

#include <concepts>
#include <tuple>
#include <utility>

#include "nnx/core/path.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {

template <class F>
concept Filter = std::predicate<const F&, const Path&, const VariableState&>;

template <class Kind>
struct OfKind {
  bool operator()(const Path&, const VariableState& v) const { return v.kind->is_a(Kind::kind_info()); }
};
// Matches variables of kind Kind or of a kind derived from it.
template <class Kind>
inline constexpr OfKind<Kind> of{};

struct Everything {
  bool operator()(const Path&, const VariableState&) const noexcept { return true; }
};
// Matches every leaf; in split it must come last (as `...` in Flax).
inline constexpr Everything everything{};

struct Nothing {
  bool operator()(const Path&, const VariableState&) const noexcept { return false; }
};
inline constexpr Nothing nothing{};

template <Filter F>
struct NotFilter {
  F inner;
  bool operator()(const Path& p, const VariableState& v) const { return !inner(p, v); }
};
template <Filter F>
NotFilter<F> Not(F f) {
  return {std::move(f)};
}

template <Filter... F>
struct AllFilter {
  std::tuple<F...> inner;
  bool operator()(const Path& p, const VariableState& v) const {
    return std::apply([&](const auto&... f) { return (f(p, v) && ...); }, inner);
  }
};
template <Filter... F>
AllFilter<F...> All(F... f) {
  return {{std::move(f)...}};
}

template <Filter... F>
struct AnyFilter {
  std::tuple<F...> inner;
  bool operator()(const Path& p, const VariableState& v) const {
    return std::apply([&](const auto&... f) { return (f(p, v) || ...); }, inner);
  }
};
template <Filter... F>
AnyFilter<F...> Any(F... f) {
  return {{std::move(f)...}};
}

struct PathContains {
  PathKey key;
  bool operator()(const Path& p, const VariableState&) const noexcept { return p.contains(key); }
};
// Matches leaves whose path has a key equal to `key` (a name or an integer index).
inline PathContains path_contains(PathKey key) { return {key}; }

namespace detail {
template <class... F>
constexpr bool everything_only_last() {
  constexpr std::size_t n = sizeof...(F);
  constexpr bool is_every[] = {std::same_as<std::remove_cvref_t<F>, Everything>..., false};
  for (std::size_t i = 0; i + 1 < n; ++i)
    if (is_every[i]) return false;
  return true;
}
}  // namespace detail

}  // namespace nnx
