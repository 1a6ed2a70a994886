// EncodedLinear<Binary<Heaviside>, Inner>: a linear layer whose input passes a learned 1-bit activation
// encoder first (nn/activation_encoder.hpp, ALGORITHMS.md §4): y = Inner(x̂), x̂ = α ⊙ step(f(x) − β).
// The inner layer is any weight format (dense fp32, uniform, additive, BCQ), so 1-bit activations
// combine with low-bit weights; the step policy comes from the activation format (format/binary.hpp).
//
// One encoder per distinct input: the linears reading the same tensor (q, k, v read the attention input;
// gate and up the feed-forward input) hold the same encoder (a shared_ptr), which encodes each input
// once (its memo) and accumulates the gradients of every reader. Exactly one of them owns it: the
// owner lists the encoder's parameters (so an optimizer updates them once) and counts its bytes.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../format/binary.hpp"
#include "activation_encoder.hpp"
#include "block.hpp"
#include "linear.hpp"

namespace lowbit::nn {

template <class T, class Act = Binary<Heaviside>>
class BasicEncodedLinear final : public BasicLinear<T> {
 public:
  using Encoder = BasicActivationEncoder<T, typename Act::Step>;

  BasicEncodedLinear(BasicLinearPtr<T> inner, std::shared_ptr<Encoder> encoder, bool owns_encoder)
      : inner_(std::move(inner)), encoder_(std::move(encoder)), owns_(owns_encoder) {
    LOWBIT_CHECK(inner_ && encoder_, "EncodedLinear: needs a layer and an encoder");
    LOWBIT_CHECK(encoder_->dim() == inner_->in_features(), "EncodedLinear: the encoder is ", encoder_->dim(),
                 " wide, the layer reads ", inner_->in_features(), " features");
  }

  index_t in_features() const override { return inner_->in_features(); }
  index_t out_features() const override { return inner_->out_features(); }

  void forward(MatrixView<const T> X, MatrixView<T> Y) const override { inner_->forward(encoder_->encoded(X), Y); }

  void backward(MatrixView<const T> X, MatrixView<const T> dY, MatrixView<T> dX) override {
    const auto E = encoder_->encoded(X);
    std::vector<T> de(static_cast<std::size_t>(X.rows() * in_features()), T(0));
    inner_->backward(E, dY, MatrixView<T>(de.data(), X.rows(), in_features()));
    encoder_->backward(X, MatrixView<const T>(de.data(), X.rows(), in_features()), dX);
  }

  // The inner layer's parameters ("weight", "scales", ...), then the owner's "encoder.alpha", ...
  std::vector<BasicParameter<T>> parameters() override {
    auto p = inner_->parameters();
    if (owns_)
      for (auto& e : encoder_->parameters()) {
        e.name = "encoder." + e.name;
        p.push_back(std::move(e));
      }
    return p;
  }

  void dequantize(MatrixView<T> W) const override { inner_->dequantize(W); }
  void dequantize_row(index_t r, T* out) const override { inner_->dequantize_row(r, out); }
  std::size_t bytes() const override { return inner_->bytes() + (owns_ ? encoder_->bytes() : 0); }

  // "binary:heaviside:diag|uniform:4:128"; a linear that reads its input's encoder without owning it
  // says ":shared" after the encoder ("binary:heaviside:diag:shared|uniform:4:128").
  std::string format() const override {
    return Act::name() + ":" + encoder_->spec().name() + (owns_ ? "" : ":shared") + "|" + inner_->format();
  }

  // The inner layer's tensors, then the owner's encoder as "encoder.alpha", "encoder.beta", ...
  std::vector<StoredTensor> stored_tensors() const override {
    if constexpr (sizeof(T) != 4) {
      return BasicLinear<T>::stored_tensors();  // f64 layers exist for gradient checks only
    } else {
      auto t = inner_->stored_tensors();
      if (owns_)
        for (auto e : encoder_->stored_tensors()) {
          e.suffix = "encoder." + e.suffix;
          t.push_back(std::move(e));
        }
      return t;
    }
  }

  bool set_activations(const std::string& name) override { return inner_->set_activations(name); }
  void release_workspace() override {
    inner_->release_workspace();
    encoder_->forget();
  }

  bool transforms_input() const override { return true; }
  void effective_input(MatrixView<const T> X, MatrixView<T> out) const override { encoder_->encode(X, out); }

  BasicLinear<T>& inner() { return *inner_; }
  const BasicLinear<T>& inner() const { return *inner_; }
  Encoder& encoder() { return *encoder_; }
  const Encoder& encoder() const { return *encoder_; }
  const std::shared_ptr<Encoder>& shared_encoder() const { return encoder_; }
  bool owns_encoder() const { return owns_; }

