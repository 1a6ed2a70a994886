// AQLM calibration pieces against independent references: k-means against a brute-force Lloyd's written
// here, beam search against exhaustive enumeration and a from-scratch objective, the least-squares
// codebook update against a dense solve of the explicit design matrix, closed-form scales against
// perturbations, and determinism of the whole calibration for a seed and any thread count.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include <lowbit/calib/additive.hpp>
#include <lowbit/format/additive_shared.hpp>
#include <lowbit/core/rng.hpp>

using namespace lowbit;
using namespace lowbit::calib;

namespace {

std::vector<float> gaussian(index_t n, std::uint64_t seed, double sd = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(rng.normal() * sd);
  return v;
}

// H = XᵀX / n for correlated random activations (a shared component makes columns dependent).
std::vector<float> random_hessian(index_t cols, std::uint64_t seed, index_t samples = 256) {
  Rng rng(seed);
  Eigen::MatrixXd X(samples, cols);
  for (index_t t = 0; t < samples; ++t) {
    const double common = rng.normal();
    for (index_t c = 0; c < cols; ++c) X(t, c) = rng.normal() * (0.5 + 0.1 * (c % 5)) + 0.7 * common;
  }
  const Eigen::MatrixXd H = X.transpose() * X / static_cast<double>(samples);
  std::vector<float> h(static_cast<std::size_t>(cols * cols));
  for (index_t r = 0; r < cols; ++r)
    for (index_t c = 0; c < cols; ++c) h[static_cast<std::size_t>(r * cols + c)] = static_cast<float>(H(r, c));
  return h;
}

AdditiveCodes random_codes(const AdditiveShape& s, std::uint64_t seed) {
  Rng rng(seed);
  AdditiveCodes a(s);
  for (auto& c : a.codes) c = static_cast<std::uint32_t>(rng.below(static_cast<std::uint64_t>(s.codebook_size())));
  for (auto& v : a.codebooks) v = static_cast<float>(rng.normal() * 0.3);
  for (auto& v : a.scales) v = static_cast<float>(0.5 + rng.uniform());
  return a;
}

// Objective of one row with explicit codes, straight from the definition, in double.
double row_objective(const AdditiveProblem& prob, const AdditiveCodes& a, index_t o, const std::vector<std::uint32_t>& codes) {
  const index_t P = prob.P();
  const int G = a.shape.group_size, M = a.shape.num_codebooks;
  std::vector<double> d(static_cast<std::size_t>(P), 0.0);
  for (index_t j = 0; j < a.shape.groups(); ++j)
    for (int m = 0; m < M; ++m) {
      const float* c = a.codeword(m, codes[static_cast<std::size_t>(j * M + m)]);
      for (int p = 0; p < G; ++p) d[static_cast<std::size_t>(j * G + p)] += a.scales[static_cast<std::size_t>(o)] * c[p];
    }
  for (index_t c = 0; c < P; ++c) d[static_cast<std::size_t>(c)] -= prob.w_row(o)[c];
  double loss = 0.0;
  for (index_t r = 0; r < P; ++r)
    for (index_t c = 0; c < P; ++c) loss += d[static_cast<std::size_t>(r)] * prob.H[static_cast<std::size_t>(r * P + c)] * d[static_cast<std::size_t>(c)];
  return loss;
}

// Best code vector of a row by enumerating all K^(groups·M) assignments.
double exhaustive_row_optimum(const AdditiveProblem& prob, const AdditiveCodes& a, index_t o) {
  const index_t n = a.shape.codes_per_row(), K = a.shape.codebook_size();
  index_t total = 1;
  for (index_t i = 0; i < n; ++i) total *= K;
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(n));
  double best = std::numeric_limits<double>::infinity();
  for (index_t id = 0; id < total; ++id) {
    index_t rest = id;
    for (index_t i = 0; i < n; ++i) {
      codes[static_cast<std::size_t>(i)] = static_cast<std::uint32_t>(rest % K);
      rest /= K;
    }
    best = std::min(best, row_objective(prob, a, o, codes));
  }
  return best;
}

