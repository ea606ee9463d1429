// Helpers shared by the text tests: the fixture tokenizers (tests/text/data, made by
// gen_fixtures.mjs) and GPT-2's tokenizer.json built from its legacy files.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include <nnx/text.hpp>

namespace text_test {

namespace fs = std::filesystem;

inline fs::path data_dir() { return fs::path(NNX_TEST_DATA_DIR) / "text" / "data"; }

inline std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  REQUIRE(in);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// GPT-2 from vocab.json + merges.txt (loaded once).
inline const nnx::text::Tokenizer& gpt2_legacy() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::load(data_dir() / "gpt2");
  return t;
}

// The tokenizer.json Hugging Face ships for GPT-2, built from the same two files.
inline std::string gpt2_tokenizer_json() {
  const nlohmann::json vocab = nlohmann::json::parse(read_file(data_dir() / "gpt2" / "vocab.json"));
  nlohmann::json merges = nlohmann::json::array();
  const std::string text = read_file(data_dir() / "gpt2" / "merges.txt");
  std::size_t at = text.find('\n') + 1;  // past "#version: 0.2"
  while (at < text.size()) {
    std::size_t eol = text.find('\n', at);
    if (eol == std::string::npos) eol = text.size();
    if (eol > at) merges.push_back(text.substr(at, eol - at));
    at = eol + 1;
  }
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
  const nlohmann::json j = {{"version", "1.0"},
                            {"added_tokens",
                             {{{"id", 50256},
                               {"content", "<|endoftext|>"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", true},
                               {"special", true}}}},
                            {"normalizer", nullptr},
                            {"pre_tokenizer", byte_level},
                            {"post_processor", byte_level},
                            {"decoder", byte_level},
                            {"model",
                             {{"type", "BPE"},
                              {"dropout", nullptr},
                              {"unk_token", nullptr},
                              {"continuing_subword_prefix", ""},
                              {"end_of_word_suffix", ""},
                              {"fuse_unk", false},
                              {"byte_fallback", false},
                              {"vocab", vocab},
                              {"merges", merges}}}};
  return j.dump();
}

inline const nnx::text::Tokenizer& gpt2_json() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::from_tokenizer_json(gpt2_tokenizer_json(), "gpt2");
  return t;
}

inline const nnx::text::Tokenizer& llama3_mini() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::load(data_dir() / "llama3_mini");
  return t;
}

inline const nnx::text::Tokenizer& llama2_mini() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::load(data_dir() / "llama2_mini");
  return t;
}

// The same vocabulary as the newer conversion writes it: a Metaspace pre-tokenizer, no normalizer.
inline const nnx::text::Tokenizer& llama2_metaspace() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::load(data_dir() / "llama2_metaspace");
  return t;
}

inline const nlohmann::json& fixtures() {
  static const nlohmann::json j = nlohmann::json::parse(read_file(data_dir() / "fixtures.json"));
  return j;
}

// Runs fn, which must throw nnx::InvalidArgument with every one of `parts` in its message.
template <class Fn>
void expect_invalid(Fn&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
  } catch (const nnx::InvalidArgument& e) {
    const std::string what = e.what();
    INFO("message: " << what);
    for (const auto& p : parts) CHECK(what.find(p) != std::string::npos);
    return;
  }
  FAIL("no InvalidArgument; expected one mentioning " << *parts.begin());
}

}  // namespace text_test
