// Learned 1-bit activation encoders (ALGORITHMS.md §4, issue 17): before a linear layer, x [n, d] becomes
//   x̂ = α ⊙ step(f(x) − β)          α, β ∈ R^d per channel (init 1 and 0), step from format/binary.hpp,
// so every channel of the layer's input takes exactly two values, ±α_c. The encoder f is selectable:
//   none        f(x) = x and α_row = mean_c |x_c| per token, nothing trained: naive sign, the baseline;
//   diag        f(x) = x, α and β trained: the elastic binarization of BiT (no mixing between channels);
//   lowrank:R   f(x) = x + U·relu(V·x), V [R, d], U [d, R], U = 0 at init so it starts as `diag`:
//               R·2d multiply-adds per token;
//   mlp         f(x) = W2·relu(W1·x), W1 [d/2, d], W2 [d, d/2], no bias, PyTorch's default uniform init:
//               the seed's encoder (d² multiply-adds per token, as many as a d x d linear).
// Backward: the step's surrogate gradient (Heaviside: of (2/π)·atan(k·u)), β's gradient its negative, α's
// the exact step value, and f's own chain rule. With `smooth` set, the forward computes the surrogate
// itself, so finite differences check the backward (tests/test_encoder.cpp); training never sets it.
// An encoder can be shared by the linears that read the same input (q/k/v; gate/up): it remembers its
// last input (address, shape, and a hash of the input's and its own parameters' values, so an optimizer
// step or a new batch in the same buffer is seen) and returns the same encoded matrix without recomputing
// it (nn/encoded_linear.hpp).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../core/stored_tensor.hpp"
#include "../core/tensor.hpp"
#include "../format/binary.hpp"
#include "gemm.hpp"
#include "parameter.hpp"

namespace lowbit::nn {

enum class EncoderKind { None, Diag, LowRank, Mlp };

struct EncoderSpec {
  EncoderKind kind = EncoderKind::Diag;
  index_t rank = 0;  // lowrank only

  std::string name() const {
    switch (kind) {
      case EncoderKind::None: return "none";
      case EncoderKind::Diag: return "diag";
      case EncoderKind::LowRank: return "lowrank:" + std::to_string(rank);
      case EncoderKind::Mlp: return "mlp";
    }
    return "?";
  }

  static EncoderSpec parse(const std::string& text) {
    EncoderSpec s;
    if (text == "none") s.kind = EncoderKind::None;
    else if (text == "diag") s.kind = EncoderKind::Diag;
    else if (text == "mlp") s.kind = EncoderKind::Mlp;
    else if (text.rfind("lowrank:", 0) == 0) {
      s.kind = EncoderKind::LowRank;
      const std::string r = text.substr(8);
      char* end = nullptr;
      const long v = std::strtol(r.c_str(), &end, 10);
      LOWBIT_CHECK(!r.empty() && end && *end == '\0' && v >= 1 && v <= (1 << 16), "encoder '", text,
                   "': the rank after 'lowrank:' must be an integer in [1, 65536]");
      s.rank = static_cast<index_t>(v);
    } else {
      fail("unknown encoder '", text, "' (known: none, diag, lowrank:R, mlp)");
    }
    return s;
  }
};

template <class T, StepFunction Step = Heaviside>
class BasicActivationEncoder {
 public:
  BasicActivationEncoder(EncoderSpec spec, index_t dim, std::uint64_t seed = 0) : spec_(spec), d_(dim) {
    LOWBIT_CHECK(dim >= 1, "activation encoder: dimension ", dim);
    if (spec_.kind == EncoderKind::LowRank)
      LOWBIT_CHECK(spec_.rank >= 1 && spec_.rank <= dim, "activation encoder lowrank:", spec_.rank,
                   ": the rank must be in [1, ", dim, "] for a ", dim, "-wide input");
    if (spec_.kind == EncoderKind::Mlp) LOWBIT_CHECK(dim >= 2, "activation encoder mlp: needs a width of at least 2");
    if (spec_.kind != EncoderKind::None) {
      alpha_.assign(static_cast<std::size_t>(d_), T(1));
      beta_.assign(static_cast<std::size_t>(d_), T(0));
    }
    Rng rng(seed);
    auto init_uniform = [&](std::vector<T>& w, index_t rows, index_t cols, double bound) {
      w.resize(static_cast<std::size_t>(rows * cols));
      for (auto& v : w) v = static_cast<T>((2 * rng.uniform() - 1) * bound);
    };
    if (spec_.kind == EncoderKind::LowRank) {
      init_uniform(down_, spec_.rank, d_, 1.0 / std::sqrt(static_cast<double>(d_)));
      up_.assign(static_cast<std::size_t>(d_ * spec_.rank), T(0));
    } else if (spec_.kind == EncoderKind::Mlp) {
      const index_t h = d_ / 2;
      init_uniform(down_, h, d_, 1.0 / std::sqrt(static_cast<double>(d_)));
      init_uniform(up_, d_, h, 1.0 / std::sqrt(static_cast<double>(h)));
    }
  }

