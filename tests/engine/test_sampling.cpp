// Tests for nnx/engine/sampling.hpp: SamplingParams validation, greedy argmax (ties to the
// lowest index), log_prob against a double-precision log_softmax, the support and the
// frequencies of top-k / top-p / temperature and their composition order, the uniform
// derived from a key, determinism, exact agreement with a slow reference sampler (full
// sort, libm exp in double, left-to-right inverse-CDF walk) written here from the spec, and
// the internal exp / max kernels against libm.
#include "nnx/engine/sampling.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// ---- deterministic test data (no std distributions: their output is library-defined) ----

std::uint64_t splitmix64(std::uint64_t& s) {
  std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double uniform01(std::uint64_t& s) { return static_cast<double>(splitmix64(s) >> 11) * 0x1.0p-53; }

// Logits ~ N(0, scale^2): a flat distribution, where a top-p nucleus holds most tokens.
std::vector<float> normal_logits(std::int64_t vocab, std::uint64_t seed, double scale = 1.0) {
  std::vector<float> x(static_cast<std::size_t>(vocab));
  for (auto& v : x) {
    const double u1 = 1.0 - uniform01(seed), u2 = uniform01(seed);
    v = static_cast<float>(scale * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  return x;
}

// Logits shaped like a language model's: log-probabilities falling as -1.2 log(rank), plus
// noise, at shuffled positions. Most of the mass sits on a few hundred tokens.
std::vector<float> peaked_logits(std::int64_t vocab, std::uint64_t seed) {
  std::vector<float> x(static_cast<std::size_t>(vocab));
  for (std::size_t r = 0; r < x.size(); ++r)
    x[r] = static_cast<float>(-1.2 * std::log(1.0 + static_cast<double>(r)) + 0.3 * uniform01(seed));
  for (std::size_t i = x.size() - 1; i > 0; --i)
    std::swap(x[i], x[static_cast<std::size_t>(splitmix64(seed) % (i + 1))]);
  return x;
}

// Logits like a trained model's on an easy step: a bulk of N(0, 2.5^2) and 50 tokens raised
// 6 to 12 above it, so the top-p nucleus holds a handful of tokens.
std::vector<float> lm_logits(std::int64_t vocab, std::uint64_t seed) {
  std::vector<float> x = normal_logits(vocab, seed, 2.5);
  for (int j = 0; j < 50; ++j)
    x[static_cast<std::size_t>(splitmix64(seed) % x.size())] += static_cast<float>(6.0 + 6.0 * uniform01(seed));
  return x;
}

enum class Shape { normal, zipf, lm };

std::vector<float> logits_of(Shape shape, std::int64_t vocab, std::uint64_t seed) {
  switch (shape) {
    case Shape::zipf:
      return peaked_logits(vocab, seed);
    case Shape::lm:
      return lm_logits(vocab, seed);
    default:
      return normal_logits(vocab, seed);
  }
}

nnx::RngKey key_of(std::uint64_t i) { return nnx::fold_in(nnx::key_from_seed(20240611), i); }

// ---- the reference: obviously correct, slow ----

std::vector<double> ref_log_softmax(const std::vector<float>& x) {
  double m = -std::numeric_limits<double>::infinity();
  for (float v : x) m = std::max(m, static_cast<double>(v));
  long double s = 0;
  for (float v : x) s += std::exp(static_cast<long double>(v) - m);
  std::vector<double> out;
  for (float v : x) out.push_back(static_cast<double>(static_cast<long double>(v) - m - std::log(s)));
  return out;
}

// Every token in sampling order (logit descending, index ascending).
std::vector<std::int32_t> ref_order(const std::vector<float>& x) {
  std::vector<std::int32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](std::int32_t a, std::int32_t b) { return x[a] > x[b]; });
  return idx;
}

struct RefDistribution {
  std::vector<std::int32_t> tokens;  // the kept set, in walk order
  std::vector<double> prob;          // the probability of drawing each
};

// Composite sampling as the spec states it: top-k on the logits, top-p on softmax of the
// kept logits at temperature 1, then softmax(kept / temperature).
RefDistribution ref_distribution(const std::vector<float>& x, const nnx::SamplingParams& p) {
  std::vector<std::int32_t> order = ref_order(x);
  if (p.temperature == 0.0 || p.top_k == 1) return {{order[0]}, {1.0}};
  if (p.top_k > 0 && p.top_k < static_cast<std::int64_t>(order.size())) order.resize(static_cast<std::size_t>(p.top_k));
  std::erase_if(order, [&](std::int32_t t) { return x[t] == -kInf; });
  const double m = x[order[0]];
  std::vector<double> prob;
  double z = 0;
  for (auto t : order) z += std::exp(x[t] - m);
  for (auto t : order) prob.push_back(std::exp(x[t] - m) / z);
  if (p.top_p < 1.0) {
    double cum = 0;
    for (std::size_t j = 0; j < order.size(); ++j) {
      cum += prob[j];
      if (cum >= p.top_p) {
        order.resize(j + 1);
        break;
      }
    }
  }
  RefDistribution d{order, {}};
  double zt = 0;
  for (auto t : order) zt += std::exp((x[t] - m) / p.temperature);
  for (auto t : order) d.prob.push_back(std::exp((x[t] - m) / p.temperature) / zt);
  return d;
}

std::int32_t ref_draw(const RefDistribution& d, double u) {
  double cum = 0;
  for (std::size_t j = 0; j < d.tokens.size(); ++j) {
    cum += d.prob[j];
    if (u < cum) return d.tokens[j];
  }
  return d.tokens.back();
}

std::int32_t draw(const std::vector<float>& x, const nnx::SamplingParams& p, nnx::RngKey key) {
  return nnx::sample_token(x.data(), static_cast<std::int64_t>(x.size()), p, key).token;
}

std::string message_of(const std::vector<float>& x, const nnx::SamplingParams& p, std::int64_t vocab = -1) {
  try {
    (void)nnx::sample_token(x.data(), vocab < 0 ? static_cast<std::int64_t>(x.size()) : vocab, p, key_of(0));
  } catch (const nnx::InvalidArgument& e) {
    return e.what();
  }
  return "(no exception)";
}

std::string validate_message(const nnx::SamplingParams& p) {
  try {
    p.validate();
  } catch (const nnx::InvalidArgument& e) {
    return e.what();
  }
  return "(no exception)";
}

// Counts of each token over n draws with keys key_of(first + i).
std::vector<std::int64_t> histogram(const std::vector<float>& x, const nnx::SamplingParams& p, int n,
                                    std::uint64_t first = 0) {
  std::vector<std::int64_t> counts(x.size(), 0);
  for (int i = 0; i < n; ++i)
    ++counts[static_cast<std::size_t>(draw(x, p, key_of(first + static_cast<std::uint64_t>(i))))];
  return counts;
}

// Each count within 4 standard deviations of n * prob, and a chi-square far below the tail.
void check_frequencies(const std::vector<std::int64_t>& counts, const std::vector<double>& expected, int n) {
  double chi2 = 0;
  for (std::size_t t = 0; t < counts.size(); ++t) {
    const double mean = n * expected[t];
    INFO("token " << t << ": count " << counts[t] << ", expected " << mean);
    if (expected[t] == 0.0) {
      CHECK(counts[t] == 0);
      continue;
    }
    CHECK(std::abs(static_cast<double>(counts[t]) - mean) <= 4.0 * std::sqrt(mean * (1.0 - expected[t])));
    chi2 += (counts[t] - mean) * (counts[t] - mean) / mean;
  }
  const auto bins = std::count_if(expected.begin(), expected.end(), [](double e) { return e > 0; });
  INFO("chi-square " << chi2 << " over " << bins << " bins");
  CHECK(chi2 < 3.0 * static_cast<double>(bins) + 20.0);  // df = bins - 1; p < 1e-4 for these sizes
}

}  // namespace

