// Tokenizers against independent references: GPT-2's real vocabulary (both loaders) and small
// Llama 3 style and Llama 2 (SentencePiece byte-fallback) style tokenizer.json files, with the
// ids Hugging Face's tokenizers.js gives (cross-checked against js-tiktoken for GPT-2; see
// gen_fixtures.mjs). Byte-exact round trips for arbitrary UTF-8, invalid UTF-8 rejected by
// offset, incremental decoding equal to decode, and bad files named in errors.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <filesystem>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <nnx/text.hpp>

#include "text_test_util.hpp"

namespace {

using nnx::text::IncrementalDecoder;
using nnx::text::Tokenizer;
using Ids = std::vector<std::int32_t>;
using namespace text_test;

Ids ids_of(const nlohmann::json& j) { return j.get<Ids>(); }

// Every push's output (and the flush's) is valid UTF-8, and together they are decode(ids).
void check_incremental(const Tokenizer& tok, const Ids& ids, bool skip) {
  IncrementalDecoder d(tok, skip);
  std::string streamed;
  for (std::int32_t id : ids) {
    const std::string piece = d.push(id);
    CHECK_NOTHROW(nnx::text::validate_utf8(piece, "piece"));
    streamed += piece;
  }
  streamed += d.flush();
  CHECK(streamed == tok.decode(ids, skip));
}

// A random string of valid UTF-8: code points from all planes, weighted to ASCII and spaces.
std::string random_utf8(std::mt19937& rng, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) {
    std::uint32_t cp = 0;
    switch (rng() % 6) {
      case 0:
        cp = 0x20 + rng() % 95;
        break;
      case 1:
        cp = " \n\t\r"[rng() % 4];
        break;
      case 2:
        cp = 0x80 + rng() % 0x780;
        break;
      case 3:
        cp = 0x800 + rng() % 0xF800;
        break;
      case 4:
        cp = 0x10000 + rng() % 0x100000;
        break;
      default:
        cp = rng() % 0x80;
        break;
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
    nnx::text::utf8_append(s, cp);
  }
  return s;
}

const Tokenizer& by_name(const std::string& name) {
  if (name == "gpt2") return gpt2_json();
  if (name == "llama3_mini") return llama3_mini();
  if (name == "llama2_metaspace") return llama2_metaspace();
  return llama2_mini();
}

}  // namespace

TEST_CASE("GPT-2 encodes token for token as the references, from vocab.json + merges.txt and from tokenizer.json",
          "[text]") {
  const auto& cases = fixtures()["gpt2"]["encode"];
  REQUIRE(cases.size() > 100);
  for (const Tokenizer* tok : {&gpt2_legacy(), &gpt2_json()}) {
    for (const auto& c : cases) {
      const std::string text = c["text"].get<std::string>();
      INFO(tok->source_name() << ": " << nlohmann::json(text).dump());
      CHECK(tok->encode(text) == ids_of(c["ids"]));
    }
  }
}

TEST_CASE("Llama 3 style (Split regex + ByteLevel, ignore_merges, BOS template) encodes as tokenizers.js", "[text]") {
  for (const auto& c : fixtures()["llama3_mini"]["encode"]) {
    const std::string text = c["text"].get<std::string>();
    INFO(nlohmann::json(text).dump());
    const Ids want = ids_of(c["ids"]);
    CHECK(llama3_mini().encode(text) == want);
    CHECK(llama3_mini().encode(text, false) == Ids(want.begin() + 1, want.end()));
  }
}

TEST_CASE("Llama 2 style (SentencePiece BPE, byte fallback, fuse_unk) encodes as tokenizers.js", "[text]") {
  bool saw_byte_fallback = false;
  for (const auto& c : fixtures()["llama2_mini"]["encode"]) {
    const std::string text = c["text"].get<std::string>();
    INFO(nlohmann::json(text).dump());
    const Ids want = ids_of(c["ids"]);
    CHECK(llama2_mini().encode(text) == want);
    for (std::int32_t id : want) saw_byte_fallback |= id >= 3 && id < 259;
  }
  CHECK(saw_byte_fallback);
}

TEST_CASE("Llama 2 converted with a Metaspace pre-tokenizer (prepend_scheme first) encodes as tokenizers.js",
          "[text]") {
  for (const auto& c : fixtures()["llama2_metaspace"]["encode"]) {
    const std::string text = c["text"].get<std::string>();
    INFO(nlohmann::json(text).dump());
    CHECK(llama2_metaspace().encode(text) == ids_of(c["ids"]));
  }
}

