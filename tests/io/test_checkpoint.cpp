// Tests for nnx/io/checkpoint.hpp: a State with Param, Cache, RngState and Intermediate
// leaves, bf16 and zero-size tensors and a QTensor leaf round-trips bit for bit into an
// abstract target (zero-copy), with its graphdef and config; sharding with an index;
// crash-safe saves (a crash injected at every durable step of four kinds of re-save leaves
// the old or the new checkpoint, never a mix, and the next save cleans up); every restore
// check (missing, extra, kind, dtype, shape, QTensor layout, graphdef) and corrupt files and
// indexes as CheckpointErrors naming the file; partial restore by filter, reading only the
// shards it needs; a directory holding a foreign (Hugging Face) model is refused, or
// replaced whole with overwrite_foreign; per-file XXH64 checksums, verified on request.
// (tests/io/test_crash_save.cpp kills a real saving process.)
#include "nnx/io/checkpoint.hpp"

#include "nnx/core.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "io_test_util.hpp"

namespace {

using io_test::TempDir;
using io_test::expect_error;
using io_test::read_bytes;
using io_test::write_bytes;

namespace fs = std::filesystem;
using nnx::DType;
using nnx::Shape;
using nnx::State;
using nnx::Tensor;
namespace io = nnx::io;

std::set<std::string> files_in(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}


// ---- the test model ---------------------------------------------------------------------

std::mt19937_64 g_rng(1);
// Random bits (NaN payloads included) for concrete tensors; abstract ones stay abstract.
Tensor random_tensor(const Shape& s, DType dtype) {
  Tensor t = Tensor::empty(s, dtype);
  if (t.is_abstract()) return t;
  auto* p = reinterpret_cast<unsigned char*>(t.raw_data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(g_rng());
  return t;
}

struct Block {
  nnx::Param kernel;  // f32 [W, W]
  nnx::Param bias;    // bf16 [W]
  NNX_FIELDS(kernel, bias)
};

struct Net {
  std::int64_t width = 0;
  std::string act = "gelu";
  std::vector<Block> blocks;
  nnx::Param qw;                   // QTensor: i8 [W, 2W], scales f32 [2W] and f32 [1]
  nnx::Cache cache;                // f32 [2, W]
  std::optional<nnx::Cache> pos;   // i32 [2]
  nnx::Intermediate stats;         // f32 [0, 3]: zero-size
  nnx::Rngs rngs;                  // RngState leaves: rngs/default/{key,count}
  NNX_FIELDS(width, act, blocks, qw, cache, pos, stats, rngs)
};

Net make_net(std::int64_t w, int nblocks, std::uint64_t seed, std::string act = "gelu") {
  g_rng.seed(seed);
  Net n;
  n.width = w;
  n.act = std::move(act);
  for (int i = 0; i < nblocks; ++i)
    n.blocks.push_back(
        Block{nnx::Param(random_tensor({w, w}, DType::f32), {"embed", "mlp"}), nnx::Param(random_tensor({w}, DType::bf16))});
  n.qw = nnx::Param(nnx::QTensor{random_tensor({w, 2 * w}, DType::i8),
                                 {random_tensor({2 * w}, DType::f32), random_tensor({1}, DType::f32)}});
  n.cache = nnx::Cache(random_tensor({2, w}, DType::f32));
  n.pos = nnx::Cache(random_tensor({2}, DType::i32));
  n.stats = nnx::Intermediate(random_tensor({0, 3}, DType::f32));
  n.rngs = nnx::Rngs(seed);
  return n;
}

State state_of(const Net& n) { return nnx::state(n); }
State abstract_state(std::int64_t w, int nblocks) {
  return nnx::state(nnx::eval_shape([&] { return make_net(w, nblocks, 0); }));
}

constexpr std::size_t kSmallShard = 200;  // bytes: several shards; the 256-byte kernels alone
constexpr std::size_t kMediumShard = 700;  // 3 to 4 shards: fewer fsyncs in the crash test
constexpr std::size_t kBigShard = std::size_t{1} << 30;

io::CheckpointOptions shards(std::size_t max_bytes) {
  io::CheckpointOptions o;
  o.max_shard_bytes = max_bytes;
  return o;
}

nlohmann::json read_index(const fs::path& dir) {
  return nlohmann::json::parse(read_bytes(dir / std::string(io::checkpoint_index_name)));
}

// The files a committed checkpoint in dir refers to (and nothing else may be there).
std::set<std::string> expected_files(const fs::path& dir) {
  if (!fs::exists(dir / std::string(io::checkpoint_index_name))) return {std::string(io::checkpoint_file_name)};
  std::set<std::string> out{std::string(io::checkpoint_index_name)};
  const auto index = read_index(dir);  // (a temporary in the range-for would die too early)
  for (const auto& [name, file] : index.at("weight_map").items()) out.insert(file.get<std::string>());
  return out;
}

struct SimulatedCrash {};

// "model-00002-of-00005.safetensors", written out independently of the library.
std::string plain_shard_name(std::size_t i, std::size_t n) {
  auto five = [](std::size_t x) {
    std::string s = std::to_string(x);
    return std::string(5 - s.size(), '0') + s;
  };
  return "model-" + five(i) + "-of-" + five(n) + ".safetensors";
}

}  // namespace

TEST_CASE("checkpoint: a state round-trips bit for bit into an abstract target", "[io][checkpoint]") {
  TempDir dir;
  Net net = make_net(8, 2, 42);
  auto [graphdef, state] = nnx::split(net);
  const nlohmann::json config{{"n_layer", 2}, {"act", "gelu"}, {"eps", 1e-5}, {"dims", {8, 16}}};
  io::save_checkpoint(dir.path, state, graphdef, config);
  CHECK(files_in(dir.path) == std::set<std::string>{"model.safetensors"});

  const State target = abstract_state(8, 2);
  const auto before = nnx::tensor_memory_stats();
  State restored = io::restore_checkpoint(dir.path, target);
  CHECK(nnx::tensor_memory_stats().allocations == before.allocations);  // zero-copy: no tensor allocated
  CHECK(restored == state);  // same paths in order, kinds, axes and bytes
  REQUIRE(restored.size() == target.size());
  for (std::size_t i = 0; i < restored.size(); ++i) CHECK(restored.entry(i).path == target.entry(i).path);
  CHECK(restored["qw"].is_quantized());
  CHECK(restored["qw"].qtensor().scale.size() == 2);
  CHECK(restored["blocks/0/bias"].dtype() == DType::bf16);
  CHECK(restored["stats"].shape() == Shape{0, 3});
  CHECK(restored["rngs/default/count"].kind_name() == "RngState");
  CHECK(restored["blocks/1/kernel"].axes() == std::vector<std::string>{"embed", "mlp"});
  CHECK_FALSE(restored["cache"].tensor().shares_storage_with(state["cache"].tensor()));

  // Each restored tensor is held once, so donating the state lets a module update it in place.
  CHECK(restored["cache"].tensor().use_count() == 1);
  CHECK(restored["qw"].qtensor().qvalue.use_count() == 1);

  // The restored state rebuilds the module; its tensors are views of the mapped file.
  State copy = restored;
  Net back = nnx::merge(graphdef, std::move(copy));
  CHECK(nnx::equal(back.blocks[1].kernel.value(), net.blocks[1].kernel.value()));
  CHECK(nnx::equal(back.qw.qvalue().scale[1], net.qw.qvalue().scale[1]));
  restored = State();
  CHECK(back.cache.value().use_count() == 1);  // only the module holds it: writable in place
  const std::string file_bytes = read_bytes(dir.path / "model.safetensors");
  back.cache.value().fill(0.0);
  CHECK(read_bytes(dir.path / "model.safetensors") == file_bytes);  // copy-on-write
  restored = io::restore_checkpoint(dir.path, target);

  CHECK(io::checkpoint_graphdef(dir.path) == graphdef);
  CHECK(io::checkpoint_config(dir.path) == config);
  const auto meta = io::checkpoint_metadata(dir.path);
  CHECK(meta.at("nnx.format") == "nnx.checkpoint/1");
  CHECK(meta.at("nnx.save_id").size() == 16);
  const auto kinds = nlohmann::json::parse(meta.at("nnx.kinds"));
  CHECK(kinds.at("cache") == "Cache");
  CHECK(kinds.at("qw") == "Param");
  CHECK(kinds.at("stats") == "Intermediate");
  CHECK(nlohmann::json::parse(meta.at("nnx.axes")).at("blocks/0/kernel") == nlohmann::json{"embed", "mlp"});

  // The file is plain safetensors, tensors named by path, a QTensor as qvalue/scale/i.
  auto f = io::SafetensorsFile::open(dir.path / "model.safetensors");
  CHECK(f.contains("blocks/0/kernel"));
  CHECK(f.contains("qw/qvalue"));
  CHECK(f.contains("qw/scale/0"));
  CHECK(f.contains("qw/scale/1"));
  CHECK_FALSE(f.contains("qw"));

  // A concrete target works as well (only its shapes and dtypes are used).
  CHECK(io::restore_checkpoint(dir.path, state) == state);
}

TEST_CASE("checkpoint: without graphdef and config, and an empty state", "[io][checkpoint]") {
  TempDir dir;
  State state = state_of(make_net(4, 1, 3));
  io::save_checkpoint(dir.path / "sub" / "dir", state);  // directories are created
  const fs::path d = dir.path / "sub" / "dir";
  CHECK(io::restore_checkpoint(d, abstract_state(4, 1)) == state);
  CHECK(io::checkpoint_config(d).is_null());
  expect_error([&] { io::checkpoint_graphdef(d); }, {"model.safetensors", "no graphdef"});
  // Asking to check a graphdef the checkpoint does not have is an error too.
  io::RestoreOptions opts;
  opts.graphdef = nnx::graphdef(make_net(4, 1, 3));
  expect_error([&] { io::restore_checkpoint(d, abstract_state(4, 1), opts); }, {"no graphdef"});

  TempDir empty;
  io::save_checkpoint(empty.path, State{});
  CHECK(io::restore_checkpoint(empty.path, State{}).empty());
  expect_error([&] { io::restore_checkpoint(empty.path, abstract_state(4, 1)); }, {"model.safetensors", "no tensor"});
}

TEST_CASE("checkpoint: sharding writes Hugging Face style shards and an index", "[io][checkpoint]") {
  TempDir dir;
  Net net = make_net(8, 3, 5);
  auto [graphdef, state] = nnx::split(net);
  io::save_checkpoint(dir.path, state, graphdef, {{"k", 1}}, shards(kSmallShard));

  const auto index = read_index(dir.path);
  const auto& map = index.at("weight_map");
  CHECK(map.size() == state.to_pure_dict().size());
  CHECK(index.at("metadata").at("total_size") == state.nbytes());
  CHECK(index.at("metadata").at("nnx.format") == "nnx.checkpoint/1");
  std::set<std::string> shard_files;
  for (const auto& [name, file] : map.items()) shard_files.insert(file.get<std::string>());
  REQUIRE(shard_files.size() > 3);
  std::size_t i = 0;
  for (const auto& file : shard_files) {  // sorted, so in shard order
    INFO(file);
    CHECK(file == plain_shard_name(++i, shard_files.size()));
    auto f = io::SafetensorsFile::open(dir.path / file);
    std::uint64_t bytes = 0;
    for (const auto& n : f.names()) bytes += f.info(n).nbytes();
    CHECK((bytes <= kSmallShard || f.size() == 1));  // a bigger tensor is alone in its shard
    CHECK(f.metadata().at("nnx.save_id") == index.at("metadata").at("nnx.save_id"));
  }
  CHECK(map.at("blocks/0/kernel") != map.at("blocks/1/kernel"));  // 256 bytes each: own shards
  CHECK(files_in(dir.path) == expected_files(dir.path));

  CHECK(io::restore_checkpoint(dir.path, abstract_state(8, 3)) == state);
  CHECK(io::checkpoint_graphdef(dir.path) == graphdef);
  CHECK(io::checkpoint_config(dir.path) == nlohmann::json{{"k", 1}});

  // max_shard_bytes = 0: one tensor per shard.
  TempDir each;
  io::save_checkpoint(each.path, state, {}, nullptr, shards(0));
  CHECK(files_in(each.path).size() == state.to_pure_dict().size() + 1);
  CHECK(io::restore_checkpoint(each.path, abstract_state(8, 3)) == state);
}

TEST_CASE("checkpoint: re-saving switches layouts and removes stale files", "[io][checkpoint]") {
  TempDir dir;
  // Extra files in the directory are not the checkpoint's: they stay. (Not config.json: that
  // makes a directory a Hugging Face model, which save_checkpoint refuses; see below.)
  write_bytes(dir.path / "tokenizer.json", "{}");
  write_bytes(dir.path / "tokenizer.model", "tok");
  const std::set<std::string> others{"tokenizer.json", "tokenizer.model"};
  auto check_dir = [&](const State& expect) {
    CHECK(io::restore_checkpoint(dir.path, abstract_state(8, 2)) == expect);
    std::set<std::string> want = expected_files(dir.path);
    want.insert(others.begin(), others.end());
    CHECK(files_in(dir.path) == want);
  };
  const State a = state_of(make_net(8, 2, 10)), b = state_of(make_net(8, 2, 11)), c = state_of(make_net(8, 2, 12));

  io::save_checkpoint(dir.path, a, {}, nullptr, shards(kBigShard));
  check_dir(a);
  io::save_checkpoint(dir.path, b, {}, nullptr, shards(kSmallShard));  // single -> sharded
  check_dir(b);
  const auto first_names = expected_files(dir.path);
  io::save_checkpoint(dir.path, c, {}, nullptr, shards(kSmallShard));  // sharded -> sharded, same count
  check_dir(c);
  // The live shards had the plain names, so the new save used fresh (tagged) ones.
  for (const auto& f : expected_files(dir.path))
    if (f != io::checkpoint_index_name) CHECK(first_names.count(f) == 0);
  io::save_checkpoint(dir.path, a, {}, nullptr, shards(kSmallShard));  // and back to plain names
  check_dir(a);
  const auto plain = expected_files(dir.path);
  for (std::size_t i = 1; i < plain.size(); ++i) CHECK(plain.count(plain_shard_name(i, plain.size() - 1)) == 1);
  io::save_checkpoint(dir.path, b, {}, nullptr, shards(kBigShard));  // sharded -> single
  check_dir(b);
  CHECK_FALSE(fs::exists(dir.path / std::string(io::checkpoint_index_name)));
}

TEST_CASE("checkpoint: a crash at any step of a save leaves the old or the new checkpoint", "[io][checkpoint]") {
  struct Transition {
    const char* name;
    std::size_t old_shard, new_shard;
    int old_blocks, new_blocks;
  };
  const Transition transitions[] = {{"single -> single", kBigShard, kBigShard, 2, 2},
                                    {"single -> sharded", kBigShard, kMediumShard, 2, 2},
                                    {"sharded -> sharded (same names)", kMediumShard, kMediumShard, 2, 2},
                                    {"sharded -> sharded (other count)", kMediumShard, kMediumShard, 2, 3},
                                    {"sharded -> single", kMediumShard, kBigShard, 2, 2}};
  for (const auto& t : transitions) {
    INFO(t.name);
    const State old_state = state_of(make_net(8, t.old_blocks, 100));
    const State new_state = state_of(make_net(8, t.new_blocks, 200));
    // Restores whichever of the two the directory holds (0 = old, 1 = new; -1 = neither).
    auto which = [&](const fs::path& dir) -> int {
      for (int blocks : {t.old_blocks, t.new_blocks}) {
        try {
          State r = io::restore_checkpoint(dir, abstract_state(8, blocks));
          if (blocks == t.old_blocks && r == old_state) return 0;
          if (blocks == t.new_blocks && r == new_state) return 1;
        } catch (const nnx::CheckpointError&) {
        }
      }
      return -1;
    };

    // A dry run lists the durable steps of this kind of save.
    std::vector<std::string> events;
    {
      TempDir dir;
      io::save_checkpoint(dir.path, old_state, {}, nullptr, shards(t.old_shard));
      auto o = shards(t.new_shard);
      o.on_event = [&](const std::string& e) { events.push_back(e); };
      io::save_checkpoint(dir.path, new_state, {}, nullptr, o);
      REQUIRE(which(dir.path) == 1);
    }
    REQUIRE(events.size() >= 4);
    CHECK(events.back() == "committed");

    int last = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      INFO("crash at step " << i << ": " << events[i]);
      TempDir dir;
      io::save_checkpoint(dir.path, old_state, {}, nullptr, shards(t.old_shard));
      auto o = shards(t.new_shard);
      std::size_t step = 0;
      o.on_event = [&](const std::string&) {
        if (step++ == i) throw SimulatedCrash{};
      };
      CHECK_THROWS_AS(io::save_checkpoint(dir.path, new_state, {}, nullptr, o), SimulatedCrash);
      const int got = which(dir.path);
      CHECK(got >= 0);     // one of the two, bit for bit, never a mix
      CHECK(got >= last);  // once the new one is visible it stays
      if (i == 0 || events[i] == "commit") CHECK(got == 0);
      if (events[i] == "committed") CHECK(got == 1);
      last = std::max(last, got);

      // The next save succeeds and leaves nothing behind.
      io::save_checkpoint(dir.path, new_state, {}, nullptr, shards(t.new_shard));
      CHECK(which(dir.path) == 1);
      CHECK(files_in(dir.path) == expected_files(dir.path));
    }
  }
}

