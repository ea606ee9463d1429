// nnx/engine/engine.hpp — the inference engine: MaxText's MaxEngine contract (JetStream's
// Engine API) as pure functions over state trees.
//
//   nnx::Engine<nnx::Gpt2> engine(cfg, {.max_prefill_length = 128, .max_target_length = 1024, .slots = 8});
//   nnx::State params = engine.load_params("models/gpt2");       // HF directory or native checkpoint
//   nnx::DecodeState state = engine.init_decode_state();
//   nnx::Prefix prefix = engine.prefill(params, prompt, prompt_length, {.temperature = 0.7}, nnx::key_from_seed(7));
//   state = engine.insert(prefix, std::move(state), /*slot=*/0);
//   auto [next, result] = engine.generate(params, std::move(state));   // every active slot +1 token
//   state = engine.release(std::move(next), 0);                         // once result.at(0).done
//
// States in, states out. A DecodeState passed as an rvalue is donated: its KV cache is
// written in place, so a decode loop never copies a cache. Passed as an lvalue it is copied
// on write and the caller's state stays as it was. Every call is all-or-nothing: it returns
// a new state, or throws (InvalidArgument naming the bad value, NumericalError for NaN
// logits at prefill, or whatever a kernel's allocation throws) with the caller's state valid
// and equal to what was passed, donated or not. (A donated cache may then differ at positions
// a slot has not reached, which are scratch and never read.) A request whose logits turn NaN
// during generate does not throw: it finishes with FinishReason::nan and the other slots go on.
//
// Determinism: a request's tokens and logits depend only on its prompt, its SamplingParams,
// its key and the parameters. Every row of every kernel is computed alone (fixed reduction
// order), the KV cache is per slot, and token i of a request is drawn with fold_in(key, i):
// the same request gives the same bits alone or beside others, in any slot, on any thread
// count.
//
// Memory: once warm, a generate step allocates no tensor memory (every buffer comes back from
// the storage pool). Binding the state trees to the model (merge) and the step's result make
// a fixed number of small allocations, ~11 per layer (40 for 2 layers, ~12 KB): the same at
// every position, for any vocabulary, context length or sampling settings.
//
// Prompts longer than max_prefill_length are prefilled in chunks of that length, each chunk
// attending to the cache written by the ones before; the result is bitwise the one long
// prefill's. A Prefix can be extended the same way (a shared system prompt, then each
// request's own tokens).
#pragma once

#include <algorithm>
#include <array>
#include <concepts>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "nnx/core/contiguous.hpp"
#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/rngs.hpp"
#include "nnx/core/state.hpp"
#include "nnx/core/tensor.hpp"
#include "nnx/engine/decode_state.hpp"
#include "nnx/engine/lora_checkpoint.hpp"
#include "nnx/engine/sampling.hpp"
#include "nnx/io/checkpoint.hpp"
#include "nnx/io/huggingface.hpp"
#include "nnx/models/transformer.hpp"
#include "nnx/nn/kv_cache.hpp"
#include "nnx/nn/mode.hpp"
#include "nnx/quant/config.hpp"
#include "nnx/quant/quantize.hpp"
#include "nnx/quant/weight_dtype.hpp"

