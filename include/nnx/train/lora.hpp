// nnx/train/lora.hpp — LoRA fine-tuning: the base weights frozen, only the adapters trained.
//
// freeze_base turns every Param that is not a LoraParam into a FrozenParam, a kind that is
// not a Param: value_and_grad, train_step and TrainState (which work on of<Param>) then
// differentiate, update and keep optimizer moments for the adapters alone, and the backward
// passes (nnx/train/backprop.hpp) skip the frozen weights' gradients. The frozen weights stay
// shared with the model they came from.
//
//   nnx::add_lora(model, {.rank = 8, .alpha = 16, .targets = "attn"}, rngs);
//   nnx::train::freeze_base(model);
//   nnx::train::TrainState state(std::move(model), opt);                   // moments: adapters only
//   nnx::State adapters = nnx::state(state.model, nnx::of<nnx::LoraParam>);  // what to save
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/filter.hpp"
#include "nnx/core/graph.hpp"
#include "nnx/core/module.hpp"
#include "nnx/core/variable.hpp"
#include "nnx/nn/lora.hpp"

namespace nnx::train {

// A base weight held fixed while adapters train. Not a Param: no gradient, no optimizer state.
struct FrozenParam : VariableKind<FrozenParam, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "FrozenParam";
};

namespace detail {
// Rebinds each variable `selects` accepts to a new cell of kind `to` sharing its value (tied
// variables stay tied: one new cell); counts the cells made.
template <class Selects>
struct Rekind : nnx::detail::NodeVisitor {
  Selects selects;
  const KindInfo* to;
  nnx::detail::CellIndex seen;
  std::vector<std::shared_ptr<VariableState>> made;
  Rekind(Selects s, const KindInfo& kind) : selects(s), to(&kind) {}
  void variable(const Path&, Variable& v) {
    if (!v.has_value() || !selects(*v.state().kind)) return;
    const std::int64_t i = seen.find_or_insert(v.cell_ptr().get(), static_cast<std::uint32_t>(made.size()));
    if (i >= 0) {
      v.bind(made[static_cast<std::size_t>(i)]);
      return;
    }
    VariableState s = v.state();
    s.kind = to;
    made.push_back(std::make_shared<VariableState>(std::move(s)));
    v.bind(made.back());
  }
};
}  // namespace detail

// Every Param of `model` that is not a LoraParam becomes a FrozenParam (tied ones stay tied,
// values shared); returns how many variables it froze. InvalidArgument when the model holds
// no LoraParam: there would be nothing left to train.
template <class Model>
std::int64_t freeze_base(Model& model) {
  if (state(model, of<LoraParam>).empty())
    throw InvalidArgument("freeze_base: the model has no LoRA adapters (attach them with add_lora first)");
  detail::Rekind r([](const KindInfo& k) { return k.is_a(Param::kind_info()) && !k.is_a(LoraParam::kind_info()); },
                   FrozenParam::kind_info());
  nnx::detail::walk_root(model, r);
  return static_cast<std::int64_t>(r.made.size());
}

// A copy of `model` whose FrozenParams are Params again (values shared): what to serve or
// merge once the adapters are trained.
template <class Model>
Model unfreeze(const Model& model) {
  Model out = model;
  detail::Rekind r([](const KindInfo& k) { return &k == &FrozenParam::kind_info(); }, Param::kind_info());
  nnx::detail::walk_root(out, r);
  return out;
}

}  // namespace nnx::train