TEST_CASE("checkpoint: leftovers of a crashed save are ignored and cleaned up", "[io][checkpoint]") {
  TempDir dir;
  const State a = state_of(make_net(8, 2, 1));
  io::save_checkpoint(dir.path, a, {}, nullptr, shards(kSmallShard));
  // A half-written temp file, an orphan shard and a stray single file.
  write_bytes(dir.path / ".model-00001-of-00011.safetensors.tmp-deadbeef", "partial");
  write_bytes(dir.path / "model-00001-of-00002.safetensors", "garbage");
  write_bytes(dir.path / "model.safetensors", "garbage");
  CHECK(io::restore_checkpoint(dir.path, abstract_state(8, 2)) == a);  // the index wins
  io::save_checkpoint(dir.path, a, {}, nullptr, shards(kSmallShard));
  CHECK(files_in(dir.path) == expected_files(dir.path));
}

TEST_CASE("checkpoint: restore checks every leaf", "[io][checkpoint]") {
  for (std::size_t max_shard : {kBigShard, kSmallShard}) {
    TempDir dir;
    const bool sharded = max_shard == kSmallShard;
    INFO((sharded ? "sharded" : "single file"));
    Net net = make_net(8, 2, 7);
    auto [graphdef, state] = nnx::split(net);
    io::save_checkpoint(dir.path, state, graphdef, nullptr, shards(max_shard));
    const std::string meta_file =
        (dir.path / std::string(sharded ? io::checkpoint_index_name : io::checkpoint_file_name)).string();
    auto file_of = [&](const std::string& tensor) {
      return sharded ? (dir.path / read_index(dir.path).at("weight_map").at(tensor).get<std::string>()).string()
                     : meta_file;
    };

    SECTION("missing leaf") {
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 3)); },
                   {meta_file, "'blocks/2/kernel'", "no tensor", "Param f32[8, 8]"});
    }
    SECTION("extra tensors, unless partial") {
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 1)); },
                   {"blocks/1/", "is not a leaf of the target"});
      State sub = io::restore_checkpoint(dir.path, abstract_state(8, 1), nnx::everything);
      CHECK(sub.size() == abstract_state(8, 1).size());
      CHECK(nnx::equal(sub["blocks/0/kernel"].tensor(), state["blocks/0/kernel"].tensor()));
    }
    SECTION("kind") {
      State target = abstract_state(8, 2);
      target["cache"].kind = &nnx::Param::kind_info();
      expect_error([&] { io::restore_checkpoint(dir.path, target); },
                   {meta_file, "'cache'", "stored as a Cache", "expects a Param"});
    }
    SECTION("dtype") {
      State target = abstract_state(8, 2);
      target["blocks/0/bias"].value = Tensor::abstract({8}, DType::f32);
      expect_error([&] { io::restore_checkpoint(dir.path, target); },
                   {file_of("blocks/0/bias"), "'blocks/0/bias'", "is bf16[8]", "expected f32[8]"});
    }
    SECTION("shape") {
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(6, 2)); },
                   {file_of("blocks/0/kernel"), "'blocks/0/kernel'", "f32[8, 8]", "expected f32[6, 6]"});
    }
    SECTION("QTensor versus Tensor, and the number of scales") {
      State target = abstract_state(8, 2);
      target["qw"].value = Tensor::abstract({8, 16}, DType::i8);
      expect_error([&] { io::restore_checkpoint(dir.path, target); }, {meta_file, "'qw'", "holds a QTensor"});

      target = abstract_state(8, 2);
      target["qw"].qtensor().scale.pop_back();
      expect_error([&] { io::restore_checkpoint(dir.path, target); }, {"'qw'", "more than the 1 scales"});

      target = abstract_state(8, 2);
      target["cache"].value = nnx::QTensor{Tensor::abstract({2, 8}, DType::i8), {}};
      expect_error([&] { io::restore_checkpoint(dir.path, target); },
                   {file_of("cache"), "'cache'", "holds a Tensor; the target expects a QTensor"});

      target = abstract_state(8, 2);
      target["qw"].qtensor().scale[0] = Tensor::abstract({15});
      expect_error([&] { io::restore_checkpoint(dir.path, target); },
                   {file_of("qw/scale/0"), "'qw/scale/0'", "f32[16]", "expected f32[15]"});
    }
    SECTION("graphdef") {
      io::RestoreOptions same;
      same.graphdef = graphdef;
      CHECK(io::restore_checkpoint(dir.path, abstract_state(8, 2), same) == state);

      io::RestoreOptions other;
      other.graphdef = nnx::graphdef(make_net(8, 2, 7, "relu"));  // differs in a static only
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 2), other); },
                   {meta_file, "graphdef differs", "node 2", "relu", "gelu"});
      other.graphdef = nnx::graphdef(make_net(8, 3, 7));
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 2), other); },
                   {meta_file, "graphdef differs", "leaf 4", "blocks/2/kernel"});
      other.graphdef = nnx::graphdef(make_net(6, 2, 7));
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 2), other); },
                   {meta_file, "leaf 0", "'blocks/0/kernel'", "[6,6]", "[8,8]"});
      // The filter overload takes a graphdef too.
      expect_error([&] { io::restore_checkpoint(dir.path, abstract_state(8, 2), nnx::everything, other.graphdef); },
                   {"graphdef differs"});
    }
  }
}

