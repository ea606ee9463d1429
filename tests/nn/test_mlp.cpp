// nn::Mlp against double-precision references: down(gelu_tanh(up(x))) as GPT-2, and
// down(silu(gate(x)) * up(x)) as Llama (with and without biases), over leading batch axes.
#include <catch2/catch.hpp>

#include <cstdint>

#include <nnx/nn.hpp>

#include "nn_reference.hpp"

namespace {

using i64 = std::int64_t;

// Two products of 24-40 terms and a float activation: errors near 1e-6 on O(1) outputs. Using
// the erf GELU, the sigmoid GELU, relu, or dropping a gate or bias moves them by 1e-3 or more.
constexpr double kTol = 1e-5;

void check_against_reference(nnx::Mlp& mlp, i64 C, std::uint32_t seed) {
  nn_ref::randomize_biases_and_norms(mlp, seed);
  const nnx::Tensor x = nn_ref::random_tensor({2, 5, C}, seed + 1, -3.0f, 3.0f);
  const nnx::Tensor y = mlp(x);
  REQUIRE(y.shape() == x.shape());
  const nn_ref::Vec want = nn_ref::mlp(nn_ref::to_double(x), 10, mlp);  // [2, 5] rows as 10
  INFO("largest output " << nn_ref::max_abs(want));
  CHECK(nn_ref::max_abs(want) > 0.5);
  CHECK(nn_ref::max_abs_diff(y.data<float>(), want) <= kTol);
}

}  // namespace

TEST_CASE("Mlp with gelu (tanh) matches the double reference", "[nn][mlp]") {
  nnx::Rngs rngs{1};
  nnx::Mlp mlp(24, 40, nnx::Activation::gelu_tanh, rngs);
  CHECK_FALSE(mlp.gate.has_value());
  CHECK(mlp.up.bias.has_value());
  check_against_reference(mlp, 24, 2);
}

TEST_CASE("Mlp with SwiGLU matches the double reference, with and without biases", "[nn][mlp]") {
  for (bool bias : {false, true}) {
    INFO("bias " << bias);
    nnx::Rngs rngs{3};
    nnx::Mlp mlp(24, 40, nnx::Activation::swiglu, rngs, bias);
    REQUIRE(mlp.gate.has_value());
    CHECK(mlp.up.bias.has_value() == bias);
    check_against_reference(mlp, 24, 4);
  }
}

TEST_CASE("the gelu reference is the tanh approximation, not erf", "[nn][mlp]") {
  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) at x = 1: 0.8411919906..., where the erf
  // form gives 0.8413447460...: the references above could not pass with the other one.
  CHECK(nn_ref::gelu_tanh(1.0) == Approx(0.8411919906082768).epsilon(1e-12));
  CHECK(nn_ref::silu(2.0) == Approx(1.7615941559557646).epsilon(1e-12));
}