TEST_CASE("SentencePiece text cut at its spaces encodes as the uncut text", "[text]") {
  // A vocabulary token with "▁" inside makes the cut unsafe: the tokenizer then merges the
  // whole text as one word, with the same ids here (no merge makes that token).
  nlohmann::json j = nlohmann::json::parse(read_file(data_dir() / "llama2_mini" / "tokenizer.json"));
  j["model"]["vocab"]["x\xE2\x96\x81y"] = j["model"]["vocab"].size();
  const Tokenizer uncut = Tokenizer::from_tokenizer_json(j.dump(), "llama2_mini+x▁y");
  for (const auto& c : fixtures()["llama2_mini"]["encode"]) {
    const std::string text = c["text"].get<std::string>();
    INFO(nlohmann::json(text).dump());
    CHECK(uncut.encode(text) == ids_of(c["ids"]));
  }
  CHECK(llama2_mini().encode("a b  c   d") == uncut.encode("a b  c   d"));
}

TEST_CASE("decode matches the references", "[text]") {
  for (const char* name : {"gpt2", "llama3_mini", "llama2_mini", "llama2_metaspace"}) {
    const Tokenizer& tok = by_name(name);
    const bool skip = std::string(name) == "llama3_mini";  // the fixture decodes it with skip_special_tokens
    for (const auto& c : fixtures()[name]["decode"]) {
      INFO(name << ": " << c["ids"].dump());
      CHECK(tok.decode(ids_of(c["ids"]), skip) == c["text"].get<std::string>());
    }
  }
  CHECK(gpt2_legacy().decode(Ids{15496, 995}) == "Hello world");
}

TEST_CASE("decode(encode(s)) is s byte for byte, for tricky and random UTF-8", "[text]") {
  std::mt19937 rng(1234);
  std::vector<std::string> texts;
  for (const auto& c : fixtures()["gpt2"]["encode"]) texts.push_back(c["text"].get<std::string>());
  for (int i = 0; i < 300; ++i) texts.push_back(random_utf8(rng, 1 + static_cast<int>(rng() % 60)));
  for (const std::string& s : texts) {
    INFO(nlohmann::json(s).dump());
    CHECK(gpt2_legacy().decode(gpt2_legacy().encode(s)) == s);
    CHECK(llama3_mini().decode(llama3_mini().encode(s), true) == s);
    if (s.find("<|endoftext|>") == std::string::npos) {  // no added tokens: SentencePiece prepends per segment
      CHECK(llama2_mini().decode(llama2_mini().encode(s), true) == s);
      CHECK(llama2_mini().decode(llama2_mini().encode(s, false)) == s);
      // Metaspace prepends "▁" only when the text does not start with a space: " x" decodes as "x".
      if (!s.starts_with(' ')) CHECK(llama2_metaspace().decode(llama2_metaspace().encode(s), true) == s);
    }
  }
}

TEST_CASE("invalid UTF-8 is rejected with the byte offset", "[text]") {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"abc\xFF"
       "def",
       "byte offset 3 (byte 0xFF)"},
      {"ab\xE2\x82", "byte offset 2 (byte 0xE2)"},        // truncated at the end
      {"\xC0\xAF", "byte offset 0 (byte 0xC0)"},          // overlong
      {"xy\xED\xA0\x80", "byte offset 2 (byte 0xED)"},    // a surrogate
      {"\xF4\x90\x80\x80", "byte offset 0 (byte 0xF4)"},  // past U+10FFFF
      {"0123456789\x80", "byte offset 10 (byte 0x80)"},   // a lone continuation, after the 8-byte fast path
  };
  for (const auto& [text, where] : bad) {
    expect_invalid([&] { (void)gpt2_legacy().encode(text); }, {"invalid UTF-8", where});
    expect_invalid([&] { (void)llama2_mini().encode(text); }, {"invalid UTF-8", where, "llama2_mini"});
  }
}

TEST_CASE("byte-level decode turns invalid bytes into U+FFFD as from_utf8_lossy does", "[text]") {
  const Tokenizer& t = gpt2_legacy();
  auto byte_id = [&](unsigned char b) {
    return *t.token_id(nnx::text::detail::bytes_to_byte_level(std::string(1, static_cast<char>(b))));
  };
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(t.decode(Ids{byte_id(0xE2), byte_id(0x82), byte_id(0xAC)}) == "\xE2\x82\xAC");
  CHECK(t.decode(Ids{byte_id(0xE2), byte_id(0x82), byte_id('a')}) == fffd + "a");  // one for the maximal subpart
  CHECK(t.decode(Ids{byte_id(0xC0), byte_id(0xAF)}) == fffd + fffd);
  CHECK(t.decode(Ids{byte_id(0xF0), byte_id(0x9F), byte_id(0x98)}) == fffd);  // cut off at the end
  CHECK(t.decode(Ids{byte_id(0xED), byte_id(0xA0), byte_id(0x80)}) == fffd + fffd + fffd);
  CHECK(t.token_bytes(byte_id(0xFF)) == "\xFF");
}

