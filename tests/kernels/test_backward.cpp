// Tests for the training kernels (the `_backward` entries of nnx/kernels/*.hpp, the
// cross-entropy, the gradient sums and the optimizer updates): every tier against
// double-precision references written from the textbook formulas (matrix form for attention),
// on random inputs at odd sizes; and the same bits on 1 and 2 threads.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "nnx/kernels/activation.hpp"
#include "nnx/kernels/attention.hpp"
#include "nnx/kernels/elementwise.hpp"
#include "nnx/kernels/norm.hpp"
#include "nnx/kernels/optimizer.hpp"
#include "nnx/kernels/softmax.hpp"

#include "../support/numeric.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::random_floats;

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

double max_diff(const std::vector<float>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

// Runs fn with 1 thread and with 2 (every kernel split, however small), restoring the settings.
template <class Fn>
void on_one_and_two_threads(Fn&& fn) {
  const int threads = nnx::num_threads();
  const i64 min_work = k::parallel_min_work();
  k::set_thread_count(1);
  fn(1);
  k::set_thread_count(2);
  k::set_parallel_min_work(1);
  fn(2);
  k::set_thread_count(threads);
  k::set_parallel_min_work(min_work);
}

struct AttentionGradsD {
  std::vector<double> dq, dk, dv;
};

// Causal attention backward of one sequence in double, in matrix form: P = softmax(scale Q Kᵀ)
// (masked above the diagonal), dV = Pᵀ dO, dP = dO Vᵀ, dS = P ∘ (dP - rowsum(P ∘ dP)),
// dQ = scale dS K, dK = scale dSᵀ Q; query head h reads KV head h / G.
AttentionGradsD attention_backward_double(const std::vector<float>& q, const std::vector<float>& kk,
                                          const std::vector<float>& v, const std::vector<float>& dout, i64 T, i64 H,
                                          i64 Hkv, i64 D, double scale) {
  const i64 G = H / Hkv;
  AttentionGradsD r{std::vector<double>(q.size()), std::vector<double>(kk.size()), std::vector<double>(kk.size())};
  for (i64 h = 0; h < H; ++h) {
    const i64 kh = h / G;
    auto Q = [&](i64 t, i64 d) { return double(q[(t * H + h) * D + d]); };
    auto K = [&](i64 t, i64 d) { return double(kk[(t * Hkv + kh) * D + d]); };
    auto V = [&](i64 t, i64 d) { return double(v[(t * Hkv + kh) * D + d]); };
    auto dO = [&](i64 t, i64 d) { return double(dout[(t * H + h) * D + d]); };
    std::vector<double> P(T * T, 0.0), dS(T * T, 0.0);
    for (i64 i = 0; i < T; ++i) {
      double m = -INFINITY;
      for (i64 j = 0; j <= i; ++j) {
        double s = 0;
        for (i64 d = 0; d < D; ++d) s += Q(i, d) * K(j, d);
        P[i * T + j] = s * scale;
        m = std::max(m, P[i * T + j]);
      }
      double sum = 0;
      for (i64 j = 0; j <= i; ++j) sum += (P[i * T + j] = std::exp(P[i * T + j] - m));
      for (i64 j = 0; j <= i; ++j) P[i * T + j] /= sum;
      double rowsum = 0;
      std::vector<double> dP(T, 0.0);
      for (i64 j = 0; j <= i; ++j) {
        for (i64 d = 0; d < D; ++d) dP[j] += dO(i, d) * V(j, d);
        rowsum += P[i * T + j] * dP[j];
      }
      for (i64 j = 0; j <= i; ++j) dS[i * T + j] = P[i * T + j] * (dP[j] - rowsum);
    }
    for (i64 i = 0; i < T; ++i)
      for (i64 j = 0; j <= i; ++j)
        for (i64 d = 0; d < D; ++d) {
          r.dv[(j * Hkv + kh) * D + d] += P[i * T + j] * dO(i, d);
          r.dq[(i * H + h) * D + d] += scale * dS[i * T + j] * K(j, d);
          r.dk[(j * Hkv + kh) * D + d] += scale * dS[i * T + j] * Q(i, d);
        }
  }
  return r;
}

}  // namespace

