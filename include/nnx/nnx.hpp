// nnx/nnx.hpp — everything in nnxcpp. Including a layer's umbrella (nnx/core.hpp,
// nnx/interop.hpp) instead compiles faster.
#pragma once

#include "nnx/core.hpp"
#include "nnx/core/graphdef_json.hpp"
#include "nnx/interop.hpp"
