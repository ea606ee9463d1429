// GraphDef to/from JSON: exact round trips (integer keys, every static type, ties, absent
// optionals, maps, QTensor leaves) and a clear error for every kind of corrupt input.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/core/graphdef_json.hpp>

namespace {

enum class Act : std::uint8_t { relu = 3, gelu = 7 };

struct Frozen : nnx::VariableKind<Frozen, nnx::Param> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "JsonTestFrozen";
};

struct Dense {
  bool use_bias = true;
  std::int64_t width = 0;
  double dropout = 0.1;
  Act act = Act::gelu;
  std::string name = "dense";
  std::vector<int> dims{1, 2, 3};
  std::vector<float> gains{0.5f, std::numeric_limits<float>::infinity()};
  std::vector<std::string> tags{"a", "b"};
  nnx::Param kernel;
  std::optional<nnx::Param> bias;
  NNX_FIELDS(use_bias, width, dropout, act, name, dims, gains, tags, kernel, bias)
};

struct Net {
  double nan_value = std::numeric_limits<double>::quiet_NaN();
  std::vector<Dense> layers;
  std::map<std::string, Dense> named;
  Frozen quantized;
  nnx::Param tied;
  nnx::Cache cache;
  NNX_FIELDS(nan_value, layers, named, quantized, tied, cache)
};

Dense dense(std::int64_t in, std::int64_t out, bool bias) {
  Dense d;
  d.width = out;
  d.use_bias = bias;
  d.kernel = nnx::Param(nnx::Tensor::zeros({in, out}), {"embed", "mlp"});
  if (bias) d.bias = nnx::Param(nnx::Tensor::zeros({out}));
  return d;
}

Net make_net() {
  Net n;
  n.layers = {dense(4, 8, true), dense(8, 4, false)};
  n.named.emplace("head", dense(4, 2, true));
  n.quantized = Frozen(nnx::QTensor{nnx::Tensor::zeros({4, 8}, nnx::DType::i8), {nnx::Tensor::zeros({8})}});
  n.tied = n.layers[0].kernel;
  n.cache = nnx::Cache(nnx::Tensor::zeros({2, 3}, nnx::DType::bf16));
  return n;
}

// Throws E and its message contains `needle`.
template <class E, class F>
void require_error(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const E& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(needle) != std::string::npos);
    return;
  }
  FAIL("expected an exception containing: " << needle);
}
}  // namespace

TEST_CASE("graphdef JSON round-trips every node type exactly", "[graphdef][json]") {
  Net net = make_net();
  auto graphdef = nnx::graphdef(net);
  nlohmann::json j = nnx::to_json(graphdef);

  // Through text, as it is stored in a checkpoint header.
  nnx::GraphDef<> back = nnx::graphdef_from_json(nlohmann::json::parse(j.dump()));
  CHECK(back == graphdef);
  CHECK(graphdef == back);
  CHECK(back.hash() == graphdef.hash());
  CHECK(back.to_string() == graphdef.to_string());
  CHECK(nnx::to_json(back) == j);

  // Integer keys stay JSON numbers; names stay strings.
  const auto& leaves = j.at("leaves");
  CHECK(leaves[0].at("path") == nlohmann::json::array({"layers", 0, "kernel"}));
  CHECK(leaves[0].at("path")[1].is_number_integer());
  CHECK(back.leaves()[0].path[1].is_index());
  CHECK(back.leaves()[0].path[1].index() == 0);

  // The tie, the QTensor leaf, the map and the absent optional survive.
  bool saw_shared = false, saw_absent = false, saw_map = false;
  for (const auto& n : back.nodes()) {
    saw_shared |= n.type == nnx::NodeType::shared_variable;
    saw_absent |= n.type == nnx::NodeType::absent;
    saw_map |= n.type == nnx::NodeType::string_map;
  }
  CHECK(saw_shared);
  CHECK(saw_absent);
  CHECK(saw_map);
  const auto q = back.find_leaf(nnx::Path{"quantized"});
  REQUIRE(q >= 0);
  const auto& qspec = back.leaves()[static_cast<std::size_t>(q)];
  CHECK(qspec.quantized);
  CHECK(qspec.kind_name() == "JsonTestFrozen");
  CHECK(qspec.dtype == nnx::DType::i8);
  REQUIRE(qspec.scale_shapes.size() == 1);
  CHECK(qspec.scale_shapes[0] == nnx::Shape{8});
  CHECK(back.leaves()[0].axes() == std::vector<std::string>{"embed", "mlp"});

  // Statics keep their types, including non-finite doubles.
  auto statics = back.statics();
  REQUIRE(!statics.empty());
  CHECK(std::isnan(std::get<double>(statics[0])));
  bool saw_enum = false, saw_inf = false;
  for (const auto& s : statics) {
    if (auto* i = std::get_if<std::int64_t>(&s)) saw_enum |= *i == 7;
    if (auto* v = std::get_if<std::vector<double>>(&s)) saw_inf |= v->size() == 2 && std::isinf((*v)[1]);
  }
  CHECK(saw_enum);
  CHECK(saw_inf);
}

