// One LLaMA transformer block, pre-norm: x += wo(attn(rope(wq·n1), rope(wk·n1), wv·n1)) with
// n1 = rmsnorm(x); then x += w2(silu(w1·n2) ⊙ w3·n2) with n2 = rmsnorm(x). The seven projections are
// Linear objects so quantized layers drop in; the forward can hand out the inputs of the four distinct
// linear groups (taps) for calibration, and the training forward saves what the backward needs.
#pragma once

#include <algorithm>
#include <array>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "attention.hpp"
#include "config.hpp"
#include "dense_linear.hpp"
#include "kv_cache.hpp"
#include "linear.hpp"
#include "mlp.hpp"
#include "rmsnorm.hpp"
#include "rope.hpp"

namespace lowbit::nn {

enum class LinearRole { Q, K, V, O, Gate, Up, Down };  // wq wk wv wo w1 w3 w2
inline constexpr int kLinearRoles = 7;
inline constexpr std::array<LinearRole, 7> kAllLinearRoles = {LinearRole::Q,    LinearRole::K,  LinearRole::V,
                                                              LinearRole::O,    LinearRole::Gate, LinearRole::Up,
                                                              LinearRole::Down};

// Canonical tensor name of a role inside a block ("attention.wq", ..., "feed_forward.w2").
inline const char* linear_role_name(LinearRole r) {
  switch (r) {
    case LinearRole::Q: return "attention.wq";
    case LinearRole::K: return "attention.wk";
    case LinearRole::V: return "attention.wv";
    case LinearRole::O: return "attention.wo";
    case LinearRole::Gate: return "feed_forward.w1";
    case LinearRole::Up: return "feed_forward.w3";
    case LinearRole::Down: return "feed_forward.w2";
  }
  return "?";
}

// [out, in] of a role for a configuration.
inline std::pair<index_t, index_t> linear_role_shape(const ModelConfig& c, LinearRole r) {
  const index_t dim = c.dim, q = static_cast<index_t>(c.n_heads) * c.head_dim(), kv = c.kv_dim(), hid = c.hidden_dim;
  switch (r) {
    case LinearRole::Q: return {q, dim};
    case LinearRole::K: return {kv, dim};
    case LinearRole::V: return {kv, dim};
    case LinearRole::O: return {dim, q};
    case LinearRole::Gate: return {hid, dim};
    case LinearRole::Up: return {hid, dim};
    case LinearRole::Down: return {dim, hid};
  }
  return {0, 0};
}

// Inputs of the four distinct linear groups of a block, row-major [B*T, features].
template <class F>
struct BasicBlockTaps {
  std::vector<F> attn_in;     // input of q, k, v   [n, dim]
  std::vector<F> attn_out;    // input of o         [n, n_heads*head_dim]
  std::vector<F> ffn_in;      // input of gate, up  [n, dim]
  std::vector<F> ffn_hidden;  // input of down      [n, hidden]
};
using BlockTaps = BasicBlockTaps<float>;

// Everything the block backward needs, saved by the training forward. Also reused as the inference
// workspace (then x_in and probs stay empty).
template <class F>
struct BasicBlockActivations {
  int B = 0, T = 0;
  std::vector<F> x_in;          // [n, dim]        block input (residual stream)
  std::vector<F> inv_rms_attn;  // [n]
  std::vector<F> attn_in;       // [n, dim]        rmsnorm(x_in) ⊙ g1
  std::vector<F> q, k, v;       // [n, q/kv width] after RoPE (q, k)
  std::vector<F> probs;         // [B, H, T, T]    attention probabilities
  std::vector<F> attn_out;      // [n, q width]
  std::vector<F> x_mid;         // [n, dim]        x_in + wo(attn_out)
  std::vector<F> inv_rms_ffn;   // [n]
  std::vector<F> ffn_in;        // [n, dim]
  std::vector<F> gate, up;      // [n, hidden]
  std::vector<F> ffn_hidden;    // [n, hidden]     silu(gate) ⊙ up
  std::vector<F> proj;          // [n, dim]        scratch for wo / w2 outputs
};
using BlockActivations = BasicBlockActivations<float>;

template <class F>
class BasicBlock {
 public:
  // Norm gains 1 and zero dense linears; with_linears = false leaves the linears for set_linear().
  explicit BasicBlock(const ModelConfig& c, bool with_linears = true)
      : attn_norm(static_cast<std::size_t>(c.dim), F(1)), ffn_norm(static_cast<std::size_t>(c.dim), F(1)), cfg_(c) {
    if (!with_linears) return;
    for (auto r : kAllLinearRoles) {
      auto [out, in] = linear_role_shape(c, r);
      linears_[static_cast<int>(r)] = std::make_unique<BasicDenseLinear<F>>(out, in);
    }
  }

