// Tests for nnx/kernels/parallel.hpp and the threaded GEMM: parallel_for covers every index
// exactly once in contiguous chunks, never runs two chunks on one slot at once, runs nested
// and concurrent calls inline, and allocates nothing once warm; gemm_f32 and gemm_f32_bt give the same bits on 1, 2 and 3
// threads (so a request's logits do not depend on the thread count), and still agree with
// the portable path.
#include <catch2/catch.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <random>
#include <thread>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/kernels/gemm.hpp"
#include "nnx/kernels/parallel.hpp"
#include "nnx/ops/threads.hpp"

#include "../support/counting_new.hpp"
#include "../support/numeric.hpp"
#include "../support/thread_settings.hpp"

namespace {

namespace k = nnx::kernels;
using i64 = std::int64_t;
using test_support::random_floats;

// Restores the thread count and the parallel threshold a test changes, and keeps the
// straggler guard off meanwhile: these tests check how chunks spread over threads, which it
// changes on a loaded machine (more threads than free cores).
struct SpreadSettings : test_support::ThreadSettings {
  SpreadSettings() { k::set_straggler_guard(false); }
  ~SpreadSettings() { k::set_straggler_guard(true); }
};

}  // namespace

TEST_CASE("parallel_for covers every index exactly once, a slot never used twice at once", "[kernels][parallel]") {
  SpreadSettings restore;
  for (int threads : {1, 2, 3, 4, 7}) {
    nnx::set_num_threads(threads);
    for (i64 n : {0, 1, 2, 3, 5, 7, 8, 13, 100, 1001, 100000}) {
      for (int max_threads : {0, 1, 2, 5}) {
        i64 expected = std::min<i64>(threads, n);
        if (max_threads > 0) expected = std::min<i64>(expected, max_threads);
        std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
        std::vector<std::atomic<bool>> in_use(8);
        std::atomic<bool> slot_ok{true};
        std::mutex mutex;
        std::vector<std::pair<i64, i64>> chunks;
        std::thread::id slot0_thread;
        k::parallel_for(n, max_threads, [&](i64 begin, i64 end, int slot) noexcept {
          if (slot < 0 || slot >= std::max<i64>(expected, 1) || in_use[static_cast<std::size_t>(slot)].exchange(true))
            slot_ok = false;
          if (slot == 0) slot0_thread = std::this_thread::get_id();
          for (i64 i = begin; i < end; ++i) hits[static_cast<std::size_t>(i)].fetch_add(1);
          {
            std::lock_guard<std::mutex> lock(mutex);
            chunks.emplace_back(begin, end);
          }
          if (slot >= 0 && slot < 8) in_use[static_cast<std::size_t>(slot)] = false;
        });
        INFO("threads=" << threads << " n=" << n << " max_threads=" << max_threads);
        for (i64 i = 0; i < n; ++i) REQUIRE(hits[static_cast<std::size_t>(i)].load() == 1);
        REQUIRE(slot_ok);
        if (n == 0) {
          CHECK(chunks.empty());
          continue;
        }
        // Contiguous chunks tiling [0, n), a few per thread, sizes differing by at most one.
        std::sort(chunks.begin(), chunks.end());
        const auto count = static_cast<i64>(chunks.size());
        CHECK(count >= expected);
        CHECK(count <= std::max<i64>(1, expected * 4));
        i64 next = 0;
        for (const auto& [begin, end] : chunks) {
          REQUIRE(begin == next);
          REQUIRE(end - begin >= n / count);
          REQUIRE(end - begin <= n / count + 1);
          next = end;
        }
        REQUIRE(next == n);
        // Slot 0 is the caller's (which may find every chunk already claimed by workers).
        if (slot0_thread != std::thread::id{}) CHECK(slot0_thread == std::this_thread::get_id());
      }
    }
  }
}

