// Fuzzes nnx::parse_request_line, which reads each JSON line serve_batch serves. Each input is
// one line.
//
// Expected: InvalidArgument for a bad line. Checked when the line is accepted: the request
// holds what request.hpp promises (a non-empty prompt of non-negative ids or a text prompt,
// never both; max_new_tokens >= 1; at most 16 non-empty stop strings; logprobs in [0, 20];
// valid sampling parameters), and its sampling parameters and seed draw a token from a
// small vocabulary, as the engine does for its first token.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "nnx/engine/request.hpp"
#include "nnx/engine/sampling.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using nnx_fuzz::require;
  nnx::Request request;
  std::vector<std::string> unknown_keys;
  try {
    request = nnx::parse_request_line(nnx_fuzz::as_text(data, size), &unknown_keys);
  } catch (const nnx::InvalidArgument&) {
    return 0;
  }

  require(request.prompt.empty() == request.prompt_text.has_value(), "an accepted request has ids or text, not both");
  for (const std::int32_t id : request.prompt) require(id >= 0, "prompt ids are non-negative");
  for (const std::int32_t id : request.stop.stop_ids) require(id >= 0, "stop ids are non-negative");
  require(request.stop_strings.size() <= 16, "at most 16 stop strings");
  for (const std::string& stop : request.stop_strings) require(!stop.empty(), "stop strings are non-empty");
  require(!request.logprobs || (*request.logprobs >= 0 && *request.logprobs <= nnx::kMaxTopLogprobs),
          "logprobs is in [0, 20]");
  require(!request.stop.max_new_tokens || *request.stop.max_new_tokens >= 1, "max_new_tokens is at least 1");
  request.sampling.validate();  // parse_request_line promises valid parameters: a throw here is a finding

  // Distinct, finite logits with a spread, so that every cut (top-k, top-p) has work to do.
  constexpr std::int64_t vocab = 16;
  float logits[vocab];
  for (std::int64_t i = 0; i < vocab; ++i) logits[i] = static_cast<float>((i * 7) % vocab) * 0.25f - 2.0f;
  const nnx::SampledToken drawn =
      nnx::sample_token(logits, vocab, request.sampling, nnx::fold_in(nnx::key_from_seed(request.seed), 0));
  require(drawn.token >= 0 && drawn.token < vocab, "the drawn token is in the vocabulary");
  return 0;
}
