// nnx/kernels/parallel.hpp — how many threads the kernels use, and parallel_for, which runs
// a range of items as contiguous chunks on the calling thread and a small persistent pool.
//
//   nnx::set_num_threads(2);        // nnx/ops/threads.hpp; default 1, or NNX_NUM_THREADS
//   nnx::kernels::parallel_for(n, [&](std::int64_t begin, std::int64_t end) noexcept {
//     for (std::int64_t i = begin; i < end; ++i) out[i] = f(i);
//   });
//
// Determinism is the callers' part: they split work so that every output is computed by the
// same arithmetic whichever chunk it falls in and whichever thread runs it (GEMM splits the
// columns of C, never K), so results are bitwise the same on any thread count. Threads
// change who computes, never what.
//
// The pool: workers are started on the first call that needs them, spin for a short while
// after each task (the kernel calls of a decode step follow each other within microseconds,
// and waking a sleeping thread costs tens of them), then sleep on a condition variable. They
// are joined at exit. A call allocates nothing. Threads claim a few chunks each as they get
// to them, so a thread that is late (asleep, or preempted on a loaded machine) delays no one.
// One parallel_for uses the pool at a time: a call made while it is busy (nested inside a
// chunk, or from another thread) runs its whole range on the calling thread. When workers
// keep arriving late (another process holds a core), calls run on the calling thread alone
// for a while (StragglerGuard), so a loaded machine costs about the one-thread speed, not more.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace nnx {

// Most threads set_num_threads accepts (a guard against typos such as 2000, not a tuning).
inline constexpr int kMaxThreads = 256;

namespace kernels::detail {

// NNX_NUM_THREADS if it holds an integer in [1, kMaxThreads], else 1. Read once, at the first
// use of the thread count; an unusable value is ignored (kernels cannot throw), not clamped.
inline int threads_from_environment() noexcept {
  const char* s = std::getenv("NNX_NUM_THREADS");
  if (!s || !*s) return 1;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  return (*end == '\0' && v >= 1 && v <= kMaxThreads) ? static_cast<int>(v) : 1;
}

inline std::atomic<int>& thread_count() noexcept {
  static std::atomic<int> count{threads_from_environment()};
  return count;
}

}  // namespace kernels::detail

namespace kernels {

// Threads the kernels may use from now on, clamped to [1, kMaxThreads] (nnx::set_num_threads
// in nnx/ops/threads.hpp is the checked, throwing form). Affects speed only, never results.
inline void set_thread_count(int n) noexcept {
  detail::thread_count().store(std::clamp(n, 1, kMaxThreads), std::memory_order_relaxed);
}

}  // namespace kernels

// The thread count set by set_num_threads, else NNX_NUM_THREADS, else 1.
inline int num_threads() noexcept { return kernels::detail::thread_count().load(std::memory_order_relaxed); }

namespace kernels {

namespace detail {

// A type-erased chunk: a plain function pointer and a context pointer, so that handing work
// to a thread allocates nothing (std::function may).
using ChunkFn = void (*)(void* ctx, std::int64_t begin, std::int64_t end, int slot) noexcept;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// How long an idle worker (or a caller waiting for its workers) polls before it blocks.
// Longer than the gaps between the kernel calls of one decode step, short next to a step.
inline constexpr std::chrono::microseconds kSpin{200};

// Chunks per thread. One: each thread's columns are one contiguous range (a GEMV's weight rows
// are then read in long runs; measured 1.76x on 2 threads against 1.1x with four chunks per
// thread). A thread that is late (woken from sleep) still leaves its whole chunk to the others:
// chunks are claimed, not assigned.
inline constexpr std::int64_t kChunksPerThread = 1;

// Set when the pool has been destroyed (static destruction at exit): later calls run inline.
// Constant-initialized and trivially destructible, so it outlives every other static.
inline std::atomic<bool> pool_gone{false};

// The task word: which task (generation), how many threads take part, how many chunks it has
// and the next chunk to claim. One word, so that a thread claims a chunk of the task it saw
// with one compare-and-swap, and a late thread can never claim a chunk of a newer task with
// the function of an older one.
struct TaskWord {
  std::uint64_t generation;  // 24 bits
  int helpers;               // participating workers, 0..255
  std::int64_t chunks;       // 1..65535
  std::int64_t next;         // 0..chunks

