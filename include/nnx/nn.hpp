// nnx/nn.hpp — layers: Linear, Embed, LayerNorm, RMSNorm, Dropout, Mlp, Attention with its
// KV cache, DecoderLayer, and Mode.
#pragma once

#include "nnx/nn/attention.hpp"
#include "nnx/nn/decoder_layer.hpp"
#include "nnx/nn/dropout.hpp"
#include "nnx/nn/embed.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/nn/lora.hpp"
#include "nnx/nn/mlp.hpp"
#include "nnx/nn/mode.hpp"
#include "nnx/nn/norm.hpp"
#include "nnx/nn/rope_scaling.hpp"
