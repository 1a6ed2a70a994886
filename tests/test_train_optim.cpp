// AdamW against hand-computed steps and an independent double-precision reference (with AMSGrad and
// decoupled weight decay), state save/restore continuing identically, gradient clipping and schedules.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/train/adamw.hpp>
#include <lowbit/train/clip.hpp>
#include <lowbit/train/schedule.hpp>

using namespace lowbit;
using namespace lowbit::train;

TEST_CASE("AdamW first two steps equal the hand-computed values") {
  std::vector<float> w = {1.0f}, g = {0.5f};
  AdamWOptions o;
  o.lr = 0.1f;
  o.weight_decay = 0.01f;
  AdamW opt({nn::Parameter{"w.weight", w.data(), g.data(), 1}}, o);
  opt.step();
  // m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25: w = 1·(1 − 0.001) − 0.1·0.5/(0.5 + 1e-8) = 0.899
  CHECK(w[0] == doctest::Approx(0.899).epsilon(1e-6));
  g[0] = -0.25f;
  opt.step();
  // m = 0.02, v = 0.00031225, bc1 = 0.19, bc2 = 0.001999:
  // w = 0.899·0.999 − 0.1·(0.02/0.19)/(sqrt(0.00031225/0.001999) + 1e-8) = 0.898101 − 0.0266334 = 0.8714676
  CHECK(w[0] == doctest::Approx(0.8714676).epsilon(2e-6));
}

namespace {
// Straightforward per-element AdamW/AMSGrad in double (PyTorch's documented algorithm).
struct ReferenceAdamW {
  double lr, b1, b2, eps, wd;
  bool amsgrad;
  std::vector<double> m, v, vmax;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g, bool decay) {
    if (m.empty()) m.assign(p.size(), 0), v.assign(p.size(), 0), vmax.assign(p.size(), 0);
    ++t;
    for (std::size_t i = 0; i < p.size(); ++i) {
      if (decay) p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(b1, t));
      double second = v[i];
      if (amsgrad) second = vmax[i] = std::max(vmax[i], v[i]);
      const double denom = std::sqrt(second / (1 - std::pow(b2, t))) + eps;
      p[i] -= lr * mhat / denom;
    }
  }
};
}  // namespace

TEST_CASE("AdamW with AMSGrad and a decay filter follows the reference for many steps") {
  Rng rng(11);
  const int n = 50;
  std::vector<float> w(n), gain(n), gw(n), gg(n);
  for (auto& x : w) x = static_cast<float>(rng.normal());
  for (auto& x : gain) x = 1.0f;
  std::vector<double> rw(w.begin(), w.end()), rg(gain.begin(), gain.end());
  AdamWOptions o;
  o.lr = 0.01f;
  o.beta2 = 0.95f;
  o.weight_decay = 0.1f;
  o.amsgrad = true;
  o.decays = is_decayed_weight;
  AdamW opt({{"layers.0.attention.wq.weight", w.data(), gw.data(), n}, {"layers.0.ffn_norm.weight", gain.data(), gg.data(), n}}, o);
  ReferenceAdamW ref_w{0.01, 0.9, 0.95, 1e-8, 0.1, true, {}, {}, {}}, ref_g = ref_w;
  for (int step = 0; step < 30; ++step) {
    // gradients that shrink over time so v decreases and AMSGrad's max matters
    const double size = step < 10 ? 1.0 : 0.05;
    std::vector<double> dw(n), dg(n);
    for (int i = 0; i < n; ++i) {
      dw[i] = size * rng.normal();
      dg[i] = size * rng.normal();
      gw[i] = static_cast<float>(dw[i]);
      gg[i] = static_cast<float>(dg[i]);
    }
    // ref uses the float-rounded gradients
    for (int i = 0; i < n; ++i) dw[i] = gw[i], dg[i] = gg[i];
    opt.step();
    ref_w.step(rw, dw, true);
    ref_g.step(rg, dg, false);
  }
  double worst = 0;
  for (int i = 0; i < n; ++i) {
    worst = std::max(worst, std::abs(w[i] - rw[i]));
    worst = std::max(worst, std::abs(gain[i] - rg[i]));
  }
  CHECK(worst < 2e-5);
  CHECK(opt.step_count() == 30);
  // AMSGrad's running maximum of v matches the reference's
  CHECK(std::abs(opt.state(0).v_max[0] - static_cast<float>(ref_w.vmax[0])) < 1e-6);
}

