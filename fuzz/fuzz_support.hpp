// fuzz/fuzz_support.hpp — what the harnesses share: a scratch directory for the APIs that
// read only from files, and property checks that stop the run.
//
// A harness calls the library's real entry points on each input. The documented exception
// (nnx::CheckpointError for files, nnx::InvalidArgument for JSON texts) is the expected way
// to reject an input; anything else is a finding: a crash, a sanitizer report, another
// exception type escaping (libFuzzer reports it as a deadly signal), or a broken property
// (require() aborts, so libFuzzer saves the input as crash-<sha1>).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>

namespace nnx_fuzz {

namespace fs = std::filesystem;

// The input as text (JSON parsers take a string_view; a NUL byte stays in it).
inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Aborts with `what` when a property the library promises does not hold.
inline void require(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "nnx fuzz: property violated: %s\n", what);
  std::abort();
}

// Replaces `file` with `bytes`.
inline void write_file(const fs::path& file, std::string_view bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  require(out.good(), "the harness could not write its scratch file");
}

// A directory of this process's own, removed at exit. It lives in /dev/shm when there is
// one: a harness writes a file per input, and memory-backed files keep that at
// microseconds (fsync is free there too, and the checkpoint writer fsyncs every file).
// Per process, so that parallel fuzzing jobs (-jobs=N) never share files.
class ScratchDir {
 public:
  explicit ScratchDir(std::string_view harness) {
    std::error_code ec;
    const fs::path shm = "/dev/shm";
    const fs::path base = fs::is_directory(shm, ec) ? shm : fs::temp_directory_path();
    path_ = base / ("nnx_fuzz_" + std::string(harness) + "_" + std::to_string(::getpid()));
    fs::remove_all(path_, ec);  // left by an earlier process with the same id
    fs::create_directories(path_);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }

  const fs::path& path() const noexcept { return path_; }
  fs::path operator/(std::string_view name) const { return path_ / name; }

  // Replaces the file `name` in this directory with `bytes`; returns its path.
  fs::path write(std::string_view name, std::string_view bytes) const {
    const fs::path file = path_ / name;
    write_file(file, bytes);
    return file;
  }

  // Removes everything in this directory, so no file from one input reaches the next.
  void clear() const {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(path_, ec)) fs::remove_all(entry.path(), ec);
  }

 private:
  fs::path path_;
};

}  // namespace nnx_fuzz
