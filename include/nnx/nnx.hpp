// nnx/nnx.hpp — everything in nnxcpp. Including one layer's umbrella instead (nnx/core.hpp,
// nnx/kernels.hpp, nnx/ops.hpp, nnx/nn.hpp, nnx/models.hpp, nnx/io.hpp, nnx/interop.hpp)
// compiles faster.
#pragma once

#include "nnx/core.hpp"
#include "nnx/core/graphdef_json.hpp"
#include "nnx/engine.hpp"
#include "nnx/interop.hpp"
#include "nnx/io.hpp"
#include "nnx/kernels.hpp"
#include "nnx/models.hpp"
#include "nnx/nn.hpp"
#include "nnx/ops.hpp"
#include "nnx/text.hpp"
#include "nnx/train.hpp"
