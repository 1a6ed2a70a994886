// BCQ calibration (calib/bcq.hpp, calib/bcq_methods.hpp): ALTERNATING never increases its objective, its
// least-squares step against a brute-force check, the unification with the uniform grid (bit for bit in
// the BCQ arithmetic, and in the stored fp16 form wherever the offset is an fp16 number), the greedy fit,
// the clip search, and the methods' capabilities and errors.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "lowbit/calib/bcq_methods.hpp"
#include "lowbit/calib/group_methods.hpp"
#include "lowbit/core/rng.hpp"

using namespace lowbit;

namespace {

std::vector<float> heavy_tailed(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(n));
  for (auto& v : w) {
    v = static_cast<float>(0.02 * rng.normal() + 0.003);
    if (rng.uniform() < 0.02) v *= 6.0f;
  }
  return w;
}

std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

template <int Bits>
void check_alternating_monotone(const float* h, std::uint64_t seed) {
  const index_t n = 128;
  const auto w = heavy_tailed(n, seed);
  std::vector<std::uint32_t> codes(n);
  auto p = bcq_greedy_fit<Bits>(w.data(), n, codes.data());
  std::vector<double> trace;
  calib::bcq_alternate<Bits>(w.data(), h, n, 20, p, codes.data(), &trace);
  REQUIRE(trace.size() == 21u);
  for (std::size_t t = 1; t < trace.size(); ++t) CHECK(trace[t] <= trace[t - 1]);
  if (Bits > 1) CHECK(trace.back() < trace.front());  // the greedy fit is not a fixed point
  for (int i = 0; i + 1 < Bits; ++i) CHECK(p.alpha[i] <= p.alpha[i + 1]);
  for (int i = 0; i < Bits; ++i) CHECK(p.alpha[i] >= 0.0f);
  // the final codes are the nearest levels of the final parameters
  for (index_t c = 0; c < n; ++c) CHECK(codes[c] == bcq_encode<Bits>(w[c], p));
}

}  // namespace

TEST_CASE("bcq alternating: the objective never increases, unweighted and Hessian-weighted") {
  std::vector<float> h(128);
  Rng rng(7);
  for (auto& v : h) v = static_cast<float>(0.1 + rng.uniform() * 3.0);
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    check_alternating_monotone<1>(nullptr, seed);
    check_alternating_monotone<2>(nullptr, seed);
    check_alternating_monotone<3>(nullptr, seed);
    check_alternating_monotone<4>(nullptr, seed);
    check_alternating_monotone<2>(h.data(), seed);
    check_alternating_monotone<3>(h.data(), seed);
  }
}

TEST_CASE("bcq least squares: no perturbation of the solved scales lowers the weighted error") {
  const index_t n = 96;
  const auto w = heavy_tailed(n, 11);
  std::vector<float> h(n);
  for (index_t c = 0; c < n; ++c) h[c] = 0.5f + static_cast<float>(c % 7);
  std::vector<std::uint32_t> codes(n);
  bcq_greedy_fit<3>(w.data(), n, codes.data());
  BCQParams<3> p;
  REQUIRE(calib::bcq_solve_scales<3>(w.data(), h.data(), n, codes.data(), p));
  const double best = calib::bcq_group_objective<3>(w.data(), h.data(), n, p, codes.data());
  for (int k = 0; k < 4; ++k)
    for (float d : {-1e-4f, 1e-4f}) {
      BCQParams<3> q = p;
      if (k < 3) q.alpha[k] += d;
      else q.offset += d;
      CHECK(calib::bcq_group_objective<3>(w.data(), h.data(), n, q, codes.data()) >= best);
    }
}

TEST_CASE("bcq canonical form: positive ascending scales with the same levels") {
  BCQParams<3> p;
  p.alpha[0] = 0.3f;
  p.alpha[1] = -0.1f;
  p.alpha[2] = 0.2f;
  p.offset = 0.05f;
  std::vector<std::uint32_t> codes = {0, 1, 2, 3, 4, 5, 6, 7};
  std::vector<float> before;
  for (auto c : codes) before.push_back(bcq_decode<3>(c, p));
  bcq_canonicalize<3>(p, codes.data(), 8);
  CHECK(p.alpha[0] == 0.1f);
  CHECK(p.alpha[1] == 0.2f);
  CHECK(p.alpha[2] == 0.3f);
  for (std::size_t i = 0; i < codes.size(); ++i) CHECK(bcq_decode<3>(codes[i], p) == doctest::Approx(before[i]).epsilon(1e-6));
}

