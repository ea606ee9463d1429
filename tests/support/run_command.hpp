// Runs a command line as a user would (through the shell) and captures its exit code,
// stdout and stderr: shared by the tests of the example programs. Also finds the example
// programs and the helper programs built beside the test executables.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>

namespace test_support {

// The helper program `file_name` in the test executable's own directory. Tests name helpers by
// file name, not by absolute path, so that their compile commands are the same in every build
// directory (CI's second build is ccache hits).
inline std::string program_beside_test(const char* file_name) {
  return (std::filesystem::read_symlink("/proc/self/exe").parent_path() / file_name).string();
}

// The example program `name` of the build these tests belong to. tests/CMakeLists.txt writes the
// examples' directory into nnx_examples_dir.txt beside the test executables, again so that no
// compile command holds a build path, and so that the CLI tests compile the same with examples
// off (CTest then leaves out their [cli] cases). Throws when the build has no examples.
inline std::string example_program(const char* name) {
  const auto dir_file = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "nnx_examples_dir.txt";
  std::ifstream in(dir_file);
  std::string dir;
  if (!std::getline(in, dir) || dir.empty())
    throw std::runtime_error(dir_file.string() + ": no examples directory (configured with NNX_BUILD_EXAMPLES=OFF?)");
  return (std::filesystem::path(dir) / name).string();
}

struct CommandResult {
  int code = -1;  // the exit code, -1 when killed by a signal
  std::string out, err;
};

inline CommandResult run_command(const std::string& command) {
  static int counter = 0;
  const std::filesystem::path err_file = std::filesystem::temp_directory_path() /
                                         ("nnx_command_err_" + std::to_string(::getpid()) + "_" +
                                          std::to_string(counter++));
  CommandResult r;
  FILE* p = ::popen((command + " 2>" + err_file.string()).c_str(), "r");
  if (!p) throw std::runtime_error("popen failed for: " + command);
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) r.out.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream e(err_file);
  r.err.assign(std::istreambuf_iterator<char>(e), {});
  std::filesystem::remove(err_file);
  return r;
}

}  // namespace test_support
