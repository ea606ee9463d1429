// nnx/io/safetensors.hpp — safetensors files: a zero-copy mmap reader and an atomic writer.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each
// tensor's dtype, shape and byte range, then the raw little-endian data. The reader maps
// the whole file and checks all of it before returning; get() returns tensors that point
// into the mapping and keep it alive, so the file object may go out of scope first:
//
//   auto f = nnx::io::SafetensorsFile::open("model.safetensors");
//   nnx::Tensor wte = f.get("wte");              // no copy; valid after f is destroyed
//   for (const std::string& name : f.names()) std::cout << name << "\n";
//   f.metadata();                                // the "__metadata__" strings
//
//   std::vector<std::pair<std::string, nnx::Tensor>> tensors{{"wte", wte}};
//   nnx::io::save_safetensors("out.safetensors", tensors, {{"format", "pt"}});
//
// Every problem with a file (unreadable, truncated, malformed header, out-of-range offsets,
// unknown dtype, ...) is an nnx::CheckpointError whose message starts with the file's path
// and names the tensor involved. The mapping is private and writable (copy-on-write): a
// model may update a borrowed tensor in place; the file itself never changes.
//
// The mapping assumes the file is not truncated or rewritten in place while mapped (that
// would make reads fault with SIGBUS, as with any mmap). save_safetensors never does that:
// it writes a new file and renames it over the old one, so open mappings keep the old data.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"
#include "nnx/io/json.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx::io {

static_assert(std::endian::native == std::endian::little,
              "nnx/io/safetensors.hpp maps little-endian file data directly; big-endian hosts are not supported");

// The largest JSON header the reader accepts, as the reference implementation does: a
// corrupt length must not make us parse gigabytes.
inline constexpr std::uint64_t safetensors_default_max_header_bytes = 100'000'000;

// The dtype a model's weights are stored in, given the dtypes of a checkpoint's tensors: bf16
// or f16 when some tensor is stored so (bf16 first; a 16-bit checkpoint may keep norm scales
// and int8 scales in f32), else f32.
inline DType stored_weight_dtype(const std::set<DType>& tensor_dtypes) {
  return tensor_dtypes.count(DType::bf16) ? DType::bf16 : tensor_dtypes.count(DType::f16) ? DType::f16 : DType::f32;
}

struct SafetensorsReadOptions {
  std::uint64_t max_header_bytes = safetensors_default_max_header_bytes;
};