TEST_CASE("checkpoint: partial restore by filter", "[io][checkpoint]") {
  TempDir dir;
  Net net = make_net(8, 2, 9);
  State state = state_of(net);
  io::save_checkpoint(dir.path, state, {}, nullptr, shards(0));  // one tensor per shard
  const State target = abstract_state(8, 2);

  State params = io::restore_checkpoint(dir.path, target, nnx::of<nnx::Param>);
  CHECK(params == state.filter(nnx::of<nnx::Param>));
  State caches = io::restore_checkpoint(dir.path, target, nnx::of<nnx::Cache>);
  CHECK(caches == state.filter(nnx::of<nnx::Cache>));
  io::RestoreOptions o;
  o.filter = [](const nnx::Path& p, const nnx::VariableState&) { return p.contains("blocks"); };
  CHECK(io::restore_checkpoint(dir.path, target, o).size() == 4);
  auto by_lambda = io::restore_checkpoint(dir.path, target, [](const nnx::Path& p, const nnx::VariableState& v) {
    return p.contains(1) && v.dtype() == DType::f32;
  });
  CHECK(by_lambda.size() == 1);
  CHECK(by_lambda.contains(nnx::Path{"blocks", 1, "kernel"}));
  CHECK(io::restore_checkpoint(dir.path, target, nnx::nothing).empty());

  // Only the shards a partial restore needs are read: corrupt the cache's shard.
  const auto cache_file = dir.path / read_index(dir.path).at("weight_map").at("cache").get<std::string>();
  const std::string bytes = read_bytes(cache_file);
  write_bytes(cache_file, bytes.substr(0, bytes.size() - 1));
  CHECK(io::restore_checkpoint(dir.path, target, nnx::of<nnx::Param>) == state.filter(nnx::of<nnx::Param>));
  expect_error([&] { io::restore_checkpoint(dir.path, target); }, {cache_file.string()});
}

