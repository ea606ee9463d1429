// Tests for split / merge / update / state / graphdef / clone / eval_shape (graph.hpp), the
// State and GraphDef types, filters, QTensor leaves and donation, on a three-level module
// tree with vectors, optionals, a string map, static configuration and a tied weight; and
// eval_shape of a GPT-2-124M-sized model.
//
// Acceptance criteria covered here (see the issue): merge(split(m)) keeps the structure and
// the very buffers; first-match filters; unmatched leaves and merge mismatches name their
// path; update in place and atomically; integer keys; pure dicts; donation; QTensor
// flattening; eval_shape allocates no tensor bytes.
#include "nnx/core.hpp"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using nnx::DType;
using nnx::Path;
using nnx::Shape;
using nnx::State;
using nnx::Tensor;

// A user-defined kind: of<Param> matches it because it derives from Param.
struct MyKind : nnx::VariableKind<MyKind, nnx::Param> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "MyKind";
};

enum class Activation : std::int8_t { gelu = 3, relu = 5 };

// ---- the test model ---------------------------------------------------------------------

float g_next = 1.0f;  // every created tensor gets distinct values
Tensor filled(const Shape& s) {
  Tensor t = Tensor::empty(s);
  if (t.is_abstract()) return t;
  for (float& v : t.span<float>()) v = g_next++;
  return t;
}

struct Lin {
  std::int64_t din = 0, dout = 0;
  nnx::Param kernel;
  std::optional<nnx::Param> bias;
  NNX_FIELDS(din, dout, kernel, bias)
};
Lin make_lin(std::int64_t din, std::int64_t dout, bool bias) {
  Lin l;
  l.din = din;
  l.dout = dout;
  l.kernel = nnx::Param(filled({din, dout}), {"in", "out"});
  if (bias) l.bias = nnx::Param(filled({dout}));
  return l;
}

struct Attn {
  int heads = 0;
  bool causal = true;
  nnx::Param qkv;
  Lin proj;
  NNX_FIELDS(heads, causal, qkv, proj)
};

struct Mlp {
  Activation act = Activation::gelu;
  Lin fc, out;
  NNX_FIELDS(act, fc, out)
};

struct SplitBlock {
  Attn attn;
  Mlp mlp;
  std::optional<nnx::Param> gate;
  std::optional<nnx::Cache> kv;
  NNX_FIELDS(attn, mlp, gate, kv)
};

struct Embed {
  std::int64_t vocab = 0, dim = 0;
  nnx::Param embedding;
  NNX_FIELDS(vocab, dim, embedding)
};

struct Model {
  std::string name;
  Activation act = Activation::relu;
  double eps = 0;
  std::vector<int> dims;
  std::vector<SplitBlock> blocks;
  Embed embed;
  std::optional<Lin> head;
  std::optional<Lin> unused;
  std::map<std::string, nnx::Param> extras;
  MyKind frozen;
  nnx::Intermediate stats;
  NNX_FIELDS(name, act, eps, dims, blocks, embed, head, unused, extras, frozen, stats)
};

constexpr std::int64_t V = 10, D = 4, H = 8;

Model make_model() {
  Model m;
  m.name = "tiny";
  m.act = Activation::gelu;
  m.eps = 1e-5;
  m.dims = {V, D, H};
  for (int i = 0; i < 3; ++i) {
    SplitBlock b;
    b.attn.heads = 2;
    b.attn.qkv = nnx::Param(filled({D, 3 * D}), {"embed", "qkv"});
    b.attn.proj = make_lin(D, D, true);
    b.mlp.fc = make_lin(D, H, true);
    b.mlp.out = make_lin(H, D, false);
    if (i != 1) b.gate = nnx::Param(filled({D}));
    if (i != 0) b.kv = nnx::Cache(filled({2, D}));
    m.blocks.push_back(std::move(b));
  }
  m.embed.vocab = V;
  m.embed.dim = D;
  m.embed.embedding = nnx::Param(filled({V, D}), {"vocab", "embed"});
  Lin head;
  head.din = D;
  head.dout = V;
  head.kernel = m.embed.embedding;  // tied: the same variable
  head.bias = nnx::Param(filled({V}));
  m.head = head;
  m.extras["alpha"] = nnx::Param(filled({1}));
  m.extras["beta"] = nnx::Param(filled({2}));
  m.frozen = MyKind(filled({3}));
  m.stats = nnx::Intermediate(filled({}));
  return m;
}

constexpr std::size_t kLeaves = 28;
constexpr std::int64_t kNumel = 501;

// The model's unique variables in traversal order, listed by hand (cross-checks traversal).
std::vector<std::pair<std::string, nnx::Variable*>> variables(Model& m) {
  std::vector<std::pair<std::string, nnx::Variable*>> out;
  for (std::size_t i = 0; i < m.blocks.size(); ++i) {
    auto& b = m.blocks[i];
    const std::string p = "blocks/" + std::to_string(i) + "/";
    out.push_back({p + "attn/qkv", &b.attn.qkv});
    out.push_back({p + "attn/proj/kernel", &b.attn.proj.kernel});
    out.push_back({p + "attn/proj/bias", &*b.attn.proj.bias});
    out.push_back({p + "mlp/fc/kernel", &b.mlp.fc.kernel});
    out.push_back({p + "mlp/fc/bias", &*b.mlp.fc.bias});
    out.push_back({p + "mlp/out/kernel", &b.mlp.out.kernel});
    if (b.gate) out.push_back({p + "gate", &*b.gate});
    if (b.kv) out.push_back({p + "kv", &*b.kv});
  }
  out.push_back({"embed/embedding", &m.embed.embedding});
  out.push_back({"head/bias", &*m.head->bias});
  out.push_back({"extras/alpha", &m.extras.at("alpha")});
  out.push_back({"extras/beta", &m.extras.at("beta")});
  out.push_back({"frozen", &m.frozen});
  out.push_back({"stats", &m.stats});
  return out;
}

std::vector<std::string> paths_of(const State& s) {
  std::vector<std::string> out;
  for (const auto& [p, leaf] : s) out.push_back(p.to_string());
  return out;
}

const std::byte* data_of(const nnx::Variable& v) { return v.value().raw_data(); }

// Checks the statics and optional structure of b against a.
void check_same_config(const Model& a, const Model& b) {
  CHECK(b.name == a.name);
  CHECK(b.act == a.act);
  CHECK(b.eps == a.eps);
  CHECK(b.dims == a.dims);
  REQUIRE(b.blocks.size() == a.blocks.size());
  for (std::size_t i = 0; i < a.blocks.size(); ++i) {
    CHECK(b.blocks[i].attn.heads == a.blocks[i].attn.heads);
    CHECK(b.blocks[i].attn.causal == a.blocks[i].attn.causal);
    CHECK(b.blocks[i].mlp.act == a.blocks[i].mlp.act);
    CHECK(b.blocks[i].mlp.fc.dout == a.blocks[i].mlp.fc.dout);
    CHECK(b.blocks[i].gate.has_value() == a.blocks[i].gate.has_value());
    CHECK(b.blocks[i].kv.has_value() == a.blocks[i].kv.has_value());
    CHECK(b.blocks[i].mlp.out.bias.has_value() == a.blocks[i].mlp.out.bias.has_value());
  }
  CHECK(b.embed.vocab == a.embed.vocab);
  CHECK(b.head.has_value() == a.head.has_value());
  CHECK(b.unused.has_value() == a.unused.has_value());
  CHECK(b.extras.size() == a.extras.size());
}

// Returns a copy of s with the leaf at `path` replaced by f(leaf).
template <class F>
State with_leaf(const State& s, std::string_view path, F&& f) {
  State out;
  const Path target = Path::parse(path);
  for (const auto& [p, leaf] : s) out.insert(p, p == target ? f(leaf) : leaf);
  return out;
}

State without_leaf(const State& s, std::string_view path) {
  const Path target = Path::parse(path);
  return s.filter([&](const Path& p, const nnx::VariableState&) { return !(p == target); });
}

std::vector<const std::byte*> buffers(Model& m) {
  std::vector<const std::byte*> out;
  for (auto& [p, v] : variables(m)) out.push_back(data_of(*v));
  return out;
}

std::vector<std::vector<float>> values(Model& m) {
  std::vector<std::vector<float>> out;
  for (auto& [p, v] : variables(m)) out.push_back(v->value().to_vector<float>());
  return out;
}

// Runs fn in a child process (quietly, with a 10 s alarm); true when fn returned true and the
// child exited normally. For operations that may crash or hang without taking the whole test
// binary down.
template <class Fn>
bool runs_cleanly_in_child(Fn&& fn) {
  pid_t pid = fork();
  if (pid == 0) {
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL, SIGALRM}) std::signal(sig, SIG_DFL);
    if (int null_fd = open("/dev/null", O_WRONLY); null_fd >= 0) {
      dup2(null_fd, 1);
      dup2(null_fd, 2);
    }
    alarm(10);
    bool ok = false;
    try {
      ok = fn();
    } catch (...) {
    }
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

// ---- structure of a split ---------------------------------------------------------------