TEST_CASE("SamplingParams: validate rejects each bad value and names it", "[engine][sampling]") {
  CHECK_NOTHROW(nnx::SamplingParams{}.validate());
  CHECK_NOTHROW(nnx::SamplingParams{.temperature = 0.7, .top_k = 40, .top_p = 0.95}.validate());
  CHECK_NOTHROW(nnx::SamplingParams{.temperature = 1e-30, .top_k = 1'000'000, .top_p = 1e-12}.validate());

  CHECK_THAT(validate_message({.top_p = 0.0}), Catch::Contains("top_p") && Catch::Contains("got 0"));
  CHECK_THAT(validate_message({.top_p = 1.5}), Catch::Contains("top_p") && Catch::Contains("got 1.5"));
  CHECK_THAT(validate_message({.top_p = -0.25}), Catch::Contains("got -0.25"));
  CHECK_THAT(validate_message({.top_p = std::nan("")}), Catch::Contains("top_p") && Catch::Contains("nan"));
  CHECK_THAT(validate_message({.temperature = -1.0}), Catch::Contains("temperature") && Catch::Contains("got -1"));
  CHECK_THAT(validate_message({.temperature = std::numeric_limits<double>::infinity()}),
             Catch::Contains("temperature") && Catch::Contains("inf"));
  CHECK_THAT(validate_message({.temperature = std::nan("")}), Catch::Contains("temperature") && Catch::Contains("nan"));
  CHECK_THAT(validate_message({.top_k = -1}), Catch::Contains("top_k") && Catch::Contains("got -1"));

  // sample_token checks too, greedy or not.
  const std::vector<float> x{0.0f, 1.0f};
  CHECK_THAT(message_of(x, {.top_p = 1.5}), Catch::Contains("got 1.5"));
  CHECK_THAT(message_of(x, {.temperature = 1.0, .top_k = -3}), Catch::Contains("got -3"));
}