std::vector<std::uint32_t> row_codes(const AdditiveCodes& a, index_t o) {
  const index_t n = a.shape.codes_per_row();
  return std::vector<std::uint32_t>(a.codes.begin() + o * n, a.codes.begin() + (o + 1) * n);
}

AdditiveProblem problem(const AdditiveShape& s, std::uint64_t seed, bool block_diagonal_h = false) {
  const auto w = gaussian(s.rows * s.cols, seed);
  auto h = random_hessian(s.cols, seed + 1);
  if (block_diagonal_h)
    for (index_t r = 0; r < s.cols; ++r)
      for (index_t c = 0; c < s.cols; ++c)
        if (r / s.group_size != c / s.group_size) h[static_cast<std::size_t>(r * s.cols + c)] = 0.0f;
  return make_additive_problem(as_matrix(w, s.rows, s.cols), as_matrix(h, s.cols, s.cols), s);
}

}  // namespace

TEST_CASE("k-means: Lloyd's iterations equal a brute-force reference on a tiny set") {
  const index_t n = 60, K = 5;
  const int dim = 3;
  // Five well-separated blobs plus noise, so no cluster empties.
  Rng rng(3);
  std::vector<float> pts(static_cast<std::size_t>(n * dim));
  for (index_t p = 0; p < n; ++p)
    for (int d = 0; d < dim; ++d) pts[static_cast<std::size_t>(p * dim + d)] = static_cast<float>((p % K) * 3.0 * (d == p % 3) + rng.normal());
  std::vector<float> init(pts.begin(), pts.begin() + K * dim);  // first K points
  std::vector<float> fast = init;
  std::vector<std::uint32_t> assign(static_cast<std::size_t>(n));
  kmeans_lloyd(pts.data(), n, dim, fast.data(), K, 10, assign.data());

  std::vector<double> ref(init.begin(), init.end());
  std::vector<int> ref_assign(static_cast<std::size_t>(n), 0);
  for (int it = 0; it < 10; ++it) {
    for (index_t p = 0; p < n; ++p) {
      double best = std::numeric_limits<double>::infinity();
      for (index_t k = 0; k < K; ++k) {
        double d2 = 0.0;
        for (int d = 0; d < dim; ++d) {
          const double diff = pts[static_cast<std::size_t>(p * dim + d)] - ref[static_cast<std::size_t>(k * dim + d)];
          d2 += diff * diff;
        }
        if (d2 < best) {
          best = d2;
          ref_assign[static_cast<std::size_t>(p)] = static_cast<int>(k);
        }
      }
    }
    for (index_t k = 0; k < K; ++k) {
      double sum[3] = {0, 0, 0};
      int count = 0;
      for (index_t p = 0; p < n; ++p)
        if (ref_assign[static_cast<std::size_t>(p)] == k) {
          ++count;
          for (int d = 0; d < dim; ++d) sum[d] += pts[static_cast<std::size_t>(p * dim + d)];
        }
      REQUIRE(count > 0);
      for (int d = 0; d < dim; ++d) ref[static_cast<std::size_t>(k * dim + d)] = sum[d] / count;
    }
  }
  for (index_t p = 0; p < n; ++p) CHECK(assign[static_cast<std::size_t>(p)] == static_cast<std::uint32_t>(ref_assign[static_cast<std::size_t>(p)]));
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(fast[i] == doctest::Approx(ref[i]).epsilon(1e-5));
}

