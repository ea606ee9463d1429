// nnx/text/tokenizer.hpp — text <-> token ids for the BPE tokenizers of Hugging Face model
// directories: byte-level BPE (GPT-2, Llama 3), SentencePiece-style BPE with byte fallback
// (Llama 2, TinyLlama), their added and special tokens, and GPT-2's legacy vocab.json +
// merges.txt; plus IncrementalDecoder, which turns a stream of ids into text without ever
// emitting half a UTF-8 character.
//
//   auto tok = nnx::text::Tokenizer::load("models/gpt2");          // tokenizer.json, or vocab.json + merges.txt
//   std::vector<std::int32_t> ids = tok.encode("Hello world");     // {15496, 995}
//   std::string text = tok.decode(ids);                           // "Hello world"
//
//   nnx::text::IncrementalDecoder stream(tok);
//   for (std::int32_t id : generated) std::cout << stream.push(id);
//   std::cout << stream.flush();
//
// What is read from tokenizer.json, and what is refused (InvalidArgument naming the file and the
// field) rather than silently approximated:
//   model          BPE only: vocab, merges ("a b" strings or ["a", "b"] pairs), unk_token,
//                  byte_fallback, fuse_unk, ignore_merges (no dropout, no subword prefix/suffix)
//   added_tokens   matched in the raw text first (leftmost, then longest), never merged across;
//                  lstrip / rstrip take the whitespace beside them; single_word ones only
//                  between non-word characters. (Hugging Face matches "normalized" added
//                  tokens in the normalized text; here all are matched in the raw text, which is
//                  the same for every normalizer but Prepend / Replace rewriting their content.)
//   normalizer     null, Prepend, Replace (string pattern), Sequence of those
//   pre_tokenizer  null; ByteLevel (with or without GPT-2's regex); Sequence[Split(GPT-2 or Llama 3
//                  regex, Isolated), ByteLevel(use_regex false)]; Metaspace
//   decoder        null, ByteLevel, Metaspace, Sequence of Replace / ByteFallback / Fuse / Strip
//   post_processor null, ByteLevel, TemplateProcessing (single), Roberta/BertProcessing, Sequence
//
// Thread safety: a Tokenizer is immutable after loading except for its encode cache, which is
// guarded, so one Tokenizer may serve any number of threads. An IncrementalDecoder is one stream,
// used by one thread at a time; it refers to its Tokenizer, which must outlive it.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/error.hpp"
#include "nnx/io/json.hpp"
#include "nnx/text/bpe.hpp"
#include "nnx/text/pretokenize.hpp"
#include "nnx/text/unicode.hpp"

