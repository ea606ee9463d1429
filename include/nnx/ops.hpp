// nnx/ops.hpp — the ops layer: Tensor-level compute for transformers (matmul / linear,
// LayerNorm / RMSNorm, GELU / SiLU / SwiGLU, softmax, sums, embedding lookup, RoPE) with
// shape and dtype checks, over the raw-pointer kernels of nnx/kernels.hpp. Every op that
// allocates has an `_into(out, ...)` variant writing into preallocated storage. The backward
// halves of those a transformer trains through are in nnx/ops/grad.hpp.
//
//   nnx::Tensor h = nnx::ops::embedding(wte, tokens);                    // [B, T, C]
//   nnx::Tensor a = nnx::ops::layer_norm(h, ln_scale, ln_bias, 1e-5f);
//   nnx::Tensor logits = nnx::ops::matmul_transposed(a, wte);            // [B, T, V]
#pragma once

#include "nnx/ops/activation.hpp"
#include "nnx/ops/check.hpp"
#include "nnx/ops/elementwise.hpp"
#include "nnx/ops/embedding.hpp"
#include "nnx/ops/grad.hpp"
#include "nnx/ops/matmul.hpp"
#include "nnx/ops/norm.hpp"
#include "nnx/ops/rope.hpp"
#include "nnx/ops/softmax.hpp"
#include "nnx/ops/threads.hpp"