TEST_CASE("attention backward on every tier matches a double reference", "[kernels][train]") {
  std::uint32_t seed = 500;
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    const k::AttendBackwardFn fn = k::select(k::kAttendBackward, isa);
    for (i64 D : {1, 7, 8, 13, 64, 67})
      for (i64 T : {1, 5, 17, 40})
        for (auto [H, Hkv] : {std::pair<i64, i64>{1, 1}, {3, 1}, {4, 2}}) {
          CAPTURE(k::isa_name(isa), D, T, H, Hkv);
          const auto q = random_floats(T * H * D, seed++, -2, 2), kk = random_floats(T * Hkv * D, seed++, -2, 2);
          const auto v = random_floats(T * Hkv * D, seed++), dout = random_floats(T * H * D, seed++);
          const float scale = 1.0f / std::sqrt(float(D));
          const auto ref = attention_backward_double(q, kk, v, dout, T, H, Hkv, D, scale);
          std::vector<float> dq(q.size(), NAN), dk(kk.size(), NAN), dv(kk.size(), NAN), scratch(2 * T);
          const i64 G = H / Hkv;
          for (i64 h = 0; h < Hkv; ++h)
            fn(q.data() + h * G * D, kk.data() + h * D, v.data() + h * D, dout.data() + h * G * D, T, G, D, H * D,
               Hkv * D, scale, dq.data() + h * G * D, dk.data() + h * D, dv.data() + h * D, scratch.data());
          CHECK(max_diff(dq, ref.dq) <= 2e-5 * std::max(1.0, max_abs(ref.dq)));
          CHECK(max_diff(dk, ref.dk) <= 2e-5 * std::max(1.0, max_abs(ref.dk)));
          CHECK(max_diff(dv, ref.dv) <= 2e-5 * std::max(1.0, max_abs(ref.dv)));
        }
  }
}

TEST_CASE("attention backward gives the same bits on 1 and 2 threads", "[kernels][train]") {
  const i64 B = 3, T = 33, H = 4, Hkv = 2, D = 24;
  const auto q = random_floats(B * T * H * D, 1), kk = random_floats(B * T * Hkv * D, 2);
  const auto v = random_floats(B * T * Hkv * D, 3), dout = random_floats(B * T * H * D, 4);
  std::vector<std::vector<float>> results;
  on_one_and_two_threads([&](int) {
    std::vector<float> dq(q.size()), dk(kk.size()), dv(kk.size()), scratch(k::attend_backward_scratch(T));
    k::attend_backward(q.data(), kk.data(), v.data(), dout.data(), B, T, H, Hkv, D, 0.2f, dq.data(), dk.data(),
                       dv.data(), scratch.data());
    dq.insert(dq.end(), dk.begin(), dk.end());
    dq.insert(dq.end(), dv.begin(), dv.end());
    results.push_back(dq);
  });
  CHECK(results[0] == results[1]);
}

