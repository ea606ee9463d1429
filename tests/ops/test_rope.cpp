// Tests for nnx/ops/rope.hpp: rope_ on [B, T, H, D] with [B, T] positions (each batch slot at
// its own position) gives the kernel's bits, the inv_freq form agrees with theta, and the
// shape / dtype errors.
#include <catch2/catch.hpp>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nnx/kernels/rope.hpp"
#include "nnx/ops/rope.hpp"

#include "ops_test_util.hpp"

namespace {

using ops_test::message_of;
using ops_test::unit_tensor;

using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
namespace ops = nnx::ops;

}  // namespace

TEST_CASE("rope_ rotates [B, T, H, D] by per-slot positions", "[ops][rope]") {
  const Tensor x = unit_tensor({2, 3, 4, 16}, 1);
  const std::vector<std::int32_t> pos{0, 1, 2, 40, 41, 42};
  const Tensor positions = Tensor::from_vector(pos, {2, 3});
  Tensor y = x.clone();
  ops::rope_(y, positions, 10000.0f);
  std::vector<float> expected = x.to_vector<float>();
  nnx::kernels::rope_rotate_half(expected.data(), pos.data(), 6, 4, 16, 10000.0f);
  CHECK(y.to_vector<float>() == expected);
  // Slot 0's first token (position 0) is unchanged.
  CHECK(std::equal(expected.begin(), expected.begin() + 64, x.data<float>()));
  // With precomputed inverse frequencies.
  std::vector<float> inv(8);
  nnx::kernels::rope_inv_freq(10000.0f, 16, inv.data());
  Tensor z = x.clone();
  ops::rope_(z, positions, Tensor::from_vector(inv));
  CHECK(nnx::equal(z, y));
  // [T, H, D] with [T].
  Tensor w = x.select(1).clone();
  ops::rope_(w, positions.select(1), 10000.0f);
  CHECK(nnx::equal(w, y.select(1)));
}

TEST_CASE("rope_ errors", "[ops][rope][errors]") {
  Tensor x = unit_tensor({2, 3, 4, 16}, 2);
  const Tensor pos = Tensor::zeros({2, 3}, DType::i32);
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::rope_(x, Tensor::zeros({2, 4}, DType::i32), 1e4f);
             }),
             Catch::Contains("positions must have shape [2, 3], found i32[2, 4]"));
  CHECK_THAT(message_of<nnx::DTypeError>([&] {
               ops::rope_(x, Tensor::zeros({2, 3}, DType::i64), 1e4f);
             }),
             Catch::Contains("positions must be i32, found i64[2, 3]"));
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::rope_(unit_tensor({2, 3, 4, 15}, 3), pos, 1e4f);
             }),
             Catch::Contains("odd head size 15"));
  CHECK_THROWS_AS(ops::rope_(unit_tensor({3, 16}, 4), Tensor::zeros({3}, DType::i32), 1e4f), nnx::ShapeError);
  CHECK_THROWS_AS(ops::rope_(x.astype(DType::bf16), pos, 1e4f), nnx::DTypeError);
  CHECK_THAT(message_of<nnx::ShapeError>([&] { ops::rope_(x, pos, Tensor::zeros({16})); }),
             Catch::Contains("inv_freq must have shape [8]"));
  CHECK_THROWS_AS(ops::rope_(Tensor{}, pos, 1e4f), nnx::InvalidArgument);
  ops::rope_(Tensor::abstract({2, 3, 4, 16}), Tensor::abstract({2, 3}, DType::i32), 1e4f);  // checks only
  CHECK_THROWS_AS(ops::rope_(Tensor::abstract({2, 3, 4, 16}), Tensor::abstract({3}, DType::i32), 1e4f),
                  nnx::ShapeError);
}
