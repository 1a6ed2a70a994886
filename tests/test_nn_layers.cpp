// Forward passes of the nn/ layers against plain loop implementations written here from the formulas
// (attention with grouped heads, causal mask and a cache offset; RoPE as a complex rotation in both
// pairings; RMSNorm; dense products on both the GEMM and the few-rows path), the sampler's
// distributions, and the model's Linear plumbing (swapping a layer changes exactly what it should).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <complex>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "lowbit/core/rng.hpp"
#include "lowbit/nn/attention.hpp"
#include "lowbit/nn/dense_linear.hpp"
#include "lowbit/nn/model.hpp"
#include "lowbit/nn/rmsnorm.hpp"
#include "lowbit/nn/rope.hpp"
#include "lowbit/nn/sampler.hpp"

using namespace lowbit;
using namespace lowbit::nn;

namespace {

std::vector<float> randn(Rng& rng, index_t n) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

// Plain loop attention in double: out [B*Tq, qw], probs [B, H, Tq, Tk]; batch b's keys at b*kv_stride.
void attention_loop(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v, int B,
                    int Tq, int Tk, int offset, index_t kv_stride, const AttentionShape& s, std::vector<float>& out,
                    std::vector<float>& probs) {
  const index_t qw = s.q_width(), kvw = s.kv_width();
  out.assign(static_cast<std::size_t>(B * Tq * qw), 0.0f);
  probs.assign(static_cast<std::size_t>(B * s.n_heads * Tq * Tk), 0.0f);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Tq; ++i)
      for (int h = 0; h < s.n_heads; ++h) {
        const int g = h / (s.n_heads / s.n_kv_heads);
        const float* qi = &q[static_cast<std::size_t>((b * Tq + i) * qw + h * s.head_dim)];
        std::vector<double> score;
        for (int j = 0; j <= offset + i; ++j) {
          const float* kj = &k[static_cast<std::size_t>(b * kv_stride + j * kvw + g * s.head_dim)];
          double d = 0;
          for (int e = 0; e < s.head_dim; ++e) d += static_cast<double>(qi[e]) * kj[e];
          score.push_back(d / std::sqrt(static_cast<double>(s.head_dim)));
        }
        double mx = -1e300, z = 0;
        for (double x : score) mx = std::max(mx, x);
        for (double& x : score) z += (x = std::exp(x - mx));
        for (std::size_t j = 0; j < score.size(); ++j)
          probs[static_cast<std::size_t>(((b * s.n_heads + h) * Tq + i) * Tk) + j] = static_cast<float>(score[j] / z);
        for (int e = 0; e < s.head_dim; ++e) {
          double o = 0;
          for (std::size_t j = 0; j < score.size(); ++j)
            o += score[j] / z * v[b * kv_stride + static_cast<index_t>(j) * kvw + g * s.head_dim + e];
          out[static_cast<std::size_t>((b * Tq + i) * qw + h * s.head_dim + e)] = static_cast<float>(o);
        }
      }
}

}  // namespace

TEST_CASE("attention matches a loop implementation (GQA, causal, cache offset)") {
  Rng rng(1);
  const AttentionShape s{6, 2, 8};
  const int Tk = 9, Tq = 4, offset = 5;  // queries at positions 5..8 over 9 cached keys
  const index_t qw = s.q_width(), kvw = s.kv_width();
  auto q = randn(rng, Tq * qw), k = randn(rng, Tk * kvw), v = randn(rng, Tk * kvw);
  std::vector<float> out(static_cast<std::size_t>(Tq * qw)), ref, ref_probs;
  attention_forward(q.data(), k.data(), v.data(), out.data(), 1, Tq, Tk, offset, 0, s);
  attention_loop(q, k, v, 1, Tq, Tk, offset, 0, s, ref, ref_probs);
  CHECK(max_diff(out, ref) < 1e-5);
}

TEST_CASE("attention over several query tiles: batched prompt with probabilities, and a long cached suffix") {
  Rng rng(3);
  const AttentionShape s{4, 2, 16};
  const index_t qw = s.q_width(), kvw = s.kv_width();
  const int tile = static_cast<int>(kAttentionQueryTile);
  SUBCASE("batch of 2 prompts crossing tile boundaries, probs saved") {
    const int B = 2, T = 2 * tile + 7;
    auto q = randn(rng, B * T * qw), k = randn(rng, B * T * kvw), v = randn(rng, B * T * kvw);
    std::vector<float> out(static_cast<std::size_t>(B * T * qw)), probs(static_cast<std::size_t>(B * s.n_heads * T * T), 7.0f);
    std::vector<float> ref, ref_probs;
    attention_forward(q.data(), k.data(), v.data(), out.data(), B, T, T, 0, T * kvw, s, probs.data());
    attention_loop(q, k, v, B, T, T, 0, T * kvw, s, ref, ref_probs);
    CHECK(max_diff(out, ref) < 1e-5);
    CHECK(max_diff(probs, ref_probs) < 1e-6);  // includes the zeros above the diagonal
  }
  SUBCASE("queries at an offset into a cache, more than one tile of them") {
    const int Tq = tile + 3, offset = 40, Tk = offset + Tq + 5;  // cache longer than needed: unused tail
    auto q = randn(rng, Tq * qw), k = randn(rng, Tk * kvw), v = randn(rng, Tk * kvw);
    std::vector<float> out(static_cast<std::size_t>(Tq * qw)), ref, ref_probs;
    attention_forward(q.data(), k.data(), v.data(), out.data(), 1, Tq, Tk, offset, 0, s);
    attention_loop(q, k, v, 1, Tq, Tk, offset, 0, s, ref, ref_probs);
    CHECK(max_diff(out, ref) < 1e-5);
  }
}

