// nnx/core/tensor.hpp — Tensor: a dtype, a shape and shared, 64-byte aligned storage.
//
// A Tensor is contiguous and row-major. Copying a Tensor shares its storage (like a
// std::shared_ptr); clone() copies the bytes. Storage is either owned (allocated here) or
// borrowed from an external owner that the tensor keeps alive (an mmap'd file region).
// An *abstract* tensor has a shape and a dtype but no storage: eval_shape builds modules
// of them, and reading their data throws.
//
//   auto x = nnx::Tensor::zeros({2, 3});            // f32 [2, 3], owned
//   x.data<float>()[4] = 1.0f;
//   auto row = x.select(1);                         // [3], shares x's storage
//   auto y = x.reshape({3, 2});                     // [3, 2], shares x's storage
//   auto z = x.clone();                             // independent copy
//   x.use_count();                                  // 3 (x, row, y): donation checks this
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <span>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "nnx/core/dtype.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/shape.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nnx {

// Bytes of tensor storage this process handed out, for tests and memory reports (buffers
// reused from the storage pool count again). Borrowed storage (mmap) is not counted.
struct TensorMemoryStats {
  std::int64_t live_bytes = 0;       // allocated and not yet freed
  std::int64_t peak_live_bytes = 0;  // the most live_bytes reached since start or reset_tensor_memory_peak()
  std::int64_t allocated_bytes = 0;  // allocated since start
  std::int64_t allocations = 0;      // number of allocations since start
};

namespace detail {

struct TensorMemoryCounters {
  std::atomic<std::int64_t> live_bytes{0};
  std::atomic<std::int64_t> peak_live_bytes{0};
  std::atomic<std::int64_t> allocated_bytes{0};
  std::atomic<std::int64_t> allocations{0};
};
inline TensorMemoryCounters& tensor_memory_counters() {
  static TensorMemoryCounters counters;
  return counters;
}

inline constexpr std::size_t tensor_alignment = 64;

// Buffers of at least this size start on a 2 MiB boundary, and the whole 2 MiB pages inside
// them are advised to the kernel as transparent huge pages (Linux: used when THP is enabled
// as "madvise" or "always", the Debian default being "madvise"). Streaming weights and KV
// caches from DRAM is what decoding does, and in 4 KiB pages the hardware prefetcher stops
// at every page: on a Zen 4 EPYC one thread read 28-34 GB/s front to back in huge pages
// against 18-19 in 4 KiB pages. The tail past the last whole 2 MiB page keeps 4 KiB pages,
// so no buffer becomes resident beyond its own bytes.
inline constexpr std::size_t huge_page_bytes = std::size_t{2} << 20;

inline std::align_val_t storage_alignment(std::size_t nbytes) noexcept {
  return std::align_val_t{nbytes >= huge_page_bytes ? huge_page_bytes : tensor_alignment};
}

inline void* allocate_aligned(std::size_t nbytes) {
  void* p = ::operator new(nbytes, storage_alignment(nbytes));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only a hint: where THP is off or unsupported the call fails and the pages stay small.
  if (nbytes >= huge_page_bytes) (void)::madvise(p, nbytes / huge_page_bytes * huge_page_bytes, MADV_HUGEPAGE);
#endif
  return p;
}

inline void free_aligned(void* p, std::size_t nbytes) noexcept { ::operator delete(p, storage_alignment(nbytes)); }

// While positive on a thread, tensor factories build abstract tensors (see eval_shape).
inline thread_local int abstract_tensor_depth = 0;

// Makes tensor factories on this thread return abstract tensors while alive.
class AbstractTensorScope {
 public:
  AbstractTensorScope() noexcept { ++abstract_tensor_depth; }
  ~AbstractTensorScope() { --abstract_tensor_depth; }
  AbstractTensorScope(const AbstractTensorScope&) = delete;
  AbstractTensorScope& operator=(const AbstractTensorScope&) = delete;
};

// A float that keeps a sticky bit for the part of `value` it drops: rounding it once more to
// a format at least two bits narrower (bf16, f16) equals rounding `value` directly.
inline float f32_round_to_odd(double value) noexcept {
  float f = static_cast<float>(value);
  if (std::isnan(value) || static_cast<double>(f) == value) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(value)) f = std::nextafter(f, 0.0f);
  std::uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits |= 1u;
  std::memcpy(&f, &bits, sizeof bits);
  return f;
}