namespace detail {

[[noreturn]] inline void file_error(const std::filesystem::path& file, const std::string& what) {
  throw CheckpointError(file.string() + ": " + what);
}

inline std::string errno_message(int e) { return std::generic_category().message(e); }

// An owned POSIX file descriptor.
class FileDescriptor {
 public:
  FileDescriptor() = default;
  explicit FileDescriptor(int fd) noexcept : fd_(fd) {}
  FileDescriptor(FileDescriptor&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  FileDescriptor& operator=(FileDescriptor&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() { reset(); }

  int get() const noexcept { return fd_; }
  void reset() noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // close() reports deferred write errors on some file systems (NFS), so writers call this.
  void close_checked(const std::filesystem::path& file) {
    const int fd = std::exchange(fd_, -1);
    if (fd >= 0 && ::close(fd) != 0) file_error(file, "close failed: " + errno_message(errno));
  }

 private:
  int fd_ = -1;
};

// A whole-file mapping; tensors borrowed from the file share ownership of it.
class Mapping {
 public:
  Mapping(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { ::munmap(addr_, size_); }
  std::byte* data() const noexcept { return static_cast<std::byte*>(addr_); }
  std::size_t size() const noexcept { return size_; }

 private:
  void* addr_;
  std::size_t size_;
};

inline void write_all(int fd, const void* data, std::size_t n, const std::filesystem::path& file) {
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; smaller chunks also keep EINTR retries cheap.
    const std::size_t chunk = std::min<std::size_t>(n, std::size_t{1} << 30);
    const ssize_t w = ::write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      file_error(file, "write failed: " + errno_message(errno));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

inline void fsync_or_throw(int fd, const std::filesystem::path& file) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) file_error(file, "fsync failed: " + errno_message(errno));
  }
}

// Makes a rename or unlink in `dir` durable.
inline void fsync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path d = dir.empty() ? std::filesystem::path(".") : dir;
  FileDescriptor fd(::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) file_error(d, "cannot open directory to fsync it: " + errno_message(errno));
  fsync_or_throw(fd.get(), d);
}

// 16 hex digits, different in every call (temp file names, checkpoint save ids).
inline std::string unique_hex() {
  static std::atomic<std::uint64_t> counter{0};
  std::random_device rd;
  std::uint64_t x = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  x ^= static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  x ^= static_cast<std::uint64_t>(::getpid()) << 40;
  x += 0x9e3779b97f4a7c15ull * (counter.fetch_add(1) + 1);
  x ^= x >> 31;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 29;
  char buf[17];
  static constexpr char digits[] = "0123456789abcdef";
  for (int i = 15; i >= 0; --i, x >>= 4) buf[i] = digits[x & 15u];
  buf[16] = '\0';
  return buf;
}

// The temp files of atomic writes are hidden and marked so that later saves can clean up
// after a crash: ".<name>.tmp-<hex>".
inline bool is_temp_name(std::string_view name) {
  return name.size() > 1 && name.front() == '.' && name.find(".tmp-") != std::string_view::npos;
}

// Called at each durable step of a save with a short description ("temp <file>",
// "renamed <file>", ...). Tests throw from it to simulate a crash at that step: the save
// then stops where it is, without cleaning up, as a killed process would.
using SaveHook = std::function<void(const std::string& event)>;

// Replaces `file` atomically: fill(fd) writes a temp file in the same directory, which is
// fsynced and renamed over `file`; then the directory is fsynced. A crash at any point leaves
// either the old file or the new one (and perhaps a stray temp file), never a mix.
inline void write_file_atomically(const std::filesystem::path& file, const std::function<void(int)>& fill,
                                  const SaveHook& hook = {}) {
  const std::filesystem::path dir = file.parent_path();
  std::filesystem::path tmp;
  FileDescriptor fd;
  for (int attempt = 0; fd.get() < 0; ++attempt) {
    std::string name = file.filename().string();
    name.insert(0, 1, '.');  // (not "." + name: GCC 12 warns falsely on that, PR 105329)
    tmp = dir / (name + ".tmp-" + unique_hex());
    fd = FileDescriptor(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666));
    if (fd.get() < 0 && (errno != EEXIST || attempt > 8))
      file_error(file, "cannot create temp file " + tmp.string() + ": " + errno_message(errno));
  }
  try {
    fill(fd.get());
  } catch (...) {
    fd.reset();
    ::unlink(tmp.c_str());
    throw;
  }
  if (hook) hook("temp " + tmp.filename().string());  // a throw here leaves the temp file, as a crash would
  try {
    fsync_or_throw(fd.get(), tmp);
    fd.close_checked(tmp);
    if (::rename(tmp.c_str(), file.c_str()) != 0)
      file_error(file, "cannot rename " + tmp.string() + " into place: " + errno_message(errno));
  } catch (...) {
    fd.reset();
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_directory(dir);
  if (hook) hook("renamed " + file.filename().string());
}

// The file's JSON text, strictly parsed (see nnx/io/json.hpp); errors name the file.
inline nlohmann::json parse_json_strict(const char* first, const char* last, const std::filesystem::path& file,
                                        const char* what) {
  try {
    return io::parse_json_strict(std::string_view(first, static_cast<std::size_t>(last - first)));
  } catch (const InvalidArgument& e) {
    file_error(file, std::string(what) + " " + e.what());
  }
}

inline std::uint64_t read_u64_le(const std::byte* p) noexcept {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);  // little-endian host (asserted above)
  return v;
}

// A JSON value that must be a non-negative integer; nullopt otherwise.
inline std::optional<std::uint64_t> json_uint(const nlohmann::json& j) {
  if (j.is_number_unsigned()) return j.get<std::uint64_t>();
  if (j.is_number_integer() && j.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(j.get<std::int64_t>());
  return std::nullopt;
}

}  // namespace detail

