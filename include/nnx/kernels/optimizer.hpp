// nnx/kernels/optimizer.hpp — the elementwise parameter updates of the optimizers (AdamW, SGD
// with momentum) and the sum of squares that global-norm clipping needs, on raw f32 buffers.
//
//   nnx::kernels::adamw_update(p, g, mu, nu, n, {.lr = 3e-4f, .weight_decay = 0.1f, ...});
//
// Every element is updated on its own in a fixed order of operations (stated at each
// function), so any split between threads gives the same bits; sum_squares adds fixed blocks
// in order (bit-identical on every tier). AdamW has an avx2 tier (avx512 runs it, so both give
// the same bits) doing ref's operations 8 wide, within a few ulps of ref (the compiler may fuse
// a multiply and an add): the portable loop's divisions and square roots are not vectorized by
// GCC at -O2, and were a tenth of a GPT-2 124M training step.
#pragma once

#include <cmath>
#include <cstdint>

#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"

#if NNX_KERNELS_X86_DISPATCH
#include <immintrin.h>
#endif

namespace nnx::kernels {

struct AdamWStep {
  float lr = 1e-3f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled: p <- p (1 - lr wd) before the Adam step
  float bias_correction1 = 1.0f;  // 1 - beta1^t
  float bias_correction2 = 1.0f;  // 1 - beta2^t
  float grad_scale = 1.0f;        // clipping factor applied to g first
};

namespace ref {
// For i < n, as torch.optim.AdamW (with g <- g grad_scale first):
//   mu = beta1 mu + (1 - beta1) g;  nu = beta2 nu + (1 - beta2) g g
//   p = p (1 - lr wd);  p = p - lr (mu / bc1) / (sqrt(nu / bc2) + eps)
inline void adamw_update(float* p, const float* g, float* mu, float* nu, std::int64_t n, const AdamWStep& s) noexcept {
  const float decay = 1.0f - s.lr * s.weight_decay;
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * s.grad_scale;
    mu[i] = s.beta1 * mu[i] + (1.0f - s.beta1) * gi;
    nu[i] = s.beta2 * nu[i] + (1.0f - s.beta2) * (gi * gi);
    const float mhat = mu[i] / s.bias_correction1;
    const float denom = std::sqrt(nu[i] / s.bias_correction2) + s.eps;
    p[i] = p[i] * decay - s.lr * (mhat / denom);
  }
}

// For i < n, as torch.optim.SGD (dampening 0, not Nesterov; g <- g grad_scale first):
//   g = g + wd p;  buf = momentum buf + g (buf = g at the first step);  p = p - lr buf
inline void sgd_update(float* p, const float* g, float* buf, std::int64_t n, float lr, float momentum,
                       float weight_decay, float grad_scale, bool first_step) noexcept {
  for (std::int64_t i = 0; i < n; ++i) {
    const float gi = g[i] * grad_scale + weight_decay * p[i];
    buf[i] = first_step ? gi : momentum * buf[i] + gi;
    p[i] = p[i] - lr * buf[i];
  }
}

namespace detail {
// Chains of a block's sum of squares: element i goes to chain i % 32 (one chain would wait on
// the adder's latency for every element), the chains are then added in a fixed tree.
inline constexpr int kSquareChains = 32;
inline double combine_square_chains(const double (&c)[kSquareChains]) noexcept {
  double l[8];
  for (int i = 0; i < 8; ++i) l[i] = (c[i] + c[i + 8]) + (c[i + 16] + c[i + 24]);
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}
}  // namespace detail

// sum_i x_i² in double over one block, in the chains of detail::kSquareChains.
inline double sum_squares_block(const float* x, std::int64_t n) noexcept {
  double chains[detail::kSquareChains] = {};
  for (std::int64_t i = 0; i < n; ++i) chains[i % detail::kSquareChains] += double(x[i]) * double(x[i]);
  return detail::combine_square_chains(chains);
}
}  // namespace ref

#if NNX_KERNELS_X86_DISPATCH
namespace avx2 {
// ref::adamw_update 8 elements at a time, the same operations in the same order.
NNX_TARGET_AVX2_FMA inline void adamw_update(float* p, const float* g, float* mu, float* nu, std::int64_t n,
                                             const AdamWStep& s) noexcept {
  const __m256 gs = _mm256_set1_ps(s.grad_scale), b1 = _mm256_set1_ps(s.beta1), b2 = _mm256_set1_ps(s.beta2);
  const __m256 c1 = _mm256_set1_ps(1.0f - s.beta1), c2 = _mm256_set1_ps(1.0f - s.beta2);
  const __m256 bc1 = _mm256_set1_ps(s.bias_correction1), bc2 = _mm256_set1_ps(s.bias_correction2);
  const __m256 eps = _mm256_set1_ps(s.eps), lr = _mm256_set1_ps(s.lr);
  const __m256 decay = _mm256_set1_ps(1.0f - s.lr * s.weight_decay);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), gs);
    const __m256 m = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(mu + i)), _mm256_mul_ps(c1, gi));
    const __m256 v = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(nu + i)), _mm256_mul_ps(c2, _mm256_mul_ps(gi, gi)));
    _mm256_storeu_ps(mu + i, m);
    _mm256_storeu_ps(nu + i, v);
    const __m256 denom = _mm256_add_ps(_mm256_sqrt_ps(_mm256_div_ps(v, bc2)), eps);
    const __m256 step = _mm256_mul_ps(lr, _mm256_div_ps(_mm256_div_ps(m, bc1), denom));
    _mm256_storeu_ps(p + i, _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), decay), step));
  }
  ref::adamw_update(p + i, g + i, mu + i, nu + i, n - i, s);
}