TEST_CASE("parallel_for with a two-argument function", "[kernels][parallel]") {
  SpreadSettings restore;
  nnx::set_num_threads(2);
  std::vector<int> out(1000, 0);
  k::parallel_for(static_cast<i64>(out.size()), [&](i64 begin, i64 end) noexcept {
    for (i64 i = begin; i < end; ++i) out[static_cast<std::size_t>(i)] = static_cast<int>(i) * 3;
  });
  for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == static_cast<int>(i) * 3);
}

TEST_CASE("nested and concurrent parallel_for calls run inline and stay correct", "[kernels][parallel]") {
  SpreadSettings restore;
  nnx::set_num_threads(2);
  SECTION("nested") {
    const i64 outer = 6, inner = 50;
    std::vector<std::atomic<int>> hits(static_cast<std::size_t>(outer * inner));
    std::atomic<int> inline_inner{0};
    k::parallel_for(outer, [&](i64 b0, i64 b1) noexcept {
      for (i64 o = b0; o < b1; ++o)
        k::parallel_for(inner, [&](i64 begin, i64 end, int slot) noexcept {
          if (begin == 0 && end == inner && slot == 0) inline_inner.fetch_add(1);
          for (i64 i = begin; i < end; ++i) hits[static_cast<std::size_t>(o * inner + i)].fetch_add(1);
        });
    });
    for (auto& h : hits) REQUIRE(h.load() == 1);
    CHECK(inline_inner.load() == outer);  // the pool is busy with the outer call
  }
  SECTION("from several threads at once") {
    const i64 n = 20000;
    std::vector<std::vector<int>> out(4, std::vector<int>(static_cast<std::size_t>(n), 0));
    std::vector<std::thread> users;
    for (std::size_t u = 0; u < out.size(); ++u)
      users.emplace_back([&, u] {
        for (int rep = 0; rep < 50; ++rep)
          k::parallel_for(n, [&](i64 begin, i64 end) noexcept {
            for (i64 i = begin; i < end; ++i) out[u][static_cast<std::size_t>(i)] += 1;
          });
      });
    for (auto& t : users) t.join();
    for (const auto& o : out)
      for (int v : o) REQUIRE(v == 50);
  }
}

TEST_CASE("the straggler guard runs calls alone while workers keep arriving late, backing off", "[kernels][parallel]") {
  using namespace std::chrono_literals;
  using G = k::detail::StragglerGuard;
  G g;
  auto t = G::Clock::time_point{} + 1h;
  CHECK_FALSE(g.solo(t));
  // Healthy calls: the wait for the workers' last chunks is short next to the caller's share.
  for (int i = 0; i < 10; ++i) g.note(400us, 50us, t);
  CHECK_FALSE(g.solo(t));
  // A preempted worker: the caller waits milliseconds; the next calls run alone.
  g.note(100us, 4ms, t);
  CHECK(g.solo(t));
  CHECK(g.solo(t + G::kMinSolo - 1us));
  CHECK_FALSE(g.solo(t + G::kMinSolo));
  // Still oversubscribed after the back-off: the next one is twice as long.
  t += G::kMinSolo;
  g.note(100us, 4ms, t);
  CHECK(g.solo(t + 2 * G::kMinSolo - 1us));
  CHECK_FALSE(g.solo(t + 2 * G::kMinSolo));
  // Long waits no longer than kStragglerWait (small calls), or shorter than the caller's own
  // share, never count.
  G small;
  for (int i = 0; i < 10; ++i) small.note(10us, G::kStragglerWait, t);
  for (int i = 0; i < 10; ++i) small.note(5ms, 4ms, t);
  CHECK_FALSE(small.solo(t));
  // A call in which the threads kept pace resets the back-off.
  t += 1s;
  g.note(400us, 50us, t);
  g.note(100us, 4ms, t);
  CHECK(g.solo(t + G::kMinSolo - 1us));
  CHECK_FALSE(g.solo(t + G::kMinSolo));
  // The back-off is capped.
  for (int i = 0; i < 40; ++i) {
    t += 2 * G::kMaxSolo;
    g.note(100us, 4ms, t);
  }
  CHECK(g.solo(t + G::kMaxSolo - 1us));
  CHECK_FALSE(g.solo(t + G::kMaxSolo));
}

