// A save killed by SIGKILL at any moment. A real process (nnx_crash_save, see
// tests/support/crash_save.cpp) saves checkpoints of ~3.5 MB into one directory, and this
// test kills it: first right after each durable step of every kind of re-save (the process
// kills itself after reporting the step), then 120 times after seeded random delays of 20 us
// to 40 ms (so kills land while writing, fsyncing, renaming, committing the index, cleaning
// up, or between saves). After every kill the directory must restore to exactly one whole
// generation, the last committed one or the one whose commit had started, byte for byte,
// never a mix and never an error, with matching checksums; a save by another process then
// leaves exactly its own files (no temp file, no orphan shard).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "nnx/io/checkpoint.hpp"
#include "../support/crash_save_state.hpp"
#include "../support/run_command.hpp"

extern char** environ;

#if defined(NNX_CRASH_SAVE_BIN)

namespace {

namespace fs = std::filesystem;
namespace io = nnx::io;

struct Run {
  bool killed = false;  // by SIGKILL (ours or its own)
  int exit_code = -1;   // when it exited instead
  std::vector<std::string> lines;
};

class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    ::posix_spawn_file_actions_init(&fa);
    ::posix_spawn_file_actions_adddup2(&fa, p[1], 1);  // dup2 clears O_CLOEXEC on stdout
    const std::string program = test_support::program_beside_test(NNX_CRASH_SAVE_BIN);
    std::vector<std::string> all{program};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = ::posix_spawn(&pid_, program.c_str(), &fa, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&fa);
    ::close(p[1]);
    out_ = p[0];
    REQUIRE(rc == 0);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
  }

  void kill() { ::kill(pid_, SIGKILL); }

  // Blocks until the process reports its first step: it has started saving.
  void wait_for_output() {
    char buf[4096];
    for (ssize_t n = 0; n <= 0;) {
      n = ::read(out_, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      REQUIRE(n > 0);
      text_.append(buf, static_cast<std::size_t>(n));
    }
  }

  // Waits for the process to end and collects what it reported. (Its output is small: at
  // most a few saves of ~20 lines fit in the pipe before any kill.)
  Run wait() {
    Run r;
    std::string text = std::move(text_);
    char buf[4096];
    for (ssize_t n; (n = ::read(out_, buf, sizeof buf)) != 0;) {
      if (n < 0 && errno == EINTR) continue;
      REQUIRE(n > 0);
      text.append(buf, static_cast<std::size_t>(n));
    }
    int status = 0;
    REQUIRE(::waitpid(pid_, &status, 0) == pid_);
    pid_ = -1;
    r.killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) r.lines.push_back(line);
    return r;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string text_;
};

// What a run's report says about the directory: every generation up to `committed` has been
// committed, and `commit_started` tells whether the next one may have been.
struct Reported {
  std::int64_t committed;
  bool commit_started = false;
  std::string phase = "startup";  // what the process was doing when it died: the last step reported
};

Reported parse(const Run& run, std::int64_t before) {
  Reported r{before};
  for (const std::string& line : run.lines) {
    std::istringstream in(line);
    std::string g_word, event;
    std::int64_t g = 0;
    in >> g_word >> g;
    std::getline(in >> std::ws, event);
    INFO("line: " << line);
    REQUIRE(g_word == "g");
    if (event == "saved") {
      REQUIRE(g == r.committed);
      r.phase = "between-saves";
      continue;
    }
    REQUIRE(g == r.committed + 1);  // one save at a time, in order
    r.phase = event.substr(0, event.find(' '));  // temp, renamed, commit, committed
    if (event == "commit") r.commit_started = true;
    if (event == "committed") {
      r.committed = g;
      r.commit_started = false;
    }
  }
  return r;
}

