// A small byte-level BPE tokenizer.json (GPT-2's byte-to-unicode alphabet): the 256 bytes as
// ids 0-255, two merges ("Ġt" 256, "he" 257) and the special token <|endoftext|> (258). Any
// text encodes, and any id sequence decodes, so tests of streaming text and stop strings can
// run a tiny random model (vocabulary >= 259) with it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

namespace test_support {

// GPT-2's printable stand-in for byte b (bytes_to_unicode), as UTF-8.
inline std::string byte_level_char(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int x = 0; x < b; ++x)
      if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) ++n;
    cp = 256 + n;
  }
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

inline constexpr int kByteTokenizerVocab = 259;
inline constexpr int kByteTokenizerEos = 258;

inline std::string byte_tokenizer_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level_char(b)] = b;
  const std::string G = byte_level_char(' ');
  vocab[G + "t"] = 256;
  vocab["he"] = 257;
  nlohmann::json j = {
      {"version", "1.0"},
      {"added_tokens",
       {{{"id", kByteTokenizerEos}, {"content", "<|endoftext|>"}, {"single_word", false}, {"lstrip", false},
         {"rstrip", false}, {"normalized", false}, {"special", true}}}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", vocab},
        {"merges", {G + " t", "h e"}}}}};
  return j.dump();
}

// `n` whole UTF-8 characters of `text` from the first character boundary at or after byte
// `pos` (fewer at the end): a stop string a JSON body can carry.
inline std::string utf8_chars(const std::string& text, std::size_t pos, std::size_t n) {
  const auto continuation = [&](std::size_t i) { return (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80; };
  while (pos < text.size() && continuation(pos)) ++pos;
  std::size_t end = pos;
  for (std::size_t k = 0; k < n && end < text.size(); ++k)
    do ++end;
    while (end < text.size() && continuation(end));
  return text.substr(pos, end - pos);
}

}  // namespace test_support
