// nnx/nn/attention.hpp — causal multi-head / grouped-query attention with an optional KV cache.
//
// Heads: num_heads query heads share num_kv_heads key/value heads (GQA; equal for MHA).
// Projections are fused (one [C, (H + 2 Hkv) D] kernel, q|k|v, as GPT-2's c_attn) or
// separate (query, key, value). RoPE, when on, rotates q and k in the rotate-half
// convention (pairs i and i + D/2) with the given theta, its frequencies rewritten by
// rope_scaling (Hugging Face's linear or llama3; nnx/nn/rope_scaling.hpp) when that is set.
//
// The KV cache (nnx/nn/kv_cache.hpp: key and value [B, S, Hkv, D] in f32, bf16 or int8 with
// scales) exists only in prefill and autoregressive modes. Every row b writes its keys and
// values at its own positions (in cache row b, or the row cache_rows[b] names: a decode step
// of some of the cache's rows), and a query at position p attends to cache entries 0..p of its
// own row: a prefill of a padded prompt never reads its padding, and decoding steps of
// different rows are independent.
// Without a cache (train), a query at index t attends to keys 0..t of its sequence.
//
// The attention proper is nnx::kernels::attend: per batch row and run of KV heads, the
// query heads of those KV groups over the keys with an online softmax over key blocks (no
// [T, T] scores for a long prompt; each K/V row read once per group). Threads split the (batch row,
// KV head) items (nnx/kernels/parallel.hpp); each item computes exactly as it would alone, so
// the output is bitwise the same on any thread count and batch.
//
// Writing the cache is in place when the cache tensor is uniquely owned (use_count() == 1,
// i.e. the state was donated) and copy-on-write otherwise: the module then holds a new
// tensor and every other holder keeps the old one.
//
//   nnx::Attention attn(768, {.num_heads = 12, .fused_qkv = true, .mode = nnx::Mode::prefill,
//                             .cache_batch = 1, .cache_length = 1024}, rngs);
//   nnx::Tensor y = attn(x, positions);      // x f32 [B, T, C], positions i32 [B, T]
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/kernels/attention.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/nn/kv_cache.hpp"
#include "nnx/nn/linear.hpp"
#include "nnx/nn/mode.hpp"
#include "nnx/nn/rope_scaling.hpp"
#include "nnx/ops.hpp"

namespace nnx {

struct AttentionOptions {
  std::int64_t num_heads = 1;
  std::int64_t num_kv_heads = 0;  // 0: num_heads (multi-head attention)
  std::int64_t head_dim = 0;      // 0: d_model / num_heads
  bool fused_qkv = false;
  bool use_bias = true;
  bool use_rope = false;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling = {};  // none: theta's frequencies as they are
  Mode mode = Mode::train;
  std::int64_t cache_batch = 1;   // prefill / autoregressive: rows of the KV cache
  std::int64_t cache_length = 0;  // prefill / autoregressive: positions of the KV cache
  DType cache_dtype = DType::f32;  // prefill / autoregressive: f32, bf16 or i8 (nnx/nn/kv_cache.hpp)
};

struct Attention {
  std::int64_t num_heads = 0;
  std::int64_t num_kv_heads = 0;
  std::int64_t head_dim = 0;
  bool use_rope = false;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  std::optional<Linear> qkv;    // fused: [C, (H + 2 Hkv) D]
  std::optional<Linear> query;  // separate: [C, H D]
  std::optional<Linear> key;    // separate: [C, Hkv D]
  std::optional<Linear> value;  // separate: [C, Hkv D]
  Linear out;                   // [H D, C]
  std::optional<KVCache> cache;
  // Sown by the training forward (nnx/train/backprop.hpp) when present: each query head's
  // largest pre-softmax logit over the batch, f32 [H], for QK-Clip (nnx/train/qk_clip.hpp).
  std::optional<Intermediate> max_logits;
  NNX_FIELDS(num_heads, num_kv_heads, head_dim, use_rope, rope_theta, rope_scaling, qkv, query, key, value, out,
             cache, max_logits)

