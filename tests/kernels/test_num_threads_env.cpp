// NNX_NUM_THREADS: the thread count is read from the environment once, at its first use, so
// each case runs this executable again as a child process with the variable set (a hidden
// test case reports what the child saw). A valid value sets num_threads() and the pool
// really runs that many threads at once; an unusable one (0, negative, not a number,
// trailing junk, above kMaxThreads, overflowing) is ignored: one thread, not a clamp.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <atomic>
#include <bitset>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "nnx/kernels/parallel.hpp"

#include "../support/run_command.hpp"

namespace {

// Slots (threads) that took part in one parallel_for whose every chunk waits until `wanted`
// distinct slots have arrived, or until `patience` has passed: all of them must be running
// at once. The wait only guards against a hang, and giving up only lowers the count.
int concurrent_slots(int wanted, std::chrono::seconds patience) {
  std::atomic<std::uint64_t> seen{0};
  const auto deadline = std::chrono::steady_clock::now() + patience;
  nnx::kernels::parallel_for(64 * wanted, [&](std::int64_t, std::int64_t, int slot) noexcept {
    seen.fetch_or(std::uint64_t{1} << (slot & 63));
    while (std::bitset<64>(seen.load()).count() < static_cast<std::size_t>(wanted) &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::yield();
  });
  return static_cast<int>(std::bitset<64>(seen.load()).count());
}

struct Child {
  int threads = -1;
  int slots = -1;
};

// Runs the hidden case below in a child process with NNX_NUM_THREADS=value (unset: nullptr).
Child run_child(const char* value) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  const std::string env = value ? "NNX_NUM_THREADS='" + std::string(value) + "'" : "env -u NNX_NUM_THREADS";
  const auto r = test_support::run_command(env + " '" + self + "' '[num_threads_child]'");
  INFO("child stdout: " << r.out << "\nchild stderr: " << r.err);
  REQUIRE(r.code == 0);
  Child c;
  const auto at = r.out.find("num_threads=");
  REQUIRE(at != std::string::npos);
  REQUIRE(std::sscanf(r.out.c_str() + at, "num_threads=%d slots=%d", &c.threads, &c.slots) == 2);
  return c;
}

}  // namespace

TEST_CASE("num_threads child: reports the thread count and the pool's concurrency", "[.num_threads_child]") {
  const int n = nnx::num_threads();  // the first use: reads NNX_NUM_THREADS
  nnx::kernels::set_straggler_guard(false);  // count the pool's threads even on a loaded machine
  int slots = 0;
  if (n <= 8) {
    slots = concurrent_slots(n, std::chrono::seconds(30));
  }
  std::cout << "num_threads=" << n << " slots=" << slots << std::endl;
}

TEST_CASE("NNX_NUM_THREADS sets the thread count the pool runs", "[kernels][parallel][environment]") {
  for (const char* value : {"1", "2", "3", "4"}) {
    INFO("NNX_NUM_THREADS=" << value);
    const Child c = run_child(value);
    CHECK(c.threads == std::stoi(value));
    CHECK(c.slots == std::stoi(value));  // that many threads ran chunks at the same time
  }
  CHECK(run_child("256").threads == nnx::kMaxThreads);  // the largest accepted
  const Child unset = run_child(nullptr);
  CHECK(unset.threads == 1);  // the default
  CHECK(unset.slots == 1);
}

TEST_CASE("NNX_NUM_THREADS with an unusable value is ignored: one thread", "[kernels][parallel][environment]") {
  for (const char* value : {"", "0", "-1", "-3", "abc", "3abc", "2.5", " ", "257", "100000", "99999999999999999999",
                            "-99999999999999999999"}) {
    INFO("NNX_NUM_THREADS='" << value << "'");
    const Child c = run_child(value);
    CHECK(c.threads == 1);
    CHECK(c.slots == 1);
  }
}
