// examples/ckpt, run as a user runs it: info's parameter count and format, compare on equal,
// perturbed and incomplete checkpoints and across a native checkpoint and the Hugging Face
// directory written from it, export of a TrainState to bf16 (each value the f32 one rounded to
// nearest even, and restorable), convert between stacked and per-layer layouts, and bad input (one line, exit code 2, naming the path).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <nnx/core.hpp>
#include <nnx/engine/checkpoint_tools.hpp>
#include <nnx/io/checkpoint.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/engine.hpp>
#include <nnx/models.hpp>
#include <nnx/quant.hpp>
#include <nnx/train.hpp>

#include "../engine/engine_test_util.hpp"
#include "../support/run_command.hpp"
#include "io_test_util.hpp"

using test_support::example_program;

namespace {

namespace fs = std::filesystem;
using nnx::Tensor;

std::string quote(const fs::path& p) { return "'" + p.string() + "'"; }

test_support::CommandResult ckpt(const std::string& args) {
  return test_support::run_command("'" + example_program("ckpt") + "' " + args);
}

test_support::CommandResult ckpt_generate(const std::string& args) {
  return test_support::run_command("'" + example_program("generate") + "' " + args);
}

// The compare table's row for `path`, split on runs of spaces: path, dtype, shape, abs, rel,
// status words.
std::vector<std::string> row_of(const std::string& out, const std::string& path) {
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    if (!w.empty() && w[0] == path) return w;
  }
  return {};
}

std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

nnx::State clone_state(const nnx::State& s) {
  return s.map([](const Tensor& t) { return t.clone(); });
}

}  // namespace