TEST_CASE("checkpoint: corrupt or foreign directories are CheckpointErrors naming the file", "[io][checkpoint]") {
  const State state = state_of(make_net(8, 2, 13));
  const State target = abstract_state(8, 2);

  SECTION("no checkpoint") {
    TempDir dir;
    expect_error([&] { io::restore_checkpoint(dir.path / "nope", target); }, {"nope", "no such checkpoint directory"});
    expect_error([&] { io::restore_checkpoint(dir.path, target); }, {dir.path.string(), "no checkpoint here"});
  }
  SECTION("a plain safetensors file is not an nnx checkpoint") {
    TempDir dir;
    io::save_safetensors(dir.path / "model.safetensors",
                         std::vector<std::pair<std::string, Tensor>>{{"cache", Tensor::zeros({2, 8})}});
    expect_error([&] { io::restore_checkpoint(dir.path, target); }, {"model.safetensors", "not an nnx checkpoint"});
    io::save_safetensors(dir.path / "model.safetensors", std::vector<std::pair<std::string, Tensor>>{},
                         {{"nnx.format", "nnx.checkpoint/99"}});
    expect_error([&] { io::restore_checkpoint(dir.path, target); }, {"model.safetensors", "nnx.checkpoint/99"});
    io::save_safetensors(dir.path / "model.safetensors", std::vector<std::pair<std::string, Tensor>>{},
                         {{"nnx.format", "nnx.checkpoint/1"}, {"nnx.kinds", "{bad json"}, {"nnx.graphdef", "[]"}});
    expect_error([&] { io::restore_checkpoint(dir.path, State{}); }, {"model.safetensors", "nnx.kinds", "not valid JSON"});
    expect_error([&] { io::checkpoint_graphdef(dir.path); }, {"model.safetensors", "stored graphdef"});
  }
  SECTION("a single file truncated at any length") {
    TempDir dir;
    io::save_checkpoint(dir.path, state);
    const fs::path file = dir.path / "model.safetensors";
    const std::string bytes = read_bytes(file);
    int failures = 0;
    for (std::size_t len = 0; len < bytes.size(); len += (len < 600 ? 1 : 7)) {
      write_bytes(file, bytes.substr(0, len));
      try {
        io::restore_checkpoint(dir.path, target);
        ++failures;
      } catch (const nnx::CheckpointError& e) {
        if (std::string(e.what()).find(file.string()) == std::string::npos) ++failures;
      }
    }
    CHECK(failures == 0);
  }
  SECTION("index problems") {
    TempDir dir;
    io::save_checkpoint(dir.path, state, {}, nullptr, shards(kSmallShard));
    const fs::path index = dir.path / std::string(io::checkpoint_index_name);
    const std::string good = read_bytes(index);
    auto j = nlohmann::json::parse(good);
    const std::string index_s = index.string();
    auto with_index = [&](const std::string& text, std::initializer_list<std::string> parts) {
      write_bytes(index, text);
      expect_error([&] { io::restore_checkpoint(dir.path, target); }, parts);
      write_bytes(index, good);
    };
    with_index("{\"metadata\": ", {index_s, "not valid JSON"});
    with_index("[]", {index_s, "JSON object"});
    with_index("{\"metadata\": {\"nnx.format\": \"nnx.checkpoint/1\"}}", {index_s, "weight_map"});
    with_index(good.substr(0, good.size() / 2), {index_s, "not valid JSON"});
    with_index("\xef\xbb\xbf" + good.substr(0, 10) + "\xff" + good.substr(10), {index_s});

    for (const char* evil : {"../model.safetensors", "/etc/passwd", "", "..", "model.safetensors.index.json"}) {
      auto bad = j;
      bad["weight_map"]["cache"] = evil;
      with_index(bad.dump(), {index_s, "'cache'", "not a file name"});
    }
    auto bad = j;
    bad["weight_map"]["cache"] = 3;
    with_index(bad.dump(), {index_s, "'cache'"});
    bad = j;
    bad["metadata"]["nnx.kinds"] = nlohmann::json::array();
    with_index(bad.dump(), {index_s, "metadata"});

    // The index places a tensor in the wrong shard, or forgets one a shard holds.
    bad = j;
    bad["weight_map"]["cache"] = j["weight_map"]["blocks/0/kernel"];
    with_index(bad.dump(), {"'cache'"});
    bad = j;
    bad["weight_map"].erase("blocks/0/bias");
    with_index(bad.dump(), {"'blocks/0/bias'"});
    // A shard that is missing.
    const fs::path shard = dir.path / j["weight_map"]["cache"].get<std::string>();
    const std::string shard_bytes = read_bytes(shard);
    fs::remove(shard);
    expect_error([&] { io::restore_checkpoint(dir.path, target); }, {shard.string(), "cannot open"});
    write_bytes(shard, shard_bytes);
    CHECK(io::restore_checkpoint(dir.path, target) == state);
  }
  SECTION("a shard from another save") {
    TempDir a, b;
    io::save_checkpoint(a.path, state, {}, nullptr, shards(kSmallShard));
    io::save_checkpoint(b.path, state, {}, nullptr, shards(kSmallShard));
    const std::string file = read_index(a.path).at("weight_map").at("cache").get<std::string>();
    fs::copy_file(b.path / file, a.path / file, fs::copy_options::overwrite_existing);
    expect_error([&] { io::restore_checkpoint(a.path, target); }, {(a.path / file).string(), "another save"});
  }
}

