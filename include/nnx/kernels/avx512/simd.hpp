// nnx/kernels/avx512/simd.hpp — the AVX-512 helpers every avx512 kernel shares: tail masks and
// the all-lanes mask for GCC-12-clean maskz forms.
//
// Compiled with per-function target attributes; call only where isa_supported(Isa::avx512).
#pragma once

#include "nnx/kernels/isa.hpp"

#if NNX_KERNELS_X86_DISPATCH

#include <immintrin.h>

#include <cstdint>

namespace nnx::kernels::avx512 {

// Lanes [0, n) of 16 set; n may lie outside 0..16 (a tail computed as `width - 16` is negative
// for a narrow panel), which clamps to no lanes or all lanes.
NNX_TARGET_AVX512 inline __mmask16 lanes16(std::int64_t n) noexcept {
  if (n <= 0) return 0;
  return n >= 16 ? __mmask16(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}

// Bytes [0, n) of 64 set, clamped like lanes16.
NNX_TARGET_AVX512 inline __mmask64 bytes64(std::int64_t n) noexcept {
  if (n <= 0) return 0;
  return n >= 64 ? ~__mmask64{0} : (__mmask64{1} << n) - 1;
}

// The unmasked forms of max, min, permutexvar and some conversions warn under GCC 12
// (-Wmaybe-uninitialized on the undefined vector they pass on as the merge source); the
// all-lanes maskz forms are the same instructions without it.
constexpr __mmask16 kAll16 = 0xFFFF;

}  // namespace nnx::kernels::avx512

#endif  // NNX_KERNELS_X86_DISPATCH
