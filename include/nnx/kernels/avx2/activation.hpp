// nnx/kernels/avx2/activation.hpp — AVX2+FMA GELU (tanh form), SiLU and SwiGLU
// (nnx/kernels/activation.hpp dispatches here).
//
// The formulas are ref's (nnx/kernels/ref/activation.hpp): z * sigmoid(t) in its two-sided
// form, so exp only ever sees -|t| and nothing overflows; exp is simd.hpp's exp_nonpositive
// (within 2 ulp) instead of libm's. Cross-tier class: WITHIN ref's relative bounds plus 4 u,
// except that results below about 1e-35 in magnitude (exp of arguments under -87.3) flush to
// zero; avx512 runs these (no version of its own), so it is bit-identical to avx2.
// Elementwise: an element's result never depends on its neighbours or on n.
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>

namespace nnx::kernels::avx2 {

namespace detail::act {

// z * sigmoid(t) = (t >= 0 ? z : z e) / (1 + e), e = exp(-|t|). NaN in t gives NaN.
NNX_TARGET_AVX2_FMA inline __m256 times_sigmoid(__m256 z, __m256 t) noexcept {
  const __m256 e = exp_nonpositive(_mm256_or_ps(t, _mm256_set1_ps(-0.0f)));
  const __m256 nonneg = _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ);
  const __m256 num = _mm256_blendv_ps(_mm256_mul_ps(z, e), z, nonneg);
  return _mm256_div_ps(num, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

struct Gelu {
  NNX_TARGET_AVX2_FMA __m256 operator()(__m256 x) const noexcept {
    // u = sqrt(2/pi) (x + 0.044715 x³), in ref's order of float operations.
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.044715f), x), x), x);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f), _mm256_add_ps(x, x3));
    return times_sigmoid(x, _mm256_mul_ps(_mm256_set1_ps(2.0f), u));
  }
};

struct Silu {
  NNX_TARGET_AVX2_FMA __m256 operator()(__m256 x) const noexcept { return times_sigmoid(x, x); }
};

template <class F>
NNX_TARGET_AVX2_FMA inline void map(const float* x, float* out, std::int64_t n, F f) noexcept {
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f(_mm256_loadu_ps(x + i)));
  if (i < n) {
    const __m256i m = lane_mask(n - i);
    _mm256_maskstore_ps(out + i, m, f(_mm256_maskload_ps(x + i, m)));
  }
}

}  // namespace detail::act

// As ref::gelu_tanh.
NNX_TARGET_AVX2_FMA inline void gelu_tanh(const float* x, float* out, std::int64_t n) noexcept {
  detail::act::map(x, out, n, detail::act::Gelu{});
}

// As ref::silu.
NNX_TARGET_AVX2_FMA inline void silu(const float* x, float* out, std::int64_t n) noexcept {
  detail::act::map(x, out, n, detail::act::Silu{});
}

// As ref::swiglu: out = silu(gate) * up.
NNX_TARGET_AVX2_FMA inline void swiglu(const float* gate, const float* up, float* out, std::int64_t n) noexcept {
  namespace a = detail::act;
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    _mm256_storeu_ps(out + i, _mm256_mul_ps(a::times_sigmoid(g, g), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    const __m256i m = lane_mask(n - i);
    const __m256 g = _mm256_maskload_ps(gate + i, m);
    _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(a::times_sigmoid(g, g), _mm256_maskload_ps(up + i, m)));
  }
}

namespace detail::act {

// sigmoid(t) and sigmoid(-t) from one exp: with e = exp(-|t|), the side whose argument is
// non-negative is 1 / (1 + e), the other e / (1 + e) (ref's two-sided forms).
NNX_TARGET_AVX2_FMA inline void sigmoid_pair(__m256 t, __m256& s, __m256& s_neg) noexcept {
  const __m256 e = exp_nonpositive(_mm256_or_ps(t, _mm256_set1_ps(-0.0f)));
  const __m256 den = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
  const __m256 large = _mm256_div_ps(_mm256_set1_ps(1.0f), den), small = _mm256_div_ps(e, den);
  const __m256 nonneg = _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ);
  s = _mm256_blendv_ps(small, large, nonneg);
  s_neg = _mm256_blendv_ps(large, small, nonneg);
}

}  // namespace detail::act

// As ref::gelu_tanh_backward (ref's formula and order of float operations).
NNX_TARGET_AVX2_FMA inline void gelu_tanh_backward(const float* x, const float* dy, float* dx,
                                                    std::int64_t n) noexcept {
  const __m256 c = _mm256_set1_ps(0.044715f), c3 = _mm256_set1_ps(3.0f * 0.044715f);
  const __m256 two_k = _mm256_set1_ps(2.0f * 0.7978845608028654f), one = _mm256_set1_ps(1.0f);
  for (std::int64_t i = 0; i < n; i += 8) {
    const __m256 v = load_lanes(x + i, n - i);
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(c, v), v), v);
    __m256 s, s_neg;
    detail::act::sigmoid_pair(_mm256_mul_ps(two_k, _mm256_add_ps(v, x3)), s, s_neg);
    const __m256 slope = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(v, _mm256_mul_ps(s, s_neg)), two_k),
                                       _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(c3, v), v)));
    store_lanes(dx + i, _mm256_mul_ps(load_lanes(dy + i, n - i), _mm256_add_ps(s, slope)), n - i);
  }
}

// As ref::swiglu_backward.
NNX_TARGET_AVX2_FMA inline void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate,
                                                float* dup, std::int64_t n) noexcept {
  const __m256 one = _mm256_set1_ps(1.0f);
  for (std::int64_t i = 0; i < n; i += 8) {
    const __m256 g = load_lanes(gate + i, n - i), u = load_lanes(up + i, n - i), d = load_lanes(dy + i, n - i);
    __m256 s, s_neg;
    detail::act::sigmoid_pair(g, s, s_neg);
    const __m256 dsilu = _mm256_mul_ps(s, _mm256_add_ps(one, _mm256_mul_ps(g, s_neg)));
    store_lanes(dgate + i, _mm256_mul_ps(_mm256_mul_ps(d, u), dsilu), n - i);
    store_lanes(dup + i, _mm256_mul_ps(d, _mm256_mul_ps(g, s)), n - i);
  }
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