TEST_CASE("bcq unification: on the uniform grid BCQ decodes exactly as Uniform") {
  Rng rng(3);
  int exact_stored = 0, total = 0;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> w(128);
    for (auto& v : w) v = static_cast<float>(0.05 * rng.normal() + 0.01 * (trial % 5 - 2));
    const float lo = *std::min_element(w.begin(), w.end()), hi = *std::max_element(w.begin(), w.end());
    const auto u = uniform_fit<Uniform<3, 128>>(lo, hi);
    const float scale = to_float(u.scale);
    const auto b = bcq_from_uniform<3>(scale, u.zero);
    const auto stored = bcq_round(b);
    const bool offset_exact = stored.offset == b.offset;
    exact_stored += offset_exact;
    ++total;
    for (std::uint32_t q = 0; q < 8; ++q) {
      const float uw = uniform_decode(q, u);
      CHECK(float_bits(bcq_decode<3>(q, b)) == float_bits(uw));  // the BCQ arithmetic, bit for bit
      if (offset_exact) {
        CHECK(float_bits(bcq_decode<3>(q, stored)) == float_bits(uw));  // stored fp16, bit for bit
      } else {
        // the stored offset is the fp16 rounding of the exact one: every level moves by that much
        CHECK(std::fabs(bcq_decode<3>(q, stored) - uw) <= std::fabs(stored.offset - b.offset) * 1.0001f + 1e-12f);
      }
      // and the codes agree: the uniform code of w is the BCQ code of w on this grid
    }
    for (float v : w)
      if (offset_exact) CHECK(bcq_encode<3>(uniform_decode(uniform_encode(v, u, 7), u), stored) == uniform_encode(v, u, 7));
  }
  MESSAGE("uniform groups whose BCQ offset is an fp16 number: " << exact_stored << " of " << total);
  CHECK(exact_stored > 0);
}

TEST_CASE("bcq greedy fit: one bit is the optimal sign fit about the mean, more bits only lower the error") {
  const index_t n = 128;
  const auto w = heavy_tailed(n, 5);
  double mean = 0;
  for (float v : w) mean += v;
  mean /= n;
  double mad = 0;
  for (float v : w) mad += std::fabs(v - mean);
  mad /= n;
  std::vector<std::uint32_t> codes(n);
  const auto p1 = bcq_greedy_fit<1>(w.data(), n, codes.data());
  CHECK(p1.alpha[0] == doctest::Approx(mad).epsilon(1e-3));
  CHECK(p1.offset == doctest::Approx(mean).epsilon(1e-3));
  double prev = INFINITY;
  const auto err = [&]<int B>() {
    std::vector<std::uint32_t> c(n);
    const auto p = bcq_greedy_fit<B>(w.data(), n, c.data());
    return calib::bcq_group_objective<B>(w.data(), nullptr, n, p, c.data());
  };
  for (double e : {err.template operator()<1>(), err.template operator()<2>(), err.template operator()<3>(),
                   err.template operator()<4>()}) {
    CHECK(e < prev);
    prev = e;
  }
}

TEST_CASE("bcq uniform init: no clip search is the min-max uniform grid, the search never loses in L_p") {
  const index_t n = 128;
  const auto w = heavy_tailed(n, 9);
  std::vector<std::uint32_t> codes(n);
  const auto p = calib::bcq_uniform_init<3>(w.data(), nullptr, n, 1, 0.3f, 2.4, codes.data());
  const float lo = *std::min_element(w.begin(), w.end()), hi = *std::max_element(w.begin(), w.end());
  CHECK(bcq_decode<3>(0, p) == doctest::Approx(lo).epsilon(2e-3));
  CHECK(bcq_decode<3>(7, p) == doctest::Approx(hi).epsilon(2e-3));
  for (int i = 1; i < 3; ++i) CHECK(p.alpha[i] == 2.0f * p.alpha[i - 1]);  // exactly a uniform grid
  const auto lp_err = [&](const BCQParams<3>& q) {
    double e = 0;
    for (float v : w) e += std::pow(std::fabs(v - bcq_decode<3>(bcq_encode<3>(v, q), q)), 2.4);
    return e;
  };
  const auto searched = calib::bcq_uniform_init<3>(w.data(), nullptr, n, 20, 0.5f, 2.4, codes.data());
  CHECK(lp_err(searched) <= lp_err(p));
  CHECK(lp_err(searched) < lp_err(p));  // heavy tails: clipping pays
}