  BasicLinear<F>& linear(LinearRole r) { return *linears_[static_cast<int>(r)]; }
  const BasicLinear<F>& linear(LinearRole r) const { return *linears_[static_cast<int>(r)]; }

  // Takes the layer out (the slot is empty until set_linear fills it again), e.g. to wrap it.
  BasicLinearPtr<F> release_linear(LinearRole r) { return std::move(linears_[static_cast<int>(r)]); }

  void set_linear(LinearRole r, BasicLinearPtr<F> l, const std::string& where = "block") {
    LOWBIT_CHECK(l != nullptr, where, ": set_linear(", linear_role_name(r), ") got a null layer");
    auto [out, in] = linear_role_shape(cfg_, r);
    LOWBIT_CHECK(l->out_features() == out && l->in_features() == in, where, ": ", linear_role_name(r),
                 " replacement is ", l->out_features(), "x", l->in_features(), ", expected ", out, "x", in);
    linears_[static_cast<int>(r)] = std::move(l);
  }

  // Inference on x [B*T, dim] in place. With a cache (B must be 1) the T new tokens sit at positions
  // start_pos.., their keys/values are stored in the cache and attention reads all cached positions.
  // `workspace` (optional) holds the intermediate activations instead of the block's own buffers, so
  // a model can share one workspace among all its blocks (30 private ones for a 2x2048-token batch of
  // SmolLM2 would hold 4 GB).
  void forward(F* x, int B, int T, const RopeTable<F>& rope, BasicKVCache<F>* cache = nullptr, int layer = 0,
               int start_pos = 0, BasicBlockTaps<F>* taps = nullptr, BasicBlockActivations<F>* workspace = nullptr) {
    BasicBlockActivations<F>& ws = workspace ? *workspace : workspace_;
    run(x, x, B, T, rope, cache, layer, start_pos, ws, false);
    if (taps) {
      taps->attn_in = ws.attn_in;
      taps->attn_out = ws.attn_out;
      taps->ffn_in = ws.ffn_in;
      taps->ffn_hidden = ws.ffn_hidden;
    }
  }

  // Training forward: x_out [B*T, dim] (may not alias x_in); `acts` receives what backward needs.
  void forward_train(const F* x_in, int B, int T, const RopeTable<F>& rope, F* x_out,
                     BasicBlockActivations<F>& acts) {
    const index_t n = static_cast<index_t>(B) * T;
    acts.x_in.assign(x_in, x_in + n * cfg_.dim);
    run(acts.x_in.data(), x_out, B, T, rope, nullptr, 0, 0, acts, true);
  }