namespace nnx {

// What the engine needs of a model: the decoder's hidden states, the output head apart (a
// prefill computes logits for its last position only), and its sizes.
template <class Model>
concept EngineModel = requires(Model& m, const Model& cm, const Tensor& t) {
  { m.hidden_states(t, t) } -> std::same_as<Tensor>;
  { cm.logits_from_hidden_states(t) } -> std::same_as<Tensor>;
  { cm.vocab_size() } -> std::convertible_to<std::int64_t>;
  { cm.context_length() } -> std::convertible_to<std::int64_t>;
  { cm.config.to_json() } -> std::convertible_to<nlohmann::json>;
  { Model::layers_key } -> std::convertible_to<std::string_view>;  // where its layers sit (per-layer or stacked)
};

struct EngineOptions {
  std::int64_t max_prefill_length = 512;  // tokens per prefill chunk
  std::int64_t max_target_length = 0;     // positions per slot (prompt + generated); 0: the context length
  std::int64_t slots = 1;                 // decode batch size
  QuantConfig quant{};                    // int8 layers (none by default); see nnx/quant/config.hpp
  DType kv_dtype = DType::f32;            // KV cache: f32, bf16 or i8 (nnx/nn/kv_cache.hpp)
  // Weights not quantized: as the checkpoint stores them (auto: a bf16 file is served in bf16,
  // read in place), or converted once at load (nnx/quant/weight_dtype.hpp).
  WeightDType weight_dtype = WeightDType::as_stored;
  // A LoRA adapter checkpoint (nnx/engine/lora_checkpoint.hpp) served unmerged on top of the
  // weights load_params reads: the models carry its adapters, load_params(path) reads them
  // from here. Empty: none.
  std::filesystem::path lora_adapter{};
  // The decoder layers per layer or stacked (ModelOptions::layout): param_spec and the states
  // are in this layout; load_params reads a checkpoint stored in either.
  Layout layout = Layout::per_layer;
};

// The config.json of a Hugging Face directory or the config stored in a native checkpoint
// (null when the checkpoint has none).
inline nlohmann::json read_model_config(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw InvalidArgument(path.string() + ": no such file or directory");
  if (std::filesystem::exists(path / "config.json")) return io::HfCheckpoint::open(path).config();
  return io::checkpoint_config(path);
}

// The layout the model at `path` stores its layers in: a native checkpoint's (stacked when
// ckpt convert or a stacked model wrote it), per-layer for a Hugging Face directory or a
// checkpoint without layers. The programs serve a model in it unless told otherwise.
template <class Model>
Layout stored_layout(const std::filesystem::path& path) {
  if (std::filesystem::exists(path / "config.json")) return Layout::per_layer;
  return io::checkpoint_layout(path, Model::layers_key).value_or(Layout::per_layer);
}

// What the programs' --verify does before loading: recomputes a native checkpoint's
// per-file checksums (io::verify_checkpoint; a mismatch is a CheckpointError naming the
// file). A path with nothing to verify (a Hugging Face directory, or a checkpoint saved
// without checksums) is InvalidArgument: the caller asked for a guarantee it cannot have.
inline io::CheckpointVerification verify_model_files(const std::filesystem::path& path) {
  if (std::filesystem::exists(path / "config.json"))
    throw InvalidArgument(path.string() + ": --verify: a Hugging Face directory carries no checksums");
  const io::CheckpointVerification v = io::verify_checkpoint(path);
  if (v.files_verified == 0 || v.files_without_checksum > 0)
    throw InvalidArgument(path.string() + ": --verify: " + std::to_string(v.files_without_checksum) +
                          " file(s) saved without checksums, nothing to verify them against");
  return v;
}

template <EngineModel Model>
class Engine {
 public:
  using Config = std::remove_cvref_t<decltype(std::declval<Model&>().config)>;

  struct GenerateOutput {
    DecodeState state;
    ResultTokens result;
  };

  Engine(const Config& config, const EngineOptions& options = {}) : config_(config), options_(options) {
    if (options.slots < 1) throw InvalidArgument("Engine: slots " + std::to_string(options.slots) + " < 1");
    if (options.max_prefill_length < 1)
      throw InvalidArgument("Engine: max_prefill_length " + std::to_string(options.max_prefill_length) + " < 1");
    if (!options.lora_adapter.empty()) {
      const LoraAdapterConfig adapter = read_lora_adapter_config(options.lora_adapter);
      check_config(adapter.model, options.lora_adapter);
      lora_ = adapter.lora;
    }
    Rngs rngs{0};
    Model prefill_model = eval_shape([&] {
      return Model(config, Mode::prefill, rngs,
                   {.cache_batch = 1,
                    .cache_length = options.max_target_length,
                    .cache_dtype = options.kv_dtype,
                    .layout = options.layout});
    });
    vocab_ = prefill_model.vocab_size();
    context_ = prefill_model.context_length();
    if (options_.max_target_length == 0) options_.max_target_length = context_;
    if (options_.max_target_length < 2 || options_.max_target_length > context_)
      throw InvalidArgument("Engine: max_target_length " + std::to_string(options_.max_target_length) +
                            " outside [2, " + std::to_string(context_) + "] (the model's context length)");
    auto [any_graphdef, any_params, any_cache, rest] = split(prefill_model, of<Param>, of<Cache>, everything);
    if (!rest.empty())
      throw InvalidArgument("Engine: the model holds state besides its parameters and KV cache, at '" +
                            rest.entry(0).path.to_string() + "'");
    // One variant per weight dtype: a checkpoint is served as stored whatever it holds.
    for (DType weights : {DType::f32, DType::bf16, DType::f16}) {
      Variant& v = variants_[variant_index(weights)];
      Model prefill = eval_shape([&] {
        Model m(config, Mode::prefill, rngs,
                {.cache_batch = 1,
                 .cache_length = options_.max_target_length,
                 .cache_dtype = options_.kv_dtype,
                 .layout = options_.layout});
        if (lora_.enabled()) add_lora(m, lora_, rngs);
        return m;
      });
      Model decode = eval_shape([&] {
        Model m(config, Mode::autoregressive, rngs,
                {.cache_batch = options_.slots,
                 .cache_length = options_.max_target_length,
                 .cache_dtype = options_.kv_dtype,
                 .layout = options_.layout});
        if (lora_.enabled()) add_lora(m, lora_, rngs);
        return m;
      });
      cast_weights(prefill, weights);
      cast_weights(decode, weights);
      auto [unquantized, unquantized_spec, unquantized_cache] = split(prefill, of<Param>, of<Cache>);
      v.unquantized = std::move(unquantized);
      v.unquantized_spec = std::move(unquantized_spec);
      // Serving int8: the models hold frozen QTensors where the kernels were.
      quantize(prefill, options_.quant, QuantMode::serve);
      quantize(decode, options_.quant, QuantMode::serve);
      auto [prefill_graphdef, params, prefill_cache] = split(prefill, of<Param>, of<Cache>);
      auto [decode_graphdef, decode_params, decode_cache] = split(decode, of<Param>, of<Cache>);
      v.prefill = std::move(prefill_graphdef);
      v.decode = std::move(decode_graphdef);
      v.param_spec = std::move(params);
      prefix_cache_spec_ = std::move(prefill_cache);
      decode_cache_spec_ = std::move(decode_cache);
    }
  }

