// nnx/core/dtype.hpp — element types (DType), their names, the 16-bit float storage types
// bf16 and f16, and bit-exact conversions between all of them.
//
// A Tensor stores raw bytes plus a DType; this header says how big an element is, how it is
// spelled (in nnxcpp and in safetensors headers), and how to turn n elements of one dtype
// into another:
//
//   std::vector<nnx::bf16> w(n);
//   nnx::convert(src_f32, nnx::DType::f32, w.data(), nnx::DType::bf16, n);
//   float x = nnx::to_f32(w[0]);
//   static_assert(nnx::dtype_of<nnx::bf16> == nnx::DType::bf16);
//
// The scalar conversions here are the portable reference: round to nearest, ties to even;
// NaN stays NaN with its sign; overflow goes to infinity; subnormals are handled in both
// directions. The kernels/ layer adds F16C paths and tests them against these, bit for bit.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>

#include "nnx/core/error.hpp"

namespace nnx {

// The element type of a tensor. The underlying values are not stored anywhere (files use
// the names below), but keep the order: all_dtypes and tests iterate in it.
enum class DType : std::uint8_t { f32, bf16, f16, i8, u8, i32, u32, i64, u64 };

inline constexpr DType all_dtypes[] = {DType::f32, DType::bf16, DType::f16,
                                       DType::i8,  DType::u8,   DType::i32,
                                       DType::u32, DType::i64,  DType::u64};

// Bytes per element.
constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i8: return 1;
    case DType::u8: return 1;
    case DType::i32: return 4;
    case DType::u32: return 4;
    case DType::i64: return 8;
    case DType::u64: return 8;
  }
  return 0;  // only reachable with a value cast from outside the enum
}

// The nnxcpp spelling ("f32", "bf16", ...), used in GraphDef JSON and messages.
constexpr std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::u32: return "u32";
    case DType::i64: return "i64";
    case DType::u64: return "u64";
  }
  return "?";
}

// Inverse of dtype_name; nullopt for any other string (case-sensitive).
constexpr std::optional<DType> dtype_from_name(std::string_view name) {
  for (DType t : all_dtypes) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

// The spelling in a safetensors header ("F32", "BF16", ...).
constexpr std::string_view safetensors_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i8: return "I8";
    case DType::u8: return "U8";
    case DType::i32: return "I32";
    case DType::u32: return "U32";
    case DType::i64: return "I64";
    case DType::u64: return "U64";
  }
  return "?";
}