// A safetensors file mapped into memory and validated. Copies are cheap and share the
// mapping; every member is safe to call from several threads at once.
class SafetensorsFile {
 public:
  struct TensorInfo {
    DType dtype = DType::f32;
    Shape shape;
    std::uint64_t data_begin = 0;  // byte range in the data area (after the header)
    std::uint64_t data_end = 0;
    std::uint64_t nbytes() const noexcept { return data_end - data_begin; }
  };

  // Maps `path` and checks it completely; throws CheckpointError (naming the file and, when
  // one is involved, the tensor) unless all of the following hold:
  //   - the file holds at least the 8-byte header length N, and N <= file size - 8, and
  //     N <= options.max_header_bytes (100 MB by default);
  //   - the header is UTF-8 JSON (trailing spaces allowed), an object without duplicate keys;
  //   - "__metadata__", if present, maps strings to strings;
  //   - every other key is a tensor: {"dtype": one of F32 BF16 F16 I8 U8 I32 U32 I64 U64,
  //     "shape": at most Shape::max_rank non-negative integers whose product times the
  //     element size does not overflow, "data_offsets": [begin, end]} with
  //     begin <= end <= data size and end - begin == that byte count (other keys ignored);
  //   - sorted by offset, the tensors tile the data area exactly: the first starts at 0,
  //     each starts where the previous ends (no overlap, no hole) and the last ends at the end
  //     of the file, as the reference implementation requires.
  static SafetensorsFile open(const std::filesystem::path& path, const SafetensorsReadOptions& options = {}) {
    using detail::file_error;
    auto impl = std::make_shared<Impl>();
    impl->path = path;

    // O_NONBLOCK: opening a FIFO must not hang waiting for a writer (it is rejected below).
    detail::FileDescriptor fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (fd.get() < 0) file_error(path, "cannot open: " + detail::errno_message(errno));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) file_error(path, "cannot stat: " + detail::errno_message(errno));
    if (!S_ISREG(st.st_mode)) file_error(path, "not a regular file");
    const auto file_size = static_cast<std::uint64_t>(st.st_size);
    if (file_size < 8)
      file_error(path, "file is " + std::to_string(file_size) +
                           " bytes, too short for the 8-byte header length (truncated or not a safetensors file)");
    if (file_size > std::numeric_limits<std::size_t>::max()) file_error(path, "file too large to map");

    // Private and writable: pages a caller writes are copied, the file never changes.
    // MAP_NORESERVE: mapping a large model must not reserve swap for every page of it.
    void* addr = ::mmap(nullptr, static_cast<std::size_t>(file_size), PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_NORESERVE, fd.get(), 0);
    if (addr == MAP_FAILED) file_error(path, "mmap failed: " + detail::errno_message(errno));
    impl->mapping = std::make_shared<detail::Mapping>(addr, static_cast<std::size_t>(file_size));
    fd.reset();  // the mapping stays valid without the descriptor

    const std::byte* base = impl->mapping->data();
    const std::uint64_t n = detail::read_u64_le(base);
    if (n > file_size - 8)
      file_error(path, "header length " + std::to_string(n) + " runs past the end of the file (" +
                           std::to_string(file_size) + " bytes; at most " + std::to_string(file_size - 8) +
                           " possible): truncated or corrupt");
    if (n > options.max_header_bytes)
      file_error(path, "header length " + std::to_string(n) + " is above the limit of " +
                           std::to_string(options.max_header_bytes) + " bytes");
    impl->header_bytes = n;
    impl->data_offset = 8 + n;
    const std::uint64_t data_size = file_size - 8 - n;

