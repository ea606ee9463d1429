// Tests for nnx/io/safetensors.hpp: round trips of every dtype (bitwise), metadata, zero-copy
// views that outlive the file object, copy-on-write mapping, files from an independent
// writer (bytes written by hand here, and tests/io/data/hf_style.safetensors from
// gen_fixture.py), our output parsed by hand, atomic replacement, writer argument errors,
// and corrupt input: every header check, truncation at every length and random byte
// mutations — each a CheckpointError naming the file (and the tensor), never a crash.
#include "nnx/io/safetensors.hpp"

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#ifndef NNX_TEST_DATA_DIR
#define NNX_TEST_DATA_DIR "tests"
#endif

#include "io_test_util.hpp"

namespace {

using io_test::TempDir;
using io_test::expect_error;
using io_test::read_bytes;
using io_test::write_bytes;

namespace fs = std::filesystem;
using nnx::DType;
using nnx::Shape;
using nnx::Tensor;
using nnx::io::SafetensorsFile;
using Tensors = std::vector<std::pair<std::string, Tensor>>;

std::string u64_le(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}
// A file as an independent writer would make it: length, header text, data.
std::string make_file(const std::string& header, const std::string& data) { return u64_le(header.size()) + header + data; }

// Random bits: every pattern, NaNs and subnormals included, must survive bit for bit.
Tensor random_tensor(const Shape& shape, DType dtype, std::mt19937_64& rng) {
  Tensor t = Tensor::empty(shape, dtype);
  auto* p = reinterpret_cast<unsigned char*>(t.raw_data());
  for (std::size_t i = 0; i < t.nbytes(); ++i) p[i] = static_cast<unsigned char>(rng());
  return t;
}


// Opens a file made from a header and data; it must fail naming the file and `parts`.
void expect_corrupt(const TempDir& dir, const std::string& header, const std::string& data,
                    std::initializer_list<std::string> parts) {
  const fs::path p = dir / "corrupt.safetensors";
  write_bytes(p, make_file(header, data));
  INFO("header: " << header);
  expect_error([&] { SafetensorsFile::open(p); }, {p.string()});
  expect_error([&] { SafetensorsFile::open(p); }, parts);
}

// Touches every byte of every tensor, so ASan sees any out-of-bounds view.
std::uint64_t checksum_all(const SafetensorsFile& f) {
  std::uint64_t sum = 0;
  for (const auto& name : f.names()) {
    Tensor t = f.get(name);
    const auto* p = reinterpret_cast<const unsigned char*>(t.nbytes() ? t.raw_data() : nullptr);
    for (std::size_t i = 0; i < t.nbytes(); ++i) sum = sum * 31 + p[i];
  }
  return sum;
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit for bit", "[io][safetensors]") {
  TempDir dir;
  std::mt19937_64 rng(1234);
  Tensors tensors;
  for (DType t : nnx::all_dtypes) {
    const std::string n(nnx::dtype_name(t));
    tensors.emplace_back(n + "/matrix", random_tensor({3, 5}, t, rng));
    tensors.emplace_back(n + "/odd", random_tensor({7}, t, rng));  // odd sizes shift alignment
    tensors.emplace_back(n + "/scalar", random_tensor({}, t, rng));
    tensors.emplace_back(n + "/empty", random_tensor({0, 4}, t, rng));
  }
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"nnx", "yes"}};
  const fs::path p = dir / "all.safetensors";
  nnx::io::save_safetensors(p, tensors, meta);

  auto f = SafetensorsFile::open(p);
  CHECK(f.path() == p);
  CHECK(f.size() == tensors.size());
  CHECK(f.metadata() == meta);
  for (const auto& [name, t] : tensors) {
    INFO(name);
    REQUIRE(f.contains(name));
    Tensor r = f.get(name);
    CHECK(r.dtype() == t.dtype());
    CHECK(r.shape() == t.shape());
    CHECK(nnx::equal(r, t));
    CHECK(f.is_zero_copy(name));  // the writer aligns every tensor to its element size
    CHECK(f.info(name).nbytes() == t.nbytes());
  }
  // names() is in data-offset order, and the tensors tile the data area.
  std::uint64_t pos = 0;
  for (const auto& name : f.names()) {
    CHECK(f.info(name).data_begin == pos);
    pos = f.info(name).data_end;
  }
  CHECK(f.data_offset() + pos == f.file_size());
  CHECK(f.data_offset() % 8 == 0);
  CHECK_FALSE(f.contains("nope"));
}