namespace nnx::text {

class IncrementalDecoder;

namespace detail {

// GPT-2's bytes_to_unicode: byte b stands for a printable code point in byte-level vocabularies
// (the printable Latin-1 bytes for themselves, the others for U+0100 upwards, in byte order).
inline const std::array<std::uint32_t, 256>& byte_to_code_point() {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    std::uint32_t extra = 256;
    for (std::uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      t[b] = printable ? b : extra++;
    }
    return t;
  }();
  return table;
}

// The byte code point `cp` stands for in a byte-level vocabulary, or -1.
inline int byte_of_code_point(std::uint32_t cp) {
  static const std::array<std::int16_t, 324> table = [] {
    std::array<std::int16_t, 324> t{};
    t.fill(-1);
    const auto& fwd = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[fwd[static_cast<std::size_t>(b)]] = static_cast<std::int16_t>(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

// The byte-level string of raw bytes (each byte as its stand-in code point).
inline std::string bytes_to_byte_level(std::string_view raw) {
  std::string out;
  out.reserve(raw.size() * 2);
  for (char c : raw) utf8_append(out, byte_to_code_point()[static_cast<unsigned char>(c)]);
  return out;
}

// The raw bytes a byte-level token stands for; a token with a code point outside the alphabet
// is its own UTF-8 bytes (what Hugging Face's ByteLevel decoder does).
inline std::string byte_level_to_bytes(std::string_view token) {
  std::string out;
  std::size_t i = 0;
  while (i < token.size()) {
    std::size_t len = utf8_sequence_length(token, i);
    if (len == 0) return std::string(token);
    const int b = byte_of_code_point(utf8_decode(token, i, len));
    if (b < 0) return std::string(token);
    out += static_cast<char>(b);
    i += len;
  }
  return out;
}

// "<0xAB>" -> 0xAB, else -1.
inline int byte_fallback_value(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

inline void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  std::size_t at = 0;
  for (std::size_t hit = s.find(from); hit != std::string::npos; hit = s.find(from, at)) {
    out.append(s, at, hit - at);
    out.append(to);
    at = hit + from.size();
  }
  if (at == 0) return;
  out.append(s, at, std::string::npos);
  s = std::move(out);
}

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InvalidArgument(path.string() + ": cannot open the file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw InvalidArgument(path.string() + ": read error");
  return std::move(ss).str();
}

inline constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

}  // namespace detail

class Tokenizer {
 public:
  // A Hugging Face model directory (tokenizer.json; else vocab.json + merges.txt), or a
  // tokenizer.json file path. In a directory, tokenizer_config.json (or special_tokens_map.json)
  // names the BOS and EOS tokens when present. Throws InvalidArgument naming the file.
  static Tokenizer load(const std::filesystem::path& path) {
    namespace fs = std::filesystem;
    std::error_code ec;
    if (fs::is_directory(path, ec)) {
      Tokenizer t;
      if (fs::exists(path / "tokenizer.json")) {
        t = from_tokenizer_json(detail::read_text_file(path / "tokenizer.json"), (path / "tokenizer.json").string());
      } else if (fs::exists(path / "vocab.json") && fs::exists(path / "merges.txt")) {
        t = from_vocab_merges(detail::read_text_file(path / "vocab.json"), detail::read_text_file(path / "merges.txt"),
                              path.string());
      } else {
        throw InvalidArgument(path.string() + ": no tokenizer.json, nor vocab.json with merges.txt, in the directory");
      }
      for (const char* name : {"special_tokens_map.json", "tokenizer_config.json"})  // the latter wins
        if (fs::exists(path / name)) t.read_special_token_names(path / name);
      return t;
    }
    if (!fs::exists(path, ec)) throw InvalidArgument(path.string() + ": no such file or directory");
    return from_tokenizer_json(detail::read_text_file(path), path.string());
  }

  // A tokenizer.json document; `source_name` names it in error messages.
  static Tokenizer from_tokenizer_json(std::string_view json_text, std::string source_name) {
    Tokenizer t;
    t.source_ = std::move(source_name);
    nlohmann::json j;
    try {
      j = io::parse_json_strict(json_text);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(t.source_ + " " + e.what());
    }
    try {
      t.parse_tokenizer_json(j);
    } catch (const nlohmann::json::exception& e) {
      throw InvalidArgument(t.source_ + ": unexpected value type (" + std::string(e.what()) + ")");
    }
    return t;
  }

  // GPT-2's legacy files: vocab.json (token -> id) and merges.txt (one "a b" merge a line, by
  // rank; a first line "#version ..." is skipped). Byte-level with GPT-2's regex; <|endoftext|>,
  // when in the vocabulary, is a special token and both BOS and EOS.
  static Tokenizer from_vocab_merges(std::string_view vocab_json, std::string_view merges_txt,
                                     std::string source_name) {
    Tokenizer t;
    t.source_ = std::move(source_name);
    nlohmann::json vocab;
    try {
      vocab = io::parse_json_strict(vocab_json);
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(t.source_ + ": vocab.json " + e.what());
    }
    if (!vocab.is_object() || vocab.empty())
      throw InvalidArgument(t.source_ + ": vocab.json: expected an object of token -> id");
    t.read_vocab(vocab, "vocab.json");
    std::vector<std::pair<std::string, std::string>> merges;
    std::vector<std::size_t> lines;
    std::size_t line_no = 0, at = 0;
    while (at < merges_txt.size()) {
      std::size_t eol = merges_txt.find('\n', at);
      if (eol == std::string_view::npos) eol = merges_txt.size();
      std::string_view line = merges_txt.substr(at, eol - at);
      at = eol + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.find(' ', sp + 1) != std::string_view::npos)
        throw InvalidArgument(t.source_ + ": merges.txt line " + std::to_string(line_no) +
                              ": expected two tokens separated by one space");
      merges.emplace_back(std::string(line.substr(0, sp)), std::string(line.substr(sp + 1)));
      lines.push_back(line_no);
    }
    t.set_merges(merges, [&](std::size_t r) { return "merges.txt line " + std::to_string(lines[r]); });
    t.byte_level_ = true;
    t.pattern_ = Pattern::gpt2;
    t.decoder_ = DecoderKind::byte_level;
    if (auto eot = t.vocab_lookup("<|endoftext|>")) {
      t.add_added_token(AddedToken{"<|endoftext|>", *eot, true, false, false, false});
      t.bos_ = t.eos_ = *eot;
    }
    t.finish();
    return t;
  }

  // The ids of `text` (valid UTF-8, else InvalidArgument naming the byte offset). With
  // `add_special_tokens`, the post-processor's tokens (Llama's BOS) are added; added tokens in
  // the text are recognised either way.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special_tokens = true) const {
    validate_utf8(text, source_ + ": encode");
    std::vector<std::int32_t> ids;
    ids.reserve(text.size() / 3 + 4);
    if (add_special_tokens) ids.insert(ids.end(), prefix_ids_.begin(), prefix_ids_.end());
    EncodeScratch scratch;
    std::size_t at = 0;  // the start of the text not yet encoded
    auto text_segment = [&](std::size_t begin, std::size_t end) {
      if (end > begin) encode_segment(text.substr(begin, end - begin), begin, ids, scratch);
    };
    if (added_.empty()) {
      text_segment(0, text.size());
    } else {
      for (std::size_t i = 0; i < text.size();) {
        const AddedToken* hit = added_first_byte_[static_cast<unsigned char>(text[i])] ? match_added(text, i) : nullptr;
        if (!hit) {
          ++i;
          continue;
        }
        std::size_t seg_end = i, next = i + hit->content.size();
        if (hit->single_word && (is_word_char_before(text, i) || is_word_char_at(text, next))) {
          i = next;  // inside a word: not this token (and, as Hugging Face's matcher, none overlapping it)
          continue;
        }
        if (hit->lstrip)  // the whitespace before the token is part of it
          for (std::size_t b; seg_end > at && char_class_before(text, seg_end, &b) == CharClass::space;) seg_end = b;
        if (hit->rstrip)
          while (next < text.size() && detail::code_point_at(text, next).cls == CharClass::space)
            next += detail::code_point_at(text, next).len;
        text_segment(at, seg_end);
        ids.push_back(hit->id);
        at = i = next;
      }
      text_segment(at, text.size());
    }
    if (add_special_tokens) ids.insert(ids.end(), suffix_ids_.begin(), suffix_ids_.end());
    return ids;
  }

  // The text of `ids`, as Hugging Face's decode gives it: the decoder's pieces joined, invalid
  // UTF-8 as U+FFFD (Rust's from_utf8_lossy for byte-level; one U+FFFD per byte of an invalid
  // run of byte-fallback tokens, as its ByteFallback decoder). Throws InvalidArgument for an id
  // outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids, bool skip_special_tokens = false) const;

  // The raw bytes token `id` stands for (byte-level mapped back, "▁" -> " ", <0xAB> -> the
  // byte). Throws InvalidArgument for an id outside the vocabulary.
  std::string token_bytes(std::int32_t id) const {
    check_id(id, "token_bytes");
    return bytes_[static_cast<std::size_t>(id)];
  }

  // The id of a token by its string as the vocabulary or added tokens spell it ("Ġthe",
  // "<|endoftext|>").
  std::optional<std::int32_t> token_id(std::string_view token) const {
    for (const AddedToken& a : added_)
      if (a.content == token) return a.id;
    return vocab_lookup(token);
  }

  // The token string of `id` as the vocabulary spells it ("Ġthe"); InvalidArgument if none.
  const std::string& id_to_token(std::int32_t id) const {
    check_id(id, "id_to_token");
    return tokens_[static_cast<std::size_t>(id)];
  }

  // One past the largest id of the vocabulary and the added tokens.
  std::int64_t vocab_size() const { return static_cast<std::int64_t>(tokens_.size()); }
  std::optional<std::int32_t> bos_id() const { return bos_; }
  std::optional<std::int32_t> eos_id() const { return eos_; }
  // Whether `id` is an added token marked special (skipped by decode with skip_special_tokens).
  bool is_special(std::int32_t id) const {
    return id >= 0 && static_cast<std::size_t>(id) < special_.size() && special_[static_cast<std::size_t>(id)];
  }
  // The file (or name) the tokenizer came from.
  const std::string& source_name() const { return source_; }

 private:
  friend class IncrementalDecoder;

  enum class DecoderKind : std::uint8_t { join_with_spaces, byte_level, pieces };
  enum class Prepend : std::uint8_t { never, first, always };

  struct AddedToken {
    std::string content;
    std::int32_t id = 0;
    bool special = false, lstrip = false, rstrip = false, normalized = false, single_word = false;
  };
  struct NormalizerStep {  // Prepend(to_add) when `pattern` is empty, else Replace(pattern, content)
    std::string pattern, content;
  };
  struct EncodeScratch {
    std::string normalized, piece;
    std::vector<std::int32_t> symbols;
    BpeScratch bpe;
  };
  // Pre-token -> ids, bounded (cleared when full): English text repeats its words.
  struct Cache {
    static constexpr std::size_t kCapacity = 1 << 16;
    static constexpr std::size_t kMaxKeyBytes = 64;
    std::mutex mutex;
    detail::StringMap<std::vector<std::int32_t>> map;
  };

  Tokenizer() : cache_(std::make_shared<Cache>()) {}

  // The class of the code point that ends at `end` (> 0) in valid UTF-8 `text`; its start via `begin`.
  static CharClass char_class_before(std::string_view text, std::size_t end, std::size_t* begin) {
    std::size_t b = end - 1;
    while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
    *begin = b;
    return detail::code_point_at(text, b).cls;
  }
  // \w as the single_word check of Hugging Face uses it, approximated as letter, number or '_'.
  static bool is_word_char_before(std::string_view text, std::size_t end) {
    std::size_t b;
    return end > 0 && (text[end - 1] == '_' || char_class_before(text, end, &b) == CharClass::letter ||
                       char_class_before(text, end, &b) == CharClass::number);
  }
  static bool is_word_char_at(std::string_view text, std::size_t i) {
    if (i >= text.size()) return false;
    const CharClass c = detail::code_point_at(text, i).cls;
    return text[i] == '_' || c == CharClass::letter || c == CharClass::number;
  }

  [[noreturn]] void fail(const std::string& field, const std::string& what) const {
    throw InvalidArgument(source_ + ": " + field + ": " + what);
  }

  void check_id(std::int32_t id, const char* what) const {
    if (id < 0 || static_cast<std::size_t>(id) >= tokens_.size() || !present_[static_cast<std::size_t>(id)])
      throw InvalidArgument(source_ + ": " + what + ": id " + std::to_string(id) + " is not in the vocabulary (size " +
                            std::to_string(tokens_.size()) + ")");
  }

  std::optional<std::int32_t> vocab_lookup(std::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }

  void set_token(std::int32_t id, const std::string& token) {
    const auto i = static_cast<std::size_t>(id);
    if (i >= tokens_.size()) {
      tokens_.resize(i + 1);
      present_.resize(i + 1, false);
    }
    tokens_[i] = token;
    present_[i] = true;
  }

  void read_vocab(const nlohmann::json& vocab, const std::string& field) {
    vocab_.reserve(vocab.size());
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_integer() || it.value().get<std::int64_t>() < 0 ||
          it.value().get<std::int64_t>() > 0x7fffffff)
        fail(field, "the id of \"" + it.key() + "\" is not an integer in [0, 2^31)");
      const auto id = static_cast<std::int32_t>(it.value().get<std::int64_t>());
      if (static_cast<std::size_t>(id) < present_.size() && present_[static_cast<std::size_t>(id)])
        fail(field, "id " + std::to_string(id) + " is given to both \"" + tokens_[static_cast<std::size_t>(id)] +
                        "\" and \"" + it.key() + "\"");
      vocab_.emplace(it.key(), id);
      set_token(id, it.key());
    }
  }

  // `field(r)` names where merge r came from in errors.
  template <class Field>
  void set_merges(const std::vector<std::pair<std::string, std::string>>& merges, Field&& field) {
    merges_.reserve(merges.size());
    std::string joined;
    for (std::size_t r = 0; r < merges.size(); ++r) {
      const auto& [a, b] = merges[r];
      auto where = [&] { return field(r); };
      const auto ia = vocab_lookup(a), ib = vocab_lookup(b);
      if (!ia) fail(where(), "the token \"" + a + "\" is not in the vocabulary");
      if (!ib) fail(where(), "the token \"" + b + "\" is not in the vocabulary");
      joined = a + b;
      const auto im = vocab_lookup(joined);
      if (!im) fail(where(), "the merged token \"" + joined + "\" is not in the vocabulary");
      merges_.insert(*ia, *ib, static_cast<std::int32_t>(r), *im);
    }
  }

  void add_added_token(AddedToken a) {
    set_token(a.id, a.content);
    added_.push_back(std::move(a));
  }

  const AddedToken* added_named(std::string_view content) const {
    for (const AddedToken& a : added_)
      if (a.content == content) return &a;
    return nullptr;
  }

  const AddedToken* match_added(std::string_view text, std::size_t i) const {
    for (std::uint32_t k : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {  // longest first
      const AddedToken& a = added_[k];
      if (text.substr(i, a.content.size()) == a.content) return &a;
    }
    return nullptr;
  }

  void parse_tokenizer_json(const nlohmann::json& j);
  void parse_normalizer(const nlohmann::json& n, const std::string& field);
  void parse_pre_tokenizer(const nlohmann::json& p, const std::string& field);
  void parse_decoder(const nlohmann::json& d, const std::string& field);
  void parse_post_processor(const nlohmann::json& p, const std::string& field);
  void finish();
  void read_special_token_names(const std::filesystem::path& file);

  void encode_segment(std::string_view segment, std::size_t offset, std::vector<std::int32_t>& ids,
                      EncodeScratch& s) const;
  void encode_word(std::string_view word, std::vector<std::int32_t>& ids, EncodeScratch& s) const;
  void encode_words_split_at_metaspace(std::string_view text, std::vector<std::int32_t>& ids, EncodeScratch& s) const;
  void bpe_word(std::string_view word, std::vector<std::int32_t>& out, EncodeScratch& s) const;

  std::string source_;
  // Vocabulary: id -> token string as spelled in the file, and back; raw bytes per id.
  std::vector<std::string> tokens_;
  std::vector<bool> present_, special_, byte_token_;
  std::vector<std::string> bytes_;
  detail::StringMap<std::int32_t> vocab_;
  detail::StringMap<std::int32_t> raw_vocab_;  // byte-level: raw bytes -> id (for ignore_merges)
  MergeTable merges_;
  std::optional<std::int32_t> unk_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  // Added tokens, and by first byte, longest first.
  std::vector<AddedToken> added_;
  std::array<std::vector<std::uint32_t>, 256> added_by_first_byte_;  // indices into added_ (copies stay valid)
  std::array<bool, 256> added_first_byte_{};
  // Pipeline.
  std::vector<NormalizerStep> normalizer_;
  bool byte_level_ = false;               // the model works on raw bytes (a ByteLevel pre-tokenizer)
  bool byte_level_prefix_space_ = false;  // ByteLevel add_prefix_space
  std::optional<Pattern> pattern_;        // the split regex
  bool metaspace_ = false, metaspace_split_ = false;
  // No vocabulary token has "▁" after another character: BPE can never merge across the start of
  // a "▁" run, so a SentencePiece text (one word to BPE, with no pre-tokenizer) is cut there into
  // words with the same result, which the cache then answers and the merge loop keeps short.
  bool metaspace_cut_safe_ = false;
  Prepend metaspace_prepend_ = Prepend::never;
  std::string metaspace_char_ = std::string(detail::kMetaspace);
  std::array<std::int32_t, 256> byte_ids_{};  // byte-level: byte -> id of its stand-in (-1 none)
  DecoderKind decoder_ = DecoderKind::join_with_spaces;
  bool decoder_byte_fallback_ = false;
  std::size_t decoder_strip_left_ = 0;
  std::vector<std::pair<std::string, std::string>> decoder_replace_;
  std::vector<std::int32_t> prefix_ids_, suffix_ids_;
  std::optional<std::int32_t> bos_, eos_;
  std::shared_ptr<Cache> cache_;
};

