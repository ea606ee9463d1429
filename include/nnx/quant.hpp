// nnx/quant.hpp — AQT-style int8 quantization: QuantConfig, the train/serve modes and convert.
#pragma once

#include "nnx/ops/quantized.hpp"
#include "nnx/quant/config.hpp"
#include "nnx/quant/quantize.hpp"
#include "nnx/quant/weight_dtype.hpp"