TEST_CASE("norm backward matches a double reference and sums parameter gradients into their buffers",
          "[kernels][train]") {
  std::uint32_t seed = 900;
  for (const bool rms : {false, true})
    for (i64 C : {1, 7, 33, 771}) {
      CAPTURE(rms, C);
      const i64 R = 5;
      const auto x = random_floats(R * C, seed++, -3, 3), dy = random_floats(R * C, seed++);
      const auto scale = random_floats(C, seed++, 0.5f, 1.5f);
      const double eps = 1e-5;
      std::vector<double> dx_ref(R * C), dscale_ref(C, 0.25), dbias_ref(C, -0.5);
      for (i64 r = 0; r < R; ++r) {
        double mean = 0, var = 0;
        if (!rms)
          for (i64 j = 0; j < C; ++j) mean += x[r * C + j] / double(C);
        for (i64 j = 0; j < C; ++j) var += (x[r * C + j] - mean) * (x[r * C + j] - mean) / double(C);
        const double rstd = 1 / std::sqrt(var + eps);
        double mg = 0, mgx = 0;
        for (i64 j = 0; j < C; ++j) {
          const double g = double(dy[r * C + j]) * scale[j], xh = (x[r * C + j] - mean) * rstd;
          mg += g / double(C);
          mgx += g * xh / double(C);
          dscale_ref[j] += double(dy[r * C + j]) * xh;
          dbias_ref[j] += dy[r * C + j];
        }
        for (i64 j = 0; j < C; ++j) {
          const double g = double(dy[r * C + j]) * scale[j], xh = (x[r * C + j] - mean) * rstd;
          dx_ref[r * C + j] = rstd * (g - (rms ? 0.0 : mg) - xh * mgx);
        }
      }
      auto check = [&](const std::vector<float>& dx, const std::vector<float>& dscale, const std::vector<float>& dbias) {
        CHECK(max_diff(dx, dx_ref) <= 1e-5 * std::max(1.0, max_abs(dx_ref)));
        CHECK(max_diff(dscale, dscale_ref) <= 1e-5 * std::max(1.0, max_abs(dscale_ref)));
        if (!rms) CHECK(max_diff(dbias, dbias_ref) <= 1e-5 * std::max(1.0, max_abs(dbias_ref)));
      };
      for (k::Isa isa : k::kAllIsas) {
        if (!k::isa_supported(isa)) continue;
        CAPTURE(k::isa_name(isa));
        std::vector<float> dx(R * C, NAN), stats(2 * R), dscale(C, 0.25f), dbias(C, -0.5f);
        k::select(rms ? k::kRmsNormBackwardRows : k::kLayerNormBackwardRows, isa)(x.data(), scale.data(), dy.data(),
                                                                                  float(eps), dx.data(), stats.data(),
                                                                                  R, C);
        k::select(k::kNormParamGrads, isa)(x.data(), dy.data(), stats.data(), R, C, 0, C, dscale.data(),
                                           rms ? nullptr : dbias.data());
        check(dx, dscale, dbias);
      }
      std::vector<std::vector<float>> results;
      on_one_and_two_threads([&](int) {
        std::vector<float> dx(R * C), stats(2 * R), dscale(C, 0.25f), dbias(C, -0.5f);
        if (rms)
          k::rms_norm_backward(x.data(), scale.data(), dy.data(), float(eps), dx.data(), stats.data(), dscale.data(), R,
                               C);
        else
          k::layer_norm_backward(x.data(), scale.data(), dy.data(), float(eps), dx.data(), stats.data(), dscale.data(),
                                 dbias.data(), R, C);
        check(dx, dscale, dbias);
        dx.insert(dx.end(), dscale.begin(), dscale.end());
        dx.insert(dx.end(), dbias.begin(), dbias.end());
        results.push_back(dx);
      });
      CHECK(results[0] == results[1]);
    }
}