// Makes tensor factories on this thread allocate again while alive, inside an eval_shape
// (for small state that must hold real numbers, such as random-stream counters).
class ConcreteTensorScope {
 public:
  ConcreteTensorScope() noexcept : saved_(abstract_tensor_depth) { abstract_tensor_depth = 0; }
  ~ConcreteTensorScope() { abstract_tensor_depth = saved_; }
  ConcreteTensorScope(const ConcreteTensorScope&) = delete;
  ConcreteTensorScope& operator=(const ConcreteTensorScope&) = delete;

 private:
  int saved_;
};

// Recycles tensor buffers (and the shared_ptr control blocks that own them): a freed
// buffer of up to max_cached_block bytes is kept, up to max_cached_total bytes in all, for
// the next allocation of the same size. A decode step allocates the same shapes every token,
// so after the first one it takes every buffer from here and calls malloc for none.
class StoragePool {
 public:
  static constexpr std::size_t max_cached_block = std::size_t{16} << 20;
  static constexpr std::size_t max_cached_total = std::size_t{256} << 20;

  void* take(std::size_t n) {
    {
      std::lock_guard lock(mutex_);
      auto it = free_.find(n);
      if (it != free_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        cached_ -= n;
        return p;
      }
    }
    return allocate_aligned(n);
  }
  void give(void* p, std::size_t n) noexcept {
    if (n <= max_cached_block) {
      std::lock_guard lock(mutex_);
      if (cached_ + n <= max_cached_total) {
        try {
          free_[n].push_back(p);
          cached_ += n;
          return;
        } catch (...) {  // no memory to remember it: free it instead
        }
      }
    }
    free_aligned(p, n);
  }
  // Frees every cached buffer (memory in use is untouched).
  void release() noexcept {
    std::lock_guard lock(mutex_);
    for (auto& [n, blocks] : free_)
      for (void* p : blocks) free_aligned(p, n);
    free_.clear();
    cached_ = 0;
  }
  std::size_t cached_bytes() {
    std::lock_guard lock(mutex_);
    return cached_;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::vector<void*>> free_;
  std::size_t cached_ = 0;
};

inline StoragePool& storage_pool() {
  static StoragePool* pool = new StoragePool;  // lives as long as any tensor may
  return *pool;
}

// Allocates shared_ptr control blocks from the pool as well.
template <class T>
struct PoolAllocator {
  using value_type = T;
  PoolAllocator() = default;
  template <class U>
  PoolAllocator(const PoolAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(storage_pool().take(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { storage_pool().give(p, n * sizeof(T)); }
  template <class U>
  friend bool operator==(const PoolAllocator&, const PoolAllocator<U>&) noexcept {
    return true;
  }
};

inline std::shared_ptr<std::byte> allocate_storage(std::size_t nbytes) {
  if (nbytes == 0) return nullptr;
  auto* p = static_cast<std::byte*>(storage_pool().take(nbytes));
  auto& c = tensor_memory_counters();
  const std::int64_t live = c.live_bytes += static_cast<std::int64_t>(nbytes);
  for (std::int64_t peak = c.peak_live_bytes.load();
       live > peak && !c.peak_live_bytes.compare_exchange_weak(peak, live);) {
  }
  c.allocated_bytes += static_cast<std::int64_t>(nbytes);
  c.allocations += 1;
  auto release = [nbytes](std::byte* q) {
    storage_pool().give(q, nbytes);
    tensor_memory_counters().live_bytes -= static_cast<std::int64_t>(nbytes);
  };
  try {
    return std::shared_ptr<std::byte>(p, release, PoolAllocator<std::byte>());
  } catch (...) {
    release(p);
    throw;
  }
}

}  // namespace detail

// Returns the tensor buffers the storage pool keeps for reuse to the system (buffers in use
// are untouched). The pool holds at most 256 MiB of buffers of at most 16 MiB each.
inline void release_cached_tensor_memory() noexcept { detail::storage_pool().release(); }

inline TensorMemoryStats tensor_memory_stats() {
  auto& c = detail::tensor_memory_counters();
  return {c.live_bytes.load(), c.peak_live_bytes.load(), c.allocated_bytes.load(), c.allocations.load()};
}

// Starts a new peak_live_bytes measurement from the bytes live now.
inline void reset_tensor_memory_peak() noexcept {
  auto& c = detail::tensor_memory_counters();
  c.peak_live_bytes = c.live_bytes.load();
}

class Tensor;
std::string describe(const Tensor& t);

class Tensor {
 public:
  // An undefined tensor: no dtype, no shape, no storage. defined() is false.
  Tensor() = default;
  Tensor(const Tensor&) = default;
  Tensor& operator=(const Tensor&) = default;
  // A moved-from tensor is undefined (never a defined tensor without its storage).
  Tensor(Tensor&& o) noexcept
      : storage_(std::move(o.storage_)),
        offset_(o.offset_),
        shape_(o.shape_),
        dtype_(o.dtype_),
        defined_(o.defined_),
        abstract_(o.abstract_) {
    o.reset();
  }
  Tensor& operator=(Tensor&& o) noexcept {
    if (this != &o) {
      storage_ = std::move(o.storage_);
      offset_ = o.offset_;
      shape_ = o.shape_;
      dtype_ = o.dtype_;
      defined_ = o.defined_;
      abstract_ = o.abstract_;
      o.reset();
    }
    return *this;
  }

  // ---- factories (abstract inside eval_shape) -------------------------------------------
  // Uninitialized owned storage.
  static Tensor empty(const Shape& shape, DType dtype = DType::f32) {
    Tensor t = abstract(shape, dtype);
    if (detail::abstract_tensor_depth > 0) return t;
    t.storage_ = detail::allocate_storage(t.nbytes());
    t.abstract_ = false;
    return t;
  }
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32) {
    Tensor t = empty(shape, dtype);
    if (!t.abstract_ && t.nbytes()) std::memset(t.storage_.get(), 0, t.nbytes());
    return t;
  }
  // Every element set to `value` converted to dtype (floats rounded to nearest even).
  static Tensor full(const Shape& shape, double value, DType dtype = DType::f32) {
    Tensor t = empty(shape, dtype);
    if (!t.abstract_) t.fill(value);
    return t;
  }
  // A copy of `values` with the given shape. Throws ShapeError when the counts differ.
  template <class T>
  static Tensor from_vector(std::span<const T> values, const Shape& shape) {
    static_assert(is_dtype_type<T>, "Tensor::from_vector: T must be one of the nnx dtype types");
    if (static_cast<std::int64_t>(values.size()) != shape.numel())
      throw ShapeError("Tensor::from_vector: " + std::to_string(values.size()) + " values for shape " +
                       to_string(shape) + " (" + std::to_string(shape.numel()) + " elements)");
    Tensor t = empty(shape, dtype_of<T>);
    if (!t.abstract_ && t.nbytes()) std::memcpy(t.storage_.get(), values.data(), t.nbytes());
    return t;
  }
  template <class T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape) {
    return from_vector(std::span<const T>(values), shape);
  }
  template <class T>
  static Tensor from_vector(const std::vector<T>& values) {
    return from_vector(std::span<const T>(values), Shape{static_cast<std::int64_t>(values.size())});
  }
  // Shape and dtype only; reading its data throws.
  static Tensor abstract(const Shape& shape, DType dtype = DType::f32) {
    Tensor t;
    t.shape_ = shape;
    t.dtype_ = dtype;
    t.defined_ = true;
    t.abstract_ = true;
    return t;
  }
  // A view of memory owned elsewhere; `owner` is kept alive as long as any tensor shares it.
  // `data` must hold shape.numel() * dtype_size(dtype) bytes.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, std::shared_ptr<const void> owner) {
    Tensor t = abstract(shape, dtype);
    t.storage_ = std::shared_ptr<std::byte>(std::move(owner), static_cast<std::byte*>(data));
    t.abstract_ = false;
    return t;
  }