TEST_CASE("safetensors: metadata strings round-trip", "[io][safetensors]") {
  TempDir dir;
  std::map<std::string, std::string> meta{{"", "empty key"},
                                          {"empty", ""},
                                          {"json", R"({"a": [1, 2, "x"]})"},
                                          {"unicode", "h\xc3\xa9llo \xe2\x9c\x93"},
                                          {"newline", "a\nb\t\"q\"\\"}};
  for (int i = 0; i < 50; ++i) meta[std::string("k").append(std::to_string(i))] = std::string(static_cast<std::size_t>(i), 'x');
  const fs::path p = dir / "meta.safetensors";
  nnx::io::save_safetensors(p, Tensors{{"x", Tensor::full({2}, 1.5)}}, meta);
  CHECK(SafetensorsFile::open(p).metadata() == meta);

  // No metadata: no "__metadata__" key at all (as other writers do).
  nnx::io::save_safetensors(p, Tensors{{"x", Tensor::full({2}, 1.5)}});
  CHECK(SafetensorsFile::open(p).metadata().empty());
  CHECK(read_bytes(p).find("__metadata__") == std::string::npos);
}

TEST_CASE("safetensors: get() is zero-copy and outlives the file object", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "zc.safetensors";
  std::vector<float> values{1, 2, 3, 4, 5, 6};
  nnx::io::save_safetensors(p, Tensors{{"w", Tensor::from_vector(values, {2, 3})}, {"v", Tensor::zeros({2})}});

  const auto before = nnx::tensor_memory_stats();
  Tensor a, b;
  {
    auto f = SafetensorsFile::open(p);
    a = f.get("w");
    b = f.get("w");
    CHECK(a.raw_data() == b.raw_data());
    CHECK(a.shares_storage_with(b));
    // use_count() counts the views of this tensor, not of the file: donation stays possible.
    CHECK(a.use_count() == 2);
    Tensor other = f.get("v");
    CHECK(other.use_count() == 1);
    CHECK_FALSE(other.shares_storage_with(a));
    // The pointer is inside the mapping, right where the header says.
    CHECK(reinterpret_cast<std::uintptr_t>(a.raw_data()) % 4 == 0);
  }
  // The file object is gone; the mapping lives on in the tensors.
  CHECK(a.to_vector<float>() == values);
  CHECK(nnx::tensor_memory_stats().allocations == before.allocations);  // nothing was copied
  b = Tensor();
  CHECK(a.use_count() == 1);
  auto row = a.select(1);
  CHECK(row.to_vector<float>() == std::vector<float>{4, 5, 6});
}

TEST_CASE("safetensors: writing through a borrowed tensor leaves the file unchanged", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "cow.safetensors";
  nnx::io::save_safetensors(p, Tensors{{"w", Tensor::full({4}, 2.0)}, {"v", Tensor::full({3}, 7.0, DType::i32)}});
  const std::string bytes = read_bytes(p);
  {
    auto f = SafetensorsFile::open(p);
    Tensor w = f.get("w");
    w.fill(-1.0);  // a page of a private mapping: copied on write, never written back
    w.data<float>()[0] = 42.0f;
    CHECK(f.get("w").data<float>()[0] == 42.0f);  // views of one file object share the pages
    CHECK(f.get("v").to_vector<std::int32_t>() == std::vector<std::int32_t>{7, 7, 7});
  }
  CHECK(read_bytes(p) == bytes);
  CHECK(SafetensorsFile::open(p).get("w").to_vector<float>() == std::vector<float>{2, 2, 2, 2});
}

