// nnx/models.hpp — the GPT-2/GPT-3 and Llama families, their configs, and the shared
// prefill / decode_step / apply functions.
#pragma once

#include "nnx/models/dispatch.hpp"
#include "nnx/models/gpt2.hpp"
#include "nnx/models/llama.hpp"
#include "nnx/models/transformer.hpp"