  Attention() = default;
  Attention(std::int64_t d_model, const AttentionOptions& o, Rngs& rngs)
      : num_heads(o.num_heads),
        num_kv_heads(o.num_kv_heads ? o.num_kv_heads : o.num_heads),
        head_dim(o.head_dim ? o.head_dim : (o.num_heads ? d_model / o.num_heads : 0)),
        use_rope(o.use_rope),
        rope_theta(o.rope_theta),
        rope_scaling(o.rope_scaling) {
    if (num_heads <= 0 || num_kv_heads <= 0 || num_heads % num_kv_heads != 0 || head_dim <= 0)
      throw InvalidArgument("Attention: " + std::to_string(num_heads) + " query heads, " +
                            std::to_string(num_kv_heads) + " kv heads and head_dim " + std::to_string(head_dim) +
                            " (query heads must be a positive multiple of kv heads)");
    // (H + 2 Hkv) D is the widest projection, times d_model its weight: checked, so no size
    // computed below overflows.
    std::int64_t width = 0;
    if (__builtin_mul_overflow(num_kv_heads, 2, &width) || __builtin_add_overflow(width, num_heads, &width) ||
        __builtin_mul_overflow(width, head_dim, &width) || !checked_mul(width, d_model))
      throw InvalidArgument("Attention: " + std::to_string(num_heads) + " query heads, " +
                            std::to_string(num_kv_heads) + " kv heads, head_dim " + std::to_string(head_dim) +
                            " and d_model " + std::to_string(d_model) + " overflow a 64-bit size");
    if (use_rope && head_dim % 2 != 0)
      throw InvalidArgument("Attention: RoPE needs an even head_dim, got " + std::to_string(head_dim));
    rope_scaling.validate("Attention");
    const LinearOptions in{.use_bias = o.use_bias, .init_stddev = 0.0f, .in_axis = "embed", .out_axis = "heads"};
    if (o.fused_qkv) {
      qkv = Linear(d_model, (num_heads + 2 * num_kv_heads) * head_dim, rngs, in);
    } else {
      query = Linear(d_model, num_heads * head_dim, rngs, in);
      key = Linear(d_model, num_kv_heads * head_dim, rngs, in);
      value = Linear(d_model, num_kv_heads * head_dim, rngs, in);
    }
    out = Linear(num_heads * head_dim, d_model, rngs,
                 {.use_bias = o.use_bias, .init_stddev = 0.0f, .in_axis = "heads", .out_axis = "embed"});
    if (has_cache(o.mode)) {
      if (o.cache_batch <= 0 || o.cache_length <= 0)
        throw InvalidArgument("Attention: a " + std::string(mode_name(o.mode)) +
                              " model needs cache_batch and cache_length > 0");
      cache = KVCache(o.cache_batch, o.cache_length, num_kv_heads, head_dim, o.cache_dtype);
    }
  }

  // Queries, keys and values of a batch, RoPE applied: q [B, T, H, D], k and v [B, T, Hkv, D].
  struct Projected {
    Tensor q, k, v;
  };

  // x: f32 [B, T, C]; positions: i32 [B, T] (the position of each token in its row).
  // cache_rows: the KV cache row of each batch row (B distinct rows of the cache; empty: row b
  // is cache row b, and B must be the cache's batch). Returns f32 [B, T, C].
  Tensor operator()(const Tensor& x, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    return out(attend(project(x, positions), positions, cache_rows));
  }

  // The projections of x [B, T, C] at positions i32 [B, T].
  Projected project(const Tensor& x, const Tensor& positions) const {
    if (x.rank() != 3) throw ShapeError("Attention: expected x [B, T, C], found " + describe(x));
    const std::int64_t B = x.dim(0), T = x.dim(1);
    if (positions.dtype() != DType::i32 || positions.shape() != Shape{B, T})
      throw ShapeError("Attention: expected positions i32[" + std::to_string(B) + ", " + std::to_string(T) +
                       "], found " + describe(positions));
    const std::int64_t H = num_heads, Hkv = num_kv_heads, D = head_dim;

    Tensor q, k, v;  // [B, T, H, D], [B, T, Hkv, D], [B, T, Hkv, D]
    if (qkv) {
      const Tensor fused = (*qkv)(x);  // [B, T, (H + 2 Hkv) D]
      q = Tensor::empty({B, T, H, D});
      k = Tensor::empty({B, T, Hkv, D});
      v = Tensor::empty({B, T, Hkv, D});
      const float* f = fused.data<float>();
      const std::int64_t row = (H + 2 * Hkv) * D;
      for (std::int64_t r = 0; r < B * T; ++r) {
        std::copy_n(f + r * row, H * D, q.data<float>() + r * H * D);
        std::copy_n(f + r * row + H * D, Hkv * D, k.data<float>() + r * Hkv * D);
        std::copy_n(f + r * row + (H + Hkv) * D, Hkv * D, v.data<float>() + r * Hkv * D);
      }
    } else {
      q = (*query)(x).reshape({B, T, H, D});
      k = (*key)(x).reshape({B, T, Hkv, D});
      v = (*value)(x).reshape({B, T, Hkv, D});
    }
    if (use_rope) {
      ops::rope_(q, positions, static_cast<float>(rope_theta), rope_scaling.frequencies());
      ops::rope_(k, positions, static_cast<float>(rope_theta), rope_scaling.frequencies());
    }
    return {std::move(q), std::move(k), std::move(v)};
  }

