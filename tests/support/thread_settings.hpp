// Restores, when a test case ends, the thread count and the parallel threshold it changed.
#pragma once

#include <cstdint>

#include "nnx/kernels/parallel.hpp"
#include "nnx/ops/threads.hpp"

namespace test_support {

struct ThreadSettings {
  int threads = nnx::num_threads();
  std::int64_t min_work = nnx::kernels::parallel_min_work();
  ThreadSettings() = default;
  ThreadSettings(const ThreadSettings&) = delete;
  ThreadSettings& operator=(const ThreadSettings&) = delete;
  ~ThreadSettings() {
    nnx::set_num_threads(threads);
    nnx::kernels::set_parallel_min_work(min_work);
  }
};

}  // namespace test_support
