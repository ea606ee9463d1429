// Tests for nnx/kernels/rope.hpp: rotate-half RoPE against the Hugging Face Llama formula
// evaluated in double, with an error bound that covers HF's own float32 angle; inv_freq
// against HF's float32 computation; position 0 is the identity; wide heads (several
// frequency slices) and precomputed inv_freq agree bit for bit with the theta overload; every
// tier and thread count gives ref's bits; a rope_scaling (linear, llama3) gives the same bits
// through every path.
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "nnx/kernels/rope.hpp"

#include "../support/numeric.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::kUnit;
std::vector<float> rope_inputs(std::size_t n, std::uint32_t seed) {
  return test_support::random_floats(n, seed, -2.0f, 2.0f);
}

// HF LlamaRotaryEmbedding + apply_rotary_pos_emb, in double:
//   inv_freq = 1 / theta^(arange(0, D, 2) / D); freqs = pos * inv_freq; emb = cat(freqs, freqs)
//   q_embed = q * cos(emb) + rotate_half(q) * sin(emb), rotate_half(q) = cat(-q2, q1)
// Returns the largest |y - ref| / bound, bound = (|x1| + |x2|) (da + 4u) where da bounds the
// float angle's error: inv_freq carries the rounding of the exponent 2i/D (amplified by
// ln(theta) * 2i/D) plus two roundings, and the product one more.
double rope_error_ratio(const std::vector<float>& x, const std::vector<float>& y, const std::vector<std::int32_t>& pos,
                        i64 T, i64 H, i64 D, double theta) {
  const i64 half = D / 2;
  double worst = 0.0;
  for (i64 t = 0; t < T; ++t)
    for (i64 h = 0; h < H; ++h)
      for (i64 i = 0; i < half; ++i) {
        const double e = static_cast<double>(2 * i) / static_cast<double>(D);
        const double inv = 1.0 / std::pow(theta, e);
        const double angle = pos[static_cast<std::size_t>(t)] * inv;
        const double c = std::cos(angle), s = std::sin(angle);
        const std::size_t lo = static_cast<std::size_t>((t * H + h) * D + i), hi = lo + static_cast<std::size_t>(half);
        const double x1 = x[lo], x2 = x[hi];
        const double r1 = x1 * c + (-x2) * s, r2 = x2 * c + x1 * s;
        const double da = std::fabs(angle) * (std::log(theta) * e + 3.0) * kUnit;
        const double bound = (std::fabs(x1) + std::fabs(x2)) * (da + 4.0 * kUnit) + 1e-30;
        worst = std::max(worst, std::fabs(y[lo] - r1) / bound);
        worst = std::max(worst, std::fabs(y[hi] - r2) / bound);
      }
  return worst;
}

}  // namespace

TEST_CASE("rope_rotate_half matches the HF formula in double", "[kernels][rope]") {
  const std::vector<std::int32_t> pos{0, 1, 2, 17, 511, 4095, 8191, 131071};
  const i64 T = static_cast<i64>(pos.size()), H = 3;
  for (float theta : {10000.0f, 500000.0f})
    for (i64 D : {2, 8, 64, 128, 130}) {
      const auto x = rope_inputs(static_cast<std::size_t>(T * H * D), static_cast<std::uint32_t>(D));
      std::vector<float> y = x;
      k::rope_rotate_half(y.data(), pos.data(), T, H, D, theta);
      INFO("theta=" << theta << " D=" << D);
      REQUIRE(rope_error_ratio(x, y, pos, T, H, D, theta) <= 1.0);
      std::vector<float> z = x;
      k::ref::rope_rotate_half(z.data(), pos.data(), T, H, D, theta);
      REQUIRE(z == y);
    }
}

TEST_CASE("rope_inv_freq follows HF's float32 computation", "[kernels][rope]") {
  // HF: inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)) in float32. Our
  // power is the correctly rounded one; torch's float pow is within 1 ulp of it.
  for (float theta : {10000.0f, 500000.0f, 1000000.0f})
    for (i64 D : {64, 128}) {
      std::vector<float> inv(static_cast<std::size_t>(D / 2));
      k::rope_inv_freq(theta, D, inv.data());
      for (i64 i = 0; i < D / 2; ++i) {
        const float exponent = static_cast<float>(2 * i) / static_cast<float>(D);
        const float hf = 1.0f / std::pow(theta, exponent);  // powf
        const float got = inv[static_cast<std::size_t>(i)];
        INFO("theta=" << theta << " D=" << D << " i=" << i);
        REQUIRE(std::fabs(got - hf) <= 2.0f * std::nextafter(hf, 1e30f) - 2.0f * hf);
      }
      CHECK(inv[0] == 1.0f);
    }
}