TEST_CASE("safetensors: empty tensor sets and zero-size tensors", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "empty.safetensors";

  nnx::io::save_safetensors(p, Tensors{});
  {
    auto f = SafetensorsFile::open(p);
    CHECK(f.size() == 0);
    CHECK(f.names().empty());
    CHECK(f.metadata().empty());
    CHECK(f.file_size() == f.data_offset());
  }
  nnx::io::save_safetensors(p, Tensors{}, {{"only", "metadata"}});
  CHECK(SafetensorsFile::open(p).metadata().at("only") == "metadata");

  // Zero-size tensors between others, several at one offset, and one at the very end.
  Tensors t{{"a", Tensor::full({2}, 1.0)},
            {"z1", Tensor::zeros({0})},
            {"z2", Tensor::zeros({3, 0, 2}, DType::i64)},
            {"b", Tensor::full({1}, 3.0)},
            {"z3", Tensor::zeros({0}, DType::u8)}};
  nnx::io::save_safetensors(p, t);
  auto f = SafetensorsFile::open(p);
  REQUIRE(f.size() == 5);
  for (const auto& [name, x] : t) {
    CHECK(f.get(name).shape() == x.shape());
    CHECK(nnx::equal(f.get(name), x));
  }
  CHECK(f.get("z2").numel() == 0);

  // A file that holds only zero-size tensors has an empty data area.
  nnx::io::save_safetensors(p, Tensors{{"z", Tensor::zeros({0, 5})}});
  auto g = SafetensorsFile::open(p);
  CHECK(g.file_size() == g.data_offset());
  CHECK(g.get("z").nbytes() == 0);
}

TEST_CASE("safetensors: reads files from an independent writer", "[io][safetensors]") {
  TempDir dir;
  SECTION("hand-written, unpadded (data not aligned: get() copies)") {
    // Keys out of offset order, spaces, metadata last, and a header length that puts the
    // data at an odd file offset.
    std::string header =
        R"({ "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},)"
        R"( "a": {"dtype":"F32","shape":[1,2],"data_offsets":[8,16]}, "__metadata__": {"k": "v"}})";
    while ((8 + header.size()) % 4 != 1) header += ' ';
    std::string data;
    const std::int32_t ints[2] = {-5, 123456789};
    const float floats[2] = {0.25f, -8.0f};
    data.append(reinterpret_cast<const char*>(ints), 8);
    data.append(reinterpret_cast<const char*>(floats), 8);
    const fs::path p = dir / "hand.safetensors";
    write_bytes(p, make_file(header, data));

    auto f = SafetensorsFile::open(p);
    CHECK(f.metadata() == std::map<std::string, std::string>{{"k", "v"}});
    CHECK(std::vector<std::string>(f.names().begin(), f.names().end()) == std::vector<std::string>{"b", "a"});
    CHECK(f.header_bytes() == header.size());
    CHECK(f.get("b").to_vector<std::int32_t>() == std::vector<std::int32_t>{-5, 123456789});
    CHECK(f.get("a").shape() == Shape{1, 2});
    CHECK(f.get("a").to_vector<float>() == std::vector<float>{0.25f, -8.0f});
    CHECK_FALSE(f.is_zero_copy("a"));  // misaligned: copied, so typed access stays defined
    CHECK_FALSE(f.is_zero_copy("b"));
  }
  SECTION("hand-written, padded with spaces (zero-copy)") {
    std::string header = R"({"x":{"dtype":"U64","shape":[2],"data_offsets":[0,16]}})";
    header.resize((header.size() + 7) / 8 * 8, ' ');
    std::string data(16, '\0');
    data[0] = 1;
    data[15] = static_cast<char>(0x80);
    const fs::path p = dir / "padded.safetensors";
    write_bytes(p, make_file(header, data));
    auto f = SafetensorsFile::open(p);
    CHECK(f.is_zero_copy("x"));
    CHECK(f.get("x").to_vector<std::uint64_t>() == std::vector<std::uint64_t>{1, 0x8000000000000000ull});
  }
  SECTION("tests/io/data/hf_style.safetensors (gen_fixture.py)") {
    auto f = SafetensorsFile::open(fs::path(NNX_TEST_DATA_DIR) / "io" / "data" / "hf_style.safetensors");
    CHECK(f.metadata() ==
          std::map<std::string, std::string>{{"format", "pt"}, {"note", "written by gen_fixture.py"}});
    CHECK(std::vector<std::string>(f.names().begin(), f.names().end()) ==
          std::vector<std::string>{"positions", "embed.weight", "empty", "norm.bias", "mask"});
    std::vector<float> embed;
    for (int i = 0; i < 12; ++i) embed.push_back(static_cast<float>(i) * 0.5f - 1.0f);
    CHECK(f.get("embed.weight").shape() == Shape{3, 4});
    CHECK(f.get("embed.weight").to_vector<float>() == embed);
    auto bias = f.get("norm.bias");
    REQUIRE(bias.dtype() == DType::bf16);
    std::vector<float> bias_f;
    for (auto v : bias.span<nnx::bf16>()) bias_f.push_back(nnx::to_f32(v));
    CHECK(bias_f == std::vector<float>{1.0f, -2.0f, 0.5f, 3.0f});
    CHECK(f.get("positions").to_vector<std::int64_t>() ==
          std::vector<std::int64_t>{-3, -2, -1, 0, 1, std::int64_t{1} << 40});
    CHECK(f.get("mask").to_vector<std::uint8_t>() == std::vector<std::uint8_t>{0, 1, 2, 254, 255});
    CHECK(f.get("empty").shape() == Shape{0, 7});
    CHECK(f.get("empty").dtype() == DType::f16);
    for (const auto& n : f.names()) CHECK(f.is_zero_copy(n));
  }
}