TEST_CASE("k-means: seeded, subsampled runs are deterministic and refill empty clusters") {
  const auto pts = gaussian(4000 * 4, 9);
  KMeansOptions o;
  o.iterations = 20;
  o.max_points_per_centroid = 20;  // 64 centroids -> 1280 of 4000 points train
  Rng r1(5), r2(5), r3(6);
  const auto a = kmeans(pts.data(), 4000, 4, 64, o, r1);
  const auto b = kmeans(pts.data(), 4000, 4, 64, o, r2);
  const auto c = kmeans(pts.data(), 4000, 4, 64, o, r3);
  CHECK(a.centroids == b.centroids);
  CHECK(a.assignment == b.assignment);
  CHECK(a.centroids != c.centroids);
  std::vector<int> used(64, 0);
  for (auto k : a.assignment) used[k] = 1;
  CHECK(std::accumulate(used.begin(), used.end(), 0) == 64);
  // Inertia agrees with a direct recomputation and is far below the data variance (4 per point).
  double inertia = 0.0;
  for (index_t p = 0; p < 4000; ++p)
    for (int d = 0; d < 4; ++d) {
      const double diff = pts[static_cast<std::size_t>(p * 4 + d)] - a.centroids[a.assignment[static_cast<std::size_t>(p)] * 4 + d];
      inertia += diff * diff;
    }
  CHECK(a.inertia == doctest::Approx(inertia).epsilon(1e-4));
  CHECK(inertia / 4000 < 4.0 * 0.5);
}

TEST_CASE("beam search never increases the objective, and its incremental loss matches a recomputation") {
  const AdditiveShape s{12, 24, 2, 4, 4};
  const AdditiveProblem prob = problem(s, 17);
  for (int beam : {1, 3}) {
    AdditiveCodes a = random_codes(s, 23);
    double before = additive_objective(prob, a);
    Rng rng(1);
    for (int pass = 0; pass < 4; ++pass) {
      std::vector<double> row_before(static_cast<std::size_t>(s.rows));
      for (index_t o = 0; o < s.rows; ++o) row_before[static_cast<std::size_t>(o)] = row_objective(prob, a, o, row_codes(a, o));
      const double incremental = additive_beam_search(prob, a, BeamSearchOptions{beam}, rng);
      const double after = additive_objective(prob, a);
      CHECK(incremental == doctest::Approx(after).epsilon(1e-4));
      CHECK(after <= before * (1.0 + 1e-6));
      for (index_t o = 0; o < s.rows; ++o)
        CHECK(row_objective(prob, a, o, row_codes(a, o)) <= row_before[static_cast<std::size_t>(o)] * (1.0 + 1e-6) + 1e-9);
      if (pass == 0) CHECK(after < 0.9 * before);  // random codes leave a lot to gain
      before = after;
    }
  }
}

TEST_CASE("beam width 1 with one codebook matches exhaustive search") {
  SUBCASE("one group: one greedy step is the exhaustive argmin over all codes") {
    const AdditiveShape s{9, 4, 1, 3, 4};
    const AdditiveProblem prob = problem(s, 31);
    AdditiveCodes a = random_codes(s, 37);
    Rng rng(2);
    additive_beam_search(prob, a, BeamSearchOptions{1}, rng);
    for (index_t o = 0; o < s.rows; ++o)
      CHECK(row_objective(prob, a, o, row_codes(a, o)) == doctest::Approx(exhaustive_row_optimum(prob, a, o)).epsilon(1e-5));
  }
  SUBCASE("three groups, H without cross-group terms: one greedy pass is the exhaustive optimum") {
    const AdditiveShape s{7, 12, 1, 2, 4};
    const AdditiveProblem prob = problem(s, 41, true);
    AdditiveCodes a = random_codes(s, 43);
    Rng rng(3);
    additive_beam_search(prob, a, BeamSearchOptions{1}, rng);
    for (index_t o = 0; o < s.rows; ++o)
      CHECK(row_objective(prob, a, o, row_codes(a, o)) == doctest::Approx(exhaustive_row_optimum(prob, a, o)).epsilon(1e-5));
  }
  SUBCASE("coupled H: a beam as wide as the search space finds the exhaustive optimum") {
    const AdditiveShape s{6, 8, 1, 3, 4};  // 2 groups x 8 codes = 64 assignments per row
    const AdditiveProblem prob = problem(s, 47);
    AdditiveCodes a = random_codes(s, 53);
    Rng rng(4);
    additive_beam_search(prob, a, BeamSearchOptions{64}, rng);
    for (index_t o = 0; o < s.rows; ++o)
      CHECK(row_objective(prob, a, o, row_codes(a, o)) == doctest::Approx(exhaustive_row_optimum(prob, a, o)).epsilon(1e-5));
  }
}

