// nnx/core/variable.hpp — Variables: the leaves of a module's state.
//
// A Variable has a kind (Param, Cache, RngState, Intermediate, or a kind you define), a
// value — a Tensor, or a QTensor {qvalue: i8 tensor, scale: f32 tensors} for quantized
// weights — and metadata (logical axis names, the sharding annotation).
//
// A Variable is a handle, like a Python reference in Flax NNX: copying a module copies its
// handles, so both copies see the same variable. Two fields holding the same handle are
// tied weights; split keeps them as one leaf and merge restores the sharing.
//
//   struct Linear {
//     nnx::Param kernel, bias;
//     NNX_FIELDS(kernel, bias)
//   };
//   Linear l{nnx::Param(nnx::Tensor::zeros({4, 8}), {"embed", "mlp"}),
//            nnx::Param(nnx::Tensor::zeros({8}), {"mlp"})};
//
// Defining a kind of your own (of<Param> then matches it too, because it derives from Param):
//
//   struct FrozenParam : nnx::VariableKind<FrozenParam, nnx::Param> {
//     using VariableKind::VariableKind;
//     static constexpr std::string_view kind_name = "FrozenParam";
//   };
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "nnx/core/error.hpp"
#include "nnx/core/path.hpp"
#include "nnx/core/tensor.hpp"

namespace nnx {

// The runtime identity of a variable kind. Kinds form a tree rooted at Variable.
struct KindInfo {
  const std::string* name;  // interned, so kinds compare by pointer
  const KindInfo* parent;   // nullptr for the root kind, Variable

  std::string_view name_view() const noexcept { return *name; }
  // True when this kind is `base` or derives from it.
  bool is_a(const KindInfo& base) const noexcept {
    for (const KindInfo* k = this; k; k = k->parent)
      if (k == &base) return true;
    return false;
  }
};

namespace detail {

struct KindRegistry {
  std::mutex mutex;
  std::map<std::string, const KindInfo*, std::less<>> kinds;
};
inline KindRegistry& kind_registry() {
  static KindRegistry* registry = new KindRegistry;  // outlives every static KindInfo user
  return *registry;
}
inline void register_kind(const KindInfo& info) {
  auto& r = kind_registry();
  std::lock_guard lock(r.mutex);
  auto [it, inserted] = r.kinds.emplace(*info.name, &info);
  if (!inserted && it->second != &info)
    throw KindError("variable kind '" + *info.name + "' is defined twice by different types");
}

}  // namespace detail

// The kind registered under `name` (kinds register when first used), or nullptr.
inline const KindInfo* find_kind(std::string_view name) {
  auto& r = detail::kind_registry();
  std::lock_guard lock(r.mutex);
  auto it = r.kinds.find(name);
  return it == r.kinds.end() ? nullptr : it->second;
}

// Logical axis names, one per dimension of the value (or none).
struct Metadata {
  std::vector<std::string> axes;
  friend bool operator==(const Metadata&, const Metadata&) = default;
};

// An int8-quantized tensor: qvalue holds the integers, scale the per-channel factors
// (value ~= qvalue * scale, broadcast as the quantization scheme defines).
struct QTensor {
  Tensor qvalue;              // i8
  std::vector<Tensor> scale;  // f32
};

inline bool equal(const QTensor& a, const QTensor& b) {
  if (!equal(a.qvalue, b.qvalue) || a.scale.size() != b.scale.size()) return false;
  for (std::size_t i = 0; i < a.scale.size(); ++i)
    if (!equal(a.scale[i], b.scale[i])) return false;
  return true;
}

using Value = std::variant<Tensor, QTensor>;

inline bool equal(const Value& a, const Value& b) {
  if (a.index() != b.index()) return false;
  if (const auto* t = std::get_if<Tensor>(&a)) return equal(*t, std::get<Tensor>(b));
  return equal(std::get<QTensor>(a), std::get<QTensor>(b));
}

// Applies f to every tensor of a value (the tensor, or the qvalue and each scale).
template <class F>
Value map_tensors(const Value& v, F&& f) {
  if (const auto* t = std::get_if<Tensor>(&v)) return Value(f(*t));
  const auto& q = std::get<QTensor>(v);
  QTensor out{f(q.qvalue), {}};
  out.scale.reserve(q.scale.size());
  for (const auto& s : q.scale) out.scale.push_back(f(s));
  return Value(std::move(out));
}

// What a variable holds, detached from any module: a state's leaf (Flax's VariableState).
struct VariableState {
  const KindInfo* kind = nullptr;
  Value value;
  std::shared_ptr<const Metadata> metadata;

  const KindInfo& kind_info() const noexcept { return *kind; }
  std::string_view kind_name() const noexcept { return *kind->name; }
  bool is_quantized() const noexcept { return std::holds_alternative<QTensor>(value); }

  // The tensor value. Throws KindError for a quantized leaf.
  const Tensor& tensor() const {
    if (auto* t = std::get_if<Tensor>(&value)) return *t;
    throw KindError("VariableState: a quantized " + std::string(kind_name()) + " holds a QTensor, not a Tensor");
  }
  Tensor& tensor() { return const_cast<Tensor&>(std::as_const(*this).tensor()); }
  const QTensor& qtensor() const {
    if (auto* q = std::get_if<QTensor>(&value)) return *q;
    throw KindError("VariableState: this " + std::string(kind_name()) + " holds a Tensor, not a QTensor");
  }
  QTensor& qtensor() { return const_cast<QTensor&>(std::as_const(*this).qtensor()); }

