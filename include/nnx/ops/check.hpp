// nnx/ops/check.hpp — the argument checks and output plumbing every op shares, so that all
// of them report errors the same way: the op, the argument, what was expected and what was
// found.
//
//   nnx::ops::detail::require_f32("ops::matmul", "x", x);
//   // throws nnx::DTypeError("ops::matmul: x must be f32, found i32[2, 3]")
//
// Also: which outputs are abstract (eval_shape), and memory overlap between an output and
// an input (a view of the same storage may alias exactly, never partially).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx::ops::detail {

inline std::string prefix(const char* op, const char* name) { return std::string(op) + ": " + name + " "; }

inline void require_defined(const char* op, const char* name, const Tensor& t) {
  if (!t.defined()) throw InvalidArgument(prefix(op, name) + "is an undefined tensor");
}

// Defined and of the given dtype (DTypeError otherwise).
inline void require_dtype(const char* op, const char* name, const Tensor& t, DType dtype) {
  require_defined(op, name, t);
  if (t.dtype() != dtype)
    throw DTypeError(prefix(op, name) + "must be " + std::string(dtype_name(dtype)) + ", found " + describe(t));
}

inline void require_f32(const char* op, const char* name, const Tensor& t) { require_dtype(op, name, t, DType::f32); }

inline void require_rank(const char* op, const char* name, const Tensor& t, std::size_t rank) {
  if (t.rank() != rank)
    throw ShapeError(prefix(op, name) + "must have rank " + std::to_string(rank) + ", found " + describe(t));
}

inline void require_min_rank(const char* op, const char* name, const Tensor& t, std::size_t rank) {
  if (t.rank() < rank)
    throw ShapeError(prefix(op, name) + "must have rank >= " + std::to_string(rank) + ", found " + describe(t));
}

inline void require_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  if (t.shape() != expected)
    throw ShapeError(prefix(op, name) + "must have shape " + to_string(expected) + ", found " + describe(t));
}

// An output given to an `_into` op: defined, of the expected dtype and shape.
inline void require_out(const char* op, const Tensor& out, const Shape& expected, DType dtype = DType::f32) {
  require_defined(op, "out", out);
  if (out.dtype() == dtype && out.shape() == expected) return;
  // Messages are built only on failure: checks must not allocate on the decode path.
  const std::string msg =
      prefix(op, "out") + "is " + describe(out) + ", expected " + std::string(dtype_name(dtype)) + to_string(expected);
  if (out.dtype() != dtype) throw DTypeError(msg);
  throw ShapeError(msg);
}

// `shape` with its last dimension replaced by n.
inline Shape with_last(const Shape& shape, std::int64_t n) {
  Shape s = shape;
  s[s.rank() - 1] = n;
  return s;
}

// Product of all dimensions but the last (the number of rows a row-wise kernel sees).
inline std::int64_t leading_rows(const Shape& shape) {
  std::int64_t rows = 1;
  for (std::size_t i = 0; i + 1 < shape.rank(); ++i) rows *= shape[i];
  return rows;
}

inline bool any_abstract(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->is_abstract()) return true;
  return false;
}

// A new f32 output: abstract when an input is (shape propagation) or inside eval_shape
// (Tensor::empty is abstract there), else uninitialized storage.
inline Tensor new_output(const Shape& shape, bool abstract, DType dtype = DType::f32) {
  return abstract ? Tensor::abstract(shape, dtype) : Tensor::empty(shape, dtype);
}

// True when the bytes of a and b intersect (both concrete and non-empty).
inline bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.is_abstract() || b.is_abstract() || a.nbytes() == 0 || b.nbytes() == 0) return false;
  const auto* pa = a.raw_data();
  const auto* pb = b.raw_data();
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

// out must not share any byte with t (a matrix product reads its inputs after writing).
// out_name names the written tensor in the message (an in-place op's x).
inline void require_disjoint(const char* op, const Tensor& out, const char* name, const Tensor& t,
                             const char* out_name = "out") {
  if (overlaps(out, t))
    throw InvalidArgument(prefix(op, out_name) + describe(out) + " overlaps the memory of " + name + " " + describe(t) +
                          "; pass separate tensors");
}

// out may be t itself (same first byte and size: an elementwise or row-wise op reads each
// element before writing it) but must not overlap it partially.
inline void require_same_or_disjoint(const char* op, const Tensor& out, const char* name, const Tensor& t) {
  if (!overlaps(out, t)) return;
  if (out.raw_data() == t.raw_data() && out.nbytes() == t.nbytes()) return;
  throw InvalidArgument(prefix(op, "out") + describe(out) + " partially overlaps the memory of " + name + " " +
                        describe(t) + "; it may be " + name + " itself or separate memory");
}

// out = f(x) elementwise through kernel(const float* x, float* out, n); out may be x.
template <class Kernel>
void unary_into(const char* op, Tensor& out, const Tensor& x, Kernel kernel) {
  require_f32(op, "x", x);
  require_out(op, out, x.shape());
  require_same_or_disjoint(op, out, "x", x);
  if (out.is_abstract()) return;
  kernel(x.data<float>(), out.data<float>(), x.numel());
}

// out = f(a, b) elementwise, a and b of one shape, through kernel(a, b, out, n); out may be
// a or b.
template <class Kernel>
void binary_into(const char* op, Tensor& out, const char* a_name, const Tensor& a, const char* b_name, const Tensor& b,
                 Kernel kernel) {
  require_f32(op, a_name, a);
  require_f32(op, b_name, b);
  if (a.shape() != b.shape())
    throw ShapeError(std::string(op) + ": " + a_name + " " + describe(a) + " and " + b_name + " " + describe(b) +
                     " must have the same shape");
  require_out(op, out, a.shape());
  require_same_or_disjoint(op, out, a_name, a);
  require_same_or_disjoint(op, out, b_name, b);
  if (out.is_abstract()) return;
  kernel(a.data<float>(), b.data<float>(), out.data<float>(), a.numel());
}

}  // namespace nnx::ops::detail