TEST_CASE("bcq fit: ALTERNATING improves on both inits over a matrix, and the codes are stored as fitted") {
  const index_t rows = 24, cols = 200;  // a short last group of 72
  const auto W = heavy_tailed(rows * cols, 13);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  for (auto init : {calib::BCQInit::Greedy, calib::BCQInit::Uniform}) {
    calib::BCQFitOptions o;
    o.init = init;
    o.rounds = 10;
    calib::BCQFitStats s;
    const auto packed = calib::bcq_fit<BCQ<3, 128>>(Wv, nullptr, o, &s);
    CHECK(s.objective < s.objective_init);
    double e = 0;
    std::vector<float> D(W.size());
    Quantizer<BCQ<3, 128>>::dequantize(packed, MatrixView<float>(D.data(), rows, cols));
    for (std::size_t i = 0; i < W.size(); ++i) e += (double(W[i]) - D[i]) * (double(W[i]) - D[i]);
    CHECK(e == doctest::Approx(s.objective).epsilon(1e-6));
  }
}

TEST_CASE("bcq methods: capabilities, rtn is the greedy fit, bad descriptors and options are refused") {
  const auto alt = calib::bcq_method("alternating", {});
  CHECK(alt.accepts("bcq:3:128"));
  CHECK(alt.accepts("bcq:2:row"));
  CHECK_FALSE(alt.accepts("uniform:3:128"));
  CHECK_THROWS_WITH_AS(calib::QuantizationPlan(alt, "uniform:3:128"), doctest::Contains("cannot produce"), Error);
  CHECK_THROWS_WITH_AS(calib::QuantizationPlan(alt, "bcq:5:128"), doctest::Contains("unknown format 'bcq:5:128'"), Error);
  CHECK_THROWS_WITH_AS(calib::QuantizationPlan(alt, "bcq:3:100"), doctest::Contains("unknown format"), Error);
  CHECK_THROWS_AS(calib::bcq_method("bcq", {}), Error);
  calib::BCQFitOptions bad;
  bad.rounds = -1;
  CHECK_THROWS_WITH_AS(calib::bcq_method("uniquanf", bad), doctest::Contains("rounds"), Error);

  const index_t rows = 8, cols = 256;
  const auto W = heavy_tailed(rows * cols, 21);
  calib::LinearJob job;
  job.name = "layers.0.attention.wq";
  job.format = "bcq:2:128";
  job.weight = MatrixView<const float>(W.data(), rows, cols);
  const auto rtn = calib::group_method("rtn").run(job);
  const auto greedy = Quantizer<BCQ<2, 128>>::quantize(job.weight);
  std::vector<float> a(W.size()), b(W.size());
  rtn.layer->dequantize(MatrixView<float>(a.data(), rows, cols));
  Quantizer<BCQ<2, 128>>::dequantize(greedy, MatrixView<float>(b.data(), rows, cols));
  CHECK(a == b);
  const auto fitted = alt.run(job);
  CHECK(fitted.layer->format() == "bcq:2:128");
  CHECK(fitted.stats["objective"].get<double>() < fitted.stats["objective_init"].get<double>());
}

// ---- full-Hessian ALTERNATING (calib/bcq_hessian.hpp) --------------------------------------------------

namespace {

// XᵀX of `n` samples of correlated features (each a mix of its neighbours), damped as the fit damps it.
Eigen::MatrixXd correlated_hessian(index_t cols, index_t n, std::uint64_t seed) {
  Rng rng(seed);
  Eigen::MatrixXd Z(n, cols), X(n, cols);
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < cols; ++c) Z(i, c) = rng.normal() * (1.0 + 3.0 * ((c * 7) % 5 == 0));
  for (index_t i = 0; i < n; ++i)
    for (index_t c = 0; c < cols; ++c)
      X(i, c) = Z(i, c) + 0.8 * Z(i, (c + 1) % cols) - 0.5 * Z(i, (c + 3) % cols);
  return calib::bcq_damped_hessian(X.transpose() * X, 0.01);
}