  static TaskWord unpack(std::uint64_t v) noexcept {
    return {v >> 40, static_cast<int>((v >> 32) & 0xff), static_cast<std::int64_t>((v >> 16) & 0xffff),
            static_cast<std::int64_t>(v & 0xffff)};
  }
  std::uint64_t pack() const noexcept {
    return (generation & 0xffffff) << 40 | static_cast<std::uint64_t>(helpers) << 32 |
           static_cast<std::uint64_t>(chunks) << 16 | static_cast<std::uint64_t>(next);
  }
};

// When another process holds a core, a worker can be preempted in the middle of a chunk and
// the caller then waits a whole scheduler time slice (milliseconds) for it: two threads
// become many times slower than one. A call whose wait for stragglers exceeded both its own
// share of the work and kStragglerWait counts as a strike; a second strike before any call in
// which the threads kept pace makes the next
// calls run on the calling thread alone for a back-off period that doubles while the machine
// stays oversubscribed (up to kMaxSolo) and resets after a call in which the threads kept
// pace. Only speed changes: which thread computes a chunk never changes its bits.
class StragglerGuard {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr Clock::duration kStragglerWait = std::chrono::microseconds(300);
  static constexpr Clock::duration kMinSolo = std::chrono::milliseconds(20);
  static constexpr Clock::duration kMaxSolo = std::chrono::seconds(1);

  // True while calls should run on the calling thread alone.
  bool solo(Clock::time_point now) const noexcept { return enabled_.load(std::memory_order_relaxed) && now < solo_until_; }

  // On by default; tests that check how work is spread over threads turn it off.
  void enable(bool on) noexcept { enabled_.store(on, std::memory_order_relaxed); }

  // After a threaded call: `own` = the caller's time on its chunks, `waited` = its wait for
  // the workers' last chunks afterwards.
  void note(Clock::duration own, Clock::duration waited, Clock::time_point now) noexcept {
    if (waited > own && waited > kStragglerWait) {
      solo_until_ = now + backoff_;
      backoff_ = std::min<Clock::duration>(backoff_ * 2, kMaxSolo);
    } else if (waited * 4 <= own) {
      backoff_ = kMinSolo;
    }
  }

 private:
  std::atomic<bool> enabled_{true};
  Clock::duration backoff_ = kMinSolo;
  Clock::time_point solo_until_{};
};

class Pool {
 public:
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  ~Pool() {
    pool_gone.store(true, std::memory_order_release);
    // A call still running on another thread at exit would race with this; the program has
    // no such call by the time static destructors run.
    stop_.store(true, std::memory_order_seq_cst);
    { std::lock_guard<std::mutex> lock(mutex_); }
    wake_.notify_all();
    for (int i = 0; i < workers_; ++i) worker_[i].join();
  }

  // Runs fn(ctx, begin, end, slot) over [0, n) in up to threads * kChunksPerThread
  // contiguous chunks, claimed by the calling thread (slot 0) and threads - 1 workers (slots
  // 1..); returns when all are done. Falls back to one inline call when the pool is busy.
  void run(std::int64_t n, int threads, ChunkFn fn, void* ctx) noexcept {
    if (busy_.exchange(true, std::memory_order_acquire)) return fn(ctx, 0, n, 0);
    const auto start = std::chrono::steady_clock::now();
    if (guard_.solo(start)) threads = 1;  // the machine is oversubscribed: see StragglerGuard
    threads = std::min(threads, 1 + grow(threads - 1));
    if (threads <= 1) {
      busy_.store(false, std::memory_order_release);
      return fn(ctx, 0, n, 0);
    }
    const std::int64_t chunks = std::min<std::int64_t>(n, threads * kChunksPerThread);
    fn_ = fn;
    ctx_ = ctx;
    n_ = n;
    remaining_.store(chunks, std::memory_order_relaxed);
    generation_ = (generation_ + 1) & 0xffffff;
    // seq_cst store, then seq_cst load of sleepers_: either a worker going to sleep sees the
    // new task, or we see it asleep and wake it (see worker_main).
    task_.store(TaskWord{generation_, threads - 1, chunks, 0}.pack(), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }
      wake_.notify_all();
    }
    work(generation_, 0);
    // Only chunks already running on workers are left; wait for them.
    const auto own_done = std::chrono::steady_clock::now();
    const auto deadline = own_done + kSpin;
    bool spin = true;
    for (unsigned spins = 0; remaining_.load(std::memory_order_acquire) != 0; ++spins) {
      if (spin && spins % 64 == 63) spin = std::chrono::steady_clock::now() < deadline;
      if (spin)
        cpu_relax();
      else
        std::this_thread::yield();
    }
    const auto end = std::chrono::steady_clock::now();
    guard_.note(own_done - start, end - own_done, end);
    busy_.store(false, std::memory_order_release);
  }