TEST_CASE("graphdef equality and hash see every difference", "[graphdef][json]") {
  Net a = make_net();
  Net b = make_net();
  CHECK(nnx::graphdef(a) == nnx::graphdef(b));
  CHECK(nnx::graphdef(a).hash() == nnx::graphdef(b).hash());

  Net shape = make_net();
  shape.cache = nnx::Cache(nnx::Tensor::zeros({2, 4}, nnx::DType::bf16));
  CHECK_FALSE(nnx::graphdef(shape) == nnx::graphdef(a));
  CHECK(nnx::graphdef(shape).hash() != nnx::graphdef(a).hash());

  Net config = make_net();
  config.layers[1].dropout = 0.2;
  CHECK_FALSE(nnx::graphdef(config) == nnx::graphdef(a));

  Net untied = make_net();
  untied.tied = nnx::Param(nnx::Tensor::zeros({4, 8}), {"embed", "mlp"});
  CHECK_FALSE(nnx::graphdef(untied) == nnx::graphdef(a));

  Net dtype = make_net();
  dtype.cache = nnx::Cache(nnx::Tensor::zeros({2, 3}, nnx::DType::f16));
  CHECK_FALSE(nnx::graphdef(dtype) == nnx::graphdef(a));
}

TEST_CASE("corrupt graphdef JSON is rejected with the place named", "[graphdef][json]") {
  const nlohmann::json good = nnx::to_json(nnx::graphdef(make_net()));
  auto with = [&](auto edit) {
    nlohmann::json j = good;
    edit(j);
    return j;
  };
  using nnx::graphdef_from_json;
  using nnx::InvalidArgument;

  require_error<InvalidArgument>([&] { graphdef_from_json(nlohmann::json::array()); }, "root");
  require_error<InvalidArgument>([&] { graphdef_from_json(with([](auto& j) { j["format"] = "other/9"; })); },
                                 "format");
  require_error<InvalidArgument>([&] { graphdef_from_json(with([](auto& j) { j.erase("nodes"); })); },
                                 "missing field \"nodes\"");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([](auto& j) { j["leaves"][1]["dtype"] = "f128"; })); }, "leaves[1]");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([](auto& j) { j["leaves"][0]["shape"] = {4, -8}; })); }, "leaves[0]");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([](auto& j) { j["leaves"][0]["path"] = {"layers", "0x", "/"}; })); },
      "leaves[0]");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([](auto& j) { j["leaves"][2]["path"] = j["leaves"][0]["path"]; })); },
      "duplicate leaf path");
  require_error<nnx::KindError>(
      [&] { graphdef_from_json(with([](auto& j) { j["leaves"][0]["kind"] = "NoSuchKind"; })); }, "NoSuchKind");

  // The last variable node (the cache, which nothing shares) gets corrupted below.
  std::size_t var = good["nodes"].size() - 1;
  while (good["nodes"][var]["node"] != "variable") --var;
  const std::string where = "nodes[" + std::to_string(var) + "]";
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([&](auto& j) { j["nodes"][var]["leaf"] = 999; })); }, where);
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([&](auto& j) { j["nodes"][var]["node"] = "weird"; })); }, "unknown node kind");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([&](auto& j) { j["nodes"][var]["path"] = {"elsewhere", "deep", "x"}; })); },
      "depth-first");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with([&](auto& j) { j["nodes"].erase(var); })); }, "no variable node defines");
  require_error<InvalidArgument>(
      [&] {
        graphdef_from_json(with([&](auto& j) {
          for (auto& n : j["nodes"])
            if (n["node"] == "static") n["value"] = {{"complex", 1}};
        }));
      },
      "static value");
}

