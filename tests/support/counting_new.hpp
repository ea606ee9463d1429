// Replaced global allocation functions that count heap use on request (tests only).
//
// Include this header in exactly one translation unit of a test executable: it defines the
// global operator new/delete family for the whole executable. They forward to malloc /
// aligned_alloc / free (every form, so sanitizers see matching pairs) and count only inside
// heap_use(fn), so other tests are unaffected.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace counting_new {

inline std::atomic<bool> g_counting{false};
inline std::atomic<std::int64_t> g_bytes{0};
inline std::atomic<std::int64_t> g_count{0};

inline void note(std::size_t n) noexcept {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_bytes.fetch_add(static_cast<std::int64_t>(n), std::memory_order_relaxed);
    g_count.fetch_add(1, std::memory_order_relaxed);
  }
}

inline void* plain_alloc(std::size_t n) noexcept {
  note(n);
  return std::malloc(n == 0 ? 1 : n);
}

inline void* aligned_alloc_(std::size_t n, std::align_val_t al) noexcept {
  note(n);
  const auto a = static_cast<std::size_t>(al);
  const std::size_t rounded = ((n == 0 ? 1 : n) + a - 1) / a * a;  // aligned_alloc wants a multiple
  return std::aligned_alloc(a < sizeof(void*) ? sizeof(void*) : a, rounded);
}

// Heap bytes requested through operator new while fn runs.
template <class Fn>
std::pair<std::int64_t, std::int64_t> heap_use(Fn&& fn) {
  g_bytes = 0;
  g_count = 0;
  g_counting = true;
  try {
    fn();
  } catch (...) {
    g_counting = false;
    throw;
  }
  g_counting = false;
  return {g_bytes.load(), g_count.load()};
}

}  // namespace counting_new

// ---- replaced global allocation functions -------------------------------------------------
// Every operator new below returns malloc/aligned_alloc memory, so free() is the matching
// deallocation; GCC cannot see that through the replacement and would warn.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

void* operator new(std::size_t n) {
  if (void* p = counting_new::plain_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  if (void* p = counting_new::plain_alloc(n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counting_new::plain_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counting_new::plain_alloc(n); }
void* operator new(std::size_t n, std::align_val_t al) {
  if (void* p = counting_new::aligned_alloc_(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t al) {
  if (void* p = counting_new::aligned_alloc_(n, al)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counting_new::aligned_alloc_(n, al);
}
void* operator new[](std::size_t n, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counting_new::aligned_alloc_(n, al);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
