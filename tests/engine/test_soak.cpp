// Soak: 10,000 request lines, mixed lengths, sampling settings and stop ids, 5% of them bad,
// streamed through the Scheduler with 8 slots the way a server feeds it. Every good request
// must finish with exactly the tokens it gets alone, every bad line must be rejected, and the
// resident memory must stay flat once the first 1,000 requests have run.
//
// Hidden from the default run ("[.soak]"): CTest runs it as its own test labelled "soak", so
// `ctest -LE soak` skips it locally.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

#include "engine_test_util.hpp"

namespace {

using Ids = std::vector<std::int32_t>;

std::int64_t resident_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * ::sysconf(_SC_PAGESIZE);
}

std::string ids_json(const Ids& ids) {
  std::string s = "[";
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(ids[i]);  // appended, not `"," + ...`: GCC 12 warns (-Wrestrict) on that
  }
  return s + "]";
}

// A request line, the way a client writes one.
std::string good_line(std::mt19937_64& rng) {
  const auto pick = [&](std::int64_t n) { return static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n)); };
  Ids prompt(static_cast<std::size_t>(1 + pick(12)));
  for (auto& t : prompt) t = static_cast<std::int32_t>(pick(97));
  std::string line = "{\"prompt_ids\": " + ids_json(prompt) + ", \"max_new_tokens\": " + std::to_string(1 + pick(8));
  const double temperatures[] = {0.0, 0.7, 1.3};
  line += ", \"temperature\": " + std::to_string(temperatures[pick(3)]);
  if (pick(2)) line += ", \"top_k\": " + std::to_string(pick(2) ? 5 : 40);
  if (pick(2)) line += ", \"top_p\": 0.9";
  line += ", \"seed\": " + std::to_string(pick(4));
  if (pick(3) == 0) line += ", \"stop_ids\": " + ids_json({static_cast<std::int32_t>(pick(97))});
  return line + "}";
}

// Lines the scheduler must reject, each for a different reason.
std::string bad_line(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0: return "{\"prompt_ids\": [1, 2";                              // not JSON
    case 1: return "{\"prompt_ids\": [1, 97]}";                            // id >= vocab
    case 2: return "{\"prompt_ids\": " + ids_json(Ids(40, 3)) + "}";       // does not fit 32 positions
    case 3: return "{\"prompt_ids\": [1], \"temperature\": -1}";           // bad sampling
    case 4: return "{\"prompt_ids\": [1], \"prompt_ids\": [2]}";           // key twice
    default: return std::string("{\"prompt_ids\": [1]}") + '\0' + "x";  // NUL byte
  }
}

}  // namespace

TEST_CASE("soak: 10,000 requests through the Scheduler, tokens as alone, memory flat", "[.soak][engine][scheduler]") {
  constexpr int kLines = 10'000;
  const nnx::EngineOptions options{.max_prefill_length = 8, .max_target_length = 32, .slots = 8};
  const nnx::Engine<nnx::Gpt2> engine(engine_test::small_gpt2(), options);
  const nnx::State params = engine.init_params(5);
  nnx::EngineOptions one = options;
  one.slots = 1;
  const nnx::Engine<nnx::Gpt2> single(engine_test::small_gpt2(), one);

  // A pool of distinct good lines, each with its tokens alone; the soak draws from it so
  // every completion can be checked without serving each request twice.
  std::mt19937_64 rng(2026);
  std::vector<std::string> pool;
  std::map<std::string, Ids> expected;
  while (pool.size() < 96) {
    const std::string line = good_line(rng);
    if (expected.count(line)) continue;
    nnx::Scheduler<nnx::Gpt2> alone(single, params);
    alone.submit("", nnx::parse_request_line(line));
    while (!alone.idle())
      for (nnx::Completion& c : alone.step()) expected[line] = std::move(c.tokens);
    pool.push_back(line);
  }

  nnx::Scheduler<nnx::Gpt2> scheduler(engine, params);
  std::unordered_map<std::string, std::size_t> pool_index;  // running id -> its line in the pool
  std::size_t good = 0, rejected = 0, finished = 0, mismatched = 0, next_line = 0;
  std::int64_t rss_after_1000 = 0;
  while (next_line < kLines || !scheduler.idle()) {
    // Stream lines in, keeping a short queue, as a server under steady load would.
    while (next_line < kLines && scheduler.num_waiting() < 16) {
      const bool bad = rng() % 20 == 0;
      const std::size_t pick = rng() % pool.size();
      const std::string line = bad ? bad_line(rng) : pool[pick];
      try {
        scheduler.submit(std::to_string(next_line), nnx::parse_request_line(line));
        pool_index.emplace(std::to_string(next_line), pick);
        ++good;
        REQUIRE_FALSE(bad);
      } catch (const nnx::InvalidArgument&) {
        ++rejected;
        REQUIRE(bad);
      }
      ++next_line;
    }
    for (const nnx::Completion& c : scheduler.step()) {
      const auto it = pool_index.find(c.id);
      REQUIRE(it != pool_index.end());
      mismatched += c.finish == nnx::FinishReason::nan || c.tokens != expected.at(pool[it->second]);
      pool_index.erase(it);
      if (++finished == 1000) rss_after_1000 = resident_bytes();
    }
  }
  const std::int64_t rss_end = resident_bytes();
  INFO("resident after 1,000 requests: " << rss_after_1000 << " B, at the end: " << rss_end << " B");
  CHECK(good + rejected == kLines);
  CHECK(rejected > 300);
  CHECK(finished == good);
  CHECK(mismatched == 0);
  CHECK(pool_index.empty());
  CHECK(static_cast<double>(rss_end) < 1.05 * static_cast<double>(rss_after_1000));
}