  // d_in [B*T, dim] += ∂L/∂x_in given d_out = ∂L/∂x_out (d_in may be null); parameter gradients +=.
  void backward(const BasicBlockActivations<F>& a, const RopeTable<F>& rope, const F* d_out, F* d_in) {
    LOWBIT_CHECK(!a.x_in.empty() && !a.probs.empty(), "block backward: activations were not saved by forward_train");
    const int B = a.B, T = a.T;
    const index_t n = static_cast<index_t>(B) * T, dim = cfg_.dim, hid = cfg_.hidden_dim;
    const AttentionShape s = shape();
    const index_t qw = s.q_width(), kvw = s.kv_width();
    ensure_grads();
    auto C = [](const F* p, index_t r, index_t c) { return MatrixView<const F>(p, r, c); };

    // feed-forward branch
    std::vector<F> d_mid(d_out, d_out + n * dim);
    std::vector<F> d_hidden(static_cast<std::size_t>(n * hid), F(0));
    linear(LinearRole::Down).backward(C(a.ffn_hidden.data(), n, hid), C(d_out, n, dim),
                                      MatrixView<F>(d_hidden.data(), n, hid));
    std::vector<F> d_gate(d_hidden.size(), F(0)), d_up(d_hidden.size(), F(0));
    swiglu_backward(a.gate.data(), a.up.data(), d_hidden.data(), n * hid, d_gate.data(), d_up.data());
    std::vector<F> d_ffn_in(static_cast<std::size_t>(n * dim), F(0));
    linear(LinearRole::Gate).backward(C(a.ffn_in.data(), n, dim), C(d_gate.data(), n, hid),
                                      MatrixView<F>(d_ffn_in.data(), n, dim));
    linear(LinearRole::Up).backward(C(a.ffn_in.data(), n, dim), C(d_up.data(), n, hid),
                                    MatrixView<F>(d_ffn_in.data(), n, dim));
    rmsnorm_backward(a.x_mid.data(), ffn_norm.data(), a.inv_rms_ffn.data(), d_ffn_in.data(), n, dim, d_mid.data(),
                     ffn_norm_grad.data());

    // attention branch
    std::vector<F> d_attn_out(static_cast<std::size_t>(n * qw), F(0));
    linear(LinearRole::O).backward(C(a.attn_out.data(), n, qw), C(d_mid.data(), n, dim),
                                   MatrixView<F>(d_attn_out.data(), n, qw));
    std::vector<F> dq(static_cast<std::size_t>(n * qw), F(0)), dk(static_cast<std::size_t>(n * kvw), F(0)),
        dv(static_cast<std::size_t>(n * kvw), F(0));
    attention_backward(a.q.data(), a.k.data(), a.v.data(), a.probs.data(), d_attn_out.data(), B, T, s, dq.data(),
                       dk.data(), dv.data());
    rope_backward(rope, dq.data(), n, qw, s.n_heads, T);
    rope_backward(rope, dk.data(), n, kvw, s.n_kv_heads, T);
    std::vector<F> d_attn_in(static_cast<std::size_t>(n * dim), F(0));
    MatrixView<F> d_attn_in_view(d_attn_in.data(), n, dim);
    linear(LinearRole::Q).backward(C(a.attn_in.data(), n, dim), C(dq.data(), n, qw), d_attn_in_view);
    linear(LinearRole::K).backward(C(a.attn_in.data(), n, dim), C(dk.data(), n, kvw), d_attn_in_view);
    linear(LinearRole::V).backward(C(a.attn_in.data(), n, dim), C(dv.data(), n, kvw), d_attn_in_view);
    rmsnorm_backward(a.x_in.data(), attn_norm.data(), a.inv_rms_attn.data(), d_attn_in.data(), n, dim, d_mid.data(),
                     attn_norm_grad.data());
    if (d_in)
      for (index_t i = 0; i < n * dim; ++i) d_in[i] += d_mid[static_cast<std::size_t>(i)];
  }

  // Norm gains and every linear's parameters, named "<prefix>attention_norm.weight",
  // "<prefix>attention.wq.weight", ...
  std::vector<BasicParameter<F>> parameters(const std::string& prefix) {
    ensure_grads();
    std::vector<BasicParameter<F>> out;
    out.push_back({prefix + "attention_norm.weight", attn_norm.data(), attn_norm_grad.data(),
                   static_cast<index_t>(attn_norm.size())});
    for (auto r : kAllLinearRoles) {
      if (r == LinearRole::Gate)
        out.push_back({prefix + "ffn_norm.weight", ffn_norm.data(), ffn_norm_grad.data(),
                       static_cast<index_t>(ffn_norm.size())});
      for (auto& p : linear(r).parameters()) {
        p.name = prefix + linear_role_name(r) + "." + p.name;
        out.push_back(std::move(p));
      }
    }
    return out;
  }

  AttentionShape shape() const { return {cfg_.n_heads, cfg_.n_kv_heads, cfg_.head_dim()}; }
  const ModelConfig& config() const { return cfg_; }

  std::vector<F> attn_norm, ffn_norm;            // gains g1, g2
  std::vector<F> attn_norm_grad, ffn_norm_grad;  // allocated on first training use

 private:
  void ensure_grads() {
    if (attn_norm_grad.size() != attn_norm.size()) attn_norm_grad.assign(attn_norm.size(), F(0));
    if (ffn_norm_grad.size() != ffn_norm.size()) ffn_norm_grad.assign(ffn_norm.size(), F(0));
  }

