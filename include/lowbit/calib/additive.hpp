// AQLM calibration of one matrix (ALGORITHMS.md §1.3, step 2): per-row scales initialised to the row
// norms, residual k-means initialization of the M codebooks on the normalised rows, then alternating
// (a) a continuous update of codebooks and scales — the exact least-squares solve (default) or the
// paper's Adam — and (b) a beam search over codes against tr(ΔW·H·ΔWᵀ), until an epoch improves the
// objective by less than `relative_mse_tolerance`. Deterministic for a seed, any thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "beam_search.hpp"
#include "codebook_update.hpp"
#include "kmeans.hpp"

namespace lowbit::calib {

enum class CodebookUpdate { ExactLeastSquares, Adam };

struct AdditiveCalibOptions {
  int num_codebooks = 2;  // M
  int code_bits = 8;      // B
  int group_size = 8;     // G
  KMeansOptions kmeans{};  // iterations 100, max 256 points per centroid
  int beam_size = 1;
  int max_epochs = 100;
  double relative_mse_tolerance = 0.01;  // stop when an epoch gains less than this fraction
  CodebookUpdate update = CodebookUpdate::ExactLeastSquares;
  AdditiveAdamOptions adam{};  // used when update == Adam
  // Exact-LS solve: the CG path (more than 2048 unknowns, e.g. 2x8 g8) stops when a step gains less than
  // 1e-4 of the objective or after 40 steps; tests tighten this to the exact solution.
  AdditiveLsSolveOptions ls = [] {
    AdditiveLsSolveOptions o;
    o.objective_tolerance = 1e-4;
    o.max_iterations = 40;
    return o;
  }();
  std::uint64_t seed = 0;
  bool verbose = false;
  std::string label;  // printed with verbose progress