TEST_CASE("SentencePiece decode: byte runs, the stripped leading space, skip_special_tokens", "[text]") {
  const Tokenizer& t = llama2_mini();
  auto b = [](int v) { return 3 + v; };  // <0xXX> ids
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(t.decode(Ids{b(0xE2), b(0x82), b(0xAC)}) == "\xE2\x82\xAC");
  // Hugging Face's ByteFallback: an invalid run is one U+FFFD per byte, valid prefix or not.
  CHECK(t.decode(Ids{b(0xE2), b(0x82), b(0xAC), b(0xFF)}) == fffd + fffd + fffd + fffd);
  const std::int32_t hello = t.token_id(
                                  "\xE2\x96\x81"
                                  "T")
                                 .value();  // "▁T"
  CHECK(t.decode(Ids{hello}) == "T");
  CHECK(t.decode(Ids{hello, hello}) == "T T");
  CHECK(t.decode(Ids{1, hello}) == "<s> T");
  CHECK(t.decode(Ids{1, hello}, true) == "T");
  CHECK(t.decode(t.encode("Hello world")) == "<s> Hello world");
  CHECK(t.decode(t.encode("Hello world"), true) == "Hello world");
  CHECK(t.token_bytes(hello) == " T");
  CHECK(t.token_bytes(b(0xAB)) == "\xAB");
}

TEST_CASE("incremental decoding equals decode for any ids, never emitting half a character", "[text]") {
  std::mt19937 rng(99);
  for (const char* name : {"gpt2", "llama3_mini", "llama2_mini", "llama2_metaspace"}) {
    const Tokenizer& tok = by_name(name);
    const auto n = static_cast<std::uint32_t>(tok.vocab_size());
    for (const auto& c : fixtures()[name]["encode"]) {
      check_incremental(tok, ids_of(c["ids"]), false);
      check_incremental(tok, ids_of(c["ids"]), true);
    }
    for (int round = 0; round < 300; ++round) {
      Ids ids;
      const int len = 1 + static_cast<int>(rng() % 20);
      for (int k = 0; k < len; ++k) {
        // Mostly byte tokens (GPT-2: ids 0-255 are single bytes; Llama 2: 3-258), to make invalid UTF-8.
        const std::uint32_t base = std::string(name).starts_with("llama2") ? 3 : 0;
        ids.push_back(static_cast<std::int32_t>(rng() % 3 ? base + rng() % 256 : rng() % n));
      }
      INFO(name << ": " << nlohmann::json(ids).dump());
      check_incremental(tok, ids, false);
      check_incremental(tok, ids, true);
    }
  }
}

TEST_CASE("incremental decoding streams an emoji as one piece, and holds the leading space rule", "[text]") {
  const Tokenizer& t = gpt2_legacy();
  const Ids ids = t.encode("a😀b");
  IncrementalDecoder d(t);
  std::vector<std::string> pieces;
  for (std::int32_t id : ids) pieces.push_back(d.push(id));
  pieces.push_back(d.flush());
  std::string joined;
  for (const auto& p : pieces) {
    CHECK((p.empty() || p == "a" || p == "\xF0\x9F\x98\x80" || p == "b"));
    joined += p;
  }
  CHECK(joined == "a😀b");

  const Tokenizer& sp = llama2_mini();
  IncrementalDecoder s(sp, true);
  std::string out;
  for (std::int32_t id : sp.encode(" two spaces")) out += s.push(id);
  out += s.flush();
  CHECK(out == " two spaces");
  CHECK_THROWS_AS(s.push(static_cast<std::int32_t>(sp.vocab_size())), nnx::InvalidArgument);
}

