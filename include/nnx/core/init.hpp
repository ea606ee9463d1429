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

template <class Gen>
Tensor generate(const Shape& shape, DType dtype, Gen&& gen) {
  if (!is_floating(dtype))
    throw DTypeError("init: random values need a floating dtype, not " + std::string(dtype_name(dtype)));
  Tensor out = Tensor::empty(shape, dtype);
  if (out.is_abstract()) return out;
  const auto n = static_cast<std::size_t>(out.numel());
  if (dtype == DType::f32) {
    gen(out.data<float>(), n);
  } else {
    std::vector<float> tmp(n);
    gen(tmp.data(), n);
    convert(tmp.data(), DType::f32, out.raw_data(), dtype, n);
  }
  return out;
}

}  // namespace detail

// N(0, stddev^2) values.
inline Tensor normal(RngKey key, const Shape& shape, float stddev = 1.0f, DType dtype = DType::f32) {
  return detail::generate(shape, dtype, [&](float* out, std::size_t n) {
    for (std::size_t block = 0; block * 4 < n; ++block) {
      const auto b = nnx::detail::philox4x32_10(
          {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, nnx::detail::domain_bits},
          key);
      const auto [z0, z1] = detail::box_muller(b[0], b[1]);
      const auto [z2, z3] = detail::box_muller(b[2], b[3]);
      const double z[4] = {z0, z1, z2, z3};
      for (std::size_t lane = 0; lane < 4 && block * 4 + lane < n; ++lane)
        out[block * 4 + lane] = static_cast<float>(z[lane] * stddev);
    }
  });
}

// Uniform values in [low, high).
inline Tensor uniform(RngKey key, const Shape& shape, float low = 0.0f, float high = 1.0f,
                      DType dtype = DType::f32) {
  if (!(low < high))
    throw InvalidArgument("init::uniform: need low < high, got [" + std::to_string(low) + ", " +
                          std::to_string(high) + ")");
  return detail::generate(shape, dtype, [&](float* out, std::size_t n) {
    for (std::size_t block = 0; block * 4 < n; ++block) {
      const auto b = nnx::detail::philox4x32_10(
          {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32), 0, nnx::detail::domain_bits},
          key);
      for (std::size_t lane = 0; lane < 4 && block * 4 + lane < n; ++lane) {
        const double u = detail::unit_interval(b[lane]);
        // Rounding can reach `high` for tiny intervals; keep the bound half-open.
        float v = static_cast<float>(low + (static_cast<double>(high) - low) * u);
        out[block * 4 + lane] = v < high ? v : std::nextafter(high, low);
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
  return detail::generate(shape, dtype, [&](float* out, std::size_t n) {
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
          out[i] = static_cast<float>(z * stddev);
          break;
        }
      }
    }
  });
}

}  // namespace nnx::init
