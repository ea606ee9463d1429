// Shared by the model tests: loading the PyTorch reference fixtures of tests/reference/.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/io/huggingface.hpp>
#include <nnx/io/safetensors.hpp>
#include <nnx/models.hpp>
#include <nnx/quant/weight_dtype.hpp>

namespace fixture {

inline std::filesystem::path dir(const std::string& name) {
  return std::filesystem::path(NNX_TEST_DATA_DIR) / "reference" / name;
}

struct Expected {
  std::vector<std::int32_t> prompt, prompt2, greedy, greedy2;
  nnx::Tensor logits, logits2;  // f32 [T, V], [T2, V]
};

inline std::vector<std::int32_t> ids(const nnx::Tensor& t) {
  std::vector<std::int32_t> out;
  for (std::int64_t v : t.span<std::int64_t>()) out.push_back(static_cast<std::int32_t>(v));
  return out;
}

inline Expected expected(const std::string& name) {
  auto f = nnx::io::SafetensorsFile::open(dir(name) / "expected.safetensors");
  return {ids(f.get("prompt")), ids(f.get("prompt2")), ids(f.get("greedy")), ids(f.get("greedy2")),
          f.get("logits"), f.get("logits2")};
}

// The model of a Hugging Face fixture directory, built abstractly and then loaded.
template <class Model, class Config>
Model load(const std::string& name, nnx::Mode mode, nnx::ModelOptions options = {},
           nnx::DType weights = nnx::DType::f32) {
  auto hf = nnx::io::HfCheckpoint::open(dir(name));
  const Config cfg = Config::from_json(hf.config());
  nnx::Rngs rngs{0};
  Model abstract = nnx::eval_shape([&] { return Model(cfg, mode, rngs, options); });
  nnx::cast_weights(abstract, weights);
  auto [graphdef, params, rest] = nnx::split(abstract, nnx::of<nnx::Param>, nnx::everything);
  nnx::State zeros = rest.map([](const nnx::Tensor& t) { return nnx::Tensor::zeros(t.shape(), t.dtype()); });
  return nnx::merge(graphdef, hf.read_params(params), std::move(zeros));
}

inline nnx::Tensor tokens(const std::vector<std::int32_t>& ids) {
  return nnx::Tensor::from_vector(ids, {1, static_cast<std::int64_t>(ids.size())});
}

// max |a - b| over two f32 tensors of the same number of elements.
inline double max_abs_diff(const nnx::Tensor& a, const nnx::Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  double m = 0;
  auto x = a.span<float>();
  auto y = b.span<float>();
  for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, std::fabs(double(x[i]) - double(y[i])));
  return m;
}

inline std::int32_t argmax(const float* row, std::int64_t n) {
  return static_cast<std::int32_t>(std::max_element(row, row + n) - row);
}

// Greedy decoding: prefill the prompt, then one decode step per new token.
template <class Model>
std::vector<std::int32_t> greedy(Model& model, const std::vector<std::int32_t>& prompt, int n) {
  const auto T = static_cast<std::int64_t>(prompt.size());
  auto out = nnx::prefill(model, tokens(prompt), {T});
  std::vector<std::int32_t> gen;
  nnx::Tensor last = out.last_logits;
  for (int i = 0; i < n; ++i) {
    gen.push_back(argmax(last.data<float>(), last.dim(1)));
    last = nnx::decode_step(model, nnx::Tensor::from_vector(std::vector<std::int32_t>{gen.back()}, {1}), {T + i});
  }
  return gen;
}

}  // namespace fixture
