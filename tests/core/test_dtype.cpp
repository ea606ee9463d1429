// Tests for nnx/core/dtype.hpp: names and sizes, known bit patterns of the bf16/f16
// conversions, exhaustive round trips over all 65536 16-bit patterns, an independent
// reference for f32 -> f16 / f32 -> bf16 rounding, and convert() for every dtype pair.
#include "nnx/core/dtype.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace {

using nnx::DType;

float f32_from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }
std::uint32_t bits_of(float x) { return std::bit_cast<std::uint32_t>(x); }

bool is_f16_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }
bool is_bf16_nan(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0; }

// --- independent reference -----------------------------------------------------------------
//
// A 16-bit float format described only by its field widths. Values of every finite positive
// pattern are computed with ldexp from the definition (not from the header), and rounding is
// done by locating x between two adjacent representable values and comparing it with their
// midpoint. The midpoint of two values of an 11-bit (or 8-bit) format has at most 12 (9)
// significant bits, and every f32 is exact in double, so the comparison is exact.
struct Format16 {
  int exp_bits;
  int mant_bits;

  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  std::uint16_t inf_bits() const {
    return static_cast<std::uint16_t>(((1u << exp_bits) - 1u) << mant_bits);
  }
  std::uint16_t max_finite_bits() const { return static_cast<std::uint16_t>(inf_bits() - 1u); }

  double value(std::uint16_t pattern) const {  // finite non-negative patterns only
    const int e = pattern >> mant_bits;
    const int m = pattern & ((1 << mant_bits) - 1);
    if (e == 0) return std::ldexp(static_cast<double>(m), 1 - bias() - mant_bits);
    return std::ldexp(static_cast<double>((1 << mant_bits) + m), e - bias() - mant_bits);
  }
};

class Reference16 {
 public:
  explicit Reference16(Format16 f) : f_(f) {
    for (std::uint32_t p = 0; p <= f.max_finite_bits(); ++p) {
      values_.push_back(f.value(static_cast<std::uint16_t>(p)));
    }
    // The value one step above the largest finite one, had the exponent range continued:
    // IEEE rounds to infinity whatever would round to it (or beyond).
    overflow_ = std::ldexp(1.0, (1 << f.exp_bits) - 1 - f.bias());
  }

  // Nearest representable value to x (exactly, whatever x's precision), ties to the even
  // pattern; only for non-NaN x.
  std::uint16_t round(double x) const {
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    const double a = std::fabs(x);
    std::uint16_t r = 0;
    if (std::isinf(a)) {
      r = f_.inf_bits();
    } else if (a >= values_.back()) {
      const double mid = (values_.back() + overflow_) / 2;
      // A tie between max finite (odd mantissa, all ones) and 2^(emax+1) goes to the even
      // one, which is infinity.
      r = a < mid ? f_.max_finite_bits() : f_.inf_bits();
    } else {
      const auto it = std::upper_bound(values_.begin(), values_.end(), a);  // > a, exists
      const auto lo = static_cast<std::uint16_t>((it - values_.begin()) - 1);
      const auto hi = static_cast<std::uint16_t>(lo + 1);
      if (values_[lo] == a) {
        r = lo;
      } else {
        const double mid = (values_[lo] + values_[hi]) / 2;
        if (a < mid) r = lo;
        else if (a > mid) r = hi;
        else r = (lo & 1u) ? hi : lo;
      }
    }
    return static_cast<std::uint16_t>(sign | r);
  }

  double value(std::uint16_t pattern) const { return values_.at(pattern); }
  std::uint16_t max_finite_bits() const { return f_.max_finite_bits(); }

 private:
  Format16 f_;
  std::vector<double> values_;  // values_[p] = value of positive pattern p, increasing
  double overflow_ = 0;
};

const Reference16& f16_reference() {
  static const Reference16 r{Format16{5, 10}};
  return r;
}
const Reference16& bf16_reference() {
  static const Reference16 r{Format16{8, 7}};
  return r;
}

}  // namespace

// --- names, sizes, traits ------------------------------------------------------------------

