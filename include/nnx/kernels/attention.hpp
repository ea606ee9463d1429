// nnx/kernels/attention.hpp — causal attention of the query heads of one KV group over a run of
// keys and values: the kernel nn/attention.hpp calls for every (batch row, token, KV head), in
// prefill (a query row over the keys up to its position) and decode (a slot's query over its
// cache) alike.
//
//   // the `group` query heads of KV head kvh of token t, over keys 0..last of its row
//   nnx::kernels::attend_group_f32(q_t + kvh * group * D, D, group, k_row + kvh * D, v_row + kvh * D,
//                                  Hkv * D, last + 1, D, 1 / sqrt(D), out_t + kvh * group * D, D);
//
// Runs the best tier the CPU has (nnx/kernels/isa.hpp); the tiers agree within the bound
// nnx/kernels/avx2/attention.hpp states. Never throws; allocates nothing.
#pragma once

#include <cstdint>

#include "nnx/kernels/avx2/attention.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/ref/attention.hpp"

namespace nnx::kernels {

using AttendGroupF32Fn = void (*)(const float* q, std::int64_t q_stride, std::int64_t G, const float* keys,
                                  const float* values, std::int64_t kv_stride, std::int64_t n, std::int64_t D,
                                  float scale, float* out, std::int64_t out_stride) noexcept;

inline constexpr TierTable<AttendGroupF32Fn> kAttendGroupF32{&ref::attend_group_f32,
                                                             NNX_X86_ENTRY(avx2::attend_group_f32)};

// The G query heads q + g * q_stride of one KV group, each attending to keys and values
// [0, n) (rows kv_stride apart), into out + g * out_stride: the kernel of both prefill (a
// query row over the keys up to its position) and decode (a slot's query over its cache).
// Online softmax over blocks of keys (ref::attend_group_f32 states the order), so no more
// than a block of scores exists, and each K and V row is read once for the whole group (GQA).
inline void attend_group_f32(const float* q, std::int64_t q_stride, std::int64_t G, const float* keys,
                             const float* values, std::int64_t kv_stride, std::int64_t n, std::int64_t D, float scale,
                             float* out, std::int64_t out_stride) noexcept {
  select(kAttendGroupF32, active_isa())(q, q_stride, G, keys, values, kv_stride, n, D, scale, out, out_stride);
}

}  // namespace nnx::kernels