TEST_CASE("AdamW state round-trips through write/read and continues identically") {
  Rng rng(5);
  const int n = 33;
  std::vector<float> w(n), g(n);
  for (auto& x : w) x = static_cast<float>(rng.normal());
  AdamWOptions o;
  o.amsgrad = true;
  o.weight_decay = 0.05f;
  AdamW a({{"p", w.data(), g.data(), n}}, o);
  auto fill_grad = [&](int step) {
    Rng r(100 + step);
    for (auto& x : g) x = static_cast<float>(r.normal());
  };
  for (int s = 0; s < 5; ++s) fill_grad(s), a.step(0.01f);
  std::stringstream buffer;
  a.write(buffer);
  std::vector<float> w2 = w;
  AdamW b({{"p", w2.data(), g.data(), n}}, o);
  b.read(buffer, "memory");
  CHECK(b.step_count() == 5);
  for (int s = 5; s < 9; ++s) {
    fill_grad(s);
    a.step(0.01f);
    b.step(0.01f);
  }
  CHECK(w == w2);
  // a state for a different parameter set is refused
  std::stringstream again;
  a.write(again);
  AdamW c({{"q", w2.data(), g.data(), n}}, o);
  CHECK_THROWS_AS(c.read(again, "memory"), Error);
}

TEST_CASE("global-norm clipping") {
  std::vector<float> a = {3.0f, 0.0f}, ga = {3.0f, 0.0f}, b = {0.0f}, gb = {4.0f};
  std::vector<nn::Parameter> params = {{"a", a.data(), ga.data(), 2}, {"b", b.data(), gb.data(), 1}};
  CHECK(global_grad_norm(params) == doctest::Approx(5.0));
  CHECK(clip_grad_norm(params, 10.0) == doctest::Approx(5.0));
  CHECK(ga[0] == 3.0f);  // below the threshold: unchanged
  CHECK(clip_grad_norm(params, 1.0) == doctest::Approx(5.0));
  CHECK(global_grad_norm(params) == doctest::Approx(1.0).epsilon(1e-5));
  CHECK(ga[0] / gb[0] == doctest::Approx(0.75));
}

TEST_CASE("learning-rate schedules") {
  LrSchedule s;
  s.peak_lr = 1.0f;
  s.warmup_steps = 10;
  s.total_steps = 110;
  s.min_ratio = 0.1f;
  s.kind = ScheduleKind::Cosine;
  CHECK(s.lr(0) == doctest::Approx(0.1));
  CHECK(s.lr(4) == doctest::Approx(0.5));
  CHECK(s.lr(9) == doctest::Approx(1.0));
  CHECK(s.lr(10) == doctest::Approx(1.0));
  CHECK(s.lr(60) == doctest::Approx(0.55));  // halfway: min + (peak − min)/2
  CHECK(s.lr(110) == doctest::Approx(0.1));
  CHECK(s.lr(500) == doctest::Approx(0.1));
  s.kind = ScheduleKind::Linear;
  CHECK(s.lr(35) == doctest::Approx(1.0 - 0.9 * 0.25));
  s.kind = ScheduleKind::Constant;
  CHECK(s.lr(100) == doctest::Approx(1.0));
  CHECK(parse_schedule_kind("cosine") == ScheduleKind::Cosine);
  CHECK_THROWS_AS(parse_schedule_kind("step"), Error);
}