  const Config& config() const { return config_; }
  const EngineOptions& options() const { return options_; }
  std::int64_t vocab_size() const { return vocab_; }
  std::int64_t max_target_length() const { return options_.max_target_length; }
  std::int64_t num_slots() const { return options_.slots; }
  // The served parameters' paths, kinds, dtypes and shapes (abstract tensors) with weights in
  // `weights` (by default the dtype options().weight_dtype names, f32 for auto).
  const State& param_spec(std::optional<DType> weights = std::nullopt) const {
    return variant(weights.value_or(default_weights())).param_spec;
  }
  // Bytes of served parameters (int8 QTensors with their scales; 16-bit weights as stored)
  // and of a decode state's KV cache (every slot's max_target_length positions in
  // options().kv_dtype).
  std::size_t param_bytes(std::optional<DType> weights = std::nullopt) const { return param_spec(weights).nbytes(); }
  std::size_t kv_cache_bytes() const { return decode_cache_spec_.nbytes(); }
  const GraphDef<Model>& prefill_graphdef(std::optional<DType> weights = std::nullopt) const {
    return variant(weights.value_or(default_weights())).prefill;
  }

  // ---- parameters ----

  // Weights from a Hugging Face directory (config.json + safetensors) or a native checkpoint.
  // A config found there must describe this engine's model. Weights not quantized come in
  // options().weight_dtype: as stored (a bf16 file's tensors used in place, zero-copy, where
  // the layouts agree) or converted once here. Full-precision weights are quantized once here
  // when the engine serves int8; a serve checkpoint (its config says how it was quantized,
  // which must match options().quant) loads straight into QTensors. With
  // options().lora_adapter, the adapters come from there (f32, applied unmerged).
  State load_params(const std::filesystem::path& path) const {
    if (!std::filesystem::exists(path)) throw InvalidArgument(path.string() + ": no such file or directory");
    const bool hugging_face = std::filesystem::exists(path / "config.json");
    std::optional<io::HfCheckpoint> hf;
    if (hugging_face) hf = io::HfCheckpoint::open(path);
    const nlohmann::json found = hugging_face ? hf->config() : io::checkpoint_config(path);
    check_config(found, path);
    const DType stored_weights = hugging_face ? hf->stored_weight_dtype() : io::checkpoint_weight_dtype(path);
    const QuantConfig stored = QuantConfig::of_model_config(found);
    if (stored.enabled()) {
      if (!(stored == options_.quant))
        throw InvalidArgument(path.string() + ": quantized as " + stored.to_json().dump() + "; the engine serves " +
                              options_.quant.to_json().dump());
      const State& spec = variant(stored_weights).param_spec;
      return load_params(with_adapters(restore_native(path, base_of(spec)), spec));
    }
    // A Hugging Face file is read straight into the served dtype (converted per tensor).
    if (hugging_face) {
      const State& spec = variant(served_weights(stored_weights)).unquantized_spec;
      const State per_layer = to_layout(base_of(spec), Model::layers_key, Layout::per_layer);
      return convert_params(
          with_adapters(to_layout(hf->read_params(per_layer), Model::layers_key, options_.layout), spec));
    }
    const State& spec = variant(stored_weights).unquantized_spec;
    return convert_params(with_adapters(restore_native(path, base_of(spec)), spec));
  }
  // Parameters already in memory, full precision or already quantized: checked leaf by leaf
  // (paths, kinds, dtypes, shapes), then shared (full precision: quantized first; weights
  // converted where options().weight_dtype asks for another dtype).
  State load_params(const State& given) const {
    const State params = to_layout(given, Model::layers_key, options_.layout);
    const bool quantized = std::any_of(params.begin(), params.end(), [](const auto& e) { return e.leaf.is_quantized(); });
    if (!quantized) return convert_params(params);
    const DType weights = weight_dtype_of(params);
    State converted;
    {
      Model model = merge(variant(weights).prefill, params, prefix_cache_spec_);
      if (served_weights(weights) == weights) return params;
      cast_weights(model, served_weights(weights));
      converted = state(model, of<Param>);
    }  // without the model's references, packing frees each converted tensor once copied
    return contiguous_weights(std::move(converted), params);
  }
  // Fresh random parameters, as the model's constructor initializes them (then quantized).
  State init_params(std::uint64_t seed) const {
    Rngs rngs{seed};
    Model model(config_, Mode::prefill, rngs, {.cache_batch = 1, .cache_length = 1, .layout = options_.layout});
    if (lora_.enabled()) add_lora(model, lora_, rngs);
    return convert_params(state(model, of<Param>));
  }
  // Full-precision parameters (weights f32, bf16 or f16) for this engine: checked, converted
  // to the served weight dtype, then quantized as options().quant says (shared unchanged when
  // neither changes anything).
  State convert_params(const State& params) const {
    const DType weights = weight_dtype_of(params);
    const DType served = served_weights(weights);
    State converted;
    {
      Model model = merge(variant(weights).unquantized, params, prefix_cache_spec_);
      if (served == weights && !options_.quant.enabled()) return params;
      cast_weights(model, served);
      quantize(model, options_.quant, QuantMode::serve);
      converted = state(model, of<Param>);
    }  // without the model's references, packing frees each converted tensor once copied
    return contiguous_weights(std::move(converted), params);
  }