TEST_CASE("vocabulary lookups, special tokens, BOS and EOS", "[text]") {
  const Tokenizer& g = gpt2_legacy();
  CHECK(g.vocab_size() == 50257);
  CHECK(g.token_id("<|endoftext|>") == 50256);
  CHECK(g.token_id("\xC4\xA0the") == 262);  // "Ġthe"
  CHECK_FALSE(g.token_id("no such token").has_value());
  CHECK(g.bos_id() == 50256);
  CHECK(g.eos_id() == 50256);
  CHECK(g.is_special(50256));
  CHECK_FALSE(g.is_special(262));
  CHECK(g.token_bytes(262) == " the");
  CHECK(g.encode("a<|endoftext|>b") == Ids{64, 50256, 65});
  CHECK(g.decode(Ids{64, 50256, 65}, true) == "ab");
  CHECK(gpt2_json().bos_id() == 50256);
  CHECK(gpt2_json().eos_id() == 50256);

  const Tokenizer& l3 = llama3_mini();
  const std::int32_t begin = *l3.token_id("<|begin_of_text|>");
  CHECK(l3.bos_id() == begin);
  CHECK(l3.eos_id() == l3.token_id("<|eot_id|>"));  // tokenizer_config.json names it
  CHECK(l3.encode("hi").front() == begin);
  CHECK(l3.is_special(begin));
  CHECK_FALSE(l3.is_special(*l3.token_id("<tool>")));  // an added token, not special
  CHECK(l3.decode(l3.encode("<tool>x"), true) == "<tool>x");

  const Tokenizer& l2 = llama2_mini();
  CHECK(l2.bos_id() == 1);
  CHECK(l2.eos_id() == 2);
  CHECK(l2.encode("").size() == 1);
  CHECK(l2.encode("", false).empty());
  // Without its directory, the tokenizer.json alone: BOS from the template, EOS from </s>.
  const Tokenizer bare = Tokenizer::load(data_dir() / "llama2_mini" / "tokenizer.json");
  CHECK(bare.bos_id() == 1);
  CHECK(bare.eos_id() == 2);
  expect_invalid([&] { (void)l2.decode(Ids{5, 100000}); }, {"id 100000", "not in the vocabulary"});
  expect_invalid([&] { (void)l2.token_bytes(-1); }, {"id -1"});
}

TEST_CASE("added tokens split the text first, longest match, and are never merged across", "[text]") {
  const Tokenizer& l3 = llama3_mini();
  const std::int32_t eot = *l3.token_id("<|eot_id|>");
  const Ids a = l3.encode("ab<|eot_id|>cd", false);
  Ids left = l3.encode("ab", false), right = l3.encode("cd", false);
  Ids want = left;
  want.push_back(eot);
  want.insert(want.end(), right.begin(), right.end());
  CHECK(a == want);
  CHECK(l3.encode("<|eot_id|", false) != Ids{eot});
}