// Streams the text of ids pushed one at a time. The concatenation of every push() and the
// final flush() is exactly decode(all the ids) with the same skip_special_tokens: text is held
// back only while it could still change (an incomplete UTF-8 sequence, a run of byte-fallback
// tokens, the leading space a SentencePiece decoder strips).
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special_tokens = false)
      : tok_(&tokenizer), skip_special_(skip_special_tokens), strip_left_(tokenizer.decoder_strip_left_) {}

  // The text that `id` completes (possibly empty). Throws InvalidArgument for an id outside the
  // vocabulary (the stream is unchanged).
  std::string push(std::int32_t id) {
    tok_->check_id(id, "decode");
    std::string out;
    if (skip_special_ && tok_->is_special(id)) return out;
    const auto i = static_cast<std::size_t>(id);
    const std::string& bytes = tok_->bytes_[i];
    switch (tok_->decoder_) {
      case Tokenizer::DecoderKind::byte_level: {
        pending_ += bytes;
        const std::size_t kept = utf8_lossy_append(out, pending_, /*hold_incomplete=*/true);
        pending_.erase(0, kept);
        break;
      }
      case Tokenizer::DecoderKind::pieces:
        if (tok_->decoder_byte_fallback_ && tok_->byte_token_[i]) {
          pending_ += bytes;
          return out;
        }
        flush_byte_run(out);
        out += bytes;
        break;
      case Tokenizer::DecoderKind::join_with_spaces:
        if (!first_) out += ' ';
        out += bytes;
        break;
    }
    first_ = false;
    return strip(std::move(out));
  }

  // Whatever is held back: an incomplete UTF-8 tail becomes U+FFFD (as Hugging Face's lossy
  // decode does), a run of byte tokens its text. The stream may go on after a flush.
  std::string flush() {
    std::string out;
    if (tok_->decoder_ == Tokenizer::DecoderKind::pieces) {
      flush_byte_run(out);
    } else {
      utf8_lossy_append(out, pending_);
      pending_.clear();
    }
    return strip(std::move(out));
  }

 private:
  // A run of byte-fallback tokens: its bytes if they are valid UTF-8, else one U+FFFD per byte.
  void flush_byte_run(std::string& out) {
    if (pending_.empty()) return;
    bool valid = true;
    for (std::size_t i = 0; i < pending_.size() && valid;) {
      const std::size_t len = utf8_sequence_length(pending_, i);
      valid = len != 0;
      i += len;
    }
    if (valid) {
      out += pending_;
    } else {
      for (std::size_t k = 0; k < pending_.size(); ++k) out += kReplacementChar;
    }
    pending_.clear();
  }

  // The decoder's Strip: up to strip_left_ spaces off the start of the whole text.
  std::string strip(std::string out) {
    if (strip_left_ == 0 || out.empty()) return out;
    std::size_t k = 0;
    while (k < out.size() && k < strip_left_ && out[k] == ' ') ++k;
    strip_left_ = k < out.size() ? 0 : strip_left_ - k;
    out.erase(0, k);
    return out;
  }

  const Tokenizer* tok_;
  bool skip_special_;
  std::size_t strip_left_;
  bool first_ = true;
  std::string pending_;  // bytes held back
};