// tr(ΔW H ΔWᵀ) element by element.
template <class F>
double output_error(const std::vector<float>& W, const BCQPacked<F>& P, const Eigen::MatrixXd& H) {
  double e = 0.0;
  for (index_t r = 0; r < P.rows(); ++r)
    for (index_t a = 0; a < P.cols(); ++a)
      for (index_t b = 0; b < P.cols(); ++b)
        e += (double(W[r * P.cols() + a]) - P.weight(r, a)) * H(a, b) * (double(W[r * P.cols() + b]) - P.weight(r, b));
  return e;
}

}  // namespace

TEST_CASE("bcq full-Hessian scales: a dense least-squares reference, and the diagonal solve for diagonal H") {
  using F = BCQ<3, 32>;
  const index_t rows = 6, cols = 80, K = 3 * 4;  // groups of 32, 32 and 16
  const auto W = heavy_tailed(rows * cols, 31);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  calib::BCQFitOptions o;
  o.rounds = 2;
  const auto P = calib::bcq_fit<F>(Wv, nullptr, o);
  const Eigen::MatrixXd H = correlated_hessian(cols, 300, 5);
  const Eigen::MatrixXd theta = calib::bcq_full_hessian_scales(Wv, P, H);
  REQUIRE(theta.rows() == rows);
  REQUIRE(theta.cols() == K);
  for (index_t r = 0; r < rows; ++r) {
    Eigen::MatrixXd A = Eigen::MatrixXd::Zero(cols, K);
    Eigen::VectorXd w(cols);
    for (index_t c = 0; c < cols; ++c) {
      const index_t g = c / 32;
      for (int i = 0; i < 3; ++i) A(c, g * 4 + i) = ((P.code(r, c) >> i) & 1u) ? 1.0 : -1.0;
      A(c, g * 4 + 3) = 1.0;
      w(c) = W[r * cols + c];
    }
    const Eigen::VectorXd ref = (A.transpose() * H * A).fullPivLu().solve(A.transpose() * H * w);
    for (index_t k = 0; k < K; ++k) CHECK(theta(r, k) == doctest::Approx(ref(k)).epsilon(1e-6));
  }
  // With H = diag(h) the rows separate by group: the per-group weighted solve of calib/bcq.hpp.
  std::vector<float> h(cols);
  Rng rng(3);
  for (auto& v : h) v = static_cast<float>(0.2 + 2.0 * rng.uniform());
  Eigen::MatrixXd D = Eigen::MatrixXd::Zero(cols, cols);
  for (index_t c = 0; c < cols; ++c) D(c, c) = h[c];
  const Eigen::MatrixXd theta_d = calib::bcq_full_hessian_scales(Wv, P, D);
  for (index_t r = 0; r < rows; ++r)
    for (index_t g = 0; g < 3; ++g) {
      const index_t c0 = g * 32, count = std::min<index_t>(32, cols - c0);
      std::vector<std::uint32_t> codes(count);
      for (index_t c = 0; c < count; ++c) codes[c] = P.code(r, c0 + c);
      BCQParams<3> p;
      REQUIRE(calib::bcq_solve_scales<3>(W.data() + r * cols + c0, h.data() + c0, count, codes.data(), p));
      for (int i = 0; i < 3; ++i) CHECK(theta_d(r, g * 4 + i) == doctest::Approx(p.alpha[i]).epsilon(1e-5));
      CHECK(theta_d(r, g * 4 + 3) == doctest::Approx(p.offset).epsilon(1e-5));
    }
}