TEST_CASE("split: leaves in traversal order, ties once, absent optionals absent", "[split]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);
  REQUIRE(s.size() == kLeaves);
  std::vector<std::string> expected;
  for (auto& [p, v] : variables(m)) expected.push_back(p);
  CHECK(paths_of(s) == expected);
  CHECK_FALSE(s.contains(Path::parse("head/kernel")));     // the tie is stored once, at its first path
  CHECK_FALSE(s.contains(Path::parse("blocks/0/kv")));     // absent optional
  CHECK_FALSE(s.contains(Path::parse("blocks/1/gate")));   // absent optional
  CHECK_FALSE(s.contains(Path::parse("blocks/0/mlp/out/bias")));
  CHECK(s.numel() == kNumel);
  CHECK(s.nbytes() == kNumel * 4);

  // the state shares the module's buffers
  for (auto& [p, v] : variables(m)) CHECK(s[p].tensor().raw_data() == data_of(*v));

  // kinds and metadata
  CHECK(s["blocks/0/attn/qkv"].kind == &nnx::Param::kind_info());
  CHECK(s["blocks/1/kv"].kind == &nnx::Cache::kind_info());
  CHECK(s["frozen"].kind == &MyKind::kind_info());
  CHECK(s["frozen"].kind_name() == "MyKind");
  CHECK(s["stats"].kind_name() == "Intermediate");
  CHECK(s["embed/embedding"].axes() == std::vector<std::string>{"vocab", "embed"});
  CHECK(s["head/bias"].axes().empty());

  // graphdef: every leaf once; statics recorded; the tie recorded as a shared node
  CHECK(g.leaves().size() == kLeaves);
  CHECK(g.numel() == kNumel);
  CHECK(g.type_name().find("Model") != std::string_view::npos);
  CHECK(g.find_leaf(Path::parse("embed/embedding")) >= 0);
  CHECK(g.find_leaf(Path::parse("head/kernel")) == -1);
  bool shared_seen = false;
  for (const auto& n : g.nodes())
    if (n.type == nnx::NodeType::shared_variable) {
      shared_seen = true;
      CHECK(n.depth == 2);
      CHECK(n.key == nnx::PathKey("kernel"));
      CHECK(g.leaves()[n.size].path == Path::parse("embed/embedding"));
    }
  CHECK(shared_seen);
  const std::string text = g.to_string();
  CHECK_THAT(text, Catch::Contains("shared with embed/embedding"));
  CHECK_THAT(text, Catch::Contains("absent"));
  CHECK_THAT(text, Catch::Contains("\"tiny\""));
  CHECK_THAT(text, Catch::Contains("sequence of 3"));
  CHECK_THAT(text, Catch::Contains("(vocab, embed)"));
}

TEST_CASE("split: an empty variable or mismatched axis names is an error naming the path", "[split]") {
  Model m = make_model();
  m.blocks[2].mlp.fc.kernel = nnx::Param();  // never given a value
  CHECK_THROWS_AS(nnx::split(m), nnx::InvalidArgument);
  CHECK_THROWS_WITH(nnx::split(m), Catch::Contains("blocks/2/mlp/fc/kernel"));
  CHECK_THROWS_WITH(nnx::state(m), Catch::Contains("blocks/2/mlp/fc/kernel"));

  Model a = make_model();
  a.blocks[1].gate = nnx::Param(filled({D}), {"embed", "extra"});  // two names, rank 1
  CHECK_THROWS_AS(nnx::split(a), nnx::ShapeError);
  CHECK_THROWS_WITH(nnx::split(a), Catch::Contains("blocks/1/gate"));
}

// ---- merge(split(m)) --------------------------------------------------------------------

TEST_CASE("merge(split(m)) keeps structure, statics, ties and the very buffers", "[split][merge]") {
  Model m = make_model();
  auto [g, params, cache, rest] = nnx::split(m, nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);
  CHECK(params.size() + cache.size() + rest.size() == kLeaves);
  CHECK(cache.size() == 2);
  CHECK(rest.size() == 1);  // the Intermediate

  Model r = nnx::merge(g, params, cache, rest);
  CHECK(nnx::graphdef(r) == g);
  CHECK(nnx::state(r) == nnx::state(m));  // same paths in traversal order, same values
  CHECK(nnx::state(r).size() == kLeaves);
  CHECK(std::hash<nnx::GraphDef<Model>>{}(nnx::graphdef(r)) == std::hash<nnx::GraphDef<Model>>{}(g));
  check_same_config(m, r);

  // every leaf: the same buffer, shape and dtype
  auto orig = variables(m);
  auto back = variables(r);
  REQUIRE(orig.size() == back.size());
  for (std::size_t i = 0; i < orig.size(); ++i) {
    INFO(orig[i].first);
    CHECK(back[i].second->value().raw_data() == orig[i].second->value().raw_data());
    CHECK(back[i].second->value().shape() == orig[i].second->value().shape());
    CHECK(&back[i].second->kind() == &orig[i].second->kind());
    CHECK(back[i].second->metadata() == orig[i].second->metadata());
    // new variables (cells) over the same buffers, as Flax's merge creates new Variables
    CHECK_FALSE(back[i].second->same_as(*orig[i].second));
  }
  // the tie is restored
  CHECK(r.head->kernel.same_as(r.embed.embedding));
  CHECK(r.head->kernel.value().raw_data() == m.embed.embedding.value().raw_data());
  r.embed.embedding.set_value(Tensor::zeros({V, D}));
  CHECK(r.head->kernel.value().raw_data() == r.embed.embedding.value().raw_data());  // seen through both
  CHECK(m.head->kernel.value().raw_data() != r.head->kernel.value().raw_data());       // m unaffected

  // writes through the merged module's buffers are visible in the original (zero-copy)
  r.blocks[2].attn.qkv.value().data<float>()[5] = -42.0f;
  CHECK(m.blocks[2].attn.qkv.value().data<float>()[5] == -42.0f);

  // the filter order does not matter for merge
  Model r2 = nnx::merge(g, rest, cache, params);
  CHECK(nnx::graphdef(r2) == g);
  CHECK(buffers(r2) == buffers(m));
  // nor does splitting by one state
  auto [g1, all] = nnx::split(m);
  CHECK(g1 == g);
  Model r3 = nnx::merge(g1, all);
  CHECK(buffers(r3) == buffers(m));
  // merge_states then merge
  Model r4 = nnx::merge(g, nnx::merge_states(params, cache, rest));
  CHECK(buffers(r4) == buffers(m));
}

TEST_CASE("merge_copy shares no buffer", "[merge]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);
  const auto before = nnx::tensor_memory_stats();
  Model c = nnx::merge_copy(g, s);
  const auto after = nnx::tensor_memory_stats();
  CHECK(after.allocated_bytes - before.allocated_bytes == kNumel * 4);  // one copy of each unique leaf
  CHECK(nnx::graphdef(c) == g);
  check_same_config(m, c);
  auto orig = variables(m);
  auto copy = variables(c);
  REQUIRE(orig.size() == copy.size());
  for (std::size_t i = 0; i < orig.size(); ++i) {
    INFO(orig[i].first);
    CHECK(copy[i].second->value().raw_data() != orig[i].second->value().raw_data());
    CHECK_FALSE(copy[i].second->value().shares_storage_with(orig[i].second->value()));
    CHECK(nnx::equal(copy[i].second->value(), orig[i].second->value()));
    CHECK(copy[i].second->value().use_count() == 1);
  }
  CHECK(c.head->kernel.same_as(c.embed.embedding));  // tie kept, one copy
  CHECK(nnx::state(c) == s);                         // equal values
}

// ---- filters ----------------------------------------------------------------------------

TEST_CASE("split: the first matching filter wins", "[split][filter]") {
  Model m = make_model();
  auto [g, attn, params, rest] = nnx::split(m, nnx::path_contains("attn"), nnx::of<nnx::Param>, nnx::everything);
  CHECK(attn.size() == 9);  // 3 x (qkv, proj/kernel, proj/bias)
  for (const auto& [p, leaf] : attn) CHECK(p.contains("attn"));
  for (const auto& [p, leaf] : params) {
    CHECK_FALSE(p.contains("attn"));
    CHECK(leaf.kind->is_a(nnx::Param::kind_info()));
  }
  CHECK(params.contains(Path::parse("frozen")));  // MyKind is a Param
  CHECK(paths_of(rest) == std::vector<std::string>{"blocks/1/kv", "blocks/2/kv", "stats"});
  CHECK(attn.size() + params.size() + rest.size() == kLeaves);

  // swap the order: of<Param> first takes the attn params too
  auto [g2, p2, a2, r2] = nnx::split(m, nnx::of<nnx::Param>, nnx::path_contains("attn"), nnx::everything);
  CHECK(a2.empty());
  CHECK(p2.size() == attn.size() + params.size());
  CHECK(g2 == g);

  // integer keys in filters
  auto [g3, block1, others] = nnx::split(m, nnx::path_contains(1), nnx::everything);
  CHECK(block1.size() == 7);
  for (const auto& [p, leaf] : block1) CHECK(p.starts_with(Path{"blocks", 1}));
}

