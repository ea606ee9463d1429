// Double-precision references for the nn/ modules, written from the formulas (not from the
// library's code paths) and reading only the modules' parameters. One sequence at a time:
// x is [T, C] row-major; position t is t (a full sequence from the start).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <random>
#include <string>
#include <vector>

#include <nnx/core/filter.hpp>
#include <nnx/core/graph.hpp>
#include <nnx/nn.hpp>

namespace nn_ref {

using i64 = std::int64_t;
using Vec = std::vector<double>;

inline Vec to_double(const nnx::Tensor& t) {
  const auto s = t.span<float>();
  return Vec(s.begin(), s.end());
}

// Uniform f32 values in [lo, hi) of the given shape, reproducible from the seed.
inline nnx::Tensor random_tensor(const nnx::Shape& shape, std::uint32_t seed, float lo = -2.0f, float hi = 2.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = dist(gen);
  return nnx::Tensor::from_vector(v, shape);
}

// Positions 0..T-1 in every row: i32 [B, T].
inline nnx::Tensor positions(i64 B, i64 T) {
  std::vector<std::int32_t> p;
  for (i64 b = 0; b < B; ++b)
    for (i64 t = 0; t < T; ++t) p.push_back(static_cast<std::int32_t>(t));
  return nnx::Tensor::from_vector(p, {B, T});
}

// Biases and norm parameters start at 0 and 1, which would hide a missing bias or scale:
// give them random values (in place: a module's state shares its buffers).
template <class Module>
void randomize_biases_and_norms(Module& m, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> bias(-0.5f, 0.5f), scale(0.5f, 1.5f);
  nnx::State params = nnx::state(m, nnx::of<nnx::Param>);
  for (auto& [path, leaf] : params) {
    const std::string p = path.to_string();
    const bool is_bias = p.size() >= 4 && p.compare(p.size() - 4, 4, "bias") == 0;
    const bool is_scale = p.size() >= 5 && p.compare(p.size() - 5, 5, "scale") == 0;
    if (!is_bias && !is_scale) continue;
    for (float& v : leaf.tensor().template span<float>()) v = is_bias ? bias(gen) : scale(gen);
  }
}

// Copies every parameter of `from` into the module `to` (same paths and shapes).
template <class Module>
void copy_params(const Module& from, Module& to) {
  const nnx::State src = nnx::state(from, nnx::of<nnx::Param>);
  nnx::State dst = nnx::state(to, nnx::of<nnx::Param>);
  for (auto& [path, leaf] : dst) leaf.tensor().copy_from(src.at(path).tensor());
}

// y[T, out] = x[T, in] · kernel[in, out] + bias
inline Vec linear(const Vec& x, i64 T, const nnx::Linear& l) {
  const i64 in = l.in_features, out = l.out_features;
  const Vec w = to_double(l.kernel->value());
  const Vec b = l.bias ? to_double(l.bias->value()) : Vec(static_cast<std::size_t>(out), 0.0);
  Vec y(static_cast<std::size_t>(T * out));
  for (i64 t = 0; t < T; ++t)
    for (i64 o = 0; o < out; ++o) {
      double s = b[static_cast<std::size_t>(o)];
      for (i64 i = 0; i < in; ++i) s += x[static_cast<std::size_t>(t * in + i)] * w[static_cast<std::size_t>(i * out + o)];
      y[static_cast<std::size_t>(t * out + o)] = s;
    }
  return y;
}

inline Vec norm(const Vec& x, i64 T, const nnx::LayerNorm& n) {
  const i64 C = n.features;
  const Vec g = to_double(n.scale.value()), b = to_double(n.bias.value());
  Vec y(x.size());
  for (i64 t = 0; t < T; ++t) {
    const double* r = x.data() + t * C;
    double mean = 0.0, var = 0.0;
    for (i64 c = 0; c < C; ++c) mean += r[c];
    mean /= static_cast<double>(C);
    for (i64 c = 0; c < C; ++c) var += (r[c] - mean) * (r[c] - mean);
    var /= static_cast<double>(C);  // biased, as PyTorch's LayerNorm
    const double inv = 1.0 / std::sqrt(var + n.epsilon);
    for (i64 c = 0; c < C; ++c)
      y[static_cast<std::size_t>(t * C + c)] = (r[c] - mean) * inv * g[static_cast<std::size_t>(c)] + b[static_cast<std::size_t>(c)];
  }
  return y;
}

inline Vec norm(const Vec& x, i64 T, const nnx::RMSNorm& n) {
  const i64 C = n.features;
  const Vec g = to_double(n.scale.value());
  Vec y(x.size());
  for (i64 t = 0; t < T; ++t) {
    const double* r = x.data() + t * C;
    double ms = 0.0;
    for (i64 c = 0; c < C; ++c) ms += r[c] * r[c];
    const double inv = 1.0 / std::sqrt(ms / static_cast<double>(C) + n.epsilon);
    for (i64 c = 0; c < C; ++c) y[static_cast<std::size_t>(t * C + c)] = r[c] * inv * g[static_cast<std::size_t>(c)];
  }
  return y;
}

inline double gelu_tanh(double v) {
  const double k = std::sqrt(2.0 / std::numbers::pi);
  return 0.5 * v * (1.0 + std::tanh(k * (v + 0.044715 * v * v * v)));
}
inline double silu(double v) { return v / (1.0 + std::exp(-v)); }

inline Vec mlp(const Vec& x, i64 T, const nnx::Mlp& m) {
  Vec h = linear(x, T, m.up);
  if (m.activation == nnx::Activation::swiglu) {
    const Vec g = linear(x, T, *m.gate);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] *= silu(g[i]);
  } else {
    for (double& v : h) v = gelu_tanh(v);
  }
  return linear(h, T, m.down);
}

