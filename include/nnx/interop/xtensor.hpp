// nnx/interop/xtensor.hpp — zero-copy xtensor views of a Tensor.
//
// as_xtensor<T>(t) wraps the tensor's memory with xt::adapt: numpy-style expressions read
// and write the tensor itself. The view does not own the memory: keep the Tensor (or another
// tensor sharing its storage) alive while the view is used.
//
//   nnx::Tensor t = nnx::Tensor::zeros({2, 3});
//   auto x = nnx::as_xtensor<float>(t);
//   x(1, 2) = 5.0f;                     // t.data<float>()[5] == 5
//   float total = xt::sum(x)();
#pragma once

#include <cstddef>
#include <vector>

#include <xtensor/xadapt.hpp>

#include "nnx/core/tensor.hpp"

namespace nnx {
namespace detail {
inline std::vector<std::size_t> xtensor_shape(const Tensor& t) {
  return {t.shape().begin(), t.shape().end()};
}
}  // namespace detail

// A writable row-major view; throws DTypeError unless T matches the dtype, InvalidArgument
// for abstract tensors.
template <class T>
auto as_xtensor(Tensor& t) {
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), detail::xtensor_shape(t));
}

// A read-only view.
template <class T>
auto as_xtensor(const Tensor& t) {
  return xt::adapt(t.data<T>(), static_cast<std::size_t>(t.numel()), xt::no_ownership(), detail::xtensor_shape(t));
}

}  // namespace nnx
