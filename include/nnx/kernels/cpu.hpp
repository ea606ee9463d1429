// nnx/kernels/cpu.hpp — which instruction set the kernels run on, detected once at run time.
//
// Every kernel has a portable version (nnx/kernels/ref/) and some have an AVX2+FMA version
// (nnx/kernels/avx2/). The public entry points in nnx/kernels/*.hpp pick one per call with
// active_isa(), so a program built without -mavx2 still runs the AVX2 code on a CPU that has
// it, and the same binary still runs on one that does not:
//
//   if (nnx::kernels::active_isa() == nnx::kernels::Isa::avx2) { ... }
//   std::cout << nnx::kernels::isa_name(nnx::kernels::active_isa());   // "avx2" or "portable"
//
// Results are deterministic for a given ISA: the portable and AVX2 paths agree within the
// error bounds stated per kernel, not bit for bit.
#pragma once

#include <string_view>

// NNX_KERNELS_X86_DISPATCH is 1 where the AVX2 kernels are compiled: x86-64 with GCC or
// Clang, which have the target attribute and __builtin_cpu_supports. Elsewhere it is 0 and
// only the portable kernels exist.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NNX_KERNELS_X86_DISPATCH 1
// Compiles one function for AVX2+FMA whatever the flags of the translation unit.
#define NNX_TARGET_AVX2_FMA __attribute__((target("avx2,fma")))
#else
#define NNX_KERNELS_X86_DISPATCH 0
#endif

namespace nnx::kernels {

enum class Isa { portable, avx2 };

constexpr std::string_view isa_name(Isa isa) noexcept { return isa == Isa::avx2 ? "avx2" : "portable"; }

// True when the CPU and the OS support AVX2 and FMA (libgcc's check includes the OS having
// enabled the YMM state). Detected once per process.
inline bool cpu_has_avx2_fma() noexcept {
#if NNX_KERNELS_X86_DISPATCH
  static const bool has = [] {
    __builtin_cpu_init();  // needed if the first call happens during static initialization
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
#else
  return false;
#endif
}

// The instruction set the dispatching kernels use in this process (fixed for its lifetime,
// so results never change between calls).
inline Isa active_isa() noexcept { return cpu_has_avx2_fma() ? Isa::avx2 : Isa::portable; }

}  // namespace nnx::kernels
