// nnx/kernels/ref/sampling.hpp — portable sampling math over a vocabulary row (the fallback
// and the oracle of nnx/kernels/sampling.hpp): libm's exp, sums in index order.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

namespace nnx::kernels::ref {

// Largest element of x[0, n) (NaNs ignored; -inf for n == 0) and whether any is NaN.
inline float max_logit(const float* x, std::int64_t n, bool& has_nan) noexcept {
  float m = -std::numeric_limits<float>::infinity();
  bool bad = false;
  for (std::int64_t i = 0; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    bad |= x[i] != x[i];
  }
  has_nan = bad;
  return m;
}

// Sum of exp(x[i] - m) over x[0, n) (x[i] <= m), the weights also stored into out[0, n) when
// out is not null.
inline double sum_exp_shifted(const float* x, std::int64_t n, double m, double* out) noexcept {
  double s = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const double e = std::exp(static_cast<double>(x[i]) - m);
    if (out) out[i] = e;
    s += e;
  }
  return s;
}

// d[j] = exp(d[j]) over d[0, n) (d[j] <= 0); returns the sum.
inline double exp_in_place(double* d, std::size_t n) noexcept {
  double s = 0.0;
  for (std::size_t j = 0; j < n; ++j) s += (d[j] = std::exp(d[j]));
  return s;
}

}  // namespace nnx::kernels::ref
