// AutoClip: BitDistiller's asymmetric extension of AWQ's clipping search (ALGORITHMS.md §2.2). For every
// row and group it tries max' = max·(1 − i/n_grid), min' = min·(1 − j/n_grid) for i, j < n_grid·max_shrink,
// clamps the group to [min', max'], fake-quantizes it with parameters fitted to that range, and keeps
// the pair with the smallest mean squared error of the group's partial dot products Σ_k x_k w_k over
// calibration tokens. That error equals dᵀ C_g d with d = w − Q(clamp(w)) and C_g = X_gᵀX_g / T, so the
// search runs on the group's Gram block: one small GEMM per candidate instead of a pass over tokens.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "rtn.hpp"

namespace lowbit::calib {

struct AutoClipOptions {
  int n_grid = 20;          // shrink step 1/n_grid
  double max_shrink = 0.5;  // candidates i, j in [0, n_grid·max_shrink)
};

struct AutoClipStats {
  double error_before = 0.0;  // Σ over rows and groups of the objective without clipping
  double error_after = 0.0;   // the same with the chosen clip
  index_t clipped_groups = 0; // (row, group) pairs whose best clip is not (0, 0)
};

// Gram matrix C = XᵀX / T of sampled input rows X [T, cols] (the AutoClip objective's metric).
inline Eigen::MatrixXd gram_from_tokens(MatrixView<const float> X) {
  LOWBIT_CHECK(X.rows() > 0, "autoclip: no calibration tokens were given");
  Eigen::MatrixXd C = Eigen::MatrixXd::Zero(X.cols(), X.cols());
  for (index_t t = 0; t < X.rows(); ++t) {
    Eigen::Map<const Eigen::VectorXf> x(X.row(t), X.cols());
    C.selfadjointView<Eigen::Lower>().rankUpdate(x.cast<double>());
  }
  C.triangularView<Eigen::StrictlyUpper>() = C.transpose();
  return C / static_cast<double>(X.rows());
}

// The objective of one row segment: mean over tokens of (x_g·(w − ŵ))² = dᵀ C_g d.
inline double partial_output_error(const float* w, const float* w_hat, index_t count,
                                   const Eigen::Ref<const Eigen::MatrixXd>& C_group) {
  Eigen::VectorXd d(count);
  for (index_t k = 0; k < count; ++k) d(k) = static_cast<double>(w[k]) - static_cast<double>(w_hat[k]);
  return d.dot(C_group * d);
}

// The range a group [lo0, hi0] has after clamping to [lo0·shrink_lo, hi0·shrink_hi]: the quantizer is
// fitted to the clamped group's own min and max, exactly as BitDistiller re-fits after clamping.
inline void clip_range(float lo0, float hi0, float shrink_lo, float shrink_hi, float& lo, float& hi) {
  hi = std::clamp(hi0 * shrink_hi, lo0, hi0);
  lo = std::clamp(lo0 * shrink_lo, lo0, hi);
}

// Searches the clip of every (row, group) of W [rows, cols] against C [cols, cols] (only its diagonal
// group blocks are read) and clamps W in place to the chosen ranges.
template <class Format>
AutoClipStats autoclip_apply(MatrixView<float> W, const Eigen::MatrixXd& C, const AutoClipOptions& options = {}) {
  using Grid = GroupGrid<Format>;
  const index_t rows = W.rows(), cols = W.cols();
  LOWBIT_CHECK(C.rows() == cols && C.cols() == cols, "autoclip: Gram matrix is ", C.rows(), "x", C.cols(),
               ", expected ", cols, "x", cols);
  LOWBIT_CHECK(options.n_grid > 0 && options.max_shrink >= 0 && options.max_shrink < 1,
               "autoclip: n_grid must be positive and max_shrink in [0, 1)");
  const index_t group = Grid::group_size(cols);
  int steps = static_cast<int>(options.n_grid * options.max_shrink + 1e-9);
  if (steps < 1) steps = 1;
  AutoClipStats stats;

  for (index_t c0 = 0; c0 < cols; c0 += group) {
    const index_t count = std::min(group, cols - c0);
    const Eigen::MatrixXf Cg = C.block(c0, c0, count, count).cast<float>();
    std::vector<float> best_err(static_cast<std::size_t>(rows), std::numeric_limits<float>::infinity());
    std::vector<float> no_clip_err(static_cast<std::size_t>(rows), 0.0f);
    std::vector<float> best_lo(static_cast<std::size_t>(rows)), best_hi(static_cast<std::size_t>(rows));
    std::vector<float> lo0(static_cast<std::size_t>(rows)), hi0(static_cast<std::size_t>(rows));
    for (index_t r = 0; r < rows; ++r) {
      const float* w = W.row(r) + c0;
      lo0[r] = *std::min_element(w, w + count);
      hi0[r] = *std::max_element(w, w + count);
    }
    Eigen::MatrixXf D(rows, count), DC(rows, count);
    for (int i = 0; i < steps; ++i) {
      for (int j = 0; j < steps; ++j) {
        const float shrink_hi = 1.0f - static_cast<float>(i) / static_cast<float>(options.n_grid);
        const float shrink_lo = 1.0f - static_cast<float>(j) / static_cast<float>(options.n_grid);
        parallel_for(0, rows, [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) {
            const float* w = W.row(r) + c0;
            float hi = 0, lo = 0;
            clip_range(lo0[r], hi0[r], shrink_lo, shrink_hi, lo, hi);
            const auto p = Grid::fit(lo, hi);
            for (index_t k = 0; k < count; ++k) {
              const float clamped = std::clamp(w[k], lo, hi);
              D(r, k) = w[k] - Grid::decode(Grid::encode(clamped, p), p);
            }
          }
        }, 64);
        DC.noalias() = D * Cg;
        for (index_t r = 0; r < rows; ++r) {
          const float err = D.row(r).dot(DC.row(r));
          if (i == 0 && j == 0) no_clip_err[r] = err;
          if (err < best_err[r]) {  // strict: ties keep the smaller shrink
            best_err[r] = err;
            clip_range(lo0[r], hi0[r], shrink_lo, shrink_hi, best_lo[r], best_hi[r]);
          }
        }
      }
    }
    for (index_t r = 0; r < rows; ++r) {
      stats.error_before += no_clip_err[r];
      stats.error_after += best_err[r];
      if (best_hi[r] != hi0[r] || best_lo[r] != lo0[r]) {
        ++stats.clipped_groups;
        float* w = W.row(r) + c0;
        for (index_t k = 0; k < count; ++k) w[k] = std::clamp(w[k], best_lo[r], best_hi[r]);
      }
    }
  }
  return stats;
}

}  // namespace lowbit::calib
