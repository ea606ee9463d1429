// crash_save — the child process of tests/io/test_crash_save.cpp, which SIGKILLs it mid-save.
// Saves generations FIRST, FIRST+1, ... (tests/support/crash_save_state.hpp) into DIR, one
// after the other, and reports each durable step of each save on stdout as it happens, one
// line per write(2) so that a kill never cuts a line:
//
//   crash_save DIR FIRST COUNT [DIE_AT]
//
//   g 7 temp .model-00001-of-00004.safetensors.tmp-1f0c...   (CheckpointOptions::on_event)
//   g 7 commit                                                (right before the commit)
//   g 7 committed
//   g 7 saved                                                 (save_checkpoint returned)
//
// With DIE_AT = k, the process SIGKILLs itself right after reporting its k-th event (0-based,
// counted over the whole run): a kill at exactly that step. Exit code 0 after COUNT saves;
// 2 with one line on stderr on any error.
//
// It is built without sanitizers, so that a save takes about as long as in a user's program
// and the test's random kill delays spread over all of its phases.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <iostream>
#include <string>

#include "crash_save_state.hpp"

namespace {

void say(const std::string& line) {
  const std::string s = line + "\n";
  if (::write(1, s.data(), s.size()) != static_cast<ssize_t>(s.size())) throw std::runtime_error("stdout write failed");
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 4 && argc != 5) throw nnx::InvalidArgument("usage: crash_save DIR FIRST COUNT [DIE_AT]");
    const std::string dir = argv[1];
    const std::int64_t first = std::stoll(argv[2]);
    const std::int64_t count = std::stoll(argv[3]);
    const std::int64_t die_at = argc == 5 ? std::stoll(argv[4]) : -1;
    std::int64_t events = 0;
    for (std::int64_t g = first; g < first + count; ++g) {
      const nnx::State state = crash_save::make_state(g);
      nnx::io::CheckpointOptions options = crash_save::options_for(g);
      const std::string prefix = "g " + std::to_string(g) + " ";
      options.on_event = [&](const std::string& event) {
        say(prefix + event);
        if (events++ == die_at) ::raise(SIGKILL);
      };
      nnx::io::save_checkpoint(dir, state, {}, crash_save::config_of(g), options);
      say(prefix + "saved");
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "crash_save: " << e.what() << "\n";
    return 2;
  }
}