  // The attention of projected queries over the keys and values (this call's, or the KV cache's
  // after writing this call's into it): f32 [B, T, H D], the input of the `out` projection.
  Tensor attend(const Projected& p, const Tensor& positions, std::span<const std::int64_t> cache_rows = {}) {
    const Tensor &q = p.q, &k = p.k, &v = p.v;
    const std::int64_t B = q.dim(0), T = q.dim(1);
    const std::int64_t H = num_heads, Hkv = num_kv_heads, D = head_dim;

    const std::int32_t* pos = positions.data<std::int32_t>();
    // Row b's keys and values: the cache's rows (any dtype), or this call's f32 k and v.
    const auto rows_of = [&](const Tensor& t, std::int64_t b) {
      return kernels::KvRows{t.data<float>() + b * T * Hkv * D, kernels::KvType::f32, Hkv * D};
    };
    const auto cache_row = [&](std::int64_t b) { return cache_rows.empty() ? b : cache_rows[b]; };
    if (!cache && !cache_rows.empty())
      throw InvalidArgument("Attention: cache rows given to a " + std::to_string(B) + "-row batch without a KV cache");
    if (cache) {
      const std::int64_t S = cache->length();
      if (cache_rows.empty() && cache->batch() != B)
        throw ShapeError("Attention: input batch " + std::to_string(B) + " but the KV cache has " +
                         std::to_string(cache->batch()) + " rows");
      if (!cache_rows.empty()) check_cache_rows(cache_rows, B);
      for (std::int64_t i = 0; i < B * T; ++i)
        if (pos[i] < 0 || pos[i] >= S)
          throw InvalidArgument("Attention: position " + std::to_string(pos[i]) + " of row " + std::to_string(i / T) +
                                " is outside the KV cache [0, " + std::to_string(S) + ")");
      cache->make_writable();
      const float* kd = k.data<float>();
      const float* vd = v.data<float>();
      for (std::int64_t i = 0; i < B * T; ++i)
        cache->write(cache_row(i / T), pos[i], kd + i * Hkv * D, vd + i * Hkv * D);
    }

    // o[b, t, h] = softmax(q · k_j / sqrt(D), j <= limit) · v_j, each (b, t, h) on its own.
    Tensor o = Tensor::empty({B, T, H * D});
    float* od = o.data<float>();
    const float* qd = q.data<float>();
    const float scale = 1.0f / std::sqrt(static_cast<float>(D));
    const std::int64_t group = H / Hkv;
    const bool cached = cache.has_value();
    // Threads get (b, KV head) items, each with all its t and the query heads of its group:
    // a causal prefill then gives every item the same work, where splitting over t would give
    // the last chunk the longest rows, and each K/V row is read once for the group (GQA). A
    // thread's consecutive items of one row go to the kernel together, which reads the keys
    // block by block for all those heads (whole cache rows, not one head's slice at a time).
    double work = 0.0;  // multiply-adds: a score and a weighted sum per key and dimension
    for (std::int64_t i = 0; i < B * T; ++i) work += static_cast<double>(cached ? pos[i] : i % T) + 1.0;
    work *= 2.0 * static_cast<double>(H * D);
    const int threads = static_cast<int>(std::min<std::int64_t>(kernels::threads_for_work(work), B * Hkv));
    kernels::parallel_for(B * Hkv, threads, [&](std::int64_t i0, std::int64_t i1) noexcept {
      for (std::int64_t i = i0; i < i1;) {
        const std::int64_t b = i / Hkv, h0 = i % Hkv, h1 = std::min(Hkv, h0 + (i1 - i));  // KV heads [h0, h1) of row b
        const kernels::KvRows keys = cache ? cache->key_rows(cache_row(b)).at(0, h0, D) : rows_of(k, b).at(0, h0, D);
        const kernels::KvRows values =
            cache ? cache->value_rows(cache_row(b)).at(0, h0, D) : rows_of(v, b).at(0, h0, D);
        constexpr std::int64_t kTokens = 64;  // query rows per kernel call (they share key blocks)
        std::int64_t n[kTokens];
        for (std::int64_t t0 = 0; t0 < T; t0 += kTokens) {
          const std::int64_t tn = std::min(kTokens, T - t0);
          for (std::int64_t t = 0; t < tn; ++t) n[t] = (cached ? pos[b * T + t0 + t] : t0 + t) + 1;  // keys 0..last
          const std::int64_t first_q = ((b * T + t0) * H + h0 * group) * D;
          kernels::attend(qd + first_q, H * D, D, tn, n, group, h1 - h0, keys, values, D, scale, od + first_q, H * D,
                          D);
        }
        i += h1 - h0;
      }
    });
    return o;
  }

 private:
  void check_cache_rows(std::span<const std::int64_t> rows, std::int64_t B) const {
    const std::int64_t rows_held = cache->batch();
    if (static_cast<std::int64_t>(rows.size()) != B)
      throw ShapeError("Attention: " + std::to_string(rows.size()) + " cache rows for an input batch of " +
                       std::to_string(B));
    for (std::size_t i = 0; i < rows.size(); ++i) {
      if (rows[i] < 0 || rows[i] >= rows_held)
        throw InvalidArgument("Attention: cache row " + std::to_string(rows[i]) + " of batch row " + std::to_string(i) +
                              " is outside the KV cache's [0, " + std::to_string(rows_held) + ")");
      for (std::size_t j = 0; j < i; ++j)
        if (rows[j] == rows[i])
          throw InvalidArgument("Attention: batch rows " + std::to_string(j) + " and " + std::to_string(i) +
                                " both name cache row " + std::to_string(rows[i]));
    }
  }
};

}  // namespace nnx
