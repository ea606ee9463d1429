// nnx/text/bpe.hpp — the merge step of byte-pair encoding: a word given as its initial symbol
// ids becomes the ids its merges produce, lowest-ranked pair first and, among equal ranks, the
// leftmost first (the order Hugging Face tokenizers and OpenAI's GPT-2 encoder both produce).
//
//   nnx::text::MergeTable merges;                 // (left id, right id) -> (rank, merged id)
//   merges.insert(l, r, rank, id);
//   nnx::text::BpeScratch scratch;                // reused: no allocation per word once warm
//   merges.apply(symbols, scratch);               // symbols: in/out
//
// The table is open addressing keyed by the pair of ids (one probe on average); the word is a
// linked list over an array with a binary heap of candidate merges, O(n log n) in its length,
// so a megabyte without spaces (SentencePiece models have no pre-tokenizer) stays fast.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace nnx::text {

class MergeTable {
 public:
  struct Merge {
    std::int32_t rank = -1;  // -1: no merge for this pair
    std::int32_t id = -1;    // the merged token
  };

  void reserve(std::size_t n) {
    std::size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    if (cap <= slots_.size()) return;
    std::vector<Slot> old = std::move(slots_);
    slots_.assign(cap, Slot{});
    size_ = 0;
    for (const Slot& s : old)
      if (s.merge.rank >= 0) insert_slot(s.key, s.merge);
  }

  // Adds the merge of (left, right) unless the pair has one already (the first, lowest rank wins,
  // as in Hugging Face's loader). Returns whether it was added.
  bool insert(std::int32_t left, std::int32_t right, std::int32_t rank, std::int32_t id) {
    if (2 * (size_ + 1) > slots_.size()) reserve(size_ + 1 < 8 ? 8 : 2 * (size_ + 1));
    return insert_slot(key_of(left, right), Merge{rank, id});
  }

  Merge find(std::int32_t left, std::int32_t right) const {
    if (slots_.empty()) return {};
    const std::uint64_t key = key_of(left, right);
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.merge.rank < 0) return {};
      if (s.key == key) return s.merge;
    }
  }

  std::size_t size() const { return size_; }

 private:
  struct Slot {
    std::uint64_t key = 0;
    Merge merge;
  };

  static std::uint64_t key_of(std::int32_t l, std::int32_t r) {
    return (std::uint64_t{static_cast<std::uint32_t>(l)} << 32) | static_cast<std::uint32_t>(r);
  }
  static std::size_t hash(std::uint64_t k) {  // a 64-bit mix (murmur3's finalizer)
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return static_cast<std::size_t>(k);
  }
  bool insert_slot(std::uint64_t key, Merge m) {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash(key) & mask;; i = (i + 1) & mask) {
      Slot& s = slots_[i];
      if (s.merge.rank < 0) {
        s = Slot{key, m};
        ++size_;
        return true;
      }
      if (s.key == key) return false;
    }
  }

  std::vector<Slot> slots_;
  std::size_t size_ = 0;
};

// Working memory of MergeTable::apply, kept between words.
struct BpeScratch {
  struct Candidate {
    std::int32_t rank, pos;    // ordered by rank, then position (leftmost first)
    std::int32_t left, right;  // the ids the pair had when queued (stale entries are skipped)
    std::int32_t merged;
  };
  std::vector<std::int32_t> prev, next;
  std::vector<Candidate> heap;
};

namespace detail {
inline bool candidate_after(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
}
}  // namespace detail

// Merges `symbols` (ids) in place by `table`.
inline void bpe_merge(const MergeTable& table, std::vector<std::int32_t>& symbols, BpeScratch& scratch) {
  const auto n = static_cast<std::int32_t>(symbols.size());
  if (n < 2) return;
  if (n == 2) {  // the most common case after the cache: no list, no heap
    const MergeTable::Merge m = table.find(symbols[0], symbols[1]);
    if (m.rank >= 0) symbols.assign(1, m.id);
    return;
  }
  auto& prev = scratch.prev;
  auto& next = scratch.next;
  auto& heap = scratch.heap;
  prev.resize(static_cast<std::size_t>(n));
  next.resize(static_cast<std::size_t>(n));
  heap.clear();
  for (std::int32_t i = 0; i < n; ++i) {
    prev[static_cast<std::size_t>(i)] = i - 1;
    next[static_cast<std::size_t>(i)] = i + 1 < n ? i + 1 : -1;
  }
  auto push = [&](std::int32_t pos) {
    const std::int32_t r = next[static_cast<std::size_t>(pos)];
    if (r < 0) return;
    const std::int32_t a = symbols[static_cast<std::size_t>(pos)], b = symbols[static_cast<std::size_t>(r)];
    const MergeTable::Merge m = table.find(a, b);
    if (m.rank < 0) return;
    heap.push_back({m.rank, pos, a, b, m.id});
    std::push_heap(heap.begin(), heap.end(), detail::candidate_after);
  };
  for (std::int32_t i = 0; i + 1 < n; ++i) push(i);
  constexpr std::int32_t kDead = -1;
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), detail::candidate_after);
    const BpeScratch::Candidate c = heap.back();
    heap.pop_back();
    const auto p = static_cast<std::size_t>(c.pos);
    if (symbols[p] != c.left) continue;  // the left symbol merged (or died) since
    const std::int32_t r = next[p];
    if (r < 0 || symbols[static_cast<std::size_t>(r)] != c.right) continue;
    symbols[p] = c.merged;
    const std::int32_t rr = next[static_cast<std::size_t>(r)];
    symbols[static_cast<std::size_t>(r)] = kDead;
    next[p] = rr;
    if (rr >= 0) prev[static_cast<std::size_t>(rr)] = c.pos;
    if (prev[p] >= 0) push(prev[p]);
    push(c.pos);
  }
  std::size_t out = 0;
  for (std::int32_t i = 0; i >= 0; i = next[static_cast<std::size_t>(i)])
    symbols[out++] = symbols[static_cast<std::size_t>(i)];
  symbols.resize(out);
}

}  // namespace nnx::text
