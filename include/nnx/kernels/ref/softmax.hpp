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

}  // namespace nnx::kernels::ref