TEST_CASE("rope is a complex rotation by pos * theta^(-2k/d), in both pairings") {
  Rng rng(2);
  const int hd = 8, heads = 2, pos = 13;
  const double theta = 500000.0;
  auto x = randn(rng, heads * hd);
  for (auto layout : {RopeLayout::Interleaved, RopeLayout::HalfSplit}) {
    RopeTable<float> table(hd, theta, layout, 32);
    auto y = x;
    table.rotate(y.data(), heads, pos);
    for (int h = 0; h < heads; ++h)
      for (int k = 0; k < hd / 2; ++k) {
        const int a = layout == RopeLayout::Interleaved ? 2 * k : k;
        const int b = layout == RopeLayout::Interleaved ? 2 * k + 1 : k + hd / 2;
        const std::complex<double> z(x[h * hd + a], x[h * hd + b]);
        const auto r = z * std::polar(1.0, pos * std::pow(theta, -2.0 * k / hd));
        CHECK(y[h * hd + a] == doctest::Approx(r.real()).epsilon(1e-5));
        CHECK(y[h * hd + b] == doctest::Approx(r.imag()).epsilon(1e-5));
      }
    table.rotate(y.data(), heads, pos, true);
    CHECK(max_diff(x, y) < 1e-5);
  }
}

TEST_CASE("rmsnorm and dense products match loops") {
  Rng rng(3);
  const index_t n = 3, dim = 10;
  auto x = randn(rng, n * dim), g = randn(rng, dim);
  std::vector<float> y(x.size());
  rmsnorm_forward(x.data(), g.data(), n, dim, 1e-5f, y.data());
  for (index_t r = 0; r < n; ++r) {
    double ss = 0;
    for (index_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1 / std::sqrt(ss / dim + 1e-5);
    for (index_t i = 0; i < dim; ++i) CHECK(y[r * dim + i] == doctest::Approx(g[i] * x[r * dim + i] * inv).epsilon(1e-5));
  }
  for (index_t rows : {1, 3, 17}) {  // few-rows (feature-parallel) path and GEMM path
    const index_t in = 33, out = 300;
    DenseLinear lin(out, in, randn(rng, out * in));
    auto X = randn(rng, rows * in);
    std::vector<float> Y(static_cast<std::size_t>(rows * out)), ref(Y.size());
    lin.forward(MatrixView<const float>(X.data(), rows, in), MatrixView<float>(Y.data(), rows, out));
    for (index_t r = 0; r < rows; ++r)
      for (index_t o = 0; o < out; ++o) {
        double d = 0;
        for (index_t i = 0; i < in; ++i) d += static_cast<double>(X[r * in + i]) * lin.weight()[o * in + i];
        ref[static_cast<std::size_t>(r * out + o)] = static_cast<float>(d);
      }
    CHECK(max_diff(Y, ref) < 1e-4);
  }
}

TEST_CASE("sampler: greedy, reproducible, temperature and top-p distributions") {
  std::vector<float> logits{1.0f, 3.0f, 2.0f, -1.0f, 2.5f};
  Sampler greedy(5, 0.0f, 0.9f, 1);
  CHECK(greedy.sample(logits.data()) == 1);

  Sampler a(5, 0.7f, 1.0f, 42), b(5, 0.7f, 1.0f, 42);
  for (int i = 0; i < 50; ++i) CHECK(a.sample(logits.data()) == b.sample(logits.data()));

  // empirical frequencies follow softmax(logits / T)
  const float T = 1.5f;
  Sampler s(5, T, 1.0f, 7);
  std::vector<double> p(5);
  double z = 0;
  for (int i = 0; i < 5; ++i) z += (p[static_cast<std::size_t>(i)] = std::exp(logits[static_cast<std::size_t>(i)] / T));
  std::vector<int> count(5, 0);
  const int draws = 40000;
  for (int i = 0; i < draws; ++i) ++count[static_cast<std::size_t>(s.sample(logits.data()))];
  for (int i = 0; i < 5; ++i) {
    const double want = p[static_cast<std::size_t>(i)] / z;
    const double sd = std::sqrt(want * (1 - want) / draws);
    CHECK(std::abs(count[static_cast<std::size_t>(i)] / double(draws) - want) < 5 * sd + 1e-9);
  }

  // top-p 0.6 at T = 1: probabilities sorted are .48 (id 1), .29 (id 4), ... → nucleus {1, 4}
  Sampler nucleus(5, 1.0f, 0.6f, 9);
  std::map<int, int> seen;
  for (int i = 0; i < 5000; ++i) ++seen[nucleus.sample(logits.data())];
  CHECK(seen.size() == 2);
  CHECK(seen.count(1) == 1);
  CHECK(seen.count(4) == 1);
  const double share = seen[1] / 5000.0;  // renormalized: e^3 / (e^3 + e^2.5) = 0.6225
  CHECK(std::abs(share - 0.6225) < 0.03);
  // a nucleus smaller than any single token keeps the most likely one
  Sampler tiny(5, 1.0f, 1e-4f, 3);
  for (int i = 0; i < 20; ++i) CHECK(tiny.sample(logits.data()) == 1);
  Sampler tiny_flat(1000, 1.0f, 1e-4f, 3);  // flat logits: cutoff above every probability
  std::vector<float> flat(1000, 0.0f);
  CHECK(tiny_flat.sample(flat.data()) == 0);
}

namespace {

// A Linear that wraps another and scales its output: stands in for a quantized layer.
class ScaledLinear final : public Linear {
 public:
  ScaledLinear(const Linear& base, float scale) : scale_(scale), out_(base.out_features()), in_(base.in_features()) {
    w_.resize(static_cast<std::size_t>(out_ * in_));
    base.dequantize(MatrixView<float>(w_.data(), out_, in_));
  }
  index_t in_features() const override { return in_; }
  index_t out_features() const override { return out_; }
  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    eigen_map(Y).noalias() = scale_ * (eigen_map(X) * eigen_map<float>(w_.data(), out_, in_).transpose());
  }
  void backward(MatrixView<const float>, MatrixView<const float> dY, MatrixView<float> dX) override {
    eigen_map(dX).noalias() += scale_ * (eigen_map(dY) * eigen_map<float>(w_.data(), out_, in_));
  }
  void dequantize(MatrixView<float> W) const override {
    for (index_t r = 0; r < out_; ++r)
      for (index_t c = 0; c < in_; ++c) W.row(r)[c] = scale_ * w_[static_cast<std::size_t>(r * in_ + c)];
  }
  std::size_t bytes() const override { return w_.size() * 4 + 4; }
  std::string format() const override { return "scaled"; }

 private:
  float scale_;
  index_t out_, in_;
  std::vector<float> w_;
};

}  // namespace