TEST_CASE("ckpt info and compare on native and Hugging Face checkpoints", "[ckpt][cli]") {
  io_test::TempDir tmp;
  const nnx::Gpt2Config cfg = engine_test::small_gpt2();
  nnx::Rngs rngs{5};
  nnx::Gpt2 model(cfg, nnx::Mode::train, rngs);
  const nnx::State params = nnx::state(model, nnx::of<nnx::Param>);
  const fs::path a = tmp / "a";
  nnx::io::save_checkpoint(a, params, {}, cfg.to_json());

  // info: every leaf listed, the parameter count, the format.
  const auto info = ckpt("info " + quote(a));
  INFO(info.err);
  REQUIRE(info.code == 0);
  CHECK(info.out.find("parameters: " + std::to_string(params.numel()) + "\n") != std::string::npos);
  CHECK(info.out.find("bytes: " + std::to_string(params.nbytes()) + "\n") != std::string::npos);
  CHECK(info.out.find("leaves: " + std::to_string(params.size()) + "\n") != std::string::npos);
  CHECK(info.out.find("format: native, params-only") != std::string::npos);
  CHECK(info.out.find("quantization: none") != std::string::npos);
  CHECK(count(info.out, " Param ") == params.size());
  CHECK(info.out.find("wte/embedding") != std::string::npos);

  // With itself: all equal, exit 0.
  const auto self = ckpt("compare " + quote(a) + " " + quote(a));
  REQUIRE(self.code == 0);
  CHECK(count(self.out, " equal\n") == params.size());
  CHECK(self.out.find(std::to_string(params.size()) + " leaves, " + std::to_string(params.size()) + " equal, 0 not") !=
        std::string::npos);

  // One element of ln_f/bias perturbed by exactly 0.5 (an f32 sum without rounding).
  nnx::State perturbed = clone_state(params);
  float* bias = perturbed.at(nnx::Path::parse("ln_f/bias")).tensor().data<float>();
  const float before = bias[3];
  bias[3] = before + 0.5f;
  REQUIRE(static_cast<double>(bias[3]) - static_cast<double>(before) == 0.5);
  const fs::path b = tmp / "b";
  nnx::io::save_checkpoint(b, perturbed, {}, cfg.to_json());
  const auto diff = ckpt("compare " + quote(a) + " " + quote(b));
  CHECK(diff.code == 1);
  const auto row = row_of(diff.out, "ln_f/bias");
  REQUIRE(row.size() == 6);
  CHECK(row[1] == "f32");
  CHECK(row[2] == "[" + std::to_string(cfg.n_embd) + "]");
  CHECK(std::stod(row[3]) == 0.5);
  CHECK(row[5] == "differs");
  CHECK(count(diff.out, " equal\n") == params.size() - 1);
  // A tolerance that covers it: equal again.
  CHECK(ckpt("compare " + quote(a) + " " + quote(b) + " --atol 0.5 --rtol 0").code == 0);
  CHECK(ckpt("compare " + quote(a) + " " + quote(b) + " --atol 0.49 --rtol 0").code == 1);

  // The same through the library call.
  const auto rows = nnx::compare_checkpoints(nnx::read_checkpoint_contents(a), nnx::read_checkpoint_contents(b));
  std::size_t differing = 0;
  for (const auto& r : rows) {
    if (r.status == nnx::CompareStatus::equal) continue;
    ++differing;
    CHECK(r.path == "ln_f/bias");
    CHECK(r.max_abs_diff == 0.5);
    CHECK(r.max_rel_diff == 0.5 / std::fabs(static_cast<double>(bias[3])));  // relative to B's value
  }
  CHECK(differing == 1);

  // A leaf missing from B, and (swapped) from A.
  nnx::State fewer;
  for (const auto& [path, leaf] : params)
    if (path.to_string() != "wpe/embedding") fewer.insert(path, leaf);
  const fs::path c = tmp / "c";
  nnx::io::save_checkpoint(c, fewer, {}, cfg.to_json());
  const auto missing = ckpt("compare " + quote(a) + " " + quote(c));
  CHECK(missing.code == 1);
  const auto mrow = row_of(missing.out, "wpe/embedding");
  REQUIRE(mrow.size() >= 6);
  CHECK(mrow[mrow.size() - 3] == "missing");
  CHECK(mrow.back() == "B");
  const auto missing_a = ckpt("compare " + quote(c) + " " + quote(a));
  CHECK(missing_a.code == 1);
  CHECK(row_of(missing_a.out, "wpe/embedding").back() == "A");

  // A shape mismatch: wpe saved with fewer positions.
  nnx::State shorter = clone_state(params);
  shorter.at(nnx::Path::parse("wpe/embedding")).tensor() = Tensor::zeros({4, cfg.n_embd});
  const fs::path d = tmp / "d";
  nnx::io::save_checkpoint(d, shorter, {}, cfg.to_json());
  const auto shape = ckpt("compare " + quote(a) + " " + quote(d));
  CHECK(shape.code == 1);
  CHECK(row_of(shape.out, "wpe/embedding").back() == "mismatch");

  // Int8 (w8a8, as examples/quantize writes): info reports the QTensor leaves; compare
  // matches them as stored; against the f32 checkpoint they are leaves of their own (qkernel
  // where the f32 model has kernel), missing on the other side.
  {
    const nnx::QuantConfig quant{.scheme = nnx::QuantScheme::w8a8};
    const nnx::Engine<nnx::Gpt2> engine(cfg, {.max_prefill_length = 1, .max_target_length = 2, .slots = 1,
                                              .quant = quant});
    const nnx::State qparams = engine.load_params(a);
    std::size_t qleaves = 0;
    for (const auto& [path, leaf] : qparams) qleaves += leaf.is_quantized();
    REQUIRE(qleaves > 0);
    nlohmann::json qconfig = cfg.to_json();
    qconfig["quantization"] = quant.to_json();
    const fs::path q = tmp / "q";
    nnx::io::save_checkpoint(q, qparams, {}, qconfig);
    const auto qinfo = ckpt("info " + quote(q));
    INFO(qinfo.err);
    REQUIRE(qinfo.code == 0);
    CHECK(qinfo.out.find("quantization: int8 (" + std::to_string(qleaves) + " QTensor leaves)") != std::string::npos);
    CHECK(qinfo.out.find("i8+scale") != std::string::npos);
    CHECK(ckpt("compare " + quote(q) + " " + quote(q)).code == 0);
    const auto qa = ckpt("compare " + quote(a) + " " + quote(q));
    CHECK(qa.code == 1);
    CHECK(count(qa.out, "missing in A\n") == qleaves);
    CHECK(row_of(qa.out, "h/0/attn/qkv/qkernel").at(1) == "i8+scale");
  }

  // The Hugging Face directory written from the same parameters: equal leaf by leaf.
  const fs::path hf = tmp / "hf";
  nnx::io::save_hf(hf, cfg.to_json(), params);
  const auto cross = ckpt("compare " + quote(a) + " " + quote(hf));
  INFO(cross.out << cross.err);
  CHECK(cross.code == 0);
  CHECK(count(cross.out, " equal\n") == params.size());
  const auto hf_info = ckpt("info " + quote(hf));
  REQUIRE(hf_info.code == 0);
  CHECK(hf_info.out.find("parameters: " + std::to_string(params.numel()) + "\n") != std::string::npos);
  CHECK(hf_info.out.find("format: hugging face (gpt2)") != std::string::npos);
  // ... and a bf16 one differs by the rounding, with a dtype mismatch.
  const fs::path hf16 = tmp / "hf16";
  nnx::io::save_hf(hf16, cfg.to_json(), params, nnx::DType::bf16);
  const auto cross16 = ckpt("compare " + quote(a) + " " + quote(hf16));
  CHECK(cross16.code == 1);
  CHECK(row_of(cross16.out, "wte/embedding").back() == "mismatch");
  CHECK(row_of(cross16.out, "wte/embedding")[1] == "f32/bf16");
}

