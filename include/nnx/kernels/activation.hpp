// nnx/kernels/activation.hpp — elementwise activations on raw buffers: GELU (tanh
// approximation, GPT-2's MLP), SiLU, and SwiGLU (Llama's MLP), in the best tier the CPU has
// (nnx/kernels/isa.hpp).
//
//   nnx::kernels::gelu_tanh(h, h, T * 4 * C);          // in place
//   nnx::kernels::swiglu(gate, up, h, T * F);          // h = silu(gate) * up
//
// ref (nnx/kernels/ref/activation.hpp) states formulas and error bounds; avx2
// (nnx/kernels/avx2/activation.hpp) keeps them within 4 u more; avx512 runs avx2's.
// Elementwise, so every element's result is independent of the others and of how the range
// is split between threads.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/activation.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/activation.hpp"

namespace nnx::kernels {

using UnaryActivationFn = void (*)(const float* x, float* out, std::int64_t n) noexcept;
using SwigluFn = void (*)(const float* gate, const float* up, float* out, std::int64_t n) noexcept;

inline constexpr TierTable<UnaryActivationFn> kGeluTanh{&ref::gelu_tanh, NNX_X86_ENTRY(avx2::gelu_tanh)};
inline constexpr TierTable<UnaryActivationFn> kSilu{&ref::silu, NNX_X86_ENTRY(avx2::silu)};
inline constexpr TierTable<SwigluFn> kSwiglu{&ref::swiglu, NNX_X86_ENTRY(avx2::swiglu)};

using GeluTanhBackwardFn = void (*)(const float* x, const float* dy, float* dx, std::int64_t n) noexcept;
using SwigluBackwardFn = void (*)(const float* gate, const float* up, const float* dy, float* dgate, float* dup,
                                  std::int64_t n) noexcept;
inline constexpr TierTable<GeluTanhBackwardFn> kGeluTanhBackward{&ref::gelu_tanh_backward,
                                                                 NNX_X86_ENTRY(avx2::gelu_tanh_backward)};
inline constexpr TierTable<SwigluBackwardFn> kSwigluBackward{&ref::swiglu_backward,
                                                             NNX_X86_ENTRY(avx2::swiglu_backward)};

namespace detail {
// Elements per block when threads split an activation (a whole number of any tier's vectors).
inline constexpr std::int64_t kActivationBlock = 1024;
// Work per element, in multiply-add-like steps (an exp and a division).
inline constexpr double kActivationWork = 24.0;
}  // namespace detail

// out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))) elementwise; out may be x.
inline void gelu_tanh(const float* x, float* out, std::int64_t n) noexcept {
  const UnaryActivationFn f = select(kGeluTanh, active_isa());
  parallel_blocks(n, detail::kActivationBlock, detail::kActivationWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept { f(x + i0, out + i0, i1 - i0); });
}

// out = x * sigmoid(x) elementwise; out may be x.
inline void silu(const float* x, float* out, std::int64_t n) noexcept {
  const UnaryActivationFn f = select(kSilu, active_isa());
  parallel_blocks(n, detail::kActivationBlock, detail::kActivationWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept { f(x + i0, out + i0, i1 - i0); });
}

// out = silu(gate) * up elementwise; out may be gate or up.
inline void swiglu(const float* gate, const float* up, float* out, std::int64_t n) noexcept {
  const SwigluFn f = select(kSwiglu, active_isa());
  parallel_blocks(n, detail::kActivationBlock, detail::kActivationWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept { f(gate + i0, up + i0, out + i0, i1 - i0); });
}

// Backward of gelu_tanh: dx = dy * gelu_tanh'(x) elementwise; dx may be dy.
inline void gelu_tanh_backward(const float* x, const float* dy, float* dx, std::int64_t n) noexcept {
  const GeluTanhBackwardFn f = select(kGeluTanhBackward, active_isa());
  parallel_blocks(n, detail::kActivationBlock, detail::kActivationWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept { f(x + i0, dy + i0, dx + i0, i1 - i0); });
}

// Backward of swiglu: dgate = dy * up * silu'(gate), dup = dy * silu(gate); dgate may be gate
// or dy, dup may be up.
inline void swiglu_backward(const float* gate, const float* up, const float* dy, float* dgate, float* dup,
                            std::int64_t n) noexcept {
  const SwigluBackwardFn f = select(kSwigluBackward, active_isa());
  parallel_blocks(n, detail::kActivationBlock, 2.0 * detail::kActivationWork * double(n),
                  [&](std::int64_t i0, std::int64_t i1) noexcept {
                    f(gate + i0, up + i0, dy + i0, dgate + i0, dup + i0, i1 - i0);
                  });
}

}  // namespace nnx::kernels