TEST_CASE("safetensors: our files parsed by hand follow the format", "[io][safetensors]") {
  TempDir dir;
  std::mt19937_64 rng(7);
  // Given in an order that would misalign: u8 first, then f32, i64, bf16.
  Tensors t{{"bytes", random_tensor({5}, DType::u8, rng)},
            {"floats", random_tensor({2, 3}, DType::f32, rng)},
            {"longs", random_tensor({3}, DType::i64, rng)},
            {"halves", random_tensor({3}, DType::bf16, rng)}};
  const fs::path p = dir / "ours.safetensors";
  nnx::io::save_safetensors(p, t, {{"who", "nnx"}});

  const std::string bytes = read_bytes(p);
  REQUIRE(bytes.size() >= 8);
  std::uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[static_cast<std::size_t>(i)]);
  CHECK(n % 8 == 0);
  REQUIRE(8 + n <= bytes.size());
  const std::string text = bytes.substr(8, n);
  // Padding is spaces only, after the JSON.
  const auto last = text.find_last_not_of(' ');
  CHECK(text[last] == '}');
  const auto header = nlohmann::json::parse(text);
  REQUIRE(header.is_object());
  CHECK(header.at("__metadata__") == nlohmann::json{{"who", "nnx"}});
  const std::string data = bytes.substr(8 + n);
  std::uint64_t total = 0;
  for (const auto& [name, x] : t) {
    INFO(name);
    const auto& e = header.at(name);
    CHECK(e.at("dtype") == std::string(nnx::safetensors_dtype_name(x.dtype())));
    CHECK(e.at("shape") == std::vector<std::int64_t>(x.shape().begin(), x.shape().end()));
    const auto begin = e.at("data_offsets")[0].get<std::uint64_t>();
    const auto end = e.at("data_offsets")[1].get<std::uint64_t>();
    CHECK(end - begin == x.nbytes());
    CHECK((8 + n + begin) % nnx::dtype_size(x.dtype()) == 0);  // aligned in the file
    REQUIRE(end <= data.size());
    CHECK(std::memcmp(data.data() + begin, x.raw_data(), x.nbytes()) == 0);
    total += end - begin;
  }
  CHECK(total == data.size());  // contiguous, no holes
}

TEST_CASE("safetensors: views of larger tensors are saved as their own bytes", "[io][safetensors]") {
  TempDir dir;
  std::vector<std::int32_t> v(12);
  for (int i = 0; i < 12; ++i) v[static_cast<std::size_t>(i)] = i;
  Tensor x = Tensor::from_vector(v, {3, 4});
  const fs::path p = dir / "views.safetensors";
  nnx::io::save_safetensors(p, Tensors{{"row1", x.select(1)}, {"rows12", x.slice(1, 3)}, {"flat", x.reshape({12})}});
  auto f = SafetensorsFile::open(p);
  CHECK(f.get("row1").to_vector<std::int32_t>() == std::vector<std::int32_t>{4, 5, 6, 7});
  CHECK(f.get("rows12").shape() == Shape{2, 4});
  CHECK(f.get("rows12").to_vector<std::int32_t>()[0] == 4);
  CHECK(f.get("flat").to_vector<std::int32_t>() == v);
}

