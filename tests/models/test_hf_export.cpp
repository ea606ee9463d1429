// Hugging Face export writes the layout import reads: a round trip gives the same values,
// in f32 exactly, and in bf16 and f16 as each value's single rounding to that format.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <vector>

#include "reference_fixture.hpp"

namespace {

// The f16 value nearest x, ties to even, computed in double arithmetic instead of on bit
// patterns as the library does, so the two cannot share a mistake: scale x so one f16 unit
// in the last place is 1, round to an integer (nearbyint: ties to even), scale back. Below
// 2^-14 the unit stays 2^-24 (subnormals); past 65504 the value overflows to infinity.
double f16_round(float x) {
  if (std::isnan(x) || std::isinf(x)) return x;
  int e = 0;
  std::frexp(std::fabs(double(x)), &e);  // |x| in [2^(e-1), 2^e)
  const int unit = std::max(e - 11, -24);
  double r = std::ldexp(std::nearbyint(std::ldexp(std::fabs(double(x)), -unit)), unit);
  if (r > 65504.0) r = std::numeric_limits<double>::infinity();
  return std::copysign(r, double(x));
}

// An f16 bit pattern's value, decoded field by field (again not the library's code).
double f16_value(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(mant, -24)
             : exp == 31 ? (mant ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity())
                         : std::ldexp(1024 + mant, exp - 25);
  return sign ? -v : v;
}

nnx::Tensor f16_rounded(const nnx::Tensor& t) {
  nnx::Tensor out = nnx::Tensor::empty(t.shape());
  auto in = t.span<float>();
  float* o = out.data<float>();
  for (std::size_t i = 0; i < in.size(); ++i) o[i] = static_cast<float>(f16_round(in[i]));
  return out;
}

template <class Model, class Config>
void round_trip(const std::string& name) {
  INFO(name);
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("nnx_hf_export_" + name + "_" + std::to_string(::getpid()));
  Model model = fixture::load<Model, Config>(name, nnx::Mode::train);
  const nnx::State params = nnx::state(model, nnx::of<nnx::Param>);

  nnx::io::save_hf(out / "f32", model.config.to_json(), params);
  nnx::io::save_hf(out / "bf16", model.config.to_json(), params, nnx::DType::bf16);
  nnx::io::save_hf(out / "f16", model.config.to_json(), params, nnx::DType::f16);
  auto f32 = nnx::io::HfCheckpoint::open(out / "f32");
  CHECK(f32.architecture() == nnx::io::HfCheckpoint::open(fixture::dir(name)).architecture());
  CHECK(f32.read_params(params) == params);

  // Every tensor name of the original file comes back (mask buffers aside).
  for (const auto& n : nnx::io::HfCheckpoint::open(fixture::dir(name)).tensor_names())
    if (n.find("attn.bias") == std::string::npos) CHECK(nnx::io::SafetensorsFile::open(out / "f32" / "model.safetensors").contains(n));

  const nnx::State from_bf16 = nnx::io::HfCheckpoint::open(out / "bf16").read_params(params);
  const nnx::State rounded = params.map([](const nnx::Tensor& t) { return t.astype(nnx::DType::bf16).astype(nnx::DType::f32); });
  CHECK(from_bf16 == rounded);

  // f16: every stored tensor is F16 and every value the independent rounding of the f32 one.
  auto f16_file = nnx::io::SafetensorsFile::open(out / "f16" / "model.safetensors");
  for (const auto& n : f16_file.names()) CHECK(f16_file.get(n).dtype() == nnx::DType::f16);
  const nnx::State from_f16 = nnx::io::HfCheckpoint::open(out / "f16").read_params(params);
  CHECK(from_f16 == params.map(f16_rounded));
  CHECK_FALSE(from_f16 == rounded);  // f16 keeps 3 more mantissa bits than bf16
  CHECK(nnx::io::HfCheckpoint::open(out / "f16").config().at("torch_dtype") == "float16");
  CHECK(nnx::io::HfCheckpoint::open(out / "bf16").config().at("torch_dtype") == "bfloat16");
  CHECK(f32.config().at("torch_dtype") == "float32");
  fs::remove_all(out);
}

}  // namespace

