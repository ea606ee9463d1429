// examples/tokenize, run as a user runs it: ids out for text in, text out for ids in, the same
// as the library; errors as one line and exit code 2.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "../support/run_command.hpp"
#include "text_test_util.hpp"

using test_support::example_program;

namespace {

using test_support::run_command;
using namespace text_test;

std::string q(const std::string& s) {  // single-quoted for the shell
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string tokenize(const std::string& args) { return q(example_program("tokenize")) + " " + args; }

std::string joined(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);
  }
  return s;
}

}  // namespace

TEST_CASE("tokenize --text prints the ids comma-separated; --ids prints the text", "[text][cli]") {
  const std::string gpt2 = (data_dir() / "gpt2").string();
  auto r = run_command(tokenize("--model " + q(gpt2) + " --text " + q("Hello world, I'm here  ")));
  CHECK(r.code == 0);
  CHECK(r.out == joined(gpt2_legacy().encode("Hello world, I'm here  ")) + "\n");
  CHECK(r.err.empty());
  r = run_command(tokenize("--model " + q(gpt2) + " --ids 15496,995,50256"));
  CHECK(r.code == 0);
  CHECK(r.out == "Hello world<|endoftext|>\n");
  r = run_command(tokenize("--model " + q(gpt2) + " --ids 15496,995,50256 --skip-special"));
  CHECK(r.out == "Hello world\n");

  const std::string llama2 = (data_dir() / "llama2_mini").string();
  r = run_command(tokenize("--model " + q(llama2) + " --text " + q("the end")));
  CHECK(r.out == joined(llama2_mini().encode("the end")) + "\n");
  r = run_command(tokenize("--model " + q(llama2) + " --text " + q("the end") + " --no-special"));
  CHECK(r.out == joined(llama2_mini().encode("the end", false)) + "\n");
  r = run_command(tokenize("--model " + q(llama2 + "/tokenizer.json") + " --info"));
  CHECK(r.out == "vocab_size " + std::to_string(llama2_mini().vocab_size()) + "\nbos 1\neos 2\n");
  r = run_command("printf 'from stdin' | " + tokenize("--model " + q(gpt2) + " --text-file -"));
  CHECK(r.out == joined(gpt2_legacy().encode("from stdin")) + "\n");
}

TEST_CASE("tokenize errors are one line and exit code 2", "[text][cli]") {
  const std::string gpt2 = (data_dir() / "gpt2").string();
  struct Bad {
    std::string args, says;
  };
  const std::vector<Bad> bad = {
      {"--model " + q(gpt2) + " --text $'ab\\xffc'", "invalid UTF-8 at byte offset 2"},
      {"--model " + q(gpt2) + " --ids 1,99999", "id 99999 is not in the vocabulary"},
      {"--model " + q(gpt2) + " --ids 1,x", "--ids: 'x'"},
      {"--model " + q(gpt2) + " --ids 1,,2", "--ids: ''"},
      {"--model " + q(gpt2), "exactly one of"},
      {"--model " + q(gpt2) + " --text a --ids 1", "exactly one of"},
      {"--text a", "--model is required"},
      {"--model " + q(gpt2) + " --text", "--text: missing value"},
      {"--model " + q(gpt2) + " --bogus 1", "unknown option '--bogus'"},
      {"--model /no/such/dir --text a", "/no/such/dir"},
      {"--model " + q((data_dir() / "prose.txt").string()) + " --text a", "not valid JSON"},
  };
  for (const Bad& b : bad) {
    INFO(b.args);
    const auto r = run_command("bash -c " + q(tokenize(b.args)));
    CHECK(r.code == 2);
    CHECK(r.out.empty());
    CHECK(r.err.rfind("tokenize: ", 0) == 0);
    CHECK(r.err.find(b.says) != std::string::npos);
    CHECK(r.err.find('\n') == r.err.size() - 1);
  }
  CHECK(run_command(tokenize("--help")).code == 0);
}
