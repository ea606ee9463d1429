// nnx/kernels/ref/attention.hpp — portable attention of query heads over a run of keys, by KV
// group (the fallback and the oracle for vectorized versions), and the description of cache
// rows every tier reads (KvRows: f32, bf16, or int8 with a scale per position and head).
//
//   nnx::kernels::ref::attend_group_f32(q, D, G, keys, values, Hkv * D, n, D, scale, out, D);
//   using nnx::kernels::KvRows, nnx::kernels::KvType;
//   const KvRows k{keys, KvType::f32, Hkv * D}, v{values, KvType::f32, Hkv * D};
//   nnx::kernels::ref::attend(q, H * D, D, T, n, G, Hkv, k, v, D, scale, out, H * D, D);
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace nnx::kernels {

// How a KV cache stores its elements. An i8 row (one position of one KV head, D elements) has
// one f32 scale: its element d stands for q_d * scale (KvRows::value), and a NaN scale, which
// quantizing a row holding a NaN gives, makes the row NaN. The kernels read i8 rows as stored
// (attend_group_i8); bf16 rows they widen exactly.
enum class KvType : std::uint8_t { f32, bf16, i8 };

inline constexpr std::int64_t kv_type_bytes(KvType t) noexcept {
  return t == KvType::f32 ? 4 : t == KvType::bf16 ? 2 : 1;
}

// Cache rows as the attention kernels read them: element d of KV head h (counted from the head
// `data` points at) at position j is element j * stride + h * D + d of data, of type `type`;
// for i8 its scale is scales[j * scale_stride + h].
struct KvRows {
  const void* data = nullptr;
  KvType type = KvType::f32;
  std::int64_t stride = 0;  // elements from one position to the next
  const float* scales = nullptr;
  std::int64_t scale_stride = 0;  // scales from one position to the next

  // The rows from position j of head h on (heads D elements apart).
  KvRows at(std::int64_t j, std::int64_t h, std::int64_t D) const noexcept {
    KvRows r = *this;
    r.data = static_cast<const char*>(data) + (j * stride + h * D) * kv_type_bytes(type);
    if (scales) r.scales = scales + j * scale_stride + h;
    return r;
  }
  // Element d of row j (of the first head), widened to f32.
  float value(std::int64_t j, std::int64_t d) const noexcept {
    const std::int64_t i = j * stride + d;
    switch (type) {
      case KvType::f32: return static_cast<const float*>(data)[i];
      case KvType::bf16: {
        const std::uint32_t bits = std::uint32_t{static_cast<const std::uint16_t*>(data)[i]} << 16;
        float x;
        std::memcpy(&x, &bits, sizeof x);
        return x;
      }
      case KvType::i8: return static_cast<float>(static_cast<const std::int8_t*>(data)[i]) * scales[j * scale_stride];
    }
    return 0.0f;
  }
};

// Head sizes up to which the kernels attend over bf16 and i8 rows: the vectorized tiers widen
// a block of 64 bf16 rows of one head at a time into a fixed buffer (widen_bf16_rows), and an i8 score's integer
// sum stays within int32 (32767 * 127 * 256 < 2^31).
inline constexpr std::int64_t kMaxCompactHeadDim = 256;

namespace ref {

// Keys per block of the online softmax, and query heads handled in one pass over the keys:
// the scores of one block for those heads live on the stack.
inline constexpr std::int64_t kAttnKeyBlock = 256;
inline constexpr std::int64_t kAttnMaxGroup = 16;

// The query heads q_g = q + g * q_stride, g < G, that share one KV head, each attending to
// keys and values j in [0, n) (rows j of the first head of keys and values, widened to f32):
//   out_g = sum_j softmax_j(scale * q_g . k_j) v_j   (out_g = out + g * out_stride, D floats)
// with the softmax computed online over blocks of kAttnKeyBlock keys (FlashAttention's
// running maximum m and sum l, the partial output rescaled by exp(m_old - m_new) when m
// grows), so no more than a block of scores exists at a time and each key and value row is
// read once for all G heads. n >= 1. A NaN anywhere makes the output NaN. The order of every
// operation is fixed by n, D and G alone. Never throws.
//
// Order: s_j = (sum over d ascending of q_d k_jd, in float) * scale; per block: m' =
// max(m, max_j s_j); c = exp(m - m'); l = l c + sum_j p_j with p_j = exp(s_j - m'), j
// ascending; o_d = o_d c + sum_j p_j v_jd, j ascending; at the end out_d = o_d * (1 / l).
inline void attend_group(const float* q, std::int64_t q_stride, std::int64_t G, const KvRows& keys,
                         const KvRows& values, std::int64_t n, std::int64_t D, float scale, float* out,
                         std::int64_t out_stride) noexcept {
  for (std::int64_t g0 = 0; g0 < G; g0 += kAttnMaxGroup) {
    const std::int64_t gn = std::min(kAttnMaxGroup, G - g0);
    float p[kAttnMaxGroup][kAttnKeyBlock];
    float m[kAttnMaxGroup], l[kAttnMaxGroup];
    for (std::int64_t g = 0; g < gn; ++g) {
      m[g] = -std::numeric_limits<float>::infinity();
      l[g] = 0.0f;
      std::fill_n(out + (g0 + g) * out_stride, D, 0.0f);
    }
    for (std::int64_t j0 = 0; j0 < n; j0 += kAttnKeyBlock) {
      const std::int64_t jn = std::min(kAttnKeyBlock, n - j0);
      for (std::int64_t g = 0; g < gn; ++g) {
        const float* qg = q + (g0 + g) * q_stride;
        float mx = m[g];
        bool nan = false;
        for (std::int64_t j = 0; j < jn; ++j) {
          float s = 0.0f;
          for (std::int64_t d = 0; d < D; ++d) s += qg[d] * keys.value(j0 + j, d);
          s *= scale;
          p[g][j] = s;
          nan |= s != s;
          mx = s > mx ? s : mx;
        }
        const float c = std::exp(m[g] - mx);  // 0 for the first block (m = -inf)
        float sum = 0.0f;
        for (std::int64_t j = 0; j < jn; ++j) sum += (p[g][j] = nan ? std::numeric_limits<float>::quiet_NaN()
                                                                       : std::exp(p[g][j] - mx));
        l[g] = l[g] * c + sum;
        m[g] = mx;
        float* og = out + (g0 + g) * out_stride;
        for (std::int64_t d = 0; d < D; ++d) og[d] *= c;
        for (std::int64_t j = 0; j < jn; ++j) {
          const float pj = p[g][j];
          for (std::int64_t d = 0; d < D; ++d) og[d] += pj * values.value(j0 + j, d);
        }
      }
    }
    for (std::int64_t g = 0; g < gn; ++g) {
      const float inv = 1.0f / l[g];
      float* og = out + (g0 + g) * out_stride;
      for (std::int64_t d = 0; d < D; ++d) og[d] *= inv;
    }
  }
}

// A query row for i8 keys: q16[d] = clip(round_half_even(q[d] / s), -32767, 32767) with
// s = max_d |q[d]| / 32767 (1 for a zero row), returned; NaN for a row holding a NaN (its
// scores are then NaN). Relative to |q| the rounding is below 2^-16, far under the keys' 2^-8.
inline float quantize_query_i16(const float* q, std::int64_t D, std::int16_t* q16) noexcept {
  float amax = 0.0f;
  for (std::int64_t d = 0; d < D; ++d) {
    const float a = std::fabs(q[d]);
    if (a != a) return std::numeric_limits<float>::quiet_NaN();
    amax = a > amax ? a : amax;
  }
  const float s = amax == 0.0f ? 1.0f : amax / 32767.0f;
  for (std::int64_t d = 0; d < D; ++d) {
    const float v = q[d] / s;  // NaN only for inf / inf: the score is NaN through s anyway
    q16[d] = v != v ? 0 : static_cast<std::int16_t>(std::nearbyint(std::min(std::max(v, -32767.0f), 32767.0f)));
  }
  return s;
}

// attend_group over i8 keys and values (D <= kMaxCompactHeadDim), read as stored: each score
// is an exact integer dot product of the int16 query (quantize_query_i16, scale sq) with the
// int8 key, then s_j = (float(sum_d q16_d k_jd) * sk_j) * (sq * scale); each value enters as
// o_d = o_d + (p_j * sv_j) * float(v_jd). Otherwise attend_group's order. Every tier computes
// the scores bit for bit so (integer sums are exact in any order).
inline void attend_group_i8(const float* q, std::int64_t q_stride, std::int64_t G, const KvRows& keys,
                            const KvRows& values, std::int64_t n, std::int64_t D, float scale, float* out,
                            std::int64_t out_stride) noexcept {
  const auto* k8 = static_cast<const std::int8_t*>(keys.data);
  const auto* v8 = static_cast<const std::int8_t*>(values.data);
  float p[kAttnKeyBlock];
  std::int16_t q16[kMaxCompactHeadDim];
  for (std::int64_t g = 0; g < G; ++g) {
    const float qscale = quantize_query_i16(q + g * q_stride, D, q16) * scale;
    float m = -std::numeric_limits<float>::infinity(), l = 0.0f;
    float* og = out + g * out_stride;
    std::fill_n(og, D, 0.0f);
    for (std::int64_t j0 = 0; j0 < n; j0 += kAttnKeyBlock) {
      const std::int64_t jn = std::min(kAttnKeyBlock, n - j0);
      float mx = m;
      bool nan = false;
      for (std::int64_t j = 0; j < jn; ++j) {
        const std::int8_t* k = k8 + (j0 + j) * keys.stride;
        std::int32_t dot = 0;
        for (std::int64_t d = 0; d < D; ++d) dot += std::int32_t{q16[d]} * k[d];
        const float s = (static_cast<float>(dot) * keys.scales[(j0 + j) * keys.scale_stride]) * qscale;
        p[j] = s;
        nan |= s != s;
        mx = s > mx ? s : mx;
      }
      const float c = std::exp(m - mx);
      float sum = 0.0f;
      for (std::int64_t j = 0; j < jn; ++j)
        sum += (p[j] = nan ? std::numeric_limits<float>::quiet_NaN() : std::exp(p[j] - mx));
      l = l * c + sum;
      m = mx;
      for (std::int64_t d = 0; d < D; ++d) og[d] *= c;
      for (std::int64_t j = 0; j < jn; ++j) {
        const float pj = p[j] * values.scales[(j0 + j) * values.scale_stride];
        const std::int8_t* v = v8 + (j0 + j) * values.stride;
        for (std::int64_t d = 0; d < D; ++d) og[d] += pj * static_cast<float>(v[d]);
      }
    }
    const float inv = 1.0f / l;
    for (std::int64_t d = 0; d < D; ++d) og[d] *= inv;
  }
}

// R query rows, each with the G query heads of each of Hk KV heads; row r attends to keys
// [0, n[r]) (n[r] >= 1) of KV heads 0..Hk of keys and values (as in a cache row [Hkv, D]);
// query head (h, g) of row r is q + r * q_row_stride + (h * G + g) * q_stride and writes
// out + r * out_row_stride + (h * G + g) * out_stride. Each (row, KV head) is attend_group
// (attend_group_i8 for i8 rows), so the order is that function's. Never throws.
inline void attend(const float* q, std::int64_t q_row_stride, std::int64_t q_stride, std::int64_t R,
                   const std::int64_t* n, std::int64_t G, std::int64_t Hk, const KvRows& keys, const KvRows& values,
                   std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                   std::int64_t out_stride) noexcept {
  const auto group = keys.type == KvType::i8 ? &attend_group_i8 : &attend_group;
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t h = 0; h < Hk; ++h)
      group(q + r * q_row_stride + h * G * q_stride, q_stride, G, keys.at(0, h, D), values.at(0, h, D), n[r], D,
            scale, out + r * out_row_stride + h * G * out_stride, out_stride);
}

// Backward of causal self-attention (training) for the G query heads of one KV head over one
// sequence of T positions, position i attending to keys 0..i. Query head g of position i is
// q + i * q_row + g * D (dout and dq alike); key and value rows are k + j * kv_row and
// v + j * kv_row (dk and dv alike). dq, dk and dv are overwritten. scratch: 2 T floats. The
// probabilities are recomputed from q and k, so the forward pass keeps only its inputs. Per
// (g, i), g then i ascending, each sum over j or d ascending:
//   s_j = scale (q_i . k_j); p_j = exp(s_j - max) * (1 / sum); dp_j = dout_i . v_j;
//   dv_j += p_j dout_i; ds_j = (p_j (dp_j - sum_j p_j dp_j)) scale; dq_i = sum_j ds_j k_j;
//   dk_j += ds_j q_i
// so a result depends only on its sequence and heads, never on threads. Never throws.
inline void attend_backward_group(const float* q, const float* k, const float* v, const float* dout, std::int64_t T,
                                  std::int64_t G, std::int64_t D, std::int64_t q_row, std::int64_t kv_row,
                                  float scale, float* dq, float* dk, float* dv, float* scratch) noexcept {
  float* p = scratch;
  float* dp = scratch + T;
  for (std::int64_t j = 0; j < T; ++j) {
    std::fill_n(dk + j * kv_row, D, 0.0f);
    std::fill_n(dv + j * kv_row, D, 0.0f);
  }
  for (std::int64_t g = 0; g < G; ++g)
    for (std::int64_t i = 0; i < T; ++i) {
      const float* qi = q + i * q_row + g * D;
      const float* doi = dout + i * q_row + g * D;
      float* dqi = dq + i * q_row + g * D;
      float m = -std::numeric_limits<float>::infinity();
      for (std::int64_t j = 0; j <= i; ++j) {
        float s = 0.0f;
        for (std::int64_t d = 0; d < D; ++d) s += qi[d] * k[j * kv_row + d];
        p[j] = s * scale;
        m = p[j] > m ? p[j] : m;
      }
      float l = 0.0f;
      for (std::int64_t j = 0; j <= i; ++j) l += (p[j] = std::exp(p[j] - m));
      const float inv = 1.0f / l;
      float dsum = 0.0f;
      for (std::int64_t j = 0; j <= i; ++j) {
        p[j] *= inv;
        float acc = 0.0f;
        for (std::int64_t d = 0; d < D; ++d) acc += doi[d] * v[j * kv_row + d];
        dp[j] = acc;
        dsum += p[j] * acc;
        float* dvj = dv + j * kv_row;
        for (std::int64_t d = 0; d < D; ++d) dvj[d] += p[j] * doi[d];
      }
      std::fill_n(dqi, D, 0.0f);
      for (std::int64_t j = 0; j <= i; ++j) {
        const float ds = (p[j] * (dp[j] - dsum)) * scale;
        const float* kj = k + j * kv_row;
        float* dkj = dk + j * kv_row;
        for (std::int64_t d = 0; d < D; ++d) dqi[d] += ds * kj[d];
        for (std::int64_t d = 0; d < D; ++d) dkj[d] += ds * qi[d];
      }
    }
}

}  // namespace ref
}  // namespace nnx::kernels