  // ---- decode state ----

  DecodeState init_decode_state() const {
    DecodeState s;
    s.cache = zeros_like(decode_cache_spec_);
    s.slots.resize(static_cast<std::size_t>(options_.slots));
    return s;
  }

  // ---- requests ----

  // Everything prefill would reject about a request, checked without running the model:
  // sampling params, token ids within the vocabulary, the prompt fitting the cache, and
  // max_new_tokens and stop ids against the target length and the vocabulary. Throws
  // InvalidArgument naming the bad value.
  void check_request(std::span<const std::int32_t> prompt, const SamplingParams& sampling,
                     const StopCondition& stop = {}) const {
    sampling.validate();
    if (prompt.empty()) throw InvalidArgument("prefill: empty prompt");
    for (std::size_t t = 0; t < prompt.size(); ++t) check_token_id(prompt[t], static_cast<std::int64_t>(t));
    (void)resolve_max_new_tokens(0, static_cast<std::int64_t>(prompt.size()), stop);
  }

  // ---- prefill ----

  // Prefills tokens[0 .. true_length) (i32 or i64, [T] or [1, T]; what follows is padding)
  // and samples the first token with fold_in(rng, 0).
  Prefix prefill(const State& params, const Tensor& tokens, std::int64_t true_length, const SamplingParams& sampling,
                 RngKey rng, const StopCondition& stop = {}) const {
    State cache = zeros_like(prefix_cache_spec_);
    return sample_prefix(run_prefill(params, cache, 0, tokens, true_length, sampling, stop), sampling, stop, rng);
  }
  // Extends `existing` by tokens[0 .. true_length) at positions existing.next_position...
  // Pass `existing` as an rvalue to extend its cache in place (it is consumed only when the
  // call returns); an lvalue is copied on write and stays unchanged.
  Prefix prefill(const State& params, const Prefix& existing, const Tensor& tokens, std::int64_t true_length,
                 const SamplingParams& sampling, RngKey rng, const StopCondition& stop = {}) const {
    return prefill(params, Prefix(existing), tokens, true_length, sampling, rng, stop);
  }
  Prefix prefill(const State& params, Prefix&& existing, const Tensor& tokens, std::int64_t true_length,
                 const SamplingParams& sampling, RngKey rng, const StopCondition& stop = {}) const {
    check_prefix(existing, "prefill");
    Prefilled done =
        run_prefill(params, existing.cache, existing.next_position, tokens, true_length, sampling, stop);
    existing.cache.clear();  // consumed: the new Prefix is now the cache's only holder
    return sample_prefix(std::move(done), sampling, stop, rng);
  }
  // n first tokens from one forward pass: sample j is a request with key fold_in(rng, j), and
  // all n Prefixes share one cache (insert copies it into each slot).
  std::vector<Prefix> prefill_multisampling(const State& params, const Tensor& tokens, std::int64_t true_length,
                                            std::int64_t n, const SamplingParams& sampling, RngKey rng,
                                            const StopCondition& stop = {}) const {
    if (n < 1) throw InvalidArgument("prefill_multisampling: n " + std::to_string(n) + " < 1");
    State cache = zeros_like(prefix_cache_spec_);
    const Prefilled done = run_prefill(params, cache, 0, tokens, true_length, sampling, stop);
    std::vector<Prefix> out;
    out.reserve(static_cast<std::size_t>(n));
    for (std::int64_t j = 0; j < n; ++j) out.push_back(sample_prefix(done, sampling, stop, fold_in(rng, j)));
    return out;
  }

  // ---- insert, generate, release ----