TEST_CASE("checkpoint: saving an abstract state writes nothing", "[io][checkpoint]") {
  TempDir dir;
  const fs::path d = dir.path / "ckpt";
  try {
    io::save_checkpoint(d, abstract_state(8, 2));
    FAIL("no InvalidArgument");
  } catch (const nnx::InvalidArgument& e) {
    CHECK(std::string(e.what()).find("'blocks/0/kernel'") != std::string::npos);
  }
  CHECK_FALSE(fs::exists(d));
}

// ---- foreign directories ------------------------------------------------------------------

namespace {

std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = read_bytes(e.path());
  return out;
}

// A Hugging Face style directory: config.json and a model.safetensors without nnx metadata.
void write_hf_dir(const fs::path& dir) {
  fs::create_directories(dir);
  write_bytes(dir / "config.json", R"({"model_type": "gpt2"})");
  io::save_safetensors(dir / "model.safetensors",
                       std::vector<std::pair<std::string, Tensor>>{{"wte.weight", Tensor::zeros({4, 2})}},
                       {{"format", "pt"}});
}

}  // namespace

TEST_CASE("checkpoint: save refuses a directory holding a foreign model and changes nothing", "[io][checkpoint]") {
  const State state = state_of(make_net(8, 2, 21));
  auto refused = [&](const fs::path& dir, const io::CheckpointOptions& o, std::initializer_list<std::string> parts) {
    const auto before = snapshot(dir);
    expect_error([&] { io::save_checkpoint(dir, state, {}, nullptr, o); }, parts);
    CHECK(snapshot(dir) == before);  // byte for byte, and no temp file
  };

  SECTION("a Hugging Face directory") {
    TempDir tmp;
    write_hf_dir(tmp.path);
    CHECK(io::foreign_checkpoint_content(tmp.path).find("config.json") != std::string::npos);
    for (std::size_t max_shard : {kBigShard, kSmallShard})
      refused(tmp.path, shards(max_shard),
              {tmp.path.string() + ": holds config.json", "model.safetensors without \"nnx.format\"", "overwrite_foreign"});
  }
  SECTION("a sharded Hugging Face directory (index without nnx.format)") {
    TempDir tmp;
    const fs::path dir = tmp.path / "llama";
    fs::copy(fs::path(NNX_TEST_DATA_DIR) / "reference" / "llama_sharded", dir);
    refused(dir, shards(kSmallShard), {dir.string(), "config.json", "model.safetensors.index.json without \"nnx.format\""});
    fs::remove(dir / "config.json");  // the index alone is foreign too
    refused(dir, shards(kBigShard), {dir.string(), "model.safetensors.index.json without \"nnx.format\""});
  }
  SECTION("safetensors without nnx.format, or unreadable, and no config.json") {
    TempDir tmp;
    io::save_safetensors(tmp.path / "model.safetensors",
                         std::vector<std::pair<std::string, Tensor>>{{"w", Tensor::zeros({3})}});
    refused(tmp.path, {}, {tmp.path.string(), "model.safetensors without \"nnx.format\" in its metadata"});
    write_bytes(tmp.path / "model.safetensors", "not safetensors");
    refused(tmp.path, {}, {tmp.path.string(), "model.safetensors that cannot be read"});
  }
  SECTION("an nnx checkpoint with a config.json beside it (loaders would read it as Hugging Face)") {
    TempDir tmp;
    io::save_checkpoint(tmp.path, state);
    write_bytes(tmp.path / "config.json", "{}");
    refused(tmp.path, {}, {tmp.path.string(), "holds config.json"});
  }
  SECTION("nothing foreign: absent, empty, an nnx checkpoint, other files") {
    TempDir tmp;
    CHECK(io::foreign_checkpoint_content(tmp.path / "absent").empty());
    CHECK(io::foreign_checkpoint_content(tmp.path).empty());
    write_bytes(tmp.path / "tokenizer.json", "{}");
    io::save_checkpoint(tmp.path, state, {}, nullptr, shards(kSmallShard));
    CHECK(io::foreign_checkpoint_content(tmp.path).empty());
    io::save_checkpoint(tmp.path, state);
    CHECK(io::foreign_checkpoint_content(tmp.path).empty());
  }
}

