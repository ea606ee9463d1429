// Tests for nnx/ops/norm.hpp: layer_norm / rms_norm give the kernels' bits over leading
// axes, work in place, and report shape / dtype / overlap errors.
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nnx/kernels/norm.hpp"
#include "nnx/ops/norm.hpp"

#include "ops_test_util.hpp"

namespace {

using ops_test::message_of;
using ops_test::random_tensor;
using ops_test::unit_tensor;

using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
namespace ops = nnx::ops;

}  // namespace

TEST_CASE("layer_norm normalizes the last axis with the kernel's bits", "[ops][norm]") {
  const Tensor x = random_tensor({2, 3, 33}, 1, -2.0f, 3.0f);
  const Tensor scale = random_tensor({33}, 2, 0.5f, 1.5f), bias = unit_tensor({33}, 3);
  const Tensor y = ops::layer_norm(x, scale, bias, 1e-5f);
  REQUIRE(y.shape() == x.shape());
  std::vector<float> expected(static_cast<std::size_t>(x.numel()));
  nnx::kernels::layer_norm_rows(x.data<float>(), scale.data<float>(), bias.data<float>(), 1e-5f, expected.data(), 6,
                                33);
  CHECK(y.to_vector<float>() == expected);
  // Each row has mean ~bias-weighted 0 and unit variance before the affine step.
  const Tensor ones = Tensor::full({33}, 1.0), zeros = Tensor::zeros({33});
  const Tensor n = ops::layer_norm(x, ones, zeros, 0.0f);
  for (std::int64_t r = 0; r < 6; ++r) {
    double mean = 0.0, var = 0.0;
    for (std::int64_t j = 0; j < 33; ++j) mean += n.data<float>()[r * 33 + j];
    mean /= 33.0;
    for (std::int64_t j = 0; j < 33; ++j)
      var += (n.data<float>()[r * 33 + j] - mean) * (n.data<float>()[r * 33 + j] - mean);
    CHECK(std::abs(mean) < 1e-6);
    CHECK(var / 33.0 == Approx(1.0).epsilon(1e-5));
  }
  // In place.
  Tensor z = x.clone();
  ops::layer_norm_into(z, z, scale, bias, 1e-5f);
  CHECK(nnx::equal(z, y));
}

TEST_CASE("rms_norm gives the kernel's bits, also in place and into a preallocated output", "[ops][norm]") {
  const Tensor x = random_tensor({4, 65}, 4, -2.0f, 3.0f), scale = random_tensor({65}, 5, 0.5f, 1.5f);
  const Tensor y = ops::rms_norm(x, scale, 1e-6f);
  std::vector<float> expected(static_cast<std::size_t>(x.numel()));
  nnx::kernels::rms_norm_rows(x.data<float>(), scale.data<float>(), 1e-6f, expected.data(), 4, 65);
  CHECK(y.to_vector<float>() == expected);
  Tensor z = x.clone();
  ops::rms_norm_into(z, z, scale, 1e-6f);
  CHECK(nnx::equal(z, y));
  Tensor out = Tensor::empty({4, 65});
  const auto before = nnx::tensor_memory_stats().allocations;
  ops::rms_norm_into(out, x, scale, 1e-6f);
  CHECK(nnx::tensor_memory_stats().allocations == before);
  CHECK(nnx::equal(out, y));
}

TEST_CASE("norm errors", "[ops][norm][errors]") {
  const Tensor x = unit_tensor({2, 8}, 6), s = Tensor::full({8}, 1.0), b = Tensor::zeros({8});
  CHECK_THAT(message_of<nnx::ShapeError>([&] { ops::layer_norm(x, Tensor::full({7}, 1.0), b, 1e-5f); }),
             Catch::Contains("scale must have shape [8], found f32[7]"));
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::layer_norm(x, s, Tensor::zeros({2, 8}), 1e-5f);
             }),
             Catch::Contains("bias must have shape [8]"));
  CHECK_THROWS_AS(ops::layer_norm(x.astype(DType::bf16), s, b, 1e-5f), nnx::DTypeError);
  CHECK_THROWS_AS(ops::layer_norm(x, s.astype(DType::f16), b, 1e-5f), nnx::DTypeError);
  CHECK_THROWS_AS(ops::layer_norm(Tensor::full({}, 1.0), Tensor::full({1}, 1.0), Tensor::zeros({1}), 1e-5f),
                  nnx::ShapeError);
  CHECK_THROWS_AS(ops::rms_norm(x, Tensor::full({9}, 1.0), 1e-6f), nnx::ShapeError);
  CHECK_THROWS_AS(ops::rms_norm(Tensor{}, s, 1e-6f), nnx::InvalidArgument);
  CHECK_THROWS_AS(ops::rms_norm_into(Tensor::zeros({2, 7}), x, s, 1e-6f), nnx::ShapeError);
  // out overlapping x by half a row is rejected; out == x is in place.
  Tensor buf = unit_tensor({3, 8}, 7);
  CHECK_THAT(message_of<nnx::InvalidArgument>([&] { ops::rms_norm_into(buf.slice(1, 3), buf.slice(0, 2), s, 1e-6f); }),
             Catch::Contains("partially overlaps"));
  CHECK_NOTHROW(ops::rms_norm_into(buf.slice(0, 2), buf.slice(0, 2), s, 1e-6f));
  // Abstract in, abstract out.
  CHECK(ops::layer_norm(Tensor::abstract({5, 8}), s, b, 1e-5f).is_abstract());
  CHECK(ops::rms_norm(Tensor::abstract({5, 8}), s, 1e-6f).shape() == Shape{5, 8});
}
