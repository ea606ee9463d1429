// nnx/kernels/sampling.hpp — the math of sampling a token from a row of logits: the row
// maximum (with NaN detection) and sums of exp(logit - max) in double, each in the best tier
// the CPU has (nnx/kernels/isa.hpp). nnx/engine/sampling.hpp builds top-k, top-p and the draw
// on them.
//
//   bool nan = false;
//   const float m = nnx::kernels::max_logit(row, vocab, nan);
//   const double z = nnx::kernels::sum_exp_shifted(row, vocab, m, nullptr);   // log z + m: log-normalizer
//
// Tiers agree within a few ulp per weight (nnx/kernels/avx2/sampling.hpp); each is
// deterministic and computes a row on its own. Never throw.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nnx/kernels/avx2/sampling.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/sampling.hpp"

namespace nnx::kernels {

using MaxLogitFn = float (*)(const float* x, std::int64_t n, bool& has_nan) noexcept;
using SumExpShiftedFn = double (*)(const float* x, std::int64_t n, double m, double* out) noexcept;
using ExpInPlaceFn = double (*)(double* d, std::size_t n) noexcept;

inline constexpr TierTable<MaxLogitFn> kMaxLogit{&ref::max_logit, NNX_X86_ENTRY(avx2::max_logit)};
inline constexpr TierTable<SumExpShiftedFn> kSumExpShifted{&ref::sum_exp_shifted, NNX_X86_ENTRY(avx2::sum_exp_shifted)};
inline constexpr TierTable<ExpInPlaceFn> kExpInPlace{&ref::exp_in_place, NNX_X86_ENTRY(avx2::exp_in_place)};

// Largest element of x[0, n) (NaNs ignored; -inf for n == 0) and whether any is NaN.
inline float max_logit(const float* x, std::int64_t n, bool& has_nan) noexcept {
  return select(kMaxLogit, active_isa())(x, n, has_nan);
}

// Sum of exp(x[i] - m) over x[0, n) for m >= every x[i]; the weights also stored into
// out[0, n) when out is not null.
inline double sum_exp_shifted(const float* x, std::int64_t n, double m, double* out) noexcept {
  return select(kSumExpShifted, active_isa())(x, n, m, out);
}

// d[j] = exp(d[j]) over d[0, n) for d[j] <= 0; returns the sum.
inline double exp_in_place(double* d, std::size_t n) noexcept { return select(kExpInPlace, active_isa())(d, n); }

}  // namespace nnx::kernels
