// Donation at the engine's boundary, for every cache leaf: a DecodeState moved into insert,
// bulk_insert, generate or release is updated in place (each cache tensor keeps its buffer);
// one passed as an lvalue, or moved in while another copy still shares its buffers, is copied
// first and every byte the caller holds stays as it was.
#include <catch2/catch.hpp>

#include <cstddef>
#include <cstring>
#include <vector>

#include <nnx/engine.hpp>
#include <nnx/models.hpp>

namespace {

nnx::LlamaConfig donation_llama() {
  nnx::LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 32;
  return c;
}

using Engine = nnx::Engine<nnx::Llama>;

// Every cache leaf's buffer address, in state order.
std::vector<const std::byte*> buffers(const nnx::DecodeState& s) {
  std::vector<const std::byte*> out;
  for (const auto& entry : s.cache) out.push_back(entry.leaf.tensor().raw_data());
  return out;
}

// A deep copy of every cache leaf's bytes.
std::vector<std::vector<std::byte>> bytes_of(const nnx::DecodeState& s) {
  std::vector<std::vector<std::byte>> out;
  for (const auto& entry : s.cache) {
    const nnx::Tensor& t = entry.leaf.tensor();
    out.emplace_back(t.raw_data(), t.raw_data() + t.nbytes());
  }
  return out;
}

bool same_bytes(const nnx::DecodeState& s, const std::vector<std::vector<std::byte>>& want) {
  if (static_cast<std::size_t>(s.cache.size()) != want.size()) return false;
  std::size_t i = 0;
  for (const auto& entry : s.cache) {
    const nnx::Tensor& t = entry.leaf.tensor();
    if (t.nbytes() != want[i].size() || std::memcmp(t.raw_data(), want[i].data(), t.nbytes()) != 0) return false;
    ++i;
  }
  return true;
}

bool shares_any_buffer(const nnx::DecodeState& a, const nnx::DecodeState& b) {
  for (const auto& ea : a.cache)
    for (const auto& eb : b.cache)
      if (ea.leaf.tensor().shares_storage_with(eb.leaf.tensor())) return true;
  return false;
}

// Slot `slot` of every cache leaf holds the prefix's first next_position positions.
bool holds_prefix(const nnx::DecodeState& s, const nnx::Prefix& p, std::int64_t slot) {
  for (const auto& entry : s.cache) {
    const nnx::Tensor row = entry.leaf.tensor().select(slot).slice(0, p.next_position);
    const nnx::Tensor want = p.cache.at(entry.path).tensor().select(0).slice(0, p.next_position);
    if (!nnx::equal(row, want)) return false;
  }
  return true;
}

struct Setup {
  Engine e{donation_llama(), {.max_prefill_length = 8, .max_target_length = 24, .slots = 3}};
  nnx::State params = e.init_params(3);
  nnx::Prefix prefix = e.prefill(params, nnx::Tensor::from_vector(std::vector<std::int32_t>{7, 2, 9, 4, 4, 1}, {6}),
                                 6, {}, nnx::key_from_seed(5));
};

}  // namespace

TEST_CASE("insert with a moved-in DecodeState writes every cache tensor in place", "[engine][donation][insert]") {
  Setup s;
  nnx::DecodeState state = s.e.init_decode_state();
  REQUIRE(state.cache.size() == 4);  // key and value of 2 layers
  const auto before = buffers(state);
  const auto prefix_bytes = bytes_of({s.prefix.cache, {}});

  state = s.e.insert(s.prefix, std::move(state), 1);
  CHECK(buffers(state) == before);  // donated: no cache tensor was copied
  for (const auto& entry : state.cache) CHECK(entry.leaf.tensor().use_count() == 1);
  CHECK(holds_prefix(state, s.prefix, 1));
  CHECK(state.slots[1].occupied);
  CHECK(same_bytes({s.prefix.cache, {}}, prefix_bytes));  // the prefix is read, not consumed

  const std::int64_t both[] = {0, 2};
  state = s.e.bulk_insert(s.prefix, std::move(state), both);
  CHECK(buffers(state) == before);
  CHECK((holds_prefix(state, s.prefix, 0) && holds_prefix(state, s.prefix, 2)));

  // generate and release, donated, keep the buffers too.
  auto out = s.e.generate(s.params, std::move(state));
  CHECK(buffers(out.state) == before);
  state = s.e.release(std::move(out.state), 1);
  CHECK(buffers(state) == before);
}

TEST_CASE("insert with an lvalue DecodeState leaves the caller's state byte for byte as it was",
          "[engine][donation][insert]") {
  Setup s;
  // A state with a request in slot 0, so that there are nonzero bytes to preserve.
  const nnx::DecodeState held = s.e.insert(s.prefix, s.e.init_decode_state(), 0);
  const auto held_buffers = buffers(held);
  const auto held_bytes = bytes_of(held);

  const nnx::DecodeState next = s.e.insert(s.prefix, held, 2);
  CHECK(buffers(held) == held_buffers);
  CHECK(same_bytes(held, held_bytes));
  CHECK_FALSE(held.slots[2].occupied);
  CHECK_FALSE(shares_any_buffer(next, held));  // copied on write
  CHECK(holds_prefix(next, s.prefix, 0));
  CHECK(holds_prefix(next, s.prefix, 2));
  CHECK(next.slots[2].occupied);

  const std::int64_t both[] = {1, 2};
  const nnx::DecodeState bulk = s.e.bulk_insert(s.prefix, held, both);
  CHECK(same_bytes(held, held_bytes));
  CHECK_FALSE(shares_any_buffer(bulk, held));

  const auto stepped = s.e.generate(s.params, held);
  CHECK(same_bytes(held, held_bytes));
  CHECK(held.slots[0].next_position == s.prefix.next_position);
  CHECK(stepped.state.slots[0].next_position == s.prefix.next_position + 1);
}

TEST_CASE("a moved-in DecodeState whose buffers another copy shares is copied, and the copy kept",
          "[engine][donation][insert]") {
  Setup s;
  nnx::DecodeState state = s.e.insert(s.prefix, s.e.init_decode_state(), 0);
  const nnx::DecodeState other = state;  // shares every cache buffer with `state`
  const auto other_buffers = buffers(other);
  const auto other_bytes = bytes_of(other);

  state = s.e.insert(s.prefix, std::move(state), 1);
  CHECK(buffers(other) == other_buffers);
  CHECK(same_bytes(other, other_bytes));
  CHECK_FALSE(shares_any_buffer(state, other));
  CHECK(holds_prefix(state, s.prefix, 1));
  // Now the only holder: the next donation is in place again.
  const auto mine = buffers(state);
  state = s.e.insert(s.prefix, std::move(state), 2);
  CHECK(buffers(state) == mine);
}