  // ---- description ----------------------------------------------------------------------
  bool defined() const noexcept { return defined_; }
  bool is_abstract() const noexcept { return abstract_; }
  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  std::size_t rank() const noexcept { return shape_.rank(); }
  // Size of `axis`; negative axes count from the end.
  std::int64_t dim(std::int64_t axis) const {
    const auto r = static_cast<std::int64_t>(rank());
    if (axis < -r || axis >= r)
      throw ShapeError("Tensor::dim: axis " + std::to_string(axis) + " out of range for shape " + to_string(shape_));
    return shape_[static_cast<std::size_t>(axis < 0 ? axis + r : axis)];
  }
  std::int64_t numel() const noexcept { return defined_ ? shape_.numel() : 0; }
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  // ---- data access (throws on undefined or abstract tensors and on a dtype mismatch) -----
  std::byte* raw_data() {
    check_readable("raw_data");
    return base();
  }
  const std::byte* raw_data() const {
    check_readable("raw_data");
    return base();
  }
  template <class T>
  T* data() {
    check_access<T>("data");
    return reinterpret_cast<T*>(base());
  }
  template <class T>
  const T* data() const {
    check_access<T>("data");
    return reinterpret_cast<const T*>(base());
  }
  template <class T>
  std::span<T> span() {
    return {data<T>(), static_cast<std::size_t>(numel())};
  }
  template <class T>
  std::span<const T> span() const {
    return {data<T>(), static_cast<std::size_t>(numel())};
  }
  template <class T>
  std::vector<T> to_vector() const {
    auto s = span<T>();
    return {s.begin(), s.end()};
  }
  // The single element of a one-element tensor.
  template <class T>
  T item() const {
    if (numel() != 1) throw ShapeError("Tensor::item: tensor of shape " + to_string(shape_) + " is not one element");
    return *data<T>();
  }