TEST_CASE("dtype names and sizes", "[dtype]") {
  const std::array<const char*, 9> names = {"f32", "bf16", "f16", "i8", "u8",
                                            "i32", "u32",  "i64", "u64"};
  const std::array<const char*, 9> st_names = {"F32", "BF16", "F16", "I8", "U8",
                                               "I32", "U32",  "I64", "U64"};
  const std::array<std::size_t, 9> sizes = {4, 2, 2, 1, 1, 4, 4, 8, 8};
  REQUIRE(std::size(nnx::all_dtypes) == 9);
  for (std::size_t i = 0; i < 9; ++i) {
    const DType t = nnx::all_dtypes[i];
    CAPTURE(i);
    CHECK(static_cast<std::size_t>(t) == i);
    CHECK(nnx::dtype_name(t) == names[i]);
    CHECK(nnx::safetensors_dtype_name(t) == st_names[i]);
    CHECK(nnx::dtype_size(t) == sizes[i]);
    CHECK(nnx::dtype_from_name(nnx::dtype_name(t)) == t);
    CHECK(nnx::dtype_from_safetensors_name(nnx::safetensors_dtype_name(t)) == t);
    CHECK(nnx::is_floating(t) == (i < 3));
  }
  CHECK_FALSE(nnx::dtype_from_name("F32").has_value());
  CHECK_FALSE(nnx::dtype_from_name("float32").has_value());
  CHECK_FALSE(nnx::dtype_from_name("").has_value());
  CHECK_FALSE(nnx::dtype_from_safetensors_name("f32").has_value());
  CHECK_FALSE(nnx::dtype_from_safetensors_name("F64").has_value());
  CHECK_FALSE(nnx::dtype_from_safetensors_name("BOOL").has_value());

  STATIC_REQUIRE(nnx::dtype_size(DType::bf16) == 2);
  STATIC_REQUIRE(nnx::dtype_name(DType::u64) == "u64");
  STATIC_REQUIRE(nnx::safetensors_dtype_name(DType::bf16) == "BF16");
  STATIC_REQUIRE(nnx::is_floating(DType::f16) && !nnx::is_floating(DType::i8));
}

TEST_CASE("dtype_of and is_dtype_type", "[dtype]") {
  STATIC_REQUIRE(nnx::dtype_of<float> == DType::f32);
  STATIC_REQUIRE(nnx::dtype_of<nnx::bf16> == DType::bf16);
  STATIC_REQUIRE(nnx::dtype_of<nnx::f16> == DType::f16);
  STATIC_REQUIRE(nnx::dtype_of<std::int8_t> == DType::i8);
  STATIC_REQUIRE(nnx::dtype_of<std::uint8_t> == DType::u8);
  STATIC_REQUIRE(nnx::dtype_of<std::int32_t> == DType::i32);
  STATIC_REQUIRE(nnx::dtype_of<std::uint32_t> == DType::u32);
  STATIC_REQUIRE(nnx::dtype_of<std::int64_t> == DType::i64);
  STATIC_REQUIRE(nnx::dtype_of<std::uint64_t> == DType::u64);

  STATIC_REQUIRE(nnx::is_dtype_type<float>);
  STATIC_REQUIRE(nnx::is_dtype_type<nnx::bf16>);
  STATIC_REQUIRE(nnx::is_dtype_type<nnx::f16>);
  STATIC_REQUIRE(nnx::is_dtype_type<std::int8_t>);
  STATIC_REQUIRE(nnx::is_dtype_type<std::uint64_t>);
  STATIC_REQUIRE_FALSE(nnx::is_dtype_type<double>);
  STATIC_REQUIRE_FALSE(nnx::is_dtype_type<bool>);
  STATIC_REQUIRE_FALSE(nnx::is_dtype_type<char>);
  STATIC_REQUIRE_FALSE(nnx::is_dtype_type<std::int16_t>);
  STATIC_REQUIRE_FALSE(nnx::is_dtype_type<const float>);

  STATIC_REQUIRE(std::is_trivially_copyable_v<nnx::bf16> && sizeof(nnx::bf16) == 2);
  STATIC_REQUIRE(std::is_trivially_copyable_v<nnx::f16> && sizeof(nnx::f16) == 2);
  CHECK(nnx::bf16{0x3f80} == nnx::to_bf16(1.0f));
  CHECK(nnx::f16{0x3c00} == nnx::to_f16(1.0f));
  CHECK_FALSE(nnx::f16{0x0000} == nnx::f16{0x8000});  // bitwise equality
}

// --- bf16 ----------------------------------------------------------------------------------

