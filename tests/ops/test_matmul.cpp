// Tests for nnx/ops/matmul.hpp: matmul / matmul_transposed / linear over leading axes give
// the kernels' bits, linear's bias (pointer, optional, none) against a double reference,
// `_into` writes without allocating, a row of logits is the same alone and in a batch, the
// errors (dtype, rank, contraction, out shape / dtype / overlap, undefined, bias shape), and
// abstract tensors (eval_shape) propagating shapes.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "nnx/core/graph.hpp"
#include "nnx/kernels/gemm.hpp"
#include "nnx/ops/matmul.hpp"

#include "ops_test_util.hpp"

namespace {

using ops_test::message_of;
using ops_test::unit_tensor;

using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
namespace ops = nnx::ops;

bool same_bits(const Tensor& a, const Tensor& b) { return nnx::equal(a, b); }

}  // namespace

TEST_CASE("matmul over leading axes gives the kernel's bits", "[ops][matmul]") {
  const Tensor x = unit_tensor({2, 3, 17}, 1), w = unit_tensor({17, 9}, 2);
  const Tensor y = ops::matmul(x, w);
  REQUIRE(y.shape() == Shape{2, 3, 9});
  std::vector<float> expected(2 * 3 * 9);
  nnx::kernels::gemm_f32(6, 9, 17, x.data<float>(), 17, w.data<float>(), 9, expected.data(), 9);
  CHECK(y.to_vector<float>() == expected);
  // A single vector.
  const Tensor v = ops::matmul(x.select(0).select(1), w);
  REQUIRE(v.shape() == Shape{9});
  CHECK(std::equal(expected.begin() + 9, expected.begin() + 18, v.data<float>()));
}

TEST_CASE("matmul_transposed multiplies by wᵀ; a row's logits do not depend on the batch", "[ops][matmul]") {
  const Tensor wte = unit_tensor({101, 33}, 3);  // [V, C]
  const Tensor h = unit_tensor({4, 5, 33}, 4);   // [B, T, C]
  const Tensor logits = ops::matmul_transposed(h, wte);
  REQUIRE(logits.shape() == Shape{4, 5, 101});
  std::vector<float> expected(4 * 5 * 101);
  nnx::kernels::gemm_f32_bt(20, 101, 33, h.data<float>(), 33, wte.data<float>(), 33, expected.data(), 101);
  CHECK(logits.to_vector<float>() == expected);
  for (std::int64_t b = 0; b < 4; ++b) {
    const Tensor alone = ops::matmul_transposed(h.slice(b, b + 1), wte);
    CHECK(same_bits(alone, logits.slice(b, b + 1)));
    const Tensor last = ops::matmul_transposed(h.select(b).select(4), wte);  // decode: one token
    CHECK(same_bits(last, logits.select(b).select(4)));
  }
}

TEST_CASE("linear adds the bias, given by pointer or optional", "[ops][matmul]") {
  const Tensor x = unit_tensor({3, 7, 29}, 5), k = unit_tensor({29, 13}, 6), b = unit_tensor({13}, 7);
  const Tensor y = ops::linear(x, k, &b);
  REQUIRE(y.shape() == Shape{3, 7, 13});
  CHECK(same_bits(ops::linear(x, k, std::optional<Tensor>(b)), y));
  CHECK(same_bits(ops::linear(x, k, b), y));  // a Tensor converts to the optional
  const Tensor xs = x.reshape({21, 29});
  for (std::int64_t r = 0; r < 21; ++r)
    for (std::int64_t j = 0; j < 13; ++j) {
      double exact = b.data<float>()[j], mag = std::fabs(exact);
      for (std::int64_t kk = 0; kk < 29; ++kk) {
        const double p = static_cast<double>(xs.data<float>()[r * 29 + kk]) * k.data<float>()[kk * 13 + j];
        exact += p;
        mag += std::fabs(p);
      }
      REQUIRE(std::fabs(y.data<float>()[r * 13 + j] - exact) <= 31.0 * 0x1p-24 * mag);
    }
  // Without bias it is matmul.
  CHECK(same_bits(ops::linear(x, k), ops::matmul(x, k)));
  CHECK(same_bits(ops::linear(x, k, std::nullopt), ops::matmul(x, k)));
  CHECK(same_bits(ops::linear(x, k, nullptr), ops::matmul(x, k)));
}

TEST_CASE("the _into variants write into preallocated outputs without allocating", "[ops][matmul]") {
  const Tensor x = unit_tensor({2, 16}, 8), w = unit_tensor({16, 24}, 9), b = unit_tensor({24}, 10);
  const Tensor wt = unit_tensor({24, 16}, 11);
  Tensor out = Tensor::zeros({2, 24});
  const auto before = nnx::tensor_memory_stats().allocations;
  ops::matmul_into(out, x, w);
  const auto m = out.to_vector<float>();
  ops::linear_into(out, x, w, &b);
  const auto l = out.to_vector<float>();
  ops::matmul_transposed_into(out, x, wt);
  const auto t = out.to_vector<float>();
  CHECK(nnx::tensor_memory_stats().allocations == before + 0);
  CHECK(m == ops::matmul(x, w).to_vector<float>());
  CHECK(l == ops::linear(x, w, &b).to_vector<float>());
  CHECK(t == ops::matmul_transposed(x, wt).to_vector<float>());
  // Into a view: row 1 of a larger buffer.
  Tensor big = Tensor::zeros({3, 2, 24});
  ops::matmul_into(big.select(1), x, w);
  CHECK(std::equal(m.begin(), m.end(), big.data<float>() + 48));
  CHECK(big.data<float>()[0] == 0.0f);
}