  const EncoderSpec& spec() const { return spec_; }
  index_t dim() const { return d_; }
  index_t hidden() const {
    return spec_.kind == EncoderKind::LowRank ? spec_.rank : spec_.kind == EncoderKind::Mlp ? d_ / 2 : 0;
  }
  bool trainable() const { return spec_.kind != EncoderKind::None; }

  // Trained values (none: no parameters).
  index_t parameter_count() const {
    return static_cast<index_t>(alpha_.size() + beta_.size() + down_.size() + up_.size());
  }
  // Multiply-adds per token on top of the linear it feeds (the step and α are elementwise, not counted).
  index_t macs_per_token() const { return static_cast<index_t>(down_.size() + up_.size()); }

  // Sharpness of the surrogate gradient (the trainer may anneal it).
  T k = static_cast<T>(Heaviside::default_k);
  // Forward through the surrogate instead of the step (finite-difference checks only).
  bool smooth = false;

  // out [n, d] = x̂.
  void encode(MatrixView<const T> X, MatrixView<T> out) const {
    check(X, "encode");
    LOWBIT_CHECK(out.rows() == X.rows() && out.cols() == d_, "activation encoder: output is ", out.rows(), "x",
                 out.cols(), ", expected ", X.rows(), "x", d_);
    const index_t n = X.rows();
    if (spec_.kind == EncoderKind::None) {
      for (index_t r = 0; r < n; ++r) {
        const T a = mean_abs(X.row(r));
        for (index_t c = 0; c < d_; ++c) out(r, c) = a * act(X(r, c));
      }
      return;
    }
    std::vector<T> hidden;
    pre_step(X, out, hidden);  // out = f(x)
    for (index_t r = 0; r < n; ++r)
      for (index_t c = 0; c < d_; ++c) out(r, c) = alpha_[c] * act(out(r, c) - beta_[c]);
  }

  // x̂ for X, computed once per distinct input: the linears sharing this encoder call it in turn with the
  // same X and get the same buffer back (valid until the next call with another input).
  MatrixView<const T> encoded(MatrixView<const T> X) {
    const std::uint64_t h = fingerprint(X) ^ parameter_fingerprint();
    if (!(memo_valid_ && memo_data_ == X.data && memo_rows_ == X.rows() && memo_hash_ == h && !smooth)) {
      memo_.resize(static_cast<std::size_t>(X.rows() * d_));
      encode(X, MatrixView<T>(memo_.data(), X.rows(), d_));
      memo_valid_ = true;
      memo_data_ = X.data;
      memo_rows_ = X.rows();
      memo_hash_ = h;
      ++computed_;
    }
    return MatrixView<const T>(memo_.data(), X.rows(), d_);
  }
  // How many times `encoded` actually encoded (tests of the sharing).
  std::int64_t times_computed() const { return computed_; }
  void forget() {
    memo_valid_ = false;
    std::vector<T>().swap(memo_);
  }