TEST_CASE("SamplingParams: is_greedy and greedy()", "[engine][sampling]") {
  CHECK(nnx::SamplingParams::greedy().is_greedy());
  CHECK(nnx::SamplingParams{}.is_greedy());
  CHECK(nnx::SamplingParams{.temperature = 0.0, .top_k = 50, .top_p = 0.5}.is_greedy());
  CHECK(nnx::SamplingParams{.temperature = 2.0, .top_k = 1}.is_greedy());
  CHECK_FALSE(nnx::SamplingParams{.temperature = 0.1}.is_greedy());
  CHECK_FALSE(nnx::SamplingParams{.temperature = 1.0, .top_k = 2}.is_greedy());
}

TEST_CASE("sample_token: rejects an empty or oversized vocab, NaN logits, all -inf", "[engine][sampling]") {
  const std::vector<float> x{0.5f, -1.0f, 2.0f};
  CHECK_THAT(message_of(x, {}, 0), Catch::Contains("vocab") && Catch::Contains("got 0"));
  CHECK_THAT(message_of(x, {.temperature = 1.0}, 0), Catch::Contains("got 0"));
  CHECK_THAT(message_of(x, {}, std::int64_t{1} << 31), Catch::Contains("vocab"));
  CHECK_THROWS_AS(nnx::sample_token(nullptr, 3, {}, key_of(0)), nnx::InvalidArgument);

  std::vector<float> nan_row = normal_logits(100, 1);
  nan_row[17] = std::nanf("");
  nan_row[60] = std::nanf("");
  CHECK_THAT(message_of(nan_row, {}), Catch::Contains("NaN at index 17"));
  CHECK_THAT(message_of(nan_row, {.temperature = 0.9, .top_p = 0.9}), Catch::Contains("NaN at index 17"));
  nan_row[0] = std::nanf("");
  CHECK_THAT(message_of(nan_row, {}), Catch::Contains("NaN at index 0"));

  CHECK_THAT(message_of(std::vector<float>(5, -kInf), {.temperature = 1.0}), Catch::Contains("-inf"));
}

TEST_CASE("sample_token: greedy is the argmax, ties to the lowest index, whatever top_k/top_p/key",
          "[engine][sampling]") {
  std::vector<float> x = normal_logits(1001, 7);
  const auto best = static_cast<std::int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
  for (std::uint64_t k = 0; k < 20; ++k) {
    CHECK(draw(x, {}, key_of(k)) == best);
    CHECK(draw(x, {.temperature = 0.0, .top_k = 5, .top_p = 0.1}, key_of(k)) == best);
    CHECK(draw(x, {.temperature = 3.0, .top_k = 1, .top_p = 0.5}, key_of(k)) == best);
  }
  // Ties: three copies of the maximum; the first one wins.
  x[900] = x[400] = x[123] = x[static_cast<std::size_t>(best)] + 1.0f;
  CHECK(draw(x, nnx::SamplingParams::greedy(), key_of(0)) == 123);
  CHECK(draw(x, {.temperature = 0.5, .top_k = 1}, key_of(1)) == 123);
  // -inf and a one-token vocabulary.
  CHECK(draw({-kInf, -kInf, -3.0f, -kInf}, {}, key_of(0)) == 2);
  CHECK(draw({-kInf, -kInf, -3.0f, -kInf}, {.temperature = 1.0}, key_of(0)) == 2);
  CHECK(draw({4.0f}, {.temperature = 1.0, .top_p = 0.3}, key_of(3)) == 0);
  const std::vector<float> all_equal(64, 0.25f);
  CHECK(draw(all_equal, {}, key_of(5)) == 0);
}

