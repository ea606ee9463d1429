// Hugging Face export writes the layout import reads: a round trip gives the same values,
// in f32 exactly and in bf16 as the bf16 rounding of each value.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <filesystem>

#include "reference_fixture.hpp"

namespace {

template <class Model, class Config>
void round_trip(const std::string& name) {
  INFO(name);
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("nnx_hf_export_" + name + "_" + std::to_string(::getpid()));
  Model model = fixture::load<Model, Config>(name, nnx::Mode::train);
  const nnx::State params = nnx::state(model, nnx::of<nnx::Param>);

  nnx::io::save_hf(out / "f32", model.config.to_json(), params);
  nnx::io::save_hf(out / "bf16", model.config.to_json(), params, nnx::DType::bf16);
  auto f32 = nnx::io::HfCheckpoint::open(out / "f32");
  CHECK(f32.architecture() == nnx::io::HfCheckpoint::open(fixture::dir(name)).architecture());
  CHECK(f32.read_params(params) == params);

  // Every tensor name of the original file comes back (mask buffers aside).
  for (const auto& n : nnx::io::HfCheckpoint::open(fixture::dir(name)).tensor_names())
    if (n.find("attn.bias") == std::string::npos) CHECK(nnx::io::SafetensorsFile::open(out / "f32" / "model.safetensors").contains(n));

  const nnx::State from_bf16 = nnx::io::HfCheckpoint::open(out / "bf16").read_params(params);
  const nnx::State rounded = params.map([](const nnx::Tensor& t) { return t.astype(nnx::DType::bf16).astype(nnx::DType::f32); });
  CHECK(from_bf16 == rounded);
  fs::remove_all(out);
}

}  // namespace

TEST_CASE("Hugging Face export round-trips GPT-2 and Llama", "[io][huggingface]") {
  round_trip<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny");
  round_trip<nnx::Llama, nnx::LlamaConfig>("llama_tiny");
  round_trip<nnx::Llama, nnx::LlamaConfig>("llama_tied");
}
