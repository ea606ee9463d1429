// A decode step allocates nothing once warm: every tensor buffer (and its control block)
// comes back from the storage pool, the attention scratch is reused. Counted with a
// replaced global operator new (this executable only).
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

#include <nnx/models.hpp>

namespace {
std::atomic<long> g_allocations{0};
}  // namespace

// These replacements pair malloc with free on purpose; GCC cannot see that they match.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, std::align_val_t a) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  const auto align = static_cast<std::size_t>(a);
  if (void* p = std::aligned_alloc(align, (n + align - 1) / align * align)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

TEST_CASE("a warm decode step makes no heap allocation", "[models][allocation]") {
  nnx::LlamaConfig c;
  c.vocab_size = 64;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  nnx::Rngs rngs{0};
  nnx::Llama model(c, nnx::Mode::autoregressive, rngs, {.cache_batch = 2, .cache_length = 64});
  const auto tokens = nnx::Tensor::from_vector(std::vector<std::int32_t>{5, 9}, {2});
  nnx::Tensor logits = nnx::decode_step(model, tokens, {0, 3});  // warm-up fills the pool
  logits = nnx::Tensor();
  bool shapes_ok = true;
  const long before = g_allocations.load();
  for (std::int64_t step = 1; step <= 8; ++step) {
    nnx::Tensor out = nnx::decode_step(model, tokens, {step, step + 3});
    shapes_ok = shapes_ok && out.shape() == nnx::Shape{2, 64};
  }
  const long allocations = g_allocations.load() - before;
  CHECK(shapes_ok);
  CHECK(allocations == 0);
}
