// nnx/core/contiguous.hpp — contiguous_copy: a State whose tensors all live in one buffer.
//
// A model's weights are many tensors allocated one by one (a 768 x 768 int8 projection is
// 576 KiB), scattered over the heap in 4 KiB pages. Decoding reads every one of them per token,
// front to back in the order the state lists them. Copied into one buffer they form a single
// stream that crosses no allocation boundary, in 2 MiB pages (nnx/core/tensor.hpp): the engine
// does this once to the weights it has just quantized or converted.
//
//   nnx::State params = nnx::contiguous_copy(quantized);  // same paths, kinds, values
//
// Each tensor keeps its own ownership count (a view of the buffer that keeps it alive), so
// use_count() still counts the views of that tensor only, and donation works as before.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <utility>

#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"

namespace nnx {

// `state` (same paths, kinds, metadata and values) with its concrete tensors, QTensor values
// and scales included, copied one after another, each 64-byte aligned, into one allocation, in
// the state's order. Leaves for which moved(path, leaf) is false stay shared with `state` as
// they are; so do abstract and undefined tensors. Pass the state with std::move to free each
// old tensor as soon as it is copied (memory then peaks one tensor above the state's size).
template <class Moved>
State contiguous_copy(State state, Moved&& moved) {
  const auto stored = [](const Tensor& t) { return t.defined() && !t.is_abstract() && t.nbytes() > 0; };
  const auto padded = [](std::size_t n) {
    return (n + detail::tensor_alignment - 1) / detail::tensor_alignment * detail::tensor_alignment;
  };
  std::size_t total = 0;
  for (const auto& [path, leaf] : std::as_const(state))
    if (moved(path, leaf))
      map_tensors(leaf.value, [&](const Tensor& t) {
        if (stored(t)) total += padded(t.nbytes());
        return Tensor();
      });
  if (total == 0) return state;
  const std::shared_ptr<std::byte> buffer = detail::allocate_storage(total);
  std::size_t offset = 0;
  const auto copy = [&](const Tensor& t) {
    if (!stored(t)) return t;
    std::byte* p = buffer.get() + offset;
    offset += padded(t.nbytes());
    std::memcpy(p, t.raw_data(), t.nbytes());
    // Its own control block: use_count() counts this tensor's views, not the buffer's.
    std::shared_ptr<std::byte> view(p, [buffer](std::byte*) noexcept {});
    return Tensor::borrow(p, t.shape(), t.dtype(), std::move(view));
  };
  for (auto& [path, leaf] : state)
    if (moved(path, leaf)) leaf.value = map_tensors(leaf.value, copy);  // drops this state's old tensors
  return state;
}

inline State contiguous_copy(State state) {
  return contiguous_copy(std::move(state), [](const Path&, const VariableState&) { return true; });
}

}  // namespace nnx