TEST_CASE("gelu and swiglu backward match their derivatives in double", "[kernels][train]") {
  const i64 n = 1037;
  const auto x = random_floats(n, 31, -9, 9), u = random_floats(n, 32, -2, 2), dy = random_floats(n, 33);
  std::vector<double> gelu_ref(n), dgate_ref(n), dup_ref(n);
  const double c = std::sqrt(2.0 / 3.14159265358979323846);
  for (i64 i = 0; i < n; ++i) {
    const double xi = x[i], t = std::tanh(c * (xi + 0.044715 * xi * xi * xi));
    gelu_ref[i] = dy[i] * (0.5 * (1 + t) + 0.5 * xi * (1 - t * t) * c * (1 + 3 * 0.044715 * xi * xi));
    const double s = 1 / (1 + std::exp(-xi));
    dgate_ref[i] = dy[i] * u[i] * (s + xi * s * (1 - s));
    dup_ref[i] = dy[i] * xi * s;
  }
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    CAPTURE(k::isa_name(isa));
    // n and a few odd lengths: the vector tiers' masked tails.
    for (i64 len : {n, i64(1), i64(7), i64(13)}) {
      std::vector<float> dx(len, NAN), dgate(len, NAN), dup(len, NAN);
      k::select(k::kGeluTanhBackward, isa)(x.data(), dy.data(), dx.data(), len);
      k::select(k::kSwigluBackward, isa)(x.data(), u.data(), dy.data(), dgate.data(), dup.data(), len);
      for (i64 i = 0; i < len; ++i) {
        CAPTURE(len, x[i]);
        REQUIRE(std::fabs(dx[i] - gelu_ref[i]) <= 1e-6 * std::max(1.0, std::fabs(gelu_ref[i])));
        REQUIRE(std::fabs(dgate[i] - dgate_ref[i]) <= 1e-6 * std::max(1.0, std::fabs(dgate_ref[i])));
        REQUIRE(std::fabs(dup[i] - dup_ref[i]) <= 1e-6 * std::max(1.0, std::fabs(dup_ref[i])));
      }
    }
  }
  std::vector<std::vector<float>> results;
  on_one_and_two_threads([&](int) {
    std::vector<float> dx(n), dgate(n), dup(n);
    k::gelu_tanh_backward(x.data(), dy.data(), dx.data(), n);
    k::swiglu_backward(x.data(), u.data(), dy.data(), dgate.data(), dup.data(), n);
    dx.insert(dx.end(), dgate.begin(), dgate.end());
    dx.insert(dx.end(), dup.begin(), dup.end());
    results.push_back(dx);
  });
  CHECK(results[0] == results[1]);
}

TEST_CASE("cross-entropy rows: loss and gradient against double, ignored rows contribute nothing",
          "[kernels][train]") {
  const i64 R = 6, V = 301;
  const auto logits = random_floats(R * V, 41, -20, 20);
  const std::vector<std::int32_t> targets{5, -100, 300, 0, 17, -100};
  const float w = 0.25f;
  std::vector<double> loss_ref(R, 0.0), grad_ref(R * V, 0.0);
  for (i64 r = 0; r < R; ++r) {
    if (targets[r] == -100) continue;
    double m = -INFINITY, s = 0;
    for (i64 j = 0; j < V; ++j) m = std::max(m, double(logits[r * V + j]));
    for (i64 j = 0; j < V; ++j) s += std::exp(logits[r * V + j] - m);
    loss_ref[r] = m + std::log(s) - logits[r * V + targets[r]];
    for (i64 j = 0; j < V; ++j) grad_ref[r * V + j] = w * (std::exp(logits[r * V + j] - m) / s - (j == targets[r]));
  }
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    CAPTURE(k::isa_name(isa));
    std::vector<float> loss(R, NAN), grad = logits;
    k::select(k::kCrossEntropyRows, isa)(grad.data(), targets.data(), R, V, w, -100, loss.data());
    CHECK(max_diff(loss, loss_ref) <= 1e-5 * max_abs(loss_ref));
    CHECK(max_diff(grad, grad_ref) <= 1e-7);
    CHECK(loss[1] == 0.0f);
    CHECK(std::all_of(grad.begin() + V, grad.begin() + 2 * V, [](float g) { return g == 0.0f; }));
  }
  std::vector<std::vector<float>> results;
  on_one_and_two_threads([&](int) {
    std::vector<float> loss(R), grad = logits;
    k::cross_entropy_rows(grad.data(), targets.data(), R, V, w, -100, loss.data());
    grad.insert(grad.end(), loss.begin(), loss.end());
    results.push_back(grad);
  });
  CHECK(results[0] == results[1]);
}

