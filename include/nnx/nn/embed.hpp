// nnx/nn/embed.hpp — Embed: a lookup table, and `attend` for tied output logits.
//
//   nnx::Embed wte(50257, 768, rngs);
//   nnx::Tensor h = wte(tokens);          // tokens i32 [B, T] -> [B, T, 768]
//   nnx::Tensor logits = wte.attend(h);   // [B, T, 768] -> [B, T, 50257] (h · embeddingᵀ)
#pragma once

#include <cstdint>

#include "nnx/core/init.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/ops.hpp"


namespace nnx {

struct Embed {
  std::int64_t num_embeddings = 0;
  std::int64_t features = 0;
  Param embedding;  // [num_embeddings, features]
  NNX_FIELDS(num_embeddings, features, embedding)

  Embed() = default;
  Embed(std::int64_t num, std::int64_t dim, Rngs& rngs, float init_stddev = 0.02f, const char* axis = "vocab")
      : num_embeddings(num),
        features(dim),
        embedding(init::normal(rngs.params(), {num, dim}, init_stddev), {axis, "embed"}) {}

  // ids: i32 or i64 [...] -> [..., features]. An id outside [0, num_embeddings) throws
  // InvalidArgument naming it.
  Tensor operator()(const Tensor& ids) const { return ops::embedding(embedding.value(), ids); }

  // x: [..., features] -> [..., num_embeddings], the logits of a tied output head.
  Tensor attend(const Tensor& x) const { return ops::matmul_transposed(x, embedding.value()); }
};

}  // namespace nnx
