// nnx::Layers (nnx/core/layers.hpp) on a module of our own: the leaves each layout gives,
// split/merge/update of a stacked stack (the layers see the new leaves), the slices' zero-copy
// views, QTensor leaves, and the state-level conversion's checks.
#include <catch2/catch.hpp>

#include <nnx/core.hpp>

namespace {

using nnx::Path;
using nnx::Tensor;

struct LayerBlock {
  std::int64_t width = 0;
  nnx::Param kernel;
  std::optional<nnx::Param> bias;
  NNX_FIELDS(width, kernel, bias)

  // y = x·kernel + bias, x [n, width].
  Tensor operator()(const Tensor& x) const {
    const std::int64_t n = x.dim(0);
    Tensor y = Tensor::zeros({n, width});
    const float* k = kernel.value().data<float>();
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t j = 0; j < width; ++j) {
        float s = bias ? bias->value().data<float>()[j] : 0.0f;
        for (std::int64_t i = 0; i < width; ++i) s += x.data<float>()[r * width + i] * k[i * width + j];
        y.data<float>()[r * width + j] = s;
      }
    return y;
  }
};

struct LayeredNet {
  nnx::Layers<LayerBlock> blocks;
  nnx::Param head;
  NNX_FIELDS(blocks, head)

  Tensor operator()(Tensor x) const {
    for (const LayerBlock& b : blocks) x = b(x);
    return x;
  }
};

Tensor filled(const nnx::Shape& shape, float start) {
  Tensor t = Tensor::empty(shape);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = start + 0.01f * static_cast<float>(i % 37);
  return t;
}

LayeredNet make_net(nnx::Layout layout) {
  std::vector<LayerBlock> blocks;
  for (int i = 0; i < 3; ++i)
    blocks.push_back({4, nnx::Param(filled({4, 4}, 0.1f * i), {"embed", "mlp"}),
                      nnx::Param(filled({4}, -0.2f * i), {"mlp"})});
  return {nnx::Layers<LayerBlock>(std::move(blocks), layout), nnx::Param(filled({4}, 1.0f), {"embed"})};
}

}  // namespace

TEST_CASE("Layers: per-layer and stacked leaves, the same function", "[core][layers]") {
  LayeredNet per = make_net(nnx::Layout::per_layer);
  LayeredNet st = make_net(nnx::Layout::stacked);
  const nnx::State ps = nnx::state(per), ss = nnx::state(st);
  CHECK(ps.find(Path{"blocks", 2, "kernel"}));
  REQUIRE(ss.find(Path{"blocks", "kernel"}));
  CHECK(ss.at(Path{"blocks", "kernel"}).shape() == nnx::Shape{3, 4, 4});
  CHECK(ss.at(Path{"blocks", "kernel"}).axes() == std::vector<std::string>{"layers", "embed", "mlp"});
  CHECK(ss.size() == 3);
  CHECK(ps.size() == 7);
  const Tensor x = filled({2, 4}, 0.5f);
  CHECK(nnx::equal(per(x), st(x)));
  CHECK(st.blocks.size() == 3);
  CHECK(st.blocks[1].width == 4);

  // for_each_module sees the layout's modules: three blocks, or the one stacked block.
  int seen = 0;
  nnx::for_each_module<LayerBlock>(st, [&](const Path& p, LayerBlock&) {
    CHECK(p == Path{"blocks"});
    ++seen;
  });
  CHECK(seen == 1);
  nnx::for_each_module<LayerBlock>(per, [&](const Path&, LayerBlock&) { ++seen; });
  CHECK(seen == 4);
}

TEST_CASE("Layers: merge and update of stacked leaves reach the layers", "[core][layers]") {
  LayeredNet st = make_net(nnx::Layout::stacked);
  const Tensor x = filled({2, 4}, 0.5f);
  const Tensor before = st(x);  // builds the slices
  auto [graphdef, params] = nnx::split(st, nnx::everything);
  LayeredNet merged = nnx::merge(graphdef, params);
  CHECK(nnx::equal(merged(x), before));

  // New values through update(): the slices follow (they are rebuilt when the leaves change).
  nnx::State doubled = params.map([](const Tensor& t) {
    Tensor c = t.clone();
    for (float& v : c.span<float>()) v *= 2.0f;
    return c;
  });
  nnx::update(st, doubled);
  const Tensor after = st(x);
  CHECK_FALSE(nnx::equal(after, before));
  LayeredNet expected = make_net(nnx::Layout::per_layer);
  nnx::update(expected, nnx::to_layout(doubled, "blocks", nnx::Layout::per_layer));
  CHECK(nnx::equal(after, expected(x)));

  // In-place writes to a stacked leaf are seen by its layer (the slice is a view).
  nnx::State shared = nnx::state(st);
  shared.at(Path{"blocks", "bias"}).tensor().data<float>()[2 * 4 + 1] = 100.0f;
  CHECK(st.blocks[2].bias->value().data<float>()[1] == 100.0f);
  CHECK(st.blocks[2].bias->value().use_count() == 0);  // borrowed: no share in the stacked tensor
}

