// xtensor and Eigen views alias a Tensor's memory: a write through one is read by the other.
#include <catch2/catch.hpp>

#include <xtensor/xmath.hpp>

#include <nnx/core/tensor.hpp>
#include <nnx/interop/eigen.hpp>
#include <nnx/interop/xtensor.hpp>

TEST_CASE("xtensor view aliases the tensor's memory", "[interop]") {
  nnx::Tensor t = nnx::Tensor::zeros({2, 3});
  auto x = nnx::as_xtensor<float>(t);
  REQUIRE(x.shape().size() == 2);
  CHECK(x.shape()[0] == 2);
  CHECK(x.shape()[1] == 3);
  CHECK(x.data() == t.data<float>());

  x(1, 2) = 5.0f;  // write through the view
  CHECK(t.data<float>()[5] == 5.0f);
  t.data<float>()[1] = -2.0f;  // write through the tensor
  CHECK(x(0, 1) == -2.0f);
  CHECK(xt::sum(x)() == Approx(3.0f));

  // A slice's view starts at the slice.
  auto row = t.select(1);
  auto xr = nnx::as_xtensor<float>(row);
  CHECK(xr.size() == 3);
  CHECK(xr(2) == 5.0f);
}

TEST_CASE("Eigen views alias the tensor's memory", "[interop]") {
  nnx::Tensor t = nnx::Tensor::zeros({3, 4});
  auto m = nnx::as_eigen<float>(t);
  CHECK(m.rows() == 3);
  CHECK(m.cols() == 4);
  m(2, 1) = 7.0f;
  CHECK(t.data<float>()[9] == 7.0f);
  t.data<float>()[4] = 1.5f;
  CHECK(m(1, 0) == 1.5f);

  // Shared between both libraries: Eigen writes, xtensor reads.
  auto x = nnx::as_xtensor<float>(t);
  m.row(0).setConstant(3.0f);
  CHECK(x(0, 3) == 3.0f);

  // Leading axes fold into rows.
  nnx::Tensor b = nnx::Tensor::zeros({2, 3, 5}, nnx::DType::i32);
  auto mb = nnx::as_eigen<std::int32_t>(b);
  CHECK(mb.rows() == 6);
  CHECK(mb.cols() == 5);
  mb(4, 2) = 9;
  CHECK(b.data<std::int32_t>()[4 * 5 + 2] == 9);

  auto v = nnx::as_eigen_vector<std::int32_t>(b);
  CHECK(v.size() == 30);
  CHECK(v(22) == 9);

  const nnx::Tensor& ct = t;
  auto cm = nnx::as_eigen<float>(ct);
  CHECK(cm(2, 1) == 7.0f);
}

TEST_CASE("views check dtype and storage", "[interop]") {
  nnx::Tensor t = nnx::Tensor::zeros({2, 2});
  CHECK_THROWS_AS(nnx::as_eigen<std::int32_t>(t), nnx::DTypeError);
  CHECK_THROWS_AS(nnx::as_xtensor<std::uint32_t>(t), nnx::DTypeError);
  nnx::Tensor a = nnx::Tensor::abstract({2, 2});
  CHECK_THROWS_AS(nnx::as_eigen<float>(a), nnx::InvalidArgument);
  CHECK_THROWS_AS(nnx::as_xtensor<float>(a), nnx::InvalidArgument);
  nnx::Tensor scalar = nnx::Tensor::zeros({});
  CHECK_THROWS_AS(nnx::as_eigen<float>(scalar), nnx::ShapeError);
}