  StragglerGuard& guard() noexcept { return guard_; }

 private:
  // Claims and runs chunks of task `generation` until none is left.
  void work(std::uint64_t generation, int slot) noexcept {
    std::uint64_t v = task_.load(std::memory_order_acquire);
    for (;;) {
      const TaskWord t = TaskWord::unpack(v);
      if (t.generation != generation || t.next >= t.chunks) return;
      if (!task_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
      // The task's fields stay valid until this chunk is counted done.
      const std::int64_t base = n_ / t.chunks, extra = n_ % t.chunks;
      const std::int64_t begin = t.next * base + std::min(t.next, extra);
      fn_(ctx_, begin, begin + base + (t.next < extra ? 1 : 0), slot);
      remaining_.fetch_sub(1, std::memory_order_release);
      v = task_.load(std::memory_order_acquire);
    }
  }

  // Starts workers until there are `wanted` (called with busy_ held); returns how many
  // exist. Failing to start a thread only means fewer threads, never different results.
  int grow(int wanted) noexcept {
    wanted = std::min(wanted, kMaxThreads - 1);
    while (workers_ < wanted) {
      try {
        // Started while the task it is meant to help is being set up: it counts every
        // generation after the current one as new, so it cannot skip that task.
        worker_[workers_] = std::thread(&Pool::worker_main, this, workers_, generation_);
        ++workers_;
      } catch (...) {
        break;
      }
    }
    return workers_;
  }

  void worker_main(int index, std::uint64_t seen) noexcept {
    const auto fresh = [&] { return TaskWord::unpack(task_.load(std::memory_order_seq_cst)).generation != seen; };
    for (;;) {
      const auto deadline = std::chrono::steady_clock::now() + kSpin;
      for (unsigned spins = 0; !fresh() && !stop_.load(std::memory_order_relaxed); ++spins) {
        if (spins % 64 == 63 && std::chrono::steady_clock::now() >= deadline) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleepers_.fetch_add(1, std::memory_order_seq_cst);
          while (!fresh() && !stop_.load(std::memory_order_seq_cst)) wake_.wait(lock);
          sleepers_.fetch_sub(1, std::memory_order_relaxed);
        } else {
          cpu_relax();
        }
      }
      if (stop_.load(std::memory_order_acquire)) return;
      const TaskWord t = TaskWord::unpack(task_.load(std::memory_order_acquire));
      seen = t.generation;
      if (index < t.helpers) work(t.generation, index + 1);
    }
  }

  alignas(64) std::atomic<std::uint64_t> task_{0};
  alignas(64) std::atomic<std::int64_t> remaining_{0};
  alignas(64) std::atomic<bool> busy_{false};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  // Written by the dispatching thread (busy_ held) before task_ is published.
  ChunkFn fn_ = nullptr;
  void* ctx_ = nullptr;
  std::int64_t n_ = 0;
  std::uint64_t generation_ = 0;
  StragglerGuard guard_;  // touched only with busy_ held
  std::mutex mutex_;
  std::condition_variable wake_;
  int workers_ = 0;
  std::thread worker_[kMaxThreads - 1];
};

// Created on the first parallel call with more than one thread, destroyed at exit.
inline Pool& pool() noexcept {
  static Pool p;
  return p;
}

template <class F>
void call_chunk(void* ctx, std::int64_t begin, std::int64_t end, int slot) noexcept {
  F& fn = *static_cast<F*>(ctx);
  if constexpr (std::is_invocable_v<F&, std::int64_t, std::int64_t, int>)
    fn(begin, end, slot);
  else
    fn(begin, end);
}

// Work below which a kernel stays on the calling thread; see parallel_min_work().
inline std::atomic<std::int64_t> min_work_per_thread{32768};

}  // namespace detail