  // dX [n, d] += ∂L/∂x given dOut = ∂L/∂x̂ (surrogate for the step); parameter gradients +=.
  void backward(MatrixView<const T> X, MatrixView<const T> dOut, MatrixView<T> dX) {
    check(X, "backward");
    LOWBIT_CHECK(dOut.rows() == X.rows() && dOut.cols() == d_ && (!dX.data || (dX.rows() == X.rows() && dX.cols() == d_)),
                 "activation encoder backward: shapes do not match the ", X.rows(), "x", d_, " input");
    const index_t n = X.rows();
    if (spec_.kind == EncoderKind::None) {
      if (!dX.data) return;
      // x̂_c = a·s(x_c), a = mean|x|: ∂/∂x_c = a·s'(x_c)·dOut_c + sign(x_c)/d · Σ_j dOut_j·s(x_j)
      for (index_t r = 0; r < n; ++r) {
        const T a = mean_abs(X.row(r));
        T dot = 0;
        for (index_t c = 0; c < d_; ++c) dot += dOut(r, c) * act(X(r, c));
        for (index_t c = 0; c < d_; ++c) {
          const T x = X(r, c);
          const T sgn = x > T(0) ? T(1) : x < T(0) ? T(-1) : T(0);
          dX(r, c) += a * Step::surrogate_grad(x, k) * dOut(r, c) + sgn / static_cast<T>(d_) * dot;
        }
      }
      return;
    }
    ensure_grads();
    std::vector<T> z(static_cast<std::size_t>(n * d_)), hidden;
    MatrixView<T> Z(z.data(), n, d_);
    pre_step(X, Z, hidden);
    // dz = dOut·α·step'(z − β), in place of z
    for (index_t r = 0; r < n; ++r)
      for (index_t c = 0; c < d_; ++c) {
        const T u = Z(r, c) - beta_[c];
        const T g = dOut(r, c);
        alpha_grad_[c] += g * act(u);
        const T dz = g * alpha_[c] * Step::surrogate_grad(u, k);
        beta_grad_[c] -= dz;
        Z(r, c) = dz;
      }
    MatrixView<const T> dZ(z.data(), n, d_);
    if (spec_.kind == EncoderKind::Diag) {
      if (dX.data)
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < d_; ++c) dX(r, c) += dZ(r, c);
      return;
    }
    const index_t h = hidden_width();
    MatrixView<const T> H(hidden.data(), n, h);  // relu(down·x)
    // z = [x +] up·H: d up += dZᵀ·H, dH = dZ·up, masked by relu
    matmul_add_dytx<T>(dZ, H, MatrixView<T>(up_grad_.data(), d_, h));
    std::vector<T> dh(static_cast<std::size_t>(n * h), T(0));
    MatrixView<T> dH(dh.data(), n, h);
    matmul_add_dyw<T>(dZ, MatrixView<const T>(up_.data(), d_, h), dH);
    for (index_t i = 0; i < n * h; ++i)
      if (!(hidden[static_cast<std::size_t>(i)] > T(0))) dh[static_cast<std::size_t>(i)] = T(0);
    matmul_add_dytx<T>(MatrixView<const T>(dh.data(), n, h), X, MatrixView<T>(down_grad_.data(), h, d_));
    if (dX.data) {
      matmul_add_dyw<T>(MatrixView<const T>(dh.data(), n, h), MatrixView<const T>(down_.data(), h, d_), dX);
      if (spec_.kind == EncoderKind::LowRank)  // the identity path
        for (index_t r = 0; r < n; ++r)
          for (index_t c = 0; c < d_; ++c) dX(r, c) += dZ(r, c);
    }
  }

  // Named "alpha", "beta", "down", "up" (the caller prefixes "encoder.").
  std::vector<BasicParameter<T>> parameters() {
    if (!trainable()) return {};
    ensure_grads();
    std::vector<BasicParameter<T>> p = {{"alpha", alpha_.data(), alpha_grad_.data(), d_},
                                        {"beta", beta_.data(), beta_grad_.data(), d_}};
    if (!down_.empty()) {
      p.push_back({"down", down_.data(), down_grad_.data(), static_cast<index_t>(down_.size())});
      p.push_back({"up", up_.data(), up_grad_.data(), static_cast<index_t>(up_.size())});
    }
    return p;
  }

  // The stored tensors ("alpha", "beta", "down", "up"; none for `none`): views for writing, and slots a
  // reader fills (io/quantized_model.hpp) in an encoder constructed with the same spec and width.
  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_slots() { return tensors_of(*this); }
  std::size_t bytes() const { return static_cast<std::size_t>(parameter_count()) * sizeof(float); }

  std::vector<T>& alpha() { return alpha_; }
  std::vector<T>& beta() { return beta_; }
  std::vector<T>& down() { return down_; }
  std::vector<T>& up() { return up_; }
  const std::vector<T>& alpha() const { return alpha_; }
  const std::vector<T>& beta() const { return beta_; }