TEST_CASE("matmul errors name what was expected and what was found", "[ops][matmul][errors]") {
  const Tensor x = unit_tensor({2, 5}, 12), w = unit_tensor({4, 3}, 13);
  CHECK_THAT(message_of<nnx::ShapeError>([&] { ops::matmul(x, w); }), Catch::Contains("f32[2, 5]") &&
                                                                          Catch::Contains("f32[4, 3]") &&
                                                                          Catch::Contains("5") && Catch::Contains("4"));
  CHECK_THROWS_AS(ops::matmul_transposed(x, w), nnx::ShapeError);
  CHECK_THAT(message_of<nnx::DTypeError>([&] {
               ops::matmul(Tensor::zeros({2, 5}, DType::i32), unit_tensor({5, 3}, 1));
             }),
             Catch::Contains("x must be f32") && Catch::Contains("i32[2, 5]"));
  CHECK_THROWS_AS(ops::matmul(x, unit_tensor({5, 3}, 1).astype(DType::bf16)), nnx::DTypeError);
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::matmul(x, unit_tensor({5, 3, 1}, 1));
             }),
             Catch::Contains("w must have rank 2"));
  CHECK_THROWS_AS(ops::matmul(Tensor::full({}, 1.0), unit_tensor({1, 3}, 1)), nnx::ShapeError);
  CHECK_THROWS_AS(ops::matmul(Tensor{}, w), nnx::InvalidArgument);
  const Tensor w53 = unit_tensor({5, 3}, 14);
  CHECK_THAT(message_of<nnx::ShapeError>([&] {
               ops::matmul_into(Tensor::zeros({2, 4}), x, w53);
             }),
             Catch::Contains("out is f32[2, 4], expected f32[2, 3]"));
  CHECK_THROWS_AS(ops::matmul_into(Tensor::zeros({2, 3}, DType::f16), x, w53), nnx::DTypeError);
  CHECK_THROWS_AS(ops::matmul_into(Tensor{}, x, w53), nnx::InvalidArgument);
  // An output overlapping an input.
  Tensor buf = unit_tensor({2, 5}, 15);
  CHECK_THAT(message_of<nnx::InvalidArgument>([&] {
               ops::matmul_into(buf.reshape({2, 5}).slice(0, 2), buf, unit_tensor({5, 5}, 1));
             }),
             Catch::Contains("overlaps"));
  // Bias of the wrong shape or dtype.
  CHECK_THAT(message_of<nnx::ShapeError>([&] { ops::linear(x, w53, unit_tensor({5}, 1)); }),
             Catch::Contains("bias must have shape [3]"));
  CHECK_THROWS_AS(ops::linear(x, w53, Tensor::zeros({3}, DType::i32)), nnx::DTypeError);
  const Tensor undefined;
  CHECK_THROWS_AS(ops::linear(x, w53, &undefined), nnx::InvalidArgument);
}

TEST_CASE("matmul on abstract tensors propagates shapes", "[ops][matmul][abstract]") {
  const Tensor xa = Tensor::abstract({4, 7, 32}), wa = Tensor::abstract({32, 96});
  const Tensor y = ops::matmul(xa, wa);
  CHECK(y.is_abstract());
  CHECK(y.shape() == Shape{4, 7, 96});
  CHECK(ops::matmul_transposed(xa, Tensor::abstract({50, 32})).shape() == Shape{4, 7, 50});
  CHECK(ops::linear(xa, wa, Tensor::abstract({96})).is_abstract());
  CHECK_THROWS_AS(ops::matmul(xa, Tensor::abstract({31, 96})), nnx::ShapeError);
  // Inside eval_shape concrete inputs give an abstract result, with no storage allocated.
  const Tensor x = unit_tensor({2, 8}, 16), w = unit_tensor({8, 3}, 17);
  const auto before = nnx::tensor_memory_stats().allocations;
  const Tensor z = nnx::eval_shape([&] { return ops::linear(x, w); });
  CHECK(nnx::tensor_memory_stats().allocations == before);
  CHECK(z.is_abstract());
  CHECK(z.shape() == Shape{2, 3});
  // Writing a concrete output from an abstract input is an error, not a silent no-op.
  CHECK_THROWS_AS(ops::matmul_into(Tensor::zeros({4, 7, 96}), xa, wa), nnx::InvalidArgument);
}

TEST_CASE("matmul with an empty contraction gives zeros", "[ops][matmul]") {
  const Tensor y = ops::matmul(Tensor::zeros({3, 0}), Tensor::zeros({0, 4}));
  CHECK(y.to_vector<float>() == std::vector<float>(12, 0.0f));
  CHECK(ops::matmul(Tensor::zeros({0, 5}), unit_tensor({5, 4}, 1)).shape() == Shape{0, 4});
}
