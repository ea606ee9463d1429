// Fuzzes native checkpoints (nnx/io/checkpoint.hpp): the index of a sharded checkpoint and the
// "__metadata__" of a one-file checkpoint (format, kinds, axes, graphdef, config), read by
// every public reading entry point, and a new save over whatever the directory holds.
//
// The first byte of an input says what the rest is (checkpoint_fixture.hpp, InputKind):
//   'f'  the whole model.safetensors of a one-file checkpoint;
//   'm'  its "__metadata__" as "key=value" lines, over the reference tensors;
//   'i'  model.safetensors.index.json, beside the reference checkpoint's shards.
//
// Expected: CheckpointError from each reader. Checked: a restore that succeeds returns the
// target's paths, dtypes and shapes with every byte readable (and, over the reference
// tensors, exactly the reference state); a sharded save over the directory, whatever it
// held, is refused only for a foreign model, and the checkpoint it writes (forced over a
// foreign model) verifies and restores exactly.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "checkpoint_fixture.hpp"
#include "fuzz_support.hpp"
#include "nnx/io/checkpoint.hpp"

namespace {

namespace fs = std::filesystem;
namespace io = nnx::io;
using nnx_fuzz::require;
using nnx_fuzz::checkpoint::InputKind;

struct Fixture {
  nnx_fuzz::ScratchDir scratch{"checkpoint"};
  nnx_fuzz::checkpoint::Reference reference{scratch / "reference"};
  fs::path dir = scratch / "input";
};

// Writes the checkpoint directory the input describes; false when it describes none.
bool write_input(const Fixture& fx, InputKind kind, std::string_view body) {
  fs::create_directories(fx.dir);
  const fs::path single = fx.dir / std::string(io::checkpoint_file_name);
  switch (kind) {
    case InputKind::file:
      nnx_fuzz::write_file(single, body);
      return true;
    case InputKind::metadata:
      try {
        io::save_safetensors(single, fx.reference.tensors, nnx_fuzz::checkpoint::decode_metadata(body));
      } catch (const nnx::InvalidArgument&) {
        return false;  // not UTF-8: no writer makes such a file ('f' inputs cover the reader)
      }
      return true;
    case InputKind::index:
      for (const auto& [name, bytes] : fx.reference.shards) nnx_fuzz::write_file(fx.dir / name, bytes);
      nnx_fuzz::write_file(fx.dir / std::string(io::checkpoint_index_name), body);
      return true;
  }
  return false;
}

// Runs fn, for which CheckpointError is the documented way to reject the directory.
template <class Fn>
void rejected_or_done(Fn&& fn) {
  try {
    fn();
  } catch (const nnx::CheckpointError&) {
  }
}

// Every byte of every tensor, summed into a volatile, so the reads cannot be optimized away:
// a view outside its mapping faults here.
void read_every_byte(const nnx::State& state) {
  static volatile unsigned sink = 0;
  unsigned sum = 0;
  for (const auto& [path, t] : state.to_pure_dict()) {
    const auto* p = reinterpret_cast<const unsigned char*>(t.raw_data());
    for (std::size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
  }
  sink = sink + sum;
}

void check_restored(const nnx::State& restored, const nnx::State& target) {
  require(restored.size() == target.size(), "a full restore holds every target leaf");
  for (std::size_t i = 0; i < restored.size(); ++i) {
    const auto& got = restored.entry(i);
    const auto& want = target.entry(i);
    require(got.path == want.path, "restored leaves come in target order");
    require(got.leaf.kind == want.leaf.kind, "a restored leaf has the target's kind");
    require(got.leaf.dtype() == want.leaf.dtype() && got.leaf.shape() == want.leaf.shape(),
            "a restored leaf has the target's dtype and shape");
  }
  read_every_byte(restored);
}

void read_checkpoint(const Fixture& fx, bool reference_tensors) {
  const auto& ref = fx.reference;
  rejected_or_done([&] { io::checkpoint_metadata(fx.dir); });
  rejected_or_done([&] { io::checkpoint_config(fx.dir); });
  rejected_or_done([&] { io::checkpoint_graphdef(fx.dir); });
  rejected_or_done([&] {
    const nnx::State restored = io::restore_checkpoint(fx.dir, ref.target);
    check_restored(restored, ref.target);
    if (reference_tensors) require(restored == ref.state, "over the reference tensors, a restore is the reference");
  });
  rejected_or_done([&] {
    const nnx::State params = io::restore_checkpoint(fx.dir, ref.target, nnx::of<nnx::Param>);
    read_every_byte(params);
  });
  rejected_or_done([&] {
    io::RestoreOptions options;
    options.graphdef = ref.graphdef;
    options.verify_checksums = true;
    read_every_byte(io::restore_checkpoint(fx.dir, ref.target, options));
  });
  rejected_or_done([&] { io::verify_checkpoint(fx.dir); });
}

// A save over the directory, whatever it holds (a corrupt index included): refused exactly
// when the directory holds a foreign model, which a forced save then replaces. Either way the
// new checkpoint verifies and restores exactly.
void save_over(const Fixture& fx) {
  const auto& ref = fx.reference;
  io::CheckpointOptions options;
  options.max_shard_bytes = nnx_fuzz::checkpoint::max_shard_bytes;
  const bool foreign = !io::foreign_checkpoint_content(fx.dir).empty();
  try {
    io::save_checkpoint(fx.dir, ref.state, ref.graphdef, ref.config, options);
    require(!foreign, "a save over a foreign model is refused");
  } catch (const nnx::CheckpointError&) {
    require(foreign, "a save is refused only over a foreign model");
    options.overwrite_foreign = true;
    io::save_checkpoint(fx.dir, ref.state, ref.graphdef, ref.config, options);
  }
  // A full restore opens every file, so this verifies them all.
  io::RestoreOptions check;
  check.graphdef = ref.graphdef;
  check.verify_checksums = true;
  require(io::restore_checkpoint(fx.dir, ref.target, check) == ref.state, "a save over any directory restores");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Fixture fx;
  if (size == 0) return 0;
  const auto kind = static_cast<InputKind>(data[0]);
  if (kind != InputKind::file && kind != InputKind::metadata && kind != InputKind::index) return 0;

  fx.scratch.clear();  // nothing from the previous input (the reference lives in memory)
  if (!write_input(fx, kind, nnx_fuzz::as_text(data + 1, size - 1))) return 0;
  read_checkpoint(fx, kind != InputKind::file);
  save_over(fx);
  return 0;
}