TEST_CASE("ckpt export: a TrainState's params, rounded to bf16, native or Hugging Face", "[ckpt][cli]") {
  io_test::TempDir tmp;
  const nnx::LlamaConfig cfg = engine_test::small_llama();
  nnx::Rngs rngs{7};
  nnx::Llama model(cfg, nnx::Mode::train, rngs);
  nnx::train::OptimizerConfig opt{.lr = {.peak = 0.01}};
  nnx::train::TrainState<nnx::Llama> ts(model, opt);
  std::vector<std::int32_t> ids(2 * 8), next(2 * 8);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int32_t>((i * 7 + 3) % cfg.vocab_size);
    next[i] = static_cast<std::int32_t>((i * 7 + 10) % cfg.vocab_size);
  }
  auto [stepped, m] = nnx::train::train_step(std::move(ts), Tensor::from_vector(ids, {2, 8}),
                                            Tensor::from_vector(next, {2, 8}));
  REQUIRE(m.step == 1);
  // Saved as examples/train saves DIR/state.
  const fs::path state_dir = tmp / "run" / "state";
  {
    auto [graphdef, leaves] = nnx::split(stepped, nnx::everything);
    nnx::io::save_checkpoint(state_dir, leaves, {}, {{"model", cfg.to_json()}, {"run", nlohmann::json::object()}});
  }
  const nnx::State params = nnx::state(stepped.model, nnx::of<nnx::Param>);

  const auto info = ckpt("info " + quote(state_dir));
  REQUIRE(info.code == 0);
  CHECK(info.out.find("parameters: " + std::to_string(params.numel()) + "\n") != std::string::npos);
  CHECK(info.out.find("format: native, TrainState") != std::string::npos);
  CHECK(info.out.find("OptState") != std::string::npos);

  const fs::path out = tmp / "bf16";
  const auto ex = ckpt("export --in " + quote(state_dir) + " --out " + quote(out) + " --dtype bf16");
  INFO(ex.err);
  REQUIRE(ex.code == 0);
  // Restores into the model's bf16 parameter tree as generate builds it (cast_weights: each
  // Linear's `weight` [out, in] and the embeddings bf16, norms f32); every bf16 value is its f32
  // one rounded to nearest even, every f32 value unchanged.
  nnx::Llama bf16_model = nnx::eval_shape([&] { return nnx::Llama(cfg, nnx::Mode::train, rngs); });
  nnx::cast_weights(bf16_model, nnx::DType::bf16);
  const nnx::State target = nnx::state(bf16_model, nnx::of<nnx::Param>);
  const nnx::State restored = nnx::io::restore_checkpoint(out, target);
  REQUIRE(restored.size() == params.size());
  std::size_t mismatched = 0, values = 0, rounded = 0;
  for (const auto& [path, leaf] : restored) {
    const Tensor& got = leaf.tensor();
    const bool weight = path.back().to_string() == "weight";
    const nnx::Path kernel = path.parent() / nnx::PathKey(std::string_view("kernel"));
    const Tensor f32 =
        weight ? nnx::transpose_2d(params.at(kernel).tensor(), nnx::DType::f32) : params.at(path).tensor();
    REQUIRE(f32.shape() == got.shape());
    const float* f = f32.data<float>();
    for (std::int64_t i = 0; i < got.numel(); ++i, ++values) {
      if (got.dtype() == nnx::DType::bf16) {
        std::uint16_t bits;
        std::memcpy(&bits, &got.data<nnx::bf16>()[i], 2);
        mismatched += bits != nnx::f32_to_bf16_bits(f[i]);
        ++rounded;
      } else {
        mismatched += got.data<float>()[i] != f[i];
      }
    }
  }
  CHECK(values == static_cast<std::size_t>(params.numel()));
  CHECK(rounded > values / 2);
  CHECK(mismatched == 0);
  CHECK(nnx::io::checkpoint_config(out) == cfg.to_json());
  // No optimizer state, no step.
  const auto exported = nnx::read_checkpoint_contents(out);
  CHECK(exported.leaves.size() == params.size());
  CHECK_FALSE(exported.train_state);

  // f32 export equals the train state's model exactly; --hf writes a directory that loads.
  const fs::path out32 = tmp / "f32";
  REQUIRE(ckpt("export --in " + quote(state_dir) + " --out " + quote(out32)).code == 0);
  CHECK(nnx::io::restore_checkpoint(out32, params) == params);
  const fs::path hf = tmp / "hf";
  REQUIRE(ckpt("export --in " + quote(state_dir) + " --out " + quote(hf) + " --hf").code == 0);
  CHECK(nnx::io::HfCheckpoint::open(hf).read_params(params) == params);
  CHECK(ckpt("compare " + quote(out32) + " " + quote(hf)).code == 0);

  // generate serves the bf16 export, with the same tokens as the bf16 Hugging Face export.
  const fs::path hf16 = tmp / "hf16";
  REQUIRE(ckpt("export --in " + quote(state_dir) + " --out " + quote(hf16) + " --hf --dtype bf16").code == 0);
  const std::string gen_args = " --prompt-ids 3,10,17 --max-new-tokens 5";
  const auto gen = ckpt_generate("--model " + quote(out) + gen_args);
  const auto gen_hf = ckpt_generate("--model " + quote(hf16) + gen_args);
  INFO(gen.err << gen_hf.err);
  CHECK(gen.code == 0);
  CHECK(gen_hf.code == 0);
  CHECK(count(gen.out, ",") + count(gen.out, " ") >= 4);  // five ids
  CHECK(gen.out == gen_hf.out);
}