    const auto* text = reinterpret_cast<const char*>(base + 8);
    nlohmann::json header = detail::parse_json_strict(text, text + n, path, "header");
    if (!header.is_object()) file_error(path, "header must be a JSON object, found " + std::string(header.type_name()));

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& name = it.key();
      const nlohmann::json& v = it.value();
      if (name == "__metadata__") {
        if (!v.is_object()) file_error(path, "\"__metadata__\" must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            file_error(path, "\"__metadata__\" value for \"" + m.key() + "\" must be a string, found " +
                                 std::string(m.value().type_name()));
          impl->metadata.emplace(m.key(), m.value().get<std::string>());
        }
        continue;
      }
      impl->tensors.emplace(name, Entry{parse_entry(path, name, v, data_size), {}});
    }

    // Offset order; ties (zero-size tensors) by name, so names() is deterministic.
    impl->names.reserve(impl->tensors.size());
    for (const auto& [name, info] : impl->tensors) impl->names.push_back(name);
    std::sort(impl->names.begin(), impl->names.end(), [&](const std::string& a, const std::string& b) {
      const TensorInfo& x = impl->tensors.at(a).info;
      const TensorInfo& y = impl->tensors.at(b).info;
      return std::tie(x.data_begin, x.data_end, a) < std::tie(y.data_begin, y.data_end, b);
    });
    std::uint64_t pos = 0;
    const std::string* previous = nullptr;
    for (const std::string& name : impl->names) {
      const TensorInfo& info = impl->tensors.at(name).info;
      if (info.data_begin < pos)
        file_error(path, "tensor '" + name + "' (data_offsets [" + std::to_string(info.data_begin) + ", " +
                             std::to_string(info.data_end) + "]) overlaps tensor '" + *previous + "' (ends at " +
                             std::to_string(pos) + ")");
      if (info.data_begin > pos)
        file_error(path, "tensor '" + name + "' starts at data offset " + std::to_string(info.data_begin) +
                             " but the previous tensor" + (previous ? " '" + *previous + "'" : std::string()) +
                             " ends at " + std::to_string(pos) + ": bytes that belong to no tensor");
      pos = info.data_end;
      previous = &name;
    }
    if (pos != data_size)
      file_error(path, "the data area holds " + std::to_string(data_size) + " bytes but the tensors end at " +
                           std::to_string(pos) + (pos < data_size ? " (trailing bytes)" : ""));
    return SafetensorsFile(std::move(impl));
  }

  const std::filesystem::path& path() const noexcept { return impl_->path; }
  // Tensor names in data-offset order.
  std::span<const std::string> names() const noexcept { return impl_->names; }
  std::size_t size() const noexcept { return impl_->names.size(); }
  bool contains(std::string_view name) const { return impl_->tensors.find(name) != impl_->tensors.end(); }
  // Throws CheckpointError naming the file and the tensor when there is no such tensor.
  const TensorInfo& info(std::string_view name) const { return entry(name).info; }
  // The "__metadata__" map (empty when absent).
  const std::map<std::string, std::string>& metadata() const noexcept { return impl_->metadata; }
  // Bytes of JSON header, and the file offset where tensor data begins (8 + header bytes).
  std::uint64_t header_bytes() const noexcept { return impl_->header_bytes; }
  std::uint64_t data_offset() const noexcept { return impl_->data_offset; }
  std::uint64_t file_size() const noexcept { return impl_->mapping->size(); }

  // The tensor `name`, pointing into the mapping (zero-copy: while one view of a tensor is
  // alive, get() returns views sharing its storage; every view keeps the mapping alive).
  // use_count() counts the views of this tensor only, not of the whole file, so donation
  // (in-place updates by the only holder) works on restored state. Writes stay in this
  // process (copy-on-write pages). Exception: data not aligned to its element size (files
  // from writers that do not align; ours always do) is copied into owned storage, because
  // typed access to misaligned memory is undefined behaviour. Throws CheckpointError naming
  // the file and tensor if absent.
  Tensor get(std::string_view name) const {
    const Entry& e = entry(name);
    const TensorInfo& i = e.info;
    std::byte* p = impl_->mapping->data() + impl_->data_offset + i.data_begin;
    if (reinterpret_cast<std::uintptr_t>(p) % dtype_size(i.dtype) != 0) {
      nnx::detail::ConcreteTensorScope concrete;  // real storage even inside eval_shape
      Tensor t = Tensor::empty(i.shape, i.dtype);
      if (i.nbytes()) std::memcpy(t.raw_data(), p, static_cast<std::size_t>(i.nbytes()));
      return t;
    }
    // One ownership count per tensor, kept weakly here: the file object itself holds no
    // reference, so a restored tensor held once has use_count() == 1.
    std::shared_ptr<std::byte> storage;
    {
      std::lock_guard lock(impl_->views_mutex);
      storage = e.view.lock();
      if (!storage) {
        storage = std::shared_ptr<std::byte>(p, [mapping = impl_->mapping](std::byte*) noexcept {});
        e.view = storage;
      }
    }
    return Tensor::borrow(p, i.shape, i.dtype, std::move(storage));
  }
  // True when get(name) returns a view of the mapping rather than a copy.
  bool is_zero_copy(std::string_view name) const {
    const TensorInfo& i = info(name);
    const std::byte* p = impl_->mapping->data() + impl_->data_offset + i.data_begin;
    return reinterpret_cast<std::uintptr_t>(p) % dtype_size(i.dtype) == 0;
  }

 private:
  struct Entry {
    TensorInfo info;
    mutable std::weak_ptr<std::byte> view;  // the live views' ownership count, if any
  };
  struct Impl {
    std::filesystem::path path;
    std::shared_ptr<detail::Mapping> mapping;
    std::uint64_t header_bytes = 0;
    std::uint64_t data_offset = 0;
    std::map<std::string, Entry, std::less<>> tensors;
    mutable std::mutex views_mutex;
    std::vector<std::string> names;
    std::map<std::string, std::string> metadata;
  };
  explicit SafetensorsFile(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

  const Entry& entry(std::string_view name) const {
    auto it = impl_->tensors.find(name);
    if (it == impl_->tensors.end())
      detail::file_error(impl_->path, "no tensor '" + std::string(name) + "' (the file holds " +
                                          std::to_string(impl_->names.size()) + " tensors)");
    return it->second;
  }

  static TensorInfo parse_entry(const std::filesystem::path& path, const std::string& name, const nlohmann::json& v,
                                std::uint64_t data_size) {
    auto bad = [&](const std::string& what) { detail::file_error(path, "tensor '" + name + "': " + what); };
    if (!v.is_object()) bad("entry must be an object, found " + std::string(v.type_name()));
    TensorInfo info;

    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) bad("missing \"dtype\" string");
    auto dtype = dtype_from_safetensors_name(dt->get<std::string>());
    if (!dtype)
      bad("unsupported dtype \"" + dt->get<std::string>() + "\" (nnxcpp reads F32 BF16 F16 I8 U8 I32 U32 I64 U64)");
    info.dtype = *dtype;

    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) bad("missing \"shape\" array");
    if (sh->size() > Shape::max_rank)
      bad("rank " + std::to_string(sh->size()) + " is above nnxcpp's maximum of " + std::to_string(Shape::max_rank));
    // Count bytes checking every step against int64's range. Each prefix product of the
    // element count is at most the byte count's, so Shape::numel() and Tensor::nbytes()
    // (int64 products in the same order) cannot overflow either once this passes.
    // The element count is checked too: a Shape holds at most 2^53 elements, which one-byte
    // dtypes reach before the byte count overflows.
    std::uint64_t nbytes = dtype_size(info.dtype), numel = 1;
    for (const auto& d : *sh) {
      auto u = detail::json_uint(d);
      if (!u || *u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        bad("shape " + sh->dump() + " must hold non-negative integers");
      if (__builtin_mul_overflow(nbytes, *u, &nbytes) ||
          nbytes > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        bad("shape " + sh->dump() + " overflows a 64-bit byte count");
      numel *= *u;  // <= nbytes: no overflow
      if (numel > static_cast<std::uint64_t>(Shape::max_numel))
        bad("shape " + sh->dump() + " holds more than 2^53 elements (nnxcpp's maximum)");
      info.shape.push_back(static_cast<std::int64_t>(*u));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2) bad("missing \"data_offsets\" [begin, end]");
    auto b = detail::json_uint((*off)[0]);
    auto e = detail::json_uint((*off)[1]);
    if (!b || !e) bad("data_offsets " + off->dump() + " must be non-negative integers");
    if (*b > *e) bad("data_offsets " + off->dump() + " end before they begin");
    if (*e > data_size)
      bad("data_offsets " + off->dump() + " run past the end of the data area (" + std::to_string(data_size) +
          " bytes): truncated or corrupt");
    info.data_begin = *b;
    info.data_end = *e;
    if (*e - *b != nbytes)
      bad("data_offsets " + off->dump() + " hold " + std::to_string(*e - *b) + " bytes but " +
          std::string(safetensors_dtype_name(info.dtype)) + to_string(info.shape) + " needs " +
          std::to_string(nbytes));
    return info;
  }

  std::shared_ptr<const Impl> impl_;
};