TEST_CASE("bcq full-Hessian ALTERNATING: tr(dW H dWt) never increases and beats the diagonal fit") {
  using F = BCQ<2, 64>;
  const index_t rows = 16, cols = 160;  // a short last group of 32
  const auto W = heavy_tailed(rows * cols, 41);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  const Eigen::MatrixXd H = correlated_hessian(cols, 400, 9);
  std::vector<float> h(cols);
  for (index_t c = 0; c < cols; ++c) h[c] = static_cast<float>(H(c, c));
  calib::BCQFitOptions o;
  const auto diag = calib::bcq_fit<F>(Wv, h.data(), o);
  auto full = diag;
  calib::BCQHessianTrace trace;
  calib::bcq_alternate_full_hessian<F>(Wv, H, 5, full, &trace);
  REQUIRE(trace.objective.size() == 6u);
  for (std::size_t t = 1; t < trace.objective.size(); ++t) CHECK(trace.objective[t] <= trace.objective[t - 1]);
  // the objective it tracks is tr(ΔW H ΔWᵀ), computed element by element
  CHECK(trace.objective.front() == doctest::Approx(output_error(W, diag, H)).epsilon(1e-7));
  CHECK(trace.objective.back() == doctest::Approx(output_error(W, full, H)).epsilon(1e-7));
  CHECK(trace.objective.back() < 0.8 * trace.objective.front());
  CHECK(trace.rows_recoded > 0);
  CHECK(trace.rows_rescaled > 0);
  for (index_t r = 0; r < rows; ++r)
    for (index_t g = 0; g < full.groups_per_row(); ++g) {
      const auto p = full.params(r, g);
      CHECK(p.alpha[0] >= 0.0f);
      CHECK(p.alpha[0] <= p.alpha[1]);
    }
}

TEST_CASE("bcq full-Hessian codes: GPTQ on a fixed grid with H = I is nearest-level rounding") {
  using F = BCQ<3, 64>;
  const index_t rows = 5, cols = 150;
  const auto W = heavy_tailed(rows * cols, 51);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  const auto P = calib::bcq_fit<F>(Wv, nullptr, {});
  std::vector<BCQParams<3>> grid;
  for (index_t r = 0; r < rows; ++r)
    for (index_t g = 0; g < P.groups_per_row(); ++g) grid.push_back(P.params(r, g));
  calib::GptqOptions go;
  go.percdamp = 0.0;
  const auto coded = calib::gptq_quantize<F>(Wv, Eigen::MatrixXd::Identity(cols, cols), go, nullptr, &grid);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) CHECK(coded.code(r, c) == bcq_encode<3>(W[r * cols + c], P.params(r, c / 64)));
  // a precomputed factor of H gives the codes GPTQ computes from H itself
  const Eigen::MatrixXd H = correlated_hessian(cols, 400, 3);
  calib::GptqStats gs;
  const Eigen::MatrixXd U = calib::detail::gptq_inverse_cholesky(H, 0.0, gs);
  CHECK(calib::gptq_quantize<F>(Wv, H, go, nullptr, &grid, &U) == calib::gptq_quantize<F>(Wv, H, go, nullptr, &grid));
  go.act_order = true;
  CHECK_THROWS_WITH_AS(calib::gptq_quantize<F>(Wv, H, go, nullptr, &grid, &U), doctest::Contains("no act-order"), Error);
  go.act_order = false;
  std::vector<BCQParams<3>> short_grid(grid.begin(), grid.end() - 1);
  CHECK_THROWS_WITH_AS(calib::gptq_quantize<F>(Wv, Eigen::MatrixXd::Identity(cols, cols), go, nullptr, &short_grid),
                       doctest::Contains("fixed grid"), Error);
}

TEST_CASE("bcq methods: the full-Hessian alternating needs XᵀX and lowers the output error it reports") {
  calib::BCQFitOptions o;
  o.weighting = calib::BCQWeighting::Full;
  o.hessian_rounds = 3;
  const auto alt = calib::bcq_method("alternating", o);
  CHECK(alt.needs_hessian);
  CHECK(alt.options["weighting"] == "full");
  CHECK(calib::parse_bcq_weighting("diag") == calib::BCQWeighting::Diagonal);
  CHECK_THROWS_WITH_AS(calib::parse_bcq_weighting("hessian"), doctest::Contains("known: none, diag, full"), Error);
  const index_t rows = 8, cols = 96;
  const auto W = heavy_tailed(rows * cols, 61);
  calib::LinearJob job;
  job.name = "layers.0.feed_forward.w2";
  job.format = "bcq:3:row";
  job.weight = MatrixView<const float>(W.data(), rows, cols);
  CHECK_THROWS_WITH_AS(alt.run(job), doctest::Contains("needs XᵀX"), Error);
  calib::HessianAccumulator acc(cols);
  Rng rng(4);
  std::vector<float> X(200 * cols);
  for (index_t i = 0; i < 200; ++i)
    for (index_t c = 0; c < cols; ++c) X[i * cols + c] = static_cast<float>(rng.normal() + (c % 4 == 0 ? 2.0 : 0.0));
  acc.add(MatrixView<const float>(X.data(), 200, cols));
  job.hessian = &acc;
  const auto out = alt.run(job);
  CHECK(out.layer->format() == "bcq:3:row");
  CHECK(out.stats["hessian_objective"].get<double>() < out.stats["hessian_objective_start"].get<double>());
  o.hessian_rounds = -1;
  CHECK_THROWS_WITH_AS(calib::bcq_method("alternating", o), doctest::Contains("full-Hessian rounds"), Error);
}