TEST_CASE("split: a leaf no filter matches is an InvalidArgument naming its path", "[split][filter]") {
  Model m = make_model();
  CHECK_THROWS_AS(nnx::split(m, nnx::of<nnx::Param>), nnx::InvalidArgument);
  CHECK_THROWS_WITH(nnx::split(m, nnx::of<nnx::Param>), Catch::Contains("blocks/1/kv"));
  CHECK_THROWS_WITH(nnx::split(m, nnx::of<nnx::Param>, nnx::of<nnx::Cache>), Catch::Contains("'stats'"));
  CHECK_THROWS_WITH(nnx::split(m, nnx::nothing), Catch::Contains("blocks/0/attn/qkv"));
  // State::split reports the same
  auto s = nnx::state(m);
  CHECK_THROWS_AS(s.split(nnx::of<nnx::Param>, nnx::of<nnx::Cache>), nnx::InvalidArgument);
  CHECK_THROWS_WITH(s.split(nnx::of<nnx::Cache>), Catch::Contains("blocks/0/attn/qkv"));
}

TEST_CASE("filters: kinds, user kinds, Not/All/Any/nothing/lambdas", "[filter]") {
  Model m = make_model();
  auto count = [&](const auto& f) { return nnx::state(m, f).size(); };

  CHECK(count(nnx::everything) == kLeaves);
  CHECK(count(nnx::nothing) == 0);
  CHECK(count(nnx::of<nnx::Variable>) == kLeaves);
  CHECK(count(nnx::of<nnx::Param>) == kLeaves - 3);  // all but 2 Cache and 1 Intermediate
  CHECK(count(nnx::of<nnx::Cache>) == 2);
  CHECK(count(nnx::of<nnx::Intermediate>) == 1);
  CHECK(count(nnx::of<nnx::RngState>) == 0);

  // a user kind derived from Param
  CHECK(count(nnx::of<MyKind>) == 1);
  CHECK(paths_of(nnx::state(m, nnx::of<MyKind>)) == std::vector<std::string>{"frozen"});
  CHECK(MyKind::kind_info().is_a(nnx::Param::kind_info()));
  CHECK_FALSE(nnx::Param::kind_info().is_a(MyKind::kind_info()));
  CHECK(MyKind::kind_info().name_view() == "MyKind");
  CHECK(nnx::find_kind("MyKind") == &MyKind::kind_info());
  CHECK(nnx::find_kind("Param") == &nnx::Param::kind_info());
  CHECK(nnx::find_kind("NoSuchKind") == nullptr);
  CHECK(&m.frozen.kind() == &MyKind::kind_info());

  // combinators
  CHECK(count(nnx::Not(nnx::of<nnx::Param>)) == 3);
  CHECK(count(nnx::Not(nnx::nothing)) == kLeaves);
  CHECK(count(nnx::All(nnx::of<nnx::Param>, nnx::path_contains("bias"))) == 3 * 2 + 1);
  CHECK(count(nnx::All()) == kLeaves);  // empty conjunction
  CHECK(count(nnx::Any()) == 0);        // empty disjunction
  CHECK(count(nnx::Any(nnx::of<nnx::Cache>, nnx::of<nnx::Intermediate>)) == 3);
  CHECK(count(nnx::Any(nnx::of<nnx::Cache>, nnx::Not(nnx::of<MyKind>))) == kLeaves - 1);
  CHECK(count(nnx::All(nnx::path_contains("blocks"), nnx::Not(nnx::path_contains(0)))) == 15);

  // predicate lambdas see the path and the leaf
  auto rank2 = [](const Path&, const nnx::VariableState& v) { return v.shape().rank() == 2; };
  CHECK(count(rank2) == 3 * 4 + 2 + 1);  // qkv, 3 kernels per block; 2 kv; embedding
  auto under_mlp = [](const Path& p, const nnx::VariableState&) { return p.size() > 2 && p[2] == "mlp"; };
  CHECK(count(under_mlp) == 9);
  CHECK(count(nnx::All(rank2, nnx::Not(under_mlp))) == 3 * 2 + 2 + 1);

  // state with several filters: first match, unmatched leaves simply left out
  auto [c, p] = nnx::state(m, nnx::of<nnx::Cache>, nnx::path_contains("extras"));
  CHECK(c.size() == 2);
  CHECK(paths_of(p) == std::vector<std::string>{"extras/alpha", "extras/beta"});
}

// ---- merge errors -----------------------------------------------------------------------

TEST_CASE("merge: mismatched states are errors naming the path", "[merge][errors]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);

  SECTION("missing leaf") {
    State bad = without_leaf(s, "blocks/1/mlp/fc/bias");
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::MissingLeafError);
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("blocks/1/mlp/fc/bias"));
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("f32[8]"));  // what was expected
    CHECK_THROWS_AS(nnx::merge_copy(g, bad), nnx::MissingLeafError);
    auto [gp, params, rest] = nnx::split(m, nnx::of<nnx::Param>, nnx::everything);
    CHECK_THROWS_AS(nnx::merge(gp, params), nnx::MissingLeafError);  // forgot a state
    CHECK_THROWS_WITH(nnx::merge(gp, params), Catch::Contains("blocks/1/kv"));
  }
  SECTION("extra leaf") {
    State bad = s;
    bad.insert(Path::parse("blocks/1/attn/extra"), s["blocks/1/attn/qkv"]);
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::UnexpectedLeafError);
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("blocks/1/attn/extra"));
    // the secondary path of a tie is not a leaf of its own
    State tie = s;
    tie.insert(Path::parse("head/kernel"), s["embed/embedding"]);
    CHECK_THROWS_AS(nnx::merge(g, tie), nnx::UnexpectedLeafError);
    CHECK_THROWS_WITH(nnx::merge(g, tie), Catch::Contains("head/kernel"));
    // an absent optional's path is not a leaf either
    State absent = s;
    absent.insert(Path::parse("blocks/0/kv"), s["blocks/1/kv"]);
    CHECK_THROWS_AS(nnx::merge(g, absent), nnx::UnexpectedLeafError);
  }
  SECTION("a leaf given twice") {
    State one = s.filter(nnx::path_contains("embed"));
    CHECK_THROWS_AS(nnx::merge(g, s, one), nnx::InvalidArgument);
    CHECK_THROWS_WITH(nnx::merge(g, s, one), Catch::Contains("embed/embedding"));
  }
  SECTION("wrong shape") {
    State bad = with_leaf(s, "blocks/2/attn/proj/kernel", [](nnx::VariableState v) {
      v.value = Tensor::zeros({D + 1, D});
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::ShapeError);
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("blocks/2/attn/proj/kernel"));
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("[4, 4]") && Catch::Contains("[5, 4]"));
    CHECK_THROWS_AS(nnx::merge_copy(g, bad), nnx::ShapeError);
    // same element count, other shape
    State flat = with_leaf(s, "embed/embedding", [](nnx::VariableState v) {
      v.value = v.tensor().reshape({-1});
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, flat), nnx::ShapeError);
  }
  SECTION("wrong dtype") {
    State bad = with_leaf(s, "head/bias", [](nnx::VariableState v) {
      v.value = v.tensor().astype(DType::bf16);
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::DTypeError);
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("head/bias") && Catch::Contains("bf16"));
  }
  SECTION("wrong kind") {
    State bad = with_leaf(s, "blocks/0/gate", [](nnx::VariableState v) {
      v.kind = &nnx::Cache::kind_info();
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::KindError);
    CHECK_THROWS_WITH(nnx::merge(g, bad), Catch::Contains("blocks/0/gate") && Catch::Contains("Cache"));
    // a derived kind is still a different kind for merge
    State base = with_leaf(s, "frozen", [](nnx::VariableState v) {
      v.kind = &nnx::Param::kind_info();
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, base), nnx::KindError);
    CHECK_THROWS_WITH(nnx::merge(g, base), Catch::Contains("'frozen'"));
  }
  SECTION("a quantized value where a tensor is expected") {
    State bad = with_leaf(s, "blocks/0/gate", [](nnx::VariableState v) {
      v.value = nnx::QTensor{Tensor::zeros({D}, DType::i8), {Tensor::full({1}, 1.0)}};
      return v;
    });
    CHECK_THROWS_AS(nnx::merge(g, bad), nnx::DTypeError);
  }
  // nothing above modified the state: it still merges
  Model ok = nnx::merge(g, s);
  CHECK(buffers(ok) == buffers(m));
}

// ---- update -----------------------------------------------------------------------------

TEST_CASE("update replaces values in place, seen through every handle", "[update]") {
  Model m = make_model();
  Model alias = m;  // a copy of a module shares its variables
  const auto cache_before = m.blocks[1].kv->value().raw_data();

  State fresh = nnx::state(m, nnx::of<nnx::Param>).map([](const Tensor& t) {
    Tensor c = t.clone();
    c.fill(7.0);
    return c;
  });
  nnx::update(m, fresh);

  for (auto& [p, v] : variables(m)) {
    INFO(p);
    if (const auto* leaf = fresh.find(Path::parse(p)))
      CHECK(v->value().raw_data() == leaf->tensor().raw_data());  // zero-copy
  }
  CHECK(m.embed.embedding.value().raw_data() == fresh["embed/embedding"].tensor().raw_data());
  CHECK(m.head->kernel.value().raw_data() == fresh["embed/embedding"].tensor().raw_data());  // the tie
  CHECK(alias.head->kernel.value().data<float>()[0] == 7.0f);
  CHECK(alias.blocks[2].attn.qkv.value().raw_data() == fresh["blocks/2/attn/qkv"].tensor().raw_data());
  CHECK(alias.frozen.value().data<float>()[2] == 7.0f);
  CHECK(m.blocks[1].kv->value().raw_data() == cache_before);  // not in the state: untouched
  CHECK(m.embed.embedding.same_as(alias.embed.embedding));    // same variables, new values

  // a partial state updates only its leaves
  State one;
  one.insert(Path::parse("blocks/1/kv"), nnx::Cache(Tensor::full({2, D}, -1.0)).state());
  nnx::update(m, one);
  CHECK(alias.blocks[1].kv->value().to_vector<float>() == std::vector<float>(2 * D, -1.0f));
  CHECK(m.blocks[0].attn.qkv.value().data<float>()[0] == 7.0f);

  // metadata is the module's, not the state's
  State renamed = with_leaf(nnx::state(m, nnx::path_contains("embed")), "embed/embedding",
                            [](nnx::VariableState v) {
                              v.value = v.tensor().clone();
                              return v;
                            });
  nnx::update(m, renamed);
  CHECK(m.embed.embedding.metadata().axes == std::vector<std::string>{"vocab", "embed"});
}

