// nnx/engine/sampling.hpp — drawing the next token from a row of logits (MaxText's
// composite sampling: top-k, then top-p, then temperature).
//
// sample_token is a pure function of (logits, params, key): it uses one uniform number
// derived from the key with Philox and no global state, so the same request gives the same
// token on every thread count and run. It never sorts the vocabulary (a sort of 50k
// tokens costs ~3 ms): one pass finds the maximum, one pass of a vectorized exp gives the
// log-normalizer (needed for the returned log-probability anyway), and non-greedy params
// add work linear in the tokens that can matter (a heap for top-k, a probability floor and
// a weighted quickselect for top-p and the draw). Over 50k tokens on one core: greedy
// ~0.07 ms, top-k 40 ~0.1 ms, top-p 0.9 from ~0.08 ms (a peaked row) to ~0.55 ms (a flat
// row whose nucleus holds 30k tokens).
//
//   nnx::SamplingParams p{.temperature = 0.8, .top_p = 0.9};
//   nnx::SampledToken t = nnx::sample_token(row, vocab, p, nnx::fold_in(request_key, step));
//   // t.token in [0, vocab), t.log_prob = log_softmax(row)[t.token]
//
// Thread safety: sample_token may run on many threads at once; each thread keeps its own
// scratch buffers (they grow to the largest vocabulary seen and are then reused, so the
// decode loop does not allocate).
#pragma once

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/kernels/sampling.hpp"

namespace nnx {

// How to pick the next token. The defaults are greedy decoding; a field at its default
// applies no cut. Stages compose in MaxText's order: keep the top_k largest logits, then
// the smallest set of those whose probability (at temperature 1) reaches top_p, then draw
// from softmax(logits / temperature) over what is left.
struct SamplingParams {
  double temperature = 0.0;  // 0: greedy (argmax)
  std::int64_t top_k = 0;    // 0: no top-k cut; a k above the vocabulary cuts nothing
  double top_p = 1.0;        // 1: no nucleus cut

  // Throws InvalidArgument naming the bad value: temperature negative or not finite, top_k
  // negative, top_p outside (0, 1] or NaN.
  void validate() const;
  // Temperature 0 or top_k 1: the draw is the argmax whatever the key. So is a temperature
  // so small (subnormal) that 1/temperature overflows: that is the limit of softmax(l / t) as
  // t -> 0, and dividing by it would turn every weight into NaN.
  bool is_greedy() const { return temperature == 0.0 || top_k == 1 || !std::isfinite(1.0 / temperature); }
  static SamplingParams greedy() { return {}; }
};

struct SampledToken {
  std::int32_t token = 0;
  // log_softmax(logits)[token] over the whole vocabulary, before temperature and cuts: the
  // model's own log-probability of the token, as MaxText and JetStream report it.
  float log_prob = 0.0f;
};

// One token from one row of logits.
//   logits: [vocab] floats; -inf marks an impossible token; +inf tokens, when present, share
//           all the probability equally.
//   key:    the draw's randomness; derive one per (request, step), e.g. fold_in(key, step).
// Greedy params return the argmax (ties to the lowest index). Otherwise the draw walks the
// kept tokens by descending probability, ties by index, and returns the first whose
// cumulative tempered probability exceeds the key's uniform number (sampling_uniform).
// Reproducible: the same arguments give the same token on any thread count. Across CPUs
// with and without AVX2 the exp differs in the last bits, which can change a token only if
// the uniform lands within rounding of a boundary of the cumulative distribution.
// Throws InvalidArgument on bad params, vocab <= 0 or above 2^31 - 1, a null row, a NaN
// logit (naming its index), or a row that is all -inf.
SampledToken sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params, RngKey key);