namespace detail {

// Writes a safetensors file to `file` atomically (see write_file_atomically).
inline void save_safetensors_impl(const std::filesystem::path& file,
                                  std::span<const std::pair<std::string, Tensor>> tensors,
                                  const std::map<std::string, std::string>& metadata, const SaveHook& hook) {
  // Check everything before creating any file.
  std::set<std::string_view> seen;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__")
      throw InvalidArgument("save_safetensors " + file.string() + ": \"__metadata__\" cannot name a tensor");
    if (!seen.insert(name).second)
      throw InvalidArgument("save_safetensors " + file.string() + ": tensor '" + name + "' given twice");
    if (!t.defined() || t.is_abstract())
      throw InvalidArgument("save_safetensors " + file.string() + ": tensor '" + name + "' is " + describe(t) +
                            " (it has no data)");
  }

  // Largest elements first (stable otherwise): with the data area starting at a multiple of
  // 8, every tensor is then aligned to its element size, so readers can use it in place.
  std::vector<std::size_t> order(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return dtype_size(tensors[a].second.dtype()) > dtype_size(tensors[b].second.dtype());
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::uint64_t pos = 0;
  for (std::size_t i : order) {
    const auto& [name, t] = tensors[i];
    header[name] = {{"dtype", std::string(safetensors_dtype_name(t.dtype()))},
                    {"shape", std::vector<std::int64_t>(t.shape().begin(), t.shape().end())},
                    {"data_offsets", {pos, pos + t.nbytes()}}};
    pos += t.nbytes();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    throw InvalidArgument("save_safetensors " + file.string() + ": a tensor name or metadata string is not UTF-8 (" +
                          e.what() + ")");
  }
  text.resize((text.size() + 7) / 8 * 8, ' ');  // pad with spaces: data starts 8-aligned

  write_file_atomically(
      file,
      [&](int fd) {
        std::byte len[8];
        const std::uint64_t n = text.size();
        std::memcpy(len, &n, sizeof n);
        write_all(fd, len, sizeof len, file);
        write_all(fd, text.data(), text.size(), file);
        for (std::size_t i : order) {
          const Tensor& t = tensors[i].second;
          if (t.nbytes()) write_all(fd, t.raw_data(), t.nbytes(), file);
        }
      },
      hook);
}

}  // namespace detail

// Writes `tensors` (name, tensor) and `metadata` (stored as "__metadata__", omitted when
// empty) to `file`, atomically: the bytes go to a temp file in the same directory, which is
// fsynced and renamed over `file`, then the directory is fsynced. A crash leaves either the
// old file or the new one. Data is contiguous; tensors are laid out in the given order,
// stable-sorted by element size (largest first) so that each is aligned to its element
// size; the header is padded with spaces to a multiple of 8 bytes.
// Throws InvalidArgument for an undefined or abstract tensor, a duplicate name, the name
// "__metadata__", or a name or metadata string that is not UTF-8 (all before touching the
// file system), and CheckpointError naming the file when writing fails.
inline void save_safetensors(const std::filesystem::path& file, std::span<const std::pair<std::string, Tensor>> tensors,
                             const std::map<std::string, std::string>& metadata = {}) {
  detail::save_safetensors_impl(file, tensors, metadata, {});
}

}  // namespace nnx::io