// ref::sum_squares_block with its 32 chains in eight 4-lane double registers (multiply, then
// add, as ref): the same bits.
NNX_TARGET_AVX2_FMA inline double sum_squares_block(const float* x, std::int64_t n) noexcept {
  __m256d acc[8];
  for (auto& a : acc) a = _mm256_setzero_pd();
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int q = 0; q < 4; ++q) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * q);
      const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
      acc[2 * q] = _mm256_add_pd(acc[2 * q], _mm256_mul_pd(lo, lo));
      acc[2 * q + 1] = _mm256_add_pd(acc[2 * q + 1], _mm256_mul_pd(hi, hi));
    }
  alignas(32) double chains[ref::detail::kSquareChains];
  for (int q = 0; q < 8; ++q) _mm256_store_pd(chains + 4 * q, acc[q]);
  for (std::int64_t j = 0; i < n; ++i, ++j) chains[j] += double(x[i]) * double(x[i]);
  return ref::detail::combine_square_chains(chains);
}
}  // namespace avx2
#endif

using AdamWUpdateFn = void (*)(float* p, const float* g, float* mu, float* nu, std::int64_t n,
                               const AdamWStep& s) noexcept;
inline constexpr TierTable<AdamWUpdateFn> kAdamWUpdate{&ref::adamw_update, NNX_X86_ENTRY(avx2::adamw_update)};
using SumSquaresBlockFn = double (*)(const float* x, std::int64_t n) noexcept;
inline constexpr TierTable<SumSquaresBlockFn> kSumSquaresBlock{&ref::sum_squares_block,
                                                               NNX_X86_ENTRY(avx2::sum_squares_block)};

namespace detail {
inline constexpr std::int64_t kUpdateBlock = 4096;
}

// The AdamW step over n elements (ref::adamw_update states it). Never throws.
inline void adamw_update(float* p, const float* g, float* mu, float* nu, std::int64_t n, const AdamWStep& s) noexcept {
  const AdamWUpdateFn f = select(kAdamWUpdate, active_isa());
  parallel_blocks(n, detail::kUpdateBlock, 4.0 * double(n), [&](std::int64_t i0, std::int64_t i1) noexcept {
    f(p + i0, g + i0, mu + i0, nu + i0, i1 - i0, s);
  });
}

// The SGD-with-momentum step over n elements (ref::sgd_update states it). Never throws.
inline void sgd_update(float* p, const float* g, float* buf, std::int64_t n, float lr, float momentum,
                       float weight_decay, float grad_scale, bool first_step) noexcept {
  parallel_blocks(n, detail::kUpdateBlock, 2.0 * double(n), [&](std::int64_t i0, std::int64_t i1) noexcept {
    ref::sgd_update(p + i0, g + i0, buf + i0, i1 - i0, lr, momentum, weight_decay, grad_scale, first_step);
  });
}

// sum_i x_i², in double: each block of kUpdateBlock elements summed on its own
// (ref::sum_squares_block's chains, the same bits on every tier), then the blocks in order, so
// the result is the same on any thread count. Never throws.
inline double sum_squares(const float* x, std::int64_t n) noexcept {
  const SumSquaresBlockFn f = select(kSumSquaresBlock, active_isa());
  const std::int64_t blocks = (n + detail::kUpdateBlock - 1) / detail::kUpdateBlock;
  constexpr std::int64_t kChunk = 256;  // blocks per pass, their partial sums on the stack
  double total = 0.0;
  for (std::int64_t b0 = 0; b0 < blocks; b0 += kChunk) {
    const std::int64_t nb = blocks - b0 < kChunk ? blocks - b0 : kChunk;
    double partial[kChunk];
    parallel_blocks(nb, 1, double(nb) * double(detail::kUpdateBlock), [&](std::int64_t c0, std::int64_t c1) noexcept {
      for (std::int64_t c = c0; c < c1; ++c) {
        const std::int64_t i0 = (b0 + c) * detail::kUpdateBlock;
        const std::int64_t i1 = i0 + detail::kUpdateBlock < n ? i0 + detail::kUpdateBlock : n;
        partial[c] = f(x + i0, i1 - i0);
      }
    });
    for (std::int64_t c = 0; c < nb; ++c) total += partial[c];
  }
  return total;
}

}  // namespace nnx::kernels
