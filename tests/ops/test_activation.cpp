// Tests for nnx/ops/activation.hpp and nnx/ops/softmax.hpp and nnx/ops/elementwise.hpp:
// the kernels' bits through Tensors, in-place forms, shape / dtype errors, abstract tensors.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nnx/kernels/activation.hpp"
#include "nnx/kernels/softmax.hpp"
#include "nnx/ops/activation.hpp"
#include "nnx/ops/elementwise.hpp"
#include "nnx/ops/softmax.hpp"

#include "ops_test_util.hpp"

namespace {

using ops_test::message_of;
using ops_test::random_tensor;

using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
namespace ops = nnx::ops;

}  // namespace

TEST_CASE("gelu_tanh, silu and swiglu give the kernels' bits", "[ops][activation]") {
  const Tensor x = random_tensor({3, 5, 7}, 1), up = random_tensor({3, 5, 7}, 2);
  const auto n = x.numel();
  std::vector<float> g(static_cast<std::size_t>(n)), s(g.size()), sw(g.size());
  nnx::kernels::gelu_tanh(x.data<float>(), g.data(), n);
  nnx::kernels::silu(x.data<float>(), s.data(), n);
  nnx::kernels::swiglu(x.data<float>(), up.data<float>(), sw.data(), n);
  CHECK(ops::gelu_tanh(x).to_vector<float>() == g);
  CHECK(ops::silu(x).to_vector<float>() == s);
  CHECK(ops::swiglu(x, up).to_vector<float>() == sw);
  CHECK(ops::gelu_tanh(x).shape() == x.shape());
  Tensor y = x.clone();
  ops::gelu_tanh_into(y, y);
  CHECK(y.to_vector<float>() == g);
  y = x.clone();
  ops::silu_into(y, y);
  CHECK(y.to_vector<float>() == s);
  Tensor u = up.clone();
  ops::swiglu_into(u, x, u);
  CHECK(u.to_vector<float>() == sw);
  CHECK(ops::gelu_tanh(Tensor::full({}, 1.0)).item<float>() == Approx(0.8411920).epsilon(1e-6));
}

TEST_CASE("activation errors", "[ops][activation][errors]") {
  const Tensor x = random_tensor({2, 6}, 3);
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::swiglu(x, random_tensor({2, 5}, 4));
             }),
             Catch::Contains("gate f32[2, 6]") && Catch::Contains("up f32[2, 5]"));
  CHECK_THROWS_AS(ops::gelu_tanh(x.astype(DType::f16)), nnx::DTypeError);
  CHECK_THROWS_AS(ops::silu(Tensor{}), nnx::InvalidArgument);
  CHECK_THROWS_AS(ops::silu_into(Tensor::zeros({6, 2}), x), nnx::ShapeError);
  CHECK_THROWS_AS(ops::silu_into(Tensor::zeros({2, 6}, DType::bf16), x), nnx::DTypeError);
  CHECK(ops::silu(Tensor::abstract({9, 4})).is_abstract());
  CHECK(ops::swiglu(Tensor::abstract({9, 4}), Tensor::abstract({9, 4})).shape() == Shape{9, 4});
}

TEST_CASE("softmax over the last axis: allocating, into and in place agree", "[ops][softmax]") {
  const Tensor x = random_tensor({2, 3, 11}, 5);
  std::vector<float> expected = x.to_vector<float>();
  nnx::kernels::softmax_rows(expected.data(), 6, 11);
  CHECK(ops::softmax(x).to_vector<float>() == expected);
  Tensor out = Tensor::empty({2, 3, 11});
  ops::softmax_into(out, x);
  CHECK(out.to_vector<float>() == expected);
  Tensor y = x.clone();
  ops::softmax_(y);
  CHECK(y.to_vector<float>() == expected);
  ops::softmax_(Tensor::abstract({2, 2}));  // checks only
  CHECK_THROWS_AS(ops::softmax(Tensor::full({}, 1.0)), nnx::ShapeError);
  CHECK_THROWS_AS(ops::softmax_(x.astype(DType::i64)), nnx::DTypeError);
  CHECK_THROWS_AS(ops::softmax_into(Tensor::zeros({2, 3, 10}), x), nnx::ShapeError);
  // A causal mask row.
  const float inf = std::numeric_limits<float>::infinity();
  Tensor m = Tensor::from_vector(std::vector<float>{1.0f, -inf, -inf, 2.0f, 2.0f, -inf}, {2, 3});
  ops::softmax_(m);
  CHECK(m.to_vector<float>() == std::vector<float>{1.0f, 0.0f, 0.0f, 0.5f, 0.5f, 0.0f});
}

TEST_CASE("add, add_into and add_", "[ops][elementwise]") {
  const Tensor a = random_tensor({4, 9}, 6), b = random_tensor({4, 9}, 7);
  std::vector<float> expected(36);
  for (std::size_t i = 0; i < 36; ++i) expected[i] = a.data<float>()[i] + b.data<float>()[i];
  CHECK(ops::add(a, b).to_vector<float>() == expected);
  Tensor c = a.clone();
  ops::add_(c, b);
  CHECK(c.to_vector<float>() == expected);
  Tensor d = b.clone();
  ops::add_into(d, a, d);
  CHECK(d.to_vector<float>() == expected);
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::add(a, random_tensor({9, 4}, 8));
             }),
             Catch::Contains("a f32[4, 9] and b f32[9, 4] must have the same shape"));
  CHECK_THROWS_AS(ops::add_(c, b.astype(DType::bf16)), nnx::DTypeError);
  CHECK_THROWS_AS(ops::add_(c.slice(0, 2), c.slice(1, 3)), nnx::InvalidArgument);  // half-overlapping
  CHECK(ops::add(Tensor::abstract({3}), Tensor::abstract({3})).is_abstract());
}