  // The main tensor: the value, or a QTensor's qvalue.
  const Tensor& primary() const {
    if (auto* t = std::get_if<Tensor>(&value)) return *t;
    return std::get<QTensor>(value).qvalue;
  }
  DType dtype() const noexcept { return primary().dtype(); }
  const Shape& shape() const noexcept { return primary().shape(); }
  const std::vector<std::string>& axes() const noexcept {
    static const std::vector<std::string> none;
    return metadata ? metadata->axes : none;
  }

  std::int64_t numel() const {
    std::int64_t n = 0;
    map_tensors(value, [&](const Tensor& t) { n += t.numel(); return Tensor(); });
    return n;
  }
  std::size_t nbytes() const {
    std::size_t n = 0;
    map_tensors(value, [&](const Tensor& t) { n += t.nbytes(); return Tensor(); });
    return n;
  }
};

// Same kind, same axes, same value bytes.
inline bool operator==(const VariableState& a, const VariableState& b) {
  return a.kind == b.kind && a.axes() == b.axes() && equal(a.value, b.value);
}

// The base handle; also the root kind. Use a concrete kind (Param, Cache, ...) for fields.
class Variable {
 public:
  static constexpr std::string_view kind_name = "Variable";
  static const KindInfo& kind_info() {
    static const KindInfo info{detail::intern(kind_name), nullptr};
    static const bool registered = (detail::register_kind(info), true);
    (void)registered;
    return info;
  }

  // An empty handle: it holds no variable yet.
  Variable() = default;

  bool has_value() const noexcept { return cell_ != nullptr; }
  const KindInfo& kind() const { return *cell().kind; }

  // The tensor value (shared, not copied). Throws KindError when the value is a QTensor.
  const Tensor& value() const { return cell().tensor(); }
  Tensor& value() { return cell().tensor(); }
  const QTensor& qvalue() const { return cell().qtensor(); }
  QTensor& qvalue() { return cell().qtensor(); }
  bool is_quantized() const { return cell().is_quantized(); }
  // Replaces the value seen by every handle to this variable.
  void set_value(Value v) { cell().value = std::move(v); }

  const Metadata& metadata() const {
    static const Metadata none;
    return cell().metadata ? *cell().metadata : none;
  }
  void set_metadata(Metadata m) { cell().metadata = std::make_shared<const Metadata>(std::move(m)); }

  // The variable's state (kind, value, metadata), shared with every handle.
  const VariableState& state() const { return cell(); }
  VariableState& state() { return cell(); }

  // True when both handles refer to the same variable (tied weights).
  bool same_as(const Variable& other) const noexcept { return cell_ && cell_ == other.cell_; }

  // Low-level: the shared cell. Module traversal rebinds it during merge.
  const std::shared_ptr<VariableState>& cell_ptr() const noexcept { return cell_; }
  void bind(std::shared_ptr<VariableState> cell) noexcept { cell_ = std::move(cell); }

 protected:
  // The value is built in place from a Tensor or a QTensor; passing a whole Value by value
  // here makes GCC 12 warn (falsely) that the QTensor alternative may be uninitialized.
  template <class T>
  Variable(const KindInfo& kind, T&& value, Metadata metadata) : cell_(std::make_shared<VariableState>()) {
    cell_->kind = &kind;
    cell_->value.template emplace<std::remove_cvref_t<T>>(std::forward<T>(value));
    if (!metadata.axes.empty()) cell_->metadata = std::make_shared<const Metadata>(std::move(metadata));
  }

 private:
  VariableState& cell() const {
    if (!cell_) throw InvalidArgument("Variable: empty handle (it was never given a value)");
    return *cell_;
  }
  std::shared_ptr<VariableState> cell_;
};

// Base of every concrete kind: Self names the kind, Base is its parent kind.
template <class Self, class Base>
class VariableKind : public Base {
 public:
  VariableKind() = default;
  explicit VariableKind(Tensor value, Metadata metadata = {})
      : Base(Self::kind_info(), std::move(value), std::move(metadata)) {}
  explicit VariableKind(QTensor value, Metadata metadata = {})
      : Base(Self::kind_info(), std::move(value), std::move(metadata)) {}
  VariableKind(Tensor value, std::initializer_list<std::string> axes)
      : VariableKind(std::move(value), Metadata{std::vector<std::string>(axes)}) {}

  static const KindInfo& kind_info() {
    static const KindInfo info{detail::intern(Self::kind_name), &Base::kind_info()};
    static const bool registered = (detail::register_kind(info), true);
    (void)registered;
    return info;
  }

 protected:
  template <class T>
  VariableKind(const KindInfo& kind, T&& value, Metadata metadata)
      : Base(kind, std::forward<T>(value), std::move(metadata)) {}
};

// Trainable weights.
struct Param : VariableKind<Param, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "Param";
};
// Frozen quantized weights (a QTensor): parameters, but not trained — of<Param> matches them,
// of<QuantizedParam> picks them alone.
struct QuantizedParam : VariableKind<QuantizedParam, Param> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "QuantizedParam";
};
// Decoding state: the KV cache and its positions.
struct Cache : VariableKind<Cache, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "Cache";
};
// Random-number stream keys and counters.
struct RngState : VariableKind<RngState, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "RngState";
};
// Values a forward pass records (sows), such as attention statistics.
struct Intermediate : VariableKind<Intermediate, Variable> {
  using VariableKind::VariableKind;
  static constexpr std::string_view kind_name = "Intermediate";
};

}  // namespace nnx