TEST_CASE("ckpt convert: a TrainState to stacked layers and back, bit for bit", "[ckpt][cli][layout]") {
  io_test::TempDir tmp;
  const nnx::LlamaConfig cfg = engine_test::small_llama();
  nnx::Rngs rngs{9};
  nnx::Llama model(cfg, nnx::Mode::train, rngs);
  std::vector<std::int32_t> ids(2 * 8), next(2 * 8);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int32_t>((i * 5 + 1) % cfg.vocab_size);
    next[i] = static_cast<std::int32_t>((i * 5 + 6) % cfg.vocab_size);
  }
  auto [stepped, m] = nnx::train::train_step(nnx::train::TrainState<nnx::Llama>(model, {.lr = {.peak = 0.01}}),
                                            Tensor::from_vector(ids, {2, 8}), Tensor::from_vector(next, {2, 8}));
  const fs::path per_layer = tmp / "run" / "state";
  auto [graphdef, leaves] = nnx::split(stepped, nnx::everything);
  nnx::io::save_checkpoint(per_layer, leaves, {}, {{"model", cfg.to_json()}, {"run", nlohmann::json::object()}});

  const fs::path stacked = tmp / "stacked";
  const auto conv = ckpt("convert --in " + quote(per_layer) + " --out " + quote(stacked) + " --layout stacked");
  INFO(conv.err);
  REQUIRE(conv.code == 0);
  CHECK(conv.out.find("(per-layer)") != std::string::npos);
  const nnx::CheckpointContents a = nnx::read_checkpoint_contents(per_layer);
  const nnx::CheckpointContents s = nnx::read_checkpoint_contents(stacked);
  CHECK(s.train_state);
  CHECK(nnx::io::checkpoint_config(stacked) == nnx::io::checkpoint_config(per_layer));
  // The model's parameters and both AdamW moments are stacked: [n_layer, ...] with a layers axis.
  for (const std::string prefix : {"model/", "mu/", "nu/"}) {
    const nnx::CheckpointLeaf* q = s.find(prefix + "layers/attn/query/kernel");
    INFO(prefix);
    REQUIRE(q);
    CHECK(q->primary().shape() == nnx::Shape{cfg.num_hidden_layers, cfg.hidden_size, cfg.hidden_size});
    CHECK(q->axes.front() == "layers");
    CHECK(nnx::equal(std::get<Tensor>(q->value).select(1),
                     std::get<Tensor>(a.find(prefix + "layers/1/attn/query/kernel")->value)));
    CHECK(s.find(prefix + "layers/0/attn/query/kernel") == nullptr);
  }
  CHECK(s.parameter_count() == a.parameter_count());
  const auto info = ckpt("info " + quote(stacked));
  CHECK(info.out.find("layout: stacked\n") != std::string::npos);
  CHECK(ckpt("info " + quote(per_layer)).out.find("layout: per-layer\n") != std::string::npos);
  // Compared across layouts, per layer: every leaf equal with no tolerance.
  const auto cmp = ckpt("compare " + quote(stacked) + " " + quote(per_layer) + " --rtol 0 --atol 0");
  INFO(cmp.out);
  CHECK(cmp.code == 0);
  CHECK(row_of(cmp.out, "model/layers/1/mlp/up/kernel").size() >= 6);

  // Back to per-layer: the same leaves in the same order, kinds, axes and bytes.
  const fs::path back = tmp / "back";
  REQUIRE(ckpt("convert --in " + quote(stacked) + " --out " + quote(back) + " --layout per-layer").code == 0);
  const nnx::CheckpointContents b = nnx::read_checkpoint_contents(back);
  REQUIRE(b.leaves.size() == a.leaves.size());
  std::size_t different = 0;
  for (std::size_t i = 0; i < a.leaves.size(); ++i) {
    const nnx::CheckpointLeaf &x = a.leaves[i], &y = b.leaves[i];
    const bool same = x.path == y.path && x.kind == y.kind && x.axes == y.axes && x.quantized() == y.quantized() &&
                      nnx::equal(x.value, y.value);
    if (!same) UNSCOPED_INFO("differs: " << x.path << " / " << y.path);
    different += !same;
  }
  CHECK(different == 0);
  // Converting again to stacked gives the stacked checkpoint's leaves exactly.
  const fs::path again = tmp / "again";
  REQUIRE(ckpt("convert --in " + quote(back) + " --out " + quote(again) + " --layout stacked").code == 0);
  const nnx::CheckpointContents s2 = nnx::read_checkpoint_contents(again);
  REQUIRE(s2.leaves.size() == s.leaves.size());
  for (std::size_t i = 0; i < s.leaves.size(); ++i) {
    CHECK(s2.leaves[i].path == s.leaves[i].path);
    CHECK(nnx::equal(s2.leaves[i].value, s.leaves[i].value));
  }

  // A stacked params export is served stacked by generate, with the per-layer export's tokens.
  const fs::path params_stacked = tmp / "params_stacked", params_per = tmp / "params_per";
  REQUIRE(ckpt("export --in " + quote(stacked) + " --out " + quote(params_stacked)).code == 0);
  REQUIRE(ckpt("export --in " + quote(per_layer) + " --out " + quote(params_per)).code == 0);
  CHECK(nnx::io::checkpoint_layout(params_stacked, "layers") == nnx::Layout::stacked);
  const std::string gen_args = " --prompt-ids 3,10,17 --max-new-tokens 6";
  const auto gen_s = ckpt_generate("--model " + quote(params_stacked) + gen_args);
  const auto gen_p = ckpt_generate("--model " + quote(params_per) + gen_args);
  INFO(gen_s.err << gen_p.err);
  CHECK(gen_s.code == 0);
  CHECK(gen_s.out == gen_p.out);

  // Bad input: a Hugging Face directory, a bad layout, a checkpoint without a config.
  const fs::path hf = tmp / "hf";
  REQUIRE(ckpt("export --in " + quote(per_layer) + " --out " + quote(hf) + " --hf").code == 0);
  const auto from_hf = ckpt("convert --in " + quote(hf) + " --out " + quote(tmp / "x") + " --layout stacked");
  CHECK(from_hf.code == 2);
  CHECK(from_hf.err.find(hf.string()) != std::string::npos);
  const auto bad_layout = ckpt("convert --in " + quote(per_layer) + " --out " + quote(tmp / "y") + " --layout rows");
  CHECK(bad_layout.code == 2);
  CHECK(bad_layout.err.find("'rows'") != std::string::npos);
  const fs::path bare = tmp / "bare";
  nnx::io::save_checkpoint(bare, nnx::state(model, nnx::of<nnx::Param>));
  const auto no_config = ckpt("convert --in " + quote(bare) + " --out " + quote(tmp / "z") + " --layout stacked");
  CHECK(no_config.code == 2);
  CHECK(no_config.err.find("model config") != std::string::npos);
}

