// Finite-difference checks of every backward in nn/, run in double precision on the same templated
// code the fp32 model uses. Each check draws a random scalar loss L = Σ wᵢ·yᵢ (or the model's own
// cross-entropy), computes the analytic gradient with the layer's backward, and compares it with central
// differences (f(x+h) − f(x−h)) / 2h, h = 1e-5.
//
// Tolerance: relative error ‖g − g_fd‖ / ‖g_fd‖ < 1e-6 per tensor. In double, central differences have
// truncation error O(h²·|f'''|) ≈ 1e-10 and rounding error O(ε·|f|/h) ≈ 1e-11 for the O(1) losses used
// here, so a correct backward lands around 1e-9; any wrong term (a missing factor, a dropped path)
// gives errors of order 1e-2..1. The norm-wise measure avoids dividing by gradients that are exactly 0
// (masked attention entries, ignored targets).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "lowbit/core/rng.hpp"
#include "lowbit/nn/attention.hpp"
#include "lowbit/nn/dense_linear.hpp"
#include "lowbit/nn/embedding.hpp"
#include "lowbit/nn/encoded_linear.hpp"
#include "lowbit/nn/mlp.hpp"
#include "lowbit/nn/model.hpp"
#include "lowbit/nn/output_head.hpp"
#include "lowbit/nn/rmsnorm.hpp"
#include "lowbit/nn/rope.hpp"

using namespace lowbit;
using namespace lowbit::nn;

namespace {

constexpr double kStep = 1e-5;
constexpr double kTolerance = 1e-6;

std::vector<double> randn(Rng& rng, index_t n, double scale = 1.0) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Relative error of `analytic` against central differences of `loss` with respect to x[0..n). Large
// tensors are checked on `max_entries` entries drawn with a fixed seed (the whole-model check would
// otherwise need thousands of forwards per tensor).
double grad_error(const std::function<double()>& loss, double* x, index_t n, const double* analytic,
                  index_t max_entries) {
  std::vector<index_t> entries;
  if (n <= max_entries) {
    for (index_t i = 0; i < n; ++i) entries.push_back(i);
  } else {
    Rng pick(static_cast<std::uint64_t>(n));
    for (index_t e = 0; e < max_entries; ++e) entries.push_back(static_cast<index_t>(pick.below(static_cast<std::uint64_t>(n))));
  }
  double diff2 = 0, ref2 = 0;
  for (index_t i : entries) {
    const double saved = x[i];
    x[i] = saved + kStep;
    const double up = loss();
    x[i] = saved - kStep;
    const double down = loss();
    x[i] = saved;
    const double fd = (up - down) / (2 * kStep);
    diff2 += (fd - analytic[i]) * (fd - analytic[i]);
    ref2 += fd * fd;
  }
  return std::sqrt(diff2) / std::max(std::sqrt(ref2), 1e-300);
}

void expect_grad(const std::string& what, const std::function<double()>& loss, double* x, index_t n,
                 const double* analytic, index_t max_entries = 1 << 30) {
  const double err = grad_error(loss, x, n, analytic, max_entries);
  INFO(what << ": relative error " << err);
  std::printf("  %-40s rel. error %.2e\n", what.c_str(), err);
  CHECK(err < kTolerance);
}

}  // namespace

TEST_CASE("embedding backward scatters into the rows that were read") {
  Rng rng(1);
  const index_t vocab = 7, dim = 5, n = 6;
  auto table = randn(rng, vocab * dim);
  std::vector<std::int32_t> tokens{3, 1, 3, 6, 0, 3};  // repeated ids must accumulate
  auto w = randn(rng, n * dim);
  std::vector<double> out(static_cast<std::size_t>(n * dim));
  auto loss = [&] {
    embedding_forward(table.data(), vocab, dim, tokens.data(), n, out.data());
    return dot(w, out);
  };
  std::vector<double> dtable(table.size(), 0.0);
  embedding_backward(tokens.data(), n, dim, w.data(), dtable.data());
  expect_grad("embedding table", loss, table.data(), vocab * dim, dtable.data());
}

TEST_CASE("rmsnorm backward") {
  Rng rng(2);
  const index_t n = 4, dim = 9;
  auto x = randn(rng, n * dim), gain = randn(rng, dim), w = randn(rng, n * dim);
  const double eps = 1e-5;
  std::vector<double> out(x.size()), inv(static_cast<std::size_t>(n));
  auto loss = [&] {
    rmsnorm_forward(x.data(), gain.data(), n, dim, eps, out.data(), inv.data());
    return dot(w, out);
  };
  loss();
  std::vector<double> dx(x.size(), 0.0), dg(gain.size(), 0.0);
  rmsnorm_backward(x.data(), gain.data(), inv.data(), w.data(), n, dim, dx.data(), dg.data());
  expect_grad("rmsnorm dx", loss, x.data(), n * dim, dx.data());
  expect_grad("rmsnorm dgain", loss, gain.data(), dim, dg.data());
}