  // ---- zero-copy views ------------------------------------------------------------------
  // Rows [begin, end) along axis 0, sharing storage.
  Tensor slice(std::int64_t begin, std::int64_t end) const {
    if (rank() == 0) throw ShapeError("Tensor::slice: cannot slice a scalar");
    if (begin < 0 || end < begin || end > shape_[0])
      throw ShapeError("Tensor::slice: range [" + std::to_string(begin) + ", " + std::to_string(end) +
                       ") outside axis 0 of shape " + to_string(shape_));
    Tensor t = *this;
    t.offset_ += static_cast<std::size_t>(begin) * row_bytes();
    t.shape_[0] = end - begin;
    return t;
  }
  // Row `index` along axis 0 (the axis removed), sharing storage.
  Tensor select(std::int64_t index) const {
    if (rank() == 0) throw ShapeError("Tensor::select: cannot index a scalar");
    if (index < 0 || index >= shape_[0])
      throw ShapeError("Tensor::select: index " + std::to_string(index) + " outside axis 0 of shape " +
                       to_string(shape_));
    Tensor t = *this;
    t.offset_ += static_cast<std::size_t>(index) * row_bytes();
    t.shape_ = Shape(shape_.dims().subspan(1));
    return t;
  }
  // The same elements with another shape, sharing storage. One dimension may be -1.
  Tensor reshape(std::initializer_list<std::int64_t> dims) const {
    return reshape(std::span<const std::int64_t>(dims.begin(), dims.size()));
  }
  Tensor reshape(std::span<const std::int64_t> dims) const {
    std::int64_t known = 1;
    int inferred = -1;
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == -1 && inferred < 0) {
        inferred = static_cast<int>(i);
      } else if (dims[i] < 0) {
        throw ShapeError("Tensor::reshape: invalid dimension " + std::to_string(dims[i]));
      } else {
        known *= dims[i];
      }
    }
    if (dims.size() > Shape::max_rank)
      throw ShapeError("Tensor::reshape: rank " + std::to_string(dims.size()) + " above the maximum of " +
                       std::to_string(Shape::max_rank));
    std::array<std::int64_t, Shape::max_rank> out{};
    std::copy(dims.begin(), dims.end(), out.begin());
    if (inferred >= 0) {
      if (known == 0 || numel() % known != 0)
        throw ShapeError("Tensor::reshape: cannot infer -1 for " + std::to_string(numel()) + " elements of shape " +
                         to_string(shape_));
      out[static_cast<std::size_t>(inferred)] = numel() / known;
    }
    Shape target{std::span<const std::int64_t>(out.data(), dims.size())};
    if (target.numel() != numel())
      throw ShapeError("Tensor::reshape: shape " + to_string(shape_) + " (" + std::to_string(numel()) +
                       " elements) cannot become " + to_string(target));
    Tensor t = *this;
    t.shape_ = target;
    return t;
  }
  Tensor reshape(const Shape& shape) const { return reshape(shape.dims()); }

  // ---- copies and conversions -----------------------------------------------------------
  // A deep copy in fresh storage (abstract stays abstract).
  Tensor clone() const {
    if (!defined_) return {};
    Tensor t = abstract_ ? abstract(shape_, dtype_) : empty(shape_, dtype_);
    if (!t.abstract_ && nbytes()) std::memcpy(t.base(), base(), nbytes());
    return t;
  }
  // A copy converted to `dtype` (see nnx::convert for which conversions exist).
  Tensor astype(DType dtype) const {
    if (!defined_) throw InvalidArgument("Tensor::astype: undefined tensor");
    if (abstract_) return abstract(shape_, dtype);
    Tensor t = empty(shape_, dtype);
    if (!t.abstract_ && numel()) convert(base(), dtype_, t.base(), dtype, static_cast<std::size_t>(numel()));
    return t;
  }
  // Sets every element to `value` converted to this tensor's dtype.
  Tensor& fill(double value) {
    check_readable("fill");
    const std::size_t n = static_cast<std::size_t>(numel());
    if (n == 0) return *this;
    const std::size_t es = dtype_size(dtype_);
    std::byte first[8];
    store_scalar(value, first);
    for (std::size_t i = 0; i < n; ++i) std::memcpy(base() + i * es, first, es);
    return *this;
  }
  // Copies the bytes of `src` into this tensor's storage (same shape and dtype).
  void copy_from(const Tensor& src) {
    if (src.dtype_ != dtype_)
      throw DTypeError("Tensor::copy_from: source " + describe(src) + " into " + describe(*this));
    if (src.shape_ != shape_)
      throw ShapeError("Tensor::copy_from: source " + describe(src) + " into " + describe(*this));
    check_readable("copy_from");
    if (nbytes()) std::memmove(base(), src.raw_data(), nbytes());
  }

  // ---- sharing --------------------------------------------------------------------------
  // Number of tensors sharing this storage (0 for abstract or empty tensors). A function that
  // holds the only reference (1) may write in place: that is donation.
  long use_count() const noexcept { return storage_.use_count(); }
  bool shares_storage_with(const Tensor& other) const noexcept {
    if (!storage_ || !other.storage_) return false;
    // Borrowed memory without an owner has no control block to compare: compare addresses.
    if (storage_.use_count() == 0 || other.storage_.use_count() == 0) return storage_.get() == other.storage_.get();
    return !storage_.owner_before(other.storage_) && !other.storage_.owner_before(storage_);
  }


 private:
  void reset() noexcept {
    storage_.reset();
    offset_ = 0;
    shape_ = Shape();
    dtype_ = DType::f32;
    defined_ = false;
    abstract_ = false;
  }
  std::byte* base() const noexcept { return storage_ ? storage_.get() + offset_ : nullptr; }
  std::size_t row_bytes() const noexcept {
    std::int64_t inner = 1;
    for (std::size_t i = 1; i < rank(); ++i) inner *= shape_[i];
    return static_cast<std::size_t>(inner) * dtype_size(dtype_);
  }
  void check_readable(const char* what) const {
    if (!defined_) throw InvalidArgument(std::string("Tensor::") + what + ": undefined tensor");
    if (abstract_)
      throw InvalidArgument(std::string("Tensor::") + what + ": tensor " + describe(*this) +
                            " is abstract (shape only, from eval_shape); it has no data");
  }
  template <class T>
  void check_access(const char* what) const {
    static_assert(is_dtype_type<std::remove_const_t<T>>, "Tensor::data<T>: T must be one of the nnx dtype types");
    check_readable(what);
    if (dtype_of<std::remove_const_t<T>> != dtype_)
      throw DTypeError(std::string("Tensor::") + what + ": requested " +
                       std::string(dtype_name(dtype_of<std::remove_const_t<T>>)) + " from a " + describe(*this) +
                       " tensor");
  }
  void store_scalar(double value, std::byte* out) const {
    auto put = [out](auto v) { std::memcpy(out, &v, sizeof v); };
    switch (dtype_) {
      case DType::f32: put(static_cast<float>(value)); break;
      // Via f32 rounded to odd, so the 16-bit result is rounded once from the double.
      case DType::bf16: put(to_bf16(detail::f32_round_to_odd(value))); break;
      case DType::f16: put(to_f16(detail::f32_round_to_odd(value))); break;
      case DType::i8: put(checked_int<std::int8_t>(value)); break;
      case DType::u8: put(checked_int<std::uint8_t>(value)); break;
      case DType::i32: put(checked_int<std::int32_t>(value)); break;
      case DType::u32: put(checked_int<std::uint32_t>(value)); break;
      case DType::i64: put(checked_int<std::int64_t>(value)); break;
      case DType::u64: put(checked_int<std::uint64_t>(value)); break;
    }
  }
  template <class I>
  I checked_int(double value) const {
    // Bounds are powers of two (exact in double); the test is written so that NaN fails it.
    const double upper = std::ldexp(1.0, std::numeric_limits<I>::digits);  // max + 1
    if (!(std::trunc(value) == value && value >= static_cast<double>(std::numeric_limits<I>::min()) && value < upper))
      throw DTypeError("Tensor::fill: value " + std::to_string(value) + " is not representable in " +
                       std::string(dtype_name(dtype_)));
    return static_cast<I>(value);
  }

  std::shared_ptr<std::byte> storage_;
  std::size_t offset_ = 0;
  Shape shape_;
  DType dtype_ = DType::f32;
  bool defined_ = false;
  bool abstract_ = false;
};

