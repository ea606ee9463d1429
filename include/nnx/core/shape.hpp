// nnx/core/shape.hpp — Shape, the dimensions of a tensor.
//
// A Shape holds up to Shape::max_rank dimensions inline, so copying a tensor or a leaf
// specification never allocates (split and merge copy many of them):
//
//   nnx::Shape s{4, 16, 64};   // rank 3
//   s.numel();                 // 4096
//   nnx::to_string(s);         // "[4, 16, 64]"
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>

#include "nnx/core/error.hpp"

namespace nnx {

// a * b, or nullopt when the product overflows int64 (sizes read from files and configs are
// multiplied through this, never unchecked).
inline std::optional<std::int64_t> checked_mul(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

class Shape {
 public:
  static constexpr std::size_t max_rank = 8;
  // The most elements a shape may hold: 2^53, so that its size in bytes (8 bytes an element
  // at most) fits in int64 and every count is exact as a double.
  static constexpr std::int64_t max_numel = std::int64_t{1} << 53;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims) { assign(dims.begin(), dims.size()); }
  explicit Shape(std::span<const std::int64_t> dims) { assign(dims.data(), dims.size()); }

  std::size_t rank() const noexcept { return rank_; }
  std::size_t size() const noexcept { return rank_; }
  bool empty() const noexcept { return rank_ == 0; }
  std::int64_t operator[](std::size_t axis) const noexcept { return dims_[axis]; }
  std::int64_t& operator[](std::size_t axis) noexcept { return dims_[axis]; }
  const std::int64_t* begin() const noexcept { return dims_.data(); }
  const std::int64_t* end() const noexcept { return dims_.data() + rank_; }
  std::span<const std::int64_t> dims() const noexcept { return {dims_.data(), rank_}; }

  // Product of the dimensions; 1 for a scalar (rank 0).
  std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }

  void push_back(std::int64_t d) {
    if (rank_ == max_rank) throw ShapeError("Shape: rank above the maximum of " + std::to_string(max_rank));
    check_dim(d);
    dims_[rank_++] = d;
    check_numel();
  }

  friend bool operator==(const Shape& a, const Shape& b) noexcept {
    return a.rank_ == b.rank_ && std::equal(a.begin(), a.end(), b.begin());
  }

 private:
  void assign(const std::int64_t* d, std::size_t n) {
    if (n > max_rank)
      throw ShapeError("Shape: rank " + std::to_string(n) + " above the maximum of " + std::to_string(max_rank));
    for (std::size_t i = 0; i < n; ++i) check_dim(d[i]);
    std::copy(d, d + n, dims_.begin());
    rank_ = static_cast<std::uint8_t>(n);
    check_numel();
  }
  static void check_dim(std::int64_t d) {
    if (d < 0) throw ShapeError("Shape: negative dimension " + std::to_string(d));
  }
  void check_numel() const {
    std::int64_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) {
      const auto next = checked_mul(n, dims_[i]);
      if (!next || *next > max_numel) {
        std::string dims;
        for (std::size_t k = 0; k < rank_; ++k) dims += (k ? ", " : "") + std::to_string(dims_[k]);
        throw ShapeError("Shape: [" + dims + "] holds more than 2^53 elements");
      }
      n = *next;
    }
  }

  std::array<std::int64_t, max_rank> dims_{};
  std::uint8_t rank_ = 0;
};

inline std::string to_string(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.rank(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

}  // namespace nnx
