// nnx/kernels/attention.hpp — attention of one query row over a run of keys and values (one
// head of one token against its KV cache, or the keys before it in a prompt): the entry
// point nn/attention.hpp calls for every (row, token, head).
//
//   nnx::kernels::attend_f32(q, keys, values, stride, n, D, scale, scores, out);
//
// Runs the best tier the CPU has (nnx/kernels/isa.hpp); the tiers agree within the
// bound nnx/kernels/avx2/attention.hpp states. Never throws.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/attention.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/attention.hpp"

namespace nnx::kernels {

using AttendF32Fn = void (*)(const float* q, const float* keys, const float* values, std::int64_t stride,
                             std::int64_t n, std::int64_t D, float scale, float* scores, float* out) noexcept;

inline constexpr TierTable<AttendF32Fn> kAttendF32{&ref::attend_f32, NNX_X86_ENTRY(avx2::attend_f32)};

// out[D] = sum_j softmax_j(scale * q . k_j) v_j over j in [0, n), n >= 1, with
// k_j = keys + j * stride and v_j = values + j * stride. scores: scratch for n floats.
inline void attend_f32(const float* q, const float* keys, const float* values, std::int64_t stride, std::int64_t n,
                       std::int64_t D, float scale, float* scores, float* out) noexcept {
  select(kAttendF32, active_isa())(q, keys, values, stride, n, D, scale, scores, out);
}

}  // namespace nnx::kernels
