// nnx/kernels/isa.hpp — the instruction-set tiers of the kernels, which one this process runs,
// and the table that maps a kernel to its best version.
//
// Tiers, lowest first:
//   ref     portable C++ (nnx/kernels/ref/): the fallback on every CPU and the tests' oracle
//   avx2    AVX2 + FMA + F16C (nnx/kernels/avx2/): Zen 3, Haswell and later
//   avx512  AVX-512 F/BW/VL/DQ + VNNI (nnx/kernels/avx512/): Zen 4/5, Ice Lake and later;
//           AVX512_BF16 is used inside this tier where cpu_has_avx512_bf16() says so, and
//           AMX-INT8 tiles (W8A8 products) where cpu_has_amx_int8() does
//
// The tier is chosen once per process, at the first kernel call: the best one the CPU (and
// OS) supports, or the one NNX_ISA=ref|avx2|avx512 names (a tier the CPU lacks gives the best
// one below it; isa_name() always names the tier really used). Every tier's code is compiled
// into every x86-64 build with per-function target attributes, so no -mavx2/-mavx512f is
// needed and one binary runs on every CPU.
//
// Each kernel has a TierTable: its entry point per tier, nullptr where a tier has none, in
// which case the next tier down runs (ggml's scheme). Entry points in nnx/kernels/*.hpp do
//
//   select(kGemmF32, active_isa())(M, N, K, ...);
//
// so adding a tier means adding a column to the tables, not editing call sites.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif
#if defined(__x86_64__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

// NNX_KERNELS_X86_DISPATCH is 1 where the x86 tiers are compiled: x86-64 with GCC or Clang,
// which have the target attribute and __builtin_cpu_supports. Elsewhere it is 0 and only the
// ref tier exists.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NNX_KERNELS_X86_DISPATCH 1
// Compile one function for a tier whatever the flags of the translation unit.
#define NNX_TARGET_AVX2_FMA __attribute__((target("avx2,fma,f16c")))
#define NNX_TARGET_AVX512 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")))
#define NNX_TARGET_AVX512_BF16 \
  __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx512bf16")))
// A tier's entry for a TierTable: the function where the tier is compiled, else nullptr.
#define NNX_X86_ENTRY(fn) (&(fn))
#else
#define NNX_KERNELS_X86_DISPATCH 0
#define NNX_X86_ENTRY(fn) nullptr
#endif

namespace nnx::kernels {

enum class Isa : int { ref = 0, avx2 = 1, avx512 = 2 };
inline constexpr Isa kAllIsas[] = {Isa::ref, Isa::avx2, Isa::avx512};

constexpr std::string_view isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    default:
      return "ref";
  }
}

// Parses "ref", "avx2" or "avx512"; false for anything else.
constexpr bool parse_isa(std::string_view name, Isa& out) noexcept {
  for (Isa isa : kAllIsas)
    if (name == isa_name(isa)) {
      out = isa;
      return true;
    }
  return false;
}

// True when this CPU and its OS can run `isa` (libgcc's checks include the OS having enabled
// the YMM/ZMM state) and this build compiled it. Detected once per process.
inline bool isa_supported(Isa isa) noexcept {
#if NNX_KERNELS_X86_DISPATCH
  static const bool avx2 = [] {
    __builtin_cpu_init();  // needed if the first call happens during static initialization
    // F16C from CPUID leaf 1 (ECX bit 29): clang 14's __builtin_cpu_supports does not know "f16c".
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    const bool f16c = __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
  }();
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                             __builtin_cpu_supports("avx512vnni");
  switch (isa) {
    case Isa::avx2:
      return avx2;
    case Isa::avx512:
      return avx512;
    default:
      return true;
  }
#else
  return isa == Isa::ref;
#endif
}

// AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16) on top of the avx512 tier.
inline bool cpu_has_avx512_bf16() noexcept {
#if NNX_KERNELS_X86_DISPATCH
  static const bool has = isa_supported(Isa::avx512) && __builtin_cpu_supports("avx512bf16");
  return has;
#else
  return false;
#endif
}

