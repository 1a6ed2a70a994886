// GPTQ (Frantar et al., ICLR 2023; IST-DASLab/gptq, ALGORITHMS.md §6.1): quantize the columns of W one
// at a time and push each column's rounding error onto the columns not yet quantized, weighted by the
// inverse Hessian, which minimizes tr(ΔW H ΔWᵀ) greedily. With U the upper Cholesky factor of H⁻¹,
// column i's error e = (w_i − q_i)/U_ii updates W[:, j] −= e·U_ij for j > i. Updates inside a block of
// columns are applied immediately; the rest of the matrix gets one GEMM per block ("lazy batch").
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "rtn.hpp"

namespace lowbit::calib {

struct GptqOptions {
  double percdamp = 0.01;   // dampening: H += percdamp · mean(diag H) · I
  int block_size = 128;     // columns per lazy-update block (rounded up to a multiple of the group)
  bool act_order = false;   // process columns by decreasing diag(H)
  bool static_groups = false;  // fit every group's parameters from the unmodified W up front
};

struct GptqStats {
  double proxy_loss = 0.0;  // Σ e² / 2 over all quantized entries, as GPTQ reports it
  double damp = 0.0;        // the absolute dampening added to diag(H)
  int dampening_retries = 0;
  index_t dead_columns = 0;
  bool forced_static_groups = false;  // act-order with groups needs static groups in this format
};

namespace detail {

// Upper Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU); dampening grows ×10 when H is not positive definite.
inline Eigen::MatrixXd gptq_inverse_cholesky(Eigen::MatrixXd H, double percdamp, GptqStats& stats) {
  const index_t n = H.rows();
  const double mean_diag = H.diagonal().mean();
  double damp = percdamp * mean_diag;
  for (int attempt = 0; attempt < 6; ++attempt) {
    Eigen::MatrixXd Hd = H;
    Hd.diagonal().array() += damp;
    Eigen::LLT<Eigen::MatrixXd> llt(Hd);
    if (llt.info() == Eigen::Success) {
      Eigen::MatrixXd Hinv = llt.solve(Eigen::MatrixXd::Identity(n, n));
      Hinv = 0.5 * (Hinv + Hinv.transpose());
      Eigen::LLT<Eigen::MatrixXd> llt_inv(Hinv);
      if (llt_inv.info() == Eigen::Success) {
        stats.damp = damp;
        return llt_inv.matrixU();
      }
    }
    ++stats.dampening_retries;
    damp = damp > 0 ? damp * 10.0 : 1e-6 * std::max(1.0, mean_diag);
  }
  fail("gptq: the Hessian (", n, "x", n, ") is not positive definite even with dampening ", damp,
       "; the calibration data may be degenerate");
}

}  // namespace detail

// Quantizes W [rows, cols] to `Format` given H [cols, cols] (any positive scale, e.g. 2/n·XᵀX).
// With `fixed_grid` (rows × groups-per-row parameters, row-major) the grid is given and GPTQ only chooses
// the codes: every group keeps its parameters (static groups), e.g. BCQ's level tables in the
// full-Hessian ALTERNATING of calib/bcq_hessian.hpp. `factor`, when given, is
// detail::gptq_inverse_cholesky of H (columns in their own order, so no act-order; no zero diagonal), for
// callers that quantize several times with one H.
template <class Format>
typename GroupGrid<Format>::Packed gptq_quantize(
    MatrixView<const float> W_in, const Eigen::MatrixXd& H_in, const GptqOptions& options = {},
    GptqStats* stats_out = nullptr, const std::vector<typename GroupGrid<Format>::Params>* fixed_grid = nullptr,
    const Eigen::MatrixXd* factor = nullptr) {
  using Grid = GroupGrid<Format>;
  using Params = typename Grid::Params;
  const index_t rows = W_in.rows(), cols = W_in.cols();
  LOWBIT_CHECK(rows > 0 && cols > 0, "gptq: empty weight matrix ", rows, "x", cols);
  LOWBIT_CHECK(H_in.rows() == cols && H_in.cols() == cols, "gptq: Hessian is ", H_in.rows(), "x", H_in.cols(),
               ", expected ", cols, "x", cols, " for a weight with ", cols, " input features");
  LOWBIT_CHECK(options.percdamp >= 0 && options.block_size > 0, "gptq: percdamp must be >= 0 and block_size > 0");
  GptqStats stats;
  const index_t group = Grid::group_size(cols);
  const index_t groups_per_row = (cols + group - 1) / group;
  const bool grouped = group < cols;
  const bool static_groups = options.static_groups || (options.act_order && grouped) || fixed_grid != nullptr;
  stats.forced_static_groups = static_groups && !options.static_groups && fixed_grid == nullptr;
  LOWBIT_CHECK(!fixed_grid || fixed_grid->size() == static_cast<std::size_t>(rows * groups_per_row),
               "gptq: the fixed grid has ", fixed_grid ? fixed_grid->size() : 0, " group parameters, expected ",
               rows * groups_per_row);

  Eigen::MatrixXd W(rows, cols);  // column-major: column updates are contiguous
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) W(r, c) = W_in(r, c);
  Eigen::MatrixXd H = H_in;

