// nnx/nn/decoder_layer.hpp — a pre-norm transformer decoder block.
//
//   y = x + attn(attn_norm(x), positions)
//   out = y + mlp(mlp_norm(y))
//
// Norm is LayerNorm (GPT-2) or RMSNorm (Llama). Dropout, when present (train mode with a
// non-zero rate), applies to the attention and MLP outputs before each residual add.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "nnx/core/module.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/nn/attention.hpp"
#include "nnx/nn/dropout.hpp"
#include "nnx/nn/mlp.hpp"
#include "nnx/ops.hpp"

namespace nnx {

template <class Norm>
struct DecoderLayer {
  Norm attn_norm;
  Attention attn;
  Norm mlp_norm;
  Mlp mlp;
  std::optional<Dropout> dropout;
  NNX_FIELDS(attn_norm, attn, mlp_norm, mlp, dropout)

  // x: f32 [B, T, C]; positions: i32 [B, T]; cache_rows: as Attention's. Returns [B, T, C].
  Tensor operator()(const Tensor& x, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    Tensor h = attn(attn_norm(x), positions, cache_rows);
    if (dropout) h = (*dropout)(h);
    ops::add_(h, x);
    Tensor m = mlp(mlp_norm(h));
    if (dropout) m = (*dropout)(m);
    ops::add_(m, h);
    return m;
  }
};

}  // namespace nnx
