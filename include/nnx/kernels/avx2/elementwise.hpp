// nnx/kernels/avx2/elementwise.hpp — AVX2 bias rows and sums (nnx/kernels/elementwise.hpp
// dispatches here).
//
// One float addition per element, as ref: cross-tier class BIT-IDENTICAL (avx512 runs these).
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx2).
#pragma once

#include "nnx/kernels/avx2/simd.hpp"
#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>

namespace nnx::kernels::avx2 {

// out[i] = a[i] + b[i] for i < n; out may be a or b. Same bits as ref::add_f32.
NNX_TARGET_AVX2_FMA inline void add_f32(const float* a, const float* b, float* out, std::int64_t n) noexcept {
  std::int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int u = 0; u < 32; u += 8)
      _mm256_storeu_ps(out + i + u, _mm256_add_ps(_mm256_loadu_ps(a + i + u), _mm256_loadu_ps(b + i + u)));
  for (; i < n; i += 8) {
    const __m256i m = lane_mask(n - i);
    _mm256_maskstore_ps(out + i, m, _mm256_add_ps(_mm256_maskload_ps(a + i, m), _mm256_maskload_ps(b + i, m)));
  }
}

// y[r, j] += bias[j] for r < rows, j < cols. Same bits as ref::add_bias_rows.
NNX_TARGET_AVX2_FMA inline void add_bias_rows(float* y, const float* bias, std::int64_t rows,
                                              std::int64_t cols) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) add_f32(y + r * cols, bias, y + r * cols, cols);
}

}  // namespace nnx::kernels::avx2

#endif  // NNX_KERNELS_X86_DISPATCH