TEST_CASE("added tokens with lstrip, rstrip and single_word (Hugging Face's own test cases)", "[text]") {
  // tokenizers/tests/added_tokens.rs: "I saw a <mask> 😺" on GPT-2's byte-level vocabulary.
  auto with_mask = [](bool add_prefix_space, const char* flag) {
    nlohmann::json j = nlohmann::json::parse(gpt2_tokenizer_json());
    j["pre_tokenizer"]["add_prefix_space"] = add_prefix_space;
    j["added_tokens"].push_back({{"id", 50257}, {"content", "<mask>"}, {"single_word", false}, {"lstrip", false},
                                 {"rstrip", false}, {"normalized", false}, {"special", true}});
    j["added_tokens"][1][flag] = true;
    return Tokenizer::from_tokenizer_json(j.dump(), std::string("gpt2+<mask> ") + flag);
  };
  const Tokenizer& g = gpt2_legacy();
  auto cat = [](Ids a, const Ids& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const std::string cat_emoji = "\xF0\x9F\x98\xBA";
  // lstrip: ["ĠI", "Ġsaw", "Ġa", "<mask>", "ĠðŁĺ", "º"]
  const Tokenizer lstrip = with_mask(true, "lstrip");
  CHECK(lstrip.encode("I saw a <mask> " + cat_emoji) ==
        cat(cat(g.encode(" I saw a"), Ids{50257}), g.encode(" " + cat_emoji)));
  // rstrip: ["I", "Ġsaw", "Ġa", "Ġ", "<mask>", "ðŁĺ", "º"]
  const Tokenizer rstrip = with_mask(false, "rstrip");
  CHECK(rstrip.encode("I saw a <mask> " + cat_emoji) ==
        cat(cat(g.encode("I saw a "), Ids{50257}), g.encode(cat_emoji)));
  const Tokenizer single = with_mask(false, "single_word");
  CHECK(single.encode("a <mask> b") == cat(cat(g.encode("a "), Ids{50257}), g.encode(" b")));
  CHECK(single.encode("a<mask> b") == g.encode("a<mask> b"));
  CHECK(single.encode("a <mask>b") == g.encode("a <mask>b"));
  CHECK(single.encode("<mask>") == Ids{50257});
}

TEST_CASE("the pre-tokenizer patterns split as the regexes do", "[text]") {
  auto split = [](nnx::text::Pattern p, std::string_view s) {
    std::vector<std::string> out;
    nnx::text::split_pretokens(p, s, [&](std::size_t b, std::size_t e) { out.emplace_back(s.substr(b, e - b)); });
    return out;
  };
  using P = nnx::text::Pattern;
  using V = std::vector<std::string>;
  CHECK(split(P::gpt2, "I'm they'LL a   b\n\n c  ") ==
        V{"I", "'m", " they", "'", "LL", " a", "  ", " b", "\n\n", " c", "  "});
  CHECK(split(P::gpt2, "12345678 x1") == V{"12345678", " x", "1"});
  CHECK(split(P::llama3, "I'm they'LL 12345678") == V{"I", "'m", " they", "'LL", " ", "123", "456", "78"});
  CHECK(split(P::llama3, "a \n\n b...\n(x") == V{"a", " \n\n", " b", "...\n", "(x"});
  CHECK(split(P::llama3, "x  \ty") == V{"x", "  ", "\ty"});  // \s+(?!\S) stops before the tab
  CHECK(nnx::text::char_class(U'é') == nnx::text::CharClass::letter);
  CHECK(nnx::text::char_class(0x0663) == nnx::text::CharClass::number);  // ARABIC-INDIC DIGIT THREE
  CHECK(nnx::text::char_class(0x3000) == nnx::text::CharClass::space);
  CHECK(nnx::text::char_class(0x1F600) == nnx::text::CharClass::other);
  CHECK(nnx::text::char_class(0x0301) == nnx::text::CharClass::other);  // combining mark: \p{M}
}

TEST_CASE("a long word without spaces (SentencePiece has no pre-tokenizer) encodes in O(n log n)", "[text]") {
  std::string text;
  for (int i = 0; i < 20000; ++i) text += "thequickbrownfox"[i % 16];
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = llama2_mini().encode(text, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(llama2_mini().decode(ids) == text);
  CHECK(seconds < 2.0);
}

TEST_CASE("a copy of a tokenizer outlives the original", "[text]") {
  std::optional<Tokenizer> copy;
  {
    const Tokenizer original = Tokenizer::load(data_dir() / "llama3_mini");
    copy = original;
  }
  CHECK(copy->encode("a<|eot_id|>b") == llama3_mini().encode("a<|eot_id|>b"));
  CHECK(copy->decode(copy->encode("héllo")) == "<|begin_of_text|>héllo");
}

TEST_CASE("one tokenizer encodes from several threads at once (the shared cache)", "[text]") {
  const Tokenizer& t = gpt2_legacy();
  const std::string prose = read_file(data_dir() / "prose.txt");
  const Ids want = t.encode(prose);
  std::vector<Ids> got(4);
  std::vector<std::thread> threads;
  for (std::size_t k = 0; k < got.size(); ++k)
    threads.emplace_back([&, k] {
      for (int r = 0; r < 20; ++r) got[k] = t.encode(prose);
    });
  for (auto& th : threads) th.join();
  for (const Ids& g : got) CHECK(g == want);
}

// The real Llama 3 and Llama 2 vocabularies (see gen_real_checks.mjs): hidden, run when
// NNX_REAL_TOKENIZERS names the directory the script wrote.
TEST_CASE("real Llama 3 and Llama 2 vocabularies encode as tokenizers.js", "[.][real]") {
  const char* dir = std::getenv("NNX_REAL_TOKENIZERS");
  if (!dir) {
    WARN("NNX_REAL_TOKENIZERS is not set: nothing checked");
    return;
  }
  for (const char* name : {"llama3", "llama2"}) {
    const Tokenizer tok = Tokenizer::load(std::filesystem::path(dir) / name);
    const nlohmann::json cases = nlohmann::json::parse(read_file(std::filesystem::path(dir) / name / "cases.json"));
    REQUIRE(cases.size() > 100);
    for (const auto& c : cases) {
      const std::string text = c["text"].get<std::string>();
      INFO(name << ": " << nlohmann::json(text).dump());
      CHECK(tok.encode(text) == ids_of(c["ids"]));
    }
  }
}