// Inverse of safetensors_dtype_name; nullopt for dtypes nnxcpp does not hold (F64, BOOL, ...),
// so the reader can name the tensor and the dtype in its error.
constexpr std::optional<DType> dtype_from_safetensors_name(std::string_view name) {
  for (DType t : all_dtypes) {
    if (safetensors_dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

// True for f32, bf16 and f16.
constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::bf16 || t == DType::f16;
}

// Storage types for the 16-bit floats: just the bits, so that they are trivially copyable
// and can be memcpy'd to and from files. Arithmetic goes through to_f32 on purpose: an
// implicit conversion would hide a rounding at every operation.
struct bf16 {
  std::uint16_t bits;
  friend bool operator==(bf16, bf16) = default;  // bitwise: NaN == NaN, +0 != -0
};
struct f16 {
  std::uint16_t bits;
  friend bool operator==(f16, f16) = default;  // bitwise: NaN == NaN, +0 != -0
};
static_assert(sizeof(bf16) == 2 && alignof(bf16) == 2 && std::is_trivially_copyable_v<bf16>);
static_assert(sizeof(f16) == 2 && alignof(f16) == 2 && std::is_trivially_copyable_v<f16>);

namespace detail {

template <class T>
inline constexpr bool always_false = false;

template <class T>
struct dtype_of_impl {
  static_assert(always_false<T>,
                "nnx::dtype_of<T>: T is not an nnx element type; use one of float, nnx::bf16, "
                "nnx::f16, std::int8_t, std::uint8_t, std::int32_t, std::uint32_t, std::int64_t, "
                "std::uint64_t (without const)");
};
template <DType D>
struct dtype_constant {
  static constexpr DType value = D;
};
template <> struct dtype_of_impl<float> : dtype_constant<DType::f32> {};
template <> struct dtype_of_impl<nnx::bf16> : dtype_constant<DType::bf16> {};
template <> struct dtype_of_impl<nnx::f16> : dtype_constant<DType::f16> {};
template <> struct dtype_of_impl<std::int8_t> : dtype_constant<DType::i8> {};
template <> struct dtype_of_impl<std::uint8_t> : dtype_constant<DType::u8> {};
template <> struct dtype_of_impl<std::int32_t> : dtype_constant<DType::i32> {};
template <> struct dtype_of_impl<std::uint32_t> : dtype_constant<DType::u32> {};
template <> struct dtype_of_impl<std::int64_t> : dtype_constant<DType::i64> {};
template <> struct dtype_of_impl<std::uint64_t> : dtype_constant<DType::u64> {};

}  // namespace detail

// True for exactly the nine element types (cv-qualified types are not element types).
template <class T>
inline constexpr bool is_dtype_type =
    std::is_same_v<T, float> || std::is_same_v<T, bf16> || std::is_same_v<T, f16> ||
    std::is_same_v<T, std::int8_t> || std::is_same_v<T, std::uint8_t> ||
    std::is_same_v<T, std::int32_t> || std::is_same_v<T, std::uint32_t> ||
    std::is_same_v<T, std::int64_t> || std::is_same_v<T, std::uint64_t>;

// The DType of a C++ element type; any other type is a compile error that lists the nine.
template <class T>
inline constexpr DType dtype_of = detail::dtype_of_impl<T>::value;

static_assert(sizeof(float) == 4 && std::numeric_limits<float>::is_iec559,
              "nnxcpp needs IEEE-754 binary32 float");

// --- scalar conversions ---------------------------------------------------------------------
//
// All of these work on bit patterns with integer arithmetic, so they give the same bits on
// every platform whatever the FPU's rounding mode or flush-to-zero flags, and they are
// constexpr.

// f32 -> bf16 bits, round to nearest even. bf16 is the top half of an f32, so rounding is
// "add 0x7fff plus the lowest kept bit, drop 16 bits"; a carry out of the mantissa bumps
// the exponent, which is also how the largest finite values overflow to infinity.
constexpr std::uint16_t f32_to_bf16_bits(float x) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    // NaN: the payload may live only in the low 16 bits, so truncating could make it inf.
    // Setting the quiet bit keeps it NaN (and quiet), with its sign.
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  }
  const std::uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(rounded >> 16);
}

// bf16 bits -> f32: exact, a shift. NaNs keep their payload unchanged (a signalling bf16 NaN
// stays signalling): this is what every SIMD widening does, so the kernels agree bit for bit.
constexpr float bf16_bits_to_f32(std::uint16_t h) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16);
}

// f32 -> f16 bits (1 sign, 5 exponent, 10 mantissa bits), round to nearest even, including
// into the f16 subnormal range; |x| >= 65520 becomes infinity; NaN becomes a quiet NaN with
// its sign and the top of its payload (as F16C's vcvtps2ph does).
constexpr std::uint16_t f32_to_f16_bits(float x) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(x);
  const auto sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7fffffffu;
  if (a >= 0x7f800000u) {
    if (a == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x03ffu));
  }
  const std::uint32_t exp = a >> 23;  // biased by 127
  const std::uint32_t mant = a & 0x007fffffu;
  // f16 exponent bias is 15, so f16 biased exponent = exp - 112.
  if (exp >= 143) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 2^16: overflow
  if (exp >= 113) {
    // Normal in f16. Keep 10 of the 23 mantissa bits and round on the 13 dropped ones. A
    // carry from the mantissa into the exponent is the right result (up to inf at 65520).
    std::uint32_t v = ((exp - 112) << 10) | (mant >> 13);
    const std::uint32_t rem = mant & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (v & 1u))) ++v;
    return static_cast<std::uint16_t>(sign | v);
  }
  // Subnormal (or zero) in f16: the result is a count of 2^-24 units. With the implicit
  // bit, x = sig * 2^(exp - 150) = (sig >> shift) units + a remainder, shift = 126 - exp.
  // shift >= 25 means x < 2^-25, below half the smallest subnormal: it rounds to zero
  // (x == 2^-25 exactly, shift 24, is a tie and goes to the even 0 below).
  if (exp < 102) return sign;
  const std::uint32_t sig = mant | 0x00800000u;
  const std::uint32_t shift = 126 - exp;  // 14..24
  std::uint32_t v = sig >> shift;
  const std::uint32_t rem = sig & ((1u << shift) - 1u);
  const std::uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (v & 1u))) ++v;  // 0x3ff + 1 = 0x400: smallest normal
  return static_cast<std::uint16_t>(sign | v);
}