TEST_CASE("dense linear backward: dX += dY·W, dW += dYᵀ·X") {
  Rng rng(3);
  const index_t n = 5, in = 7, out = 6;
  BasicDenseLinear<double> lin(out, in, randn(rng, out * in));
  auto X = randn(rng, n * in), w = randn(rng, n * out);
  std::vector<double> Y(static_cast<std::size_t>(n * out));
  auto loss = [&] {
    lin.forward(MatrixView<const double>(X.data(), n, in), MatrixView<double>(Y.data(), n, out));
    return dot(w, Y);
  };
  std::vector<double> dX(X.size(), 0.0);
  lin.backward(MatrixView<const double>(X.data(), n, in), MatrixView<const double>(w.data(), n, out),
               MatrixView<double>(dX.data(), n, in));
  auto params = lin.parameters();
  REQUIRE(params.size() == 1);
  std::vector<double> dW(params[0].grad, params[0].grad + params[0].size);
  expect_grad("linear dX", loss, X.data(), n * in, dX.data());
  expect_grad("linear dW", loss, params[0].value, params[0].size, dW.data());
  // a second backward accumulates
  lin.backward(MatrixView<const double>(X.data(), n, in), MatrixView<const double>(w.data(), n, out),
               MatrixView<double>(dX.data(), n, in));
  CHECK(params[0].grad[3] == doctest::Approx(2 * dW[3]).epsilon(1e-12));
}

TEST_CASE("rope backward, both layouts") {
  for (auto layout : {RopeLayout::Interleaved, RopeLayout::HalfSplit}) {
    Rng rng(4);
    const int heads = 3, head_dim = 8, B = 2, T = 4;
    const index_t width = heads * head_dim, n = B * T;
    RopeTable<double> table(head_dim, 10000.0, layout, 16);
    auto x = randn(rng, n * width), w = randn(rng, n * width);
    auto loss = [&] {
      std::vector<double> y = x;
      rope_forward(table, y.data(), n, width, heads, T, 3);
      return dot(w, y);
    };
    std::vector<double> dx = w;
    rope_backward(table, dx.data(), n, width, heads, T, 3);
    expect_grad(layout == RopeLayout::Interleaved ? "rope interleaved dx" : "rope half-split dx", loss, x.data(),
                n * width, dx.data());
  }
}

TEST_CASE("grouped-query causal attention backward") {
  Rng rng(5);
  const AttentionShape s{4, 2, 6};
  const int B = 2, T = 5;
  const index_t n = B * T, qw = s.q_width(), kvw = s.kv_width();
  auto q = randn(rng, n * qw), k = randn(rng, n * kvw), v = randn(rng, n * kvw), w = randn(rng, n * qw);
  std::vector<double> out(static_cast<std::size_t>(n * qw)), probs(static_cast<std::size_t>(B * s.n_heads * T * T));
  auto loss = [&] {
    attention_forward(q.data(), k.data(), v.data(), out.data(), B, T, T, 0, T * kvw, s, probs.data());
    return dot(w, out);
  };
  loss();
  std::vector<double> dq(q.size(), 0.0), dk(k.size(), 0.0), dv(v.size(), 0.0);
  attention_backward(q.data(), k.data(), v.data(), probs.data(), w.data(), B, T, s, dq.data(), dk.data(), dv.data());
  expect_grad("attention dq", loss, q.data(), n * qw, dq.data());
  expect_grad("attention dk", loss, k.data(), n * kvw, dk.data());
  expect_grad("attention dv", loss, v.data(), n * kvw, dv.data());
}

TEST_CASE("swiglu backward") {
  Rng rng(6);
  const index_t count = 40;
  auto g = randn(rng, count, 2.0), u = randn(rng, count), w = randn(rng, count);
  std::vector<double> h(static_cast<std::size_t>(count));
  auto loss = [&] {
    swiglu_forward(g.data(), u.data(), count, h.data());
    return dot(w, h);
  };
  std::vector<double> dg(g.size(), 0.0), du(u.size(), 0.0);
  swiglu_backward(g.data(), u.data(), w.data(), count, dg.data(), du.data());
  expect_grad("swiglu dgate", loss, g.data(), count, dg.data());
  expect_grad("swiglu dup", loss, u.data(), count, du.data());
}

