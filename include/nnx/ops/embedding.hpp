// nnx/ops/embedding.hpp — embedding lookup: rows of a table gathered by integer ids.
//
//   nnx::Tensor h = nnx::ops::embedding(wte, tokens);   // wte: [V, C] f32, tokens: [B, T] i32 -> [B, T, C]
//   nnx::ops::embedding_into(h, wte, tokens);           // preallocated h
//
// ids are i32 or i64 of any shape (a scalar id gives [C]); the table is rank 2 of any dtype
// (rows are copied bit for bit; the output has the table's dtype). Every id is checked before
// anything is written. Errors: InvalidArgument for an id outside [0, V) (naming the id, its
// position and V) or undefined tensors, DTypeError for ids not i32 / i64, ShapeError for the
// table's rank or out's shape. Abstract in, abstract out.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/ops/check.hpp"

namespace nnx::ops {

namespace detail {

inline Shape embedding_shape(const char* op, const Tensor& table, const Tensor& ids) {
  require_defined(op, "table", table);
  require_rank(op, "table", table, 2);
  require_defined(op, "ids", ids);
  if (ids.dtype() != DType::i32 && ids.dtype() != DType::i64)
    throw DTypeError(std::string(op) + ": ids must be i32 or i64, found " + describe(ids));
  Shape shape = ids.shape();
  if (shape.rank() == Shape::max_rank)
    throw ShapeError(std::string(op) + ": ids " + describe(ids) + " leave no room for the embedding axis (max rank " +
                     std::to_string(Shape::max_rank) + ")");
  shape.push_back(table.shape()[1]);
  return shape;
}

template <class I>
void embedding_gather(const char* op, const Tensor& table, const I* ids, std::int64_t n, std::byte* out) {
  const std::int64_t V = table.shape()[0];
  for (std::int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      throw InvalidArgument(std::string(op) + ": id " + std::to_string(ids[i]) + " at flat position " +
                            std::to_string(i) + " is outside [0, " + std::to_string(V) + ") for table " +
                            describe(table));
  const std::size_t row = static_cast<std::size_t>(table.shape()[1]) * dtype_size(table.dtype());
  if (row == 0) return;
  const std::byte* src = table.raw_data();
  for (std::int64_t i = 0; i < n; ++i)
    std::memcpy(out + static_cast<std::size_t>(i) * row, src + static_cast<std::size_t>(ids[i]) * row, row);
}

}  // namespace detail

// out[..., C] = table[ids[...], :]. out (of the table's dtype) must not overlap table.
inline void embedding_into(Tensor out, const Tensor& table, const Tensor& ids) {
  constexpr const char* op = "ops::embedding";
  const Shape shape = detail::embedding_shape(op, table, ids);
  detail::require_out(op, out, shape, table.dtype());
  detail::require_disjoint(op, out, "table", table);
  detail::require_disjoint(op, out, "ids", ids);
  if (out.is_abstract()) return;
  if (ids.dtype() == DType::i32)
    detail::embedding_gather(op, table, ids.data<std::int32_t>(), ids.numel(), out.raw_data());
  else
    detail::embedding_gather(op, table, ids.data<std::int64_t>(), ids.numel(), out.raw_data());
}

// table[V, C] gathered at ids[...] -> [..., C].
inline Tensor embedding(const Tensor& table, const Tensor& ids) {
  const Shape shape = detail::embedding_shape("ops::embedding", table, ids);
  Tensor out = detail::new_output(shape, detail::any_abstract({&table, &ids}), table.dtype());
  embedding_into(out, table, ids);
  return out;
}

}  // namespace nnx::ops
