// Gradients against PyTorch: every parameter's gradient of the mean next-token cross-entropy
// equals torch.autograd's float64 gradient (tests/reference/gen_grads.py) within 1e-4 of its
// largest |value|, and the loss within 1e-5 relative, on GPT-2 (tied head) and Llama (GQA 2
// and 4, tied and untied heads, explicit head_dim, bf16 files widened to f32).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>

#include <nnx/core.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/train.hpp>

#include "../models/reference_fixture.hpp"

namespace {

struct Deviation {
  double max_diff = 0.0, max_ref = 0.0;
};

Deviation compare(const nnx::Tensor& ours, const nnx::Tensor& reference) {
  REQUIRE(ours.shape() == reference.shape());
  Deviation d;
  auto a = ours.span<float>();
  auto b = reference.span<float>();
  for (std::size_t i = 0; i < a.size(); ++i) {
    d.max_diff = std::max(d.max_diff, std::fabs(double(a[i]) - double(b[i])));
    d.max_ref = std::max(d.max_ref, std::fabs(double(b[i])));
  }
  return d;
}

template <class Model, class Config>
void check_fixture(const std::string& name, std::int64_t vocab_tiles = 1) {
  CAPTURE(name, vocab_tiles);
  Model model = fixture::load<Model, Config>(name, nnx::Mode::train);
  auto hf = nnx::io::HfCheckpoint::open(fixture::dir(name));
  auto expected = nnx::io::SafetensorsFile::open(fixture::dir(name) / "grads.safetensors");
  const nnx::Tensor tokens = expected.get("tokens"), targets = expected.get("targets");

  auto result = nnx::train::value_and_grad(model, tokens, targets, {.vocab_tiles = vocab_tiles});
  const double ref_loss = expected.get("loss").data<float>()[0];
  CHECK(std::fabs(result.loss - ref_loss) <= 1e-5 * std::fabs(ref_loss));
  CHECK(result.valid_targets == tokens.numel() - 1);  // the fixture ignores one target

  const nnx::State params = nnx::state(model, nnx::of<nnx::Param>);
  REQUIRE(result.grads.size() == params.size());
  std::size_t compared = 0;
  for (const auto& [path, leaf] : result.grads) {
    CAPTURE(path.to_string());
    CHECK(leaf.dtype() == nnx::DType::f32);
    CHECK(leaf.shape() == params.at(path).shape());
    const auto hf_name = hf.hf_name(path);
    REQUIRE(hf_name);
    nnx::Tensor ours = leaf.tensor();
    if (hf_name->transpose) ours = nnx::transpose_2d(ours, nnx::DType::f32);
    const Deviation d = compare(ours, expected.get(hf_name->name));
    CAPTURE(d.max_diff, d.max_ref);
    CHECK(d.max_ref > 0.0);
    CHECK(d.max_diff <= 1e-4 * d.max_ref);
    ++compared;
  }
  // Every gradient in the file (besides tokens, targets and loss) was compared.
  CHECK(compared + 3 == expected.size());
}

}  // namespace

TEST_CASE("GPT-2 gradients match PyTorch autograd", "[train][parity]") {
  check_fixture<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny");
  check_fixture<nnx::Gpt2, nnx::Gpt2Config>("gpt2_small_bf16");
  check_fixture<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny", /*vocab_tiles=*/5);
}

TEST_CASE("Llama gradients match PyTorch autograd (GQA, tied and untied heads, head_dim, bf16)", "[train][parity]") {
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_tiny");
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_gqa4");
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_tied");
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_head_dim");
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_tiny_bf16");
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_tiny", /*vocab_tiles=*/3);  // untied head
  check_fixture<nnx::Llama, nnx::LlamaConfig>("llama_tied", /*vocab_tiles=*/7);
}
