// nnx/kernels/ref/quantize.hpp — portable AQT absmax int8 quantization: the fallback on CPUs
// without AVX2 and the oracle the AVX2 path (nnx/kernels/avx2/quantize.hpp) must match bit
// for bit. Use nnx/kernels/quantize.hpp, which dispatches and splits work between threads.
//
// Numerics (AQT absmax, one scale per row of a [rows, K] matrix, K the contraction axis):
//   amax  = max_k |x[k]|
//   scale = amax == 0 ? 1 : amax / 127.5f                         (float division)
//   q[k]  = clip(round_half_even(x[k] / scale), -127, 127)        (IEEE float division)
// Clipping before rounding gives the same q (the bounds are integers and rounding is
// monotone), and keeps the rounded values small. Rounding is std::nearbyint, i.e.
// half-to-even in the default rounding mode, which the division assumes too. Not valid
// under -ffast-math: it may turn the division into a multiplication by a reciprocal.
//
// Non-finite input is carried by the scale, never a crash: a row holding a NaN gets a NaN
// scale and all-zero q; a row holding ±inf (and no NaN) gets scale inf, and q = 0 for every
// element (x / inf = 0, inf / inf = NaN -> 0). An amax below about 127.5 * 2^-149 gives a
// scale that underflows to 0: zeros then give q = 0 and nonzero values ±127. Callers that
// care check std::isfinite(scale) and scale > 0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace nnx::kernels::ref {

namespace detail::i8 {

// |x| as its bit pattern. For non-negative floats the integer order is the float order, and
// every NaN pattern lies above +inf, so a max over these bits is exact, independent of the
// order it is taken in, and propagates NaN: any lane split of the vector path finds the
// same bits. (std::max over floats would drop a NaN or keep it depending on the order.)
inline std::uint32_t abs_bits(float x) noexcept {
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b & 0x7FFFFFFFu;
}

// The scale of a row whose largest |x| has bits amax_bits.
inline float absmax_scale(std::uint32_t amax_bits) noexcept {
  if (amax_bits == 0) return 1.0f;  // an all-zero row (or only -0.0): any scale gives q = 0
  float amax;
  std::memcpy(&amax, &amax_bits, sizeof amax);
  return amax / 127.5f;
}

// One element: q = clip(round_half_even(x / scale), -127, 127); NaN quotients give 0.
inline std::int8_t quantize_value(float x, float scale) noexcept {
  float v = x / scale;
  if (std::isnan(v)) return 0;  // also keeps the conversion below defined
  v = std::min(std::max(v, -127.0f), 127.0f);
  return static_cast<std::int8_t>(std::nearbyint(v));
}

}  // namespace detail::i8

// Per row of x[M, K] (row stride ldx >= K): scale[m] and q[m, 0:K) (row stride ldq >= K) as
// in the header comment. Only the first K bytes of each q row are written. Never throws.
inline void quantize_rows_absmax(std::int64_t M, std::int64_t K, const float* x, std::int64_t ldx, std::int8_t* q,
                                 std::int64_t ldq, float* scale) noexcept {
  for (std::int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * ldx;
    std::uint32_t amax = 0;
    for (std::int64_t k = 0; k < K; ++k) amax = std::max(amax, detail::i8::abs_bits(xr[k]));
    const float s = detail::i8::absmax_scale(amax);
    scale[m] = s;
    std::int8_t* qr = q + m * ldq;
    for (std::int64_t k = 0; k < K; ++k) qr[k] = detail::i8::quantize_value(xr[k], s);
  }
}

// Per column of w[K, N] (row stride ldw >= N; the [in, out] layout of a float Linear kernel):
// scale[n] from the max over k of |w[k, n]|, and the transposed int8 matrix q[N, K] (row
// stride ldq >= K): q[n, k] = quantize(w[k, n]). Bitwise the same as quantize_rows_absmax
// on the transpose of w. Never throws.
inline void quantize_columns_absmax(std::int64_t K, std::int64_t N, const float* w, std::int64_t ldw, std::int8_t* q,
                                    std::int64_t ldq, float* scale) noexcept {
  // Strips of columns, so that the maxima are taken over whole rows of w (sequential reads).
  constexpr std::int64_t kStrip = 64;
  std::uint32_t amax[kStrip];
  for (std::int64_t n0 = 0; n0 < N; n0 += kStrip) {
    const std::int64_t nb = std::min(kStrip, N - n0);
    std::fill(amax, amax + nb, 0u);
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t j = 0; j < nb; ++j) amax[j] = std::max(amax[j], detail::i8::abs_bits(w[k * ldw + n0 + j]));
    for (std::int64_t j = 0; j < nb; ++j) scale[n0 + j] = detail::i8::absmax_scale(amax[j]);
    for (std::int64_t k = 0; k < K; ++k)
      for (std::int64_t j = 0; j < nb; ++j)
        q[(n0 + j) * ldq + k] = detail::i8::quantize_value(w[k * ldw + n0 + j], scale[n0 + j]);
  }
}

// w[n, k] = float(q[n, k]) * scale[n] for q[N, K] (row stride ldq >= K) into w (row stride
// ldw >= K): one exact conversion and one rounding per element. Never throws.
inline void dequantize_rows(std::int64_t N, std::int64_t K, const std::int8_t* q, std::int64_t ldq, const float* scale,
                            float* w, std::int64_t ldw) noexcept {
  for (std::int64_t n = 0; n < N; ++n) {
    const std::int8_t* qr = q + n * ldq;
    float* wr = w + n * ldw;
    const float s = scale[n];
    for (std::int64_t k = 0; k < K; ++k) wr[k] = static_cast<float>(qr[k]) * s;
  }
}

}  // namespace nnx::kernels::ref
