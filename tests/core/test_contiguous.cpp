// nnx::contiguous_copy (nnx/core/contiguous.hpp) and large tensor buffers in 2 MiB pages
// (nnx/core/tensor.hpp): values and metadata kept, every tensor in one buffer in the state's
// order, each leaf's own use_count, leaves left shared on request; big buffers 2 MiB aligned
// and advised as huge pages.
#include <catch2/catch.hpp>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>

#include <nnx/core.hpp>

namespace {

using nnx::Path;
using nnx::Tensor;

struct Parts {
  nnx::Param weight;
  nnx::QuantizedParam projection;
  nnx::Param bias;
  NNX_FIELDS(weight, projection, bias)
};

Tensor counting(const nnx::Shape& shape, float start) {
  Tensor t = Tensor::empty(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + 0.25f * static_cast<float>(i);
  return t;
}

Parts make_parts() {
  Tensor q = Tensor::empty({3, 5}, nnx::DType::i8);
  for (std::int64_t i = 0; i < q.numel(); ++i) q.data<std::int8_t>()[i] = static_cast<std::int8_t>(i * 7 - 50);
  return {nnx::Param(counting({7, 3}, 1.0f), {"embed", "mlp"}),
          nnx::QuantizedParam(nnx::QTensor{q, {counting({5}, 0.5f)}}), nnx::Param(counting({3}, -2.0f), {"mlp"})};
}

std::uintptr_t address(const Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.raw_data()); }

}  // namespace

TEST_CASE("contiguous_copy: same leaves, one buffer in the state's order", "[core][contiguous]") {
  const nnx::State original = nnx::state(make_parts());
  nnx::State packed = nnx::contiguous_copy(original);
  CHECK(packed == original);  // paths, kinds, axes and bytes
  REQUIRE(packed.size() == 3);

  // weight (84 bytes), projection's qvalue (15) and scale (20), bias (12): each starts on the
  // next 64-byte boundary after the one before, in this order.
  const Tensor& weight = packed.at(Path{"weight"}).tensor();
  const nnx::QTensor& projection = packed.at(Path{"projection"}).qtensor();
  const Tensor& bias = packed.at(Path{"bias"}).tensor();
  CHECK(address(weight) % 64 == 0);
  CHECK(address(projection.qvalue) == address(weight) + 128);
  CHECK(address(projection.scale.at(0)) == address(weight) + 192);
  CHECK(address(bias) == address(weight) + 256);

  // A copy: writing the packed leaf leaves the original as it was.
  packed.at(Path{"bias"}).tensor().data<float>()[0] = 100.0f;
  CHECK(original.at(Path{"bias"}).tensor().data<float>()[0] == -2.0f);

  // Each leaf counts its own views only (donation by the sole holder still applies), and the
  // buffer lives while any leaf does.
  CHECK(weight.use_count() == 1);
  CHECK_FALSE(weight.shares_storage_with(bias));
  Tensor kept = bias;
  CHECK(bias.use_count() == 2);
  packed = nnx::State();
  CHECK(kept.data<float>()[0] == 100.0f);
  CHECK(kept.data<float>()[2] == -1.5f);

  // A state passed by std::move lets go of each old tensor once it is copied.
  nnx::State given = nnx::state(make_parts());
  const Tensor old_bias = given.at(Path{"bias"}).tensor();
  CHECK(old_bias.use_count() == 2);
  const nnx::State moved = nnx::contiguous_copy(std::move(given));
  CHECK(old_bias.use_count() == 1);
  CHECK(nnx::equal(moved.at(Path{"bias"}).tensor(), old_bias));
}

TEST_CASE("contiguous_copy: leaves not moved stay shared; abstract leaves are kept", "[core][contiguous]") {
  const nnx::State original = nnx::state(make_parts());
  const nnx::State packed = nnx::contiguous_copy(
      original, [](const Path& path, const nnx::VariableState&) { return !(path == Path{"weight"}); });
  CHECK(packed == original);
  CHECK(packed.at(Path{"weight"}).tensor().shares_storage_with(original.at(Path{"weight"}).tensor()));
  CHECK_FALSE(packed.at(Path{"bias"}).tensor().shares_storage_with(original.at(Path{"bias"}).tensor()));
  CHECK(address(packed.at(Path{"bias"}).tensor()) == address(packed.at(Path{"projection"}).qtensor().qvalue) + 128);

  const nnx::State abstract = original.map([](const Tensor& t) { return Tensor::abstract(t.shape(), t.dtype()); });
  const nnx::State same = nnx::contiguous_copy(abstract);
  CHECK(same.at(Path{"weight"}).tensor().is_abstract());
  CHECK(same.at(Path{"weight"}).shape() == nnx::Shape{7, 3});
}

TEST_CASE("Tensors of 2 MiB and more start on a 2 MiB boundary, advised as huge pages", "[core][contiguous]") {
  constexpr std::uintptr_t kHuge = std::uintptr_t{2} << 20;
  const Tensor big = Tensor::zeros({(3 << 20) / 4});  // 3 MiB
  CHECK(address(big) % kHuge == 0);
  const Tensor small = Tensor::zeros({1000});
  CHECK(address(small) % 64 == 0);

#if defined(__linux__)
  // Where the kernel has transparent huge pages, the advice is on the mapping (VmFlags "hg").
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  if (!thp) {
    WARN("no transparent huge pages in this kernel: advice not checked");
    return;
  }
  std::ifstream smaps("/proc/self/smaps");
  bool inside = false, advised = false, found = false;
  for (std::string line; std::getline(smaps, line);) {
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream range(line);
    if (range >> std::hex >> lo >> dash >> hi && dash == '-') {  // "lo-hi perms offset dev inode path"
      inside = lo <= address(big) && address(big) < hi;
      continue;
    }
    if (inside && line.rfind("VmFlags:", 0) == 0) {
      found = true;
      advised = line.find(" hg") != std::string::npos;
    }
  }
  REQUIRE(found);
  CHECK(advised);
#endif
}
