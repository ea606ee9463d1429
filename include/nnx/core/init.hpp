// nnx/core/init.hpp — random initializers: normal, uniform and truncated normal.
//
// Each returns a new tensor filled from a key (see nnx/core/rngs.hpp); element i depends
// only on the key and i. Values are computed in double precision and rounded once to the
// tensor's dtype, so platforms whose libm differ by an ulp of a double still agree. Inside
// eval_shape they return abstract tensors and draw nothing.
//
//   auto w = nnx::init::normal(rngs.params(), {768, 3072}, 0.02f);
//   auto b = nnx::init::uniform(rngs.params(), {3072}, -0.1f, 0.1f);
//   auto e = nnx::init::truncated_normal(rngs.params(), {50257, 768}, 0.02f);  // within +-2 std
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numbers>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx::init {
namespace detail {

// A uniform double in [0, 1) from the top 24 bits (exact in float as well).
inline double unit_interval(std::uint32_t bits) noexcept { return static_cast<double>(bits >> 8) * 0x1p-24; }
// A uniform double in (0, 1], safe for log.
inline double unit_interval_open0(std::uint32_t bits) noexcept {
  return static_cast<double>((bits >> 8) + 1) * 0x1p-24;
}
// Box-Muller: two standard normals from two uniforms.
inline std::pair<double, double> box_muller(std::uint32_t a, std::uint32_t b) noexcept {
  const double r = std::sqrt(-2.0 * std::log(unit_interval_open0(a)));
  const double theta = 2.0 * std::numbers::pi * unit_interval(b);
  return {r * std::cos(theta), r * std::sin(theta)};
}

// The largest value of `dtype` (a float type) below `high`: clamping a double to it keeps the
// rounded result below `high`, since rounding is monotone and this value is representable.
inline double largest_below(float high, DType dtype) {
  if (dtype == DType::f32) return std::nextafter(high, -INFINITY);
  const float rounded = dtype == DType::bf16 ? to_f32(to_bf16(high)) : to_f32(to_f16(high));
  if (rounded < high) return rounded;
  std::uint16_t bits = dtype == DType::bf16 ? to_bf16(rounded).bits : to_f16(rounded).bits;
  if (bits == 0)
    bits = 0x8001;  // below +0: the smallest negative subnormal
  else if (bits & 0x8000)
    bits = static_cast<std::uint16_t>(bits + 1);  // negative: a larger magnitude
  else
    bits = static_cast<std::uint16_t>(bits - 1);
  return dtype == DType::bf16 ? to_f32(bf16{bits}) : to_f32(f16{bits});
}

// Fills a new tensor: gen(n, put) calls put(i, value) once per element i with a double, which
// is rounded once to the dtype (bf16/f16 through f32 rounded to odd, so still once).
template <class Gen>
Tensor generate(const Shape& shape, DType dtype, Gen&& gen) {
  if (!is_floating(dtype))
    throw DTypeError("init: random values need a floating dtype, not " + std::string(dtype_name(dtype)));
  Tensor out = Tensor::empty(shape, dtype);
  if (out.is_abstract()) return out;
  const auto n = static_cast<std::size_t>(out.numel());
  switch (dtype) {
    case DType::f32: {
      float* o = out.data<float>();
      gen(n, [o](std::size_t i, double v) { o[i] = static_cast<float>(v); });
      break;
    }
    case DType::bf16: {
      bf16* o = out.data<bf16>();
      gen(n, [o](std::size_t i, double v) { o[i] = to_bf16(nnx::detail::f32_round_to_odd(v)); });
      break;
    }
    default: {
      f16* o = out.data<f16>();
      gen(n, [o](std::size_t i, double v) { o[i] = to_f16(nnx::detail::f32_round_to_odd(v)); });
      break;
    }
  }
  return out;
}

}  // namespace detail

// N(0, stddev^2) values.
inline Tensor normal(RngKey key, const Shape& shape, float stddev = 1.0f, DType dtype = DType::f32) {
  return detail::generate(shape, dtype, [&](std::size_t n, auto put) {
    for (std::size_t block = 0; block * 4 < n; ++block) {
      const auto b = nnx::detail::philox4x32_10(
          {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, nnx::detail::domain_bits},
          key);
      const auto [z0, z1] = detail::box_muller(b[0], b[1]);
      const auto [z2, z3] = detail::box_muller(b[2], b[3]);
      const double z[4] = {z0, z1, z2, z3};
      for (std::size_t lane = 0; lane < 4 && block * 4 + lane < n; ++lane) put(block * 4 + lane, z[lane] * stddev);
    }
  });
}

// Uniform values in [low, high).
inline Tensor uniform(RngKey key, const Shape& shape, float low = 0.0f, float high = 1.0f,
                      DType dtype = DType::f32) {
  if (!(low < high))
    throw InvalidArgument("init::uniform: need low < high, got [" + std::to_string(low) + ", " +
                          std::to_string(high) + ")");
  const double below_high = detail::largest_below(high, dtype);  // rounding stays below high
  return detail::generate(shape, dtype, [&](std::size_t n, auto put) {
    for (std::size_t block = 0; block * 4 < n; ++block) {
      const auto b = nnx::detail::philox4x32_10(
          {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, nnx::detail::domain_bits},
          key);
      for (std::size_t lane = 0; lane < 4 && block * 4 + lane < n; ++lane) {
        const double v = low + (static_cast<double>(high) - low) * detail::unit_interval(b[lane]);
        put(block * 4 + lane, std::min(v, below_high));
      }
    }
  });
}

// stddev * z, z a standard normal conditioned on lower <= z <= upper (by rejection, each
// element from its own counters). Note the result's standard deviation is below stddev
// (0.88 * stddev for the default +-2 bounds), as in JAX and Flax.
inline Tensor truncated_normal(RngKey key, const Shape& shape, float stddev = 1.0f, float lower = -2.0f,
                               float upper = 2.0f, DType dtype = DType::f32) {
  if (!(lower < upper) || upper - lower < 1e-3f)
    throw InvalidArgument("init::truncated_normal: need lower < upper (by at least 1e-3), got [" +
                          std::to_string(lower) + ", " + std::to_string(upper) + "]");
  return detail::generate(shape, dtype, [&](std::size_t n, auto put) {
    constexpr std::uint32_t max_attempts = 1u << 20;
    for (std::size_t i = 0; i < n; ++i) {
      for (std::uint32_t attempt = 0;; ++attempt) {
        if (attempt == max_attempts)
          throw InvalidArgument("init::truncated_normal: the interval [" + std::to_string(lower) + ", " +
                                std::to_string(upper) + "] is too unlikely under a standard normal");
        const auto b = nnx::detail::philox4x32_10({static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(i >> 32),
                                                   attempt, nnx::detail::domain_truncated},
                                                  key);
        const double z = detail::box_muller(b[0], b[1]).first;
        if (z >= lower && z <= upper) {
          put(i, z * stddev);
          break;
        }
      }
    }
  });
}

}  // namespace nnx::init