// ---- Tokenizer: implementation ---------------------------------------------------------------

inline std::string Tokenizer::decode(std::span<const std::int32_t> ids, bool skip_special_tokens) const {
  for (std::int32_t id : ids) check_id(id, "decode");
  if (decoder_ == DecoderKind::byte_level) {  // the common case, without the stream's bookkeeping
    std::string raw;
    for (std::int32_t id : ids)
      if (!(skip_special_tokens && is_special(id))) raw += bytes_[static_cast<std::size_t>(id)];
    return utf8_lossy(raw);
  }
  IncrementalDecoder d(*this, skip_special_tokens);
  std::string out;
  for (std::int32_t id : ids) out += d.push(id);
  out += d.flush();
  return out;
}

inline void Tokenizer::parse_tokenizer_json(const nlohmann::json& j) {
  if (!j.is_object()) fail("(top level)", "expected a JSON object");
  if (!j.contains("model") || !j["model"].is_object())
    fail("model", "missing (expected an object with a BPE vocabulary)");
  const nlohmann::json& m = j["model"];
  if (m.contains("type") && m["type"] != "BPE")
    fail("model.type", "\"" + m["type"].dump() + "\" is not supported (only BPE)");
  if (!m.contains("vocab") || !m["vocab"].is_object())
    fail("model.vocab", "missing (expected an object of token -> id)");
  if (!m.contains("merges") || !m["merges"].is_array()) fail("model.merges", "missing (expected an array)");
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0)
    fail("model.dropout", "BPE dropout is not supported");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(affix) && !m[affix].is_null() && !m[affix].get<std::string>().empty())
      fail(std::string("model.") + affix, "not supported (only empty)");
  read_vocab(m["vocab"], "model.vocab");
  std::vector<std::pair<std::string, std::string>> merges;
  merges.reserve(m["merges"].size());
  for (std::size_t i = 0; i < m["merges"].size(); ++i) {
    const nlohmann::json& e = m["merges"][i];
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    if (e.is_string()) {
      const std::string& s = e.get_ref<const std::string&>();
      const std::size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        fail(field, "expected two tokens separated by one space");
      merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      merges.emplace_back(e[0].get<std::string>(), e[1].get<std::string>());
    } else {
      fail(field, "expected \"a b\" or [\"a\", \"b\"]");
    }
  }
  set_merges(merges, [](std::size_t r) { return "model.merges[" + std::to_string(r) + "]"; });
  byte_fallback_ = m.value("byte_fallback", false);
  fuse_unk_ = m.value("fuse_unk", false);
  ignore_merges_ = m.value("ignore_merges", false);
  if (m.contains("unk_token") && !m["unk_token"].is_null()) {
    unk_ = vocab_lookup(m["unk_token"].get<std::string>());
    if (!unk_) fail("model.unk_token", "\"" + m["unk_token"].get<std::string>() + "\" is not in the vocabulary");
  }
  if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
    if (!j["added_tokens"].is_array()) fail("added_tokens", "expected an array");
    for (std::size_t i = 0; i < j["added_tokens"].size(); ++i) {
      const nlohmann::json& a = j["added_tokens"][i];
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        fail(field, "expected an object with an integer id and a string content");
      const std::int64_t id = a["id"].get<std::int64_t>();
      if (id < 0 || id > 0x7fffffff) fail(field, "id " + std::to_string(id) + " is out of range");
      AddedToken t{a["content"].get<std::string>(), static_cast<std::int32_t>(id), a.value("special", false),
                   a.value("lstrip", false), a.value("rstrip", false), a.value("normalized", false),
                   a.value("single_word", false)};
      if (t.content.empty()) fail(field, "empty content");
      const auto i32 = static_cast<std::size_t>(id);
      if (i32 < present_.size() && present_[i32] && tokens_[i32] != t.content)
        fail(field,
             "id " + std::to_string(id) + " is \"" + tokens_[i32] + "\" in the vocabulary, not \"" + t.content + "\"");
      add_added_token(std::move(t));
    }
  }
  parse_normalizer(j.value("normalizer", nlohmann::json()), "normalizer");
  parse_pre_tokenizer(j.value("pre_tokenizer", nlohmann::json()), "pre_tokenizer");
  parse_decoder(j.value("decoder", nlohmann::json()), "decoder");
  parse_post_processor(j.value("post_processor", nlohmann::json()), "post_processor");
  // BOS / EOS: the post-processor's leading token, else well-known added tokens (a model
  // directory's tokenizer_config.json overrides both in load()).
  if (!bos_ && prefix_ids_.size() == 1) bos_ = prefix_ids_[0];
  for (const char* name : {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"})
    if (!bos_)
      if (const AddedToken* a = added_named(name)) bos_ = a->id;
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>"})
    if (!eos_)
      if (const AddedToken* a = added_named(name)) eos_ = a->id;
  finish();
}

inline void Tokenizer::parse_normalizer(const nlohmann::json& n, const std::string& field) {
  if (n.is_null()) return;
  const std::string type = n.value("type", "");
  if (type == "Sequence") {
    const nlohmann::json& list = n.at("normalizers");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_normalizer(list[i], field + ".normalizers[" + std::to_string(i) + "]");
  } else if (type == "Prepend") {
    normalizer_.push_back({"", n.at("prepend").get<std::string>()});
  } else if (type == "Replace") {
    if (!n.at("pattern").contains("String")) fail(field + ".pattern", "only a String pattern is supported");
    std::string pattern = n["pattern"]["String"].get<std::string>();
    if (pattern.empty()) fail(field + ".pattern", "empty");
    normalizer_.push_back({std::move(pattern), n.at("content").get<std::string>()});
  } else {
    fail(field + ".type", "\"" + type + "\" is not supported (supported: Sequence, Prepend, Replace)");
  }
}

inline void Tokenizer::parse_pre_tokenizer(const nlohmann::json& p, const std::string& field) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  auto byte_level = [&](const nlohmann::json& b, const std::string& f, bool regex_allowed) {
    byte_level_ = true;
    byte_level_prefix_space_ = b.value("add_prefix_space", false);
    if (b.value("use_regex", true)) {
      if (!regex_allowed) fail(f + ".use_regex", "a second split after Split is not supported");
      pattern_ = Pattern::gpt2;
    }
  };
  if (type == "ByteLevel") {
    byte_level(p, field, true);
  } else if (type == "Sequence") {
    const nlohmann::json& list = p.at("pretokenizers");
    const bool split_then_byte_level =
        list.size() == 2 && list[0].value("type", "") == "Split" && list[1].value("type", "") == "ByteLevel";
    if (list.size() == 1) {
      parse_pre_tokenizer(list[0], field + ".pretokenizers[0]");
    } else if (split_then_byte_level) {
      const nlohmann::json& s = list[0];
      const std::string f = field + ".pretokenizers[0]";
      if (!s.contains("pattern") || !s["pattern"].contains("Regex")) fail(f + ".pattern", "expected a Regex");
      const std::string re = s["pattern"]["Regex"].get<std::string>();
      if (re == kGpt2Regex) {
        pattern_ = Pattern::gpt2;
      } else if (re == kLlama3Regex) {
        pattern_ = Pattern::llama3;
      } else {
        fail(f + ".pattern.Regex", "the regex " + nlohmann::json(re).dump() +
                                       " is not supported (only GPT-2's and Llama 3's pre-tokenizer patterns)");
      }
      if (s.value("behavior", "Isolated") != "Isolated") fail(f + ".behavior", "only Isolated is supported");
      if (s.value("invert", false)) fail(f + ".invert", "only false is supported");
      byte_level(list[1], field + ".pretokenizers[1]", false);
      if (byte_level_prefix_space_)
        fail(field + ".pretokenizers[1].add_prefix_space", "only false is supported after Split");
    } else {
      fail(field + ".pretokenizers", "not supported (supported: [Split, ByteLevel] or one pre-tokenizer)");
    }
  } else if (type == "Metaspace") {
    metaspace_ = true;
    metaspace_char_ = p.value("replacement", std::string(detail::kMetaspace));
    metaspace_split_ = p.value("split", true);
    const std::string scheme = p.contains("prepend_scheme") ? p["prepend_scheme"].get<std::string>()
                                                            : (p.value("add_prefix_space", true) ? "always" : "never");
    if (scheme == "always")
      metaspace_prepend_ = Prepend::always;
    else if (scheme == "first")
      metaspace_prepend_ = Prepend::first;
    else if (scheme == "never")
      metaspace_prepend_ = Prepend::never;
    else
      fail(field + ".prepend_scheme", "\"" + scheme + "\" is not one of always, first, never");
  } else {
    fail(field + ".type",
         "\"" + type + "\" is not supported (supported: ByteLevel, Sequence[Split, ByteLevel], Metaspace)");
  }
}