TEST_CASE("cross-entropy gradient, with an ignored target") {
  Rng rng(7);
  const index_t n = 4, vocab = 11;
  auto logits = randn(rng, n * vocab, 3.0);
  std::vector<std::int32_t> targets{2, -1, 10, 0};
  const double scale = 1.0 / 3;
  auto loss = [&] { return scale * cross_entropy(logits.data(), targets.data(), n, vocab); };
  std::vector<double> d(logits.size());
  index_t counted = 0;
  cross_entropy(logits.data(), targets.data(), n, vocab, d.data(), scale, &counted);
  CHECK(counted == 3);
  expect_grad("cross-entropy dlogits", loss, logits.data(), n * vocab, d.data());
  // independent value: −log softmax by hand for row 0
  double z = 0;
  for (index_t j = 0; j < vocab; ++j) z += std::exp(logits[static_cast<std::size_t>(j)]);
  CHECK(log_softmax_at(logits.data(), vocab, 2) == doctest::Approx(logits[2] - std::log(z)).epsilon(1e-12));
}

namespace {

ModelConfig tiny_config(bool tied, RopeLayout layout) {
  ModelConfig c;
  c.dim = 16;
  c.hidden_dim = 24;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 19;
  c.max_seq_len = 32;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_layout = layout;
  c.tied_embeddings = tied;
  return c;
}

}  // namespace

TEST_CASE("whole 2-layer model: every parameter, tied and untied head, both RoPE layouts") {
  for (bool tied : {true, false})
    for (auto layout : {RopeLayout::Interleaved, RopeLayout::HalfSplit}) {
      Rng rng(tied ? 11 : 12);
      const auto cfg = tiny_config(tied, layout);
      // std 0.3 so the blocks are far from linear and every path matters
      auto model = BasicLlama<double>::random_init(cfg, rng, 0.3);
      for (auto& p : model.parameters())
        if (p.name.find("norm") != std::string::npos)
          for (index_t i = 0; i < p.size; ++i) p.value[i] = 1.0 + 0.2 * rng.normal();
      const int B = 2, T = 6;
      std::vector<std::int32_t> tokens(B * T), targets(B * T);
      for (auto& t : tokens) t = static_cast<std::int32_t>(rng.below(cfg.vocab_size));
      for (auto& t : targets) t = static_cast<std::int32_t>(rng.below(cfg.vocab_size));
      targets[3] = -1;  // ignored position
      std::vector<double> logits(static_cast<std::size_t>(B * T * cfg.vocab_size));
      // the loss through the inference path, so training and inference forwards are checked together
      auto loss = [&] {
        model.forward(tokens.data(), B, T, logits.data());
        index_t counted = 0;
        const double sum = cross_entropy(logits.data(), targets.data(), B * T, cfg.vocab_size, (double*)nullptr, 1.0,
                                         &counted);
        return sum / static_cast<double>(counted);
      };
      model.zero_grad();
      const double l = model.forward_backward_ce(tokens.data(), targets.data(), B, T);
      CHECK(l == doctest::Approx(loss()).epsilon(1e-12));
      std::printf("model tied=%d layout=%s loss %.6f\n", tied, layout == RopeLayout::Interleaved ? "interleaved" : "half",
                  l);
      auto params = model.parameters();
      CHECK(params.size() == (tied ? 2u : 3u) + 2u * 9u);
      for (auto& p : params) {
        std::vector<double> analytic(p.grad, p.grad + p.size);
        expect_grad(p.name, loss, p.value, p.size, analytic.data(), 64);
      }
    }
}

TEST_CASE("block backward gives the input gradient used by block reconstruction") {
  Rng rng(13);
  const auto cfg = tiny_config(true, RopeLayout::Interleaved);
  auto model = BasicLlama<double>::random_init(cfg, rng, 0.3);
  const int B = 2, T = 5;
  const index_t n = B * T;
  auto x = randn(rng, n * cfg.dim), w = randn(rng, n * cfg.dim);
  std::vector<double> y(x.size());
  BasicBlockActivations<double> acts;
  auto loss = [&] {
    BasicBlockActivations<double> a;
    model.block_forward_train(1, x.data(), B, T, y.data(), a);
    return dot(w, y);
  };
  model.block_forward_train(1, x.data(), B, T, y.data(), acts);
  // the inference block forward agrees with the training one
  std::vector<double> x_inf = x;
  model.block_forward(1, x_inf.data(), B, T);
  for (std::size_t i = 0; i < y.size(); ++i) REQUIRE(x_inf[i] == doctest::Approx(y[i]).epsilon(1e-12));
  model.zero_grad();
  std::vector<double> dx(x.size(), 0.0);
  model.block_backward(1, acts, w.data(), dx.data());
  expect_grad("block d_in", loss, x.data(), n * cfg.dim, dx.data());
  for (auto& p : model.block_parameters(1)) {
    std::vector<double> analytic(p.grad, p.grad + p.size);
    expect_grad(p.name, loss, p.value, p.size, analytic.data(), 64);
  }
}