TEST_CASE("update: errors name the path and change nothing", "[update][errors]") {
  Model m = make_model();
  const auto bufs = buffers(m);
  const auto vals = values(m);
  // every bad state starts with valid leaves, so a non-atomic update would have written them
  State good = nnx::state(m).map([](const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype()); });

  SECTION("unknown path") {
    State bad = good;
    bad.insert(Path::parse("blocks/0/attn/nope"), good["blocks/0/gate"]);
    CHECK_THROWS_AS(nnx::update(m, bad), nnx::UnexpectedLeafError);
    CHECK_THROWS_WITH(nnx::update(m, bad), Catch::Contains("blocks/0/attn/nope"));
    State tie;
    tie.insert(Path::parse("head/kernel"), good["embed/embedding"]);
    CHECK_THROWS_AS(nnx::update(m, tie), nnx::UnexpectedLeafError);
  }
  SECTION("wrong shape") {
    State bad = with_leaf(good, "blocks/2/kv", [](nnx::VariableState v) {
      v.value = Tensor::zeros({3, D});
      return v;
    });
    CHECK_THROWS_AS(nnx::update(m, bad), nnx::ShapeError);
    CHECK_THROWS_WITH(nnx::update(m, bad), Catch::Contains("blocks/2/kv"));
  }
  SECTION("wrong dtype") {
    State bad = with_leaf(good, "stats", [](nnx::VariableState v) {
      v.value = Tensor::zeros({}, DType::f16);
      return v;
    });
    CHECK_THROWS_AS(nnx::update(m, bad), nnx::DTypeError);
    CHECK_THROWS_WITH(nnx::update(m, bad), Catch::Contains("'stats'"));
  }
  SECTION("wrong kind") {
    State bad = with_leaf(good, "extras/beta", [](nnx::VariableState v) {
      v.kind = &nnx::Intermediate::kind_info();
      return v;
    });
    CHECK_THROWS_AS(nnx::update(m, bad), nnx::KindError);
    CHECK_THROWS_WITH(nnx::update(m, bad), Catch::Contains("extras/beta"));
  }
  CHECK(buffers(m) == bufs);
  CHECK(values(m) == vals);
  // and the good state applies
  nnx::update(m, good);
  CHECK(m.blocks[0].attn.qkv.value().data<float>()[0] == 0.0f);
  CHECK(buffers(m) != bufs);
}

// ---- state, graphdef, clone, eval_shape -------------------------------------------------

TEST_CASE("state(m, filter) and graphdef(m)", "[state][graphdef]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);
  CHECK(nnx::graphdef(m) == g);
  CHECK(nnx::state(m) == s);
  State caches = nnx::state(m, nnx::of<nnx::Cache>);
  CHECK(paths_of(caches) == std::vector<std::string>{"blocks/1/kv", "blocks/2/kv"});
  CHECK(caches["blocks/2/kv"].tensor().raw_data() == data_of(*m.blocks[2].kv));
  CHECK(nnx::state(m, nnx::of<nnx::Param>) == s.filter(nnx::of<nnx::Param>));

  // graphdefs differ when structure, statics, kinds, dtypes or shapes differ
  Model other = make_model();
  CHECK(nnx::graphdef(other) == g);
  other.eps = 2e-5;
  CHECK_FALSE(nnx::graphdef(other) == g);
  Model fewer = make_model();
  fewer.blocks.pop_back();
  CHECK_FALSE(nnx::graphdef(fewer) == g);
  Model opt = make_model();
  opt.blocks[1].gate = nnx::Param(filled({D}));
  CHECK_FALSE(nnx::graphdef(opt) == g);
  Model kind = make_model();
  kind.stats = nnx::Intermediate(Tensor::zeros({}, DType::bf16));
  CHECK_FALSE(nnx::graphdef(kind) == g);
  Model untied = make_model();
  untied.head->kernel = nnx::Param(untied.embed.embedding.value(), {"vocab", "embed"});  // same tensor, new variable
  CHECK_FALSE(nnx::graphdef(untied) == g);
  CHECK(nnx::graphdef(untied).leaves().size() == kLeaves + 1);
  Model vec = make_model();
  vec.dims.push_back(1);
  CHECK_FALSE(nnx::graphdef(vec) == g);
  // a graphdef is a cheap shared handle
  nnx::GraphDef<Model> copy = g;
  CHECK(copy == g);
  CHECK(&copy.data() == &g.data());
}

TEST_CASE("clone(m) is deep and keeps ties", "[clone]") {
  Model m = make_model();
  Model c = nnx::clone(m);
  CHECK(nnx::graphdef(c) == nnx::graphdef(m));
  check_same_config(m, c);
  auto a = variables(m);
  auto b = variables(c);
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].first);
    CHECK_FALSE(b[i].second->same_as(*a[i].second));
    CHECK(b[i].second->value().raw_data() != a[i].second->value().raw_data());
    CHECK(nnx::equal(b[i].second->value(), a[i].second->value()));
  }
  CHECK(c.head->kernel.same_as(c.embed.embedding));
  CHECK_FALSE(c.head->kernel.same_as(m.embed.embedding));
  c.embed.embedding.value().data<float>()[0] = -5.0f;
  CHECK(m.embed.embedding.value().data<float>()[0] != -5.0f);
  CHECK(c.head->kernel.value().data<float>()[0] == -5.0f);
  c.blocks[0].gate->set_value(Tensor::zeros({D}));
  CHECK(m.blocks[0].gate->value().data<float>()[0] != 0.0f);
}

TEST_CASE("eval_shape(m): abstract, ties kept, nothing allocated", "[eval_shape]") {
  Model m = make_model();
  const auto before = nnx::tensor_memory_stats();
  Model a = nnx::eval_shape(m);
  CHECK(nnx::tensor_memory_stats().allocated_bytes == before.allocated_bytes);
  CHECK(nnx::graphdef(a) == nnx::graphdef(m));
  check_same_config(m, a);
  auto am = variables(m);
  auto aa = variables(a);
  for (std::size_t i = 0; i < am.size(); ++i) {
    INFO(am[i].first);
    CHECK(aa[i].second->value().is_abstract());
    CHECK(aa[i].second->value().shape() == am[i].second->value().shape());
    CHECK_FALSE(am[i].second->value().is_abstract());  // the original is untouched
  }
  CHECK(a.head->kernel.same_as(a.embed.embedding));
  State as = nnx::state(a);
  CHECK(as.nbytes() == kNumel * 4);  // abstract leaves report the bytes they would hold
  CHECK(as.numel() == kNumel);
  CHECK_THROWS_AS(as["embed/embedding"].tensor().raw_data(), nnx::InvalidArgument);

  // an abstract graphdef restores concrete states (the checkpoint-restore path)
  auto [ga, sa] = nnx::split(a);
  Model restored = nnx::merge(ga, nnx::state(m));
  CHECK(buffers(restored) == buffers(m));
  CHECK(restored.head->kernel.same_as(restored.embed.embedding));
}

TEST_CASE("eval_shape(fn) builds modules of abstract tensors", "[eval_shape]") {
  const auto before = nnx::tensor_memory_stats();
  Model a = nnx::eval_shape([] { return make_model(); });
  CHECK(nnx::tensor_memory_stats().allocated_bytes == before.allocated_bytes);
  for (auto& [p, v] : variables(a)) CHECK(v->value().is_abstract());
  CHECK(nnx::graphdef(a) == nnx::graphdef(make_model()));
  CHECK_FALSE(Tensor::zeros({2}).is_abstract());  // the scope ended
  // an exception inside eval_shape ends the scope too
  CHECK_THROWS(nnx::eval_shape([]() -> int { throw nnx::InvalidArgument("x"); }));
  CHECK_FALSE(Tensor::zeros({2}).is_abstract());
}

// ---- integer keys, pure dicts -----------------------------------------------------------