inline void Tokenizer::parse_decoder(const nlohmann::json& d, const std::string& field) {
  if (d.is_null()) return;
  const std::string type = d.value("type", "");
  if (type == "ByteLevel") {
    decoder_ = DecoderKind::byte_level;
  } else if (type == "Metaspace") {
    decoder_ = DecoderKind::pieces;
    decoder_replace_.emplace_back(d.value("replacement", std::string(detail::kMetaspace)), " ");
    const std::string scheme = d.contains("prepend_scheme") ? d["prepend_scheme"].get<std::string>()
                                                            : (d.value("add_prefix_space", true) ? "always" : "never");
    if (scheme != "never") decoder_strip_left_ = 1;
  } else if (type == "Sequence") {
    decoder_ = DecoderKind::pieces;
    bool fused = false;
    const nlohmann::json& list = d.at("decoders");
    for (std::size_t i = 0; i < list.size(); ++i) {
      const nlohmann::json& s = list[i];
      const std::string f = field + ".decoders[" + std::to_string(i) + "]";
      const std::string t = s.value("type", "");
      if (t == "Replace") {
        if (!s.at("pattern").contains("String")) fail(f + ".pattern", "only a String pattern is supported");
        decoder_replace_.emplace_back(s["pattern"]["String"].get<std::string>(), s.at("content").get<std::string>());
      } else if (t == "ByteFallback") {
        decoder_byte_fallback_ = true;
      } else if (t == "Fuse") {
        fused = true;
      } else if (t == "Strip") {
        if (!fused) fail(f, "Strip before Fuse (per token) is not supported");
        if (s.value("content", " ") != " " || s.value("stop", 0) != 0)
          fail(f, "only stripping spaces from the start is supported");
        decoder_strip_left_ = s.value("start", std::size_t{0});
      } else if (t == "ByteLevel" && list.size() == 1) {
        decoder_ = DecoderKind::byte_level;
      } else {
        fail(f + ".type", "\"" + t + "\" is not supported (supported: Replace, ByteFallback, Fuse, Strip)");
      }
    }
  } else if (type == "ByteFallback" || type == "Fuse") {
    decoder_ = DecoderKind::pieces;
    decoder_byte_fallback_ = type == "ByteFallback";
  } else {
    fail(field + ".type", "\"" + type + "\" is not supported (supported: ByteLevel, Metaspace, Sequence)");
  }
}