// Generation g's state, built once for the few generations in play (building one costs
// more than checking it, under sanitizers).
const nnx::State& generation(std::int64_t g) {
  static std::map<std::int64_t, nnx::State> cache;
  auto it = cache.find(g);
  if (it == cache.end()) {
    if (cache.size() >= 4) cache.erase(cache.begin());  // the oldest generation
    it = cache.emplace(g, crash_save::make_state(g)).first;
  }
  return it->second;
}

void save_generation(const fs::path& dir, std::int64_t g) {
  io::save_checkpoint(dir, generation(g), {}, crash_save::config_of(g), crash_save::options_for(g));
}

// The files a committed checkpoint uses (the whole directory must be exactly these).
std::set<std::string> expected_files(const fs::path& dir) {
  const fs::path index = dir / std::string(io::checkpoint_index_name);
  if (!fs::exists(index)) return {std::string(io::checkpoint_file_name)};
  std::set<std::string> out{std::string(io::checkpoint_index_name)};
  const auto j = nlohmann::json::parse(io_test::read_bytes(index));
  for (const auto& [name, file] : j.at("weight_map").items()) out.insert(file.get<std::string>());
  return out;
}

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

std::size_t temp_files_in(const fs::path& dir) {
  std::size_t n = 0;
  for (const auto& name : files_in(dir)) n += name.starts_with(".") && name.find(".tmp-") != std::string::npos;
  return n;
}

// Restores the directory and checks that it is exactly one whole generation in
// [lo, hi], every tensor byte for byte, and that its checksums match. Returns it.
std::int64_t check_directory(const fs::path& dir, std::int64_t lo, std::int64_t hi) {
  const nnx::State target = crash_save::make_state(0, /*abstract=*/true);
  std::int64_t g = -1;
  nnx::State restored;
  try {
    g = io::checkpoint_config(dir).at("generation").get<std::int64_t>();
    restored = io::restore_checkpoint(dir, target);
    const auto v = io::verify_checkpoint(dir);
    CHECK(v.files_verified >= 1);
    CHECK(v.files_without_checksum == 0);
  } catch (const std::exception& e) {
    FAIL("the directory does not restore: " << e.what() << "\nfiles: " << [&] {
      std::string s;
      for (const auto& f : files_in(dir)) s += f + " ";
      return s;
    }());
  }
  INFO("generation " << g << ", expected one in [" << lo << ", " << hi << "]");
  REQUIRE(g >= lo);
  REQUIRE(g <= hi);
  REQUIRE(restored["generation"].tensor().span<std::int64_t>()[0] == g);  // the config and the data agree
  const nnx::State& want = generation(g);
  REQUIRE(restored.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const nnx::Tensor& a = restored.entry(i).leaf.tensor();
    const nnx::Tensor& b = want.entry(i).leaf.tensor();
    INFO("leaf " << want.entry(i).path.to_string());
    REQUIRE(restored.entry(i).path == want.entry(i).path);
    REQUIRE(a.dtype() == b.dtype());
    REQUIRE(a.shape() == b.shape());
    REQUIRE(std::memcmp(a.raw_data(), b.raw_data(), b.nbytes()) == 0);
  }
  return g;
}

// After a kill: the directory holds the last committed generation, or the one whose commit
// had started. Returns it.
std::int64_t check_after(const fs::path& dir, const Run& run, std::int64_t before, std::map<std::string, int>& phases,
                         std::size_t& leftovers) {
  REQUIRE(run.exit_code != 2);
  const Reported rep = parse(run, before);
  ++phases[rep.phase];
  const std::int64_t g = check_directory(dir, rep.committed, rep.committed + (rep.commit_started ? 1 : 0));
  leftovers += temp_files_in(dir) > 0;
  return g;
}

// Another save (by another process: this one) of what the directory holds cleans up all that
// killed saves left: afterwards the directory holds exactly the checkpoint's files.
void check_next_save_cleans_up(const fs::path& dir, std::int64_t g) {
  save_generation(dir, g);
  CHECK(temp_files_in(dir) == 0);
  CHECK(files_in(dir) == expected_files(dir));
  check_directory(dir, g, g);
}

}  // namespace