// f16 bits -> f32: exact. NaNs come out quiet, with sign and payload (as F16C's vcvtph2ps).
constexpr float f16_bits_to_f32(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  const std::uint32_t mant = h & 0x03ffu;
  std::uint32_t bits = 0;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13) | (mant != 0 ? 0x00400000u : 0u);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // signed zero
  } else {
    // Subnormal f16 = mant * 2^-24, a normal f32: its leading one at bit p gives exponent
    // p - 24, and the bits below it become the f32 mantissa.
    const int p = 31 - std::countl_zero(mant);  // 0..9
    bits = sign | (static_cast<std::uint32_t>(p + 103) << 23) |
           ((mant << (23 - p)) & 0x007fffffu);
  }
  return std::bit_cast<float>(bits);
}

constexpr bf16 to_bf16(float x) noexcept { return bf16{f32_to_bf16_bits(x)}; }
constexpr f16 to_f16(float x) noexcept { return f16{f32_to_f16_bits(x)}; }
constexpr float to_f32(bf16 x) noexcept { return bf16_bits_to_f32(x.bits); }
constexpr float to_f32(f16 x) noexcept { return f16_bits_to_f32(x.bits); }

// --- bulk conversion ------------------------------------------------------------------------

namespace detail {

template <class T>
struct type_tag {
  using type = T;
};

// Calls f(type_tag<T>{}) with T the element type of t.
template <class F>
constexpr decltype(auto) visit_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: return f(type_tag<float>{});
    case DType::bf16: return f(type_tag<nnx::bf16>{});
    case DType::f16: return f(type_tag<nnx::f16>{});
    case DType::i8: return f(type_tag<std::int8_t>{});
    case DType::u8: return f(type_tag<std::uint8_t>{});
    case DType::i32: return f(type_tag<std::int32_t>{});
    case DType::u32: return f(type_tag<std::uint32_t>{});
    case DType::i64: return f(type_tag<std::int64_t>{});
    case DType::u64: return f(type_tag<std::uint64_t>{});
  }
  throw DTypeError("invalid DType value " + std::to_string(static_cast<int>(t)));
}

template <class T>
inline constexpr bool is_float_storage =
    std::is_same_v<T, float> || std::is_same_v<T, nnx::bf16> || std::is_same_v<T, nnx::f16>;

// Significant bits of each float storage type (with the implicit one).
template <class T>
inline constexpr int float_precision = std::is_same_v<T, float> ? 24
                                       : std::is_same_v<T, nnx::bf16> ? 8
                                                                      : 11;

constexpr float load_as_f32(float x) noexcept { return x; }
constexpr float load_as_f32(nnx::bf16 x) noexcept { return to_f32(x); }
constexpr float load_as_f32(nnx::f16 x) noexcept { return to_f32(x); }

template <class D>
constexpr D store_from_f32(float x) noexcept {
  if constexpr (std::is_same_v<D, float>) {
    return x;
  } else if constexpr (std::is_same_v<D, nnx::bf16>) {
    return to_bf16(x);
  } else {
    return to_f16(x);
  }
}