// ---- UniQuanF: the trainable layer and its fold -------------------------------------------------------

#include "lowbit/calib/uniquanf.hpp"
#include "lowbit/train/adamw.hpp"

namespace {

struct UqCase {
  index_t rows = 12, cols = 160;  // groups of 64: a short last group of 32
  std::vector<float> W = heavy_tailed(12 * 160, 31);
  BCQPacked<BCQ<3, 64>> fit() const {
    calib::BCQFitOptions o;
    o.init = calib::BCQInit::Uniform;
    o.rounds = 5;
    return calib::bcq_fit<BCQ<3, 64>>(MatrixView<const float>(W.data(), rows, cols), nullptr, o);
  }
};

std::vector<float> dense_of(const nn::Linear& l) {
  std::vector<float> D(static_cast<std::size_t>(l.out_features() * l.in_features()));
  l.dequantize(MatrixView<float>(D.data(), l.out_features(), l.in_features()));
  return D;
}

// Sets every trained tensor to a small random perturbation (as training would).
void perturb(nn::Linear& l, std::uint64_t seed, float size) {
  Rng rng(seed);
  for (auto& p : l.parameters())
    for (index_t i = 0; i < p.size; ++i) p.value[i] += static_cast<float>(size * rng.normal()) * (p.name == "bcq_alpha" ? 0.3f : 1.0f);
}

}  // namespace

TEST_CASE("uniquanf layer: starts exactly on its BCQ fit, and folds into the BCQ layer it computes") {
  UqCase t;
  const auto fit = t.fit();
  nn::UniQuanFLinear<BCQ<3, 64>> uq(MatrixView<const float>(t.W.data(), t.rows, t.cols), fit, 0);
  std::vector<float> F(t.W.size());
  Quantizer<BCQ<3, 64>>::dequantize(fit, MatrixView<float>(F.data(), t.rows, t.cols));
  auto D = dense_of(uq);
  for (std::size_t i = 0; i < F.size(); ++i) CHECK(D[i] == doctest::Approx(F[i]).epsilon(1e-5).scale(1e-3));

  perturb(uq, 5, 0.05f);  // as after training: scales, FlexRound log-scales and BCQ scales all moved
  D = dense_of(uq);
  // the unification in fp32: Σ (e^δ1 a_i) b_i + e^δ1 (c − z) reproduces the transformed layer
  for (index_t r = 0; r < t.rows; ++r)
    for (index_t c = 0; c < t.cols; ++c) {
      const auto p = uq.folded_params(r, c / 64);
      const float v = bcq_decode<3>(uq.code(r, c), p);
      CHECK(v == doctest::Approx(D[static_cast<std::size_t>(r * t.cols + c)]).epsilon(1e-5).scale(1e-3));
    }
  // and stored: fp16 scales and offset, positive and ascending, each level within fp16 rounding
  const auto folded = uq.inference_form();
  REQUIRE(folded);
  CHECK(folded->format() == "bcq:3:64");
  const auto Q = dense_of(*folded);
  for (std::size_t i = 0; i < Q.size(); ++i) CHECK(std::fabs(Q[i] - D[i]) <= 3e-3f * (std::fabs(D[i]) + 0.02f));
}