  // Copies the prefix's used cache positions into `slot` and starts the request there.
  DecodeState insert(const Prefix& prefix, const DecodeState& state, std::int64_t slot) const {
    return insert(prefix, DecodeState(state), slot);
  }
  DecodeState insert(const Prefix& prefix, DecodeState&& state, std::int64_t slot) const {
    const std::int64_t slots[] = {slot};
    return bulk_insert(prefix, std::move(state), slots);
  }
  // The same prefix into several slots (e.g. to sample several continuations of it).
  DecodeState bulk_insert(const Prefix& prefix, const DecodeState& state, std::span<const std::int64_t> slots) const {
    return bulk_insert(prefix, DecodeState(state), slots);
  }
  DecodeState bulk_insert(const Prefix& prefix, DecodeState&& state, std::span<const std::int64_t> slots) const {
    check_decode_state(state, "insert");
    check_prefix(prefix, "insert");
    for (std::size_t i = 0; i < slots.size(); ++i) {
      check_slot(slots[i], "insert");
      if (state.slots[static_cast<std::size_t>(slots[i])].occupied)
        throw InvalidArgument("insert: slot " + std::to_string(slots[i]) + " is busy (release it first)");
      if (std::find(slots.begin(), slots.begin() + static_cast<std::ptrdiff_t>(i), slots[i]) !=
          slots.begin() + static_cast<std::ptrdiff_t>(i))
        throw InvalidArgument("insert: slot " + std::to_string(slots[i]) + " is given twice");
    }
    // Written in place (copied on write unless donated), and moved out only at the end: if a
    // clone throws, the caller's state is still valid (a slot's rows written so far were
    // free, hence scratch). The cache leaves say where their slots and positions are.
    for (std::int64_t slot : slots) copy_cache_positions(prefix.cache, state.cache, slot, prefix.next_position);
    for (std::int64_t slot : slots) {
      SlotState& s = state.slots[static_cast<std::size_t>(slot)];
      s = SlotState{};
      s.occupied = true;
      s.next_position = prefix.next_position;
      s.generated = 1;
      s.max_new_tokens = prefix.max_new_tokens;
      s.last_token = prefix.token;
      s.sampling = prefix.sampling;
      s.stop_ids = prefix.stop.stop_ids;
      s.key = prefix.key;
      s.finish = finish_reason(s, prefix.token);
      s.done = s.finish != FinishReason::none;
    }
    return std::move(state);
  }

  // Advances every active slot by one token. The result has a row per slot: valid for the
  // slots that advanced, and done for every occupied slot whose request has finished (this
  // step, at insert or earlier) until it is released.
  GenerateOutput generate(const State& params, const DecodeState& state) const {
    return generate(params, DecodeState(state));
  }
  GenerateOutput generate(const State& params, DecodeState&& state) const {
    check_decode_state(state, "generate");
    const auto n = static_cast<std::size_t>(options_.slots);
    ResultTokens result;
    result.slots.resize(n);
    for (std::size_t i = 0; i < n; ++i)
      if (state.slots[i].occupied && state.slots[i].done) result.slots[i] = finished_result(state.slots[i]);
    if (state.num_active() == 0) return {std::move(state), std::move(result)};

    // Only the active slots run: a batch of their rows, each reading and writing its own slot's
    // cache row, so a step costs what a batch of that many rows does.
    std::vector<std::int32_t> tokens;
    std::vector<std::int64_t> positions, rows;
    tokens.reserve(n);
    positions.reserve(n);
    rows.reserve(n);
    for (std::size_t i = 0; i < n; ++i)
      if (state.slots[i].active()) {
        tokens.push_back(state.slots[i].last_token);
        positions.push_back(state.slots[i].next_position);
        rows.push_back(static_cast<std::int64_t>(i));
      }
    const auto active = static_cast<std::int64_t>(rows.size());
    const Tensor token_tensor = Tensor::from_vector(tokens, {active});
    Tensor logits;  // [active, V]
    {
      // `state` holds a valid cache again if the step throws.
      Model model = merge(variant(weight_dtype_of(params)).decode, params, std::move(state.cache));
      try {
        logits = decode_step(model, token_tensor, positions, active == options_.slots ? std::span<const std::int64_t>{}
                                                                                        : std::span(rows));
      } catch (...) {
        state.cache = nnx::state(model, of<Cache>);
        throw;
      }
      state.cache = nnx::state(model, of<Cache>);
    }
    if (active == options_.slots) {
      result.logits = std::move(logits);
    } else {  // each slot's row: its logits, or zeros
      result.logits = Tensor::empty({options_.slots, vocab_});
      for (std::size_t i = 0, a = 0; i < n; ++i) {
        Tensor row = result.logits.select(static_cast<std::int64_t>(i));
        if (a < rows.size() && rows[a] == static_cast<std::int64_t>(i))
          row.copy_from(logits.select(static_cast<std::int64_t>(a++)));
        else
          row.fill(0.0f);
      }
    }
    // Every slot is sampled before any changes: nothing can throw once slots do.
    std::vector<std::optional<SampledToken>> sampled(n);  // nullopt: the slot's logits diverged
    for (std::size_t i = 0; i < n; ++i) {
      const SlotState& s = state.slots[i];
      const float* row = result.logits.data<float>() + i * static_cast<std::size_t>(vocab_);
      if (s.active() && usable_logits(row))
        sampled[i] = sample_token(row, vocab_, s.sampling, fold_in(s.key, static_cast<std::uint64_t>(s.generated)));
    }
    for (std::size_t i = 0; i < n; ++i) {
      SlotState& s = state.slots[i];
      if (!s.active()) continue;
      if (!sampled[i]) {
        s.finish = FinishReason::nan;
        s.done = true;
        result.slots[i] = finished_result(s);
        continue;
      }
      s.last_token = sampled[i]->token;
      ++s.next_position;
      ++s.generated;
      s.finish = finish_reason(s, s.last_token);
      s.done = s.finish != FinishReason::none;
      result.slots[i] = {s.last_token, true, s.generated, sampled[i]->log_prob, s.done, s.finish};
    }
    return {std::move(state), std::move(result)};
  }