TEST_CASE("checkpoint: overwrite_foreign replaces a foreign model whole", "[io][checkpoint]") {
  const State state = state_of(make_net(8, 2, 22));
  io::CheckpointOptions force;
  force.overwrite_foreign = true;
  for (std::size_t max_shard : {kBigShard, kSmallShard}) {
    INFO("max_shard_bytes " << max_shard);
    TempDir tmp;
    const fs::path dir = tmp.path / "llama";
    fs::copy(fs::path(NNX_TEST_DATA_DIR) / "reference" / "llama_sharded", dir);
    force.max_shard_bytes = max_shard;
    io::save_checkpoint(dir, state, {}, nullptr, force);
    // No Hugging Face file is left to contradict the checkpoint; other files stay.
    std::set<std::string> want = expected_files(dir);
    want.insert("expected.safetensors");
    CHECK(files_in(dir) == want);
    CHECK(io::checkpoint_metadata(dir).at("nnx.format") == "nnx.checkpoint/1");
    CHECK(io::restore_checkpoint(dir, abstract_state(8, 2)) == state);
    CHECK(io::foreign_checkpoint_content(dir).empty());

    TempDir hf;
    write_hf_dir(hf.path);
    io::save_checkpoint(hf.path, state, {}, nullptr, force);
    CHECK(files_in(hf.path) == expected_files(hf.path));
    CHECK(io::restore_checkpoint(hf.path, abstract_state(8, 2)) == state);
  }
}

