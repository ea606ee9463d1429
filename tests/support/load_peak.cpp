// load_peak — the child process of test_quant's memory check. Loads a GPT-2 serve checkpoint
// through nnx::Engine, reads every byte of the loaded state (so each page is resident), and
// prints "state_bytes=N peak_rss_bytes=M" (M: VmHWM from /proc/self/status).
//
//   load_peak DIR
//
// It is built without sanitizers: their shadow memory would distort the resident size.
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

namespace {

std::uint64_t peak_rss_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6)) * 1024;  // reported in kB
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    if (argc != 2) throw nnx::InvalidArgument("usage: load_peak DIR");
    const nlohmann::json config = nnx::read_model_config(argv[1]);
    const nnx::Engine<nnx::Gpt2> engine(nnx::Gpt2Config::from_json(config),
                                        {.max_prefill_length = 1, .max_target_length = 2, .slots = 1,
                                         .quant = nnx::QuantConfig::of_model_config(config)});
    const nnx::State params = engine.load_params(argv[1]);
    std::uint64_t checksum = 0;
    for (const auto& entry : params)
      nnx::map_tensors(entry.leaf.value, [&](const nnx::Tensor& t) {
        const auto* bytes = reinterpret_cast<const unsigned char*>(t.raw_data());
        for (std::size_t i = 0; i < t.nbytes(); ++i) checksum += bytes[i];
        return nnx::Tensor();
      });
    std::printf("state_bytes=%zu peak_rss_bytes=%llu checksum=%llu\n", params.nbytes(),
                static_cast<unsigned long long>(peak_rss_bytes()), static_cast<unsigned long long>(checksum));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "load_peak: " << e.what() << "\n";
    return 2;
  }
}