// "f32[2, 3]" (with " abstract" for abstract tensors, "undefined" for undefined ones).
inline std::string describe(const Tensor& t) {
  if (!t.defined()) return "undefined";
  return std::string(dtype_name(t.dtype())) + to_string(t.shape()) + (t.is_abstract() ? " abstract" : "");
}

// The transpose [cols, rows] of a rank-2 floating tensor [rows, cols], in fresh storage and
// converted to `dtype` (f32, bf16 or f16; exact when it is at least as wide as t's): how a
// [in, out] kernel and an nn.Linear [out, in] weight turn into each other. Abstract in,
// abstract out.
inline Tensor transpose_2d(const Tensor& t, DType dtype) {
  if (!t.defined() || t.rank() != 2 || !is_floating(t.dtype()) || !is_floating(dtype))
    throw InvalidArgument("transpose_2d: expected a rank-2 floating tensor and a floating dtype, found " + describe(t) +
                          " to " + std::string(dtype_name(dtype)));
  const std::int64_t rows = t.dim(0), cols = t.dim(1);
  if (t.is_abstract()) return Tensor::abstract({cols, rows}, dtype);
  const Tensor f = t.dtype() == DType::f32 ? t : t.astype(DType::f32);
  Tensor out = Tensor::empty({cols, rows});
  const float* in = f.data<float>();
  float* o = out.data<float>();
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) o[c * rows + r] = in[r * cols + c];
  return dtype == DType::f32 ? out : out.astype(dtype);
}

// Same dtype, same shape and the same bytes (abstract tensors compare by dtype and shape).
inline bool equal(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  if (a.dtype() != b.dtype() || a.shape() != b.shape() || a.is_abstract() != b.is_abstract()) return false;
  if (a.is_abstract() || a.nbytes() == 0) return true;
  return std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

}  // namespace nnx
