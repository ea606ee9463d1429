// nnx/kernels/ref/softmax.hpp — portable row-wise softmax (the fallback and the oracle for
// vectorized versions).
//
//   nnx::kernels::ref::softmax_rows(scores, T, S);   // scores[T, S] in place
//
// Order per row: m = max; e_j = exp(x_j - m) (std::exp in float); s = float sum of e_j over
// j ascending; y_j = e_j / s. Relative error per element <= (cols + |x_j - m| + 3) u with
// u = 2^-24 (the test checks it).
//
// Cross-entropy (training) per row with target t: m = max; s = Σ exp(x_j - m) (j ascending);
// loss = (m - x_t) + log(s); the gradient overwrites the logits: (exp(x_j - m) / s - [j = t]) w.
//
// Over column tiles (the vocabulary-tiled loss, whose logits are never whole): each tile's
// maximum m' and sum s' = Σ exp(x_j - m') merge into the row's running (m, s) as
// M = max(m, m'), s = s exp(m - M) + s' exp(m' - M) (std::exp in float); then each tile's
// gradient is (exp(x_j - m) * (w / s) - [j = t] w) with the final (m, s), as above.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace nnx::kernels::ref {

// Softmax of each row of x[rows, cols], in place, max-subtracted (no overflow for any finite
// input). A row whose entries are all -inf (fully masked) becomes all zeros; a NaN anywhere
// in a row makes the whole row NaN. Never throws.
inline void softmax_rows(float* x, std::int64_t rows, std::int64_t cols) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    float m = -std::numeric_limits<float>::infinity();
    bool nan = false;
    for (std::int64_t j = 0; j < cols; ++j) {
      nan |= std::isnan(row[j]);
      m = row[j] > m ? row[j] : m;
    }
    if (nan) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    if (m == -std::numeric_limits<float>::infinity()) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = 0.0f;
      continue;
    }
    float s = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) {
      row[j] = std::exp(row[j] - m);
      s += row[j];
    }
    for (std::int64_t j = 0; j < cols; ++j) row[j] = row[j] / s;
  }
}

// Softmax cross-entropy of rows of logits[rows, cols] against targets[rows], the logits
// overwritten by their gradient scaled by w: row_loss[r] = -log softmax(x_r)[t_r] and
// x_r <- (softmax(x_r) - onehot(t_r)) * w. A row whose target is `ignore` gets loss 0 and a zero
// gradient. Targets other than `ignore` must lie in [0, cols) (callers check). Never throws.
inline void cross_entropy_rows(float* logits, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                               float w, std::int32_t ignore, float* row_loss) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = logits + r * cols;
    const std::int32_t t = targets[r];
    if (t == ignore) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = 0.0f;
      row_loss[r] = 0.0f;
      continue;
    }
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < cols; ++j) m = row[j] > m ? row[j] : m;
    const float xt = row[t];
    float s = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) {
      row[j] = std::exp(row[j] - m);
      s += row[j];
    }
    row_loss[r] = (m - xt) + std::log(s);
    const float ws = w / s;
    for (std::int64_t j = 0; j < cols; ++j) row[j] = row[j] * ws;
    row[t] -= w;
  }
}

namespace detail {

// Merges a tile's (tile_max, tile_sum) into a row's running (max, sum).
inline void merge_exp_sum(float tile_max, float tile_sum, float& max, float& sum) noexcept {
  if (tile_max == -std::numeric_limits<float>::infinity()) return;  // the tile adds nothing
  if (tile_max > max) {
    sum = sum * std::exp(max - tile_max) + tile_sum;
    max = tile_max;
  } else {
    sum += tile_sum * std::exp(tile_max - max);
  }
}

}  // namespace detail

// Pass 1 of the tiled cross-entropy: x[rows, cols] (logits of one column tile, overwritten as
// scratch) merged into row_max[r], row_sum[r] (start at -inf, 0). Rows whose target is
// `ignore` are skipped. Never throws.
inline void cross_entropy_tile_stats(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                     std::int32_t ignore, float* row_max, float* row_sum) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    if (targets[r] == ignore) continue;
    float* row = x + r * cols;
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < cols; ++j) m = row[j] > m ? row[j] : m;
    float s = 0.0f;
    for (std::int64_t j = 0; j < cols; ++j) s += std::exp(row[j] - m);
    detail::merge_exp_sum(m, s, row_max[r], row_sum[r]);
  }
}

// Pass 2: x[rows, cols], the logits of the tile of columns [col0, col0 + cols), overwritten by
// their gradient (exp(x_j - row_max) * (w / row_sum) - [col0 + j = t] w); rows whose target is
// `ignore` become zeros. Never throws.
inline void cross_entropy_tile_grad(float* x, const std::int32_t* targets, std::int64_t rows, std::int64_t cols,
                                    std::int64_t col0, float w, std::int32_t ignore, const float* row_max,
                                    const float* row_sum) noexcept {
  for (std::int64_t r = 0; r < rows; ++r) {
    float* row = x + r * cols;
    const std::int32_t t = targets[r];
    if (t == ignore) {
      for (std::int64_t j = 0; j < cols; ++j) row[j] = 0.0f;
      continue;
    }
    const float m = row_max[r], ws = w / row_sum[r];
    for (std::int64_t j = 0; j < cols; ++j) row[j] = std::exp(row[j] - m) * ws;
    if (t >= col0 && t < col0 + cols) row[t - col0] -= w;
  }
}

}  // namespace nnx::kernels::ref