TEST_CASE("f32 -> bf16 known bit patterns", "[dtype][bf16]") {
  STATIC_REQUIRE(nnx::f32_to_bf16_bits(1.0f) == 0x3f80);  // usable at compile time
  CHECK(nnx::f32_to_bf16_bits(1.0f) == 0x3f80);
  CHECK(nnx::f32_to_bf16_bits(-2.0f) == 0xc000);
  CHECK(nnx::f32_to_bf16_bits(0.0f) == 0x0000);
  CHECK(nnx::f32_to_bf16_bits(-0.0f) == 0x8000);

  // Ties go to the even mantissa; anything past the tie rounds up.
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x3f808000)) == 0x3f80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x3f818000)) == 0x3f82);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x3f808001)) == 0x3f81);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x3f807fff)) == 0x3f80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0xbf808000)) == 0xbf80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0xbf818000)) == 0xbf82);
  // Carry from the mantissa into the exponent.
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x3fffffff)) == 0x4000);

  // Infinities, and the largest finite values rounding to infinity.
  const float inf = std::numeric_limits<float>::infinity();
  CHECK(nnx::f32_to_bf16_bits(inf) == 0x7f80);
  CHECK(nnx::f32_to_bf16_bits(-inf) == 0xff80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x7f7fffff)) == 0x7f80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0xff7fffff)) == 0xff80);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x7f7f7fff)) == 0x7f7f);  // below the tie
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x7f7f8000)) == 0x7f80);  // tie -> even = inf

  // NaN stays NaN, quiet, with its sign, even when the payload is only in the low 16 bits.
  const std::uint16_t qnan = nnx::f32_to_bf16_bits(std::numeric_limits<float>::quiet_NaN());
  CHECK(is_bf16_nan(qnan));
  CHECK((qnan & 0x0040u) != 0);
  for (std::uint32_t nan : {0x7f800001u, 0x7f80ffffu, 0x7fc00000u, 0xff800001u, 0xffffffffu,
                            0x7f808000u}) {
    CAPTURE(nan);
    const std::uint16_t h = nnx::f32_to_bf16_bits(f32_from_bits(nan));
    CHECK(is_bf16_nan(h));
    CHECK((h & 0x0040u) != 0);
    CHECK((h & 0x8000u) == ((nan >> 16) & 0x8000u));
  }

  // f32 subnormals: the smallest bf16 subnormal is 2^-133 = f32 bits 0x00010000.
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00000001)) == 0x0000);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x80000001)) == 0x8000);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00008000)) == 0x0000);  // tie -> even 0
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00008001)) == 0x0001);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00018000)) == 0x0002);  // tie -> even 2
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00010000)) == 0x0001);
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x007fffff)) == 0x0080);  // up to min normal
  CHECK(nnx::f32_to_bf16_bits(f32_from_bits(0x00400000)) == 0x0040);
}

TEST_CASE("bf16 -> f32 known values", "[dtype][bf16]") {
  STATIC_REQUIRE(nnx::bf16_bits_to_f32(0x3f80) == 1.0f);
  CHECK(bits_of(nnx::bf16_bits_to_f32(0x3f80)) == 0x3f800000u);
  CHECK(bits_of(nnx::bf16_bits_to_f32(0x8000)) == 0x80000000u);
  CHECK(bits_of(nnx::bf16_bits_to_f32(0x7f80)) == 0x7f800000u);
  CHECK(bits_of(nnx::bf16_bits_to_f32(0xff80)) == 0xff800000u);
  CHECK(bits_of(nnx::bf16_bits_to_f32(0x0001)) == 0x00010000u);  // subnormal stays exact
  CHECK(std::isnan(nnx::bf16_bits_to_f32(0x7fc0)));
  CHECK(std::isnan(nnx::bf16_bits_to_f32(0xff81)));
  CHECK(nnx::to_f32(nnx::bf16{0xc040}) == -3.0f);
}

TEST_CASE("bf16: all 65536 patterns round-trip through f32", "[dtype][bf16]") {
  const Reference16& ref = bf16_reference();
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto h = static_cast<std::uint16_t>(p);
    const float x = nnx::bf16_bits_to_f32(h);
    if (is_bf16_nan(h)) {
      REQUIRE(std::isnan(x));
      REQUIRE(std::signbit(x) == ((h & 0x8000u) != 0));
      const std::uint16_t back = nnx::f32_to_bf16_bits(x);
      REQUIRE(is_bf16_nan(back));
      REQUIRE((back & 0x8000u) == (h & 0x8000u));
      continue;
    }
    const std::uint16_t mag = h & 0x7fffu;
    if (mag <= ref.max_finite_bits()) {  // value from the definition, not the header
      const double expect = (h & 0x8000u) ? -ref.value(mag) : ref.value(mag);
      REQUIRE(static_cast<double>(x) == expect);
    }
    REQUIRE(std::signbit(x) == ((h & 0x8000u) != 0));
    REQUIRE(nnx::f32_to_bf16_bits(x) == h);
  }
}

// --- f16 -----------------------------------------------------------------------------------