TEST_CASE("sample_token: log_prob is log_softmax of the raw logits", "[engine][sampling]") {
  for (std::int64_t vocab : {std::int64_t{1001}, std::int64_t{50257}}) {
    for (float offset : {0.0f, 1000.0f, -5000.0f}) {
      std::vector<float> x = normal_logits(vocab, static_cast<std::uint64_t>(vocab), 2.0);
      for (auto& v : x) v += offset;
      x[3] = -kInf;
      const std::vector<double> ref = ref_log_softmax(x);
      INFO("vocab " << vocab << ", offset " << offset);
      const nnx::SamplingParams configs[] = {
          {}, {.temperature = 1.0}, {.temperature = 0.7, .top_p = 0.9}, {.temperature = 1.3, .top_k = 40}};
      for (const auto& p : configs) {
        for (std::uint64_t k = 0; k < 25; ++k) {
          const nnx::SampledToken t = nnx::sample_token(x.data(), vocab, p, key_of(k));
          REQUIRE(t.token >= 0);
          REQUIRE(t.token < vocab);
          // Within 1e-6 plus the float's own rounding (half an ulp, <= |r| * 2^-24); below
          // |r| = 8 that half ulp is < 4.8e-7, so there within 1e-6 outright.
          const double r = ref[static_cast<std::size_t>(t.token)];
          INFO("token " << t.token << ": " << t.log_prob << " vs " << r);
          CHECK(std::abs(t.log_prob - r) <= 1e-6 + std::abs(r) * 0x1.0p-24);
          if (std::abs(r) < 8.0) CHECK(std::abs(t.log_prob - r) <= 1e-6);
        }
      }
    }
  }
  // A certain token has log-probability exactly 0; -inf tokens do not count.
  const std::vector<float> single{-kInf, 2.5f, -kInf};
  CHECK(nnx::sample_token(single.data(), 3, {.temperature = 1.0}, key_of(0)).log_prob == 0.0f);
  const std::vector<float> pair{1.0f, 1.0f};
  CHECK(nnx::sample_token(pair.data(), 2, {}, key_of(0)).log_prob == Approx(std::log(0.5)).margin(1e-7));
}

TEST_CASE("sample_token: +inf logits share all the mass", "[engine][sampling]") {
  std::vector<float> x = normal_logits(300, 3);
  x[10] = x[200] = x[250] = kInf;
  std::set<std::int32_t> seen;
  for (std::uint64_t k = 0; k < 300; ++k) {
    const nnx::SampledToken t = nnx::sample_token(x.data(), 300, {.temperature = 0.8, .top_p = 0.99}, key_of(k));
    REQUIRE((t.token == 10 || t.token == 200 || t.token == 250));
    CHECK(t.log_prob == Approx(-std::log(3.0)).margin(1e-6));
    seen.insert(t.token);
  }
  CHECK(seen.size() == 3);
  const nnx::SampledToken greedy = nnx::sample_token(x.data(), 300, {}, key_of(0));
  CHECK(greedy.token == 10);
  CHECK(greedy.log_prob == Approx(-std::log(3.0)).margin(1e-6));
}

TEST_CASE("sample_token: top-k keeps the k largest logits and draws each of them", "[engine][sampling]") {
  struct Case {
    std::int64_t vocab, k;
    double temperature;
    int draws;
  };
  // k = 40 runs the one-pass heap, k = 1050 the select_by_rank path.
  for (const Case c : {Case{1001, 5, 1.5, 2000}, Case{50257, 40, 4.0, 3000}, Case{1201, 1050, 1e6, 20000}}) {
    const std::vector<float> x = normal_logits(c.vocab, 11 + static_cast<std::uint64_t>(c.k));
    const std::vector<std::int32_t> order = ref_order(x);
    const std::set<std::int32_t> top(order.begin(), order.begin() + c.k);
    const auto counts = histogram(x, {.temperature = c.temperature, .top_k = c.k}, c.draws);
    INFO("vocab " << c.vocab << ", k " << c.k);
    std::int64_t outside = 0, missing = 0;
    for (std::int32_t t = 0; t < static_cast<std::int32_t>(c.vocab); ++t) {
      if (!top.count(t))
        outside += counts[static_cast<std::size_t>(t)];
      else if (counts[static_cast<std::size_t>(t)] == 0)
        ++missing;
    }
    CHECK(outside == 0);
    CHECK(missing == 0);
  }
}

