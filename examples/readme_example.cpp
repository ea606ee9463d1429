// The README's example, compiled in CI so that it stays true.
#include <iostream>
#include <vector>

#include <nnx/core.hpp>

struct Linear {
  int features = 0;          // static configuration: goes to the graphdef
  nnx::Param kernel, bias;   // variables: go to the state
  NNX_FIELDS(features, kernel, bias)
};
struct Mlp {
  std::vector<Linear> layers;
  nnx::Rngs rngs;
  NNX_FIELDS(layers, rngs)
};

int main() {
  Mlp mlp{{}, nnx::Rngs(0)};
  for (int i = 0; i < 3; ++i)
    mlp.layers.push_back({8, nnx::Param(nnx::init::normal(mlp.rngs.params(), {8, 8}), {"embed", "mlp"}),
                          nnx::Param(nnx::Tensor::zeros({8}))});

  auto [graphdef, params, rest] = nnx::split(mlp, nnx::of<nnx::Param>, nnx::everything);
  std::cout << graphdef.to_string() << nnx::format_table(params);

  // A pure update: new state in, new module out (merge binds the new buffers, copying none).
  nnx::State doubled = params.map([](const nnx::Tensor& t) {
    nnx::Tensor c = t.clone();
    for (float& x : c.span<float>()) x *= 2;
    return c;
  });
  Mlp m2 = nnx::merge(graphdef, doubled, rest);
  std::cout << m2.layers[1].kernel.value().data<float>()[0] / mlp.layers[1].kernel.value().data<float>()[0] << "\n";  // 2
}
