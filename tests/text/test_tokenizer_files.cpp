// Bad tokenizer files and unsupported configurations: InvalidArgument naming the file and the
// field, never a crash or a silent approximation.
#include <catch2/catch.hpp>

#include <string>

#include <nlohmann/json.hpp>

#include <nnx/text.hpp>

#include "text_test_util.hpp"

namespace {

using nlohmann::json;
using nnx::text::Tokenizer;
using namespace text_test;

json mini() { return json::parse(read_file(data_dir() / "llama3_mini" / "tokenizer.json")); }

void expect_json_error(const json& j, std::initializer_list<std::string> parts) {
  expect_invalid([&] { (void)Tokenizer::from_tokenizer_json(j.dump(), "bad/tokenizer.json"); }, parts);
}

}  // namespace

TEST_CASE("corrupt or incomplete tokenizer.json is an error naming the file", "[text]") {
  expect_invalid([] { (void)Tokenizer::from_tokenizer_json("{\"model\": ", "bad/tokenizer.json"); },
                 {"bad/tokenizer.json", "not valid JSON"});
  expect_invalid([] { (void)Tokenizer::from_tokenizer_json("[1, 2]", "bad/tokenizer.json"); },
                 {"bad/tokenizer.json", "expected a JSON object"});
  json j = mini();
  j.erase("model");
  expect_json_error(j, {"bad/tokenizer.json", "model", "missing"});
  j = mini();
  j["model"].erase("vocab");
  expect_json_error(j, {"bad/tokenizer.json", "model.vocab", "missing"});
  j = mini();
  j["model"]["merges"].push_back(json::array({"nosuch", "x"}));
  expect_json_error(j, {"bad/tokenizer.json", "model.merges[", "\"nosuch\" is not in the vocabulary"});
  j = mini();
  j["model"]["merges"][0] = "just-one-token";
  expect_json_error(j, {"model.merges[0]", "two tokens"});
  j = mini();
  j["model"]["vocab"]["dup"] = 5;
  expect_json_error(j, {"model.vocab", "id 5 is given to both"});
  j = mini();
  j["model"]["vocab"]["neg"] = -1;
  expect_json_error(j, {"model.vocab", "\"neg\""});
  j = mini();
  j["model"]["unk_token"] = "<nope>";
  expect_json_error(j, {"model.unk_token", "<nope>"});
}

TEST_CASE("unsupported configurations are refused, naming the field", "[text]") {
  json j = mini();
  j["model"]["type"] = "WordPiece";
  expect_json_error(j, {"bad/tokenizer.json", "model.type", "WordPiece", "only BPE"});
  j = mini();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\w+";
  expect_json_error(j, {"pre_tokenizer.pretokenizers[0].pattern.Regex", "not supported"});
  j = mini();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed";
  expect_json_error(j, {"pre_tokenizer.pretokenizers[0].behavior"});
  j = mini();
  j["normalizer"] = {{"type", "NFC"}};
  expect_json_error(j, {"normalizer.type", "NFC"});
  j = mini();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  expect_json_error(j, {"pre_tokenizer.type", "Whitespace"});
  j = mini();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_json_error(j, {"decoder.type", "WordPiece"});
  j = mini();
  j["post_processor"] = {{"type", "Unknown"}};
  expect_json_error(j, {"post_processor.type", "Unknown"});
  j = mini();
  j["model"]["dropout"] = 0.1;
  expect_json_error(j, {"model.dropout"});
}

TEST_CASE("legacy vocab.json + merges.txt errors name the file and line", "[text]") {
  const std::string vocab = R"({"a": 0, "b": 1, "ab": 2})";
  const Tokenizer ok = Tokenizer::from_vocab_merges(vocab, "#version: 0.2\na b\n", "tiny");
  CHECK(ok.encode("abab") == std::vector<std::int32_t>{2, 2});
  CHECK_FALSE(ok.bos_id().has_value());
  expect_invalid([&] { (void)Tokenizer::from_vocab_merges(vocab, "#version: 0.2\na c\n", "tiny"); },
                 {"tiny", "merges.txt line 2", "\"c\" is not in the vocabulary"});
  expect_invalid([&] { (void)Tokenizer::from_vocab_merges(vocab, "a b c\n", "tiny"); }, {"merges.txt line 1"});
  expect_invalid([&] { (void)Tokenizer::from_vocab_merges("{", "", "tiny"); },
                 {"tiny", "vocab.json", "not valid JSON"});
  expect_invalid([] { (void)Tokenizer::load(data_dir() / "no_such_model"); }, {"no_such_model", "no such file"});
  expect_invalid([] { (void)Tokenizer::load(data_dir()); }, {"no tokenizer.json"});
}
