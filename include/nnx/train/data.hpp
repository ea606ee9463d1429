// nnx/train/data.hpp — training data for language models: token streams read from text files
// (one token per byte) or llm.c token files (.bin), a held-out split, and batches drawn as a
// pure function of (seed, step), so a resumed run sees exactly the batches it would have seen.
//
//   auto data = nnx::train::load_token_data({"/usr/share/common-licenses"}, 0.1);
//   auto [tokens, targets] = nnx::train::sample_batch(data.train, 16, 128, seed, step);
//   auto windows = nnx::train::held_out_windows(data.held_out, 128, 8);   // fixed eval batch
//
// A path that is a directory contributes its regular files in name order (not recursing); a
// file reached twice (a symlink to a file already listed, as /usr/share/common-licenses/GPL) is
// read once. Each
// file is split on its own: its last `held_out_fraction` goes to the held-out stream, so every
// kind of text is seen on both sides. An llm.c .bin file is a 256-int32 header (magic 20240520,
// version 1, token count) followed by that many uint16 tokens.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx::train {

struct TokenData {
  std::vector<std::int32_t> train, held_out;
  std::int32_t max_token = -1;                 // the largest id seen (the vocabulary must exceed it)
  std::vector<std::filesystem::path> files;  // what was read, in order
};

namespace detail {

inline std::vector<std::int32_t> read_token_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InvalidArgument(file.string() + ": cannot open");
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::int32_t> tokens;
  if (file.extension() == ".bin") {
    constexpr std::size_t kHeader = 256 * sizeof(std::int32_t);
    std::int32_t header[3] = {0, 0, 0};
    if (bytes.size() >= kHeader) std::memcpy(header, bytes.data(), sizeof header);
    if (bytes.size() < kHeader || header[0] != 20240520 || header[1] != 1)
      throw InvalidArgument(file.string() + ": not an llm.c token file (expected a 1024-byte header with magic "
                                            "20240520 and version 1)");
    const auto count = static_cast<std::size_t>(header[2]);
    if (header[2] < 0 || bytes.size() != kHeader + 2 * count)
      throw InvalidArgument(file.string() + ": header says " + std::to_string(header[2]) + " tokens, the file holds " +
                            std::to_string((bytes.size() - kHeader) / 2));
    tokens.resize(count);
    for (std::size_t i = 0; i < count; ++i) {
      std::uint16_t t;
      std::memcpy(&t, bytes.data() + kHeader + 2 * i, 2);
      tokens[i] = t;
    }
  } else {
    tokens.reserve(bytes.size());
    for (char c : bytes) tokens.push_back(static_cast<unsigned char>(c));
  }
  return tokens;
}

}  // namespace detail

// Reads every path (files, or directories of files) and splits each file's tokens into the
// training and held-out streams. Throws InvalidArgument naming the path when it is missing,
// unreadable or malformed, or when a stream ends up empty.
inline TokenData load_token_data(const std::vector<std::filesystem::path>& paths, double held_out_fraction = 0.1) {
  namespace fs = std::filesystem;
  if (!(held_out_fraction > 0.0 && held_out_fraction < 1.0))
    throw InvalidArgument("training data: the held-out fraction must be in (0, 1)");
  TokenData data;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> files;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) throw InvalidArgument(p.string() + ": the directory holds no files");
      data.files.insert(data.files.end(), files.begin(), files.end());
    } else if (fs::is_regular_file(p)) {
      data.files.push_back(p);
    } else {
      throw InvalidArgument(p.string() + ": no such file or directory");
    }
  }
  std::vector<fs::path> unique, seen;
  for (const auto& f : data.files) {
    const fs::path real = fs::weakly_canonical(f);
    if (std::find(seen.begin(), seen.end(), real) != seen.end()) continue;
    seen.push_back(real);
    unique.push_back(f);
  }
  data.files = std::move(unique);
  for (const auto& f : data.files) {
    const std::vector<std::int32_t> tokens = detail::read_token_file(f);
    const auto held = static_cast<std::size_t>(static_cast<double>(tokens.size()) * held_out_fraction);
    data.train.insert(data.train.end(), tokens.begin(), tokens.end() - static_cast<std::ptrdiff_t>(held));
    data.held_out.insert(data.held_out.end(), tokens.end() - static_cast<std::ptrdiff_t>(held), tokens.end());
    for (std::int32_t t : tokens) data.max_token = std::max(data.max_token, t);
  }
  if (data.train.empty() || data.held_out.empty())
    throw InvalidArgument("training data: too little text to hold out " + std::to_string(held_out_fraction * 100) +
                          "% (" + std::to_string(data.train.size() + data.held_out.size()) + " tokens)");
  return data;
}

