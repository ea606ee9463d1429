// nn::Dropout: the keep rate is 1 - p within a binomial bound, kept values are x / (1 - p),
// dropped ones exactly 0; deterministic mode and rate 0 are the identity; the mask is a
// function of the Rngs stream's key (same seed, same mask; the stream advances per call).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <nnx/nn.hpp>

namespace {

using i64 = std::int64_t;

// Nonzero values of both signs, so that a kept element is never mistaken for a dropped one.
nnx::Tensor nonzero_tensor(i64 n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mag(0.5f, 2.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = (gen() & 1u) ? mag(gen) : -mag(gen);
  return nnx::Tensor::from_vector(v, {n});
}

// 1 where the element was kept, 0 where dropped.
std::vector<std::uint8_t> mask_of(const nnx::Tensor& y) {
  std::vector<std::uint8_t> m;
  for (float v : y.span<float>()) m.push_back(v != 0.0f);
  return m;
}

}  // namespace

TEST_CASE("Dropout keeps 1 - p of the elements, scales them by 1/(1-p), zeroes the rest", "[nn][dropout]") {
  const i64 n = i64{1} << 20;
  const nnx::Tensor x = nonzero_tensor(n, 7);
  for (double p : {0.1, 0.5}) {
    INFO("p = " << p);
    nnx::Rngs rngs{42};
    nnx::Dropout drop(p, rngs);
    const nnx::Tensor y = drop(x);
    REQUIRE(y.shape() == x.shape());
    const float scale = static_cast<float>(1.0 / (1.0 - p));
    // The float multiplier is 1/(1-p) rounded once.
    CHECK(std::fabs(static_cast<double>(scale) * (1.0 - p) - 1.0) <= 0x1p-24);
    i64 kept = 0, kept_lane[4] = {0, 0, 0, 0}, bad_kept = 0, bad_dropped = 0;
    const float* xs = x.data<float>();
    const float* ys = y.data<float>();
    for (i64 i = 0; i < n; ++i) {
      if (ys[i] == 0.0f) {
        bad_dropped += std::signbit(ys[i]) ? 1 : 0;  // dropped values are +0 exactly
        continue;
      }
      ++kept;
      ++kept_lane[i % 4];
      bad_kept += ys[i] != xs[i] * scale;
    }
    CHECK(bad_kept == 0);
    CHECK(bad_dropped == 0);
    // Kept ~ Binomial(n, 1 - p): within 6 standard deviations (a false alarm has probability
    // ~1e-9; the draw is seeded, so the test is deterministic anyway). Also per element index
    // mod 4, each Philox lane feeding one of them, so a lane that is unused or biased shows.
    const double mean = static_cast<double>(n) * (1.0 - p), sd = std::sqrt(static_cast<double>(n) * p * (1.0 - p));
    INFO("kept " << kept << ", expected " << mean << " +- " << sd);
    CHECK(std::fabs(static_cast<double>(kept) - mean) <= 6.0 * sd);
    for (i64 lane = 0; lane < 4; ++lane) {
      INFO("lane " << lane << " kept " << kept_lane[lane]);
      CHECK(std::fabs(static_cast<double>(kept_lane[lane]) - mean / 4.0) <= 6.0 * sd / 2.0);
    }
  }
}

TEST_CASE("Dropout's mask has no structure: no long runs, uncorrelated neighbours", "[nn][dropout]") {
  // With p = 0.5 each element is a fair coin: among 2^20 the longest run of equal fates is
  // about log2(2^20) = 20 (P(longest >= 40) < 2^20 * 2^-40). A mask repeating a block pattern
  // or keeping contiguous chunks fails this.
  nnx::Rngs rngs{3};
  nnx::Dropout drop(0.5, rngs);
  const auto m = mask_of(drop(nonzero_tensor(i64{1} << 20, 8)));
  std::size_t longest = 1, run = 1;
  for (std::size_t i = 1; i < m.size(); ++i) {
    run = m[i] == m[i - 1] ? run + 1 : 1;
    longest = std::max(longest, run);
  }
  CHECK(longest < 40);
  // Neighbours are uncorrelated: P(kept | previous kept) is 1/2 within 6 sd.
  std::int64_t both = 0, prev = 0;
  for (std::size_t i = 1; i < m.size(); ++i) {
    prev += m[i - 1];
    both += m[i - 1] & m[i];
  }
  CHECK(std::fabs(static_cast<double>(both) - prev / 2.0) <= 6.0 * std::sqrt(prev / 4.0));
}

TEST_CASE("Dropout in deterministic mode or at rate 0 returns its input", "[nn][dropout]") {
  const nnx::Tensor x = nonzero_tensor(1000, 9);
  nnx::Rngs rngs{0};
  nnx::Dropout eval(0.5, rngs, /*deterministic=*/true);
  const nnx::Tensor y = eval(x);
  CHECK(nnx::equal(y, x));
  CHECK(y.shares_storage_with(x));  // not even a copy
  nnx::Dropout zero(0.0, rngs);
  CHECK(nnx::equal(zero(x), x));
  nnx::Dropout train(0.5, rngs);
  CHECK_FALSE(nnx::equal(train(x), x));
  train.deterministic = true;  // switched to evaluation
  CHECK(nnx::equal(train(x), x));
}

TEST_CASE("Dropout's mask depends only on the stream key and the element index", "[nn][dropout]") {
  const nnx::Tensor x = nonzero_tensor(4099, 10);  // not a multiple of a Philox block
  nnx::Rngs a{5}, b{5}, c{6};
  nnx::Dropout da(0.3, a), db(0.3, b), dc(0.3, c);
  const auto first = mask_of(da(x));
  CHECK(first == mask_of(db(x)));        // same seed, same key, same mask
  CHECK(first != mask_of(dc(x)));        // another seed
  const auto second = mask_of(da(x));
  CHECK(second != first);                // the stream advanced
  CHECK(second == mask_of(db(x)));       // ... the same way for the same seed

  // The module shares the caller's Rngs: after its two calls, the caller's stream is at the
  // third key of a fresh Rngs{5}.
  nnx::Rngs fresh{5};
  fresh.dropout();
  fresh.dropout();
  CHECK(a.dropout() == fresh.dropout());

  // Only the dropout stream matters, and element i's fate does not depend on the tensor's
  // size or values: a shorter tensor's mask is a prefix of the longer one's.
  nnx::Rngs n1{{"params", 1}, {"dropout", 77}}, n2{{"params", 2}, {"dropout", 77}};
  nnx::Dropout d1(0.3, n1), d2(0.3, n2);
  const auto longer = mask_of(d1(x));
  const auto shorter = mask_of(d2(nonzero_tensor(1001, 11)));
  CHECK(std::vector<std::uint8_t>(longer.begin(), longer.begin() + 1001) == shorter);
}

TEST_CASE("Dropout rejects rates outside [0, 1) and non-f32 input", "[nn][dropout][errors]") {
  nnx::Rngs rngs{0};
  CHECK_THROWS_AS(nnx::Dropout(1.0, rngs), nnx::InvalidArgument);
  CHECK_THROWS_AS(nnx::Dropout(-0.1, rngs), nnx::InvalidArgument);
  CHECK_THROWS_AS(nnx::Dropout(std::numeric_limits<double>::quiet_NaN(), rngs), nnx::InvalidArgument);
  nnx::Dropout drop(0.5, rngs);
  CHECK_THROWS_AS(drop(nnx::Tensor::zeros({4}, nnx::DType::i32)), nnx::DTypeError);
}
