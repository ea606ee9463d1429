// nnx/core.hpp — the core layer: Tensor, Variables, Modules, State, GraphDef, split/merge,
// filters and Rngs. Standard library only; nnx/core/graphdef_json.hpp adds JSON.
#pragma once

#include "nnx/core/contiguous.hpp"
#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/graphdef.hpp"
#include "nnx/core/init.hpp"
#include "nnx/core/layers.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
