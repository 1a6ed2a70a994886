// Losses: each analytic gradient against central finite differences of the loss itself, in double, and
// the loss values against direct (materialized-softmax) formulas.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/train/losses.hpp>

using namespace lowbit;
using namespace lowbit::train;

namespace {

std::vector<double> random_logits(Rng& rng, index_t n, double scale) {
  std::vector<double> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

// Max relative error between the analytic gradient and central differences of f.
template <class F>
double fd_relative_error(std::vector<double>& x, const std::vector<double>& analytic, F&& f, double h = 1e-5) {
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double up = f();
    x[i] = saved - h;
    const double down = f();
    x[i] = saved;
    const double numeric = (up - down) / (2 * h);
    const double err = std::abs(numeric - analytic[i]) / std::max(1e-6, std::abs(numeric) + std::abs(analytic[i]));
    worst = std::max(worst, err);
  }
  return worst;
}

std::vector<double> softmax_row(const double* x, index_t n) {
  double m = x[0];
  for (index_t j = 1; j < n; ++j) m = std::max(m, x[j]);
  double s = 0;
  for (index_t j = 0; j < n; ++j) s += std::exp(x[j] - m);
  std::vector<double> p(static_cast<std::size_t>(n));
  for (index_t j = 0; j < n; ++j) p[static_cast<std::size_t>(j)] = std::exp(x[j] - m) / s;
  return p;
}

}  // namespace

// Tolerance: central differences with h = 1e-5 in double have truncation error ~h² · f''' ≈ 1e-10 and
// rounding error ~1e-16/h ≈ 1e-11 relative to O(1) gradients, so 1e-6 leaves a wide margin while any
// wrong term (a missing −KL, a sign) gives errors of order 1.
TEST_CASE("cross-entropy gradient matches finite differences and ignores masked rows") {
  Rng rng(1);
  const index_t n = 5, vocab = 7;
  auto logits = random_logits(rng, n * vocab, 2.0);
  std::vector<std::int32_t> targets = {3, -1, 0, 6, 2};
  std::vector<double> grad(logits.size());
  auto view = MatrixView<const double>(logits.data(), n, vocab);
  const double loss = cross_entropy(view, targets.data(), MatrixView<double>(grad.data(), n, vocab), 1.0);
  // direct formula
  double expect = 0;
  for (index_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    expect -= std::log(softmax_row(&logits[r * vocab], vocab)[targets[r]]);
  }
  CHECK(loss == doctest::Approx(expect / 4).epsilon(1e-12));
  for (index_t j = 0; j < vocab; ++j) CHECK(grad[vocab + j] == 0.0);
  auto f = [&] { return cross_entropy(MatrixView<const double>(logits.data(), n, vocab), targets.data()); };
  CHECK(fd_relative_error(logits, grad, f) < 1e-6);
}

TEST_CASE("log-sum-exp is stable for huge logits") {
  std::vector<float> x = {1000.0f, 1000.0f, -1000.0f};
  CHECK(log_sum_exp(x.data(), 3) == doctest::Approx(1000.0 + std::log(2.0)));
  std::vector<std::int32_t> t = {0};
  const double ce = cross_entropy(MatrixView<const float>(x.data(), 1, 3), t.data());
  CHECK(ce == doctest::Approx(std::log(2.0)));
}