TEST_CASE("safetensors: saving replaces the file atomically", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "model.safetensors";
  nnx::io::save_safetensors(p, Tensors{{"w", Tensor::full({3}, 1.0)}});
  Tensor old = SafetensorsFile::open(p).get("w");
  nnx::io::save_safetensors(p, Tensors{{"w", Tensor::full({3}, 2.0)}, {"extra", Tensor::zeros({1})}});
  // The old mapping still sees the old inode; a new open sees the new file.
  CHECK(old.to_vector<float>() == std::vector<float>{1, 1, 1});
  CHECK(SafetensorsFile::open(p).get("w").to_vector<float>() == std::vector<float>{2, 2, 2});
  // No temp file is left behind.
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir.path)) files.push_back(e.path().filename().string());
  CHECK(files == std::vector<std::string>{"model.safetensors"});
}

TEST_CASE("safetensors: writer argument errors touch no file", "[io][safetensors]") {
  TempDir dir;
  const fs::path p = dir / "bad.safetensors";
  auto expect_invalid = [&](const Tensors& t, const std::string& part) {
    try {
      nnx::io::save_safetensors(p, t);
      FAIL("no InvalidArgument");
    } catch (const nnx::InvalidArgument& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(part) != std::string::npos);
      CHECK(std::string(e.what()).find(p.string()) != std::string::npos);
    }
    CHECK(fs::is_empty(dir.path));
  };
  expect_invalid({{"ok", Tensor::zeros({1})}, {"abs", Tensor::abstract({2, 2})}}, "'abs'");
  expect_invalid({{"undef", Tensor()}}, "'undef'");
  expect_invalid({{"dup", Tensor::zeros({1})}, {"dup", Tensor::zeros({2})}}, "'dup' given twice");
  expect_invalid({{"__metadata__", Tensor::zeros({1})}}, "__metadata__");
  expect_invalid({{"bad\xff", Tensor::zeros({1})}}, "UTF-8");

  // A directory that does not exist: CheckpointError naming the file.
  expect_error([&] { nnx::io::save_safetensors(dir / "no/such/dir/x.safetensors", Tensors{}); },
               {"x.safetensors", "temp file"});
}

TEST_CASE("safetensors: missing files and tensors name the file", "[io][safetensors]") {
  TempDir dir;
  expect_error([&] { SafetensorsFile::open(dir / "absent.safetensors"); }, {"absent.safetensors", "cannot open"});
  expect_error([&] { SafetensorsFile::open(dir.path); }, {dir.path.string(), "not a regular file"});
  const fs::path p = dir / "one.safetensors";
  nnx::io::save_safetensors(p, Tensors{{"w", Tensor::zeros({1})}});
  auto f = SafetensorsFile::open(p);
  expect_error([&] { f.get("blocks/0/kernel"); }, {p.string(), "'blocks/0/kernel'"});
  expect_error([&] { f.info("x"); }, {p.string(), "'x'"});
}