TEST_CASE("cross-entropy over column tiles: merged statistics and tile gradients against double",
          "[kernels][train]") {
  const i64 R = 7, V = 301;
  const auto logits = random_floats(R * V, 43, -20, 20);
  const std::vector<std::int32_t> targets{5, -100, 300, 0, 17, 150, 151};
  const float w = 0.25f;
  std::vector<double> m_ref(R, -INFINITY), s_ref(R, 0.0), grad_ref(R * V, 0.0);
  for (i64 r = 0; r < R; ++r) {
    if (targets[r] == -100) continue;
    for (i64 j = 0; j < V; ++j) m_ref[r] = std::max(m_ref[r], double(logits[r * V + j]));
    for (i64 j = 0; j < V; ++j) s_ref[r] += std::exp(logits[r * V + j] - m_ref[r]);
    for (i64 j = 0; j < V; ++j)
      grad_ref[r * V + j] = w * (std::exp(logits[r * V + j] - m_ref[r]) / s_ref[r] - (j == targets[r]));
  }
  // Runs both passes over tiles of `width` columns (the last one partial) with `stats`/`grad`.
  const auto tiled = [&](i64 width, auto stats, auto grad) {
    std::vector<float> row_max(R, -INFINITY), row_sum(R, 0.0f), out(R * V);
    for (i64 v0 = 0; v0 < V; v0 += width) {
      const i64 n = std::min(width, V - v0);
      std::vector<float> tile(R * n);
      for (i64 r = 0; r < R; ++r) std::copy_n(&logits[r * V + v0], n, &tile[r * n]);
      stats(tile.data(), targets.data(), R, n, -100, row_max.data(), row_sum.data());
    }
    for (i64 v0 = 0; v0 < V; v0 += width) {
      const i64 n = std::min(width, V - v0);
      std::vector<float> tile(R * n);
      for (i64 r = 0; r < R; ++r) std::copy_n(&logits[r * V + v0], n, &tile[r * n]);
      grad(tile.data(), targets.data(), R, n, v0, w, -100, row_max.data(), row_sum.data());
      for (i64 r = 0; r < R; ++r) std::copy_n(&tile[r * n], n, &out[r * V + v0]);
    }
    out.insert(out.end(), row_max.begin(), row_max.end());
    out.insert(out.end(), row_sum.begin(), row_sum.end());
    return out;
  };
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    for (i64 width : {V, i64{1}, i64{8}, i64{37}, i64{150}}) {
      CAPTURE(k::isa_name(isa), width);
      const std::vector<float> out =
          tiled(width, k::select(k::kCrossEntropyTileStats, isa), k::select(k::kCrossEntropyTileGrad, isa));
      const std::vector<float> grad(out.begin(), out.begin() + R * V);
      CHECK(max_diff(grad, grad_ref) <= 1e-7);
      for (i64 r = 0; r < R; ++r) {
        if (targets[r] == -100) continue;
        CHECK(out[R * V + r] == float(m_ref[r]));  // the maximum is exact
        CHECK(std::fabs(out[R * V + R + r] - s_ref[r]) <= 1e-5 * s_ref[r]);
      }
      CHECK(std::all_of(grad.begin() + V, grad.begin() + 2 * V, [](float g) { return g == 0.0f; }));
    }
  }
  std::vector<std::vector<float>> results;
  on_one_and_two_threads([&](int) {
    const auto stats = [](float* x, const std::int32_t* t, i64 rows, i64 cols, std::int32_t ignore, float* m,
                          float* s) { k::cross_entropy_tile_stats(x, t, rows, cols, ignore, m, s); };
    const auto grad = [](float* x, const std::int32_t* t, i64 rows, i64 cols, i64 col0, float wt,
                         std::int32_t ignore, const float* m, const float* s) {
      k::cross_entropy_tile_grad(x, t, rows, cols, col0, wt, ignore, m, s);
    };
    results.push_back(tiled(37, stats, grad));
  });
  CHECK(results[0] == results[1]);
}