TEST_CASE("Hugging Face export round-trips GPT-2 and Llama", "[io][huggingface]") {
  round_trip<nnx::Gpt2, nnx::Gpt2Config>("gpt2_tiny");
  round_trip<nnx::Llama, nnx::LlamaConfig>("llama_tiny");
  round_trip<nnx::Llama, nnx::LlamaConfig>("llama_tied");
  round_trip<nnx::Llama, nnx::LlamaConfig>("llama_head_dim");
}

TEST_CASE("f16 export rounds each value once, to nearest even, with subnormals and overflow", "[io][huggingface]") {
  namespace fs = std::filesystem;
  const fs::path out = fs::temp_directory_path() / ("nnx_hf_export_f16_edges_" + std::to_string(::getpid()));
  auto model = fixture::load<nnx::Llama, nnx::LlamaConfig>("llama_tiny", nnx::Mode::train);
  const float one = 1.0f, tie = 1.0f + 0x1p-11f;  // halfway between f16 1 and 1 + 2^-10
  // Each value is one that a wrong rounding gets wrong:
  const std::vector<float> edges = {
      tie,                                  // tie: to even, 1
      1.0f + 3 * 0x1p-11f,                  // tie: to even, 1 + 2^-9
      tie + 0x1p-23f,                       // just above a tie: up. Rounding twice (first to
                                            // fewer than 23 bits) makes it a tie, then 1
      std::nextafter(tie, one),             // just below a tie: down
      -(tie + 0x1p-23f),                    // negative, same magnitude: -(1 + 2^-10)
      0x1p-25f,                             // half the smallest subnormal: tie, to 0
      0x1p-25f + 0x1p-40f,                  // just above it: the smallest subnormal
      3 * 0x1p-25f,                         // tie between 1 and 2 subnormal units: 2
      0x1p-14f,                             // smallest normal, exact
      0x1p-14f - 0x1p-25f,                  // tie just below it: to even, 2^-14
      0x1.ff8p-15f + 0x1p-26f,              // largest subnormal plus a quarter unit: down
      65504.0f,                             // largest f16, exact
      std::nextafter(65520.0f, 0.0f),       // below the overflow tie: 65504
      65520.0f,                             // the overflow tie: infinity
      -70000.0f,                            // -infinity
      -0.0f,                                // sign of zero kept
      -0x1p-26f,                            // underflows to -0
      1e-8f,                                // to 0
      std::numeric_limits<float>::infinity(),
      3.14159265f,
      -2.71828183e-3f,
      1234.5678f,
  };
  nnx::Tensor scale = nnx::Tensor::zeros(model.norm.scale.value().shape());
  REQUIRE(static_cast<std::size_t>(scale.numel()) >= edges.size());
  std::copy(edges.begin(), edges.end(), scale.data<float>());
  model.norm.scale.value() = scale;
  nnx::io::save_hf(out, model.config.to_json(), nnx::state(model, nnx::of<nnx::Param>), nnx::DType::f16);

  const nnx::Tensor stored = nnx::io::SafetensorsFile::open(out / "model.safetensors").get("model.norm.weight");
  REQUIRE(stored.dtype() == nnx::DType::f16);
  for (std::size_t i = 0; i < edges.size(); ++i) {
    std::uint16_t bits = 0;
    std::memcpy(&bits, stored.raw_data() + 2 * i, 2);
    const double want = f16_round(edges[i]), got = f16_value(bits);
    INFO("value " << i << ": " << edges[i] << " stored as 0x" << std::hex << bits << std::dec << " = " << got
                  << ", expected " << want);
    CHECK(got == want);
    CHECK(std::signbit(got) == std::signbit(want));
  }
  // The expected values themselves, for the cases whose answer is easy to state.
  CHECK(f16_round(edges[0]) == 1.0);
  CHECK(f16_round(edges[2]) == 1.0 + 0x1p-10);
  CHECK(f16_round(edges[5]) == 0.0);
  CHECK(f16_round(edges[6]) == 0x1p-24);
  CHECK(f16_round(edges[7]) == 0x1p-23);
  CHECK(f16_round(edges[12]) == 65504.0);
  CHECK(std::isinf(f16_round(edges[13])));
  std::filesystem::remove_all(out);
}