namespace {
void check_ls_against_dense(const AdditiveShape& s, std::uint64_t seed) {
  const AdditiveProblem prob = problem(s, seed);
  AdditiveCodes a = random_codes(s, seed + 6);
  const index_t P = prob.P(), K = s.codebook_size(), n = s.num_codebooks * K * s.group_size;
  const int G = s.group_size, M = s.num_codebooks;
  // Dense reference: ŵ_o = D_o θ with D_o [P, n]; minimise Σ_o (D_o θ − w_o)ᵀ H (D_o θ − w_o).
  Eigen::MatrixXd Hd(P, P);
  for (index_t r = 0; r < P; ++r)
    for (index_t c = 0; c < P; ++c) Hd(r, c) = prob.H[static_cast<std::size_t>(r * P + c)];
  Eigen::MatrixXd normal = Eigen::MatrixXd::Zero(n, n);
  Eigen::VectorXd rhs = Eigen::VectorXd::Zero(n);
  for (index_t o = 0; o < s.rows; ++o) {
    Eigen::MatrixXd D = Eigen::MatrixXd::Zero(P, n);
    for (index_t j = 0; j < s.groups(); ++j)
      for (int m = 0; m < M; ++m)
        for (int p = 0; p < G; ++p) D(j * G + p, (m * K + a.code(o, j, m)) * G + p) += a.scales[static_cast<std::size_t>(o)];
    Eigen::VectorXd w(P);
    for (index_t c = 0; c < P; ++c) w[c] = prob.w_row(o)[c];
    normal += D.transpose() * Hd * D;
    rhs += D.transpose() * Hd * w;
  }
  // With M ≥ 2 the codebooks have a gauge freedom (C_0 + δ, C_1 − δ reconstruct the same Ŵ), so the
  // normal matrix is singular: compare the reconstructed weights and the objective, not θ itself.
  const Eigen::VectorXd theta = normal.completeOrthogonalDecomposition().solve(rhs);
  AdditiveCodes dense = a;
  for (index_t i = 0; i < n; ++i) dense.codebooks[static_cast<std::size_t>(i)] = static_cast<float>(theta[i]);
  std::vector<float> w_dense(static_cast<std::size_t>(s.rows * s.cols)), w_fast(w_dense.size());
  additive_dequantize_reference(dense, as_matrix(w_dense, s.rows, s.cols));
  const double before = additive_objective(prob, a), optimum = additive_objective(prob, dense);
  CHECK(optimum <= before);
  // Cholesky on the assembled A (direct limit 2048), then the matrix-free GEMM CG (limit 0).
  for (index_t direct_limit : {index_t{2048}, index_t{0}}) {
    AdditiveCodes b = a;
    const auto WH = additive_wh(prob);
    AdditiveLsSolveOptions solve;
    solve.ridge = 1e-10;
    solve.direct_max_unknowns = direct_limit;
    additive_update_codebooks_ls(prob, WH, b, solve);
    additive_dequantize_reference(b, as_matrix(w_fast, s.rows, s.cols));
    double max_diff = 0.0, max_w = 0.0;
    for (std::size_t i = 0; i < w_fast.size(); ++i) {
      max_diff = std::max<double>(max_diff, std::abs(w_fast[i] - w_dense[i]));
      max_w = std::max<double>(max_w, std::abs(w_dense[i]));
    }
    INFO("direct limit " << direct_limit);
    CHECK(max_diff < 1e-4 * max_w);
    CHECK(additive_objective(prob, b) == doctest::Approx(optimum).epsilon(1e-5));
  }
}
}  // namespace