TEST_CASE("integer keys round-trip through states and pure dicts", "[state][path]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);
  const auto& e = s.entry(7);  // the first leaf of blocks/1
  CHECK(e.path.to_string() == "blocks/1/attn/qkv");
  REQUIRE(e.path.size() == 4);
  CHECK(e.path[1].is_index());
  CHECK(e.path[1].index() == 1);
  CHECK(e.path == Path{"blocks", 1, "attn", "qkv"});
  CHECK(e.path == Path::parse("blocks/1/attn/qkv"));
  CHECK(s.index_of(Path{"blocks", 1, "attn", "qkv"}) == 7);
  CHECK(s.index_of(Path{"blocks", "x1", "attn", "qkv"}) == -1);
  for (const auto& [p, leaf] : s)
    if (p[0] == "blocks") CHECK(p[1].is_index());
    else if (p[0] == "extras") CHECK(p[1].is_name());

  nnx::PureDict d = s.to_pure_dict();
  for (const auto& [p, t] : d)
    if (p[0] == "blocks") CHECK(p[1].is_index());
  CHECK(d.contains(Path{"blocks", 2, "kv"}));
  CHECK(g.leaves()[7].path[1].is_index());
  std::size_t index_nodes = 0;
  for (const auto& n : g.nodes())
    if (n.depth > 0 && n.key.is_index()) {
      ++index_nodes;
      CHECK(n.type == nnx::NodeType::module);  // blocks/0, blocks/1, blocks/2
      CHECK(n.depth == 2);
    }
  CHECK(index_nodes == 3);
}

TEST_CASE("to_pure_dict / replace_by_pure_dict round trip", "[state][pure_dict]") {
  Model m = make_model();
  auto [g, s] = nnx::split(m);
  nnx::PureDict d = s.to_pure_dict();
  REQUIRE(d.size() == kLeaves);
  for (const auto& [p, leaf] : s) CHECK(d[p].raw_data() == leaf.tensor().raw_data());  // zero-copy

  nnx::PureDict fresh;
  for (const auto& [p, t] : d) fresh.insert(p, Tensor::full(t.shape(), 3.0, t.dtype()));
  State s2 = s;
  s2.replace_by_pure_dict(fresh);
  for (const auto& [p, leaf] : s2) {
    INFO(p.to_string());
    CHECK(leaf.tensor().raw_data() == fresh[p].raw_data());
    CHECK(leaf.kind == s[p].kind);
    CHECK(leaf.axes() == s[p].axes());
  }
  CHECK(s["embed/embedding"].tensor().raw_data() == data_of(m.embed.embedding));  // s itself unchanged
  CHECK(s2.to_pure_dict() == fresh);
  Model r = nnx::merge(g, s2);
  CHECK(r.head->kernel.value().data<float>()[0] == 3.0f);
  CHECK(r.head->kernel.same_as(r.embed.embedding));
  // and back
  s2.replace_by_pure_dict(d);
  CHECK(s2 == s);

  SECTION("allow_missing keeps the other leaves") {
    nnx::PureDict part;
    part.insert(Path::parse("blocks/0/gate"), fresh["blocks/0/gate"]);
    State s3 = s;
    CHECK_THROWS_AS(s3.replace_by_pure_dict(part), nnx::MissingLeafError);
    s3.replace_by_pure_dict(part, /*allow_missing=*/true);
    CHECK(s3["blocks/0/gate"].tensor().raw_data() == fresh["blocks/0/gate"].raw_data());
    CHECK(s3["blocks/2/gate"].tensor().raw_data() == s["blocks/2/gate"].tensor().raw_data());
  }
}

TEST_CASE("replace_by_pure_dict: checked errors, nothing changed on error", "[state][pure_dict][errors]") {
  Model m = make_model();
  State s = nnx::state(m);
  const State snapshot = s;
  nnx::PureDict d;
  for (const auto& [p, t] : s.to_pure_dict()) d.insert(p, Tensor::zeros(t.shape(), t.dtype()));

  auto unchanged = [&] {
    REQUIRE(s.size() == snapshot.size());
    for (std::size_t i = 0; i < s.size(); ++i)
      CHECK(s.entry(i).leaf.tensor().raw_data() == snapshot.entry(i).leaf.tensor().raw_data());
  };
  auto edited = [&](std::string_view path, Tensor t) {
    nnx::PureDict out;
    for (const auto& [p, x] : d) out.insert(p, p == Path::parse(path) ? t : x);
    return out;
  };

  SECTION("missing") {
    nnx::PureDict bad;
    for (const auto& [p, x] : d)
      if (!(p == Path::parse("blocks/2/mlp/out/kernel"))) bad.insert(p, x);
    CHECK_THROWS_AS(s.replace_by_pure_dict(bad), nnx::MissingLeafError);
    CHECK_THROWS_WITH(s.replace_by_pure_dict(bad), Catch::Contains("blocks/2/mlp/out/kernel"));
  }
  SECTION("unknown") {
    nnx::PureDict bad = d;
    bad.insert(Path::parse("blocks/3/gate"), Tensor::zeros({D}));
    CHECK_THROWS_AS(s.replace_by_pure_dict(bad), nnx::UnexpectedLeafError);
    CHECK_THROWS_WITH(s.replace_by_pure_dict(bad), Catch::Contains("blocks/3/gate"));
    nnx::PureDict below = d;  // a path below a plain leaf
    below.insert(Path::parse("stats/x"), Tensor::zeros({}));
    CHECK_THROWS_AS(s.replace_by_pure_dict(below), nnx::UnexpectedLeafError);
    CHECK_THROWS_AS(s.replace_by_pure_dict(below, true), nnx::UnexpectedLeafError);
  }
  SECTION("dtype") {
    auto bad = edited("extras/beta", Tensor::zeros({2}, DType::i32));
    CHECK_THROWS_AS(s.replace_by_pure_dict(bad), nnx::DTypeError);
    CHECK_THROWS_WITH(s.replace_by_pure_dict(bad), Catch::Contains("extras/beta"));
  }
  SECTION("shape") {
    auto bad = edited("embed/embedding", Tensor::zeros({D, V}));
    CHECK_THROWS_AS(s.replace_by_pure_dict(bad), nnx::ShapeError);
    CHECK_THROWS_WITH(s.replace_by_pure_dict(bad), Catch::Contains("embed/embedding"));
  }
  unchanged();
}

// ---- State operations -------------------------------------------------------------------

TEST_CASE("State: filter, split, map, map_with_path, nbytes, numel, equality", "[state]") {
  Model m = make_model();
  State s = nnx::state(m);

  State caches = s.filter(nnx::of<nnx::Cache>);
  CHECK(paths_of(caches) == std::vector<std::string>{"blocks/1/kv", "blocks/2/kv"});
  CHECK(caches["blocks/1/kv"].tensor().raw_data() == data_of(*m.blocks[1].kv));
  CHECK(caches.numel() == 16);
  CHECK(caches.nbytes() == 64);
  CHECK(s.filter(nnx::nothing).empty());

  auto [p, c, rest] = s.split(nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);
  CHECK(p.size() == kLeaves - 3);
  CHECK(c == caches);
  CHECK(paths_of(rest) == std::vector<std::string>{"stats"});
  CHECK(p.numel() + c.numel() + rest.numel() == s.numel());
  CHECK(p.nbytes() + c.nbytes() + rest.nbytes() == s.nbytes());
  CHECK(nnx::merge_states(p, c, rest).size() == s.size());
  CHECK(nnx::merge_states(p, c, rest).numel() == s.numel());

  // map: same paths, kinds, metadata; new tensors
  State doubled = s.map([](const Tensor& t) {
    Tensor out = t.clone();
    for (float& v : out.span<float>()) v *= 2;
    return out;
  });
  CHECK(paths_of(doubled) == paths_of(s));
  CHECK(doubled["embed/embedding"].axes() == s["embed/embedding"].axes());
  CHECK(doubled["frozen"].kind == s["frozen"].kind);
  CHECK(doubled["stats"].tensor().item<float>() == 2 * s["stats"].tensor().item<float>());
  CHECK_FALSE(doubled == s);
  CHECK(s.map([](const Tensor& t) { return t; }) == s);
  CHECK(s.map([](const Tensor& t) { return t.clone(); }) == s);  // equality compares values

  // map_with_path: zero the biases only
  State nob = s.map_with_path([](const Path& path, const nnx::VariableState& leaf) {
    return path.back() == "bias" ? Tensor::zeros(leaf.shape()) : leaf.tensor();
  });
  for (const auto& [path, leaf] : nob) {
    INFO(path.to_string());
    if (path.back() == "bias")
      CHECK(leaf.tensor().to_vector<float>() == std::vector<float>(static_cast<std::size_t>(leaf.shape().numel()), 0.0f));
    else
      CHECK(leaf.tensor().raw_data() == s[path].tensor().raw_data());
  }

  // equality: order, paths, kinds and values all count
  State copy = s;
  CHECK(copy == s);
  CHECK_FALSE(nnx::merge_states(c, p, rest) == s);  // same leaves, another order
  CHECK_FALSE(with_leaf(s, "stats", [](nnx::VariableState v) {
                v.kind = &nnx::Cache::kind_info();
                return v;
              }) == s);
  CHECK_FALSE(without_leaf(s, "stats") == s);
  copy.insert(Path::parse("new"), s["stats"]);
  CHECK(copy.size() == s.size() + 1);  // copies are independent containers
  CHECK_FALSE(copy == s);

  // lookups
  CHECK_THROWS_AS(s["blocks/9/gate"], nnx::MissingLeafError);
  CHECK_THROWS_WITH(s["blocks/9/gate"], Catch::Contains("blocks/9/gate"));
  CHECK(s.find(Path::parse("nope")) == nullptr);
  CHECK_THROWS_AS(s.insert(Path::parse("stats"), s["stats"]), nnx::InvalidArgument);
  CHECK(s.size() == kLeaves);  // the failed insert left no trace
  CHECK(s.index_of(Path::parse("stats")) == static_cast<std::int64_t>(kLeaves - 1));

  const std::string table = nnx::format_table(s);
  CHECK_THAT(table, Catch::Contains("blocks/2/kv") && Catch::Contains("MyKind") &&
                        Catch::Contains(std::to_string(kLeaves) + " leaves, 501 elements, 2004 bytes"));
}