// A foreign index may name shards that are not there, even ones no file system could hold: a
// forced save removes what is there and saves (fuzz_checkpoint found the save refusing,
// "cannot remove it to replace it: File name too long").
TEST_CASE("checkpoint: overwrite_foreign passes over shards a foreign index names but lacks", "[io][checkpoint]") {
  const State state = state_of(make_net(8, 2, 22));
  TempDir tmp;
  const std::string too_long = std::string(300, 'x') + ".safetensors";
  write_bytes(tmp.path / "model.safetensors.index.json",
              R"({"metadata": {}, "weight_map": {"a": ")" + too_long + R"(", "b": "missing.safetensors"}})");
  CHECK_FALSE(io::foreign_checkpoint_content(tmp.path).empty());
  io::CheckpointOptions force;
  force.overwrite_foreign = true;
  io::save_checkpoint(tmp.path, state, {}, nullptr, force);
  CHECK(io::restore_checkpoint(tmp.path, abstract_state(8, 2)) == state);
  CHECK(io::foreign_checkpoint_content(tmp.path).empty());
}

// ---- checksums ------------------------------------------------------------------------------

namespace {

void flip_byte(const fs::path& file, std::size_t offset_from_end) {
  std::string bytes = read_bytes(file);
  bytes[bytes.size() - 1 - offset_from_end] ^= 0x20;
  write_bytes(file, bytes);
}

std::uint64_t xxh64(std::string_view s) {
  io::detail::Xxh64 h;
  h.update(s.data(), s.size());
  return h.digest();
}

}  // namespace

TEST_CASE("checkpoint: XXH64 matches the reference implementation", "[io][checkpoint]") {
  CHECK(xxh64("") == 0xEF46DB3751D8E999ull);
  CHECK(xxh64("a") == 0xD24EC4F1A98C6E5Bull);
  CHECK(xxh64("abc") == 0x44BC2CF5AD770999ull);
  CHECK(xxh64("Nobody inspects the spammish repetition") == 0xFBCEA83C8A378BF1ull);  // stripes + tail
  // Fed in pieces of every size, the hash is the same (`xxhsum -H64` on these 1000 bytes).
  std::string data(1000, '\0');
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + 3);
  for (std::size_t piece : {1, 3, 8, 31, 32, 33, 999}) {
    io::detail::Xxh64 h;
    for (std::size_t i = 0; i < data.size(); i += piece) h.update(data.data() + i, std::min(piece, data.size() - i));
    CHECK(h.digest() == xxh64(data));
  }
  CHECK(xxh64(data) == 0x5F235FA033F1A3FBull);
}