TEST_CASE("sample_token: a top-k cut through tied logits keeps the lower indices", "[engine][sampling]") {
  // Five tokens tie for second place; k = 3 keeps the maximum and the first two of them.
  std::vector<float> x(50, -2.0f);
  for (int i : {8, 20, 3, 41, 30}) x[static_cast<std::size_t>(i)] = 1.0f;
  x[15] = 2.0f;
  x[0] = -kInf;
  for (std::int64_t k : {std::int64_t{3}, std::int64_t{2000}}) {
    const nnx::SamplingParams p{.temperature = 1.0, .top_k = k == 3 ? 3 : 0};
    const auto counts = histogram(x, p, 3000);
    if (k == 3) {
      for (int t = 0; t < 50; ++t) {
        INFO("token " << t);
        CHECK((counts[static_cast<std::size_t>(t)] > 0) == (t == 15 || t == 3 || t == 8));
      }
    }
    CHECK(counts[0] == 0);  // -inf is never drawn, even when k exceeds the finite tokens
  }
  // A k above the number of finite tokens keeps all of them.
  const std::vector<float> sparse{-kInf, 0.0f, -kInf, 0.5f, -kInf};
  const auto counts = histogram(sparse, {.temperature = 1.0, .top_k = 4}, 2000);
  CHECK(counts[0] + counts[2] + counts[4] == 0);
  CHECK(counts[1] > 0);
  CHECK(counts[3] > 0);
}

TEST_CASE("sample_token: top-p cuts on the untempered distribution", "[engine][sampling]") {
  // softmax([2, 1, 0, -1]) = [0.644, 0.237, 0.087, 0.032]: top_p = 0.85 keeps {0, 1}
  // (cumulative 0.881). Tempered first, the nucleus would differ: at T = 3 the
  // probabilities are [0.385, 0.276, 0.198, 0.142] and it would also keep token 2; at T =
  // 0.25 token 0 alone has 0.982 and it would keep only token 0.
  const std::vector<float> x{2.0f, 1.0f, 0.0f, -1.0f};
  const int n = 20000;
  {
    const double w1 = std::exp(-1.0 / 3.0);
    check_frequencies(histogram(x, {.temperature = 3.0, .top_p = 0.85}, n), {1 / (1 + w1), w1 / (1 + w1), 0, 0}, n);
  }
  {
    const double w1 = std::exp(-4.0);
    check_frequencies(histogram(x, {.temperature = 0.25, .top_p = 0.85}, n, 1'000'000),
                      {1 / (1 + w1), w1 / (1 + w1), 0, 0}, n);
  }
  // At the boundary: cumulative probability exactly reaching top_p keeps that token and no more.
  const std::vector<float> halves{0.0f, 0.0f, 0.0f, 0.0f};
  const auto counts = histogram(halves, {.temperature = 1.0, .top_p = 0.5}, 2000);
  CHECK(counts[0] > 0);
  CHECK(counts[1] > 0);
  CHECK(counts[2] + counts[3] == 0);
  // A tiny top_p keeps the single most likely token.
  CHECK(histogram(x, {.temperature = 5.0, .top_p = 1e-9}, 200)[0] == 200);
}

TEST_CASE("sample_token: top-p support is exactly the reference nucleus on large vocabularies", "[engine][sampling]") {
  // Each case's temperature moves the nucleus one would get by tempering first: wider at
  // T > 1 (draws outside the true nucleus would show it), narrower at T < 1 (the true
  // nucleus's extra tokens would never be drawn).
  struct Case {
    std::int64_t vocab;
    Shape shape;
    double temperature, top_p;
    int draws;
  };
  for (const Case c : {Case{50257, Shape::zipf, 0.8, 0.9, 1000}, Case{50257, Shape::zipf, 2.0, 0.5, 1000},
                       Case{50257, Shape::lm, 3.0, 0.9, 1000}, Case{5001, Shape::normal, 1.0, 0.3, 2000},
                       Case{5001, Shape::normal, 0.5, 0.97, 2000}}) {
    const std::vector<float> x = logits_of(c.shape, c.vocab, 5);
    const nnx::SamplingParams p{.temperature = c.temperature, .top_p = c.top_p};
    const RefDistribution ref = ref_distribution(x, p);
    const std::set<std::int32_t> nucleus(ref.tokens.begin(), ref.tokens.end());
    std::vector<float> x_over_t(x);
    for (auto& v : x_over_t) v = static_cast<float>(v / c.temperature);
    const RefDistribution wrong = ref_distribution(x_over_t, {.temperature = 1.0, .top_p = c.top_p});
    const std::set<std::int32_t> wrong_nucleus(wrong.tokens.begin(), wrong.tokens.end());
    INFO("vocab " << c.vocab << ", T " << c.temperature << ": nucleus " << nucleus.size() << ", tempered first "
                  << wrong_nucleus.size());
    CHECK(nucleus.size() > 1);
    CHECK(nucleus.size() < static_cast<std::size_t>(c.vocab));
    if (c.temperature != 1.0) CHECK(nucleus != wrong_nucleus);

    const auto counts = histogram(x, p, c.draws);
    std::int64_t outside = 0, only_true = 0;
    double only_true_prob = 0;
    for (std::size_t t = 0; t < counts.size(); ++t)
      if (!nucleus.count(static_cast<std::int32_t>(t))) outside += counts[t];
    for (std::size_t j = 0; j < ref.tokens.size(); ++j) {
      if (wrong_nucleus.count(ref.tokens[j])) continue;
      only_true += counts[static_cast<std::size_t>(ref.tokens[j])];
      only_true_prob += ref.prob[j];
    }
    CHECK(outside == 0);
    if (c.temperature < 1.0) {
      const double mean = c.draws * only_true_prob;
      INFO("draws in the true nucleus only: " << only_true << ", expected " << mean);
      REQUIRE(mean > 20);
      CHECK(std::abs(static_cast<double>(only_true) - mean) <= 4 * std::sqrt(mean));
    }
  }
}

