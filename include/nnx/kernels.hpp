// nnx/kernels.hpp — the kernels layer: compute on raw row-major float buffers, no Tensor.
// Matrix products, attention, softmax, LayerNorm / RMSNorm, GELU / SiLU / SwiGLU, rotary
// embeddings, bias and sums, each in the best instruction-set tier the CPU has
// (nnx/kernels/isa.hpp), and the thread pool they split their work over.
// Kernels never throw; nnx/ops.hpp wraps them with shape and dtype checks.
//
//   nnx::kernels::gemm_f32(M, N, K, a, K, b, N, c, N);
//   nnx::kernels::softmax_rows(c, M, N);
#pragma once

#include "nnx/kernels/activation.hpp"
#include "nnx/kernels/attention.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/kernels/gemm.hpp"
#include "nnx/kernels/gemm_i8.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/norm.hpp"
#include "nnx/kernels/optimizer.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/quantize.hpp"
#include "nnx/kernels/rope.hpp"
#include "nnx/kernels/sampling.hpp"
#include "nnx/kernels/softmax.hpp"