namespace detail {

// The uniform number in [0, 1) that sample_token draws with for `key`: 53 random bits, so
// every double in the grid k * 2^-53 is equally likely.
inline double sampling_uniform(RngKey key) noexcept {
  const PhiloxBlock b = philox4x32_10({0, 0, 0, domain_sample_token}, key);
  const std::uint64_t bits = (std::uint64_t{b[0]} << 21) | (b[1] >> 11);
  return static_cast<double>(bits) * 0x1.0p-53;
}

inline std::string format_sampling_value(double v) {
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc{} ? std::string(buf, end) : std::string("?");
}

// The rest serves sample_token alone.
namespace sampling {

// ---- exp over a vocabulary row: nnx/kernels/sampling.hpp ---------------------------------
// The scalar exp, for the few weights computed one at a time: libm's, which is as fast as a
// polynomial when not vectorized.
inline double exp_nonpositive(double d) noexcept { return std::exp(d); }

inline float max_logit(const float* x, std::int64_t n, bool& has_nan) noexcept {
  return kernels::max_logit(x, n, has_nan);
}

template <bool Store>
double sum_exp_shifted(const float* x, std::int64_t n, double m, double* out) noexcept {
  return kernels::sum_exp_shifted(x, n, m, Store ? out : nullptr);
}

inline double exp_in_place(double* d, std::size_t n) noexcept { return kernels::exp_in_place(d, n); }

// ---- candidates and the weighted selection --------------------------------------------

// A candidate token as one integer whose ascending order is the order of the draw:
// logit descending, then index ascending. Comparing one integer keeps partitioning cheap
// and makes the order total, so every selection below has exactly one answer.
// Branch-free: the sign of a logit is as unpredictable as the logit.
inline std::uint64_t order_key(float logit, std::int64_t index) noexcept {
  const std::uint32_t u = std::bit_cast<std::uint32_t>(logit + 0.0f);  // -0 + 0 = +0: they tie, as floats do
  const std::uint32_t flip = static_cast<std::uint32_t>(static_cast<std::int32_t>(u) >> 31) | 0x80000000u;
  return (std::uint64_t{~(u ^ flip)} << 32) | static_cast<std::uint32_t>(index);
}

inline float logit_of_order_key(std::uint64_t key) noexcept {
  const std::uint32_t ascending = ~static_cast<std::uint32_t>(key >> 32);
  const std::uint32_t u = (ascending & 0x80000000u) ? (ascending & 0x7FFFFFFFu) : ~ascending;
  return std::bit_cast<float>(u);
}

inline std::int32_t index_of_order_key(std::uint64_t key) noexcept {
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(key));
}

struct Candidate {
  std::uint64_t key;  // order_key
  double weight;      // unnormalized probability at the current stage
};

// Below this many candidates a sort plus a linear walk is cheaper than selecting.
inline constexpr std::size_t leaf_size = 48;
// A top-k up to this size is kept in a heap during the pass over the logits; above it the
// candidates are selected with select_by_rank.
inline constexpr std::int64_t heap_top_k_max = 1024;

// Sum of c[0, n).weight in four interleaved partial sums: one running sum would wait on
// each add's latency.
inline double sum_weights(const Candidate* c, std::size_t n) noexcept {
  double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += c[i].weight;
    s1 += c[i + 1].weight;
    s2 += c[i + 2].weight;
    s3 += c[i + 3].weight;
  }
  for (; i < n; ++i) s0 += c[i].weight;
  return (s0 + s1) + (s2 + s3);
}

// Partitions c[lo, hi) (hi - lo >= 3) around a median-of-three pivot: on return the
// pivot is at the returned position p, c[lo, p) rank before it and c[p + 1, hi) after it.
// Branch-free, through `tmp` (hi - lo slots): which side an element goes to is a coin flip
// the branch predictor would lose half the time. Each element is written to both ends of
// tmp and only the end that advances keeps it.
inline std::size_t partition_around_pivot(Candidate* c, std::size_t lo, std::size_t hi, Candidate* tmp) noexcept {
  std::size_t a = lo, b = lo + (hi - lo) / 2;
  const std::size_t d = hi - 1;
  if (c[b].key < c[a].key) std::swap(a, b);
  if (c[d].key < c[b].key) b = (c[d].key < c[a].key) ? a : d;
  std::swap(c[b], c[hi - 1]);
  const Candidate pivot = c[hi - 1];
  const std::size_t m = hi - 1 - lo;
  std::size_t left_end = 0, right_end = m - 1;
  for (std::size_t i = lo; i < hi - 1; ++i) {
    const Candidate x = c[i];
    const bool smaller = x.key < pivot.key;
    tmp[left_end] = x;
    tmp[right_end] = x;
    left_end += smaller;
    right_end -= !smaller;
  }
  const std::size_t p = lo + left_end;
  std::copy(tmp, tmp + left_end, c + lo);
  c[p] = pivot;
  std::copy(tmp + left_end, tmp + m, c + p + 1);
  return p;
}

