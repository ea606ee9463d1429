// bench_tokenizer — GPT-2 tokenizer throughput on 1 thread (issue 13's target: >= 20 MB/s
// encoding English text).
//
//   build/benchmarks/bench_tokenizer [--benchmark_filter=Encode]
//
// Texts, about 1 MB each: tests/text/data/prose.txt repeated (English with numbers, code and
// punctuation; its words repeat, so the pre-token cache answers most of them, as in long English
// documents), and a "word salad" of 200k words drawn Zipf-like from GPT-2's own alphabetic
// vocabulary (tens of thousands of distinct words: most first occurrences run the merge loop).
// Bytes per second of input text (encode) or of output text (decode). One tokenizer serves all
// iterations, its pre-token cache warm after the first, as in a long-running server;
// BM_EncodeWordSaladColdCache measures text the cache has not seen. The data is found from this
// file's path (__FILE__), so run the binary from anywhere. Results and the machine go in
// benchmarks/RESULTS.md.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include <nnx/text.hpp>

namespace {

const std::filesystem::path kData =
    std::filesystem::path(__FILE__).parent_path().parent_path() / "tests" / "text" / "data";

const nnx::text::Tokenizer& gpt2() {
  static const nnx::text::Tokenizer t = nnx::text::Tokenizer::load(kData / "gpt2");
  return t;
}

const std::string& prose_1mb() {
  static const std::string text = [] {
    std::ifstream in(kData / "prose.txt", std::ios::binary);
    const std::string one{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    std::string t;
    while (!one.empty() && t.size() < (1u << 20)) t += one;
    return t;
  }();
  return text;
}

const std::string& word_salad_1mb() {
  static const std::string text = [] {
    const auto& tok = gpt2();
    std::vector<std::string> words;  // "Ġword" tokens, all letters, in id order (roughly by frequency)
    for (std::int32_t id = 0; id < tok.vocab_size(); ++id) {
      const std::string b = tok.token_bytes(id);
      if (b.size() < 3 || b[0] != ' ') continue;
      bool alpha = true;
      for (std::size_t i = 1; i < b.size() && alpha; ++i)
        alpha = (b[i] >= 'a' && b[i] <= 'z') || (b[i] >= 'A' && b[i] <= 'Z');
      if (alpha) words.push_back(b);
    }
    std::mt19937_64 rng(7);
    std::string t;
    std::size_t n = 0;
    while (t.size() < (1u << 20)) {
      // Zipf-like: rank ~ exp(uniform * log(N)).
      const double u = std::uniform_real_distribution<double>(0, 1)(rng);
      const auto rank = static_cast<std::size_t>(std::exp(u * std::log(static_cast<double>(words.size())))) - 1;
      t += words[rank % words.size()];
      if (++n % 17 == 0) t += ".\n";
    }
    return t;
  }();
  return text;
}

void encode_with(benchmark::State& state, const nnx::text::Tokenizer& tok, const std::string& text) {
  std::size_t tokens = 0;
  for (auto _ : state) {
    auto ids = tok.encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / static_cast<double>(tokens);
}

void BM_EncodeProse(benchmark::State& state) { encode_with(state, gpt2(), prose_1mb()); }
void BM_EncodeWordSalad(benchmark::State& state) { encode_with(state, gpt2(), word_salad_1mb()); }

// A cold cache: the word salad with every word capitalised, which no other benchmark encodes,
// once per process (one iteration).
void BM_EncodeWordSaladColdCache(benchmark::State& state) {
  std::string text = word_salad_1mb();
  for (std::size_t i = 0; i + 1 < text.size(); ++i)
    if (text[i] == ' ' && text[i + 1] >= 'a' && text[i + 1] <= 'z') text[i + 1] = static_cast<char>(text[i + 1] - 32);
  const auto& tok = gpt2();
  for (auto _ : state) benchmark::DoNotOptimize(tok.encode(text).data());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * text.size()));
}

void BM_Decode(benchmark::State& state) {
  const auto& tok = gpt2();
  const std::vector<std::int32_t> ids = tok.encode(prose_1mb());
  for (auto _ : state) benchmark::DoNotOptimize(tok.decode(ids).data());
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * prose_1mb().size()));
}

void BM_DecodeIncremental(benchmark::State& state) {
  const auto& tok = gpt2();
  const std::vector<std::int32_t> ids = tok.encode(prose_1mb());
  for (auto _ : state) {
    nnx::text::IncrementalDecoder d(tok);
    std::size_t n = 0;
    for (std::int32_t id : ids) n += d.push(id).size();
    n += d.flush().size();
    benchmark::DoNotOptimize(n);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * prose_1mb().size()));
}

// The real Llama 3 and Llama 2 tokenizers, when NNX_REAL_TOKENIZERS names the directory
// tests/text/gen_real_checks.mjs wrote (too large to commit; skipped otherwise): the prose through
// the Llama 3 pre-tokenizer pattern, and through SentencePiece's path without a pre-tokenizer.
void encode_real(benchmark::State& state, const char* name) {
  const char* dir = std::getenv("NNX_REAL_TOKENIZERS");
  if (!dir) {
    state.SkipWithError("NNX_REAL_TOKENIZERS is not set (see tests/text/gen_real_checks.mjs)");
    return;
  }
  const nnx::text::Tokenizer tok = nnx::text::Tokenizer::load(std::filesystem::path(dir) / name);
  encode_with(state, tok, prose_1mb());
}
void BM_EncodeProseRealLlama3(benchmark::State& state) { encode_real(state, "llama3"); }
void BM_EncodeProseRealLlama2(benchmark::State& state) { encode_real(state, "llama2"); }

BENCHMARK(BM_EncodeProse)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeWordSalad)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeWordSaladColdCache)->Unit(benchmark::kMillisecond)->Iterations(1);
BENCHMARK(BM_EncodeProseRealLlama3)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_EncodeProseRealLlama2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Decode)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DecodeIncremental)->Unit(benchmark::kMillisecond);

}  // namespace
