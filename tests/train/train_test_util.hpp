// Helpers shared by the training tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include <nnx/core.hpp>

namespace train_test {

// Token ids i32 [B, T], uniform in [0, V), reproducible from the seed.
inline nnx::Tensor random_tokens(std::int64_t B, std::int64_t T, std::int64_t V, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(B * T));
  for (auto& x : ids) x = static_cast<std::int32_t>(gen() % V);
  return nnx::Tensor::from_vector(ids, {B, T});
}

// A tensor of normal values with standard deviation `scale`, reproducible from the seed.
inline nnx::Tensor random_tensor(nnx::Shape shape, std::uint32_t seed, float scale) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  nnx::Tensor t = nnx::Tensor::empty(shape);
  for (float& x : t.span<float>()) x = dist(gen);
  return t;
}

// Both states hold the same paths with bitwise equal values.
inline bool bitwise_equal(const nnx::State& a, const nnx::State& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [path, leaf] : a) {
    const auto* other = b.find(path);
    if (!other || !nnx::equal(leaf.value, other->value)) return false;
  }
  return true;
}

}  // namespace train_test
