// Tests for nnx/core/path.hpp: PathKey names and indices, Path parse/to_string round trips,
// integer keys that stay integers, invalid names, hashing and equality, prefixes.
#include "nnx/core/path.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using nnx::Path;
using nnx::PathKey;

TEST_CASE("PathKey: names and indices", "[path]") {
  PathKey name{"attn"};
  CHECK(name.is_name());
  CHECK_FALSE(name.is_index());
  CHECK(name.name() == "attn");
  CHECK(name.to_string() == "attn");
  CHECK_THROWS_AS(name.index(), nnx::InvalidArgument);

  PathKey idx{3};
  CHECK(idx.is_index());
  CHECK(idx.index() == 3);
  CHECK(idx.to_string() == "3");
  CHECK_THROWS_AS(idx.name(), nnx::InvalidArgument);

  CHECK(PathKey(std::size_t{7}).index() == 7);
  CHECK(PathKey(std::int64_t{1} << 40).index() == (std::int64_t{1} << 40));
  CHECK(PathKey(std::int64_t{0}).index() == 0);
  CHECK(PathKey(std::string("kernel")).name() == "kernel");
  CHECK(PathKey(std::string_view("bias")).name() == "bias");
  // a largest-but-valid index survives the tagging shift
  const std::int64_t big = INT64_MAX;
  CHECK(PathKey(big).index() == big);

  // interned: equal names compare equal whatever their source
  std::string dyn = std::string("ker") + "nel";
  CHECK(PathKey(dyn) == PathKey("kernel"));
  CHECK_FALSE(PathKey("kernel") == PathKey("bias"));
  // a name never equals an index, even one that prints the same
  CHECK_FALSE(PathKey("x0") == PathKey(0));
  CHECK_FALSE(PathKey(0) == PathKey(1));
  CHECK(PathKey(5) == PathKey(std::size_t{5}));
}

TEST_CASE("PathKey: invalid names and indices throw", "[path]") {
  CHECK_THROWS_AS(PathKey(""), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey("a/b"), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey("/"), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey("0"), nnx::InvalidArgument);    // all digits: that is an index
  CHECK_THROWS_AS(PathKey("123"), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey(std::string("42")), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey(-1), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey(std::int64_t{-5}), nnx::InvalidArgument);
  CHECK_THROWS_AS(PathKey(static_cast<std::size_t>(-1)), nnx::InvalidArgument);  // above INT64_MAX
  CHECK_THROWS_WITH(PathKey("a/b"), Catch::Contains("a/b"));
  // names that merely contain digits are fine
  CHECK(PathKey("h0").name() == "h0");
  CHECK(PathKey("0a").name() == "0a");
  CHECK(PathKey("-1").name() == "-1");
}

TEST_CASE("Path: construction, to_string and parse round trip", "[path]") {
  Path p{"blocks", 0, "attn", "kernel"};
  CHECK(p.size() == 4);
  CHECK(p.to_string() == "blocks/0/attn/kernel");
  CHECK(nnx::to_string(p) == "blocks/0/attn/kernel");
  CHECK(Path::parse("blocks/0/attn/kernel") == p);
  CHECK(p.back() == PathKey("kernel"));
  CHECK(p.parent() == Path{"blocks", 0, "attn"});
  CHECK(Path{}.parent().empty());
  CHECK((Path{"blocks"} / 1 / "mlp") == Path::parse("blocks/1/mlp"));

  for (const char* text : {"a", "a/b", "blocks/12/attn/kernel", "h/0/1/2", "rngs/params/key", "x/999999999999"}) {
    Path q = Path::parse(text);
    CHECK(q.to_string() == text);
    CHECK(Path::parse(q.to_string()) == q);
  }
  CHECK(Path::parse("").empty());
  CHECK(Path{}.to_string().empty());

  Path e;
  e.push_back("a");
  e.push_back(2);
  CHECK(e.to_string() == "a/2");
  e.pop_back();
  CHECK(e == Path{"a"});
}