TEST_CASE("merge_states: a duplicate path is an InvalidArgument", "[state]") {
  Model m = make_model();
  State s = nnx::state(m);
  State a = s.filter(nnx::path_contains("embed"));
  State b = s.filter(nnx::path_contains("extras"));
  CHECK(nnx::merge_states(a, b).size() == 3);
  CHECK(nnx::merge_states().empty());
  CHECK_THROWS_AS(nnx::merge_states(a, b, a), nnx::InvalidArgument);
  CHECK_THROWS_WITH(nnx::merge_states(b, s), Catch::Contains("extras/alpha"));
}

// ---- donation ---------------------------------------------------------------------------

TEST_CASE("donation: merge(graphdef, std::move(state)) leaves the merged module sole owner", "[merge][donation]") {
  Model r;
  nnx::GraphDef<Model> g;
  {
    Model m = make_model();
    auto [g0, s] = nnx::split(m);
    g = g0;
    r = nnx::merge(g0, std::move(s));
    // m still holds each buffer; the donated state holds none
    for (auto& [p, v] : variables(r)) {
      INFO(p);
      CHECK(v->value().use_count() == 2);
    }
  }
  for (auto& [p, v] : variables(r)) {
    INFO(p);
    CHECK(v->value().use_count() == 1);
  }
  CHECK(r.head->kernel.same_as(r.embed.embedding));

  SECTION("without donation the state keeps a reference") {
    State kept = nnx::state(r);
    Model r2 = nnx::merge(g, kept);
    CHECK(r2.blocks[0].attn.qkv.value().use_count() == 3);  // r, kept, r2
  }
  SECTION("mixed: only the moved state is donated") {
    auto [g2, params, cache] = nnx::split(r, nnx::of<nnx::Param>, nnx::everything);
    r = Model();  // the original is gone
    Model r2 = nnx::merge(g2, std::move(params), cache);
    CHECK(r2.blocks[0].attn.qkv.value().use_count() == 1);
    CHECK(r2.embed.embedding.value().use_count() == 1);
    CHECK(r2.blocks[1].kv->value().use_count() == 2);  // cache still holds it
  }
  SECTION("a pure step may update a donated cache in place") {
    auto [g2, params, cache] = nnx::split(r, nnx::of<nnx::Param>, nnx::everything);
    r = Model();
    const std::byte* kv_buffer = cache["blocks/1/kv"].tensor().raw_data();
    auto step = [&](State c) {
      Model mm = nnx::merge(g2, params, std::move(c));
      Tensor& kv = mm.blocks[1].kv->value();
      if (kv.use_count() != 1) kv = kv.clone();  // copy-on-write unless donated
      kv.data<float>()[0] = 1234.0f;
      return nnx::state(mm, nnx::Not(nnx::of<nnx::Param>));
    };
    State next = step(std::move(cache));
    CHECK(next["blocks/1/kv"].tensor().raw_data() == kv_buffer);  // written in place
    CHECK(next["blocks/1/kv"].tensor().data<float>()[0] == 1234.0f);
    CHECK(next["blocks/1/kv"].tensor().use_count() == 1);
    // without donation the step copies
    State next2 = step(next);
    CHECK(next2["blocks/1/kv"].tensor().raw_data() != kv_buffer);
    CHECK(next["blocks/1/kv"].tensor().raw_data() == kv_buffer);
  }
}

// ---- QTensor leaves ---------------------------------------------------------------------

namespace {

struct QLin {
  std::int64_t bits = 8;
  nnx::Param w;  // holds a QTensor
  nnx::Param b;
  NNX_FIELDS(bits, w, b)
};
struct QModel {
  std::vector<QLin> layers;
  NNX_FIELDS(layers)
};

nnx::QTensor make_q(std::int8_t base) {
  std::vector<std::int8_t> q(32);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<std::int8_t>(base + static_cast<int>(i));
  return nnx::QTensor{Tensor::from_vector(q, {4, 8}), {filled({8})}};
}

QModel make_qmodel() {
  QModel m;
  for (int i = 0; i < 2; ++i) {
    QLin l;
    l.w = nnx::Param(make_q(static_cast<std::int8_t>(10 * i)), nnx::Metadata{{"embed", "mlp"}});
    l.b = nnx::Param(filled({8}));
    m.layers.push_back(l);
  }
  return m;
}

}  // namespace

TEST_CASE("QTensor leaves flatten to qvalue and scale/<i>", "[qtensor][pure_dict]") {
  QModel m = make_qmodel();
  auto [g, s] = nnx::split(m);
  REQUIRE(s.size() == 4);
  CHECK(s["layers/0/w"].is_quantized());
  CHECK(s["layers/0/w"].dtype() == DType::i8);
  CHECK(s["layers/0/w"].shape() == Shape{4, 8});
  CHECK(s.numel() == 2 * (32 + 8 + 8));
  CHECK(s.nbytes() == 2 * (32 + 32 + 32));
  CHECK_THROWS_AS(s["layers/0/w"].tensor(), nnx::KindError);
  CHECK(g.leaves()[0].quantized);
  CHECK(g.leaves()[0].scale_shapes == std::vector<Shape>{Shape{8}});
  CHECK(g.leaves()[0].describe() == "Param i8[4, 8] scale f32[8]");
  CHECK(g.numel() == s.numel());

  nnx::PureDict d = s.to_pure_dict();
  std::vector<std::string> keys;
  for (const auto& [p, t] : d) keys.push_back(p.to_string());
  CHECK(keys == std::vector<std::string>{"layers/0/w/qvalue", "layers/0/w/scale/0", "layers/0/b", "layers/1/w/qvalue",
                                         "layers/1/w/scale/0", "layers/1/b"});
  CHECK(Path::parse("layers/0/w/scale/0")[4].is_index());
  CHECK(d.entry(1).path[4].is_index());
  CHECK(d["layers/1/w/qvalue"].raw_data() == m.layers[1].w.qvalue().qvalue.raw_data());
  CHECK(d["layers/1/w/scale/0"].raw_data() == m.layers[1].w.qvalue().scale[0].raw_data());

  // replace_by_pure_dict reassembles the QTensors
  nnx::PureDict fresh;
  for (const auto& [p, t] : d) fresh.insert(p, t.clone());
  State s2 = s;
  s2.replace_by_pure_dict(fresh);
  CHECK(s2["layers/1/w"].is_quantized());
  CHECK(s2["layers/1/w"].qtensor().qvalue.raw_data() == fresh["layers/1/w/qvalue"].raw_data());
  CHECK(s2["layers/1/w"].qtensor().scale.size() == 1);
  CHECK(s2["layers/1/w"].qtensor().scale[0].raw_data() == fresh["layers/1/w/scale/0"].raw_data());
  CHECK(s2["layers/1/w"].axes() == std::vector<std::string>{"embed", "mlp"});
  CHECK(s2 == s);  // same values
  QModel r = nnx::merge(g, s2);
  CHECK(r.layers[1].w.qvalue().qvalue.raw_data() == fresh["layers/1/w/qvalue"].raw_data());

  SECTION("checked errors") {
    nnx::PureDict no_scale;
    for (const auto& [p, t] : fresh)
      if (!(p == Path::parse("layers/0/w/scale/0"))) no_scale.insert(p, t);
    CHECK_THROWS_AS(s2.replace_by_pure_dict(no_scale), nnx::MissingLeafError);
    CHECK_THROWS_WITH(s2.replace_by_pure_dict(no_scale), Catch::Contains("layers/0/w/scale/0"));
    nnx::PureDict bad_scale;
    for (const auto& [p, t] : fresh)
      bad_scale.insert(p, p == Path::parse("layers/0/w/scale/0") ? Tensor::zeros({4}) : t);
    CHECK_THROWS_AS(s2.replace_by_pure_dict(bad_scale), nnx::ShapeError);
    nnx::PureDict bad_q;
    for (const auto& [p, t] : fresh)
      bad_q.insert(p, p == Path::parse("layers/1/w/qvalue") ? Tensor::zeros({4, 8}, DType::u8) : t);
    CHECK_THROWS_AS(s2.replace_by_pure_dict(bad_q), nnx::DTypeError);
    CHECK(s2["layers/1/w"].qtensor().qvalue.raw_data() == fresh["layers/1/w/qvalue"].raw_data());  // unchanged
  }
}

