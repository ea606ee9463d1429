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
#include "nnx/kernels/parallel.hpp"

#include "../support/numeric.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
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

// The slack a tier adds to ref's bounds: its exp is within 2 ulp rather than libm's 1, and
// results below ~1e-35 (exp of arguments under -87.3) flush to zero (avx2/activation.hpp).
double extra_units(k::Isa isa) { return isa == k::Isa::ref ? 0.0 : 4.0; }
double tiny_margin(k::Isa isa) { return isa == k::Isa::ref ? 1e-44 : 1e-35; }

TEST_CASE("gelu_tanh matches a double reference within (4 |2u| + 8) u relative on every tier",
          "[kernels][activation]") {
  const auto x = test_inputs();
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    std::vector<float> y(x.size());
    k::select(k::kGeluTanh, isa)(x.data(), y.data(), static_cast<i64>(x.size()));
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double xd = x[i];
      const double u = std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd * xd * xd);
      const double ref = gelu_tanh_ref(xd);
      const double bound =
          (4.0 * std::fabs(2.0 * u) + 8.0 + extra_units(isa)) * kUnit * std::fabs(ref) + tiny_margin(isa);
      INFO(k::isa_name(isa) << " x=" << x[i] << " y=" << y[i] << " ref=" << ref);
      REQUIRE(std::fabs(y[i] - ref) <= bound);
    }
  }
}

TEST_CASE("gelu_tanh at special values on every tier", "[kernels][activation]") {
  const float inf = std::numeric_limits<float>::infinity();
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    INFO(k::isa_name(isa));
    const auto gelu = k::select(k::kGeluTanh, isa);
    std::vector<float> x{inf, std::nanf(""), 0.0f, -inf};
    std::vector<float> y(4);
    gelu(x.data(), y.data(), 4);
    CHECK(y[0] == inf);
    CHECK(std::isnan(y[1]));
    CHECK(y[2] == 0.0f);
    CHECK(std::isnan(y[3]));  // -inf * sigmoid(-inf) = -inf * 0, NaN as in PyTorch's tanh form
    // In place.
    std::vector<float> z{1.0f, -1.0f};
    gelu(z.data(), z.data(), 2);
    CHECK(z[0] == Approx(gelu_tanh_ref(1.0)).epsilon(1e-6));
    CHECK(z[1] == Approx(gelu_tanh_ref(-1.0)).epsilon(1e-6));
  }
}

TEST_CASE("silu and swiglu match double references within (|x| + 5) u relative on every tier",
          "[kernels][activation]") {
  const auto x = test_inputs();
  const auto n = static_cast<i64>(x.size());
  std::mt19937 gen(2);
  std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
  std::vector<float> up(x.size());
  for (auto& v : up) v = dist(gen);
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    std::vector<float> y(x.size());
    k::select(k::kSilu, isa)(x.data(), y.data(), n);
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double ref = silu_ref(x[i]);
      const double bound =
          (std::fabs(static_cast<double>(x[i])) + 5.0 + extra_units(isa)) * kUnit * std::fabs(ref) + tiny_margin(isa);
      INFO(k::isa_name(isa) << " x=" << x[i] << " y=" << y[i] << " ref=" << ref);
      REQUIRE(std::fabs(y[i] - ref) <= bound);
    }
    const auto swiglu = k::select(k::kSwiglu, isa);
    std::vector<float> s(x.size());
    swiglu(x.data(), up.data(), s.data(), n);
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (std::isinf(silu_ref(x[i]) * up[i])) continue;  // 3e38 * up overflows in float and double alike
      const double ref = silu_ref(x[i]) * up[i];
      const double bound =
          (std::fabs(static_cast<double>(x[i])) + 6.0 + extra_units(isa)) * kUnit * std::fabs(ref) + tiny_margin(isa);
      INFO(k::isa_name(isa) << " gate=" << x[i] << " up=" << up[i] << " y=" << s[i] << " ref=" << ref);
      REQUIRE(std::fabs(s[i] - ref) <= bound);
    }
    // swiglu in place (out == up) gives the same bits.
    std::vector<float> up2 = up;
    swiglu(x.data(), up2.data(), up2.data(), n);
    CHECK(up2 == s);
  }
}

TEST_CASE("activations: an element's value does not depend on the call's length, offset or threads",
          "[kernels][activation]") {
  const auto x = test_inputs();
  const auto n = static_cast<i64>(x.size());
  std::vector<float> gelu(x.size()), silu(x.size());
  k::select(k::kGeluTanh, k::active_isa())(x.data(), gelu.data(), n);
  k::select(k::kSilu, k::active_isa())(x.data(), silu.data(), n);
  for (i64 len : {1, 7, 9, 17}) {  // vector tails
    std::vector<float> part(static_cast<std::size_t>(len));
    k::select(k::kGeluTanh, k::active_isa())(x.data() + 3, part.data(), len);
    CHECK(std::equal(part.begin(), part.end(), gelu.begin() + 3));
  }
  const int threads_before = nnx::num_threads();
  const auto work_before = k::parallel_min_work();
  for (int threads : {1, 2}) {
    k::set_thread_count(threads);
    k::set_parallel_min_work(1);
    std::vector<float> y(x.size());
    k::gelu_tanh(x.data(), y.data(), n);
    CHECK(y == gelu);
    k::silu(x.data(), y.data(), n);
    CHECK(y == silu);
  }
  k::set_thread_count(threads_before);
  k::set_parallel_min_work(work_before);
}