inline void Tokenizer::parse_post_processor(const nlohmann::json& p, const std::string& field) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  auto id_of = [&](const std::string& token, const std::string& f) {
    auto id = token_id(token);
    if (!id) fail(f, "the token \"" + token + "\" is not in the vocabulary");
    return *id;
  };
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence") {
    const nlohmann::json& list = p.at("processors");
    for (std::size_t i = 0; i < list.size(); ++i)
      parse_post_processor(list[i], field + ".processors[" + std::to_string(i) + "]");
  } else if (type == "TemplateProcessing") {
    if (!p.contains("single") || !p["single"].is_array()) fail(field + ".single", "missing");
    const nlohmann::json& specials = p.value("special_tokens", nlohmann::json::object());
    bool seen_a = false;
    for (std::size_t i = 0; i < p["single"].size(); ++i) {
      const nlohmann::json& item = p["single"][i];
      const std::string f = field + ".single[" + std::to_string(i) + "]";
      if (item.contains("Sequence")) {
        if (item["Sequence"].value("id", "A") != "A" || seen_a) fail(f, "only one sequence, $A, is supported");
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        const std::string name = item["SpecialToken"].at("id").get<std::string>();
        std::vector<std::int32_t> ids;
        if (specials.contains(name) && specials[name].contains("ids")) {
          for (const auto& v : specials[name]["ids"]) ids.push_back(v.get<std::int32_t>());
        } else {
          ids.push_back(id_of(name, f));
        }
        for (std::int32_t id : ids) check_id(id, (f + " special token").c_str());
        auto& dst = seen_a ? suffix_ids_ : prefix_ids_;
        dst.insert(dst.end(), ids.begin(), ids.end());
      } else {
        fail(f, "expected a Sequence or a SpecialToken");
      }
    }
    if (!seen_a) fail(field + ".single", "has no $A");
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    prefix_ids_.push_back(id_of(p.at("cls").at(0).get<std::string>(), field + ".cls"));
    suffix_ids_.push_back(id_of(p.at("sep").at(0).get<std::string>(), field + ".sep"));
  } else {
    fail(field + ".type", "\"" + type + "\" is not supported (supported: ByteLevel, TemplateProcessing, Sequence)");
  }
}