TEST_CASE("least-squares codebook update equals a dense solve of the explicit design matrix") {
  check_ls_against_dense(AdditiveShape{10, 12, 2, 2, 4}, 61);  // 32 unknowns, assembled normal equations
  check_ls_against_dense(AdditiveShape{4, 8, 2, 4, 4}, 63);    // ≤ 64 unknowns, 4 rows
  check_ls_against_dense(AdditiveShape{150, 16, 2, 3, 4}, 65); // 150 rows: three 64-row GEMM chunks
}

TEST_CASE("early-stopped matrix-free CG never increases the objective and is thread-count invariant") {
  // The calibration default (stop when a CG step gains < 1e-4 of the objective, at most 40 steps) on a
  // problem solved matrix-free: the objective only goes down, ends within 1% of the exact optimum's
  // gain, and the codebooks are bit-identical for 1 and several threads.
  const AdditiveShape s{150, 48, 2, 5, 8};
  const AdditiveProblem prob = problem(s, 67);
  const AdditiveCodes a = random_codes(s, 69);
  const auto WH = additive_wh(prob);
  AdditiveLsSolveOptions exact;
  exact.ridge = 1e-10;
  exact.direct_max_unknowns = 0;
  AdditiveLsSolveOptions early = AdditiveCalibOptions{}.ls;
  early.direct_max_unknowns = 0;
  AdditiveCodes best = a, one = a, many = a;
  additive_update_codebooks_ls(prob, WH, best, exact);
  const int threads = max_threads();
  set_num_threads(1);
  additive_update_codebooks_ls(prob, WH, one, early);
  set_num_threads(std::max(2, threads));
  additive_update_codebooks_ls(prob, WH, many, early);
  set_num_threads(threads);
  CHECK(one.codebooks == many.codebooks);
  const double before = additive_objective(prob, a), after = additive_objective(prob, one),
               optimum = additive_objective(prob, best);
  CHECK(optimum < before);
  CHECK(after <= before);
  CHECK(before - after >= 0.99 * (before - optimum));
}

TEST_CASE("closed-form scales are a stationary point and never increase the objective") {
  const AdditiveShape s{8, 16, 2, 3, 4};
  const AdditiveProblem prob = problem(s, 71);
  AdditiveCodes a = random_codes(s, 73);
  const auto WH = additive_wh(prob);
  const double before = additive_objective(prob, a);
  additive_update_scales_ls(prob, WH, a);
  const double after = additive_objective(prob, a);
  CHECK(after <= before);
  for (index_t o = 0; o < s.rows; ++o) {
    const double f0 = row_objective(prob, a, o, row_codes(a, o));
    for (double eps : {1e-2, -1e-2}) {
      AdditiveCodes b = a;
      b.scales[static_cast<std::size_t>(o)] *= static_cast<float>(1.0 + eps);
      CHECK(row_objective(prob, b, o, row_codes(b, o)) >= f0 * (1.0 - 1e-7));
    }
  }
}

TEST_CASE("Adam continuous step lowers the objective") {
  const AdditiveShape s{16, 32, 2, 4, 8};
  const AdditiveProblem prob = problem(s, 81);
  AdditiveCodes a = random_codes(s, 83);
  AdditiveAdamOptions o;
  o.steps = 50;
  o.lr = 1e-2;
  AdditiveAdamState state;
  const double before = additive_objective(prob, a);
  additive_update_adam(prob, a, o, state);
  CHECK(state.step == 50);
  CHECK(additive_objective(prob, a) < 0.9 * before);
}