inline void sort_by_key(Candidate* first, Candidate* last) {
  std::sort(first, last, [](const Candidate& x, const Candidate& y) { return x.key < y.key; });
}

// Reorders c[0, n) so that c[0, k) are the k candidates of lowest key (in no particular
// order): top-k for k above heap_top_k_max. Requires 0 < k < n; `tmp` holds n.
inline void select_by_rank(Candidate* c, std::size_t n, std::size_t k, Candidate* tmp) noexcept {
  std::size_t lo = 0, hi = n;
  int budget = 2 * static_cast<int>(std::bit_width(n)) + 8;  // see select_by_mass
  while (hi - lo > leaf_size && budget-- > 0) {
    const std::size_t p = partition_around_pivot(c, lo, hi, tmp);
    if (p == k || p + 1 == k) return;
    if (p > k)
      hi = p;
    else
      lo = p + 1;
  }
  sort_by_key(c + lo, c + hi);
}

// The position, in ascending key order, of the first candidate whose cumulative weight
// reaches `target` (>= target, or > target when Strict): an inverse-CDF walk done as a
// weighted quickselect, so it costs O(n) expected instead of a sort. On return c[0, j) are
// exactly the candidates before the answer j (in no particular order) and the rest follow
// it. If rounding leaves the total short of the target, the answer is the last candidate.
// Partial sums are taken in partition order, which depends only on the input, so the
// answer is reproducible; it can differ from a left-to-right walk only when the target is
// within rounding of a cumulative sum. `tmp` holds n candidates. Requires n > 0.
template <bool Strict>
std::size_t select_by_mass(Candidate* c, std::size_t n, double target, Candidate* tmp) noexcept {
  const auto reaches = [target](double cum) { return Strict ? cum > target : cum >= target; };
  std::size_t lo = 0, hi = n;
  double before = 0.0;  // weight of c[0, lo)
  // Median-of-three pivots make quadratic work unlikely; the budget makes it impossible.
  int budget = 2 * static_cast<int>(std::bit_width(n)) + 8;
  while (hi - lo > leaf_size && budget-- > 0) {
    const std::size_t p = partition_around_pivot(c, lo, hi, tmp);
    const double left = sum_weights(c + lo, p - lo);
    if (reaches(before + left)) {
      hi = p;
    } else if (reaches(before + left + c[p].weight)) {
      return p;
    } else {
      before += left + c[p].weight;
      lo = p + 1;
    }
  }
  sort_by_key(c + lo, c + hi);
  for (std::size_t i = lo; i < hi; ++i) {
    before += c[i].weight;
    if (reaches(before)) return i;
  }
  return n - 1;
}

struct Scratch {
  std::vector<double> weights;  // exp(x - max) of every token
  std::vector<Candidate> candidates, partition;
  std::vector<std::uint64_t> heap;
  std::vector<double> tempered;
  std::vector<float> remapped;  // only for rows holding +inf
};

inline Scratch& thread_scratch() {
  thread_local Scratch scratch;
  return scratch;
}