TEST_CASE("uniquanf layer: gradients against finite differences of the straight-through surrogate") {
  // With codes fixed, Ŵ = (L − z)·e^δ1 depends on δ1 and a directly; the STE adds (u − u0)·e^δ1 where u
  // stays within min|a| of its level. Finite differences of that surrogate (in double) must match.
  UqCase t;
  t.rows = 3;
  t.cols = 64;
  t.W.resize(3 * 64);
  const auto fit = t.fit();
  nn::UniQuanFLinear<BCQ<3, 64>> uq(MatrixView<const float>(t.W.data(), t.rows, t.cols), fit, 0);
  perturb(uq, 9, 0.02f);
  const index_t n = 5;
  Rng rng(4);
  std::vector<float> X(static_cast<std::size_t>(n * t.cols)), R(static_cast<std::size_t>(n * t.rows)), Y(R.size());
  for (auto& v : X) v = static_cast<float>(rng.normal());
  for (auto& v : R) v = static_cast<float>(rng.normal());
  // loss = Σ R ⊙ Y, so dL/dY = R
  uq.forward(MatrixView<const float>(X.data(), n, t.cols), MatrixView<float>(Y.data(), n, t.rows));
  for (auto& p : uq.parameters()) std::fill_n(p.grad, p.size, 0.0f);
  uq.backward(MatrixView<const float>(X.data(), n, t.cols), MatrixView<const float>(R.data(), n, t.rows), MatrixView<float>());
  auto params = uq.parameters();
  const auto value = [&](const std::string& name, index_t i) -> float& {
    for (auto& p : params)
      if (p.name == name) return p.value[i];
    FAIL("no parameter " << name);
    return params[0].value[0];
  };
  const auto grad = [&](const std::string& name, index_t i) {
    for (auto& p : params)
      if (p.name == name) return p.grad[i];
    return 0.0f;
  };
  // the surrogate loss in double, from the layer's own parameters
  const auto d1 = params[0], d2 = params[1], d3 = params[2], a = params[3];
  std::vector<double> u0(t.W.size());
  std::vector<float> z(static_cast<std::size_t>(t.rows));
  for (index_t r = 0; r < t.rows; ++r) {
    const auto p = uq.folded_params(r, 0);
    const double s = std::exp(double(d1.value[r]));
    z[r] = static_cast<float>(3.5 - p.offset / s);
  }
  const auto surrogate = [&](bool set_u0) {
    double L = 0;
    for (index_t r = 0; r < t.rows; ++r) {
      const double s = std::exp(double(d1.value[r]));
      double amin = 1e30;
      for (int i = 0; i < 3; ++i) amin = std::min(amin, std::fabs(double(a.value[r * 3 + i])));
      for (index_t c = 0; c < t.cols; ++c) {
        const std::size_t e = static_cast<std::size_t>(r * t.cols + c);
        const double u = t.W[e] / std::exp(double(d1.value[r]) + d2.value[e] + d3.value[r]) + z[r];
        if (set_u0) u0[e] = u;
        double lev = 3.5;
        for (int i = 0; i < 3; ++i) lev += ((uq.code(r, c) >> i) & 1u) ? a.value[r * 3 + i] : -a.value[r * 3 + i];
        const double ste = std::fabs(u0[e] - lev) <= amin ? u - u0[e] : 0.0;
        const double w = (lev + ste - z[r]) * s;
        for (index_t k = 0; k < n; ++k) L += R[k * t.rows + r] * w * X[k * t.cols + c];
      }
    }
    return L;
  };
  surrogate(true);
  const auto fd = [&](const std::string& name, index_t i) {
    float& v = value(name, i);
    const float keep = v, h = 1e-3f;
    v = keep + h;
    const double up = surrogate(false);
    v = keep - h;
    const double down = surrogate(false);
    v = keep;
    return (up - down) / (2.0 * double(h));
  };
  for (index_t i = 0; i < 3; ++i) CHECK(grad("uq_delta1", i) == doctest::Approx(fd("uq_delta1", i)).epsilon(2e-3).scale(1e-3));
  for (index_t i = 0; i < 9; ++i) CHECK(grad("bcq_alpha", i) == doctest::Approx(fd("bcq_alpha", i)).epsilon(2e-3).scale(1e-3));
  for (index_t i = 0; i < 3; ++i) CHECK(grad("uq_delta3", i) == doctest::Approx(fd("uq_delta3", i)).epsilon(2e-3).scale(1e-3));
  for (index_t i = 0; i < 192; i += 7) CHECK(grad("uq_delta2", i) == doctest::Approx(fd("uq_delta2", i)).epsilon(2e-3).scale(1e-4));
}