TEST_CASE("ckpt bad input: one line naming the path, exit 2", "[ckpt][cli]") {
  io_test::TempDir tmp;
  auto one_line = [](const test_support::CommandResult& r) {
    return r.err.starts_with("ckpt: ") && count(r.err, "\n") == 1;
  };
  const fs::path nowhere = tmp / "nowhere";
  const auto missing = ckpt("info " + quote(nowhere));
  CHECK(missing.code == 2);
  CHECK(one_line(missing));
  CHECK(missing.err.find(nowhere.string()) != std::string::npos);

  const fs::path corrupt = tmp / "corrupt";
  fs::create_directories(corrupt);
  io_test::write_bytes(corrupt / "model.safetensors", "not a safetensors file");
  const auto bad = ckpt("compare " + quote(corrupt) + " " + quote(corrupt));
  CHECK(bad.code == 2);
  CHECK(one_line(bad));
  CHECK(bad.err.find((corrupt / "model.safetensors").string()) != std::string::npos);

  const auto flag = ckpt("compare a b --tolerance 1");
  CHECK(flag.code == 2);
  CHECK(flag.err.find("--tolerance") != std::string::npos);
  const auto number = ckpt("compare a b --rtol abc");
  CHECK(number.code == 2);
  CHECK(number.err.find("--rtol: 'abc'") != std::string::npos);
  for (const std::string cmd : {"compare a b --rtol", "export --in a --out", "convert --in a --out b --layout",
                                 "merge-lora --in a --lora"}) {
    const auto dangling = ckpt(cmd);
    INFO(cmd);
    CHECK(dangling.code == 2);
    CHECK(one_line(dangling));
    const std::string flag_name = cmd.substr(cmd.rfind(' ') + 1);
    CHECK(dangling.err.find(flag_name + " needs a value") != std::string::npos);
  }
  const auto sub = ckpt("rotate --in a --out b");
  CHECK(sub.code == 2);
  CHECK(sub.err.find("unknown subcommand 'rotate' (expected info, compare, export, convert or merge-lora)") !=
        std::string::npos);
  const auto no_layout = ckpt("convert --in a --out b");
  CHECK(no_layout.code == 2);
  CHECK(no_layout.err.find("--layout stacked|per-layer") != std::string::npos);
  const auto dtype = ckpt("export --in a --out b --dtype f16");
  CHECK(dtype.code == 2);
  CHECK(dtype.err.find("--dtype: 'f16'") != std::string::npos);
  const auto no_in = ckpt("export --in " + quote(nowhere) + " --out " + quote(tmp / "x"));
  CHECK(no_in.code == 2);
  CHECK(no_in.err.find(nowhere.string()) != std::string::npos);
}