TEST_CASE("safetensors: corrupt headers are CheckpointErrors naming file and tensor", "[io][safetensors]") {
  TempDir dir;
  const std::string d8(8, '\0');
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"dtype":")" + dtype + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}";
  };
  const std::string good_w = entry("F32", "[2]", "[0,8]");

  SECTION("length field") {
    const fs::path p = dir / "short.safetensors";
    for (std::size_t len = 0; len < 8; ++len) {
      write_bytes(p, std::string(len, '\x01'));
      expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "too short"});
    }
    const std::string header = R"({"w":)" + good_w + "}";
    write_bytes(p, u64_le(header.size() + 9) + header + d8);  // one byte past the end
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "runs past the end"});
    write_bytes(p, u64_le(~std::uint64_t{0}) + header + d8);
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "runs past the end"});
    write_bytes(p, make_file(header, d8));
    expect_error([&] { SafetensorsFile::open(p, {.max_header_bytes = 16}); }, {p.string(), "above the limit"});
  }
  SECTION("a header above the default 100 MB limit") {
    const fs::path p = dir / "huge.safetensors";
    const std::uint64_t n = nnx::io::safetensors_default_max_header_bytes + 1;
    write_bytes(p, u64_le(n));
    fs::resize_file(p, 8 + n);  // sparse: no 100 MB written
    expect_error([&] { SafetensorsFile::open(p); }, {p.string(), "above the limit of 100000000"});
  }
  SECTION("JSON") {
    expect_corrupt(dir, "", "", {"not valid JSON"});
    expect_corrupt(dir, "{", "", {"not valid JSON"});
    expect_corrupt(dir, R"({"w":)" + good_w, d8, {"not valid JSON"});
    expect_corrupt(dir, R"({"w":)" + good_w + "}}", d8, {"not valid JSON"});
    expect_corrupt(dir, R"({"w":)" + good_w + std::string("}\0\0\0", 4), d8, {"not valid JSON"});  // NUL padding
    expect_corrupt(dir, "[1, 2]  ", "", {"must be a JSON object"});
    expect_corrupt(dir, "\"str\"", "", {"must be a JSON object"});
    expect_corrupt(dir, "null", "", {"must be a JSON object"});
    expect_corrupt(dir, "{\"w\xff\":" + good_w + "}", d8, {"not valid JSON (or not UTF-8)"});
    expect_corrupt(dir, "{\"w\":" + good_w + ",\xc3}", d8, {"not valid JSON"});
    expect_corrupt(dir, "{\"w\":{\"dtype\":\"F32\xc0\xaf\"}}", "", {"not UTF-8"});  // overlong encoding
    expect_corrupt(dir, R"({"w":)" + good_w + R"(,"w":)" + good_w + "}", d8, {"\"w\" twice"});
    expect_corrupt(dir, std::string(200000, '[') + std::string(200000, ']'), "", {"must be a JSON object"});
  }
  SECTION("__metadata__") {
    expect_corrupt(dir, R"({"__metadata__":[]})", "", {"__metadata__"});
    expect_corrupt(dir, R"({"__metadata__":{"a":"b","n":3}})", "", {"__metadata__", "\"n\"", "string"});
  }
  SECTION("entries") {
    expect_corrupt(dir, R"({"w":[1]})", "", {"'w'", "object"});
    expect_corrupt(dir, R"({"w":{"shape":[2],"data_offsets":[0,8]}})", d8, {"'w'", "dtype"});
    expect_corrupt(dir, R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", d8, {"'w'", "dtype"});
    for (const char* dt : {"F64", "BOOL", "f32", "F8_E4M3", ""})
      expect_corrupt(dir, R"({"w":)" + entry(dt, "[1]", "[0,8]") + "}", d8,
                     {"'w'", "unsupported dtype \"" + std::string(dt) + "\""});
    expect_corrupt(dir, R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", d8, {"'w'", "shape"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "2", "[0,8]") + "}", d8, {"'w'", "shape"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[-2]", "[0,8]") + "}", d8, {"'w'", "non-negative"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2.0]", "[0,8]") + "}", d8, {"'w'", "non-negative"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[\"2\"]", "[0,8]") + "}", d8, {"'w'", "non-negative"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[18446744073709551616]", "[0,8]") + "}", d8, {"'w'"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]") + "}", std::string(4, '\0'),
                   {"'w'", "rank 9"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[4294967296,4294967296]", "[0,8]") + "}", d8,
                   {"'w'", "overflows"});
    expect_corrupt(dir, R"({"w":)" + entry("U8", "[2147483648,4294967296,0]", "[0,0]") + "}", "",
                   {"'w'", "overflows"});  // 2^63 elements before the zero: int64 would overflow
    // More elements than a Shape holds (2^53) in fewer bytes than int64's range (found by fuzzing).
    expect_corrupt(dir, R"({"w":)" + entry("I8", "[4294967296,42949,84]", "[0,0]") + "}", "", {"'w'", "2^53"});
    expect_corrupt(dir, R"({"w":)" + entry("U8", "[4294967296,4194304,0]", "[0,0]") + "}", "", {"'w'", "2^53"});
  }
  SECTION("offsets") {
    expect_corrupt(dir, R"({"w":{"dtype":"F32","shape":[2]}})", d8, {"'w'", "data_offsets"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[0]") + "}", d8, {"'w'", "data_offsets"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[0,8,9]") + "}", d8, {"'w'", "data_offsets"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[-1,7]") + "}", d8, {"'w'", "non-negative"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[8,0]") + "}", d8, {"'w'", "end before they begin"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[0,16]") + "}", d8, {"'w'", "past the end of the data"});
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2]", "[0,18446744073709551615]") + "}", d8,
                   {"'w'", "past the end"});
    // Byte count differs from dtype size x shape.
    expect_corrupt(dir, R"({"w":)" + entry("F32", "[2,3]", "[0,8]") + "}", d8, {"'w'", "hold 8 bytes", "needs 24"});
    expect_corrupt(dir, R"({"w":)" + entry("I64", "[2]", "[0,8]") + "}", d8, {"'w'", "needs 16"});
    // Overlap, hole, trailing bytes, a first tensor not at 0.
    expect_corrupt(dir, R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[4,12]") + "}",
                   std::string(12, '\0'), {"'b'", "overlaps tensor 'a'"});
    expect_corrupt(dir, R"({"a":)" + entry("F32", "[1]", "[0,4]") + R"(,"b":)" + entry("F32", "[1]", "[8,12]") + "}",
                   std::string(12, '\0'), {"'b'", "belong to no tensor"});
    expect_corrupt(dir, R"({"a":)" + entry("F32", "[2]", "[0,8]") + "}", std::string(12, '\0'),
                   {"holds 12 bytes", "end at 8", "trailing"});
    expect_corrupt(dir, R"({"a":)" + entry("F32", "[1]", "[4,8]") + "}", d8, {"'a'", "starts at data offset 4"});
    expect_corrupt(dir, R"({"a":)" + entry("F32", "[2]", "[0,8]") + R"(,"b":)" + entry("F32", "[2]", "[0,8]") + "}", d8,
                   {"overlaps"});
  }
}