  AdditiveShape shape(index_t rows, index_t cols) const {
    return AdditiveShape{rows, cols, num_codebooks, code_bits, group_size};
  }
};

struct AdditiveCalibReport {
  double initial_relative_mse = 0.0;  // after k-means initialization
  double relative_mse = 0.0;          // tr(ΔW H ΔWᵀ) / tr(W H Wᵀ) at the end
  int epochs = 0;
  std::vector<double> history;  // relative MSE after every epoch
};

// Pads W and H to whole groups (zeros), symmetrises H. An empty H means the identity (data-free AQ).
inline AdditiveProblem make_additive_problem(MatrixView<const float> W, MatrixView<const float> H,
                                             const AdditiveShape& shape) {
  AdditiveProblem prob;
  prob.shape = shape;
  const index_t rows = shape.rows, cols = shape.cols, P = shape.padded_cols();
  LOWBIT_CHECK(W.rows() == rows && W.cols() == cols, "additive calibration: weight is [", W.rows(), ", ", W.cols(),
               "], expected [", rows, ", ", cols, "]");
  prob.W.assign(static_cast<std::size_t>(rows * P), 0.0f);
  for (index_t o = 0; o < rows; ++o)
    for (index_t c = 0; c < cols; ++c) prob.W[static_cast<std::size_t>(o * P + c)] = W(o, c);
  prob.H.assign(static_cast<std::size_t>(P * P), 0.0f);
  if (H.data == nullptr) {
    for (index_t c = 0; c < cols; ++c) prob.H[static_cast<std::size_t>(c * P + c)] = 1.0f;
  } else {
    LOWBIT_CHECK(H.rows() == cols && H.cols() == cols, "additive calibration: Hessian is [", H.rows(), ", ", H.cols(),
                 "], expected [", cols, ", ", cols, "]");
    for (index_t r = 0; r < cols; ++r)
      for (index_t c = 0; c < cols; ++c) prob.H[static_cast<std::size_t>(r * P + c)] = 0.5f * (H(r, c) + H(c, r));
  }
  return prob;
}

// Σ_o w_o·H·w_oᵀ, the denominator of the relative MSE.
inline double additive_reference_energy(const AdditiveProblem& prob, const std::vector<float>& WH) {
  double e = 0.0;
  for (std::size_t i = 0; i < prob.W.size(); ++i) e += static_cast<double>(prob.W[i]) * WH[i];
  return e;
}

// Scales = row norms; residual k-means, one codebook at a time, on the normalised rows.
inline AdditiveCodes additive_initialize(const AdditiveProblem& prob, const AdditiveCalibOptions& options) {
  const AdditiveShape& s = prob.shape;
  s.validate("additive calibration");
  AdditiveCodes a(s);
  const index_t rows = s.rows, P = prob.P(), K = s.codebook_size(), groups = s.groups();
  const int G = s.group_size, M = s.num_codebooks;
  std::vector<float> residual(static_cast<std::size_t>(rows * P));  // [rows·groups, G] points
  for (index_t o = 0; o < rows; ++o) {
    double norm2 = 0.0;
    const float* w = prob.w_row(o);
    for (index_t c = 0; c < P; ++c) norm2 += static_cast<double>(w[c]) * w[c];
    const float scale = norm2 > 0.0 ? static_cast<float>(std::sqrt(norm2)) : 1.0f;
    a.scales[static_cast<std::size_t>(o)] = scale;
    for (index_t c = 0; c < P; ++c) residual[static_cast<std::size_t>(o * P + c)] = w[c] / scale;
  }
  const Rng root(options.seed);
  const index_t n_points = rows * groups;
  for (int m = 0; m < M; ++m) {
    Rng rng = root.fork(static_cast<std::uint64_t>(m));
    KMeansResult km = kmeans(residual.data(), n_points, G, K, options.kmeans, rng);
    std::copy(km.centroids.begin(), km.centroids.end(), a.codebooks.begin() + m * K * G);
    for (index_t p = 0; p < n_points; ++p) {
      const std::uint32_t k = km.assignment[static_cast<std::size_t>(p)];
      a.codes[static_cast<std::size_t>(p * M + m)] = k;
      const float* c = km.centroids.data() + static_cast<index_t>(k) * G;
      for (int d = 0; d < G; ++d) residual[static_cast<std::size_t>(p * G + d)] -= c[d];
    }
  }
  return a;
}

// Runs the continuous step selected by `options` (state is only used by Adam).
inline void additive_continuous_step(const AdditiveProblem& prob, const std::vector<float>& WH, AdditiveCodes& a,
                                     const AdditiveCalibOptions& options, AdditiveAdamState& adam_state) {
  if (options.update == CodebookUpdate::ExactLeastSquares) {
    additive_update_codebooks_ls(prob, WH, a, options.ls);
    additive_update_scales_ls(prob, WH, a);
  } else {
    additive_update_adam(prob, a, options.adam, adam_state);
  }
}

// Calibrates one matrix W [rows, cols] against H [cols, cols] (H.data == nullptr: identity).
inline AdditiveCodes calibrate_additive(MatrixView<const float> W, MatrixView<const float> H,
                                        const AdditiveCalibOptions& options, AdditiveCalibReport* report = nullptr) {
  const AdditiveShape shape = options.shape(W.rows(), W.cols());
  shape.validate("additive calibration" + (options.label.empty() ? std::string() : " of " + options.label));
  const AdditiveProblem prob = make_additive_problem(W, H, shape);
  const std::vector<float> WH = additive_wh(prob);
  const double energy = std::max(additive_reference_energy(prob, WH), 1e-30);
  AdditiveCodes a = additive_initialize(prob, options);
  AdditiveAdamState adam_state;
  double previous = additive_objective(prob, a);
  AdditiveCalibReport local;
  local.initial_relative_mse = previous / energy;
  const Rng root(options.seed ^ 0x5eedbea3ULL);
  for (int epoch = 1; epoch <= options.max_epochs; ++epoch) {
    additive_continuous_step(prob, WH, a, options, adam_state);
    Rng rng = root.fork(static_cast<std::uint64_t>(epoch));
    const double loss = additive_beam_search(prob, a, BeamSearchOptions{options.beam_size}, rng);
    local.history.push_back(loss / energy);
    local.epochs = epoch;
    if (options.verbose)
      std::fprintf(stderr, "  aq %s epoch %d: relative mse %.6f\n", options.label.c_str(), epoch, loss / energy);
    const bool converged = !(loss < previous * (1.0 - options.relative_mse_tolerance));
    previous = loss;
    if (converged) break;
  }
  // A last exact update for the final codes never increases the objective.
  if (options.update == CodebookUpdate::ExactLeastSquares) additive_continuous_step(prob, WH, a, options, adam_state);
  local.relative_mse = additive_objective(prob, a) / energy;
  if (report) *report = local;
  return a;
}

}  // namespace lowbit::calib
