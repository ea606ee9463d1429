// split_merge — a tour of nnxcpp's core: build a module tree, split it into a graphdef and
// states, print them, merge them back and check that the round trip is exact and zero-copy.
//
//   build/examples/split_merge
//
// The model is a two-block transformer-shaped tree with a tied output head and a KV cache
// that exists only when decoding; no forward pass is run (layers arrive with issue 3).
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <nnx/core.hpp>
#include <nnx/core/graphdef_json.hpp>

namespace demo {

enum class Mode { train, decode };

struct Linear {
  std::int64_t in = 0, out = 0;
  nnx::Param kernel;               // [in, out]
  std::optional<nnx::Param> bias;  // [out]
  NNX_FIELDS(in, out, kernel, bias)

  Linear() = default;
  Linear(std::int64_t in_, std::int64_t out_, bool use_bias, nnx::Rngs& rngs, std::string in_axis,
         std::string out_axis)
      : in(in_), out(out_) {
    kernel = nnx::Param(nnx::init::normal(rngs.params(), {in, out}, 1.0f / std::sqrt(float(in))),
                        {in_axis, out_axis});
    if (use_bias) bias = nnx::Param(nnx::Tensor::zeros({out}), {out_axis});
  }
};

struct LayerNorm {
  double epsilon = 1e-5;
  nnx::Param scale, bias;  // [d]
  NNX_FIELDS(epsilon, scale, bias)

  LayerNorm() = default;
  explicit LayerNorm(std::int64_t d)
      : scale(nnx::Tensor::full({d}, 1.0), {"embed"}), bias(nnx::Tensor::zeros({d}), {"embed"}) {}
};

struct KVCache {
  nnx::Cache key, value;  // [batch, max_len, heads, head_dim]
  NNX_FIELDS(key, value)
};

struct Block {
  LayerNorm ln1, ln2;
  Linear qkv, proj, fc, fc_out;
  std::optional<KVCache> cache;  // decode mode only
  NNX_FIELDS(ln1, qkv, proj, cache, ln2, fc, fc_out)
};

struct Transformer {
  std::int64_t vocab = 0, max_len = 0, d_model = 0, heads = 0;
  Mode mode = Mode::train;
  std::string activation = "gelu_tanh";
  nnx::Param embedding;  // [vocab, d_model]
  nnx::Param positions;  // [max_len, d_model]
  std::vector<Block> blocks;
  LayerNorm ln_f;
  nnx::Param head;       // tied: the same variable as `embedding`
  NNX_FIELDS(vocab, max_len, d_model, heads, mode, activation, embedding, positions, blocks, ln_f, head)

  Transformer() = default;
  Transformer(std::int64_t vocab_, std::int64_t max_len_, std::int64_t d, std::int64_t heads_, int layers, Mode mode_,
              nnx::Rngs& rngs)
      : vocab(vocab_), max_len(max_len_), d_model(d), heads(heads_), mode(mode_), ln_f(d) {
    embedding = nnx::Param(nnx::init::normal(rngs.params(), {vocab, d}, 0.02f), {"vocab", "embed"});
    positions = nnx::Param(nnx::init::normal(rngs.params(), {max_len, d}, 0.01f), {"length", "embed"});
    for (int i = 0; i < layers; ++i) {
      Block b{LayerNorm(d), LayerNorm(d),
              Linear(d, 3 * d, true, rngs, "embed", "qkv"), Linear(d, d, true, rngs, "heads", "embed"),
              Linear(d, 4 * d, true, rngs, "embed", "mlp"), Linear(4 * d, d, true, rngs, "mlp", "embed"),
              std::nullopt};
      if (mode == Mode::decode)
        b.cache = KVCache{nnx::Cache(nnx::Tensor::zeros({1, max_len, heads, d / heads})),
                          nnx::Cache(nnx::Tensor::zeros({1, max_len, heads, d / heads}))};
      blocks.push_back(std::move(b));
    }
    head = embedding;
  }
};

}  // namespace demo

int main() {
  try {
    nnx::Rngs rngs{0};
    demo::Transformer model(/*vocab=*/256, /*max_len=*/32, /*d=*/64, /*heads=*/4, /*layers=*/2, demo::Mode::decode,
                            rngs);

    // (graphdef, params, cache, rest): the first matching filter wins.
    auto [graphdef, params, cache, rest] =
        nnx::split(model, nnx::of<nnx::Param>, nnx::of<nnx::Cache>, nnx::everything);

    std::cout << "== graphdef\n" << graphdef.to_string() << "\n";
    std::cout << "== params\n" << nnx::format_table(params) << "\n";
    std::cout << "== cache\n" << nnx::format_table(cache) << "\n";
    std::cout << "== rest\n" << nnx::format_table(rest) << "\n";

    // merge: the same buffers, the tie restored, the same graphdef.
    demo::Transformer merged = nnx::merge(graphdef, params, cache, rest);
    bool same_buffers = true;
    auto [graphdef2, all] = nnx::split(merged);
    auto [graphdef_orig, all_orig] = nnx::split(model);
    for (const auto& [path, leaf] : all)
      same_buffers = same_buffers && leaf.primary().raw_data() == all_orig[path].primary().raw_data();
    const bool tie_kept = merged.head.same_as(merged.embedding);
    const bool graphdef_equal = graphdef2 == graphdef;

    // The graphdef survives JSON (as it does inside checkpoints).
    const bool json_round_trip = nnx::graphdef_from_json(nnx::to_json(graphdef)) == graphdef;

    // An abstract copy of a bigger model allocates no tensor bytes.
    const auto before = nnx::tensor_memory_stats().allocated_bytes;
    auto abstract = nnx::eval_shape([&] {
      return demo::Transformer(50257, 1024, 768, 12, 12, demo::Mode::train, rngs);
    });
    const auto allocated = nnx::tensor_memory_stats().allocated_bytes - before;
    const auto abstract_params = nnx::graphdef(abstract).numel();

    std::printf("round trip: same buffers %s, tie kept %s, graphdef equal %s, JSON round trip %s\n",
                same_buffers ? "yes" : "NO", tie_kept ? "yes" : "NO", graphdef_equal ? "yes" : "NO",
                json_round_trip ? "yes" : "NO");
    std::printf("eval_shape of a GPT-2-124M-shaped tree: %lld parameters, %lld tensor bytes allocated\n",
                static_cast<long long>(abstract_params), static_cast<long long>(allocated));
    return same_buffers && tie_kept && graphdef_equal && json_round_trip && allocated == 0 ? 0 : 1;
  } catch (const nnx::Error& e) {
    std::fprintf(stderr, "split_merge: %s\n", e.what());
    return 2;
  }
}