// Calls fn(begin, end) — or fn(begin, end, slot) if fn takes a third int argument — on
// contiguous chunks that cover [0, n_items) exactly once, using up to
// min(num_threads(), max_threads, n_items) threads (max_threads <= 0: no limit). The calling
// thread takes part and returns when every chunk is done. Chunks are claimed as threads get
// to them (a few per thread), so which thread runs which chunk varies from call to call:
// fn's results must not depend on it. `slot` (0 for the calling thread, < the thread count)
// is never used by two chunks of one call at once: index per-thread scratch with it. With one
// thread (or one item, or the pool busy) fn(0, n_items[, 0]) runs inline. fn must be
// noexcept: an exception cannot leave a worker thread.
template <class Fn>
void parallel_for(std::int64_t n_items, int max_threads, Fn&& fn) noexcept {
  using F = std::remove_reference_t<Fn>;
  static_assert(std::is_nothrow_invocable_v<F&, std::int64_t, std::int64_t> ||
                    std::is_nothrow_invocable_v<F&, std::int64_t, std::int64_t, int>,
                "parallel_for: fn(begin, end) must be noexcept (an exception cannot leave a worker thread)");
  if (n_items <= 0) return;
  std::int64_t threads = num_threads();
  if (max_threads > 0) threads = std::min<std::int64_t>(threads, max_threads);
  threads = std::min(threads, n_items);
  void* ctx = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
  if (threads <= 1 || detail::pool_gone.load(std::memory_order_acquire))
    return detail::call_chunk<F>(ctx, 0, n_items, 0);
  detail::pool().run(n_items, static_cast<int>(threads), &detail::call_chunk<F>, ctx);
}

template <class Fn>
void parallel_for(std::int64_t n_items, Fn&& fn) noexcept {
  parallel_for(n_items, 0, std::forward<Fn>(fn));
}

// Work (in multiply-adds, or comparable steps) each thread must get before a kernel splits
// its work: handing a chunk to a spinning worker costs about a microsecond, waking a sleeping
// one tens. Tests set 1 to run the threaded paths on tiny shapes; results never depend on it.
inline std::int64_t parallel_min_work() noexcept {
  return detail::min_work_per_thread.load(std::memory_order_relaxed);
}
inline void set_parallel_min_work(std::int64_t work) noexcept {
  detail::min_work_per_thread.store(std::max<std::int64_t>(work, 1), std::memory_order_relaxed);
}

// Whether the pool falls back to the calling thread alone while workers keep arriving late
// (StragglerGuard; on by default). Tests that check how chunks spread over threads on a loaded
// machine turn it off; results never depend on it.
inline void set_straggler_guard(bool on) noexcept { detail::pool().guard().enable(on); }

// Threads worth using for `work` (see parallel_min_work()), between 1 and num_threads().
inline int threads_for_work(double work) noexcept {
  const double per = static_cast<double>(parallel_min_work());
  const int n = num_threads();
  return work >= per * n ? n : std::max(1, static_cast<int>(work / per));
}

// The one work splitter of the kernels: cuts [0, n) into blocks of `block` items (a tier's
// tile width, so only the last block is partial) and calls run(begin, end) on contiguous runs
// of whole blocks, in parallel when `work` (multiply-adds or comparable) pays for the threads
// (threads_for_work), else run(0, n) once on the calling thread. Callers make every item's
// result independent of which run it falls in.
template <class Run>
void parallel_blocks(std::int64_t n, std::int64_t block, double work, Run&& run) noexcept {
  if (n <= 0) return;
  const int threads = threads_for_work(work);
  const std::int64_t blocks = (n + block - 1) / block;
  if (threads <= 1 || blocks <= 1) return run(std::int64_t{0}, n);
  parallel_for(blocks, threads,
               [&](std::int64_t b0, std::int64_t b1) noexcept { run(b0 * block, std::min(n, b1 * block)); });
}

}  // namespace kernels
}  // namespace nnx
