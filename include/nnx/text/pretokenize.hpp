// nnx/text/pretokenize.hpp — the two pre-tokenizer patterns byte-level BPE models split text
// with before merging, as hand-written matchers (no regex engine):
//
//   GPT-2    's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   Llama 3  (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//            \s*[\r\n]+|\s+(?!\S)|\s+
//
//   nnx::text::split_pretokens(Pattern::gpt2, "I'm here", [](std::size_t b, std::size_t e) { ... });
//   // [0,1) "I"  [1,3) "'m"  [3,8) " here"
//
// Each matcher returns the end of the leftmost-first match starting at a position, exactly as
// Oniguruma (Hugging Face tokenizers) and Rust's regex crate find it. Every code point is matched
// by some alternative of both patterns, so the matches tile the text. The input must be valid
// UTF-8 (the tokenizer checks it first).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "nnx/text/unicode.hpp"

namespace nnx::text {

enum class Pattern : std::uint8_t { gpt2, llama3 };

// The exact regex strings as tokenizer.json files spell them.
inline constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

namespace detail {

struct CodePoint {
  CharClass cls;
  std::uint32_t len;  // bytes
  std::uint32_t cp;
};

inline CodePoint code_point_at(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  if (b < 0x80) return {static_cast<CharClass>(kAsciiClass[b]), 1, b};
  std::size_t len = utf8_sequence_length(s, i);
  if (len == 0) len = 1;  // not reached on validated input; keeps a bad byte from looping
  const std::uint32_t cp = utf8_decode(s, i, len);
  return {char_class(cp), static_cast<std::uint32_t>(len), cp};
}

// The end of the run of code points of class `cls` from i (at most `max_count` of them).
inline std::size_t run_of(std::string_view s, std::size_t i, CharClass cls, std::size_t max_count = SIZE_MAX) {
  std::size_t count = 0;
  while (i < s.size() && count < max_count) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {  // ASCII fast path
      if (static_cast<CharClass>(kAsciiClass[b]) != cls) break;
      ++i;
    } else {
      const CodePoint c = code_point_at(s, i);
      if (c.cls != cls) break;
      i += c.len;
    }
    ++count;
  }
  return i;
}

// \s+(?!\S)|\s+ from i (a space): the whole run at the end of the text, else the run less its
// last code point when that leaves at least one (the last then starts the next match).
inline std::size_t space_run(std::string_view s, std::size_t i) {
  std::size_t last = i, count = 0;
  while (i < s.size()) {
    const CodePoint c = code_point_at(s, i);
    if (c.cls != CharClass::space) break;
    last = i;
    i += c.len;
    ++count;
  }
  if (i == s.size() || count < 2) return i;
  return last;
}

inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

}  // namespace detail

// The end of the GPT-2 pattern's match at i < s.size().
inline std::size_t match_gpt2(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  if (s[i] == '\'' && i + 1 < n) {
    const char d = s[i + 1];
    if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
    if (i + 2 < n) {
      const char e = s[i + 2];
      if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 3;
    }
  }
  std::size_t j = i;
  if (s[i] == ' ' && i + 1 < n) {
    const detail::CodePoint next = detail::code_point_at(s, i + 1);
    if (next.cls != CharClass::space) return detail::run_of(s, i + 1, next.cls);  //  ?\p{L}+ etc.
    j = i;
  }
  const detail::CodePoint c = detail::code_point_at(s, j);
  if (c.cls != CharClass::space) return detail::run_of(s, j, c.cls);
  return detail::space_run(s, i);
}

// The end of the Llama 3 pattern's match at i < s.size().
inline std::size_t match_llama3(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  if (s[i] == '\'' && i + 1 < n) {  // (?i:'s|'t|'re|'ve|'m|'ll|'d); U+017F (long s) case-folds to s
    const char d = detail::ascii_lower(s[i + 1]);
    if (d == 's' || d == 't' || d == 'm' || d == 'd') return i + 2;
    if (s.substr(i + 1, 2) == "\xC5\xBF") return i + 3;
    if (i + 2 < n) {
      const char e = detail::ascii_lower(s[i + 2]);
      if ((d == 'r' && e == 'e') || (d == 'v' && e == 'e') || (d == 'l' && e == 'l')) return i + 3;
    }
  }
  const detail::CodePoint c = detail::code_point_at(s, i);
  if (c.cls == CharClass::letter) return detail::run_of(s, i, CharClass::letter);
  if (c.cls != CharClass::number && s[i] != '\r' && s[i] != '\n' && i + c.len < n) {
    // [^\r\n\p{L}\p{N}]?\p{L}+
    const detail::CodePoint next = detail::code_point_at(s, i + c.len);
    if (next.cls == CharClass::letter) return detail::run_of(s, i + c.len, CharClass::letter);
  }
  if (c.cls == CharClass::number) return detail::run_of(s, i, CharClass::number, 3);
  // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
  std::size_t j = SIZE_MAX;
  if (c.cls == CharClass::other) {
    j = i;
  } else if (s[i] == ' ' && i + 1 < n && detail::code_point_at(s, i + 1).cls == CharClass::other) {
    j = i + 1;
  }
  if (j != SIZE_MAX) {
    std::size_t e = detail::run_of(s, j, CharClass::other);
    while (e < n && (s[e] == '\r' || s[e] == '\n')) ++e;
    return e;
  }
  // A space: \s*[\r\n]+ takes the run up to and including its last \r or \n.
  std::size_t k = i, last_newline = SIZE_MAX;
  while (k < n) {
    const detail::CodePoint w = detail::code_point_at(s, k);
    if (w.cls != CharClass::space) break;
    if (s[k] == '\r' || s[k] == '\n') last_newline = k;
    k += w.len;
  }
  if (last_newline != SIZE_MAX) return last_newline + 1;
  return detail::space_run(s, i);
}

// Calls emit(begin, end) for each pre-token of `s` under `pattern`, in order.
template <class Emit>
void split_pretokens(Pattern pattern, std::string_view s, Emit&& emit) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t e = pattern == Pattern::gpt2 ? match_gpt2(s, i) : match_llama3(s, i);
    emit(i, e);
    i = e;
  }
}

}  // namespace nnx::text
