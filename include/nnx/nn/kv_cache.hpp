// nnx/nn/kv_cache.hpp — an attention layer's KV cache in f32, bf16 or int8, and the operations
// an engine applies to any cache state without knowing its dtype or layout.
//
// KVCache holds, per batch row and position, the keys and values of every KV head: key and
// value [B, S, Hkv, D] in the cache's dtype, and for int8 key_scale and value_scale f32
// [B, S, Hkv], one absmax scale per (position, KV head) with AQT numerics
// (nnx/kernels/quantize.hpp: scale = absmax / 127.5, round half to even, clip to ±127; an
// all-zero row stores scale 1 and zeros, never NaN; a row holding a NaN stores a NaN scale, so
// attention over it is NaN rather than a silently finite number). bf16 rounds to nearest even.
// The attention kernels read every dtype directly (nnx::kernels::KvRows): bf16 widened in a
// block-sized buffer, exactly; int8 as stored, each score an exact integer dot product with
// the query rounded to int16 (2^-16 of its largest element), which makes a batch-8 decode's
// attention over int8 rows 1.7-2.9x as fast as over f32 (benchmarks/RESULTS.md). On the
// PyTorch fixtures int8 keeps every logit within 1.1 % of the logits' range of f32's (the
// tested bound is 2 %); bf16 gives f32's greedy tokens.
//
// Every leaf names its axes, and cache_batch and cache_sequence are all that
// copy_cache_positions reads: an engine serves any module whose Cache variables
// name those two axes, whatever their dtype, rank or the order of the other axes.
//
//   nnx::KVCache cache(/*batch=*/8, /*length=*/1024, /*kv_heads=*/4, /*head_dim=*/64, nnx::DType::i8);
//   cache.make_writable();                 // copy-on-write unless this module holds the tensors alone
//   cache.write(b, position, k, v);        // k, v: Hkv * D floats of one token
//   nnx::kernels::KvRows keys = cache.key_rows(b);
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/kernels/attention.hpp"
#include "nnx/kernels/quantize.hpp"

namespace nnx {

// The KV cache dtypes: f32 (exact), bf16 (half the bytes, keys and values rounded to 8 bits of
// mantissa), i8 (a quarter plus a scale per position and KV head).
inline bool is_kv_cache_dtype(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::i8; }

// "f32", "bf16" or "int8" (also "i8") as a KV cache dtype; InvalidArgument otherwise.
inline DType parse_kv_cache_dtype(const std::string& name) {
  if (name == "f32") return DType::f32;
  if (name == "bf16") return DType::bf16;
  if (name == "int8" || name == "i8") return DType::i8;
  throw InvalidArgument("KV cache dtype '" + name + "': expected f32, bf16 or int8");
}

struct KVCache {
  Cache key;    // [B, S, Hkv, D] of the cache's dtype
  Cache value;  // [B, S, Hkv, D]
  std::optional<Cache> key_scale;    // i8: f32 [B, S, Hkv]
  std::optional<Cache> value_scale;  // i8: f32 [B, S, Hkv]
  NNX_FIELDS(key, value, key_scale, value_scale)

  KVCache() = default;
  KVCache(std::int64_t batch, std::int64_t length, std::int64_t kv_heads, std::int64_t head_dim,
          DType dtype = DType::f32) {
    if (!is_kv_cache_dtype(dtype))
      throw InvalidArgument("KVCache: dtype " + std::string(dtype_name(dtype)) + "; expected f32, bf16 or i8");
    if (dtype != DType::f32 && head_dim > kernels::kMaxCompactHeadDim)
      throw InvalidArgument("KVCache: a " + std::string(dtype_name(dtype)) + " cache supports head_dim up to " +
                            std::to_string(kernels::kMaxCompactHeadDim) + ", got " + std::to_string(head_dim) +
                            " (use an f32 cache)");
    const Shape rows{batch, length, kv_heads, head_dim};
    key = Cache(Tensor::zeros(rows, dtype), {"cache_batch", "cache_sequence", "cache_heads", "cache_kv"});
    value = Cache(Tensor::zeros(rows, dtype), {"cache_batch", "cache_sequence", "cache_heads", "cache_kv"});
    if (dtype == DType::i8) {
      key_scale = Cache(Tensor::zeros({batch, length, kv_heads}), {"cache_batch", "cache_sequence", "cache_heads"});
      value_scale = Cache(Tensor::zeros({batch, length, kv_heads}), {"cache_batch", "cache_sequence", "cache_heads"});
    }
  }

  DType dtype() const { return key.value().dtype(); }
  std::int64_t batch() const { return key.value().dim(0); }
  std::int64_t length() const { return key.value().dim(1); }
  std::int64_t kv_heads() const { return key.value().dim(2); }
  std::int64_t head_dim() const { return key.value().dim(3); }

  // Copies each tensor first unless this module is its only holder (a donated state): the
  // writes that follow then never reach a state the caller kept.
  void make_writable() {
    for (Cache* c : {&key, &value, key_scale ? &*key_scale : nullptr, value_scale ? &*value_scale : nullptr})
      if (c && c->value().use_count() > 1) c->value() = c->value().clone();
  }