// AMX tiles with int8 products (AMX-TILE + AMX-INT8, CPUID leaf 7 EDX bits 24-25) on top of
// the avx512 tier, and Linux's permission to use them: the tile data state is enabled per
// process on request (arch_prctl ARCH_REQ_XCOMP_PERM, kernel 5.16+), made here once.
// NNX_AMX=0 turns them off (the VNNI tiles give the same bits), to compare the two.
inline bool cpu_has_amx_int8() noexcept {
#if NNX_KERNELS_X86_DISPATCH && defined(__linux__)
  static const bool has = [] {
    const char* env = std::getenv("NNX_AMX");
    if (env && std::string_view(env) == "0") return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!isa_supported(Isa::avx512) || !__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    if ((edx & (1u << 24)) == 0 || (edx & (1u << 25)) == 0) return false;
    constexpr long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return has;
#else
  return false;
#endif
}

// The CPU's vendor (CPUID leaf 0). Tiers never depend on it; it only chooses between kernels
// that give the same bits where the vendors' cores rank them differently (gemm_i8.hpp's W8A8
// entry, avx2/gemm.hpp's row_stream_max_columns).
enum class CpuVendor : int { other = 0, intel = 1, amd = 2 };

inline CpuVendor cpu_vendor() noexcept {
#if NNX_KERNELS_X86_DISPATCH
  static const CpuVendor vendor = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return CpuVendor::other;
    // The 12-byte name is EBX, EDX, ECX: "GenuineIntel" or "AuthenticAMD".
    if (ebx == 0x756e6547u && edx == 0x49656e69u && ecx == 0x6c65746eu) return CpuVendor::intel;
    if (ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u) return CpuVendor::amd;
    return CpuVendor::other;
  }();
  return vendor;
#else
  return CpuVendor::other;
#endif
}

// The best tier at or below `wanted` that this CPU supports.
inline Isa best_isa_up_to(Isa wanted) noexcept {
  for (int i = static_cast<int>(wanted); i > 0; --i)
    if (isa_supported(static_cast<Isa>(i))) return static_cast<Isa>(i);
  return Isa::ref;
}

inline Isa best_isa() noexcept { return best_isa_up_to(Isa::avx512); }

namespace detail {

// NNX_ISA read once. Kernels cannot throw, so a value that names no tier is reported on
// stderr (once) and ignored.
inline Isa isa_from_environment() noexcept {
  const char* s = std::getenv("NNX_ISA");
  if (!s || !*s) return best_isa();
  Isa wanted = Isa::ref;
  if (!parse_isa(s, wanted)) {
    std::fprintf(stderr, "nnxcpp: ignoring NNX_ISA=%s (expected ref, avx2 or avx512)\n", s);
    return best_isa();
  }
  return best_isa_up_to(wanted);
}

}  // namespace detail

// The tier the kernels run in this process: fixed at the first call, so results never change
// between calls.
inline Isa active_isa() noexcept {
  static const Isa isa = detail::isa_from_environment();
  return isa;
}

// The name of the tier in use ("ref", "avx2" or "avx512").
inline std::string_view isa_name() noexcept { return isa_name(active_isa()); }

// One kernel's entry points per tier; nullptr where a tier has no version of its own.
template <class Fn>
struct TierTable {
  Fn ref;
  Fn avx2 = nullptr;
  Fn avx512 = nullptr;
};

// The entry for `isa`, or for the nearest tier below it that has one.
template <class Fn>
constexpr Fn select(const TierTable<Fn>& table, Isa isa) noexcept {
  if (isa == Isa::avx512 && table.avx512) return table.avx512;
  if (isa >= Isa::avx2 && table.avx2) return table.avx2;
  return table.ref;
}

// The tier's own entry (nullptr where it has none), for tests and benchmarks that run every
// tier the CPU has side by side.
template <class Fn>
constexpr Fn tier_entry(const TierTable<Fn>& table, Isa isa) noexcept {
  return isa == Isa::avx512 ? table.avx512 : isa == Isa::avx2 ? table.avx2 : table.ref;
}

}  // namespace nnx::kernels