TEST_CASE("forward KL, reverse KL and CAKLD gradients match finite differences") {
  Rng rng(2);
  const index_t n = 4, vocab = 9;
  auto student = random_logits(rng, n * vocab, 1.5);
  const auto teacher = random_logits(rng, n * vocab, 3.0);
  auto tv = MatrixView<const double>(teacher.data(), n, vocab);
  const double beta = teacher_top1_probability(tv).mean();
  CHECK(beta > 0.0);
  CHECK(beta < 1.0);
  for (DistillLoss kind : {DistillLoss::ForwardKL, DistillLoss::ReverseKL, DistillLoss::CAKLD}) {
    CAPTURE(static_cast<int>(kind));
    std::vector<double> grad(student.size());
    const double loss = distill_loss(kind, MatrixView<const double>(student.data(), n, vocab), tv, beta,
                                     MatrixView<double>(grad.data(), n, vocab), 1.0);
    // direct formula with materialized distributions
    double fkl = 0, rkl = 0;
    for (index_t r = 0; r < n; ++r) {
      auto ps = softmax_row(&student[r * vocab], vocab), pt = softmax_row(&teacher[r * vocab], vocab);
      for (index_t j = 0; j < vocab; ++j) {
        fkl += pt[j] * std::log(pt[j] / ps[j]);
        rkl += ps[j] * std::log(ps[j] / pt[j]);
      }
    }
    fkl /= n;
    rkl /= n;
    const double expect = kind == DistillLoss::ForwardKL ? fkl : kind == DistillLoss::ReverseKL ? rkl
                                                                                                 : beta * rkl + (1 - beta) * fkl;
    CHECK(loss == doctest::Approx(expect).epsilon(1e-12));
    CHECK(loss > 0.0);
    auto f = [&] { return distill_loss(kind, MatrixView<const double>(student.data(), n, vocab), tv, beta); };
    CHECK(fd_relative_error(student, grad, f) < 1e-6);
  }
  // KL of a distribution with itself is zero, with zero gradient.
  std::vector<double> grad(teacher.size());
  CHECK(std::abs(cakld(tv, tv, beta, MatrixView<double>(grad.data(), n, vocab))) < 1e-14);
  for (double g : grad) CHECK(std::abs(g) < 1e-14);
}

TEST_CASE("teacher top-1 probability of a known distribution") {
  // softmax of (log 3, log 1) = (0.75, 0.25); one-hot-ish row gives ~1.
  std::vector<double> t = {std::log(3.0), 0.0, 50.0, 0.0};
  auto p = teacher_top1_probability(MatrixView<const double>(t.data(), 2, 2));
  CHECK(p.rows == 2);
  CHECK(p.mean() == doctest::Approx((0.75 + 1.0) / 2).epsilon(1e-12));
}

TEST_CASE("MSE value and both input gradients match finite differences") {
  Rng rng(3);
  auto x = random_logits(rng, 40000, 1.0);  // more than one parallel chunk
  auto y = random_logits(rng, 40000, 1.0);
  std::vector<double> dx(x.size()), dy(y.size());
  const double loss = mse(x.data(), y.data(), 40000, dx.data(), dy.data(), 1.0);
  double expect = 0;
  for (std::size_t i = 0; i < x.size(); ++i) expect += (x[i] - y[i]) * (x[i] - y[i]);
  CHECK(loss == doctest::Approx(expect / 40000).epsilon(1e-12));
  std::vector<double> xs(x.begin(), x.begin() + 20), ys(y.begin(), y.begin() + 20), gx(20), gy(20);
  mse(xs.data(), ys.data(), 20, gx.data(), gy.data(), 1.0);
  CHECK(fd_relative_error(xs, gx, [&] { return mse(xs.data(), ys.data(), 20); }) < 1e-6);
  CHECK(fd_relative_error(ys, gy, [&] { return mse(xs.data(), ys.data(), 20); }) < 1e-6);
}

TEST_CASE("float losses agree with double") {
  Rng rng(4);
  const index_t n = 6, vocab = 50;
  auto s = random_logits(rng, n * vocab, 2.0), t = random_logits(rng, n * vocab, 2.0);
  std::vector<float> sf(s.begin(), s.end()), tf(t.begin(), t.end());
  const double d = cakld(MatrixView<const double>(s.data(), n, vocab), MatrixView<const double>(t.data(), n, vocab), 0.3);
  const double f = cakld(MatrixView<const float>(sf.data(), n, vocab), MatrixView<const float>(tf.data(), n, vocab), 0.3);
  CHECK(f == doctest::Approx(d).epsilon(1e-5));
}

TEST_CASE("mismatched shapes and bad targets raise lowbit::Error") {
  std::vector<float> a(12), b(10);
  CHECK_THROWS_AS(forward_kl(MatrixView<const float>(a.data(), 3, 4), MatrixView<const float>(b.data(), 2, 5)), Error);
  std::vector<std::int32_t> t = {0, 9, 1};
  CHECK_THROWS_AS(cross_entropy(MatrixView<const float>(a.data(), 3, 4), t.data()), Error);
}