TEST_CASE("uniquanf layer: remapping moves a code by at most one level, training lowers the output error") {
  UqCase t;
  const auto fit = t.fit();
  nn::UniQuanFLinear<BCQ<3, 64>> uq(MatrixView<const float>(t.W.data(), t.rows, t.cols), fit, 1);
  // a large δ2 pushes u far away; one remap may still move each code by one rank only
  for (auto& p : uq.parameters())
    if (p.name == "uq_delta2")
      for (index_t i = 0; i < p.size; ++i) p.value[i] = (i % 2 ? 1.5f : -1.5f);
  const auto before = dense_of(uq);  // the first forward remaps (step 0 is due)
  CHECK(uq.remapped_codes() > 0);
  for (index_t r = 0; r < t.rows; ++r)
    for (index_t c = 0; c < t.cols; ++c) {
      const auto p = uq.folded_params(r, c / 64);
      std::vector<float> levels;
      for (std::uint32_t q = 0; q < 8; ++q) levels.push_back(bcq_decode<3>(q, p));
      std::sort(levels.begin(), levels.end());
      const auto rank = [&](float v) { return std::min_element(levels.begin(), levels.end(), [&](float x, float y) { return std::fabs(x - v) < std::fabs(y - v); }) - levels.begin(); };
      const auto at = rank(bcq_decode<3>(fit.code(r, c), fit.params(r, c / 64)));
      CHECK(std::abs(rank(before[static_cast<std::size_t>(r * t.cols + c)]) - at) <= 1);
    }

  // Training: regress Y = X Wᵀ from a fresh layer, with input columns of very different scales (so the
  // weight-space fit is not the output-space optimum); Adam on δ and a lowers the output error.
  nn::UniQuanFLinear<BCQ<3, 64>> layer(MatrixView<const float>(t.W.data(), t.rows, t.cols), fit, 2);
  const index_t n = 256;
  Rng rng(8);
  std::vector<float> X(static_cast<std::size_t>(n * t.cols)), Yt(static_cast<std::size_t>(n * t.rows)), Y(Yt.size()), dY(Yt.size());
  std::vector<float> sigma(static_cast<std::size_t>(t.cols));
  for (auto& s : sigma) s = static_cast<float>(std::exp(1.5 * rng.normal()));
  for (index_t k = 0; k < n; ++k)
    for (index_t c = 0; c < t.cols; ++c) X[k * t.cols + c] = static_cast<float>(rng.normal()) * sigma[c];
  for (index_t k = 0; k < n; ++k)
    for (index_t r = 0; r < t.rows; ++r) {
      double acc = 0;
      for (index_t c = 0; c < t.cols; ++c) acc += double(t.W[r * t.cols + c]) * X[k * t.cols + c];
      Yt[k * t.rows + r] = static_cast<float>(acc);
    }
  const auto loss = [&] {
    layer.forward(MatrixView<const float>(X.data(), n, t.cols), MatrixView<float>(Y.data(), n, t.rows));
    double l = 0;
    for (std::size_t i = 0; i < Y.size(); ++i) {
      dY[i] = 2.0f * (Y[i] - Yt[i]) / static_cast<float>(Y.size());
      l += double(Y[i] - Yt[i]) * (Y[i] - Yt[i]);
    }
    return l / static_cast<double>(Y.size());
  };
  const double initial = loss();
  train::AdamWOptions ao;
  ao.lr = 5e-3f;
  train::AdamW opt(layer.parameters(), ao);
  double last = initial;
  for (int step = 0; step < 100; ++step) {
    last = loss();
    for (auto& p : layer.parameters()) std::fill_n(p.grad, p.size, 0.0f);
    layer.backward(MatrixView<const float>(X.data(), n, t.cols), MatrixView<const float>(dY.data(), n, t.rows), MatrixView<float>());
    opt.step();
  }
  last = loss();
  MESSAGE("uniquanf toy regression: output MSE " << initial << " -> " << last);
  CHECK(last < 0.8 * initial);
}