TEST_CASE("sample_token: top-k, then top-p, then temperature (a hand-computed example)", "[engine][sampling]") {
  // logits         [1.0, 3.0, 2.0, 0.5, 3.0, -1.0]
  // top_k = 4      keeps tokens 1, 4 (3.0, tie by index), 2 (2.0), 0 (1.0)
  // top_p = 0.9    on softmax of those at T = 1: z = 2 + e^-1 + e^-2 = 2.50321,
  //                probabilities 0.39949, 0.39949, 0.14696, 0.05407; cumulative
  //                0.39949, 0.79897, 0.94593 >= 0.9: keeps 1, 4, 2
  // T = 2          draws from exp(0), exp(0), exp(-1/2): 1/(2 + e^-0.5) = 0.383652 each
  //                for tokens 1 and 4, and e^-0.5 / (2 + e^-0.5) = 0.232696 for token 2.
  const std::vector<float> x{1.0f, 3.0f, 2.0f, 0.5f, 3.0f, -1.0f};
  const nnx::SamplingParams p{.temperature = 2.0, .top_k = 4, .top_p = 0.9};
  const double z = 2.0 + std::exp(-0.5);
  const std::vector<double> expected{0.0, 1.0 / z, std::exp(-0.5) / z, 0.0, 1.0 / z, 0.0};
  CHECK(expected[1] == Approx(0.383652).epsilon(1e-5));
  CHECK(expected[2] == Approx(0.232696).epsilon(1e-5));

  // The reference agrees with the hand computation.
  const RefDistribution ref = ref_distribution(x, p);
  REQUIRE(ref.tokens == std::vector<std::int32_t>{1, 4, 2});
  for (std::size_t j = 0; j < 3; ++j) CHECK(ref.prob[j] == Approx(expected[static_cast<std::size_t>(ref.tokens[j])]));

  const int n = 20000;
  check_frequencies(histogram(x, p, n), expected, n);

  // Temperature before top-p would keep token 0 too: at T = 2 the four kept tokens weigh
  // 1, 1, e^-0.5, e^-1 and reach 0.9 only with the fourth.
  std::vector<float> x_over_t(x);
  for (auto& v : x_over_t) v /= 2.0f;
  CHECK(ref_distribution(x_over_t, {.temperature = 1.0, .top_k = 4, .top_p = 0.9}).tokens ==
        std::vector<std::int32_t>{1, 4, 2, 0});

  // top-p normalizes over what top-k kept. With top_p = 0.8: after k = 4 the first two hold
  // 2 / 2.50321 = 0.79897 < 0.8, so token 2 stays; after k = 3 they hold 2 / (2 + e^-1) =
  // 0.84464 >= 0.8, so it goes. (Over the whole vocabulary, 0.76818: it would stay.)
  const nnx::SamplingParams p3{.temperature = 2.0, .top_k = 3, .top_p = 0.8};
  REQUIRE(ref_distribution(x, {.temperature = 2.0, .top_k = 4, .top_p = 0.8}).tokens ==
          std::vector<std::int32_t>{1, 4, 2});
  REQUIRE(ref_distribution(x, p3).tokens == std::vector<std::int32_t>{1, 4});
  check_frequencies(histogram(x, p3, n, 77777), {0, 0.5, 0, 0, 0.5, 0}, n);
}