TEST_CASE("crash save: SIGKILL at every step and at random moments never loses or mixes checkpoints",
          "[io][checkpoint][crash]") {
  io_test::TempDir tmp;
  const fs::path dir = tmp / "ckpt";
  std::map<std::string, int> phases;  // last step reported before each kill
  std::size_t leftovers = 0;          // kills that left temp files (cleaned up by a later save)
  int kills = 0;
  const auto start = std::chrono::steady_clock::now();

  // A committed first generation, by the helper itself.
  {
    Child c({dir.string(), "1", "1"});
    const Run r = c.wait();
    REQUIRE(r.exit_code == 0);
    REQUIRE(r.lines.back() == "g 1 saved");
  }
  std::int64_t g = check_directory(dir, 1, 1);

  // Deterministic: the process kills itself right after each durable step of a save, for a
  // save of every layout transition (one file -> one file, -> shards, shards -> the same
  // count, -> another count, -> one file: the generation decides the layout).
  for (int from = 0; from < crash_save::kLayouts; ++from) {
    while (g % crash_save::kLayouts != from) {  // bring the directory to the layout `from`
      save_generation(dir, ++g);
    }
    for (int step = 0;; ++step) {
      INFO("save " << g << " -> " << g + 1 << ", killed at step " << step);
      Child c({dir.string(), std::to_string(g + 1), "1", std::to_string(step)});
      const Run r = c.wait();
      if (!r.killed) {  // the save has fewer steps: it completed
        REQUIRE(r.exit_code == 0);
        g = check_directory(dir, g + 1, g + 1);
        break;
      }
      ++kills;
      check_after(dir, r, g, phases, leftovers);
      // Back to generation g (whichever the directory holds), so that the next kill hits the
      // same kind of re-save.
      check_next_save_cleans_up(dir, g);
    }
  }
  const int deterministic = kills;
  const auto deterministic_end = std::chrono::steady_clock::now();

  // Random: kill the saving loop a seeded, log-uniform delay after it reports its first step,
  // so that kills land in every phase of a save, which take from microseconds (a rename) to
  // milliseconds (writing and fsyncing a file).
  std::mt19937_64 rng(14);
  std::uniform_real_distribution<double> log_delay(std::log(20e-6), std::log(40e-3));
  constexpr int kRandomKills = 120;
  for (int i = 0; i < kRandomKills; ++i) {
    const auto delay = std::chrono::duration<double>(std::exp(log_delay(rng)));
    INFO("random kill " << i << " after " << delay.count() * 1e6 << " us, from generation " << g);
    Child c({dir.string(), std::to_string(g + 1), "1000000"});
    c.wait_for_output();
    std::this_thread::sleep_for(delay);
    c.kill();
    const Run r = c.wait();
    REQUIRE(r.killed);
    ++kills;
    g = check_after(dir, r, g, phases, leftovers);
    // Leftovers of several kills may pile up before a save completes; check the cleanup now
    // and then (the next run's saves clean up too).
    if (i % 5 == 4) check_next_save_cleans_up(dir, g);
  }
  check_next_save_cleans_up(dir, g);

  std::ostringstream summary;
  summary << "crash save: " << kills << " kills (" << deterministic << " at each step, " << kRandomKills
          << " random), last step before the kill:";
  for (const auto& [phase, n] : phases) summary << " " << phase << "=" << n;
  summary << "; " << leftovers << " kills left temp files, all cleaned up by a later save; "
          << std::chrono::duration<double>(deterministic_end - start).count() << " s + "
          << std::chrono::duration<double>(std::chrono::steady_clock::now() - deterministic_end).count() << " s";
  std::cout << summary.str() << "\n";
  CHECK(kills == deterministic + kRandomKills);
}

#endif