template <class T>
T* buffer(std::vector<T>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Whether the top-k cut runs as a heap during one pass over the logits (then the other
// tokens' weights are never needed).
inline bool top_k_uses_heap(const SamplingParams& p, std::int64_t vocab) noexcept {
  return p.top_k > 0 && p.top_k < vocab && p.top_k <= heap_top_k_max;
}

// The token drawn with uniform `u` from a row whose maximum `mx` is finite and whose
// weights exp(x - mx) sum to `total`. `weights` holds every token's weight, or is null when
// top_k_uses_heap. Params are valid and not greedy.
inline std::int32_t draw_token(const float* logits, const double* weights, std::int64_t vocab, double mx, double total,
                               const SamplingParams& params, double u) {
  Scratch& scratch = thread_scratch();
  Candidate* cand = nullptr;
  std::size_t n = 0;
  double kept_total = total;  // the top-p stage normalizes over what top-k kept
  const bool cut_k = params.top_k > 0 && params.top_k < vocab;
  const bool cut_p = params.top_p < 1.0;

  if (top_k_uses_heap(params, vocab)) {
    // One pass with a max-heap of the k best keys (worst on top): an element enters only if
    // its logit beats the worst kept one, which for k << vocab is rare after the start, so
    // blocks with no such element are skipped with one vectorizable test.
    const auto k = static_cast<std::size_t>(params.top_k);
    std::uint64_t* heap = buffer(scratch.heap, k);
    std::size_t size = 0;
    float worst = -std::numeric_limits<float>::infinity();
    const auto offer = [&](std::int64_t i) {
      const float x = logits[i];
      if (size < k) {
        if (x == -std::numeric_limits<float>::infinity()) return;
        heap[size++] = order_key(x, i);
        std::push_heap(heap, heap + size);
        if (size == k) worst = logit_of_order_key(heap[0]);
      } else if (x > worst) {  // an equal logit has a larger index, so it ranks lower
        std::pop_heap(heap, heap + k);
        heap[k - 1] = order_key(x, i);
        std::push_heap(heap, heap + k);
        worst = logit_of_order_key(heap[0]);
      }
    };
    constexpr std::int64_t block = 32;
    std::int64_t i = 0;
    for (; i + block <= vocab; i += block) {
      if (size == k) {
        bool any = false;
        for (std::int64_t j = 0; j < block; ++j) any |= logits[i + j] > worst;
        if (!any) continue;
      }
      for (std::int64_t j = 0; j < block; ++j) offer(i + j);
    }
    for (; i < vocab; ++i) offer(i);
    std::sort_heap(heap, heap + size);
    n = size;
    cand = buffer(scratch.candidates, n);
    for (std::size_t j = 0; j < n; ++j)
      cand[j] = {heap[j], exp_nonpositive(static_cast<double>(logit_of_order_key(heap[j])) - mx)};
  } else {
    cand = buffer(scratch.candidates, static_cast<std::size_t>(vocab));
    // The candidates: every token of weight >= floor, in index order. Blocks where none
    // passes are skipped with one vectorizable test; inside the others the copy is
    // branch-free, since whether a token passes is unpredictable.
    const auto collect = [&](double floor) {
      floor = std::max(floor, std::numeric_limits<double>::denorm_min());  // never weight 0
      n = 0;
      const auto keep_block = [&](std::int64_t from, std::int64_t to) {
        for (std::int64_t i = from; i < to; ++i) {
          cand[n] = {order_key(logits[i], i), weights[i]};
          n += weights[i] >= floor;
        }
      };
      constexpr std::int64_t block = 16;
      std::int64_t i = 0;
      for (; i + block <= vocab; i += block) {
        bool any = false;
        for (std::int64_t j = 0; j < block; ++j) any |= weights[i + j] >= floor;
        if (any) keep_block(i, i + block);
      }
      keep_block(i, vocab);
    };
    if (cut_p && !cut_k) {
      // The nucleus is a prefix of the tokens by descending weight, so any set of the
      // heaviest tokens that already weighs top_p * total contains it. First try the tokens
      // of probability >= 1e-4 (at most 10^4 of them: enough for a peaked distribution);
      // else those of weight >= tau, whose complement weighs less than
      // vocab * tau = (1 - top_p) * total / 2, so they always suffice.
      collect(1e-4 * total);
      if (!(sum_weights(cand, n) >= params.top_p * total * (1.0 + 1e-12)))
        collect(0.5 * (1.0 - params.top_p) * total / static_cast<double>(vocab));
    } else {
      collect(0.0);
    }
    if (cut_k && static_cast<std::size_t>(params.top_k) < n) {
      const auto k = static_cast<std::size_t>(params.top_k);
      select_by_rank(cand, n, k, buffer(scratch.partition, n));
      n = k;
    }
  }
  // n >= 1: a first collect is kept only if it holds weight, and every other floor is below
  // the maximum's weight, exactly 1; top-k keeps the maximum.
  Candidate* tmp = buffer(scratch.partition, n);
  if (cut_k) kept_total = sum_weights(cand, n);

  std::size_t kept = n;
  if (cut_p) kept = select_by_mass<false>(cand, n, params.top_p * kept_total, tmp) + 1;

  double tempered_total = 0.0;
  if (params.temperature == 1.0) {
    tempered_total = sum_weights(cand, kept);
  } else {
    const double inv_t = 1.0 / params.temperature;
    double* d = buffer(scratch.tempered, kept);
    for (std::size_t j = 0; j < kept; ++j) d[j] = (static_cast<double>(logit_of_order_key(cand[j].key)) - mx) * inv_t;
    tempered_total = exp_in_place(d, kept);
    for (std::size_t j = 0; j < kept; ++j) cand[j].weight = d[j];
  }
  const std::size_t j = select_by_mass<true>(cand, kept, u * tempered_total, tmp);
  return index_of_order_key(cand[j].key);
}

}  // namespace sampling
}  // namespace detail