 private:
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& self) {
    static_assert(sizeof(T) == 4, "only fp32 encoders are stored");
    StoredTensorsOf<Self> t;
    if (!self.trainable()) return t;
    t.push_back(stored_tensor("alpha", StoredType::F32, {self.d_}, self.alpha_));
    t.push_back(stored_tensor("beta", StoredType::F32, {self.d_}, self.beta_));
    if (!self.down_.empty()) {
      t.push_back(stored_tensor("down", StoredType::F32, {self.hidden(), self.d_}, self.down_));
      t.push_back(stored_tensor("up", StoredType::F32, {self.d_, self.hidden()}, self.up_));
    }
    return t;
  }

  index_t hidden_width() const { return hidden(); }

  T act(T u) const { return smooth ? Step::surrogate(u, k) : Step::step(u); }

  T mean_abs(const T* x) const {
    T s = 0;
    for (index_t c = 0; c < d_; ++c) s += std::abs(x[c]);
    return s / static_cast<T>(d_);
  }

  template <class M>
  void check(const M& X, const char* what) const {
    LOWBIT_CHECK(X.cols() == d_, "activation encoder ", what, ": input is ", X.rows(), "x", X.cols(), ", the encoder is ",
                 d_, " wide");
  }

  // out = f(x); `hidden` receives relu(down·x) [n, h] for lowrank and mlp.
  void pre_step(MatrixView<const T> X, MatrixView<T> out, std::vector<T>& hidden) const {
    const index_t n = X.rows();
    if (spec_.kind == EncoderKind::Diag || spec_.kind == EncoderKind::None) {
      for (index_t r = 0; r < n; ++r) std::copy_n(X.row(r), d_, out.row(r));
      return;
    }
    const index_t h = hidden_width();
    hidden.assign(static_cast<std::size_t>(n * h), T(0));
    MatrixView<T> H(hidden.data(), n, h);
    matmul_xwt<T>(X, MatrixView<const T>(down_.data(), h, d_), H);
    for (auto& v : hidden) v = v > T(0) ? v : T(0);
    const bool residual = spec_.kind == EncoderKind::LowRank;
    if (residual)
      for (index_t r = 0; r < n; ++r) std::copy_n(X.row(r), d_, out.row(r));
    matmul_xwt<T>(MatrixView<const T>(hidden.data(), n, h), MatrixView<const T>(up_.data(), d_, h), out, residual);
  }

  void ensure_grads() {
    auto fit = [](std::vector<T>& g, const std::vector<T>& v) {
      if (g.size() != v.size()) g.assign(v.size(), T(0));
    };
    fit(alpha_grad_, alpha_);
    fit(beta_grad_, beta_);
    fit(down_grad_, down_);
    fit(up_grad_, up_);
  }

  static std::uint64_t mix(const T* values, std::size_t count, std::uint64_t h) {
    const auto* p = reinterpret_cast<const unsigned char*>(values);
    const std::size_t bytes = count * sizeof(T);
    std::size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
      std::uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = (h ^ w) * 0x100000001b3ull;
      h ^= h >> 29;
    }
    for (; i < bytes; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
  }
  static std::uint64_t fingerprint(MatrixView<const T> X) {
    std::uint64_t h = 0x9e3779b97f4a7c15ull ^ static_cast<std::uint64_t>(X.rows());
    for (index_t r = 0; r < X.rows(); ++r) h = mix(X.row(r), static_cast<std::size_t>(X.cols()), h);
    return h;
  }
  std::uint64_t parameter_fingerprint() const {
    std::uint64_t h = static_cast<std::uint64_t>(std::bit_cast<std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>(k));
    for (const auto* v : {&alpha_, &beta_, &down_, &up_}) h = mix(v->data(), v->size(), h * 31 + 7);
    return h;
  }

  EncoderSpec spec_;
  index_t d_;
  std::vector<T> alpha_, beta_, down_, up_;
  std::vector<T> alpha_grad_, beta_grad_, down_grad_, up_grad_;
  std::vector<T> memo_;
  bool memo_valid_ = false;
  const T* memo_data_ = nullptr;
  index_t memo_rows_ = 0;
  std::uint64_t memo_hash_ = 0;
  std::int64_t computed_ = 0;
};

using ActivationEncoder = BasicActivationEncoder<float>;

}  // namespace lowbit::nn
