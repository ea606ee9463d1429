// nnx/kernels/attention.hpp — causal attention of query rows over a run of keys and values:
// the kernel nn/attention.hpp calls for every batch row and run of KV heads, in prefill (each
// token's query over the keys up to its position) and decode (a slot's query over its cache)
// alike.
//
//   // every query head of KV heads [h0, h1) of tokens t < T of a row, token t over keys
//   // [0, n[t]) of that row's cache [S, Hkv, D] (f32; KvRows describes bf16 and i8 caches)
//   nnx::kernels::attend_f32(q + h0 * G * D, H * D, D, T, n, G, h1 - h0, k_row + h0 * D,
//                            v_row + h0 * D, Hkv * D, D, 1 / sqrt(D), out + h0 * G * D, H * D, D);
//
// Runs the best tier the CPU has (nnx/kernels/isa.hpp); ref and avx2 agree within the bound
// nnx/kernels/avx2/attention.hpp states, and avx512 gives avx2's bits. Never throws; allocates
// nothing.
//
// Training: attend_backward gives dq, dk and dv of causal self-attention over whole sequences
// (ref::attend_backward_group states the order), threads taking (sequence, KV head) items.
#pragma once

#include <algorithm>
#include <cstdint>

#include "nnx/kernels/avx2/attention.hpp"
#include "nnx/kernels/avx2/attention_backward.hpp"
#include "nnx/kernels/avx512/attention.hpp"
#include "nnx/kernels/isa.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/kernels/ref/attention.hpp"

namespace nnx::kernels {

using AttendFn = void (*)(const float* q, std::int64_t q_row_stride, std::int64_t q_stride, std::int64_t R,
                          const std::int64_t* n, std::int64_t G, std::int64_t Hk, const KvRows& keys,
                          const KvRows& values, std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                          std::int64_t out_stride) noexcept;

inline constexpr TierTable<AttendFn> kAttend{&ref::attend, NNX_X86_ENTRY(avx2::attend), NNX_X86_ENTRY(avx512::attend)};

// R query rows, each with the G query heads of each of Hk consecutive KV heads; row r attends
// to keys and values [0, n[r]) (n[r] >= 1). KV head h's rows are keys.at(0, h, D) and
// values.at(0, h, D) (a cache row [Hkv, D] per position, f32, bf16 or i8 with its scales; keys
// and values of one type, and D <= kMaxCompactHeadDim unless f32); query head (h, g) of row r
// reads q + r * q_row_stride + (h * G + g) * q_stride and writes
// out + r * out_row_stride + (h * G + g) * out_stride (D floats). Online softmax over blocks
// of keys (ref::attend_group states the order), so no more than a block of scores exists;
// each K and V row is read once for all the query heads of its KV group (GQA) and, from
// memory, once for a run of rows (prefill). A (row, query head)'s result depends only on its
// query, its n and the keys: not on R, Hk or the other rows. Over bf16 rows it is bitwise the
// result over f32 rows holding their widened values (KvRows::value); over i8 rows the scores
// are integer dot products with the query rounded to int16 (ref::attend_group_i8), within the
// f32 kernels' bound of attention over the stored values.
inline void attend(const float* q, std::int64_t q_row_stride, std::int64_t q_stride, std::int64_t R,
                   const std::int64_t* n, std::int64_t G, std::int64_t Hk, const KvRows& keys, const KvRows& values,
                   std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                   std::int64_t out_stride) noexcept {
  select(kAttend, active_isa())(q, q_row_stride, q_stride, R, n, G, Hk, keys, values, D, scale, out, out_row_stride,
                                out_stride);
}

// attend over f32 rows kv_stride floats apart.
inline void attend_f32(const float* q, std::int64_t q_row_stride, std::int64_t q_stride, std::int64_t R,
                       const std::int64_t* n, std::int64_t G, std::int64_t Hk, const float* keys, const float* values,
                       std::int64_t kv_stride, std::int64_t D, float scale, float* out, std::int64_t out_row_stride,
                       std::int64_t out_stride) noexcept {
  attend(q, q_row_stride, q_stride, R, n, G, Hk, {keys, KvType::f32, kv_stride}, {values, KvType::f32, kv_stride}, D,
         scale, out, out_row_stride, out_stride);
}

using AttendBackwardFn = void (*)(const float* q, const float* k, const float* v, const float* dout, std::int64_t T,
                                  std::int64_t G, std::int64_t D, std::int64_t q_row, std::int64_t kv_row,
                                  float scale, float* dq, float* dk, float* dv, float* scratch) noexcept;

inline constexpr TierTable<AttendBackwardFn> kAttendBackward{&ref::attend_backward_group,
                                                             NNX_X86_ENTRY(avx2::attend_backward_group)};

// Floats of scratch attend_backward needs for sequences of T positions.
inline std::int64_t attend_backward_scratch(std::int64_t T) noexcept { return 2 * T * num_threads(); }

// Backward of causal self-attention over B sequences of T positions: q, dout, dq [B, T, H, D];
// k, v, dk, dv [B, T, Hkv, D] (H a multiple of Hkv; query head h reads KV head h / (H / Hkv));
// position t attends to positions 0..t of its sequence with scores scale (q . k). dq, dk, dv
// are overwritten. scratch: attend_backward_scratch(T) floats. Each (sequence, KV head) is
// computed on its own, so any thread count gives the same bits. Never throws.
inline void attend_backward(const float* q, const float* k, const float* v, const float* dout, std::int64_t B,
                            std::int64_t T, std::int64_t H, std::int64_t Hkv, std::int64_t D, float scale, float* dq,
                            float* dk, float* dv, float* scratch) noexcept {
  const AttendBackwardFn f = select(kAttendBackward, active_isa());
  const std::int64_t G = H / Hkv;
  const double work = 3.0 * double(B) * double(H) * double(T) * double(T + 1) * double(D);
  const int threads = static_cast<int>(std::min<std::int64_t>(threads_for_work(work), B * Hkv));
  parallel_for(B * Hkv, threads, [&](std::int64_t i0, std::int64_t i1, int slot) noexcept {
    for (std::int64_t i = i0; i < i1; ++i) {
      const std::int64_t b = i / Hkv, h = i % Hkv;
      const std::int64_t qo = b * T * H * D + h * G * D, ko = b * T * Hkv * D + h * D;
      f(q + qo, k + ko, v + ko, dout + qo, T, G, D, H * D, Hkv * D, scale, dq + qo, dk + ko, dv + ko,
        scratch + 2 * T * slot);
    }
  });
}

}  // namespace nnx::kernels