// Found by fuzz/fuzz_graphdef_json: a shape over 2^53 elements let Shape's ShapeError escape
// (not naming the leaf), and a dimension above 2^63 - 1 became a negative one.
TEST_CASE("graphdef JSON shapes too large for a Shape are InvalidArgument naming the leaf", "[graphdef][json]") {
  const nlohmann::json good = nnx::to_json(nnx::graphdef(make_net()));
  auto with_shape = [&](const nlohmann::json& shape) {
    nlohmann::json j = good;
    j["leaves"][1]["shape"] = shape;
    return j;
  };
  using nnx::graphdef_from_json;
  using nnx::InvalidArgument;
  require_error<InvalidArgument>([&] { graphdef_from_json(with_shape({std::int64_t{1} << 62, 4})); },
                                 "leaves[1]: Shape: [4611686018427387904, 4] holds more than 2^53 elements");
  require_error<InvalidArgument>([&] { graphdef_from_json(with_shape({std::uint64_t{1} << 63})); },
                                 "leaves[1]: shape [9223372036854775808]: dimension 9223372036854775808 is above");
  // The largest shape a Shape holds still reads back.
  const nnx::GraphDef<> edge = graphdef_from_json(with_shape({std::int64_t{1} << 53}));
  CHECK(edge.leaves()[1].shape == nnx::Shape{std::int64_t{1} << 53});
}

// Found with fuzz/fuzz_graphdef_json: integer statics were converted by nlohmann unchecked, so
// a float out of range was undefined behaviour and 2^64 - 1 became -1.
TEST_CASE("graphdef JSON integer statics must be 64-bit signed integers", "[graphdef][json]") {
  const nlohmann::json good = nnx::to_json(nnx::graphdef(make_net()));
  std::size_t node = 0, static_index = 0;  // the first integer static, and its place among the statics
  for (; good["nodes"][node]["node"] != "static" || !good["nodes"][node]["value"].contains("int"); ++node)
    if (good["nodes"][node]["node"] == "static") ++static_index;
  const std::string where = "nodes[" + std::to_string(node) + "]";
  auto with_value = [&](const nlohmann::json& value) {
    nlohmann::json j = good;
    j["nodes"][node]["value"] = value;
    return j;
  };
  using nnx::graphdef_from_json;
  using nnx::InvalidArgument;
  require_error<InvalidArgument>([&] { graphdef_from_json(with_value({{"ints", {1, 1e300}}})); },
                                 where + ": expected a 64-bit signed integer, found 1e+300");
  require_error<InvalidArgument>([&] { graphdef_from_json(with_value({{"int", 2.5}})); },
                                 where + ": expected a 64-bit signed integer, found 2.5");
  require_error<InvalidArgument>(
      [&] { graphdef_from_json(with_value({{"int", std::numeric_limits<std::uint64_t>::max()}})); },
      where + ": expected a 64-bit signed integer, found 18446744073709551615");
  const nnx::GraphDef<> extremes = graphdef_from_json(
      with_value({{"ints", {std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()}}}));
  CHECK(std::get<std::vector<std::int64_t>>(extremes.statics()[static_index]) ==
        std::vector<std::int64_t>{std::numeric_limits<std::int64_t>::min(), std::numeric_limits<std::int64_t>::max()});
}

TEST_CASE("a graphdef from JSON is untyped and only compares", "[graphdef][json]") {
  Net net = make_net();
  auto [graphdef, state] = nnx::split(net);
  nnx::GraphDef<> back = nnx::graphdef_from_json(nnx::to_json(graphdef));
  CHECK(back.type_name() == graphdef.type_name());
  CHECK(back.numel() == state.numel());
  CHECK(back.leaves().size() == state.size());
}