TEST_CASE("Layers: set_layout round trip, QTensor leaves, and what does not stack", "[core][layers]") {
  LayeredNet st = make_net(nnx::Layout::stacked);
  const nnx::State stacked = nnx::state(st);
  st.blocks.set_layout(nnx::Layout::per_layer);
  CHECK(nnx::state(st) == nnx::to_layout(stacked, "blocks", nnx::Layout::per_layer));
  st.blocks.set_layout(nnx::Layout::stacked);
  CHECK(nnx::state(st) == stacked);

  // QTensor leaves stack their qvalue and every scale.
  std::vector<LayerBlock> q;
  for (int i = 0; i < 2; ++i) {
    Tensor qv = Tensor::empty({4, 4}, nnx::DType::i8);
    for (std::int64_t k = 0; k < 16; ++k) qv.data<std::int8_t>()[k] = static_cast<std::int8_t>(k - 8 + i);
    q.push_back({4, nnx::QuantizedParam(nnx::QTensor{qv, {filled({4}, 0.1f + i)}}), std::nullopt});
  }
  nnx::Layers<LayerBlock> qs(q, nnx::Layout::stacked);
  const nnx::State qstate = nnx::state(qs.stacked());
  const nnx::QTensor& qt = qstate.at(Path{"kernel"}).qtensor();
  CHECK(qt.qvalue.shape() == nnx::Shape{2, 4, 4});
  REQUIRE(qt.scale.size() == 1);
  CHECK(qt.scale[0].shape() == nnx::Shape{2, 4});
  CHECK(nnx::equal(qs[1].kernel.qvalue().scale[0], q[1].kernel.qvalue().scale[0]));

  // Layers that differ do not stack, and the stack is left as it was.
  std::vector<LayerBlock> mixed{make_net(nnx::Layout::per_layer).blocks[0],
                           LayerBlock{4, nnx::Param(filled({4, 4}, 0), {"embed", "mlp"}), std::nullopt}};
  nnx::Layers<LayerBlock> m(mixed);
  CHECK_THROWS_AS(m.set_layout(nnx::Layout::stacked), nnx::ShapeError);
  CHECK(m.layout() == nnx::Layout::per_layer);
  mixed[1].bias = nnx::Param(filled({5}, 0), {"mlp"});
  nnx::Layers<LayerBlock> m2(mixed);
  CHECK_THROWS_WITH(m2.set_layout(nnx::Layout::stacked), Catch::Contains("'bias'") && Catch::Contains("layer 1"));
}

TEST_CASE("to_layout on states: checks name the leaf", "[core][layers]") {
  const nnx::State per = nnx::state(make_net(nnx::Layout::per_layer));
  auto without = [&](const Path& drop) {
    nnx::State s;
    for (const auto& [p, leaf] : per)
      if (!(p == drop)) s.insert(p, leaf);
    return s;
  };
  // A layer missing one leaf, or a missing layer 0.
  CHECK_THROWS_WITH(nnx::to_layout(without(Path{"blocks", 1, "bias"}), "blocks", nnx::Layout::stacked),
                    Catch::Contains("blocks/2/bias"));
  CHECK_THROWS_WITH(nnx::to_layout(without(Path{"blocks", 0, "kernel"}), "blocks", nnx::Layout::stacked),
                    Catch::Contains("blocks/1/kernel") && Catch::Contains("layer-0"));
  // A stacked leaf whose leading axis disagrees with its neighbours'.
  nnx::State st = nnx::to_layout(per, "blocks", nnx::Layout::stacked);
  nnx::State bad;
  for (const auto& [p, leaf] : st) {
    nnx::VariableState v = leaf;
    if (p == Path{"blocks", "bias"}) {
      v.value = filled({2, 4}, 0);
    }
    bad.insert(p, v);
  }
  CHECK_THROWS_WITH(nnx::to_layout(bad, "blocks", nnx::Layout::per_layer), Catch::Contains("blocks/bias"));
  // No layers: unchanged.
  nnx::State head = per.filter(nnx::path_contains("head"));
  CHECK(nnx::to_layout(head, "blocks", nnx::Layout::stacked) == head);
  CHECK_FALSE(nnx::layout_of(head, "blocks").has_value());
}