  // Frees a slot for the next insert.
  DecodeState release(const DecodeState& state, std::int64_t slot) const { return release(DecodeState(state), slot); }
  DecodeState release(DecodeState&& state, std::int64_t slot) const {
    check_decode_state(state, "release");
    check_slot(slot, "release");
    if (!state.slots[static_cast<std::size_t>(slot)].occupied)
      throw InvalidArgument("release: slot " + std::to_string(slot) + " is not occupied");
    DecodeState out = std::move(state);
    out.slots[static_cast<std::size_t>(slot)] = SlotState{};
    return out;
  }

 private:
  static SlotResult finished_result(const SlotState& s) {
    return {s.last_token, false, s.generated, 0.0f, true, s.finish};
  }

  // False for a row no token can be drawn from: a NaN anywhere, or every logit -inf.
  bool usable_logits(const float* row) const {
    bool has_nan = false;
    const float mx = detail::sampling::max_logit(row, vocab_, has_nan);
    return !has_nan && mx != -std::numeric_limits<float>::infinity();
  }

  // A prefill's outcome before sampling.
  struct Prefilled {
    State cache;
    std::int64_t next_position = 0;
    Tensor last_logits;  // f32 [V]
    std::int64_t max_new_tokens = 0;
  };

  static State zeros_like(const State& spec) {
    return spec.map([](const Tensor& t) { return Tensor::zeros(t.shape(), t.dtype()); });
  }

  // Prefills into `cache` (in-out: on a throw it holds a valid cache again, changed at most
  // at positions from `start` on, which are scratch to its holder).
  Prefilled run_prefill(const State& params, State& cache, std::int64_t start, const Tensor& tokens,
                        std::int64_t true_length, const SamplingParams& sampling, const StopCondition& stop) const {
    sampling.validate();
    const std::vector<std::int32_t> ids = prompt_ids(tokens, true_length);
    Prefilled out;
    out.max_new_tokens = resolve_max_new_tokens(start, true_length, stop);
    const std::int64_t chunk = options_.max_prefill_length;
    for (std::int64_t begin = 0; begin < true_length; begin += chunk) {
      const std::int64_t len = std::min(chunk, true_length - begin);
      Tensor chunk_tokens = Tensor::empty({1, len}, DType::i32);
      Tensor chunk_positions = Tensor::empty({1, len}, DType::i32);
      for (std::int64_t t = 0; t < len; ++t) {
        chunk_tokens.data<std::int32_t>()[t] = ids[static_cast<std::size_t>(begin + t)];
        chunk_positions.data<std::int32_t>()[t] = static_cast<std::int32_t>(start + begin + t);
      }
      Model model = merge(variant(weight_dtype_of(params)).prefill, params, std::move(cache));
      try {
        const Tensor hidden = model.hidden_states(chunk_tokens, chunk_positions);  // [1, len, C]
        if (begin + len == true_length)
          out.last_logits = model.logits_from_hidden_states(hidden.select(0).slice(len - 1, len)).reshape({vocab_});
      } catch (...) {
        cache = nnx::state(model, of<Cache>);
        throw;
      }
      cache = nnx::state(model, of<Cache>);
    }
    if (!usable_logits(out.last_logits.template data<float>()))
      throw NumericalError("prefill: the logits at the prompt's last position (" +
                           std::to_string(start + true_length - 1) +
                           ") are NaN or all -inf: the weights or the config make the model diverge on this prompt");
    out.cache = std::move(cache);
    out.next_position = start + true_length;
    return out;
  }

