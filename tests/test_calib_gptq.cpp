// GPTQ against a plain, unblocked reference written here from the paper's update rule (its own
// Gauss-Jordan inverse and Cholesky, no lazy batching, explicit permutation), and against RTN on the
// objective GPTQ minimizes, tr(ΔW H ΔWᵀ), with correlated inputs.
#include <doctest/doctest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "lowbit/calib/gptq.hpp"
#include "lowbit/calib/hessian.hpp"
#include "lowbit/calib/rtn.hpp"
#include "lowbit/core/rng.hpp"
#include "lowbit/format/nf3.hpp"
#include "test_calib_formats.hpp"

using namespace lowbit;

namespace {

// Correlated inputs: x = z·M with a random mixing matrix, plus per-feature scales spanning 10x.
std::vector<float> correlated_inputs(index_t n, index_t dim, Rng& rng) {
  std::vector<double> mix(static_cast<std::size_t>(dim * dim));
  for (auto& m : mix) m = rng.normal();
  std::vector<double> scale(static_cast<std::size_t>(dim));
  for (auto& s : scale) s = 0.3 + 3.0 * rng.uniform();
  std::vector<float> X(static_cast<std::size_t>(n * dim));
  std::vector<double> z(static_cast<std::size_t>(dim));
  for (index_t t = 0; t < n; ++t) {
    for (auto& v : z) v = rng.normal();
    for (index_t j = 0; j < dim; ++j) {
      double acc = 0;
      for (index_t k = 0; k < std::min<index_t>(dim, 8); ++k) acc += z[(j + k) % dim] * mix[j * dim + k];
      X[t * dim + j] = static_cast<float>(scale[j] * (acc + 0.3 * z[j]));
    }
  }
  return X;
}

std::vector<float> random_weights(index_t rows, index_t cols, Rng& rng) {
  std::vector<float> W(static_cast<std::size_t>(rows * cols));
  for (auto& w : W) w = static_cast<float>(0.05 * rng.normal());
  return W;
}

// Plain inverse by Gauss-Jordan with partial pivoting.
std::vector<double> reference_inverse(std::vector<double> A, index_t n) {
  std::vector<double> inv(static_cast<std::size_t>(n * n), 0.0);
  for (index_t i = 0; i < n; ++i) inv[i * n + i] = 1.0;
  for (index_t c = 0; c < n; ++c) {
    index_t pivot = c;
    for (index_t r = c + 1; r < n; ++r)
      if (std::abs(A[r * n + c]) > std::abs(A[pivot * n + c])) pivot = r;
    for (index_t k = 0; k < n; ++k) {
      std::swap(A[c * n + k], A[pivot * n + k]);
      std::swap(inv[c * n + k], inv[pivot * n + k]);
    }
    const double d = A[c * n + c];
    for (index_t k = 0; k < n; ++k) {
      A[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (index_t r = 0; r < n; ++r) {
      if (r == c) continue;
      const double f = A[r * n + c];
      if (f == 0) continue;
      for (index_t k = 0; k < n; ++k) {
        A[r * n + k] -= f * A[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}

// Upper factor U with A = UᵀU (Cholesky–Banachiewicz on the transpose).
std::vector<double> reference_cholesky_upper(const std::vector<double>& A, index_t n) {
  std::vector<double> U(static_cast<std::size_t>(n * n), 0.0);
  for (index_t i = 0; i < n; ++i) {
    double s = A[i * n + i];
    for (index_t k = 0; k < i; ++k) s -= U[k * n + i] * U[k * n + i];
    U[i * n + i] = std::sqrt(s);
    for (index_t j = i + 1; j < n; ++j) {
      double t = A[i * n + j];
      for (index_t k = 0; k < i; ++k) t -= U[k * n + i] * U[k * n + j];
      U[i * n + j] = t / U[i * n + i];
    }
  }
  return U;
}

// Unblocked GPTQ: every column's error is applied to all later columns at once.
template <class Format>
std::vector<std::uint32_t> reference_gptq(std::vector<float> Wf, index_t rows, index_t cols, Eigen::MatrixXd Hm,
                                          double percdamp, bool act_order, bool static_groups, index_t group) {
  using Grid = calib::GroupGrid<Format>;
  std::vector<double> W(Wf.begin(), Wf.end());
  std::vector<double> H(static_cast<std::size_t>(cols * cols));
  for (index_t i = 0; i < cols; ++i)
    for (index_t j = 0; j < cols; ++j) H[i * cols + j] = Hm(i, j);
  for (index_t c = 0; c < cols; ++c)
    if (H[c * cols + c] == 0) {
      H[c * cols + c] = 1;
      for (index_t r = 0; r < rows; ++r) W[r * cols + c] = 0;
    }
  const index_t groups = (cols + group - 1) / group;
  std::vector<typename Grid::Params> params(static_cast<std::size_t>(rows * groups));
  auto fit = [&](index_t r, index_t g, const std::vector<index_t>& columns) {
    float lo = static_cast<float>(W[r * cols + columns[0]]), hi = lo;
    for (index_t c : columns) {
      lo = std::min(lo, static_cast<float>(W[r * cols + c]));
      hi = std::max(hi, static_cast<float>(W[r * cols + c]));
    }
    params[r * groups + g] = Grid::fit(lo, hi);
  };
  auto group_columns = [&](index_t g) {
    std::vector<index_t> c;
    for (index_t k = g * group; k < std::min(cols, (g + 1) * group); ++k) c.push_back(k);
    return c;
  };
  if (static_groups)
    for (index_t r = 0; r < rows; ++r)
      for (index_t g = 0; g < groups; ++g) fit(r, g, group_columns(g));
  std::vector<index_t> order(static_cast<std::size_t>(cols));
  std::iota(order.begin(), order.end(), index_t{0});
  if (act_order)
    std::stable_sort(order.begin(), order.end(), [&](index_t a, index_t b) { return H[a * cols + a] > H[b * cols + b]; });
  // Work in processing order: P = permuted H, damped.
  std::vector<double> P(static_cast<std::size_t>(cols * cols));
  double mean_diag = 0;
  for (index_t i = 0; i < cols; ++i) mean_diag += H[i * cols + i];
  mean_diag /= static_cast<double>(cols);
  for (index_t i = 0; i < cols; ++i)
    for (index_t j = 0; j < cols; ++j)
      P[i * cols + j] = H[order[i] * cols + order[j]] + (i == j ? percdamp * mean_diag : 0.0);
  const auto U = reference_cholesky_upper(reference_inverse(P, cols), cols);
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(rows * cols));
  for (index_t j = 0; j < cols; ++j) {
    const index_t col = order[j];
    const index_t g = col / group;
    if (!static_groups && j % group == 0) {
      std::vector<index_t> columns;
      for (index_t k = j; k < std::min(cols, j + group); ++k) columns.push_back(order[k]);
      for (index_t r = 0; r < rows; ++r) fit(r, g, columns);
    }
    for (index_t r = 0; r < rows; ++r) {
      const auto& p = params[r * groups + g];
      const std::uint32_t code = Grid::encode(static_cast<float>(W[r * cols + col]), p);
      codes[r * cols + col] = code;
      const double err = (W[r * cols + col] - Grid::decode(code, p)) / U[j * cols + j];
      for (index_t k = j + 1; k < cols; ++k) W[r * cols + order[k]] -= err * U[j * cols + k];
    }
  }
  return codes;
}

Eigen::MatrixXd hessian_of(const std::vector<float>& X, index_t n, index_t dim) {
  calib::HessianAccumulator acc(dim);
  acc.add(MatrixView<const float>(X.data(), n, dim));
  return acc.gptq_hessian();
}

template <class Format>
void check_against_reference(bool act_order, bool static_groups, index_t dead_column) {
  using Grid = calib::GroupGrid<Format>;
  const index_t rows = 64, cols = 256, n = 2048;
  Rng rng(42);
  auto X = correlated_inputs(n, cols, rng);
  if (dead_column >= 0)
    for (index_t t = 0; t < n; ++t) X[t * cols + dead_column] = 0.0f;
  auto W = random_weights(rows, cols, rng);
  const Eigen::MatrixXd H = hessian_of(X, n, cols);
  calib::GptqOptions options;
  options.act_order = act_order;
  options.static_groups = static_groups;
  calib::GptqStats stats;
  const auto packed =
      calib::gptq_quantize<Format>(MatrixView<const float>(W.data(), rows, cols), H, options, &stats);
  const index_t group = Grid::group_size(cols);
  const bool effective_static = static_groups || (act_order && group < cols);
  const auto expected = reference_gptq<Format>(W, rows, cols, H, options.percdamp, act_order, effective_static, group);
  index_t mismatches = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) mismatches += test::code_of<Format>(packed, r, c) != expected[r * cols + c];
  CHECK(mismatches == 0);
  CHECK(stats.dead_columns == (dead_column >= 0 ? 1 : 0));
}

template <class Format>
double proxy_error(const std::vector<float>& W, const std::vector<float>& What, index_t rows, index_t cols,
                   const Eigen::MatrixXd& H) {
  Eigen::MatrixXd D(rows, cols);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) D(r, c) = double(W[r * cols + c]) - double(What[r * cols + c]);
  return (D * H * D.transpose()).trace();
}

}  // namespace

TEST_CASE("gptq: blocked equals the unblocked reference (nf3, groups of 64 inside blocks of 128)") {
  check_against_reference<NF3<64>>(false, false, -1);
}
TEST_CASE("gptq: act-order, static groups and a dead column match the reference (nf3:128)") {
  check_against_reference<NF3<128>>(true, false, 17);
  check_against_reference<NF3<128>>(false, true, 3);
}

TEST_CASE_TEMPLATE("gptq: same codes as the unblocked reference (uniform)", Format, LOWBIT_TEST_UNIFORM_FORMATS) {
  check_against_reference<Format>(false, false, -1);
  check_against_reference<Format>(true, false, 5);
  check_against_reference<Format>(false, true, -1);
}

TEST_CASE_TEMPLATE("gptq: beats RTN on tr(dW H dW^T) with correlated inputs", Format, LOWBIT_TEST_UNIFORM_FORMATS,
                   NF3<128>) {
  const index_t rows = 96, cols = 256, n = 4096;
  Rng rng(7);
  const auto X = correlated_inputs(n, cols, rng);
  const auto W = random_weights(rows, cols, rng);
  const Eigen::MatrixXd H = hessian_of(X, n, cols);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  std::vector<float> rtn_hat(W.size()), gptq_hat(W.size()), act_hat(W.size());
  test::dequantize_into<Format>(calib::rtn_quantize<Format>(Wv), rtn_hat, rows, cols);
  test::dequantize_into<Format>(calib::gptq_quantize<Format>(Wv, H), gptq_hat, rows, cols);
  calib::GptqOptions act;
  act.act_order = true;
  test::dequantize_into<Format>(calib::gptq_quantize<Format>(Wv, H, act), act_hat, rows, cols);
  const double e_rtn = proxy_error<Format>(W, rtn_hat, rows, cols, H);
  const double e_gptq = proxy_error<Format>(W, gptq_hat, rows, cols, H);
  const double e_act = proxy_error<Format>(W, act_hat, rows, cols, H);
  MESSAGE("rtn ", e_rtn, "  gptq ", e_gptq, "  gptq+act-order ", e_act);
  CHECK(e_gptq < 0.8 * e_rtn);
  CHECK(e_act < 0.8 * e_rtn);
}

TEST_CASE("hessian: double running sum equals a direct XᵀX over all batches") {
  Rng rng(3);
  const index_t dim = 40;
  calib::HessianAccumulator acc(dim);
  Eigen::MatrixXd direct = Eigen::MatrixXd::Zero(dim, dim);
  for (int batch = 0; batch < 5; ++batch) {
    const index_t n = 17 + batch * 9;
    std::vector<float> X(static_cast<std::size_t>(n * dim));
    for (auto& x : X) x = static_cast<float>(rng.normal());
    acc.add(MatrixView<const float>(X.data(), n, dim));
    for (index_t t = 0; t < n; ++t)
      for (index_t i = 0; i < dim; ++i)
        for (index_t j = 0; j < dim; ++j) direct(i, j) += double(X[t * dim + i]) * double(X[t * dim + j]);
  }
  CHECK(acc.rows() == 17 * 5 + 9 * 10);
  CHECK((acc.sum() - direct).cwiseAbs().maxCoeff() < 1e-4 * direct.cwiseAbs().maxCoeff());
  CHECK((acc.sum() - acc.sum().transpose()).cwiseAbs().maxCoeff() == 0.0);
}
