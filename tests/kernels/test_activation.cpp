// Tests for nnx/kernels/activation.hpp: GELU (tanh approximation), SiLU and SwiGLU against
// double-precision references with the stated relative error bounds, over a dense grid,
// random values and extremes (underflow, overflow of x³ and exp, infinities, NaN).
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nnx/kernels/activation.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
constexpr double kUnit = 0x1p-24;

double gelu_tanh_tanh_form(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return 0.5 * x * (1.0 + std::tanh(u));
}
// The same function written without cancellation (x sigmoid(2u)): the reference.
double gelu_tanh_ref(double x) {
  const double u = std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x);
  return x / (1.0 + std::exp(-2.0 * u));
}
double silu_ref(double x) { return x / (1.0 + std::exp(-x)); }

std::vector<float> test_inputs() {
  std::vector<float> x;
  for (int i = -4000; i <= 4000; ++i) x.push_back(static_cast<float>(i) * 0.005f);  // [-20, 20]
  std::mt19937 gen(1);
  std::uniform_real_distribution<float> dist(-6.0f, 6.0f);
  for (int i = 0; i < 1001; ++i) x.push_back(dist(gen));
  for (float v :
       {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-3f, -1e-3f, 50.0f, -50.0f, 90.0f, -90.0f, 1e20f, -1e20f, 3e38f, -3e38f})
    x.push_back(v);
  return x;
}

}  // namespace

TEST_CASE("the GELU reference is the tanh formula", "[kernels][activation]") {
  for (double x = -3.0; x <= 3.0; x += 0.01)
    REQUIRE(gelu_tanh_ref(x) == Approx(gelu_tanh_tanh_form(x)).epsilon(1e-13).margin(1e-15));
}

TEST_CASE("gelu_tanh matches a double reference within (4 |2u| + 8) u relative", "[kernels][activation]") {
  const auto x = test_inputs();
  std::vector<float> y(x.size()), y_ref(x.size());
  k::gelu_tanh(x.data(), y.data(), static_cast<i64>(x.size()));
  k::ref::gelu_tanh(x.data(), y_ref.data(), static_cast<i64>(x.size()));
  CHECK(y == y_ref);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double xd = x[i];
    const double u = std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd * xd * xd);
    const double ref = gelu_tanh_ref(xd);
    const double bound = (4.0 * std::fabs(2.0 * u) + 8.0) * kUnit * std::fabs(ref) + 1e-44;
    INFO("x=" << x[i] << " y=" << y[i] << " ref=" << ref);
    REQUIRE(std::fabs(y[i] - ref) <= bound);
  }
}

TEST_CASE("gelu_tanh at special values", "[kernels][activation]") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> x{inf, std::nanf(""), 0.0f};
  std::vector<float> y(3);
  k::gelu_tanh(x.data(), y.data(), 3);
  CHECK(y[0] == inf);
  CHECK(std::isnan(y[1]));
  CHECK(y[2] == 0.0f);
  // In place.
  std::vector<float> z{1.0f, -1.0f};
  k::gelu_tanh(z.data(), z.data(), 2);
  CHECK(z[0] == Approx(gelu_tanh_ref(1.0)).epsilon(1e-6));
  CHECK(z[1] == Approx(gelu_tanh_ref(-1.0)).epsilon(1e-6));
}

TEST_CASE("silu and swiglu match double references within (|x| + 5) u relative", "[kernels][activation]") {
  const auto x = test_inputs();
  const auto n = static_cast<i64>(x.size());
  std::vector<float> y(x.size());
  k::silu(x.data(), y.data(), n);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double ref = silu_ref(x[i]);
    INFO("x=" << x[i] << " y=" << y[i] << " ref=" << ref);
    REQUIRE(std::fabs(y[i] - ref) <= (std::fabs(static_cast<double>(x[i])) + 5.0) * kUnit * std::fabs(ref) + 1e-44);
  }
  std::mt19937 gen(2);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> up(x.size());
  for (auto& v : up) v = dist(gen);
  std::vector<float> s(x.size());
  k::swiglu(x.data(), up.data(), s.data(), n);
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (std::isinf(silu_ref(x[i]) * up[i])) continue;  // 3e38 * up overflows in float and double alike
    const double ref = silu_ref(x[i]) * up[i];
    INFO("gate=" << x[i] << " up=" << up[i] << " y=" << s[i] << " ref=" << ref);
    REQUIRE(std::fabs(s[i] - ref) <= (std::fabs(static_cast<double>(x[i])) + 6.0) * kUnit * std::fabs(ref) + 1e-44);
  }
  // swiglu in place (out == up) gives the same bits.
  std::vector<float> up2 = up;
  k::swiglu(x.data(), up2.data(), up2.data(), n);
  CHECK(up2 == s);
}