TEST_CASE("safetensors: a file truncated at any length is a CheckpointError", "[io][safetensors]") {
  TempDir dir;
  std::mt19937_64 rng(99);
  const fs::path src = dir / "full.safetensors";
  nnx::io::save_safetensors(src,
                            Tensors{{"a", random_tensor({3, 2}, DType::f32, rng)},
                                    {"b", random_tensor({5}, DType::bf16, rng)},
                                    {"z", random_tensor({0}, DType::i8, rng)},
                                    {"c", random_tensor({3}, DType::u8, rng)}},
                            {{"format", "test"}});
  const std::string bytes = read_bytes(src);
  REQUIRE_NOTHROW(SafetensorsFile::open(src));
  const fs::path p = dir / "cut.safetensors";
  int failures = 0;
  for (std::size_t len = 0; len < bytes.size(); ++len) {
    write_bytes(p, bytes.substr(0, len));
    try {
      SafetensorsFile::open(p);
      ++failures;
      UNSCOPED_INFO("length " << len << " opened");
    } catch (const nnx::CheckpointError& e) {
      if (std::string(e.what()).find(p.string()) == std::string::npos) ++failures;
    }
  }
  CHECK(failures == 0);
}

TEST_CASE("safetensors: random byte mutations never crash", "[io][safetensors]") {
  TempDir dir;
  std::mt19937_64 rng(2024);
  const fs::path src = dir / "src.safetensors";
  nnx::io::save_safetensors(src,
                            Tensors{{"emb", random_tensor({4, 3}, DType::f32, rng)},
                                    {"ids", random_tensor({3}, DType::i64, rng)},
                                    {"q", random_tensor({5}, DType::i8, rng)}},
                            {{"k", "v"}});
  const std::string bytes = read_bytes(src);
  const fs::path p = dir / "mut.safetensors";
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    std::string m = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the length and the header, where the structure is.
      const std::size_t limit = (rng() % 4 == 0) ? m.size() : std::min<std::size_t>(m.size(), 8 + 200);
      const std::size_t at = rng() % limit;
      switch (rng() % 3) {
        case 0: m[at] = static_cast<char>(rng()); break;
        case 1: m[at] = "0123456789[]{},:\"-"[rng() % 18]; break;
        default: m[at] = static_cast<char>(m[at] ^ (1 << (rng() % 8))); break;
      }
    }
    if (rng() % 8 == 0) m.resize(rng() % m.size());
    write_bytes(p, m);
    try {
      auto f = SafetensorsFile::open(p);
      (void)checksum_all(f);  // every view must lie inside the mapping
      ++opened;
    } catch (const nnx::CheckpointError&) {
      ++rejected;
    }
  }
  CHECK(opened + rejected == 3000);
  CHECK(rejected > 0);
}
