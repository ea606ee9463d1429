// nnx/engine.hpp — the inference engine layer: sampling, decode state, Engine.
#pragma once

#include "nnx/engine/decode_state.hpp"
#include "nnx/engine/engine.hpp"
#include "nnx/engine/lora_checkpoint.hpp"
#include "nnx/engine/request.hpp"
#include "nnx/engine/scheduler.hpp"
#include "nnx/engine/serving_loop.hpp"
#include "nnx/engine/sampling.hpp"
