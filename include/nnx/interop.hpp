// nnx/interop.hpp — zero-copy views of nnx tensors as Eigen matrices and xtensor arrays.
// Include only what you use: each pulls in its library's headers.
#pragma once

#include "nnx/interop/eigen.hpp"
#include "nnx/interop/xtensor.hpp"
