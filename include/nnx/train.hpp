// nnx/train.hpp — the training layer: explicit forward/backward pairs for every layer of the
// GPT-2 and Llama families (train/backprop.hpp), gradients as States (train/grad.hpp), and the
// optimizers with TrainState and train_step (train/train_state.hpp), QK-Clip
// (train/qk_clip.hpp), DPO (train/dpo.hpp), and token data with batches drawn by (seed, step) (train/data.hpp).
//
//   auto [loss, n, grads] = nnx::train::value_and_grad(model, tokens, targets);
//   nnx::train::TrainState<nnx::Gpt2> state(std::move(model), {.lr = {.peak = 1e-3}});
//   auto [next, metrics] = nnx::train::train_step(std::move(state), tokens, targets);
#pragma once

#include "nnx/train/backprop.hpp"
#include "nnx/train/data.hpp"
#include "nnx/train/dpo.hpp"
#include "nnx/train/grad.hpp"
#include "nnx/train/lora.hpp"
#include "nnx/train/qk_clip.hpp"
#include "nnx/train/train_state.hpp"