// State::covers() accepts ANY path below a quantized leaf ("p/scale/7", "p/anything"), so
// replace_by_pure_dict silently ignores such entries instead of reporting them as
// UnexpectedLeafError. Only "p/qvalue" and "p/scale/<i>" with i < scale.size() are parts of
// a QTensor leaf.
TEST_CASE("replace_by_pure_dict: unknown paths below a QTensor leaf are unexpected", "[qtensor][pure_dict][bug]") {
  QModel m = make_qmodel();
  State s = nnx::state(m);
  nnx::PureDict extra_scale = s.to_pure_dict();
  extra_scale.insert(Path::parse("layers/0/w/scale/1"), Tensor::zeros({8}));  // there is only scale/0
  CHECK_THROWS_AS(s.replace_by_pure_dict(extra_scale), nnx::UnexpectedLeafError);
  nnx::PureDict junk = s.to_pure_dict();
  junk.insert(Path::parse("layers/0/w/junk"), Tensor::zeros({1}));
  CHECK_THROWS_AS(s.replace_by_pure_dict(junk), nnx::UnexpectedLeafError);
  // with allow_missing, a tensor at the QTensor leaf's own path is not one of its parts
  nnx::PureDict whole;
  whole.insert(Path::parse("layers/0/w"), Tensor::zeros({4, 8}, DType::i8));
  CHECK_THROWS_AS(s.replace_by_pure_dict(whole, /*allow_missing=*/true), nnx::UnexpectedLeafError);
}

TEST_CASE("QTensor leaves split/merge round-trip; wrong scales are rejected", "[qtensor][merge]") {
  QModel m = make_qmodel();
  auto [g, s] = nnx::split(m);
  QModel r = nnx::merge(g, s);
  CHECK(nnx::graphdef(r) == g);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(r.layers[i].w.is_quantized());
    CHECK(r.layers[i].w.qvalue().qvalue.raw_data() == m.layers[i].w.qvalue().qvalue.raw_data());
    CHECK(r.layers[i].w.qvalue().scale[0].raw_data() == m.layers[i].w.qvalue().scale[0].raw_data());
    CHECK(r.layers[i].b.value().raw_data() == m.layers[i].b.value().raw_data());
  }
  QModel c = nnx::merge_copy(g, s);
  CHECK(c.layers[0].w.qvalue().scale[0].raw_data() != m.layers[0].w.qvalue().scale[0].raw_data());
  CHECK(nnx::equal(c.layers[0].w.qvalue(), m.layers[0].w.qvalue()));
  QModel a = nnx::eval_shape(m);
  CHECK(a.layers[0].w.qvalue().qvalue.is_abstract());
  CHECK(a.layers[0].w.qvalue().scale[0].is_abstract());
  CHECK(a.layers[0].w.qvalue().scale[0].shape() == Shape{8});
  CHECK(nnx::graphdef(a) == g);
  QModel k = nnx::clone(m);
  CHECK(k.layers[1].w.qvalue().qvalue.raw_data() != m.layers[1].w.qvalue().qvalue.raw_data());
  CHECK(nnx::equal(k.layers[1].w.qvalue(), m.layers[1].w.qvalue()));

  auto with_scale = [&](std::vector<Tensor> scale) {
    return with_leaf(s, "layers/1/w", [&](nnx::VariableState v) {
      v.value = nnx::QTensor{v.qtensor().qvalue, scale};
      return v;
    });
  };
  State wrong_shape = with_scale({Tensor::zeros({4})});
  CHECK_THROWS_AS(nnx::merge(g, wrong_shape), nnx::ShapeError);
  CHECK_THROWS_WITH(nnx::merge(g, wrong_shape), Catch::Contains("layers/1/w"));
  CHECK_THROWS_AS(nnx::merge(g, with_scale({})), nnx::ShapeError);
  CHECK_THROWS_AS(nnx::merge(g, with_scale({Tensor::zeros({8}), Tensor::zeros({8})})), nnx::ShapeError);
  CHECK_THROWS_AS(nnx::merge(g, with_scale({Tensor::zeros({8}, DType::bf16)})), nnx::Error);
  State plain = with_leaf(s, "layers/0/w", [](nnx::VariableState v) {
    v.value = Tensor::zeros({4, 8}, DType::i8);
    return v;
  });
  CHECK_THROWS_AS(nnx::merge(g, plain), nnx::DTypeError);  // a Tensor where a QTensor is expected
  CHECK_THROWS_WITH(nnx::merge(g, plain), Catch::Contains("layers/0/w"));

  // update checks scales too, and applies QTensors in place
  QModel u = nnx::clone(m);
  CHECK_THROWS_AS(nnx::update(u, wrong_shape), nnx::ShapeError);
  State fresh = s.map([](const Tensor& t) { return t.clone(); });
  nnx::update(u, fresh);
  CHECK(u.layers[1].w.qvalue().scale[0].raw_data() == fresh["layers/1/w"].qtensor().scale[0].raw_data());

  // a module whose QTensor is malformed cannot be split
  QModel bad = make_qmodel();
  bad.layers[1].w.set_value(nnx::QTensor{Tensor::zeros({4, 8}, DType::i8), {Tensor::zeros({8}, DType::f16)}});
  CHECK_THROWS_AS(nnx::split(bad), nnx::DTypeError);
  CHECK_THROWS_WITH(nnx::split(bad), Catch::Contains("layers/1/w"));
  bad.layers[1].w.set_value(nnx::QTensor{Tensor::zeros({4, 8}, DType::u8), {Tensor::zeros({8})}});
  CHECK_THROWS_AS(nnx::split(bad), nnx::DTypeError);
}

// ---- GraphDef equality and hashing ------------------------------------------------------

namespace {
struct Cfg {
  double eps = 0;
  nnx::Param w;
  NNX_FIELDS(eps, w)
};
}  // namespace

TEST_CASE("GraphDef: equality and hash agree", "[graphdef]") {
  Cfg a{1e-5, nnx::Param(Tensor::zeros({2}))};
  Cfg b{1e-5, nnx::Param(Tensor::zeros({2}))};
  CHECK(nnx::graphdef(a) == nnx::graphdef(b));
  CHECK(nnx::graphdef(a).hash() == nnx::graphdef(b).hash());
  b.eps = 1e-6;
  CHECK_FALSE(nnx::graphdef(a) == nnx::graphdef(b));
  CHECK(nnx::graphdef(a).hash() != nnx::graphdef(b).hash());
  Model m = make_model();
  CHECK(nnx::graphdef(m).hash() == nnx::graphdef(make_model()).hash());
  nnx::GraphDef<> empty;
  CHECK_FALSE(empty.valid());
  CHECK(empty == nnx::GraphDef<>());
  CHECK_FALSE(empty == nnx::graphdef(a));
  CHECK_THROWS_AS(empty.leaves(), nnx::InvalidArgument);
}

// same_graph compares static doubles with ==, while hash() hashes their "%.17g" text. So
// eps = 0.0 and eps = -0.0 give graphdefs that compare equal but hash differently (breaking
// std::unordered_* containers), and a NaN static makes a graphdef unequal to an identical one
// (merge(split(m)) of such a module no longer "has an equal graphdef"). Comparing statics by
// bit pattern (or by the formatted text that hash() uses) makes the two agree.
TEST_CASE("GraphDef: equal graphdefs hash alike, and every graphdef equals its rebuild", "[graphdef][bug]") {
  Cfg pos{0.0, nnx::Param(Tensor::zeros({2}))};
  Cfg neg{-0.0, nnx::Param(Tensor::zeros({2}))};
  const auto gp = nnx::graphdef(pos);
  const auto gn = nnx::graphdef(neg);
  CHECK((!(gp == gn) || gp.hash() == gn.hash()));

  Cfg nan{std::nan(""), nnx::Param(Tensor::zeros({2}))};
  auto [g, s] = nnx::split(nan);
  Cfg r = nnx::merge(g, s);
  CHECK(nnx::graphdef(r) == g);
}

// ---- PathMap / State containers ---------------------------------------------------------

// PathMap's defaulted move leaves the moved-from index claiming its old entry count (the
// PathIndex's count_ and mask_ are copied, its slots moved away) while entries_ is empty. The
// next insert into the moved-from map rehashes `count_` entries that no longer exist: an
// out-of-bounds read of entries_ (a crash). A moved-from State must be reusable (insert,
// find), as a moved-from std::vector is.
TEST_CASE("State: a moved-from state can be reused", "[state][bug]") {
  Model m = make_model();
  State s = nnx::state(m);
  State taken = std::move(s);
  CHECK(taken.size() == kLeaves);
  const bool reusable = runs_cleanly_in_child([&] {
    for (std::size_t i = 0; i < 40; ++i) s.insert(Path{"x", i}, taken.entry(0).leaf);
    return s.size() == 40 && s.contains(Path{"x", 39}) && !s.contains(Path::parse("stats"));
  });
  CHECK(reusable);
}

// ---- merged modules and memory ----------------------------------------------------------

// merge() now puts every VariableState of the merged module into ONE shared block and gives
// each handle an aliasing shared_ptr into it. A variable that is dropped from the module (an
// optional reset, a handle reassigned, the f32 kernel stripped after int8 conversion) then
// keeps its tensor alive for as long as any other variable of that module lives: its buffer
// is never freed. With one control block per variable it is freed at once.
TEST_CASE("merge: dropping one variable of a merged module frees its buffer", "[merge][memory][bug]") {
  Model r;
  {
    Model m = make_model();
    auto [g, s] = nnx::split(m);
    r = nnx::merge(g, std::move(s));
  }
  Tensor gate = r.blocks[0].gate->value();
  CHECK(gate.use_count() == 2);  // r and `gate`
  r.blocks[0].gate.reset();
  CHECK(gate.use_count() == 1);  // only `gate` should hold it now
  Tensor qkv = r.blocks[2].attn.qkv.value();
  r.blocks[2].attn.qkv = nnx::Param(Tensor::zeros({D, 3 * D}), {"embed", "qkv"});
  CHECK(qkv.use_count() == 1);
  // the same through clone(), which makes one cell per variable
  Model c = nnx::clone(r);
  Tensor cq = c.blocks[1].attn.qkv.value();
  c.blocks[1].attn.qkv = nnx::Param(Tensor::zeros({D, 3 * D}), {"embed", "qkv"});
  CHECK(cq.use_count() == 1);
}

