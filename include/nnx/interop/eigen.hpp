// nnx/interop/eigen.hpp — zero-copy Eigen views of a Tensor.
//
// as_eigen<T>(t) maps the tensor's memory as a row-major Eigen matrix: a rank-2 tensor maps
// as [rows, cols]; higher ranks fold their leading axes into rows ([B, T, C] -> [B*T, C]);
// rank 1 maps as one row. as_eigen_vector<T>(t) maps every element as a column vector.
// Views never own memory: keep the Tensor alive while using them.
//
//   nnx::Tensor w = nnx::Tensor::zeros({3, 4});
//   auto m = nnx::as_eigen<float>(w);   // Eigen::Map<Matrix<float, Dynamic, Dynamic, RowMajor>>
//   m(2, 1) = 7.0f;                      // w.data<float>()[9] == 7
#pragma once

#include <Eigen/Core>

#include "nnx/core/error.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx {

template <class T>
using EigenRowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {
inline std::pair<Eigen::Index, Eigen::Index> eigen_dims(const Tensor& t) {
  if (t.rank() == 0) throw ShapeError("as_eigen: a scalar tensor has no matrix view; use as_eigen_vector");
  const std::int64_t cols = t.shape()[t.rank() - 1];
  return {cols == 0 ? 0 : t.numel() / cols, cols};
}
}  // namespace detail

// Throws DTypeError unless T matches the dtype, InvalidArgument for abstract tensors.
template <class T>
Eigen::Map<EigenRowMajor<T>> as_eigen(Tensor& t) {
  auto [rows, cols] = detail::eigen_dims(t);
  return {t.data<T>(), rows, cols};
}
template <class T>
Eigen::Map<const EigenRowMajor<T>> as_eigen(const Tensor& t) {
  auto [rows, cols] = detail::eigen_dims(t);
  return {t.data<T>(), rows, cols};
}

template <class T>
Eigen::Map<Eigen::Matrix<T, Eigen::Dynamic, 1>> as_eigen_vector(Tensor& t) {
  return {t.data<T>(), static_cast<Eigen::Index>(t.numel())};
}
template <class T>
Eigen::Map<const Eigen::Matrix<T, Eigen::Dynamic, 1>> as_eigen_vector(const Tensor& t) {
  return {t.data<T>(), static_cast<Eigen::Index>(t.numel())};
}

}  // namespace nnx