TEST_CASE("f32 -> f16 known bit patterns", "[dtype][f16]") {
  STATIC_REQUIRE(nnx::f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(nnx::f32_to_f16_bits(1.0f) == 0x3c00);
  CHECK(nnx::f32_to_f16_bits(-2.0f) == 0xc000);
  CHECK(nnx::f32_to_f16_bits(0.5f) == 0x3800);
  CHECK(nnx::f32_to_f16_bits(0.0f) == 0x0000);
  CHECK(nnx::f32_to_f16_bits(-0.0f) == 0x8000);

  // Top of the range and overflow.
  CHECK(nnx::f32_to_f16_bits(65504.0f) == 0x7bff);
  CHECK(nnx::f32_to_f16_bits(65519.99f) == 0x7bff);
  CHECK(nnx::f32_to_f16_bits(65520.0f) == 0x7c00);  // tie between 65504 and 2^16 -> inf
  CHECK(nnx::f32_to_f16_bits(-65520.0f) == 0xfc00);
  CHECK(nnx::f32_to_f16_bits(65536.0f) == 0x7c00);
  CHECK(nnx::f32_to_f16_bits(1e10f) == 0x7c00);
  CHECK(nnx::f32_to_f16_bits(f32_from_bits(0x7f7fffff)) == 0x7c00);
  CHECK(nnx::f32_to_f16_bits(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(nnx::f32_to_f16_bits(-std::numeric_limits<float>::infinity()) == 0xfc00);

  // Normal/subnormal boundary and the subnormal range.
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1.0f, -14)) == 0x0400);  // smallest normal
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1.0f, -24)) == 0x0001);  // smallest subnormal
  CHECK(nnx::f32_to_f16_bits(-std::ldexp(1.0f, -24)) == 0x8001);
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1023.0f, -24)) == 0x03ff);  // largest subnormal
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1023.5f, -24)) == 0x0400);  // tie -> even (normal)
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1022.5f, -24)) == 0x03fe);  // tie -> even
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1.5f, -24)) == 0x0002);     // tie -> even
  CHECK(nnx::f32_to_f16_bits(std::ldexp(2.5f, -24)) == 0x0002);     // tie -> even
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1.0f, -25)) == 0x0000);     // tie -> even 0
  CHECK(nnx::f32_to_f16_bits(-std::ldexp(1.0f, -25)) == 0x8000);
  CHECK(nnx::f32_to_f16_bits(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(nnx::f32_to_f16_bits(std::nextafter(std::ldexp(1.0f, -25), 0.0f)) == 0x0000);
  CHECK(nnx::f32_to_f16_bits(std::ldexp(1.0f, -26)) == 0x0000);
  CHECK(nnx::f32_to_f16_bits(f32_from_bits(0x00000001)) == 0x0000);  // f32 subnormal
  CHECK(nnx::f32_to_f16_bits(f32_from_bits(0x807fffff)) == 0x8000);

  // Ties among normals: 1 + 2^-11 is halfway between 0x3c00 and 0x3c01.
  CHECK(nnx::f32_to_f16_bits(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(nnx::f32_to_f16_bits(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(nnx::f32_to_f16_bits(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)) == 0x3c01);
  // 1 - 2^-12 is halfway between 0x3bff (odd) and 1.0: the even choice carries into the
  // exponent.
  CHECK(nnx::f32_to_f16_bits(std::ldexp(2047.0f, -11)) == 0x3bff);  // exact
  CHECK(nnx::f32_to_f16_bits(std::ldexp(4095.0f, -12)) == 0x3c00);
  CHECK(nnx::f32_to_f16_bits(std::nextafter(std::ldexp(4095.0f, -12), 0.0f)) == 0x3bff);

  // NaN: stays NaN, quiet, sign kept, even if the payload is only in bits f16 drops.
  for (std::uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7f801fffu, 0xff800001u, 0xffffffffu}) {
    CAPTURE(nan);
    const std::uint16_t h = nnx::f32_to_f16_bits(f32_from_bits(nan));
    CHECK(is_f16_nan(h));
    CHECK((h & 0x0200u) != 0);
    CHECK((h & 0x8000u) == ((nan >> 16) & 0x8000u));
  }
}

TEST_CASE("f16 -> f32 known values", "[dtype][f16]") {
  STATIC_REQUIRE(nnx::f16_bits_to_f32(0x3c00) == 1.0f);
  CHECK(nnx::f16_bits_to_f32(0x3c00) == 1.0f);
  CHECK(nnx::f16_bits_to_f32(0x7bff) == 65504.0f);
  CHECK(nnx::f16_bits_to_f32(0x0001) == std::ldexp(1.0f, -24));
  CHECK(nnx::f16_bits_to_f32(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(nnx::f16_bits_to_f32(0x0400) == std::ldexp(1.0f, -14));
  CHECK(bits_of(nnx::f16_bits_to_f32(0x8000)) == 0x80000000u);
  CHECK(nnx::f16_bits_to_f32(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(nnx::f16_bits_to_f32(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(std::isnan(nnx::f16_bits_to_f32(0x7e00)));
  CHECK(std::isnan(nnx::f16_bits_to_f32(0x7c01)));  // signalling in, quiet NaN out
  CHECK((bits_of(nnx::f16_bits_to_f32(0x7c01)) & 0x00400000u) != 0);
  CHECK(std::signbit(nnx::f16_bits_to_f32(0xfe00)));
  CHECK(nnx::to_f32(nnx::f16{0xc200}) == -3.0f);
}

TEST_CASE("f16: all 65536 patterns round-trip through f32", "[dtype][f16]") {
  const Reference16& ref = f16_reference();
  for (std::uint32_t p = 0; p < 65536; ++p) {
    const auto h = static_cast<std::uint16_t>(p);
    const float x = nnx::f16_bits_to_f32(h);
    if (is_f16_nan(h)) {
      REQUIRE(std::isnan(x));
      REQUIRE(std::signbit(x) == ((h & 0x8000u) != 0));
      const std::uint16_t back = nnx::f32_to_f16_bits(x);
      REQUIRE(is_f16_nan(back));
      REQUIRE((back & 0x8000u) == (h & 0x8000u));
      continue;
    }
    const std::uint16_t mag = h & 0x7fffu;
    if (mag <= ref.max_finite_bits()) {  // value from the definition, not the header
      const double expect = (h & 0x8000u) ? -ref.value(mag) : ref.value(mag);
      REQUIRE(static_cast<double>(x) == expect);
    }
    REQUIRE(std::signbit(x) == ((h & 0x8000u) != 0));
    REQUIRE(nnx::f32_to_f16_bits(x) == h);
  }
}

namespace {

// Every f32 at, just below and just above the midpoint between adjacent 16-bit values (and
// the values themselves): the places where rounding goes wrong if it goes wrong anywhere.
template <class Convert>
void check_near_midpoints(const Reference16& ref, Convert convert) {
  std::size_t checked = 0;
  for (std::uint32_t p = 0; p <= ref.max_finite_bits(); ++p) {
    const double v = ref.value(static_cast<std::uint16_t>(p));
    const double next = p < ref.max_finite_bits()
                            ? ref.value(static_cast<std::uint16_t>(p + 1))
                            : 2 * ref.value(static_cast<std::uint16_t>(p)) -
                                  ref.value(static_cast<std::uint16_t>(p - 1));
    const auto mid = static_cast<float>((v + next) / 2);
    if (static_cast<double>(mid) != (v + next) / 2) continue;  // midpoint not an f32
    for (float x : {static_cast<float>(v), mid, std::nextafter(mid, 0.0f),
                    std::nextafter(mid, std::numeric_limits<float>::infinity())}) {
      for (float sx : {x, -x}) {
        const std::uint16_t got = convert(sx);
        const std::uint16_t want = ref.round(sx);
        if (got != want) {
          CAPTURE(p, bits_of(sx), got, want);
          FAIL("mismatch with the reference");
        }
        ++checked;
      }
    }
  }
  CHECK(checked > 100000);
}

// Random f32 bit patterns: uniform over all 2^32 (mostly far outside the 16-bit range) and
// uniform over the exponents around the 16-bit range, where the rounding work is.
template <class Convert>
void check_random(const Reference16& ref, Convert convert, std::uint32_t exp_lo,
                  std::uint32_t exp_hi, bool is_nan_result(std::uint16_t)) {
  std::mt19937 gen(20240607u);
  std::uniform_int_distribution<std::uint32_t> any;
  std::uniform_int_distribution<std::uint32_t> exps(exp_lo, exp_hi);
  std::size_t nans = 0;
  for (int i = 0; i < 200000; ++i) {
    std::uint32_t u = any(gen);
    if (i % 2 == 1) u = (u & 0x807fffffu) | (exps(gen) << 23);
    const float x = f32_from_bits(u);
    const std::uint16_t got = convert(x);
    if (std::isnan(x)) {
      ++nans;
      if (!is_nan_result(got) || (got & 0x8000u) != ((u >> 16) & 0x8000u)) {
        CAPTURE(u, got);
        FAIL("NaN did not stay a NaN with its sign");
      }
      continue;
    }
    const std::uint16_t want = ref.round(x);
    if (got != want) {
      CAPTURE(u, got, want);
      FAIL("mismatch with the reference");
    }
  }
  CHECK(nans > 0);
}

}  // namespace

TEST_CASE("f32 -> f16 agrees with an exact reference", "[dtype][f16]") {
  const Reference16& ref = f16_reference();
  auto conv = [](float x) { return nnx::f32_to_f16_bits(x); };
  // Exponents 98..145 cover 2^-29 (well below half the smallest subnormal) to 2^18.
  check_random(ref, conv, 98, 145, is_f16_nan);
  check_near_midpoints(ref, conv);
}

TEST_CASE("f32 -> bf16 agrees with an exact reference", "[dtype][bf16]") {
  const Reference16& ref = bf16_reference();
  auto conv = [](float x) { return nnx::f32_to_bf16_bits(x); };
  // bf16 shares f32's exponent range; bias toward its subnormals and its top.
  check_random(ref, conv, 0, 4, is_bf16_nan);
  check_random(ref, conv, 250, 254, is_bf16_nan);
  check_near_midpoints(ref, conv);
}

// --- convert -------------------------------------------------------------------------------

namespace {

template <class D, class S>
std::vector<D> convert_vec(const std::vector<S>& src) {
  std::vector<D> dst(src.size());
  nnx::convert(src.data(), nnx::dtype_of<S>, dst.data(), nnx::dtype_of<D>, src.size());
  return dst;
}

}  // namespace

TEST_CASE("convert: float -> float", "[dtype][convert]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();

  // Same dtype is a bit copy (NaN payloads and -0 included).
  const std::vector<float> f = {1.0f, -0.0f, f32_from_bits(0x7f800001u), 3.14159f, inf};
  const auto copied = convert_vec<float>(f);
  for (std::size_t i = 0; i < f.size(); ++i) CHECK(bits_of(copied[i]) == bits_of(f[i]));
  const std::vector<nnx::bf16> b16 = {{0x7f81}, {0x8000}, {0x3f80}};
  CHECK(convert_vec<nnx::bf16>(b16) == b16);

  const std::vector<float> src = {1.0f, -2.5f, 65520.0f, std::ldexp(1.0f, -25), -0.0f, inf,
                                  nan, 1.0f + std::ldexp(1.0f, -11)};
  const auto h = convert_vec<nnx::f16>(src);
  const std::vector<nnx::f16> want_h = {{0x3c00}, {0xc100}, {0x7c00}, {0x0000},
                                        {0x8000}, {0x7c00}, {0x7e00}, {0x3c00}};
  CHECK(h == want_h);
  const auto b = convert_vec<nnx::bf16>(src);
  CHECK(b[0].bits == 0x3f80);
  CHECK(b[1].bits == 0xc020);
  CHECK(b[2].bits == 0x4780);  // 65520 = 0x477ff000 rounds up to 65536 in bf16
  CHECK(b[5].bits == 0x7f80);
  CHECK(is_bf16_nan(b[6].bits));

  // Widening is exact.
  const auto back = convert_vec<float>(h);
  CHECK(back[0] == 1.0f);
  CHECK(back[1] == -2.5f);
  CHECK(back[2] == inf);
  CHECK(std::signbit(back[4]));
  CHECK(std::isnan(back[6]));
  CHECK(convert_vec<float>(std::vector<nnx::bf16>{{0x3f81}})[0] == 1.0f + 1.0f / 128);

  // bf16 <-> f16 goes through f32: one rounding.
  // bf16 0x3f81 = 1 + 2^-7 is exact in f16: 0x3c08.
  CHECK(convert_vec<nnx::f16>(std::vector<nnx::bf16>{{0x3f81}})[0].bits == 0x3c08);
  // bf16 0x4780 = 65536 overflows f16.
  CHECK(convert_vec<nnx::f16>(std::vector<nnx::bf16>{{0x4780}})[0].bits == 0x7c00);
  // f16 0x3c01 = 1 + 2^-10 rounds to 1.0 in bf16.
  CHECK(convert_vec<nnx::bf16>(std::vector<nnx::f16>{{0x3c01}})[0].bits == 0x3f80);
  // f16 subnormal 2^-24 is a bf16 normal.
  CHECK(convert_vec<nnx::bf16>(std::vector<nnx::f16>{{0x0001}})[0].bits == 0x3380);
}

TEST_CASE("convert: int -> int wraps like static_cast", "[dtype][convert]") {
  const std::vector<std::int32_t> i32 = {0, 1, -1, 127, 128, 255, 256, 300, -129,
                                         std::numeric_limits<std::int32_t>::min()};
  const auto u8 = convert_vec<std::uint8_t>(i32);
  const auto i8 = convert_vec<std::int8_t>(i32);
  const auto u64 = convert_vec<std::uint64_t>(i32);
  const auto i64 = convert_vec<std::int64_t>(i32);
  for (std::size_t i = 0; i < i32.size(); ++i) {
    CAPTURE(i32[i]);
    CHECK(u8[i] == static_cast<std::uint8_t>(i32[i]));
    CHECK(i8[i] == static_cast<std::int8_t>(i32[i]));
    CHECK(u64[i] == static_cast<std::uint64_t>(i32[i]));
    CHECK(i64[i] == i32[i]);
  }
  CHECK(u8[7] == 44);
  CHECK(u64[2] == std::numeric_limits<std::uint64_t>::max());

  const std::vector<std::uint64_t> big = {std::numeric_limits<std::uint64_t>::max(),
                                          0x1'0000'0001ull, 0x8000'0000'0000'0000ull};
  CHECK(convert_vec<std::int8_t>(big) == std::vector<std::int8_t>{-1, 1, 0});
  CHECK(convert_vec<std::int64_t>(big) ==
        std::vector<std::int64_t>{-1, 0x1'0000'0001ll, std::numeric_limits<std::int64_t>::min()});
  CHECK(convert_vec<std::uint32_t>(big) == std::vector<std::uint32_t>{0xffffffffu, 1u, 0u});
  CHECK(convert_vec<std::int32_t>(std::vector<std::uint8_t>{0, 200, 255}) ==
        std::vector<std::int32_t>{0, 200, 255});
  CHECK(convert_vec<std::uint8_t>(std::vector<std::int8_t>{-1, -128, 5}) ==
        std::vector<std::uint8_t>{255, 128, 5});
}

TEST_CASE("convert: int -> float rounds the value once", "[dtype][convert]") {
  // Exact small values to every float type.
  const std::vector<std::int32_t> small = {0, 1, -1, 2, -3, 100, -2048};
  const auto f = convert_vec<float>(small);
  const auto h = convert_vec<nnx::f16>(small);
  const auto b = convert_vec<nnx::bf16>(small);
  for (std::size_t i = 0; i < small.size(); ++i) {
    CAPTURE(small[i]);
    CHECK(f[i] == static_cast<float>(small[i]));
    CHECK(nnx::to_f32(h[i]) == static_cast<float>(small[i]));
    CHECK(nnx::to_f32(b[i]) == static_cast<float>(small[i]));
  }
  CHECK_FALSE(std::signbit(f[0]));  // an integer zero is +0

  // f32: ties to even at 2^24.
  CHECK(convert_vec<float>(std::vector<std::int32_t>{16777217, 16777219, -16777217}) ==
        std::vector<float>{16777216.0f, 16777220.0f, -16777216.0f});
  // f16: overflow above 65519, ties to even below.
  CHECK(convert_vec<nnx::f16>(std::vector<std::int32_t>{65504, 65519, 65520, -70000, 2049,
                                                        2051}) ==
        std::vector<nnx::f16>{{0x7bff}, {0x7bff}, {0x7c00}, {0xfc00}, {0x6800}, {0x6802}});
  CHECK(convert_vec<nnx::f16>(std::vector<std::uint8_t>{255})[0].bits == 0x5bf8);
  // bf16: 2^24 + 2^16 + 1 is just above the tie between 2^24 and 2^24 + 2^17; rounding
  // through f32 first would make it a tie and wrongly give 2^24 (0x4b80).
  CHECK(convert_vec<nnx::bf16>(std::vector<std::int32_t>{(1 << 24) + (1 << 16) + 1})[0].bits ==
        0x4b81);
  CHECK(convert_vec<nnx::bf16>(std::vector<std::int32_t>{(1 << 24) + (1 << 16)})[0].bits ==
        0x4b80);  // exact tie -> even

  // 64-bit: the extremes, and a value that double rounding (to 53 bits, then 24) would get
  // wrong: 2^60 + 2^36 + 1 is above the f32 tie at 2^60 + 2^36, so it rounds up.
  const std::vector<std::int64_t> i64 = {std::numeric_limits<std::int64_t>::min(),
                                         std::numeric_limits<std::int64_t>::max(),
                                         (std::int64_t{1} << 60) + (std::int64_t{1} << 36) + 1};
  const auto f64 = convert_vec<float>(i64);
  CHECK(f64[0] == -std::ldexp(1.0f, 63));
  CHECK(f64[1] == std::ldexp(1.0f, 63));
  CHECK(f64[2] == std::ldexp(1.0f, 60) + std::ldexp(1.0f, 37));
  const std::vector<std::uint64_t> u64 = {std::numeric_limits<std::uint64_t>::max(), 0};
  const auto fu = convert_vec<float>(u64);
  CHECK(fu[0] == std::ldexp(1.0f, 64));
  CHECK(fu[1] == 0.0f);
  CHECK(convert_vec<nnx::f16>(u64)[0].bits == 0x7c00);
  CHECK(convert_vec<nnx::bf16>(u64)[0].bits == 0x5f80);  // 2^64

  // Random 32-bit values of every magnitude: f32 against the compiler's own conversion
  // (exact in double, then one rounding), f16 and bf16 against the exact reference.
  std::mt19937 gen(7u);
  std::uniform_int_distribution<std::int32_t> any(std::numeric_limits<std::int32_t>::min());
  std::vector<std::int32_t> r(20000);
  for (auto& v : r) v = any(gen) >> (gen() % 32);
  const auto rf = convert_vec<float>(r);
  const auto rh = convert_vec<nnx::f16>(r);
  const auto rb = convert_vec<nnx::bf16>(r);
  for (std::size_t i = 0; i < r.size(); ++i) {
    CAPTURE(r[i]);
    const double exact = static_cast<double>(r[i]);
    REQUIRE(rf[i] == static_cast<float>(exact));
    REQUIRE(rh[i].bits == f16_reference().round(exact));
    REQUIRE(rb[i].bits == bf16_reference().round(exact));
  }
}

TEST_CASE("convert: float -> int throws DTypeError", "[dtype][convert]") {
  float src[2] = {1.0f, 2.0f};
  std::int32_t dst[2] = {7, 7};
  CHECK_THROWS_AS(nnx::convert(src, DType::f32, dst, DType::i32, 2), nnx::DTypeError);
  CHECK_THROWS_WITH(nnx::convert(src, DType::f32, dst, DType::i32, 2),
                    "convert: f32 -> i32 is not defined; quantize instead");
  CHECK_THROWS_WITH(nnx::convert(src, DType::bf16, dst, DType::u8, 1),
                    "convert: bf16 -> u8 is not defined; quantize instead");
  CHECK(dst[0] == 7);  // nothing written
  CHECK(dst[1] == 7);
  // Also with n == 0: the conversion itself is undefined, not just its elements.
  CHECK_THROWS_AS(nnx::convert(nullptr, DType::f16, nullptr, DType::i64, 0), nnx::DTypeError);
  // An out-of-enum DType value is an error too.
  CHECK_THROWS_AS(nnx::convert(src, static_cast<DType>(200), dst, DType::i32, 1),
                  nnx::DTypeError);
}

TEST_CASE("convert: every dtype pair, unaligned buffers", "[dtype][convert]") {
  // Values that every dtype holds exactly: converting them anywhere and back to f32 (or,
  // from an int, to i64) gives them back.
  const std::vector<int> values = {0, 1, 2, 3, 7, 100, 127};
  for (DType s : nnx::all_dtypes) {
    for (DType d : nnx::all_dtypes) {
      CAPTURE(nnx::dtype_name(s), nnx::dtype_name(d));
      const bool defined = !(nnx::is_floating(s) && !nnx::is_floating(d));
      const std::size_t n = values.size();
      // One byte of offset so that neither buffer is aligned for its element type.
      std::vector<unsigned char> sbuf(1 + n * nnx::dtype_size(s));
      std::vector<unsigned char> dbuf(1 + n * nnx::dtype_size(d));
      std::vector<float> as_f32(values.begin(), values.end());
      if (nnx::is_floating(s)) {
        nnx::convert(as_f32.data(), DType::f32, sbuf.data() + 1, s, n);
      } else {
        std::vector<std::int64_t> as_i64(values.begin(), values.end());
        nnx::convert(as_i64.data(), DType::i64, sbuf.data() + 1, s, n);
      }
      if (!defined) {
        CHECK_THROWS_AS(nnx::convert(sbuf.data() + 1, s, dbuf.data() + 1, d, n),
                        nnx::DTypeError);
        continue;
      }
      nnx::convert(sbuf.data() + 1, s, dbuf.data() + 1, d, n);
      nnx::convert(sbuf.data() + 1, s, dbuf.data() + 1, d, 0);  // n == 0 is a no-op
      std::vector<double> got(n);
      if (nnx::is_floating(d)) {
        std::vector<float> out(n);
        nnx::convert(dbuf.data() + 1, d, out.data(), DType::f32, n);
        std::copy(out.begin(), out.end(), got.begin());
      } else {
        std::vector<std::int64_t> out(n);
        nnx::convert(dbuf.data() + 1, d, out.data(), DType::i64, n);
        std::copy(out.begin(), out.end(), got.begin());
      }
      for (std::size_t i = 0; i < n; ++i) CHECK(got[i] == values[i]);
    }
  }
}