struct Batch {
  Tensor tokens;   // i32 [B, T]
  Tensor targets;  // i32 [B, T]: the next token of each
};

// B windows of T + 1 tokens at offsets drawn from Philox keyed by (seed, step): inputs and
// next-token targets. Throws InvalidArgument when the stream is shorter than T + 1.
inline Batch sample_batch(const std::vector<std::int32_t>& stream, std::int64_t B, std::int64_t T, std::uint64_t seed,
                          std::int64_t step) {
  const auto n = static_cast<std::int64_t>(stream.size());
  if (B <= 0 || T <= 0) throw InvalidArgument("sample_batch: batch and length must be positive");
  if (n < T + 1)
    throw InvalidArgument("sample_batch: " + std::to_string(n) + " tokens cannot hold a window of " +
                          std::to_string(T + 1));
  const RngKey key = fold_in(key_from_seed(seed), static_cast<std::uint64_t>(step));
  Batch b{Tensor::empty({B, T}, DType::i32), Tensor::empty({B, T}, DType::i32)};
  std::int32_t* tok = b.tokens.data<std::int32_t>();
  std::int32_t* tgt = b.targets.data<std::int32_t>();
  const auto span = static_cast<std::uint64_t>(n - T);  // offsets 0 .. n - T - 1
  for (std::int64_t r = 0; r < B; ++r) {
    const auto bits = nnx::detail::philox4x32_10(
        {static_cast<std::uint32_t>(r), static_cast<std::uint32_t>(r >> 32), 0, nnx::detail::domain_bits}, key);
    const std::uint64_t draw = (std::uint64_t{bits[0]} << 32) | bits[1];
    const auto offset = static_cast<std::int64_t>(draw % span);
    std::copy_n(stream.begin() + offset, T, tok + r * T);
    std::copy_n(stream.begin() + offset + 1, T, tgt + r * T);
  }
  return b;
}

// Up to `count` windows of T + 1 tokens spread evenly over the stream (a fixed evaluation
// batch: the same windows every time).
inline Batch held_out_windows(const std::vector<std::int32_t>& stream, std::int64_t T, std::int64_t count) {
  const auto n = static_cast<std::int64_t>(stream.size());
  if (n < T + 1)
    throw InvalidArgument("held-out data: " + std::to_string(n) + " tokens cannot hold a window of " +
                          std::to_string(T + 1) + " (use a shorter --seq or more data)");
  const std::int64_t B = std::max<std::int64_t>(1, std::min(count, (n - 1) / T));
  Batch b{Tensor::empty({B, T}, DType::i32), Tensor::empty({B, T}, DType::i32)};
  for (std::int64_t r = 0; r < B; ++r) {
    const std::int64_t offset = B == 1 ? 0 : r * (n - T - 1) / (B - 1);
    std::copy_n(stream.begin() + offset, T, b.tokens.data<std::int32_t>() + r * T);
    std::copy_n(stream.begin() + offset + 1, T, b.targets.data<std::int32_t>() + r * T);
  }
  return b;
}

}  // namespace nnx::train