TEST_CASE("rope at position 0 is the identity", "[kernels][rope]") {
  const auto x = rope_inputs(4 * 2 * 64, 3);
  std::vector<float> y = x;
  const std::vector<std::int32_t> pos(4, 0);
  k::rope_rotate_half(y.data(), pos.data(), 4, 2, 64, 10000.0f);
  CHECK(y == x);
}

TEST_CASE("rope: precomputed inv_freq and wide heads give the same bits as theta", "[kernels][rope]") {
  const std::vector<std::int32_t> pos{3, 1000, 77};
  // D / 2 = 550 frequencies: three slices in the theta overload, 64-wide chunks inside.
  for (i64 D : {64, 1100}) {
    const auto x = rope_inputs(static_cast<std::size_t>(3 * 2 * D), 4);
    std::vector<float> a = x, b = x;
    k::rope_rotate_half(a.data(), pos.data(), 3, 2, D, 10000.0f);
    std::vector<float> inv(static_cast<std::size_t>(D / 2));
    k::rope_inv_freq(10000.0f, D, inv.data());
    k::rope_rotate_half(b.data(), pos.data(), 3, 2, D, inv.data());
    INFO("D=" << D);
    CHECK(a == b);
    CHECK(rope_error_ratio(x, a, pos, 3, 2, D, 10000.0) <= 1.0);
  }
}

TEST_CASE("rope: every head of a row gets its row's position", "[kernels][rope]") {
  const i64 H = 4, D = 16;
  const auto x = rope_inputs(static_cast<std::size_t>(2 * H * D), 5);
  std::vector<float> y = x;
  const std::vector<std::int32_t> pos{5, 9};
  k::rope_rotate_half(y.data(), pos.data(), 2, H, D, 10000.0f);
  for (i64 t = 0; t < 2; ++t)
    for (i64 h = 0; h < H; ++h) {
      std::vector<float> one(x.begin() + (t * H + h) * D, x.begin() + (t * H + h + 1) * D);
      k::rope_rotate_half(one.data(), &pos[static_cast<std::size_t>(t)], 1, 1, D, 10000.0f);
      CHECK(std::memcmp(one.data(), y.data() + (t * H + h) * D, static_cast<std::size_t>(D) * sizeof(float)) == 0);
    }
}

TEST_CASE("rope: every tier gives ref's bits, at odd head counts and frequency tails", "[kernels][rope]") {
  std::mt19937 gen(6);
  std::uniform_int_distribution<std::int32_t> position(0, 70000);
  const i64 T = 5;
  std::vector<std::int32_t> pos(static_cast<std::size_t>(T));
  for (auto& p : pos) p = position(gen);
  for (i64 H : {1, 3})
    for (i64 D : {2, 6, 18, 64, 130, 270}) {  // D/2 = 1, 3, 9, 32, 65 and 135: every tail of 8 and of 64
      const auto x = rope_inputs(static_cast<std::size_t>(T * H * D), static_cast<std::uint32_t>(D + H));
      std::vector<float> inv(static_cast<std::size_t>(D / 2));
      k::rope_inv_freq(500000.0f, D, inv.data());
      std::vector<float> want = x;
      k::ref::rope_rotate_slice(want.data(), pos.data(), T, H, D, 0, D / 2, inv.data());
      CHECK(rope_error_ratio(x, want, pos, T, H, D, 500000.0) <= 1.0);
      for (k::Isa isa : k::kAllIsas) {
        if (!k::isa_supported(isa)) continue;
        std::vector<float> got = x;
        k::select(k::kRopeRotateSlice, isa)(got.data(), pos.data(), T, H, D, 0, D / 2, inv.data());
        INFO(k::isa_name(isa) << " H=" << H << " D=" << D);
        CHECK(got == want);
      }
    }
}