// Rotate-half RoPE of one head vector at position p: pairs (i, i + D/2) turn by p / theta^(2i/D),
// or by p inv_freq[i] when inv_freq (D / 2 values, e.g. scaled ones) is given.
inline void rope(double* v, i64 D, i64 p, double theta, const Vec& inv_freq = {}) {
  for (i64 i = 0; i < D / 2; ++i) {
    const double inv = inv_freq.empty() ? std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(D))
                                        : inv_freq[static_cast<std::size_t>(i)];
    const double angle = static_cast<double>(p) * inv;
    const double a = v[i], b = v[i + D / 2];
    v[i] = a * std::cos(angle) - b * std::sin(angle);
    v[i + D / 2] = b * std::cos(angle) + a * std::sin(angle);
  }
}

// Causal attention of one sequence x [T, C]: query head h reads kv head h / (H / Hkv);
// o_t = Σ_{j<=t} softmax_j(q_t · k_j / sqrt(D)) v_j, then the output projection. RoPE (when
// the module uses it) with a.rope_theta, or with inv_freq when given (a.rope_scaling is not read).
inline Vec attention(const Vec& x, i64 T, const nnx::Attention& a, const Vec& inv_freq = {}) {
  const i64 H = a.num_heads, Hkv = a.num_kv_heads, D = a.head_dim;
  Vec q, k, v;
  if (a.qkv) {  // fused columns: q | k | v
    const Vec f = linear(x, T, *a.qkv);
    const i64 row = (H + 2 * Hkv) * D;
    for (i64 t = 0; t < T; ++t) {
      const double* r = f.data() + t * row;
      q.insert(q.end(), r, r + H * D);
      k.insert(k.end(), r + H * D, r + (H + Hkv) * D);
      v.insert(v.end(), r + (H + Hkv) * D, r + row);
    }
  } else {
    q = linear(x, T, *a.query);
    k = linear(x, T, *a.key);
    v = linear(x, T, *a.value);
  }
  if (a.use_rope)
    for (i64 t = 0; t < T; ++t) {
      for (i64 h = 0; h < H; ++h) rope(q.data() + (t * H + h) * D, D, t, a.rope_theta, inv_freq);
      for (i64 h = 0; h < Hkv; ++h) rope(k.data() + (t * Hkv + h) * D, D, t, a.rope_theta, inv_freq);
    }
  Vec o(static_cast<std::size_t>(T * H * D), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  for (i64 t = 0; t < T; ++t)
    for (i64 h = 0; h < H; ++h) {
      const i64 g = h / (H / Hkv);
      Vec s(static_cast<std::size_t>(t + 1));
      double mx = -1e300;
      for (i64 j = 0; j <= t; ++j) {
        double dot = 0.0;
        for (i64 d = 0; d < D; ++d) dot += q[static_cast<std::size_t>((t * H + h) * D + d)] * k[static_cast<std::size_t>((j * Hkv + g) * D + d)];
        s[static_cast<std::size_t>(j)] = dot * scale;
        mx = std::max(mx, dot * scale);
      }
      double z = 0.0;
      for (double& e : s) z += (e = std::exp(e - mx));
      for (i64 j = 0; j <= t; ++j)
        for (i64 d = 0; d < D; ++d)
          o[static_cast<std::size_t>((t * H + h) * D + d)] +=
              s[static_cast<std::size_t>(j)] / z * v[static_cast<std::size_t>((j * Hkv + g) * D + d)];
    }
  return linear(o, T, a.out);
}

// y = x + attn(attn_norm(x)) * m1;  out = y + mlp(mlp_norm(y)) * m2, where m1 and m2 are the
// dropout multipliers (empty: no dropout). inv_freq: as attention's.
template <class Norm>
Vec decoder_layer(const Vec& x, i64 T, const nnx::DecoderLayer<Norm>& l, const Vec& m1 = {}, const Vec& m2 = {},
                  const Vec& inv_freq = {}) {
  Vec y = attention(norm(x, T, l.attn_norm), T, l.attn, inv_freq);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = x[i] + y[i] * (m1.empty() ? 1.0 : m1[i]);
  Vec out = mlp(norm(y, T, l.mlp_norm), T, l.mlp);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = y[i] + out[i] * (m2.empty() ? 1.0 : m2[i]);
  return out;
}

// Rows [t0, t1) of batch row b of a [B, T, C] tensor, as doubles.
inline Vec rows(const nnx::Tensor& x, i64 b, i64 t0, i64 t1) {
  const i64 T = x.dim(1), C = x.dim(2);
  const float* p = x.data<float>() + (b * T + t0) * C;
  return Vec(p, p + (t1 - t0) * C);
}

// Largest |got - want| over want's entries, got read from float data.
inline double max_abs_diff(const float* got, const Vec& want) {
  double worst = 0.0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  return worst;
}
inline double max_abs(const Vec& v) {
  double m = 0.0;
  for (double e : v) m = std::max(m, std::fabs(e));
  return m;
}

}  // namespace nn_ref
