// nnx/kernels/ref/attention.hpp — portable attention of one query row over a run of keys
// (the fallback and the oracle for vectorized versions).
//
//   nnx::kernels::ref::attend_f32(q, keys, values, stride, n, D, scale, scores, out);
//
// Order: s_j = (sum over d ascending of q_d k_jd, in float) * scale; softmax as
// ref::softmax_rows; out_d = sum over j ascending of p_j v_jd, in float.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/ref/softmax.hpp"

namespace nnx::kernels::ref {

// out[D] = sum_j softmax_j(scale * q . k_j) v_j over j in [0, n), n >= 1, where
// k_j = keys + j * stride and v_j = values + j * stride (one head's rows of a KV cache).
// scores: scratch for n floats. A NaN anywhere makes out NaN. Never throws.
inline void attend_f32(const float* q, const float* keys, const float* values, std::int64_t stride, std::int64_t n,
                       std::int64_t D, float scale, float* scores, float* out) noexcept {
  for (std::int64_t j = 0; j < n; ++j) {
    const float* k = keys + j * stride;
    float s = 0.0f;
    for (std::int64_t d = 0; d < D; ++d) s += q[d] * k[d];
    scores[j] = s * scale;
  }
  softmax_rows(scores, 1, n);
  std::fill_n(out, D, 0.0f);
  for (std::int64_t j = 0; j < n; ++j) {
    const float p = scores[j];
    const float* v = values + j * stride;
    for (std::int64_t d = 0; d < D; ++d) out[d] += p * v[d];
  }
}

}  // namespace nnx::kernels::ref