  for (index_t c = 0; c < cols; ++c)
    if (H(c, c) == 0.0) {  // a dead input: nothing to preserve, quantize zeros
      H(c, c) = 1.0;
      W.col(c).setZero();
      ++stats.dead_columns;
    }

  auto packed = Grid::make(rows, cols);
  // Parameters of group g of row r, in original column order.
  std::vector<Params> params(static_cast<std::size_t>(rows * groups_per_row));
  auto fit_group = [&](index_t g, index_t first_col, index_t count) {
    for (index_t r = 0; r < rows; ++r) {
      float lo = static_cast<float>(W(r, first_col)), hi = lo;
      for (index_t c = first_col; c < first_col + count; ++c) {
        lo = std::min(lo, static_cast<float>(W(r, c)));
        hi = std::max(hi, static_cast<float>(W(r, c)));
      }
      params[static_cast<std::size_t>(r * groups_per_row + g)] = Grid::fit(lo, hi);
    }
  };
  if (fixed_grid)
    params = *fixed_grid;
  else if (static_groups)
    for (index_t g = 0; g < groups_per_row; ++g) fit_group(g, g * group, std::min(group, cols - g * group));

  std::vector<index_t> perm(static_cast<std::size_t>(cols));
  std::iota(perm.begin(), perm.end(), index_t{0});
  if (options.act_order) {
    std::stable_sort(perm.begin(), perm.end(), [&](index_t a, index_t b) { return H(a, a) > H(b, b); });
    Eigen::MatrixXd Wp(rows, cols), Hp(cols, cols);
    for (index_t j = 0; j < cols; ++j) {
      Wp.col(j) = W.col(perm[j]);
      for (index_t i = 0; i < cols; ++i) Hp(i, j) = H(perm[i], perm[j]);
    }
    W.swap(Wp);
    H.swap(Hp);
  }

  LOWBIT_CHECK(!factor || (!options.act_order && factor->rows() == cols && factor->cols() == cols),
               "gptq: a precomputed factor must be ", cols, "x", cols, " with the columns in their own order (no act-order)");
  Eigen::MatrixXd own;
  if (!factor) own = detail::gptq_inverse_cholesky(std::move(H), options.percdamp, stats);
  const Eigen::MatrixXd& U = factor ? *factor : own;

  // Blocks hold whole groups so a group's parameters are fitted from fully updated columns.
  index_t block = options.block_size;
  if (grouped && !static_groups) block = std::max<index_t>(1, (block + group - 1) / group) * group;

  Eigen::MatrixXd E(rows, block);
  for (index_t i1 = 0; i1 < cols; i1 += block) {
    const index_t i2 = std::min(cols, i1 + block), count = i2 - i1;
    for (index_t i = 0; i < count; ++i) {
      const index_t j = i1 + i;         // position in processing order
      const index_t original = perm[static_cast<std::size_t>(j)];
      const index_t g = original / group;
      if (!static_groups && j % group == 0) fit_group(g, j, std::min(group, cols - j));
      const double d = U(j, j);
      for (index_t r = 0; r < rows; ++r) {
        const Params& p = params[static_cast<std::size_t>(r * groups_per_row + g)];
        const float w = static_cast<float>(W(r, j));
        const std::uint32_t code = Grid::encode(w, p);
        Grid::set_code(packed, r, original, code);
        const double err = (W(r, j) - static_cast<double>(Grid::decode(code, p))) / d;
        E(r, i) = err;
        stats.proxy_loss += 0.5 * err * err;
      }
      if (i + 1 < count)
        W.block(0, j + 1, rows, count - i - 1).noalias() -=
            E.col(i) * U.row(j).segment(j + 1, count - i - 1);
    }
    if (i2 < cols) W.rightCols(cols - i2).noalias() -= E.leftCols(count) * U.block(i1, i2, count, cols - i2);
  }

  for (index_t r = 0; r < rows; ++r)
    for (index_t g = 0; g < groups_per_row; ++g)
      Grid::set_params(packed, r, g, params[static_cast<std::size_t>(r * groups_per_row + g)]);
  if (stats_out) *stats_out = stats;
  return packed;
}

}  // namespace lowbit::calib