// ---- eval_shape of a GPT-2-124M-sized model ---------------------------------------------

namespace {

struct Gpt2Config {
  std::int64_t vocab = 50257, ctx = 1024, layers = 12, d = 768, mlp = 3072;
};

struct G2LayerNorm {
  double eps = 1e-5;
  nnx::Param scale, bias;
  NNX_FIELDS(eps, scale, bias)
  G2LayerNorm() = default;
  explicit G2LayerNorm(std::int64_t d)
      : scale(Tensor::full({d}, 1.0), {"embed"}), bias(Tensor::zeros({d}), {"embed"}) {}
};

struct G2Linear {
  nnx::Param kernel, bias;
  NNX_FIELDS(kernel, bias)
  G2Linear() = default;
  G2Linear(std::int64_t din, std::int64_t dout, nnx::Rngs& rngs)
      : kernel(nnx::init::normal(rngs.params(), {din, dout}, 0.02f), {"embed", "mlp"}),
        bias(Tensor::zeros({dout}), {"mlp"}) {}
};

struct G2Attention {
  std::int64_t heads = 12;
  G2Linear c_attn, c_proj;  // fused qkv [d, 3d] + bias, output projection
  NNX_FIELDS(heads, c_attn, c_proj)
  G2Attention() = default;
  G2Attention(std::int64_t d, nnx::Rngs& rngs) : c_attn(d, 3 * d, rngs), c_proj(d, d, rngs) {}
};

struct G2Mlp {
  G2Linear c_fc, c_proj;
  NNX_FIELDS(c_fc, c_proj)
  G2Mlp() = default;
  G2Mlp(std::int64_t d, std::int64_t hidden, nnx::Rngs& rngs) : c_fc(d, hidden, rngs), c_proj(hidden, d, rngs) {}
};

struct G2Block {
  G2LayerNorm ln_1;
  G2Attention attn;
  G2LayerNorm ln_2;
  G2Mlp mlp;
  NNX_FIELDS(ln_1, attn, ln_2, mlp)
  G2Block() = default;
  G2Block(const Gpt2Config& c, nnx::Rngs& rngs) : ln_1(c.d), attn(c.d, rngs), ln_2(c.d), mlp(c.d, c.mlp, rngs) {}
};

struct Gpt2Like {
  std::int64_t vocab = 0, ctx = 0, d = 0;
  nnx::Param wte, wpe;
  std::vector<G2Block> h;
  G2LayerNorm ln_f;
  nnx::Param lm_head;  // tied to wte
  NNX_FIELDS(vocab, ctx, d, wte, wpe, h, ln_f, lm_head)
  Gpt2Like() = default;
  Gpt2Like(const Gpt2Config& c, nnx::Rngs& rngs)
      : vocab(c.vocab),
        ctx(c.ctx),
        d(c.d),
        wte(nnx::init::normal(rngs.params(), {c.vocab, c.d}, 0.02f), {"vocab", "embed"}),
        wpe(nnx::init::normal(rngs.params(), {c.ctx, c.d}, 0.01f), {"ctx", "embed"}),
        ln_f(c.d) {
    for (std::int64_t i = 0; i < c.layers; ++i) h.emplace_back(c, rngs);
    lm_head = wte;
  }
};

constexpr std::int64_t kGpt2Params = 124'439'808;

}  // namespace

TEST_CASE("eval_shape of a GPT-2-124M-sized model allocates no tensor bytes", "[eval_shape][gpt2]") {
  const Gpt2Config cfg;
  SECTION("Rngs made outside: zero bytes") {
    nnx::Rngs rngs{0};
    const auto before = nnx::tensor_memory_stats();
    Gpt2Like model = nnx::eval_shape([&] { return Gpt2Like(cfg, rngs); });
    const auto after = nnx::tensor_memory_stats();
    CHECK(after.allocated_bytes - before.allocated_bytes == 0);
    CHECK(after.allocations - before.allocations == 0);

    CHECK(model.h.size() == 12);
    CHECK(model.wte.value().is_abstract());
    CHECK(model.wte.value().shape() == Shape{50257, 768});
    CHECK(model.h[11].attn.c_attn.kernel.value().shape() == Shape{768, 2304});
    CHECK(model.h[11].attn.c_attn.bias.value().shape() == Shape{2304});
    CHECK(model.h[0].mlp.c_fc.kernel.value().shape() == Shape{768, 3072});
    CHECK(model.lm_head.same_as(model.wte));

    auto [g, s] = nnx::split(model);
    CHECK(s.size() == 2 + 12 * 12 + 2);  // the tied head is not a leaf of its own
    CHECK(g.numel() == kGpt2Params);
    CHECK(s.numel() == kGpt2Params);
    CHECK(s.nbytes() == static_cast<std::size_t>(kGpt2Params) * 4);
    for (const auto& [p, leaf] : s) CHECK(leaf.tensor().is_abstract());
    CHECK(nnx::tensor_memory_stats().allocated_bytes == before.allocated_bytes);  // split copies nothing

    // the streams advanced as a concrete construction would advance them: 2 + 12 * 4 keys
    CHECK(rngs.nnx_children().at("default").count.value().item<std::uint64_t>() == 2 + 12 * 4);

    // abstract merge round trip keeps the tie
    Gpt2Like r = nnx::merge(g, s);
    CHECK(r.lm_head.same_as(r.wte));
    CHECK(nnx::graphdef(r) == g);
  }
  SECTION("Rngs made inside: exactly the streams' 16 bytes each") {
    const auto before = nnx::tensor_memory_stats();
    auto [model, rngs] = nnx::eval_shape([&] {
      nnx::Rngs r{{"params", 0}, {"dropout", 1}};
      Gpt2Like m(cfg, r);
      return std::pair{m, r};
    });
    const auto after = nnx::tensor_memory_stats();
    // per stream: key u32[2] (8 bytes) + count u64[] (8 bytes), two allocations
    CHECK(after.allocated_bytes - before.allocated_bytes == 2 * (8 + 8));
    CHECK(after.allocations - before.allocations == 2 * 2);
    CHECK(nnx::graphdef(model).numel() == kGpt2Params);
    CHECK(nnx::state(model, nnx::of<nnx::Param>).numel() == kGpt2Params);
    CHECK(rngs.nnx_children().at("params").count.value().item<std::uint64_t>() == 2 + 12 * 4);
    CHECK(rngs.nnx_children().at("dropout").count.value().item<std::uint64_t>() == 0);
  }
}

// ---- edge cases -------------------------------------------------------------------------

namespace {
struct OnlyStatics {
  int n = 3;
  std::string label = "x";
  std::vector<double> ws{0.5, 1.5};
  std::optional<nnx::Param> maybe;
  std::vector<nnx::Param> none;
  NNX_FIELDS(n, label, ws, maybe, none)
};
struct ParamVec {
  std::vector<nnx::Param> ps;
  std::map<std::string, std::vector<nnx::Param>> groups;
  NNX_FIELDS(ps, groups)
};
}  // namespace

TEST_CASE("modules without leaves, vectors of variables, maps of vectors", "[split][merge]") {
  OnlyStatics o;
  auto [g, s] = nnx::split(o);
  CHECK(s.empty());
  CHECK(g.leaves().empty());
  CHECK(g.numel() == 0);
  o.n = 5;
  OnlyStatics r = nnx::merge(g, s);
  CHECK(r.n == 3);  // statics come from the graphdef
  CHECK(r.ws == std::vector<double>{0.5, 1.5});
  CHECK_FALSE(r.maybe.has_value());
  OnlyStatics r0 = nnx::merge(g);
  CHECK(r0.label == "x");
  CHECK_THROWS_AS(nnx::merge(nnx::GraphDef<OnlyStatics>{}, s), nnx::InvalidArgument);  // an empty graphdef

  ParamVec p;
  p.ps = {nnx::Param(filled({2})), nnx::Param(filled({3}))};
  p.ps.push_back(p.ps[0]);  // a tie inside a vector
  p.groups["enc"] = {nnx::Param(filled({1}))};
  p.groups["dec"] = {nnx::Param(filled({1})), p.ps[1]};  // a tie across containers
  auto [gp, sp] = nnx::split(p);
  CHECK(paths_of(sp) == std::vector<std::string>{"ps/0", "ps/1", "groups/dec/0", "groups/enc/0"});
  ParamVec rp = nnx::merge(gp, sp);
  REQUIRE(rp.ps.size() == 3);
  CHECK(rp.ps[2].same_as(rp.ps[0]));
  CHECK(rp.groups.at("dec")[1].same_as(rp.ps[1]));
  CHECK(rp.groups.at("dec")[1].value().raw_data() == p.ps[1].value().raw_data());
  CHECK_FALSE(rp.ps[0].same_as(rp.ps[1]));
}