 private:
  BasicLinearPtr<T> inner_;
  std::shared_ptr<Encoder> encoder_;
  bool owns_;
};

using EncodedLinear = BasicEncodedLinear<float>;

// A format descriptor split: "binary:heaviside:lowrank:16:shared|uniform:4:128" is encoded, step
// "heaviside", encoder lowrank:16, shared, inner "uniform:4:128". A descriptor without the "binary:"
// prefix is not encoded (inner = the whole descriptor).
struct EncodedDescriptor {
  bool encoded = false;
  std::string step;
  EncoderSpec spec;
  bool shared = false;
  std::string inner;
};

inline EncodedDescriptor parse_encoded_descriptor(const std::string& d) {
  EncodedDescriptor e;
  e.inner = d;
  if (d.rfind("binary:", 0) != 0) return e;
  const auto bar = d.find('|');
  LOWBIT_CHECK(bar != std::string::npos && bar + 1 < d.size(), "format '", d,
               "': an encoded layer's descriptor is binary:STEP:ENCODER[:shared]|INNER_FORMAT");
  e.encoded = true;
  e.inner = d.substr(bar + 1);
  std::string head = d.substr(7, bar - 7);  // STEP:ENCODER[:shared]
  const auto colon = head.find(':');
  LOWBIT_CHECK(colon != std::string::npos, "format '", d, "': no encoder after the step");
  e.step = head.substr(0, colon);
  std::string enc = head.substr(colon + 1);
  const std::string tail = ":shared";
  if (enc.size() > tail.size() && enc.compare(enc.size() - tail.size(), tail.size(), tail) == 0) {
    e.shared = true;
    enc.resize(enc.size() - tail.size());
  }
  LOWBIT_CHECK(e.step == Heaviside::name(), "format '", d, "': unknown step '", e.step, "' (known: heaviside)");
  e.spec = EncoderSpec::parse(enc);
  return e;
}

// The four distinct inputs of a block's linears and who reads them; the first reader owns the encoder.
struct EncodedInput {
  const char* name;  // tensor-name stem of the encoder, under its owner ("attention.wq.encoder.alpha")
  std::vector<LinearRole> readers;
};
inline const std::vector<EncodedInput>& block_encoded_inputs() {
  static const std::vector<EncodedInput> inputs = {{"attention input", {LinearRole::Q, LinearRole::K, LinearRole::V}},
                                                   {"attention output", {LinearRole::O}},
                                                   {"feed-forward input", {LinearRole::Gate, LinearRole::Up}},
                                                   {"feed-forward hidden", {LinearRole::Down}}};
  return inputs;
}

// Which of block_encoded_inputs() a role reads.
inline int encoded_input_of(LinearRole r) {
  switch (r) {
    case LinearRole::Q:
    case LinearRole::K:
    case LinearRole::V: return 0;
    case LinearRole::O: return 1;
    case LinearRole::Gate:
    case LinearRole::Up: return 2;
    case LinearRole::Down: return 3;
  }
  return 0;
}

// Wraps the seven linears of `block` (any weight formats) in EncodedLinear with one encoder of `spec` per
// distinct input (4 per block). Encoder i of the block is seeded with (seed, i). `share` = false gives each
// linear its own copy instead (identical initial values; tests compare the two).
template <class T, class Act = Binary<Heaviside>>
void encode_block(BasicBlock<T>& block, const EncoderSpec& spec, std::uint64_t seed, bool share = true) {
  using Enc = typename BasicEncodedLinear<T, Act>::Encoder;
  int i = 0;
  for (const auto& input : block_encoded_inputs()) {
    const index_t width = block.linear(input.readers.front()).in_features();
    const std::uint64_t s = Rng(seed).fork(static_cast<std::uint64_t>(i++)).next_u64();
    auto shared = std::make_shared<Enc>(spec, width, s);
    bool first = true;
    for (LinearRole role : input.readers) {
      const bool wrapped = dynamic_cast<BasicEncodedLinear<T, Act>*>(&block.linear(role)) != nullptr;
      LOWBIT_CHECK(!wrapped, "encode_block: ", linear_role_name(role), " is already encoded");
      auto enc = share ? shared : std::make_shared<Enc>(spec, width, s);
      BasicLinearPtr<T> inner = block.release_linear(role);
      block.set_linear(role, std::make_unique<BasicEncodedLinear<T, Act>>(std::move(inner), enc, share ? first : true));
      first = false;
    }
  }
}

}  // namespace lowbit::nn
