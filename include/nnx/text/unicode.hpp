// nnx/text/unicode.hpp — the UTF-8 and Unicode helpers the tokenizers stand on: validation that
// names the offset of the first bad byte, code-point decoding, the letter / number / space
// classes of the pre-tokenizer patterns, and Rust's String::from_utf8_lossy (which Hugging Face
// decoders use to turn bytes into text).
//
//   nnx::text::validate_utf8(s, "encode");            // throws InvalidArgument "... at byte offset 7"
//   std::string t = nnx::text::utf8_lossy(bytes);     // ill-formed subsequences -> U+FFFD
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "nnx/core/error.hpp"
#include "nnx/text/detail/unicode_tables.hpp"

namespace nnx::text {

enum class CharClass : std::uint8_t { other = 0, letter = 1, number = 2, space = 3 };

// The class of code point `cp`: \p{L}, \p{N}, \s (White_Space) or none of them.
inline CharClass char_class(std::uint32_t cp) {
  if (cp < 128) return static_cast<CharClass>(detail::kAsciiClass[cp]);
  const auto* begin = std::begin(detail::kCodePointRanges);
  const auto* end = std::end(detail::kCodePointRanges);
  const auto* it =
      std::upper_bound(begin, end, cp, [](std::uint32_t c, const detail::CodePointRange& r) { return c < r.first; });
  if (it == begin) return CharClass::other;
  --it;
  return cp <= it->last ? static_cast<CharClass>(it->cls) : CharClass::other;
}

// The length of the well-formed UTF-8 sequence at s[i], or 0 when the bytes there are not one
// (Unicode Table 3-7: no overlongs, no surrogates, nothing past U+10FFFF). With `valid_prefix`,
// reports through it how many bytes, from s[i], form the longest prefix of some well-formed
// sequence (1 for a bad lead byte): Rust's lossy conversion replaces exactly that many with one
// U+FFFD, and a prefix that runs into the end of `s` may still complete.
inline std::size_t utf8_sequence_length(std::string_view s, std::size_t i, std::size_t* valid_prefix = nullptr) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 < 0x80) {
    if (valid_prefix) *valid_prefix = 1;
    return 1;
  } else if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    if (valid_prefix) *valid_prefix = 1;
    return 0;
  }
  std::size_t k = 1;
  for (; k < need && i + k < s.size(); ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) break;
  }
  if (valid_prefix) *valid_prefix = k;
  return k == need ? need : 0;
}

// Decodes the well-formed sequence of `len` bytes at s[i].
inline std::uint32_t utf8_decode(std::string_view s, std::size_t i, std::size_t len) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + i);
  switch (len) {
    case 1:
      return p[0];
    case 2:
      return (std::uint32_t{p[0] & 0x1Fu} << 6) | (p[1] & 0x3Fu);
    case 3:
      return (std::uint32_t{p[0] & 0x0Fu} << 12) | (std::uint32_t{p[1] & 0x3Fu} << 6) | (p[2] & 0x3Fu);
    default:
      return (std::uint32_t{p[0] & 0x07u} << 18) | (std::uint32_t{p[1] & 0x3Fu} << 12) |
             (std::uint32_t{p[2] & 0x3Fu} << 6) | (p[3] & 0x3Fu);
  }
}

// Appends code point `cp` (a scalar value) to `out` as UTF-8.
inline void utf8_append(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Throws InvalidArgument "<what>: invalid UTF-8 at byte offset N (byte 0xXX)" unless `s` is
// well-formed UTF-8. ASCII runs are checked eight bytes at a time.
inline void validate_utf8(std::string_view s, const std::string& what) {
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    if (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    const std::size_t len = utf8_sequence_length(s, i);
    if (len == 0) {
      static constexpr char hex[] = "0123456789ABCDEF";
      const auto b = static_cast<unsigned char>(s[i]);
      throw InvalidArgument(what + ": invalid UTF-8 at byte offset " + std::to_string(i) + " (byte 0x" + hex[b >> 4] +
                            hex[b & 15] + ")");
    }
    i += len;
  }
}

// Appends bytes[0, n) to `out` as Rust's String::from_utf8_lossy does: well-formed sequences as
// they are, each maximal ill-formed subsequence as one U+FFFD. With `hold_incomplete`, a
// well-formed-so-far sequence cut off by the end is left out, and the return value is where it
// starts (so a stream can keep it for the next bytes); otherwise returns bytes.size().
inline std::size_t utf8_lossy_append(std::string& out, std::string_view bytes, bool hold_incomplete = false) {
  std::size_t i = 0, run = 0;  // [run, i): well-formed bytes not yet appended
  while (i < bytes.size()) {
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    std::size_t prefix = 0;
    const std::size_t len = utf8_sequence_length(bytes, i, &prefix);
    if (len) {
      i += len;
      continue;
    }
    out.append(bytes.substr(run, i - run));
    if (hold_incomplete && i + prefix == bytes.size() && prefix < 4 && static_cast<unsigned char>(bytes[i]) >= 0xC2 &&
        static_cast<unsigned char>(bytes[i]) <= 0xF4)
      return i;
    out.append(kReplacementChar);
    i += prefix;
    run = i;
  }
  out.append(bytes.substr(run, i - run));
  return bytes.size();
}

inline std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  utf8_lossy_append(out, bytes);
  return out;
}

}  // namespace nnx::text
