// tokenize — text to token ids and back with a model's tokenizer.
//
//   tokenize --model PATH --text TEXT [--no-special]      prints the ids: 15496,995
//   tokenize --model PATH --text-file FILE [--no-special]  the same for a file's text ("-": stdin)
//   tokenize --model PATH --ids 1,2,3 [--skip-special]    prints the text, then a newline
//   tokenize --model PATH --info                          vocabulary size, BOS and EOS
//   tokenize --help
//
// PATH is a Hugging Face model directory (tokenizer.json, else vocab.json + merges.txt; its
// tokenizer_config.json names BOS and EOS) or a tokenizer.json file. --no-special encodes without
// the tokens the tokenizer's post-processor adds (Llama's BOS); added tokens written in the text,
// such as <|endoftext|>, are recognised either way. --skip-special leaves special tokens out of
// the decoded text. Any error (a missing or unsupported tokenizer, invalid UTF-8 with its byte
// offset, an id outside the vocabulary, bad usage) is one line on stderr and exit code 2.
#include <algorithm>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <nnx/text.hpp>

#include "cli.hpp"

namespace {

using cli::UsageError;

constexpr const char* kUsage =
    "usage: tokenize --model PATH (--text TEXT | --text-file FILE | --ids 1,2,3 | --info)\n"
    "                [--no-special] [--skip-special]\n";

struct Args {
  std::filesystem::path model;
  std::optional<std::string> text, text_file, ids;
  bool info = false, no_special = false, skip_special = false, help = false;
};

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      a.help = true;
      return a;
    }
    if (flag == "--info" || flag == "--no-special" || flag == "--skip-special") {
      (flag == "--info" ? a.info : flag == "--no-special" ? a.no_special : a.skip_special) = true;
      continue;
    }
    if (flag != "--model" && flag != "--text" && flag != "--text-file" && flag != "--ids")
      throw UsageError("unknown option '" + flag + "' (see --help)");
    if (i + 1 >= argc) throw UsageError(flag + ": missing value");
    const std::string value = argv[++i];
    if (flag == "--model") {
      a.model = value;
    } else if (flag == "--text") {
      a.text = value;
    } else if (flag == "--text-file") {
      a.text_file = value;
    } else {
      a.ids = value;
    }
  }
  if (a.model.empty()) throw UsageError("--model is required (see --help)");
  const int modes = (a.text ? 1 : 0) + (a.text_file ? 1 : 0) + (a.ids ? 1 : 0) + (a.info ? 1 : 0);
  if (modes != 1) throw UsageError("give exactly one of --text, --text-file, --ids, --info");
  if (a.no_special && !(a.text || a.text_file)) throw UsageError("--no-special goes with --text or --text-file");
  if (a.skip_special && !a.ids) throw UsageError("--skip-special goes with --ids");
  return a;
}

std::vector<std::int32_t> parse_ids(const std::string& text) {
  std::vector<std::int32_t> ids;
  if (text.empty()) return ids;
  for (std::size_t begin = 0; begin <= text.size();) {
    const std::size_t comma = std::min(text.find(',', begin), text.size());
    const std::string item = text.substr(begin, comma - begin);
    begin = comma + 1;
    const std::int64_t id = cli::parse_int("--ids", item, 0);
    if (id > INT32_MAX) throw UsageError("--ids: '" + item + "' is too large for a token id");
    ids.push_back(static_cast<std::int32_t>(id));
  }
  return ids;
}

std::string read_all(const std::string& file) {
  if (file == "-") return {std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
  std::ifstream in(file, std::ios::binary);
  if (!in) throw UsageError("--text-file: cannot open '" + file + "'");
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args args = parse_args(argc, argv);
    if (args.help) {
      std::cout << kUsage;
      return 0;
    }
    const nnx::text::Tokenizer tok = nnx::text::Tokenizer::load(args.model);
    if (args.info) {
      auto id = [](std::optional<std::int32_t> v) { return v ? std::to_string(*v) : std::string("none"); };
      std::cout << "vocab_size " << tok.vocab_size() << "\nbos " << id(tok.bos_id()) << "\neos " << id(tok.eos_id())
                << "\n";
      return 0;
    }
    if (args.ids) {
      std::cout << tok.decode(parse_ids(*args.ids), args.skip_special) << "\n";
      return 0;
    }
    const std::string text = args.text ? *args.text : read_all(*args.text_file);
    const std::vector<std::int32_t> ids = tok.encode(text, !args.no_special);
    std::string line;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      if (i) line += ',';
      line += std::to_string(ids[i]);
    }
    std::cout << line << "\n";
    return 0;
  } catch (const std::exception& e) {
    return cli::report_error("tokenize", e);
  }
}