  // Tokens a request may generate: stop.max_new_tokens checked against what the cache leaves
  // after `start + length` prompt tokens, or all of that. Also checks the stop ids.
  std::int64_t resolve_max_new_tokens(std::int64_t start, std::int64_t length, const StopCondition& stop) const {
    const std::int64_t S = options_.max_target_length;
    const std::int64_t end = start + length, room = S - end;  // start < S, length < 2^53
    if (room < 1)
      throw InvalidArgument("prefill: a prefix of " + std::to_string(end) + " tokens does not fit the cache: " +
                            "max_target_length " + std::to_string(S) + " leaves room for at most " +
                            std::to_string(S - 1) + " prompt tokens");
    for (std::int32_t id : stop.stop_ids)
      if (id < 0 || id >= vocab_)
        throw InvalidArgument("prefill: stop id " + std::to_string(id) + " is outside the vocabulary [0, " +
                              std::to_string(vocab_) + ")");
    if (!stop.max_new_tokens) return room;
    const std::int64_t m = *stop.max_new_tokens;
    if (m < 1) throw InvalidArgument("prefill: max_new_tokens " + std::to_string(m) + " < 1");
    if (m > room)
      throw InvalidArgument("prefill: max_new_tokens " + std::to_string(m) + " is beyond the target length: " +
                            std::to_string(end) + " prompt tokens + " + std::to_string(m) + " > max_target_length " +
                            std::to_string(S));
    return m;
  }