  // The forward shared by inference and training. x_in may alias x_out.
  void run(const F* x_in, F* x_out, int B, int T, const RopeTable<F>& rope, BasicKVCache<F>* cache, int layer,
           int start_pos, BasicBlockActivations<F>& a, bool training) {
    const index_t n = static_cast<index_t>(B) * T, dim = cfg_.dim, hid = cfg_.hidden_dim;
    const AttentionShape s = shape();
    const index_t qw = s.q_width(), kvw = s.kv_width();
    const F eps = static_cast<F>(cfg_.norm_eps);
    auto sized = [](std::vector<F>& v, index_t count) {
      v.resize(static_cast<std::size_t>(count));
      return v.data();
    };
    a.B = B;
    a.T = T;
    LOWBIT_CHECK(rope.positions() >= start_pos + T, "block forward: RoPE table holds ", rope.positions(),
                 " positions, need ", start_pos + T);
    F* attn_in = sized(a.attn_in, n * dim);
    rmsnorm_forward(x_in, attn_norm.data(), n, dim, eps, attn_in, sized(a.inv_rms_attn, n));
    F* q = sized(a.q, n * qw);
    F* k = sized(a.k, n * kvw);
    F* v = sized(a.v, n * kvw);
    MatrixView<const F> attn_in_view(attn_in, n, dim);
    linear(LinearRole::Q).forward(attn_in_view, MatrixView<F>(q, n, qw));
    linear(LinearRole::K).forward(attn_in_view, MatrixView<F>(k, n, kvw));
    linear(LinearRole::V).forward(attn_in_view, MatrixView<F>(v, n, kvw));
    rope_forward(rope, q, n, qw, s.n_heads, T, start_pos);
    rope_forward(rope, k, n, kvw, s.n_kv_heads, T, start_pos);
    F* attn_out = sized(a.attn_out, n * qw);
    if (cache) {
      LOWBIT_CHECK(B == 1, "block forward: a KV cache holds one sequence, got batch ", B);
      LOWBIT_CHECK(start_pos + T <= cache->max_len, "block forward: KV cache holds ", cache->max_len,
                   " positions, need ", start_pos + T);
      std::copy_n(k, n * kvw, cache->key(layer, start_pos));
      std::copy_n(v, n * kvw, cache->value(layer, start_pos));
      attention_forward(q, cache->key(layer, 0), cache->value(layer, 0), attn_out, 1, T, start_pos + T, start_pos,
                        0, s);
    } else {
      F* probs = training ? sized(a.probs, static_cast<index_t>(B) * s.n_heads * T * T) : nullptr;
      attention_forward(q, k, v, attn_out, B, T, T, 0, static_cast<index_t>(T) * kvw, s, probs);
    }
    F* proj = sized(a.proj, n * dim);
    linear(LinearRole::O).forward(MatrixView<const F>(attn_out, n, qw), MatrixView<F>(proj, n, dim));
    F* x_mid = sized(a.x_mid, n * dim);
    for (index_t i = 0; i < n * dim; ++i) x_mid[i] = x_in[i] + proj[i];
    F* ffn_in = sized(a.ffn_in, n * dim);
    rmsnorm_forward(x_mid, ffn_norm.data(), n, dim, eps, ffn_in, sized(a.inv_rms_ffn, n));
    F* gate = sized(a.gate, n * hid);
    F* up = sized(a.up, n * hid);
    MatrixView<const F> ffn_in_view(ffn_in, n, dim);
    linear(LinearRole::Gate).forward(ffn_in_view, MatrixView<F>(gate, n, hid));
    linear(LinearRole::Up).forward(ffn_in_view, MatrixView<F>(up, n, hid));
    F* hidden = sized(a.ffn_hidden, n * hid);
    swiglu_forward(gate, up, n * hid, hidden);
    linear(LinearRole::Down).forward(MatrixView<const F>(hidden, n, hid), MatrixView<F>(proj, n, dim));
    for (index_t i = 0; i < n * dim; ++i) x_out[i] = x_mid[i] + proj[i];
  }

  ModelConfig cfg_;
  std::array<BasicLinearPtr<F>, 7> linears_;
  BasicBlockActivations<F> workspace_;
};

using Block = BasicBlock<float>;

}  // namespace lowbit::nn