inline void SamplingParams::validate() const {
  if (!(std::isfinite(temperature) && temperature >= 0.0))
    throw InvalidArgument("SamplingParams: temperature must be finite and >= 0 (0: greedy), got " +
                          detail::format_sampling_value(temperature));
  if (top_k < 0)
    throw InvalidArgument("SamplingParams: top_k must be >= 0 (0: no top-k cut), got " + std::to_string(top_k));
  if (!(top_p > 0.0 && top_p <= 1.0))
    throw InvalidArgument("SamplingParams: top_p must be in (0, 1] (1: no nucleus cut), got " +
                          detail::format_sampling_value(top_p));
}

inline SampledToken sample_token(const float* logits, std::int64_t vocab, const SamplingParams& params, RngKey key) {
  params.validate();
  if (vocab <= 0 || vocab > std::numeric_limits<std::int32_t>::max())
    throw InvalidArgument("sample_token: vocab must be in [1, 2^31 - 1], got " + std::to_string(vocab));
  if (logits == nullptr) throw InvalidArgument("sample_token: logits is null");

  bool has_nan = false;
  const float mx = detail::sampling::max_logit(logits, vocab, has_nan);
  if (has_nan) {
    const auto at = std::find_if(logits, logits + vocab, [](float x) { return std::isnan(x); }) - logits;
    throw InvalidArgument("sample_token: logits contain NaN at index " + std::to_string(at));
  }
  if (mx == -std::numeric_limits<float>::infinity())
    throw InvalidArgument("sample_token: all " + std::to_string(vocab) + " logits are -inf");

  if (mx == std::numeric_limits<float>::infinity()) {
    // The limit of softmax as those logits grow: the +inf tokens share all the mass, which is
    // the distribution of a row with 0 there and -inf elsewhere.
    float* row = detail::sampling::buffer(detail::sampling::thread_scratch().remapped, static_cast<std::size_t>(vocab));
    for (std::int64_t i = 0; i < vocab; ++i) row[i] = logits[i] == mx ? 0.0f : -std::numeric_limits<float>::infinity();
    return sample_token(row, vocab, params, key);
  }

  const double m = mx;
  std::int32_t token = 0;
  double total = 0.0;
  if (params.is_greedy()) {
    total = detail::sampling::sum_exp_shifted<false>(logits, vocab, m, nullptr);
    token = static_cast<std::int32_t>(std::find(logits, logits + vocab, mx) - logits);
  } else {
    double* weights = nullptr;
    if (detail::sampling::top_k_uses_heap(params, vocab)) {
      total = detail::sampling::sum_exp_shifted<false>(logits, vocab, m, nullptr);
    } else {
      weights = detail::sampling::buffer(detail::sampling::thread_scratch().weights, static_cast<std::size_t>(vocab));
      total = detail::sampling::sum_exp_shifted<true>(logits, vocab, m, weights);
    }
    token = detail::sampling::draw_token(logits, weights, vocab, m, total, params, detail::sampling_uniform(key));
  }
  return {token, static_cast<float>((static_cast<double>(logits[token]) - m) - std::log(total))};
}

}  // namespace nnx
