// nnx/ops/threads.hpp — how many threads the kernels use.
//
//   nnx::set_num_threads(2);   // default 1, or NNX_NUM_THREADS from the environment
//   int n = nnx::num_threads();
//
// The count affects speed only: every kernel splits its work so that each output is computed
// by the same arithmetic whichever thread computes it (nnx/kernels/parallel.hpp), so results
// are bitwise the same on any thread count.
#pragma once

#include <string>

#include "nnx/core/error.hpp"
#include "nnx/kernels/parallel.hpp"

namespace nnx {

// Threads the kernels may use from now on (the calling thread counts as one). May be called
// at any time from any thread; a kernel already running keeps the count it started with.
// Throws InvalidArgument unless 1 <= n <= kMaxThreads.
inline void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw InvalidArgument("set_num_threads: expected 1 to " + std::to_string(kMaxThreads) + " threads, got " +
                          std::to_string(n));
  kernels::set_thread_count(n);
}

}  // namespace nnx