TEST_CASE("sample_token: the draw's uniform comes from the key with Philox", "[engine][sampling]") {
  // Golden values from an independent Python Philox4x32-10 (tests/core/gen_rng_golden.py):
  // philox({0, 0, 0, 0x5A3B7}, key), bits = (b0 << 21) | (b1 >> 11), u = bits / 2^53.
  CHECK(nnx::detail::sampling_uniform(nnx::key_from_seed(0)) == 0x80e51b0856bbe * 0x1.0p-53);
  CHECK(nnx::detail::sampling_uniform(nnx::key_from_seed(42)) == 0x10e205b19fd5b1 * 0x1.0p-53);
  CHECK(nnx::detail::sampling_uniform(nnx::key_from_seed((std::uint64_t{1} << 40) + 7)) == 0xcd73d96c170c2 * 0x1.0p-53);

  double sum = 0, lo = 1, hi = 0;
  std::set<double> distinct;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = nnx::detail::sampling_uniform(key_of(static_cast<std::uint64_t>(i)));
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    distinct.insert(u);
  }
  CHECK(std::abs(sum / n - 0.5) < 4.0 * std::sqrt(1.0 / 12.0 / n));
  CHECK(lo < 1e-3);
  CHECK(hi > 1 - 1e-3);
  CHECK(distinct.size() == static_cast<std::size_t>(n));
}

TEST_CASE("sample_token: same key, same token; different keys, different tokens", "[engine][sampling]") {
  const std::vector<float> x = normal_logits(50257, 9);
  const nnx::SamplingParams p{.temperature = 0.8, .top_p = 0.9};
  std::vector<std::int32_t> first;
  std::set<std::int32_t> distinct;
  for (std::uint64_t k = 0; k < 200; ++k) {
    first.push_back(draw(x, p, key_of(k)));
    distinct.insert(first.back());
  }
  CHECK(distinct.size() > 150);  // the nucleus holds thousands of tokens
  for (std::uint64_t k = 0; k < 200; ++k) CHECK(draw(x, p, key_of(k)) == first[k]);

  // Each thread has its own scratch: two threads drawing at once agree with one thread.
  std::vector<std::int32_t> a(200), b(200);
  std::thread ta([&] {
    for (std::uint64_t k = 0; k < 200; ++k) a[k] = draw(x, p, key_of(k));
  });
  std::thread tb([&] {
    const std::vector<float> small = normal_logits(77, 1);  // interleaved use of another size
    for (std::uint64_t k = 200; k-- > 0;) {
      (void)draw(small, p, key_of(k));
      b[k] = draw(x, p, key_of(k));
    }
  });
  ta.join();
  tb.join();
  CHECK(a == first);
  CHECK(b == first);
}

TEST_CASE("sample_token: agrees with the reference sampler token for token", "[engine][sampling]") {
  struct Case {
    std::int64_t vocab;
    Shape shape;
    nnx::SamplingParams p;
  };
  const Case cases[] = {
      {7, Shape::normal, {.temperature = 1.0}},
      {7, Shape::normal, {.temperature = 0.3, .top_k = 3, .top_p = 0.8}},
      {1001, Shape::normal, {.temperature = 1.0}},
      {1001, Shape::normal, {.temperature = 0.7, .top_p = 0.6}},
      {1001, Shape::normal, {.temperature = 1.4, .top_k = 50}},                  // heap top-k
      {5001, Shape::normal, {.temperature = 1.0, .top_k = 2000, .top_p = 0.8}},  // select_by_rank
      {1001, Shape::zipf, {.temperature = 0.9, .top_k = 20, .top_p = 0.95}},
      {50257, Shape::zipf, {.temperature = 0.8, .top_p = 0.9}},    // tau floor, ~2k-token nucleus
      {50257, Shape::normal, {.temperature = 0.8, .top_p = 0.9}},  // a nucleus of ~30k tokens
      {50257, Shape::lm, {.temperature = 0.8, .top_p = 0.9}},      // the probability >= 1e-4 floor
      {50257, Shape::lm, {.temperature = 1.5, .top_p = 0.999}},
      {50257, Shape::zipf, {.temperature = 1.0, .top_k = 40}},
      {50257, Shape::normal, {.temperature = 2.5}},  // the whole vocabulary
      {50257, Shape::zipf, {.temperature = 0.6, .top_k = 5000, .top_p = 0.99}},
  };
  for (std::size_t c = 0; c < std::size(cases); ++c) {
    const Case& tc = cases[c];
    const std::vector<float> x = logits_of(tc.shape, tc.vocab, 100 + c);
    const RefDistribution ref = ref_distribution(x, tc.p);
    INFO("case " << c << ": vocab " << tc.vocab << ", kept " << ref.tokens.size());
    int mismatches = 0;
    for (std::uint64_t k = 0; k < 300; ++k) {
      const nnx::RngKey key = key_of(1000 * c + k);
      const std::int32_t want = ref_draw(ref, nnx::detail::sampling_uniform(key));
      const std::int32_t got = draw(x, tc.p, key);
      if (got != want) {
        ++mismatches;
        UNSCOPED_INFO("key " << k << ": got " << got << ", reference " << want);
      }
    }
    CHECK(mismatches == 0);
  }
}