TEST_CASE("Path: integer keys stay integers", "[path]") {
  Path p = Path::parse("blocks/10/attn/0");
  REQUIRE(p.size() == 4);
  CHECK(p[0].is_name());
  CHECK(p[1].is_index());
  CHECK(p[1].index() == 10);
  CHECK(p[2].is_name());
  CHECK(p[3].is_index());
  CHECK(p[3].index() == 0);
  // the parsed index equals a constructed one, not a name
  CHECK(p == Path{"blocks", 10, "attn", 0});
  CHECK_THROWS_AS(Path::parse("a/007"), nnx::InvalidArgument);  // one spelling per index
  CHECK(Path::parse("a/0")[1].index() == 0);
  CHECK(Path::parse("a/999999999999999999")[1].index() == 999999999999999999LL);  // 18 digits
}

TEST_CASE("Path::parse rejects malformed text", "[path]") {
  CHECK_THROWS_AS(Path::parse("/a"), nnx::InvalidArgument);
  CHECK_THROWS_AS(Path::parse("a/"), nnx::InvalidArgument);
  CHECK_THROWS_AS(Path::parse("a//b"), nnx::InvalidArgument);
  CHECK_THROWS_AS(Path::parse("/"), nnx::InvalidArgument);
  CHECK_THROWS_AS(Path::parse("a/1234567890123456789"), nnx::InvalidArgument);  // 19 digits
  CHECK_THROWS_WITH(Path::parse("a//b"), Catch::Contains("a//b"));
}

TEST_CASE("Path: depth limit", "[path]") {
  Path p;
  for (std::size_t i = 0; i < Path::max_depth; ++i) p.push_back(static_cast<int>(i));
  CHECK(p.size() == Path::max_depth);
  CHECK_THROWS_AS(p.push_back("x"), nnx::InvalidArgument);
  CHECK_THROWS_AS(p / "x", nnx::InvalidArgument);
  std::string deep = "a";
  for (std::size_t i = 0; i < Path::max_depth; ++i) deep += "/a";
  CHECK_THROWS_AS(Path::parse(deep), nnx::InvalidArgument);
}

TEST_CASE("Path: equality and hash", "[path]") {
  Path a{"blocks", 0, "attn"};
  Path b = Path::parse("blocks/0/attn");
  CHECK(a == b);
  CHECK(a.hash() == b.hash());
  CHECK(std::hash<Path>{}(a) == std::hash<Path>{}(b));
  CHECK_FALSE(a == Path{"blocks", 1, "attn"});
  CHECK_FALSE(a == Path{"blocks", 0});
  CHECK_FALSE(a == Path{"blocks", 0, "attn", "kernel"});
  CHECK_FALSE(Path{"a", "b"} == Path{"b", "a"});
  CHECK(Path{} == Path::parse(""));

  // distinct paths hash to (overwhelmingly) distinct values, and order matters
  std::unordered_set<std::size_t> hashes;
  std::vector<Path> paths;
  for (int i = 0; i < 50; ++i)
    for (const char* leaf : {"kernel", "bias", "scale"}) paths.push_back(Path{"blocks", i, "mlp", leaf});
  for (const auto& p : paths) hashes.insert(p.hash());
  CHECK(hashes.size() == paths.size());
  CHECK(Path{"a", "b"}.hash() != Path{"b", "a"}.hash());
  CHECK(Path{0, 1}.hash() != Path{1, 0}.hash());

  std::unordered_map<Path, int> m;
  m[a] = 1;
  m[Path::parse("blocks/1/attn")] = 2;
  CHECK(m.at(b) == 1);
  CHECK(m.size() == 2);
}

TEST_CASE("Path: starts_with and contains", "[path]") {
  Path p = Path::parse("blocks/3/attn/kernel");
  CHECK(p.starts_with(Path{}));
  CHECK(p.starts_with(Path{"blocks"}));
  CHECK(p.starts_with(Path{"blocks", 3}));
  CHECK(p.starts_with(p));
  CHECK_FALSE(p.starts_with(Path{"blocks", 2}));
  CHECK_FALSE(p.starts_with(Path{"attn"}));
  CHECK_FALSE(p.starts_with(Path::parse("blocks/3/attn/kernel/x")));
  CHECK_FALSE(Path{"blocks", 3}.starts_with(Path{"blocks", "3x"}));

  CHECK(p.contains("attn"));
  CHECK(p.contains(3));
  CHECK(p.contains("kernel"));
  CHECK_FALSE(p.contains("mlp"));
  CHECK_FALSE(p.contains(4));
  CHECK_FALSE(p.contains("att"));  // whole keys only
  CHECK_FALSE(Path{}.contains("a"));
}