TEST_CASE("gradient sums: column sums, scattered rows", "[kernels][train]") {
  const i64 R = 37, C = 131, V = 9;
  const auto x = random_floats(R * C, 51);
  std::vector<std::int32_t> ids(R);
  for (i64 r = 0; r < R; ++r) ids[r] = static_cast<std::int32_t>((r * 7) % V);
  on_one_and_two_threads([&](int) {
    std::vector<float> sums(C, 1.0f), table(V * C, 0.5f);
    k::add_column_sums(x.data(), R, C, sums.data());
    k::scatter_add_rows(x.data(), ids.data(), R, C, table.data());
    std::vector<double> sums_ref(C, 1.0), table_ref(V * C, 0.5);
    for (i64 r = 0; r < R; ++r)
      for (i64 j = 0; j < C; ++j) {
        sums_ref[j] += x[r * C + j];
        table_ref[ids[r] * C + j] += x[r * C + j];
      }
    CHECK(max_diff(sums, sums_ref) <= 1e-5);
    CHECK(max_diff(table, table_ref) <= 1e-5);
  });
}

TEST_CASE("AdamW and SGD updates follow torch.optim's formulas; sum of squares is thread-invariant",
          "[kernels][train]") {
  const i64 n = 10001;
  const auto p0 = random_floats(n, 61), g = random_floats(n, 62), mu0 = random_floats(n, 63, -0.1f, 0.1f);
  const auto nu0 = random_floats(n, 64, 0.0f, 0.01f);
  const k::AdamWStep s{.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f,
                       .bias_correction1 = 1 - 0.9f * 0.9f * 0.9f, .bias_correction2 = 1 - 0.95f * 0.95f * 0.95f,
                       .grad_scale = 0.5f};
  auto p = p0, mu = mu0, nu = nu0;
  k::adamw_update(p.data(), g.data(), mu.data(), nu.data(), n, s);
  auto q = p0, buf = mu0;
  k::sgd_update(q.data(), g.data(), buf.data(), n, 0.1f, 0.9f, 0.01f, 0.5f, false);
  for (i64 i = 0; i < n; ++i) {
    const double gi = 0.5 * g[i];
    const double m = 0.9 * mu0[i] + 0.1 * gi, v = 0.95 * nu0[i] + 0.05 * gi * gi;
    const double expect = p0[i] * (1 - 0.01 * 0.1) - 0.01 * (m / s.bias_correction1) / (std::sqrt(v / s.bias_correction2) + 1e-8);
    CHECK(std::fabs(p[i] - expect) <= 1e-6);
    const double b = 0.9 * mu0[i] + gi + 0.01 * p0[i];
    CHECK(std::fabs(q[i] - (p0[i] - 0.1 * b)) <= 1e-6);
  }
  // Every tier within a few ulps of ref.
  auto pr = p0, mr = mu0, nr = nu0;
  k::ref::adamw_update(pr.data(), g.data(), mr.data(), nr.data(), n, s);
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    CAPTURE(k::isa_name(isa));
    auto pt = p0, mt = mu0, nt = nu0;
    k::select(k::kAdamWUpdate, isa)(pt.data(), g.data(), mt.data(), nt.data(), n, s);
    for (i64 i = 0; i < n; ++i) {
      REQUIRE(std::fabs(pt[i] - pr[i]) <= 4e-7f * std::max(1.0f, std::fabs(pr[i])));
      REQUIRE(std::fabs(mt[i] - mr[i]) <= 2e-8f);  // terms of ~0.1 may cancel: absolute
      REQUIRE(std::fabs(nt[i] - nr[i]) <= 4e-7f * std::fabs(nr[i]) + 1e-12f);
    }
  }
  for (k::Isa isa : k::kAllIsas) {
    if (!k::isa_supported(isa)) continue;
    CAPTURE(k::isa_name(isa));
    for (i64 len : {i64(0), i64(1), i64(31), i64(33), i64(4096), n})
      CHECK(k::select(k::kSumSquaresBlock, isa)(g.data(), len) == k::ref::sum_squares_block(g.data(), len));
  }
  std::vector<double> sums;
  on_one_and_two_threads([&](int) { sums.push_back(k::sum_squares(g.data(), n)); });
  CHECK(sums[0] == sums[1]);
  double ref = 0;
  for (float x : g) ref += double(x) * x;
  CHECK(std::fabs(sums[0] - ref) <= 1e-12 * ref);
}
