// DPO against PyTorch: the loss, the rewards and every policy gradient equal torch.autograd's
// float64 values (tests/reference/gen_dpo.py: llama_tiny as the policy, a perturbed copy as
// the reference); the batch layout; dpo_step's update leaving the reference and a held state
// untouched; and the errors.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/train.hpp>
#include <nnx/train/dpo.hpp>

#include "../models/reference_fixture.hpp"

namespace {

namespace train = nnx::train;

std::vector<std::int32_t> ids(const nnx::Tensor& t) {
  const auto s = t.span<std::int32_t>();
  return {s.begin(), s.end()};
}

struct DpoFixture {
  nnx::io::SafetensorsFile file = nnx::io::SafetensorsFile::open(fixture::dir("llama_tiny") / "dpo_grads.safetensors");
  std::vector<train::PreferencePair> pairs;
  double beta = 0;
  DpoFixture() {
    for (int i = 0; i < 2; ++i) {
      const std::string n = std::to_string(i);
      pairs.push_back({ids(file.get("prompt." + n)), ids(file.get("chosen." + n)), ids(file.get("rejected." + n))});
    }
    beta = file.get("beta").data<float>()[0];
  }
};

}  // namespace

TEST_CASE("dpo: loss, rewards and the policy's gradients match PyTorch autograd", "[train][dpo]") {
  DpoFixture fx;
  nnx::Llama policy = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  const nnx::Llama reference = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny_dpo_ref", nnx::Mode::train);
  const train::PreferenceBatch batch = train::preference_batch(fx.pairs, policy.vocab_size());
  const train::DpoResult r = train::dpo_value_and_grad(policy, reference, batch, fx.beta);

  CHECK(r.loss == Approx(fx.file.get("loss").data<float>()[0]).epsilon(1e-5));
  for (int i = 0; i < 2; ++i) {
    CHECK(r.chosen_rewards[i] == Approx(fx.file.get("chosen_rewards").data<float>()[i]).margin(1e-5));
    CHECK(r.rejected_rewards[i] == Approx(fx.file.get("rejected_rewards").data<float>()[i]).margin(1e-5));
  }
  auto hf = nnx::io::HfCheckpoint::open(fixture::dir("llama_tiny"));
  std::size_t compared = 0;
  for (const auto& [path, leaf] : r.grads) {
    CAPTURE(path.to_string());
    const auto name = hf.hf_name(path);
    REQUIRE(name);
    nnx::Tensor ours = leaf.tensor();
    if (name->transpose) ours = nnx::transpose_2d(ours, nnx::DType::f32);
    const nnx::Tensor expected = fx.file.get(name->name);
    REQUIRE(ours.shape() == expected.shape());
    double diff = 0, scale = 0;
    for (std::size_t k = 0; k < ours.span<float>().size(); ++k) {
      diff = std::max(diff, std::fabs(double(ours.span<float>()[k]) - double(expected.span<float>()[k])));
      scale = std::max(scale, std::fabs(double(expected.span<float>()[k])));
    }
    CHECK(scale > 0);
    CHECK(diff <= 1e-4 * scale);
    ++compared;
  }
  CHECK(compared + 10 == fx.file.size());  // besides 6 id arrays, beta, loss and 2 reward arrays
}

TEST_CASE("dpo: the batch holds chosen then rejected rows, response targets only", "[train][dpo]") {
  const std::vector<train::PreferencePair> pairs = {{{1, 2}, {3, 4, 5}, {6}}, {{7}, {8}, {9, 10}}};
  const train::PreferenceBatch b = train::preference_batch(pairs, 11);
  CHECK(b.pairs == 2);
  REQUIRE(b.tokens.shape() == nnx::Shape{4, 4});
  const std::int32_t x = train::kIgnoreTarget;
  CHECK(ids(b.tokens) == std::vector<std::int32_t>{1, 2, 3, 4, /**/ 7, 0, 0, 0, /**/ 1, 2, 0, 0, /**/ 7, 9, 0, 0});
  CHECK(ids(b.targets) == std::vector<std::int32_t>{x, 3, 4, 5, /**/ 8, x, x, x, /**/ x, 6, x, x, /**/ 9, 10, x, x});
  CHECK_THROWS_WITH(train::preference_batch(std::vector<train::PreferencePair>{{{1}, {}, {2}}}, 11),
                    Catch::Contains("pair 0 has an empty chosen response"));
  CHECK_THROWS_WITH(train::preference_batch(std::vector<train::PreferencePair>{{{1}, {2}, {11}}}, 11),
                    Catch::Contains("rejected response: id 11 is outside the vocabulary [0, 11)"));
}

TEST_CASE("dpo_step: the policy moves along the DPO gradient, the reference stays", "[train][dpo]") {
  DpoFixture fx;
  nnx::Llama policy = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  const nnx::Llama reference = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny_dpo_ref", nnx::Mode::train);
  const train::PreferenceBatch batch = train::preference_batch(fx.pairs, policy.vocab_size());
  const nnx::State reference_before = nnx::state(reference, nnx::of<nnx::Param>);
  const train::DpoState<nnx::Llama> state{
      train::TrainState<nnx::Llama>(policy, {.kind = train::OptimizerKind::sgd, .lr = {.peak = 0.5}}), reference};
  const nnx::State policy_before = nnx::state(state.policy.model, nnx::of<nnx::Param>);
  auto [next, m] = train::dpo_step(state, batch, {.beta = fx.beta});
  CHECK(m.loss == Approx(fx.file.get("loss").data<float>()[0]).epsilon(1e-5));
  CHECK(m.step == 1);
  CHECK(m.accuracy == 0.5);  // the fixture's rewards: pair 0 prefers rejected, pair 1 chosen
  // SGD, first step: p - lr g, with g the DPO gradient.
  const train::DpoResult r = train::dpo_value_and_grad(policy, reference, batch, fx.beta);
  const nnx::State after = nnx::state(next.policy.model, nnx::of<nnx::Param>);
  for (const auto& [path, leaf] : policy_before) {
    CAPTURE(path.to_string());
    const auto p0 = leaf.tensor().span<float>(), p1 = after.at(path).tensor().span<float>(),
               g = r.grads.at(path).tensor().span<float>();
    double worst = 0;
    for (std::size_t k = 0; k < p0.size(); ++k)
      worst = std::max(worst, std::fabs(double(p1[k]) - (double(p0[k]) - 0.5 * double(g[k]))));
    CHECK(worst <= 1e-6);
  }
  // The loss fell, the reference and the held state are unchanged.
  CHECK(train::dpo_value_and_grad(next.policy.model, next.reference, batch, fx.beta).loss < m.loss);
  for (const auto& [path, leaf] : reference_before)
    CHECK(nnx::equal(leaf.tensor(), nnx::state(next.reference, nnx::of<nnx::Param>).at(path).tensor()));
  for (const auto& [path, leaf] : policy_before)
    CHECK(nnx::equal(leaf.tensor(), nnx::state(state.policy.model, nnx::of<nnx::Param>).at(path).tensor()));

  CHECK_THROWS_WITH(train::dpo_value_and_grad(policy, reference, batch, 0.0), Catch::Contains("beta must be > 0"));
}