TEST_CASE("set_num_threads validates its argument; the count is visible", "[kernels][parallel]") {
  SpreadSettings restore;
  CHECK_THROWS_AS(nnx::set_num_threads(0), nnx::InvalidArgument);
  CHECK_THROWS_WITH(nnx::set_num_threads(0), Catch::Contains("got 0"));
  CHECK_THROWS_WITH(nnx::set_num_threads(-3), Catch::Contains("got -3"));
  CHECK_THROWS_AS(nnx::set_num_threads(nnx::kMaxThreads + 1), nnx::InvalidArgument);
  nnx::set_num_threads(3);
  CHECK(nnx::num_threads() == 3);
  k::set_parallel_min_work(100);
  CHECK(k::threads_for_work(50) == 1);
  CHECK(k::threads_for_work(250) == 2);
  CHECK(k::threads_for_work(1e9) == 3);
}

TEST_CASE("a warm parallel_for and a threaded GEMM allocate nothing", "[kernels][parallel][allocation]") {
  SpreadSettings restore;
  nnx::set_num_threads(2);
  k::set_parallel_min_work(1);
  const i64 M = 3, N = 300, K = 40;
  const auto A = random_floats(static_cast<std::size_t>(M * K), 1);
  const auto B = random_floats(static_cast<std::size_t>(K * N), 2);
  std::vector<float> C(static_cast<std::size_t>(M * N));
  std::vector<i64> sums(2, 0);
  const auto work = [&] {
    k::parallel_for(1000, [&](i64 begin, i64 end, int slot) noexcept {
      for (i64 i = begin; i < end; ++i) sums[static_cast<std::size_t>(slot)] += i;
    });
    k::gemm_f32(M, N, K, A.data(), K, B.data(), N, C.data(), N);
    k::gemm_f32_bt(M, N / 10, K, A.data(), K, B.data(), K, C.data(), N / 10);
  };
  work();  // starts the worker and grows its scratch
  const auto [bytes, count] = counting_new::heap_use([&] {
    for (int rep = 0; rep < 20; ++rep) work();
  });
  CHECK(count == 0);
  CHECK(bytes == 0);
  CHECK(sums[0] + sums[1] == 21 * (999 * 1000 / 2));
}

