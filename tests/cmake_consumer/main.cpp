// Smallest program a user of nnxcpp writes: include the umbrella header, make a
// tensor, check it. Built by tests/cmake_consumer (installed package) and by
// tests/cmake_subdir (add_subdirectory); exit code != 0 fails the CTest test.
#include <nnx/nnx.hpp>

#include <cstdio>

int main() {
  nnx::Tensor t = nnx::Tensor::zeros({2, 3}, nnx::DType::f32);
  if (t.numel() != 6) {
    std::fprintf(stderr, "consumer: expected numel 6, got %lld\n",
                 static_cast<long long>(t.numel()));
    return 1;
  }
  std::puts("consumer ok");
  return 0;
}
