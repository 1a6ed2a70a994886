// Straight-through estimators and the parametric-Heaviside surrogate: the surrogate gradients must equal
// finite differences of the smooth function they stand for (asinh for the AQE form, arctan for the
// exact form), including the β and α gradients.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/train/ste.hpp>

using namespace lowbit;
using namespace lowbit::train;

TEST_CASE("identity and clipped STE") {
  std::vector<float> x = {-2.0f, -0.5f, 0.0f, 0.7f, 1.5f}, dout = {1, 2, 3, 4, 5}, din(5, 0.0f);
  ste_identity_backward(dout.data(), din.data(), 5);
  CHECK(din == dout);
  std::vector<float> clipped(5, 0.0f);
  ste_clipped_backward(x.data(), dout.data(), clipped.data(), 5, -1.0f, 1.0f);
  CHECK(clipped == std::vector<float>{0, 2, 3, 4, 0});
}

TEST_CASE("Heaviside surrogate gradients match finite differences of the smooth surrogate") {
  Rng rng(7);
  const index_t rows = 3, channels = 4;
  std::vector<double> y(rows * channels), alpha(channels), beta(channels), dout(rows * channels);
  for (auto& v : y) v = rng.normal();
  for (auto& v : alpha) v = 0.5 + rng.uniform();
  for (auto& v : beta) v = 0.3 * rng.normal();
  for (auto& v : dout) v = rng.normal();
  for (auto surrogate : {HeavisideSurrogate::AqeSqrt, HeavisideSurrogate::ExactArctan}) {
    ParametricHeaviside<double> h;
    h.k = 4.0;
    h.surrogate = surrogate;
    h.alpha_grad = HeavisideAlphaGrad::Smooth;
    // Smooth loss L = Σ dout · α·smooth(y − β): its exact gradients are what backward() must produce.
    auto loss = [&] {
      double s = 0;
      for (index_t r = 0; r < rows; ++r)
        for (index_t c = 0; c < channels; ++c) s += dout[r * channels + c] * alpha[c] * h.smooth(y[r * channels + c] - beta[c]);
      return s;
    };
    std::vector<double> dy(y.size(), 0.0), dalpha(channels, 0.0), dbeta(channels, 0.0);
    h.backward(MatrixView<const double>(y.data(), rows, channels), alpha.data(), beta.data(),
               MatrixView<const double>(dout.data(), rows, channels), MatrixView<double>(dy.data(), rows, channels),
               dalpha.data(), dbeta.data());
    auto check = [&](std::vector<double>& x, const std::vector<double>& analytic, bool smooth_alpha) {
      const double eps = 1e-6;
      for (std::size_t i = 0; i < x.size(); ++i) {
        const double saved = x[i];
        x[i] = saved + eps;
        const double up = loss();
        x[i] = saved - eps;
        const double down = loss();
        x[i] = saved;
        double numeric = (up - down) / (2 * eps);
        // ∂L/∂α of the smooth loss is Σ dout·smooth(u); the Smooth α-gradient option is Σ dout·(2/π)atan(k u),
        // which equals it for the arctan surrogate only.
        if (smooth_alpha && surrogate == HeavisideSurrogate::AqeSqrt) continue;
        CHECK(analytic[i] == doctest::Approx(numeric).epsilon(1e-7));
      }
    };
    check(y, dy, false);
    check(beta, dbeta, false);
    check(alpha, dalpha, true);
  }
}

TEST_CASE("Heaviside forward, AQE slope value, and the sign alpha gradient") {
  ParametricHeaviside<float> h;  // k = 4, AqeSqrt, Sign
  std::vector<float> y = {-1.0f, 0.25f, 2.0f}, alpha = {2.0f, 3.0f, 0.5f}, beta = {0.0f, 0.5f, 1.0f}, out(3);
  h.forward(MatrixView<const float>(y.data(), 1, 3), alpha.data(), beta.data(), MatrixView<float>(out.data(), 1, 3));
  CHECK(out == std::vector<float>{-2.0f, -3.0f, 0.5f});
  std::vector<float> dout = {1, 1, 1}, dy(3, 0.0f), da(3, 0.0f), db(3, 0.0f);
  h.backward(MatrixView<const float>(y.data(), 1, 3), alpha.data(), beta.data(), MatrixView<const float>(dout.data(), 1, 3),
             MatrixView<float>(dy.data(), 1, 3), da.data(), db.data());
  // u = -1: α·(2/π)·k/sqrt(16+1) = 2·0.63662·4/4.1231 = 1.23524
  CHECK(dy[0] == doctest::Approx(2.0 * 0.6366197723675814 * 4.0 / std::sqrt(17.0)).epsilon(1e-6));
  CHECK(db[0] == doctest::Approx(-dy[0]));
  CHECK(da == std::vector<float>{-1.0f, -1.0f, 1.0f});
}