TEST_CASE("threaded gemm_f32 and gemm_f32_bt give the single-thread bits", "[kernels][parallel][gemm][determinism]") {
  SpreadSettings restore;
  for (i64 min_work : {i64{1}, restore.min_work}) {  // forced onto threads, and the default
    k::set_parallel_min_work(min_work);
    for (i64 M : {1, 3, 7, 33})
      for (i64 N : {1, 5, 17, 130, 1001})
        for (i64 K : {1, 9, 67, 300}) {
          const auto seed = static_cast<std::uint32_t>(M * 1000003 + N * 101 + K);
          const auto A = random_floats(static_cast<std::size_t>(M * K), seed);
          const auto B = random_floats(static_cast<std::size_t>(K * N), seed + 1);
          const auto C0 = random_floats(static_cast<std::size_t>(M * N), seed + 2);
          std::vector<float> one, one_acc, one_bt;
          for (int threads : {1, 2, 3}) {
            nnx::set_num_threads(threads);
            std::vector<float> C(C0.size(), 7.0f), Cacc = C0, Cbt(C0.size(), 7.0f);
            k::gemm_f32(M, N, K, A.data(), K, B.data(), N, C.data(), N);
            k::gemm_f32(M, N, K, A.data(), K, B.data(), N, Cacc.data(), N, true);
            k::gemm_f32_bt(M, N, K, A.data(), K, B.data(), K, Cbt.data(), N);  // B read as [N, K]
            INFO("M=" << M << " N=" << N << " K=" << K << " threads=" << threads << " min_work=" << min_work);
            if (threads == 1) {
              one = C, one_acc = Cacc, one_bt = Cbt;
              // The dispatched path agrees with the portable one up to rounding:
              // both within (K + 2) u Σ|a b| (+ |C0|) of the exact value.
              std::vector<float> R(C0.size()), Racc = C0, Rbt(C0.size());
              k::ref::gemm_f32(M, N, K, A.data(), K, B.data(), N, R.data(), N);
              k::ref::gemm_f32(M, N, K, A.data(), K, B.data(), N, Racc.data(), N, true);
              k::ref::gemm_f32_bt(M, N, K, A.data(), K, B.data(), K, Rbt.data(), N);
              for (i64 i = 0; i < M; ++i)
                for (i64 j = 0; j < N; ++j) {
                  double mag = 0.0, mag_bt = 0.0;
                  for (i64 kk = 0; kk < K; ++kk) {
                    mag += std::fabs(static_cast<double>(A[static_cast<std::size_t>(i * K + kk)]) *
                                     B[static_cast<std::size_t>(kk * N + j)]);
                    mag_bt += std::fabs(static_cast<double>(A[static_cast<std::size_t>(i * K + kk)]) *
                                        B[static_cast<std::size_t>(j * K + kk)]);
                  }
                  const auto idx = static_cast<std::size_t>(i * N + j);
                  const double tol = 2.0 * static_cast<double>(K + 2) * 0x1p-24;
                  REQUIRE(std::fabs(static_cast<double>(C[idx]) - R[idx]) <= tol * mag + 1e-30);
                  REQUIRE(std::fabs(static_cast<double>(Cacc[idx]) - Racc[idx]) <=
                          tol * (mag + std::fabs(C0[idx])) + 1e-30);
                  REQUIRE(std::fabs(static_cast<double>(Cbt[idx]) - Rbt[idx]) <= tol * mag_bt + 1e-30);
                }
            } else {
              REQUIRE(std::memcmp(C.data(), one.data(), C.size() * sizeof(float)) == 0);
              REQUIRE(std::memcmp(Cacc.data(), one_acc.data(), C.size() * sizeof(float)) == 0);
              REQUIRE(std::memcmp(Cbt.data(), one_bt.data(), C.size() * sizeof(float)) == 0);
            }
          }
        }
  }
}

TEST_CASE("threaded GEMM on every AVX2 path gives the single-thread bits", "[kernels][parallel][gemm][determinism]") {
  // Packed B (M >= 16, N >= 8192: per thread too, or not, depending on the split), copied
  // panels (row stride a multiple of 512 floats), in place; decode and prefill tiles of bt.
  SpreadSettings restore;
  k::set_parallel_min_work(1);
  struct Case {
    i64 M, N, K;
  };
  for (Case c : {Case{17, 16500, 260}, Case{20, 8200, 70}, Case{5, 1024, 129}, Case{2, 2048, 33}, Case{1, 9001, 65},
                 Case{130, 37, 3}}) {
    const auto A = random_floats(static_cast<std::size_t>(c.M * c.K), 5);
    const auto B = random_floats(static_cast<std::size_t>(c.K * c.N), 6);
    std::vector<float> one(static_cast<std::size_t>(c.M * c.N)), one_bt(one.size());
    nnx::set_num_threads(1);
    k::gemm_f32(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, one.data(), c.N);
    k::gemm_f32_bt(c.M, c.N, c.K, A.data(), c.K, B.data(), c.K, one_bt.data(), c.N);
    for (int threads : {2, 3}) {
      nnx::set_num_threads(threads);
      std::vector<float> C(one.size()), Cbt(one.size());
      k::gemm_f32(c.M, c.N, c.K, A.data(), c.K, B.data(), c.N, C.data(), c.N);
      k::gemm_f32_bt(c.M, c.N, c.K, A.data(), c.K, B.data(), c.K, Cbt.data(), c.N);
      INFO("M=" << c.M << " N=" << c.N << " K=" << c.K << " threads=" << threads);
      REQUIRE(std::memcmp(C.data(), one.data(), C.size() * sizeof(float)) == 0);
      REQUIRE(std::memcmp(Cbt.data(), one_bt.data(), C.size() * sizeof(float)) == 0);
    }
  }
}