// Derived tables: raw bytes per id, flags, the added-token index.
inline void Tokenizer::finish() {
  const std::size_t n = tokens_.size();
  special_.assign(n, false);
  byte_token_.assign(n, false);
  bytes_.assign(n, std::string());
  for (const AddedToken& a : added_) special_[static_cast<std::size_t>(a.id)] = a.special;
  for (std::size_t i = 0; i < n; ++i) {
    if (!present_[i]) continue;
    std::string b = tokens_[i];
    if (decoder_ == DecoderKind::byte_level) {
      b = detail::byte_level_to_bytes(b);
    } else {
      const int v = detail::byte_fallback_value(b);
      if (decoder_byte_fallback_ && v >= 0) {
        byte_token_[i] = true;
        b.assign(1, static_cast<char>(v));
      } else {
        for (const auto& [from, to] : decoder_replace_) detail::replace_all(b, from, to);
      }
    }
    bytes_[i] = std::move(b);
  }
  metaspace_cut_safe_ = !byte_level_;
  for (std::size_t i = 0; i < n && metaspace_cut_safe_; ++i) {
    std::string_view t = tokens_[i];
    while (t.starts_with(detail::kMetaspace)) t.remove_prefix(detail::kMetaspace.size());
    if (t.find(detail::kMetaspace) != std::string_view::npos) metaspace_cut_safe_ = false;
  }
  byte_ids_.fill(-1);
  if (byte_level_) {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      utf8_append(s, detail::byte_to_code_point()[static_cast<std::size_t>(b)]);
      if (auto id = vocab_lookup(s)) byte_ids_[static_cast<std::size_t>(b)] = *id;
    }
    if (ignore_merges_)
      for (const auto& [token, id] : vocab_) raw_vocab_.emplace(detail::byte_level_to_bytes(token), id);
  }
  for (auto& v : added_by_first_byte_) v.clear();
  added_first_byte_.fill(false);
  for (std::size_t k = 0; k < added_.size(); ++k) {
    const auto b = static_cast<unsigned char>(added_[k].content[0]);
    added_by_first_byte_[b].push_back(static_cast<std::uint32_t>(k));
    added_first_byte_[b] = true;
  }
  for (auto& v : added_by_first_byte_)
    std::stable_sort(v.begin(), v.end(), [&](std::uint32_t x, std::uint32_t y) {
      return added_[x].content.size() > added_[y].content.size();
    });
}

inline void Tokenizer::read_special_token_names(const std::filesystem::path& file) {
  nlohmann::json j;
  try {
    j = io::parse_json_strict(detail::read_text_file(file));
  } catch (const InvalidArgument& e) {
    throw InvalidArgument(file.string() + " " + e.what());
  }
  if (!j.is_object()) throw InvalidArgument(file.string() + ": expected a JSON object");
  auto read = [&](const char* key, std::optional<std::int32_t>& dst) {
    if (!j.contains(key) || j[key].is_null()) return;
    const nlohmann::json& v = j[key];
    std::string name;
    if (v.is_string())
      name = v.get<std::string>();
    else if (v.is_object() && v.contains("content") && v["content"].is_string())
      name = v["content"].get<std::string>();
    else
      throw InvalidArgument(file.string() + ": " + key + ": expected a string or an object with \"content\"");
    auto id = token_id(name);
    if (!id) throw InvalidArgument(file.string() + ": " + key + ": \"" + name + "\" is not a token of " + source_);
    dst = id;
  };
  read("bos_token", bos_);
  read("eos_token", eos_);
}