TEST_CASE("model: linears are swappable through the Linear interface, taps and parameters") {
  ModelConfig c;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 1;
  c.vocab_size = 40;
  c.max_seq_len = 16;
  c.tied_embeddings = false;
  Rng rng(5);
  auto m = Llama::random_init(c, rng, 0.2);
  std::vector<std::int32_t> tokens{3, 9, 1, 30, 7, 7};
  std::vector<float> base(tokens.size() * 40), other(base.size());
  m.forward(tokens.data(), 2, 3, base.data());

  // same weights through another Linear implementation: same logits
  m.set_linear(1, LinearRole::Down, std::make_unique<ScaledLinear>(m.linear(1, LinearRole::Down), 1.0f));
  m.forward(tokens.data(), 2, 3, other.data());
  CHECK(max_diff(base, other) < 1e-5);
  CHECK(m.linear(1, LinearRole::Down).format() == "scaled");
  // a different effective weight: different logits
  m.set_linear(0, LinearRole::V, std::make_unique<ScaledLinear>(m.linear(0, LinearRole::V), 2.0f));
  m.forward(tokens.data(), 2, 3, other.data());
  CHECK(max_diff(base, other) > 1e-3);

  // taps hold the inputs of the four linear groups, and block_forward reproduces forward
  std::vector<float> x(tokens.size() * 32);
  m.embed(tokens.data(), 6, x.data());
  BlockTaps taps;
  m.block_forward(0, x.data(), 2, 3, &taps);
  CHECK(taps.attn_in.size() == 6u * 32);
  CHECK(taps.attn_out.size() == 6u * 32);
  CHECK(taps.ffn_in.size() == 6u * 32);
  CHECK(taps.ffn_hidden.size() == 6u * 48);
  m.block_forward(1, x.data(), 2, 3);
  std::vector<float> logits(base.size());
  m.head_forward(x.data(), 6, logits.data());
  CHECK(max_diff(logits, other) < 1e-5);

  // canonical parameter names; the swapped-in layer has no trainable parameters of its own
  auto params = m.parameters();
  std::vector<std::string> names;
  for (auto& p : params) names.push_back(p.name);
  CHECK(names.front() == "tok_embeddings.weight");
  CHECK(names.back() == "output.weight");
  CHECK(std::find(names.begin(), names.end(), "layers.1.feed_forward.w2.weight") == names.end());
  CHECK(std::find(names.begin(), names.end(), "layers.1.feed_forward.w3.weight") != names.end());
  CHECK(std::find(names.begin(), names.end(), "layers.0.ffn_norm.weight") != names.end());
}