  void check_token_id(std::int64_t id, std::int64_t index) const {
    if (id < 0 || id >= vocab_)
      throw InvalidArgument("prefill: token id " + std::to_string(id) + " at index " + std::to_string(index) +
                            " is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
  }

  Prefix sample_prefix(const Prefilled& done, const SamplingParams& sampling, const StopCondition& stop,
                       RngKey key) const {
    const SampledToken first = sample_token(done.last_logits.template data<float>(), vocab_, sampling, fold_in(key, 0));
    Prefix p;
    p.cache = done.cache;
    p.next_position = done.next_position;
    p.token = first.token;
    p.log_prob = first.log_prob;
    p.last_logits = done.last_logits;
    p.sampling = sampling;
    p.stop = stop;
    p.max_new_tokens = done.max_new_tokens;
    p.key = key;
    return p;
  }
  Prefix sample_prefix(Prefilled&& done, const SamplingParams& sampling, const StopCondition& stop,
                       RngKey key) const {
    Prefix p = sample_prefix(std::as_const(done), sampling, stop, key);
    done.cache.clear();  // the Prefix is now the cache's only holder, so extending it is in place
    return p;
  }

  // The prompt's first true_length ids, each checked against the vocabulary.
  std::vector<std::int32_t> prompt_ids(const Tensor& tokens, std::int64_t true_length) const {
    const bool integer = tokens.dtype() == DType::i32 || tokens.dtype() == DType::i64;
    if (!integer || tokens.is_abstract() || !(tokens.rank() == 1 || (tokens.rank() == 2 && tokens.dim(0) == 1)))
      throw ShapeError("prefill: expected tokens i32 or i64 [T] or [1, T], found " + describe(tokens));
    const std::int64_t T = tokens.dim(tokens.rank() - 1);
    if (true_length < 1 || true_length > T)
      throw InvalidArgument("prefill: true_length " + std::to_string(true_length) + " outside [1, " +
                            std::to_string(T) + "]");
    std::vector<std::int32_t> ids(static_cast<std::size_t>(true_length));
    for (std::int64_t t = 0; t < true_length; ++t) {
      const std::int64_t id =
          tokens.dtype() == DType::i32 ? tokens.data<std::int32_t>()[t] : tokens.data<std::int64_t>()[t];
      check_token_id(id, t);
      ids[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(id);
    }
    return ids;
  }

  FinishReason finish_reason(const SlotState& s, std::int32_t token) const {
    if (std::find(s.stop_ids.begin(), s.stop_ids.end(), token) != s.stop_ids.end()) return FinishReason::stop_token;
    if (s.generated >= s.max_new_tokens) return FinishReason::max_new_tokens;
    return FinishReason::none;
  }

  void check_slot(std::int64_t slot, const char* where) const {
    if (slot < 0 || slot >= options_.slots)
      throw InvalidArgument(std::string(where) + ": slot " + std::to_string(slot) + " outside [0, " +
                            std::to_string(options_.slots) + ")");
  }

  // `where` and `which` name the call and the state in messages; they are joined only on
  // error, so a check that passes allocates nothing.
  static void check_cache(const State& cache, const State& spec, const char* where, const char* which) {
    const auto what = [&] { return std::string(where) + ": " + which; };
    if (cache.size() != spec.size())
      throw InvalidArgument(what() + " has " + std::to_string(cache.size()) + " cache leaves; expected " +
                            std::to_string(spec.size()));
    for (const auto& [path, leaf] : spec) {
      const VariableState* found = cache.find(path);
      if (!found) throw MissingLeafError(what() + " lacks the cache leaf '" + path.to_string() + "'");
      const Tensor& t = found->tensor();
      if (t.dtype() != leaf.dtype() || t.shape() != leaf.shape() || t.is_abstract())
        throw ShapeError(what() + ": cache leaf '" + path.to_string() + "' expected " + describe(leaf.tensor()) +
                         ", found " + describe(t));
    }
  }
  void check_decode_state(const DecodeState& s, const char* where) const {
    if (s.num_slots() != options_.slots)
      throw InvalidArgument(std::string(where) + ": decode state has " + std::to_string(s.num_slots()) +
                            " slots; the engine has " + std::to_string(options_.slots));
    check_cache(s.cache, decode_cache_spec_, where, "the decode state");
  }
  void check_prefix(const Prefix& p, const char* where) const {
    check_cache(p.cache, prefix_cache_spec_, where, "the prefix");
    if (p.next_position < 1 || p.next_position >= options_.max_target_length)
      throw InvalidArgument(std::string(where) + ": the prefix holds " + std::to_string(p.next_position) +
                            " tokens; expected [1, " + std::to_string(options_.max_target_length - 1) + "]");
  }

  // The leaves of `target` from the native checkpoint at `path`, stored in either layout.
  State restore_native(const std::filesystem::path& path, const State& target) const {
    return io::restore_checkpoint_any_layout(path, target, Model::layers_key);
  }
  // A parameter spec without its LoRA adapters: what the base checkpoint holds.
  State base_of(const State& spec) const { return lora_.enabled() ? spec.filter(Not(of<LoraParam>)) : spec; }
  // The base parameters with the adapters of options().lora_adapter added (as `spec` has them).
  State with_adapters(State base, const State& spec) const {
    if (!lora_.enabled()) return base;
    return merge_states(base, io::restore_checkpoint_any_layout(options_.lora_adapter, spec.filter(of<LoraParam>),
                                                                Model::layers_key));
  }

  void check_config(const nlohmann::json& found, const std::filesystem::path& path) const {
    if (found.is_null()) return;  // a native checkpoint saved without a config
    if (!found.is_object())
      throw InvalidArgument(path.string() + ": the model config is " + found.type_name() + ", expected a JSON object");
    const nlohmann::json expected = config_.to_json();
    // Compared as JSON values: value() with a string default throws nlohmann's type_error
    // when the stored model_type is not a string.
    if (found.value("model_type", nlohmann::json()) != expected.at("model_type"))
      throw InvalidArgument(path.string() + ": model_type " + found.value("model_type", nlohmann::json("missing")).dump() +
                            "; the engine's model is " + expected.value("model_type", nlohmann::json()).dump());
    nlohmann::json parsed;
    try {
      parsed = Config::from_json(found).to_json();
    } catch (const Error& e) {
      throw InvalidArgument(path.string() + ": " + e.what());
    }
    for (const auto& [key, value] : expected.items())
      if (parsed.value(key, nlohmann::json()) != value)
        throw InvalidArgument(path.string() + ": config " + key + " is " + parsed.value(key, nlohmann::json()).dump() +
                              "; the engine's model has " + value.dump());
  }

  Config config_;
  LoraConfig lora_;  // rank 0: no adapters
  EngineOptions options_;
  std::int64_t vocab_ = 0;
  std::int64_t context_ = 0;
  // The models for one dtype of the weights that are not quantized.
  struct Variant {
    GraphDef<Model> unquantized;  // the prefill model before quantization
    State unquantized_spec;       // abstract, before quantization
    GraphDef<Model> prefill;
    GraphDef<Model> decode;
    State param_spec;  // abstract, as served (QTensors at quantized paths)
  };
  static std::size_t variant_index(DType weights) {
    return weights == DType::f32 ? 0 : weights == DType::bf16 ? 1 : 2;
  }
  const Variant& variant(DType weights) const {
    if (weights != DType::f32 && weights != DType::bf16 && weights != DType::f16)
      throw InvalidArgument("Engine: weights are served in f32, bf16 or f16, not " + std::string(dtype_name(weights)));
    return variants_[variant_index(weights)];
  }
  // The dtype weights stored in `stored` are served in.
  DType served_weights(DType stored) const {
    return options_.weight_dtype == WeightDType::as_stored ? stored : to_dtype(options_.weight_dtype);
  }
  DType default_weights() const { return served_weights(DType::f32); }
  // The served weights in one buffer (nnx/core/contiguous.hpp): a decode step then streams
  // them from DRAM as one run of 2 MiB pages. Leaves that conversion left unchanged (shared
  // with `given`, such as an embedding table that stays f32) stay shared, not copied.
  static State contiguous_weights(State served, const State& given) {
    return contiguous_copy(std::move(served), [&](const Path& path, const VariableState& leaf) {
      const VariableState* before = given.find(path);
      return !(before && leaf.primary().shares_storage_with(before->primary()));
    });
  }

  std::array<Variant, 3> variants_;  // by variant_index
  State prefix_cache_spec_;  // abstract, [1, S, Hkv, D] per layer
  State decode_cache_spec_;  // abstract, [slots, S, Hkv, D] per layer
};

}  // namespace nnx