// One stretch of text between added tokens: normalize, pre-tokenize, BPE each piece.
inline void Tokenizer::encode_segment(std::string_view segment, std::size_t offset, std::vector<std::int32_t>& ids,
                                      EncodeScratch& s) const {
  std::string_view text = segment;
  if (!normalizer_.empty()) {
    s.normalized.assign(segment);
    for (const NormalizerStep& step : normalizer_) {
      if (step.pattern.empty())
        s.normalized.insert(0, step.content);
      else
        detail::replace_all(s.normalized, step.pattern, step.content);
    }
    text = s.normalized;
  }
  if (metaspace_) {
    std::string m(text);
    detail::replace_all(m, " ", metaspace_char_);
    const bool prepend = metaspace_prepend_ == Prepend::always || (metaspace_prepend_ == Prepend::first && offset == 0);
    if (prepend && !std::string_view(m).starts_with(metaspace_char_)) m.insert(0, metaspace_char_);
    if (!metaspace_split_) {
      encode_words_split_at_metaspace(m, ids, s);
      return;
    }
    std::string_view v = m;
    std::size_t start = 0;  // pieces begin at each replacement character
    for (std::size_t hit = v.find(metaspace_char_, 1); hit != std::string_view::npos;
         hit = v.find(metaspace_char_, hit + 1)) {
      if (hit > start) encode_word(v.substr(start, hit - start), ids, s);
      start = hit;
    }
    encode_word(v.substr(start), ids, s);
    return;
  }
  if (byte_level_ && byte_level_prefix_space_ && !text.starts_with(' ')) {  // ByteLevel add_prefix_space
    s.piece.assign(1, ' ');
    s.piece.append(text);
    text = s.piece;
  }
  if (!pattern_) return encode_words_split_at_metaspace(text, ids, s);
  split_pretokens(*pattern_, text, [&](std::size_t b, std::size_t e) { encode_word(text.substr(b, e - b), ids, s); });
}

// A word without a pre-tokenizer's split: cut before each run of "▁" when that cannot change the
// result (see metaspace_cut_safe_).
inline void Tokenizer::encode_words_split_at_metaspace(std::string_view text, std::vector<std::int32_t>& ids,
                                                        EncodeScratch& s) const {
  if (!metaspace_cut_safe_) return encode_word(text, ids, s);
  const std::string_view m = detail::kMetaspace;
  std::size_t start = 0;
  for (std::size_t hit = text.find(m, 1); hit != std::string_view::npos; hit = text.find(m, hit + m.size())) {
    if (hit >= m.size() && text.substr(hit - m.size(), m.size()) == m) continue;  // inside a run
    encode_word(text.substr(start, hit - start), ids, s);
    start = hit;
  }
  encode_word(text.substr(start), ids, s);
}

// One pre-token: the cache, else BPE.
inline void Tokenizer::encode_word(std::string_view word, std::vector<std::int32_t>& ids, EncodeScratch& s) const {
  if (word.empty()) return;
  if (byte_level_ && word.size() == 1) {  // one byte: its own token, no lookup
    const std::int32_t id = byte_ids_[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  const bool cacheable = word.size() <= Cache::kMaxKeyBytes;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    auto it = cache_->map.find(word);
    if (it != cache_->map.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const std::size_t before = ids.size();
  bpe_word(word, ids, s);
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->map.size() >= Cache::kCapacity) cache_->map.clear();
    cache_->map.emplace(std::string(word),
                        std::vector<std::int32_t>(ids.begin() + static_cast<std::ptrdiff_t>(before), ids.end()));
  }
}

inline void Tokenizer::bpe_word(std::string_view word, std::vector<std::int32_t>& out, EncodeScratch& s) const {
  if (ignore_merges_) {
    const auto& whole = byte_level_ ? raw_vocab_ : vocab_;
    if (auto it = whole.find(word); it != whole.end()) {
      out.push_back(it->second);
      return;
    }
  }
  auto& sym = s.symbols;
  sym.clear();
  if (byte_level_) {
    for (char c : word) {
      const std::int32_t id = byte_ids_[static_cast<unsigned char>(c)];
      if (id >= 0)
        sym.push_back(id);
      else if (unk_ && !(fuse_unk_ && !sym.empty() && sym.back() == *unk_))
        sym.push_back(*unk_);
    }
  } else {
    bool last_unk = false;
    for (std::size_t i = 0; i < word.size();) {
      std::size_t len = utf8_sequence_length(word, i);
      if (len == 0) len = 1;
      const auto it = vocab_.find(word.substr(i, len));
      if (it != vocab_.end()) {
        sym.push_back(it->second);
        last_unk = false;
      } else {
        bool done = false;
        if (byte_fallback_) {  // every byte as <0xXX>, if the vocabulary has them all
          static constexpr char hex[] = "0123456789ABCDEF";
          const std::size_t mark = sym.size();
          char name[7] = {'<', '0', 'x', 0, 0, '>', 0};
          done = true;
          for (std::size_t k = 0; k < len && done; ++k) {
            const auto b = static_cast<unsigned char>(word[i + k]);
            name[3] = hex[b >> 4];
            name[4] = hex[b & 15];
            const auto bt = vocab_.find(std::string_view(name, 6));
            if (bt == vocab_.end())
              done = false;
            else
              sym.push_back(bt->second);
          }
          if (!done)
            sym.resize(mark);
          else
            last_unk = false;
        }
        if (!done && unk_) {  // no unk_token: the character is dropped, as Hugging Face does
          if (!(fuse_unk_ && last_unk)) sym.push_back(*unk_);
          last_unk = true;
        }
      }
      i += len;
    }
  }
  bpe_merge(merges_, sym, s.bpe);
  out.insert(out.end(), sym.begin(), sym.end());
}

}  // namespace nnx::text
