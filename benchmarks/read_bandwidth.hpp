// benchmarks/read_bandwidth.hpp — the memory read probes the benchmarks compare kernels with:
// sums of 8-byte integer words (integer, so the compiler may vectorize: a float sum's order is
// fixed and its add latency, not memory, would be measured).
//   sum_streams<1>: front to back;
//   sum_streams<8>: 8 interleaved sequential streams, 64 bytes of each in turn, as a GEMV
//                   reads several weight rows at a time (on Zen 5 ~1.5x the one-stream rate
//                   on one thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nnx_bench {

// Loads go through memcpy: the probes also read f32 weights' bytes as integer words.
inline std::uint64_t word(const std::byte* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

// The sum of n words from d, read as S interleaved streams.
template <int S>
__attribute__((noinline)) std::uint64_t sum_streams(const std::byte* d, std::size_t n) noexcept {
  if constexpr (S == 1) {
    std::uint64_t s = 0;
    for (std::size_t i = 0; i < n; ++i) s += word(d + 8 * i);
    return s;
  } else {
    const std::size_t part = n / S / 8 * 8;
    std::uint64_t s[S] = {};
    for (std::size_t i = 0; i < part; i += 8)
      for (int k = 0; k < S; ++k)
        for (int j = 0; j < 8; ++j) s[k] += word(d + 8 * (k * part + i + j));
    std::uint64_t t = 0;
    for (int k = 0; k < S; ++k) t += s[k];
    for (std::size_t i = S * part; i < n; ++i) t += word(d + 8 * i);
    return t;
  }
}

}  // namespace nnx_bench
