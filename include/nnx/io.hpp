// nnx/io.hpp — the io layer: safetensors files (zero-copy mmap reader, atomic writer) and
// native checkpoints (sharded, crash-safe, restored into an abstract target). Needs
// nlohmann/json.
#pragma once

#include "nnx/io/checkpoint.hpp"
#include "nnx/io/json.hpp"
#include "nnx/io/huggingface.hpp"
#include "nnx/io/safetensors.hpp"
