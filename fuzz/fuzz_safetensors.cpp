// Fuzzes the safetensors reader (nnx::io::SafetensorsFile::open), which every checkpoint and
// Hugging Face load goes through. Each input is a whole file: 8-byte header length, JSON
// header, data.
//
// Expected: CheckpointError for a bad file. Checked when the file is accepted: every tensor
// lies inside the file, get() returns its dtype and shape, and the tensors and metadata
// survive a rewrite with save_safetensors and a second open unchanged (comparing the bytes
// reads every view in full, so a view past the mapping faults here).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "fuzz_support.hpp"
#include "nnx/io/safetensors.hpp"

namespace {

using nnx::Tensor;
using nnx::io::SafetensorsFile;
using nnx_fuzz::require;

// The tensors of an accepted file, each checked against what open() promises.
std::vector<std::pair<std::string, Tensor>> checked_tensors(const SafetensorsFile& f) {
  require(f.data_offset() == 8 + f.header_bytes(), "data_offset is 8 + header_bytes");
  std::vector<std::pair<std::string, Tensor>> tensors;
  std::uint64_t end = 0;
  for (const std::string& name : f.names()) {
    const auto& info = f.info(name);
    require(info.data_begin == end, "the tensors tile the data area in names() order");
    require(info.data_end <= f.file_size() - f.data_offset(), "a tensor ends inside the file");
    end = info.data_end;

    const Tensor t = f.get(name);
    require(t.dtype() == info.dtype && t.shape() == info.shape, "get() returns the header's dtype and shape");
    require(t.nbytes() == info.nbytes(), "a tensor's byte count matches its data_offsets");
    tensors.emplace_back(name, t);
  }
  require(end == f.file_size() - f.data_offset(), "the tensors end at the end of the file");
  return tensors;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const nnx_fuzz::ScratchDir dir("safetensors");
  const auto input = dir.write("input.safetensors", nnx_fuzz::as_text(data, size));

  std::vector<std::pair<std::string, Tensor>> tensors;
  std::map<std::string, std::string> metadata;
  try {
    const SafetensorsFile f = SafetensorsFile::open(input);
    tensors = checked_tensors(f);
    metadata = f.metadata();
  } catch (const nnx::CheckpointError&) {
    return 0;  // a bad file, rejected as documented
  }

  // Whatever the reader accepts, the writer writes back and the reader reads again the same.
  const auto copy = dir / "copy.safetensors";
  nnx::io::save_safetensors(copy, tensors, metadata);
  const SafetensorsFile again = SafetensorsFile::open(copy);
  require(again.metadata() == metadata, "metadata survives a rewrite");
  require(again.size() == tensors.size(), "every tensor survives a rewrite");
  for (const auto& [name, t] : tensors) {
    const Tensor back = again.get(name);
    require(back.dtype() == t.dtype() && back.shape() == t.shape(), "a tensor keeps its dtype and shape");
    require(t.nbytes() == 0 || std::memcmp(back.raw_data(), t.raw_data(), t.nbytes()) == 0,
            "a tensor keeps its bytes");
  }
  return 0;
}