  // Stores one token's keys and values (kv_heads() * head_dim() floats each, heads
  // contiguous) at row b, position p, converted to the cache's dtype. Call make_writable()
  // first. b and p are the caller's to check.
  void write(std::int64_t b, std::int64_t p, const float* k, const float* v) {
    const std::int64_t Hkv = kv_heads(), D = head_dim(), row = (b * length() + p) * Hkv;
    switch (dtype()) {
      case DType::f32:
        std::copy_n(k, Hkv * D, key.value().data<float>() + row * D);
        std::copy_n(v, Hkv * D, value.value().data<float>() + row * D);
        break;
      case DType::bf16:
        convert(k, DType::f32, key.value().data<bf16>() + row * D, DType::bf16, static_cast<std::size_t>(Hkv * D));
        convert(v, DType::f32, value.value().data<bf16>() + row * D, DType::bf16, static_cast<std::size_t>(Hkv * D));
        break;
      default:
        kernels::quantize_rows_absmax(Hkv, D, k, D, key.value().data<std::int8_t>() + row * D, D,
                                      key_scale->value().data<float>() + row);
        kernels::quantize_rows_absmax(Hkv, D, v, D, value.value().data<std::int8_t>() + row * D, D,
                                      value_scale->value().data<float>() + row);
    }
  }

  // Row b's keys and values as the attention kernels read them (head 0 of position 0 on).
  kernels::KvRows key_rows(std::int64_t b) const { return rows(key, key_scale, b); }
  kernels::KvRows value_rows(std::int64_t b) const { return rows(value, value_scale, b); }

 private:
  kernels::KvRows rows(const Cache& c, const std::optional<Cache>& scale, std::int64_t b) const {
    const Tensor& t = c.value();
    const std::int64_t Hkv = kv_heads(), stride = Hkv * head_dim();
    const kernels::KvType type = t.dtype() == DType::f32    ? kernels::KvType::f32
                                 : t.dtype() == DType::bf16 ? kernels::KvType::bf16
                                                            : kernels::KvType::i8;
    const kernels::KvRows all{t.raw_data(), type, stride, scale ? scale->value().data<float>() : nullptr, Hkv};
    return all.at(b * length(), 0, head_dim());
  }
};

namespace detail::cache {

// The index of `name` among a cache leaf's axes; InvalidArgument naming the leaf otherwise.
inline std::size_t axis_of(const Path& path, const VariableState& leaf, const char* name) {
  const auto& axes = leaf.axes();
  const auto it = std::find(axes.begin(), axes.end(), name);
  if (it == axes.end() || axes.size() != static_cast<std::size_t>(leaf.primary().rank()))
    throw InvalidArgument("cache leaf '" + path.to_string() + "' does not name its " + name +
                          " axis (every Cache variable an engine serves names cache_batch and cache_sequence)");
  return static_cast<std::size_t>(it - axes.begin());
}

}  // namespace detail::cache

// Copies positions [0, n) of batch row 0 of every leaf of `src` (a one-sequence cache, e.g. a
// prefill's) into batch row `slot` of the same leaf of `dst`, found by the leaves' cache_batch
// and cache_sequence axes: the bytes move as stored, whatever the dtype. The other axes must
// match. A dst tensor held elsewhere too is copied first (copy-on-write). Throws
// InvalidArgument (a leaf without those axes, or src lacking a leaf of dst) or ShapeError.
inline void copy_cache_positions(const State& src, State& dst, std::int64_t slot, std::int64_t n) {
  for (auto& [path, leaf] : dst) {
    const VariableState* from = src.find(path);
    if (!from)
      throw MissingLeafError("copy_cache_positions: the source lacks the cache leaf '" + path.to_string() + "'");
    const std::size_t a = detail::cache::axis_of(path, leaf, "cache_batch");
    const std::size_t s = detail::cache::axis_of(path, leaf, "cache_sequence");
    const Tensor& in = from->tensor();
    Tensor& out = leaf.tensor();
    Shape expected = out.shape();
    expected[a] = 1;
    if (in.shape() != expected || in.dtype() != out.dtype())
      throw ShapeError("copy_cache_positions: cache leaf '" + path.to_string() + "': expected a source " +
                       std::string(dtype_name(out.dtype())) + to_string(expected) + ", found " + describe(in));
    if (slot < 0 || slot >= out.dim(a) || n < 0 || n > out.dim(s))
      throw InvalidArgument("copy_cache_positions: slot " + std::to_string(slot) + " and " + std::to_string(n) +
                            " positions outside cache leaf '" + path.to_string() + "' " + to_string(out.shape()));
    if (out.use_count() > 1) out = out.clone();
    // Both tensors are row-major [outer..., first, middle..., second, inner...] with {first,
    // second} = {a, s}; a position p of the slot is (slot, p) or (p, slot) in (first, second).
    const std::size_t first = std::min(a, s), second = std::max(a, s);
    const auto dim = [](const Tensor& t, std::size_t axis) { return t.dim(static_cast<std::int64_t>(axis)); };
    const auto prod = [&](std::size_t i0, std::size_t i1) {
      std::int64_t p = 1;
      for (std::size_t i = i0; i < i1; ++i) p *= dim(out, i);
      return p;
    };
    const std::int64_t outer = prod(0, first), middle = prod(first + 1, second);
    const std::int64_t inner =
        prod(second + 1, out.shape().size()) * static_cast<std::int64_t>(dtype_size(out.dtype()));  // bytes
    const auto offset = [&](const Tensor& t, std::int64_t o, std::int64_t i, std::int64_t m, std::int64_t j) {
      return (((o * dim(t, first) + i) * middle + m) * dim(t, second) + j) * inner;
    };
    const auto* ip = static_cast<const std::byte*>(in.raw_data());
    auto* op = static_cast<std::byte*>(out.raw_data());
    const bool batch_first = a == first;
    for (std::int64_t o = 0; o < outer; ++o)
      for (std::int64_t m = 0; m < middle; ++m)
        for (std::int64_t p = 0; p < n; ++p)
          std::memcpy(op + (batch_first ? offset(out, o, slot, m, p) : offset(out, o, p, m, slot)),
                      ip + (batch_first ? offset(in, o, 0, m, p) : offset(in, o, p, m, 0)),
                      static_cast<std::size_t>(inner));
  }
}

}  // namespace nnx
