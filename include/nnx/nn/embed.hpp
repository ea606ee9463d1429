// nnx/nn/embed.hpp — Embed: a lookup table, and `attend` for tied output logits.
//
//   nnx::Embed wte(50257, 768, rngs);
//   nnx::Tensor h = wte(tokens);          // tokens i32 [B, T] -> [B, T, 768]
//   nnx::Tensor logits = wte.attend(h);   // [B, T, 768] -> [B, T, 50257] (h · embeddingᵀ)
//
// Quantized as an output head (`quant` set by nnx/quant/quantize.hpp): the table is
// quantized per row (a row is an output channel of `attend`), so lookups read dequantized
// rows and `attend` runs the int8 product. Serve mode holds only `qembedding` (qvalue i8
// [num_embeddings, features], scale f32 [num_embeddings]); train mode quantizes the f32 table
// on the fly, to the same numbers.
//
// The table may be bf16 or f16 (a checkpoint served as stored, see
// nnx/quant/weight_dtype.hpp): lookups widen the gathered rows to f32 and `attend` reads the
// table as stored (nnx::ops::matmul_transposed).
#pragma once

#include <cstdint>
#include <optional>

#include "nnx/core/init.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/ops.hpp"
#include "nnx/ops/quantized.hpp"

namespace nnx {

struct Embed {
  std::int64_t num_embeddings = 0;
  std::int64_t features = 0;
  QuantScheme quant = QuantScheme::none;
  std::optional<Param> embedding;             // [num_embeddings, features]; absent when frozen
  std::optional<QuantizedParam> qembedding;  // serve: QTensor, qvalue i8 [num, features], scale f32 [num]
  NNX_FIELDS(num_embeddings, features, quant, embedding, qembedding)

  Embed() = default;
  Embed(std::int64_t num, std::int64_t dim, Rngs& rngs, float init_stddev = 0.02f, const char* axis = "vocab")
      : num_embeddings(num),
        features(dim),
        embedding(Param(init::normal(rngs.params(), {num, dim}, init_stddev), {axis, "embed"})) {}

  // ids: i32 or i64 [...] -> [..., features]. An id outside [0, num_embeddings) throws
  // InvalidArgument naming it.
  Tensor operator()(const Tensor& ids) const {
    if (qembedding) return ops::quantized_embedding(qembedding->qvalue(), ids);
    Tensor rows = ops::embedding(table(), ids);
    if (rows.dtype() != DType::f32) rows = rows.astype(DType::f32);
    if (quant == QuantScheme::none || rows.is_abstract()) return rows;
    const Tensor flat = rows.reshape({-1, features});  // each row quantized on its own, as in serve mode
    return ops::dequantize(ops::quantize_rows(flat)).reshape(rows.shape().dims());
  }

  // x: [..., features] -> [..., num_embeddings], the logits of a tied output head.
  Tensor attend(const Tensor& x) const {
    if (qembedding) return ops::quantized_linear(x, qembedding->qvalue(), quant);
    if (quant == QuantScheme::none) return ops::matmul_transposed(x, table());
    return ops::quantized_linear(x, ops::quantize_rows(table().astype(DType::f32)), quant);
  }

 private:
  const Tensor& table() const {
    if (!embedding) throw InvalidArgument("Embed: neither an embedding table nor a quantized one");
    return embedding->value();
  }
};

}  // namespace nnx