// An integer rounded once, to nearest even, to P significant bits, returned as the float
// that holds that value exactly (P <= 24 and |value| <= 2^64, both fit an f32). Going
// through double instead would round twice for 64-bit integers (to 53 bits, then to P), and
// through f32 would round twice for bf16 and f16 targets; rounding once is what "convert
// the value" means.
template <int P>
constexpr float round_integer_to_float(bool negative, std::uint64_t magnitude) noexcept {
  static_assert(P >= 2 && P <= 24);
  const int width = 64 - std::countl_zero(magnitude);
  float r = 0.0f;
  if (width <= P) {
    r = static_cast<float>(magnitude);  // exact: fewer than 2^24
  } else {
    const int shift = width - P;
    std::uint64_t kept = magnitude >> shift;
    const std::uint64_t rem = magnitude & ((std::uint64_t{1} << shift) - 1u);
    const std::uint64_t half = std::uint64_t{1} << (shift - 1);
    if (rem > half || (rem == half && (kept & 1u))) ++kept;  // kept may become 2^P: fine
    const float scale = std::bit_cast<float>(static_cast<std::uint32_t>(127 + shift) << 23);
    r = static_cast<float>(kept) * scale;  // exact: a P+1-bit integer times a power of two
  }
  return negative ? -r : r;
}

template <class S, class D>
constexpr D convert_one(S s) noexcept {
  if constexpr (is_float_storage<S> && is_float_storage<D>) {
    return store_from_f32<D>(load_as_f32(s));
  } else if constexpr (!is_float_storage<S> && !is_float_storage<D>) {
    return static_cast<D>(s);  // modular, as C++20 defines integer conversions
  } else if constexpr (!is_float_storage<S> && is_float_storage<D>) {
    bool negative = false;
    if constexpr (std::is_signed_v<S>) negative = s < 0;
    // Unsigned negation gives |s| even for the most negative value.
    const std::uint64_t magnitude = negative ? std::uint64_t{0} - static_cast<std::uint64_t>(s)
                                             : static_cast<std::uint64_t>(s);
    return store_from_f32<D>(round_integer_to_float<float_precision<D>>(negative, magnitude));
  } else {
    static_assert(always_false<S>, "float -> int conversion is rejected before dispatch");
  }
}

// memcpy per element because src and dst may be unaligned (e.g. inside an mmap'd file);
// compilers turn fixed-size memcpy into plain loads and stores.
template <class S, class D>
void convert_n(const unsigned char* src, unsigned char* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    S s;
    std::memcpy(&s, src + i * sizeof(S), sizeof(S));
    const D d = convert_one<S, D>(s);
    std::memcpy(dst + i * sizeof(D), &d, sizeof(D));
  }
}

}  // namespace detail

// Converts n elements from src (of src_dtype) into dst (of dst_dtype). src and dst must not
// overlap; neither needs to be aligned. n == 0 touches no memory.
//   float -> float: through f32 (exact widening, one round-to-nearest-even narrowing);
//                   same dtype is a plain copy of the bits.
//   int -> int:     static_cast of the value, wrapping modulo 2^bits as C++ does.
//   int -> float:   the integer's value rounded once to the target (nearest, ties to even;
//                   f16 gives inf from 65520 up).
//   float -> int:   throws DTypeError — truncation would silently lose data; quantize.
// Throws DTypeError for float -> int, or for a DType value outside the enum; in both cases
// before writing anything.
inline void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype,
                    std::size_t n) {
  for (DType t : {src_dtype, dst_dtype}) {
    if (dtype_size(t) == 0) {
      throw DTypeError("convert: invalid DType value " + std::to_string(static_cast<int>(t)));
    }
  }
  if (is_floating(src_dtype) && !is_floating(dst_dtype)) {
    throw DTypeError("convert: " + std::string(dtype_name(src_dtype)) + " -> " +
                     std::string(dtype_name(dst_dtype)) +
                     " is not defined; quantize instead");
  }
  if (src_dtype == dst_dtype) {
    if (n != 0) std::memcpy(dst, src, n * dtype_size(src_dtype));  // n == 0 may have nulls
    return;
  }
  const auto* s = static_cast<const unsigned char*>(src);
  auto* d = static_cast<unsigned char*>(dst);
  detail::visit_dtype(src_dtype, [&](auto src_tag) {
    using S = typename decltype(src_tag)::type;
    detail::visit_dtype(dst_dtype, [&](auto dst_tag) {
      using D = typename decltype(dst_tag)::type;
      if constexpr (!(detail::is_float_storage<S> && !detail::is_float_storage<D>)) {
        detail::convert_n<S, D>(s, d, n);
      }
    });
  });
}

}  // namespace nnx
