// nnx/core/error.hpp — the exception hierarchy of nnxcpp.
//
// Every error thrown at an API or file boundary derives from nnx::Error, and its message
// names the path (e.g. "blocks/0/attn/kernel") or the file involved and what was expected
// versus what was found:
//
//   try { auto m = nnx::merge(graphdef, params); }
//   catch (const nnx::MissingLeafError& e) { std::cerr << e.what(); }
//   // "merge: missing leaf 'blocks/1/mlp/kernel' (Param f32[64, 16]) in the given states"
//
// Kernels never throw; their callers check arguments first.
#pragma once

#include <stdexcept>
#include <string>

namespace nnx {

// Base of every nnxcpp exception.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A tensor's shape differs from the one expected (at a path, or by an operation).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A tensor's dtype differs from the one expected, or a conversion is not defined.
class DTypeError : public Error {
 public:
  using Error::Error;
};

// A variable's kind (Param, Cache, ...) differs from the one expected.
class KindError : public Error {
 public:
  using Error::Error;
};

// A leaf the graph definition (or a target) expects is absent from the given state.
class MissingLeafError : public Error {
 public:
  using Error::Error;
};

// A state holds a leaf that the graph definition (or a target) does not know.
class UnexpectedLeafError : public Error {
 public:
  using Error::Error;
};

// A checkpoint or tensor file is unreadable, corrupt or does not match its target.
class CheckpointError : public Error {
 public:
  using Error::Error;
};

// An argument is out of its documented range (a filter that matches nothing, an index
// past the end, an empty variable, ...).
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// A computation produced values that cannot be used (logits that are NaN, or all -inf):
// the weights or the config make the model diverge on this input.
class NumericalError : public Error {
 public:
  using Error::Error;
};

}  // namespace nnx