TEST_CASE("rope: the bits do not depend on the thread count", "[kernels][rope]") {
  const i64 T = 37, H = 3, D = 64;
  std::vector<std::int32_t> pos(static_cast<std::size_t>(T));
  for (i64 t = 0; t < T; ++t) pos[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(t * 13);
  const auto x = rope_inputs(static_cast<std::size_t>(T * H * D), 7);
  const int threads_before = nnx::num_threads();
  const auto work_before = k::parallel_min_work();
  std::vector<float> one = x;
  k::set_thread_count(1);
  k::rope_rotate_half(one.data(), pos.data(), T, H, D, 10000.0f);
  k::set_thread_count(2);
  k::set_parallel_min_work(1);
  std::vector<float> two = x;
  k::rope_rotate_half(two.data(), pos.data(), T, H, D, 10000.0f);
  k::set_thread_count(threads_before);
  k::set_parallel_min_work(work_before);
  CHECK(one == two);
  CHECK(rope_error_ratio(x, one, pos, T, H, D, 10000.0) <= 1.0);
}

TEST_CASE("rope: a rope_scaling gives the same bits through theta, precomputed inv_freq and every tier",
          "[kernels][rope]") {
  // Llama 3.1's llama3 scaling (frequencies in all three bands at these head sizes) and a linear one.
  const k::RopeFreqScaling llama3{.type = k::RopeScalingType::llama3,
                                  .factor = 8.0,
                                  .low_freq_factor = 1.0,
                                  .high_freq_factor = 4.0,
                                  .original_max_position_embeddings = 8192};
  const k::RopeFreqScaling linear{.type = k::RopeScalingType::linear, .factor = 4.0};
  const std::vector<std::int32_t> pos{0, 5, 4097, 70000};
  const i64 T = 4;
  for (const auto& s : {llama3, linear})
    for (i64 H : {1, 3})
      for (i64 D : {2, 18, 64, 128, 600}) {  // 600: three slices of the theta overload
        INFO("type " << static_cast<int>(s.type) << " H=" << H << " D=" << D);
        std::vector<float> plain(static_cast<std::size_t>(D / 2)), inv(plain.size());
        k::rope_inv_freq(500000.0f, D, plain.data());
        k::rope_inv_freq(500000.0f, D, inv.data(), s);
        for (std::size_t i = 0; i < inv.size(); ++i) REQUIRE(inv[i] == k::ref::rope_scaled_inv_freq(plain[i], s));
        const auto x = rope_inputs(static_cast<std::size_t>(T * H * D), static_cast<std::uint32_t>(D * H));
        std::vector<float> want = x;
        k::ref::rope_rotate_slice(want.data(), pos.data(), T, H, D, 0, D / 2, inv.data());
        std::vector<float> by_theta = x, by_ref_theta = x, by_inv = x;
        k::rope_rotate_half(by_theta.data(), pos.data(), T, H, D, 500000.0f, s);
        k::ref::rope_rotate_half(by_ref_theta.data(), pos.data(), T, H, D, 500000.0f, s);
        k::rope_rotate_half(by_inv.data(), pos.data(), T, H, D, inv.data());
        CHECK(by_theta == want);
        CHECK(by_ref_theta == want);
        CHECK(by_inv == want);
        for (k::Isa isa : k::kAllIsas) {
          if (!k::isa_supported(isa)) continue;
          std::vector<float> got = x;
          k::select(k::kRopeRotateSlice, isa)(got.data(), pos.data(), T, H, D, 0, D / 2, inv.data());
          INFO(k::isa_name(isa));
          CHECK(got == want);
        }
      }
  // Each band as transformers puts it: wavelength 2 pi / inv against 8192 / 4 and 8192 / 1.
  const float high = 2.0f * 3.14159265f / 1000.0f, low = 2.0f * 3.14159265f / 10000.0f;
  CHECK(k::ref::rope_scaled_inv_freq(high, llama3) == high);
  CHECK(k::ref::rope_scaled_inv_freq(low, llama3) == low / 8.0f);
  const float mid = 2.0f * 3.14159265f / 4096.0f;  // old_ctx / wavelen = 2: smooth = 1/3
  CHECK(k::ref::rope_scaled_inv_freq(mid, llama3) == Approx(mid * (2.0 / 3.0 / 8.0 + 1.0 / 3.0)).epsilon(1e-6));
  CHECK(k::ref::rope_scaled_inv_freq(mid, {}) == mid);
  CHECK(k::ref::rope_scaled_inv_freq(mid, linear) == mid / 4.0f);
}