namespace {

// Encoders in their smooth (surrogate) forward with every trained tensor away from its initial value, so
// each term of the backward is exercised.
void perturb(BasicActivationEncoder<double>& e, Rng& rng) {
  e.smooth = true;
  for (auto& a : e.alpha()) a = 0.5 + rng.uniform();
  for (auto& b : e.beta()) b = 0.3 * rng.normal();
  for (auto& u : e.up()) u = 0.3 * rng.normal();
}

}  // namespace

TEST_CASE("activation encoders: backward equals finite differences of the surrogate forward") {
  for (const char* kind : {"none", "diag", "lowrank:3", "mlp"}) {
    Rng rng(21);
    const index_t n = 5, d = 12;
    BasicActivationEncoder<double> enc(EncoderSpec::parse(kind), d, 7);
    perturb(enc, rng);
    enc.k = 2.5;
    auto x = randn(rng, n * d), w = randn(rng, n * d);
    std::vector<double> y(x.size());
    auto loss = [&] {
      enc.encode(MatrixView<const double>(x.data(), n, d), MatrixView<double>(y.data(), n, d));
      return dot(w, y);
    };
    std::vector<double> dx(x.size(), 0.0);
    for (auto& p : enc.parameters()) std::fill(p.grad, p.grad + p.size, 0.0);
    enc.backward(MatrixView<const double>(x.data(), n, d), MatrixView<const double>(w.data(), n, d),
                 MatrixView<double>(dx.data(), n, d));
    std::printf("encoder %s\n", kind);
    expect_grad(std::string(kind) + " d_in", loss, x.data(), n * d, dx.data());
    for (auto& p : enc.parameters()) {
      std::vector<double> analytic(p.grad, p.grad + p.size);
      expect_grad(std::string(kind) + " " + p.name, loss, p.value, p.size, analytic.data());
    }
  }
}

TEST_CASE("encoded block (shared encoders, 1-bit surrogate): every parameter and the input gradient") {
  for (const char* kind : {"diag", "lowrank:2", "mlp"}) {
    Rng rng(17);
    const auto cfg = tiny_config(true, RopeLayout::Interleaved);
    auto model = BasicLlama<double>::random_init(cfg, rng, 0.3);
    encode_block(model.block(1), EncoderSpec::parse(kind), 5);
    for (auto r : kAllLinearRoles) {
      auto* e = dynamic_cast<BasicEncodedLinear<double>*>(&model.block(1).linear(r));
      REQUIRE(e != nullptr);
      if (e->owns_encoder()) perturb(e->encoder(), rng);
    }
    const int B = 2, T = 4;
    const index_t n = B * T;
    auto x = randn(rng, n * cfg.dim), w = randn(rng, n * cfg.dim);
    std::vector<double> y(x.size());
    auto loss = [&] {
      BasicBlockActivations<double> a;
      model.block_forward_train(1, x.data(), B, T, y.data(), a);
      return dot(w, y);
    };
    BasicBlockActivations<double> acts;
    model.block_forward_train(1, x.data(), B, T, y.data(), acts);
    model.zero_grad();
    std::vector<double> dx(x.size(), 0.0);
    model.block_backward(1, acts, w.data(), dx.data());
    std::printf("encoded block, %s\n", kind);
    expect_grad(std::string(kind) + " block d_in", loss, x.data(), n * cfg.dim, dx.data());
    int encoder_tensors = 0;
    for (auto& p : model.block_parameters(1)) {
      std::vector<double> analytic(p.grad, p.grad + p.size);
      if (p.name.find("encoder.") != std::string::npos) ++encoder_tensors;
      expect_grad(p.name, loss, p.value, p.size, analytic.data(), 48);
    }
    CHECK(encoder_tensors == (std::string(kind) == "diag" ? 4 * 2 : 4 * 4));  // 4 encoders, listed once each
  }
}