TEST_CASE("checkpoint: every file carries a checksum that verify_checkpoint checks", "[io][checkpoint]") {
  const State state = state_of(make_net(8, 2, 23));
  const State target = abstract_state(8, 2);
  io::RestoreOptions verify;
  verify.verify_checksums = true;

  SECTION("one file") {
    TempDir dir;
    io::save_checkpoint(dir.path, state, {}, {{"act", "gelu"}});
    const fs::path file = dir.path / "model.safetensors";
    CHECK(io::checkpoint_metadata(dir.path).at("nnx.checksum").starts_with("xxh64:"));
    auto v = io::verify_checkpoint(dir.path);
    CHECK(v.files_verified == 1);
    CHECK(v.files_without_checksum == 0);
    CHECK(v.bytes_hashed == state.nbytes());
    CHECK(io::restore_checkpoint(dir.path, target, verify) == state);

    const std::string good = read_bytes(file);
    const std::string stored = io::checkpoint_metadata(dir.path).at("nnx.checksum");
    flip_byte(file, 0);  // the last byte of tensor data
    // Without verification a flipped byte goes unnoticed: that is what checksums are for.
    CHECK_FALSE(io::restore_checkpoint(dir.path, target) == state);
    expect_error([&] { io::verify_checkpoint(dir.path); },
                 {file.string(), "checksum mismatch", "\"nnx.checksum\" says " + stored, "the contents hash to xxh64:"});
    expect_error([&] { io::restore_checkpoint(dir.path, target, verify); }, {file.string(), "checksum mismatch"});

    // Metadata is covered too: a config edited in place (still valid JSON).
    std::string edited = good;
    edited.replace(edited.find("gelu"), 4, "relu");
    write_bytes(file, edited);
    CHECK(io::checkpoint_config(dir.path) == nlohmann::json{{"act", "relu"}});
    expect_error([&] { io::verify_checkpoint(dir.path); }, {file.string(), "checksum mismatch"});
    // A checksum that is not one.
    edited = good;
    edited.replace(edited.find("xxh64:"), 6, "xxh99:");
    write_bytes(file, edited);
    expect_error([&] { io::verify_checkpoint(dir.path); }, {file.string(), "xxh99:", "expected \"xxh64:\""});
  }
  SECTION("shards and the index") {
    TempDir dir;
    io::save_checkpoint(dir.path, state, {}, {{"act", "gelu"}}, shards(kSmallShard));
    const auto index = read_index(dir.path);
    const std::set<std::string> files = expected_files(dir.path);
    CHECK(index.at("metadata").at("nnx.checksum").get<std::string>().starts_with("xxh64:"));
    for (const auto& f : files)
      if (f != io::checkpoint_index_name)
        CHECK(io::SafetensorsFile::open(dir.path / f).metadata().at("nnx.checksum").starts_with("xxh64:"));
    const auto v = io::verify_checkpoint(dir.path);
    CHECK(v.files_verified == files.size());  // the shards and the index
    CHECK(v.bytes_hashed == state.nbytes());
    CHECK(io::restore_checkpoint(dir.path, target, verify) == state);

    // A flipped byte in one shard: the error names that shard.
    const fs::path cache = dir.path / index.at("weight_map").at("cache").get<std::string>();
    const std::string cache_bytes = read_bytes(cache);
    flip_byte(cache, 3);
    expect_error([&] { io::verify_checkpoint(dir.path); }, {cache.string(), "checksum mismatch"});
    expect_error([&] { io::restore_checkpoint(dir.path, target, verify); }, {cache.string(), "checksum mismatch"});
    // A partial restore verifies only the shards it reads.
    io::RestoreOptions blocks_only = verify;
    blocks_only.filter = [](const nnx::Path& p, const nnx::VariableState&) { return p.contains("blocks"); };
    CHECK(io::restore_checkpoint(dir.path, target, blocks_only).size() == 4);
    write_bytes(cache, cache_bytes);

    // The index: an edit that keeps it valid JSON.
    const fs::path index_file = dir.path / std::string(io::checkpoint_index_name);
    const std::string good = read_bytes(index_file);
    std::string edited = good;
    edited.replace(edited.find("gelu"), 4, "relu");
    write_bytes(index_file, edited);
    expect_error([&] { io::verify_checkpoint(dir.path); }, {index_file.string(), "checksum mismatch"});
    write_bytes(index_file, good);

    // A shard whose checksum was removed, under an index that has one.
    auto f = io::SafetensorsFile::open(cache);
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& name : f.names()) tensors.emplace_back(name, f.get(name));
    auto meta = f.metadata();
    meta.erase("nnx.checksum");
    io::save_safetensors(cache, tensors, meta);
    expect_error([&] { io::verify_checkpoint(dir.path); }, {cache.string(), "no \"nnx.checksum\"", "has one"});
  }
  SECTION("a checkpoint saved without checksums (as before they existed) loads; nothing to verify") {
    for (std::size_t max_shard : {kBigShard, kSmallShard}) {
      TempDir dir;
      io::CheckpointOptions o = shards(max_shard);
      o.checksums = false;
      io::save_checkpoint(dir.path, state, {}, nullptr, o);
      CHECK(io::checkpoint_metadata(dir.path).count("nnx.checksum") == 0);
      CHECK(io::restore_checkpoint(dir.path, target, verify) == state);
      const auto v = io::verify_checkpoint(dir.path);
      CHECK(v.files_verified == 0);
      CHECK(v.files_without_checksum == expected_files(dir.path).size());
    }
  }
}
