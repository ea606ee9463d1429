// Tests for nnx/ops/embedding.hpp: gathering rows by i32 and i64 ids of any shape, any
// table dtype, and the out-of-range error naming the id and the vocabulary size.
#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nnx/ops/embedding.hpp"

#include "ops_test_util.hpp"

namespace {

using ops_test::message_of;

using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
namespace ops = nnx::ops;

Tensor table_iota(std::int64_t V, std::int64_t D) {
  std::vector<float> v(static_cast<std::size_t>(V * D));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i) + 0.5f;
  return Tensor::from_vector(v, {V, D});
}

}  // namespace

TEST_CASE("embedding gathers table rows by i32 or i64 ids", "[ops][embedding]") {
  const Tensor table = table_iota(10, 4);
  const std::vector<std::int32_t> ids{3, 0, 9, 3, 7, 1};
  const Tensor ids32 = Tensor::from_vector(ids, {2, 3});
  const Tensor h = ops::embedding(table, ids32);
  REQUIRE(h.shape() == Shape{2, 3, 4});
  for (std::size_t i = 0; i < ids.size(); ++i)
    CHECK(std::memcmp(h.data<float>() + i * 4, table.data<float>() + ids[i] * 4, 16) == 0);
  const Tensor ids64 = ids32.astype(DType::i64);
  CHECK(nnx::equal(ops::embedding(table, ids64), h));
  // A scalar id gives one row.
  const Tensor one = ops::embedding(table, Tensor::full({}, 9.0, DType::i32));
  CHECK(one.shape() == Shape{4});
  CHECK(one.data<float>()[0] == 36.5f);
  // Any table dtype: rows are copied bit for bit.
  const Tensor tb = table.astype(DType::bf16);
  const Tensor hb = ops::embedding(tb, ids32);
  CHECK(hb.dtype() == DType::bf16);
  CHECK(nnx::equal(hb, h.astype(DType::bf16)));
  // Into a preallocated output without allocating.
  Tensor out = Tensor::empty({2, 3, 4});
  const auto before = nnx::tensor_memory_stats().allocations;
  ops::embedding_into(out, table, ids32);
  CHECK(nnx::tensor_memory_stats().allocations == before);
  CHECK(nnx::equal(out, h));
}

TEST_CASE("embedding rejects ids outside [0, V), naming the id and V, before writing", "[ops][embedding][errors]") {
  const Tensor table = table_iota(10, 4);
  Tensor out = Tensor::zeros({3, 4});
  CHECK_THAT(message_of<nnx::InvalidArgument>([&] {
               ops::embedding_into(out, table, Tensor::from_vector(std::vector<std::int32_t>{1, 10, 2}));
             }),
             Catch::Contains("id 10") && Catch::Contains("[0, 10)") && Catch::Contains("position 1"));
  CHECK(out.to_vector<float>() == std::vector<float>(12, 0.0f));  // nothing written
  CHECK_THAT(message_of<nnx::InvalidArgument>(
                 [&] { ops::embedding(table, Tensor::from_vector(std::vector<std::int64_t>{-1})); }),
             Catch::Contains("id -1"));
  CHECK_THAT(message_of<nnx::InvalidArgument>(
                 [&] { ops::embedding(table, Tensor::from_vector(std::vector<std::int64_t>{std::int64_t{1} << 40})); }),
             Catch::Contains("id 1099511627776"));
  CHECK_THAT(message_of<nnx::DTypeError>([&] { ops::embedding(table, Tensor::zeros({2}, DType::f32)); }),
             Catch::Contains("ids must be i32 or i64, found f32[2]"));
  CHECK_THROWS_AS(ops::embedding(table, Tensor::zeros({2}, DType::u32)), nnx::DTypeError);
  CHECK_THROWS_AS(ops::embedding(Tensor::zeros({10}), Tensor::zeros({2}, DType::i32)), nnx::ShapeError);
  CHECK_THROWS_AS(ops::embedding_into(Tensor::zeros({2, 5}), table, Tensor::zeros({2}, DType::i32)), nnx::ShapeError);
  CHECK_THROWS_AS(ops::embedding_into(Tensor::zeros({2, 4}, DType::f16), table, Tensor::zeros({2}, DType::i32)),
                  nnx::DTypeError);
  CHECK_THROWS_AS(ops::embedding(Tensor{}, Tensor::zeros({2}, DType::i32)), nnx::InvalidArgument);
  const Tensor a = ops::embedding(Tensor::abstract({50257, 768}), Tensor::abstract({4, 16}, DType::i32));
  CHECK(a.is_abstract());
  CHECK(a.shape() == Shape{4, 16, 768});
}