TEST_CASE("calibration is deterministic for a seed and any thread count, and uses H") {
  const AdditiveShape s{48, 64, 2, 6, 8};
  const auto w = gaussian(s.rows * s.cols, 91);
  const auto h = random_hessian(s.cols, 92);
  AdditiveCalibOptions o;
  o.num_codebooks = 2;
  o.code_bits = 6;
  o.group_size = 8;
  o.kmeans.iterations = 10;
  o.max_epochs = 8;
  o.seed = 7;
  const int threads = max_threads();
  AdditiveCalibReport r1, r2;
  set_num_threads(1);
  const AdditiveCodes a = calibrate_additive(as_matrix(w, s.rows, s.cols), as_matrix(h, s.cols, s.cols), o, &r1);
  set_num_threads(std::max(2, threads));
  const AdditiveCodes b = calibrate_additive(as_matrix(w, s.rows, s.cols), as_matrix(h, s.cols, s.cols), o, &r2);
  set_num_threads(threads);
  CHECK(a.codes == b.codes);
  CHECK(a.codebooks == b.codebooks);
  CHECK(a.scales == b.scales);
  CHECK(r1.relative_mse < r1.initial_relative_mse);
  for (std::size_t i = 1; i < r1.history.size(); ++i) CHECK(r1.history[i] <= r1.history[i - 1] * (1.0 + 1e-6));
  // Calibrating against H beats the data-free (identity) solution on the H-weighted objective.
  const AdditiveCodes plain = calibrate_additive(as_matrix(w, s.rows, s.cols), MatrixView<const float>{}, o);
  const AdditiveProblem prob = make_additive_problem(as_matrix(w, s.rows, s.cols), as_matrix(h, s.cols, s.cols), s);
  CHECK(additive_objective(prob, a) < additive_objective(prob, plain));
  // Adam variant also converges below the k-means initialization.
  o.update = CodebookUpdate::Adam;
  o.adam.steps = 20;
  AdditiveCalibReport r3;
  calibrate_additive(as_matrix(w, s.rows, s.cols), as_matrix(h, s.cols, s.cols), o, &r3);
  CHECK(r3.relative_mse < r3.initial_relative_mse);
}

TEST_CASE("the shared LOWBIT_HD candidate score ranks codes exactly as the row objective does") {
  // The CUDA beam kernel scores with additive_candidate_score; its differences must equal the true
  // change of the row objective when code (j, m) is replaced.
  const AdditiveShape s{5, 16, 2, 3, 4};
  const AdditiveProblem prob = problem(s, 101);
  const AdditiveCodes a = random_codes(s, 103);
  const index_t P = prob.P();
  const int G = s.group_size;
  std::vector<float> u(static_cast<std::size_t>(P)), r(static_cast<std::size_t>(P));
  for (index_t o = 0; o < s.rows; ++o) {
    additive_row_residual(prob, a, o, u.data(), r.data());
    const index_t j = 2;
    const int m = 1;
    const float sc = a.scales[static_cast<std::size_t>(o)];
    std::vector<float> hjj(static_cast<std::size_t>(G * G));
    for (int p = 0; p < G; ++p)
      for (int t = 0; t < G; ++t) hjj[static_cast<std::size_t>(p * G + t)] = prob.H[static_cast<std::size_t>((j * G + p) * P + j * G + t)];
    const std::uint32_t old = a.code(o, j, m);
    const float* f = a.codeword(m, old);
    float q[4];
    for (int p = 0; p < G; ++p) {
      float hf = 0.0f;
      for (int t = 0; t < G; ++t) hf += hjj[static_cast<std::size_t>(p * G + t)] * f[t];
      q[p] = 2.0f * sc * (r[static_cast<std::size_t>(j * G + p)] - sc * hf);
    }
    auto score = [&](std::uint32_t c) {
      const float* e = a.codeword(m, c);
      return additive_candidate_score(e, q, G, sc * sc, additive_quadratic_form(e, hjj.data(), G));
    };
    const double base = row_objective(prob, a, o, row_codes(a, o));
    for (std::uint32_t c = 0; c < 8; ++c) {
      auto codes = row_codes(a, o);
      codes[static_cast<std::size_t>(j * 2 + m)] = c;
      const double truth = row_objective(prob, a, o, codes) - base;
      CHECK(score(c) - score(old) == doctest::Approx(truth).epsilon(1e-3).scale(base));
    }
  }
}
