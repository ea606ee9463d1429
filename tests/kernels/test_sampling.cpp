// Tests for nnx/kernels/sampling.hpp: every tier against libm in double on random rows of odd
// lengths — the row maximum and NaN detection exactly, exp weights and their sums within a
// few ulp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "nnx/kernels/sampling.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;

std::vector<float> random_row(i64 n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 4.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(gen);
  return v;
}

}  // namespace

TEST_CASE("sampling math agrees with libm on every tier", "[kernels][sampling]") {
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const auto max_logit = k::select(k::kMaxLogit, isa);
    const auto sum_exp = k::select(k::kSumExpShifted, isa);
    const auto exp_in_place = k::select(k::kExpInPlace, isa);
    for (i64 n : {1, 3, 7, 8, 15, 16, 17, 33, 1001, 50257}) {
      INFO(k::isa_name(isa) << " n=" << n);
      auto row = random_row(n, static_cast<std::uint32_t>(n));
      if (n > 1) row[static_cast<std::size_t>(n / 2)] = -std::numeric_limits<float>::infinity();  // masked
      float want_max = -std::numeric_limits<float>::infinity();
      for (float x : row) want_max = std::max(want_max, x);
      bool nan = true;
      const float m = max_logit(row.data(), n, nan);
      CHECK(m == want_max);
      CHECK_FALSE(nan);

      double want = 0.0;
      for (float x : row) want += std::exp(static_cast<double>(x) - m);
      std::vector<double> w(static_cast<std::size_t>(n), -1.0);
      const double got = sum_exp(row.data(), n, m, w.data());
      CHECK(std::fabs(got - want) <= 1e-13 * want);
      CHECK(sum_exp(row.data(), n, m, nullptr) == got);  // the same sum with or without the weights
      double worst = 0.0;
      for (i64 i = 0; i < n; ++i) {
        const double e = std::exp(static_cast<double>(row[static_cast<std::size_t>(i)]) - m);
        worst = std::max(worst, std::fabs(w[static_cast<std::size_t>(i)] - e) / std::max(e, 1e-300));
      }
      CHECK(worst <= 1e-14);
      if (n > 1) CHECK(w[static_cast<std::size_t>(n / 2)] == 0.0);  // exp(-inf)

      std::vector<double> d(w.size());
      for (i64 i = 0; i < n; ++i) d[static_cast<std::size_t>(i)] = static_cast<double>(row[static_cast<std::size_t>(i)]) - m;
      const double s = exp_in_place(d.data(), d.size());
      CHECK(std::fabs(s - want) <= 1e-13 * want);

      row[static_cast<std::size_t>(n - 1)] = std::numeric_limits<float>::quiet_NaN();
      max_logit(row.data(), n, nan);
      CHECK(nan);
    }
  }
}
