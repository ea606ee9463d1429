// Fuzzes nnx::graphdef_from_json, which reads the graphdef stored in every native checkpoint
// (as checkpoint_graphdef and restore with a graphdef check do: strict JSON first). Each
// input is the JSON text.
//
// Expected: InvalidArgument for text that is not strict JSON or not a graphdef, KindError for
// a variable kind this program does not define. Checked when the graphdef is accepted: it
// prints, hashes and counts its elements, and it survives to_json and back unchanged.
#include <cstddef>
#include <cstdint>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "nnx/core/graphdef_json.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/io/json.hpp"

// The kinds a program has registered by the time it reads a checkpoint (a kind registers
// when its type is first used), so that graphdefs naming them are accepted.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  nnx::Param::kind_info();
  nnx::QuantizedParam::kind_info();
  nnx::Cache::kind_info();
  nnx::RngState::kind_info();
  nnx::Intermediate::kind_info();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  nnx::GraphDef<> graphdef;
  try {
    graphdef = nnx::graphdef_from_json(nnx::io::parse_json_strict(nnx_fuzz::as_text(data, size)));
  } catch (const nnx::InvalidArgument&) {
    return 0;
  } catch (const nnx::KindError&) {
    return 0;
  }

  (void)graphdef.to_string();
  (void)graphdef.hash();
  (void)graphdef.numel();
  const nlohmann::json written = nnx::to_json(graphdef);
  const nnx::GraphDef<> back = nnx::graphdef_from_json(written);
  nnx_fuzz::require(back == graphdef, "a graphdef read back from to_json equals the original");
  nnx_fuzz::require(back.hash() == graphdef.hash(), "equal graphdefs hash alike");
  nnx_fuzz::require(nnx::to_json(back) == written, "to_json of the graphdef read back is the same JSON");
  return 0;
}
