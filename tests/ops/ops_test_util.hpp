// Helpers shared by the ops tests.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nnx/core/tensor.hpp"

namespace ops_test {

using nnx::Shape;
using nnx::Tensor;

// The message of the E that fn throws; a different exception propagates (failing the test),
// none gives a message no matcher accepts.
template <class E, class Fn>
std::string message_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  return "<nothing thrown>";
}

// Uniform random f32 values in [lo, hi), reproducible from the seed.
inline Tensor random_tensor(const Shape& shape, std::uint32_t seed, float lo = -4.0f, float hi = 4.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, shape);
}

// The same in [-1, 1).
inline Tensor unit_tensor(const Shape& shape, std::uint32_t seed) { return random_tensor(shape, seed, -1.0f, 1.0f); }

}  // namespace ops_test