TEST_CASE("sample_token: weighted selection matches a sort-and-walk on adversarial orders", "[engine][sampling]") {
  // select_by_mass and select_by_rank on already sorted, reversed and all-equal logits
  // (quickselect's classic worst cases) must still return the sort's answer.
  using nnx::detail::sampling::Candidate;
  const std::size_t n = 5000;
  for (int pattern = 0; pattern < 3; ++pattern) {
    std::vector<Candidate> base(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t rank = pattern == 1 ? n - 1 - i : i;
      const float logit = pattern == 2 ? 0.0f : -0.001f * static_cast<float>(rank);
      base[i] = {nnx::detail::sampling::order_key(logit, static_cast<std::int64_t>(rank)),
                 std::exp(static_cast<double>(logit))};
    }
    std::vector<Candidate> sorted = base;
    std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.key < b.key; });
    double total = 0;
    for (auto& s : sorted) total += s.weight;
    for (double frac : {0.0, 1e-9, 0.25, 0.5, 0.999, 0.9999999}) {
      std::vector<Candidate> work = base, tmp(n);
      const std::size_t j = nnx::detail::sampling::select_by_mass<true>(work.data(), n, frac * total, tmp.data());
      double cum = 0;
      std::size_t want = n - 1;
      for (std::size_t i = 0; i < n; ++i) {
        cum += sorted[i].weight;
        if (cum > frac * total) {
          want = i;
          break;
        }
      }
      INFO("pattern " << pattern << ", fraction " << frac);
      CHECK(work[j].key == sorted[want].key);
      // Everything before j ranks before the answer; everything after ranks after it.
      for (std::size_t i = 0; i < n; ++i) REQUIRE((i < j) == (work[i].key < work[j].key));
    }
    for (std::size_t k : {std::size_t{1}, std::size_t{1234}, n - 1}) {
      std::vector<Candidate> work = base, tmp(n);
      nnx::detail::sampling::select_by_rank(work.data(), n, k, tmp.data());
      INFO("pattern " << pattern << ", k " << k);
      for (std::size_t i = 0; i < n; ++i) REQUIRE((i < k) == (work[i].key < sorted[k].key));
    }
  }
}

TEST_CASE("sample_token internals: exp and max kernels agree with libm", "[engine][sampling]") {
  // The dispatching kernels (AVX2 with its own exp when the CPU has it, libm otherwise)
  // against libm, over lengths that exercise every tail, and over the whole range of
  // arguments: a grid over [-708, 0] and the logits' usual [-20, 0].
  for (std::int64_t n : {1, 3, 4, 7, 8, 9, 15, 16, 17, 1001, 200003}) {
    std::vector<float> x = normal_logits(n, static_cast<std::uint64_t>(n), 3.0);
    if (n > 5) x[5] = -kInf;
    if (n > 100000)
      for (std::size_t i = 0; i < x.size(); i += 2) x[i] = -708.0f * static_cast<float>(i) / static_cast<float>(n);
    bool has_nan = true;
    const float mx = nnx::detail::sampling::max_logit(x.data(), n, has_nan);
    CHECK_FALSE(has_nan);
    CHECK(mx == *std::max_element(x.begin(), x.end()));
    std::vector<double> w(static_cast<std::size_t>(n), -1.0);
    const double total = nnx::detail::sampling::sum_exp_shifted<true>(x.data(), n, mx, w.data());
    long double want_total = 0;
    double worst = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      const double d = static_cast<double>(x[i]) - mx;
      const double want = std::exp(d);
      if (d < -708.0) {
        CHECK(w[i] <= want);  // flushed to 0 below the normal range
      } else {
        worst = std::max(worst, std::abs(w[i] - want) / want);
      }
      want_total += want;
    }
    INFO("n " << n);
    CHECK(worst < 1e-15);  // a few ulp
    CHECK(std::abs(total - static_cast<double>(want_total)) <= 1e-14 * total);
    CHECK(nnx::detail::sampling::sum_exp_shifted<false>(x.data(), n, mx, nullptr) == total);

    std::vector<double> d(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = static_cast<double>(x[i]) - mx;
    CHECK(nnx::detail::sampling::exp_in_place(d.data(), d.size()) == Approx(total).epsilon(1e-14));
    for (std::size_t i = 0; i < d.size(); ++i) REQUIRE(d[i] == w[i]);

    for (std::int64_t at : {std::int64_t{0}, n / 2, n - 1}) {  // a NaN in the body or the tail
      std::vector<float> bad = x;
      bad[static_cast<std::size_t>(at)] = std::nanf("");
      has_nan = false;
      (void)nnx::detail::sampling::max_logit(bad.data(), n, has_nan);
      CHECK(has_nan);
    }
  }
}
