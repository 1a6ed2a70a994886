// Full-Hessian ALTERNATING for the BCQ formats: the per-row objective is the layer-output error
//   f_r(θ_r, B_r) = (w_r − ŵ_r)ᵀ H (w_r − ŵ_r),   H = XᵀX + λ·mean(diag)·I,
// summed over rows tr(ΔW H ΔWᵀ), the error GPTQ minimizes (calib/gptq.hpp). The diagonal variant of
// calib/bcq.hpp keeps only diag(H) and so ignores how the errors of correlated inputs add up.
//
// From a starting fit (the diag(H)-weighted ALTERNATING), each round
//   1. re-chooses the codes by GPTQ with the current level tables as a fixed grid: the columns are rounded
//      one at a time to the nearest level of their group, each rounding error pushed onto the columns not
//      yet rounded through H⁻¹ (its Cholesky factor computed once for all rounds); a row keeps its new
//      codes only if f_r went down;
//   2. re-solves the scales: for each row, all its groups' α's and offsets at once given the codes,
//        (Aᵀ H A) θ = Aᵀ H w,
//      A the cols × groups·(n+1) design matrix (column (g, i): b_i in group g's columns, ±1; column (g, n):
//      1 there), in double; made canonical (α > 0, ascending) and fp16-rounded, kept only if f_r did not
//      grow.
// So f never increases (tests/test_calib_bcq.cpp checks it round by round). Cost per round: about
// (n+1)·rows·cols² multiply-adds in double GEMMs for step 2 and one GPTQ pass for step 1.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../format/bcq.hpp"
#include "../quantizer/bcq.hpp"
#include "gptq.hpp"

namespace lowbit::calib {

// H + damp·mean(diag H)·I (a dead column gets 1 on its diagonal), the H of every function below.
inline Eigen::MatrixXd bcq_damped_hessian(Eigen::MatrixXd H, double damp) {
  const double mean = H.diagonal().mean();
  for (index_t c = 0; c < H.rows(); ++c)
    if (H(c, c) == 0.0) H(c, c) = 1.0;
  H.diagonal().array() += damp * mean;
  return H;
}

// f_r for every row of the fit P of W.
template <class Format>
Eigen::VectorXd bcq_row_objectives(MatrixView<const float> W, const BCQPacked<Format>& P, const Eigen::MatrixXd& H) {
  const index_t rows = W.rows(), cols = W.cols();
  Eigen::MatrixXd D(rows, cols);
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    std::vector<float> wq(static_cast<std::size_t>(cols));
    for (index_t r = r0; r < r1; ++r) {
      kernels::cpu::bcq_dequantize_row(P, r, wq.data());
      for (index_t c = 0; c < cols; ++c) D(r, c) = static_cast<double>(W(r, c)) - static_cast<double>(wq[c]);
    }
  });
  const Eigen::MatrixXd DH = D * H;
  return DH.cwiseProduct(D).rowwise().sum();
}

// The least-squares θ of every row given P's codes: rows × groups·(n+1), row r's group g at columns
// g·(n+1) .. g·(n+1)+n (α_1..α_n, offset); a row whose system is degenerate gets NaN.
template <class Format>
Eigen::MatrixXd bcq_full_hessian_scales(MatrixView<const float> W, const BCQPacked<Format>& P, const Eigen::MatrixXd& H) {
  constexpr int n = Format::bits, k1 = n + 1;
  const index_t rows = W.rows(), cols = W.cols(), G = P.groups_per_row(), K = G * k1;
  LOWBIT_CHECK(H.rows() == cols && H.cols() == cols, "bcq full-Hessian fit: H is ", H.rows(), "x", H.cols(),
               ", expected ", cols, "x", cols);
  // The design matrices as rows × cols: A[i](r, c) = ±1 (plane i of row r's code at c), A[n] = 1.
  std::vector<Eigen::MatrixXd> A(static_cast<std::size_t>(k1), Eigen::MatrixXd(rows, cols));
  Eigen::MatrixXd Wd(rows, cols);
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r)
      for (index_t c = 0; c < cols; ++c) {
        const std::uint32_t code = P.code(r, c);
        for (int i = 0; i < n; ++i) A[static_cast<std::size_t>(i)](r, c) = ((code >> i) & 1u) ? 1.0 : -1.0;
        A[static_cast<std::size_t>(n)](r, c) = 1.0;
        Wd(r, c) = W(r, c);
      }
  });
  // M(r, (g,i)·K + (g',j)) = Σ_{c∈g'} (A_gi H)(r, c)·A[j](r, c); rhs(r, (g,i)) = Σ_c (A_gi H)(r, c)·w(r, c).
  Eigen::MatrixXd M(rows, K * K), rhs(rows, K);
  for (index_t g = 0; g < G; ++g) {
    const index_t c0 = P.group_begin(g), count = P.group_end(g) - c0;
    for (int i = 0; i < k1; ++i) {
      const Eigen::MatrixXd T = A[static_cast<std::size_t>(i)].middleCols(c0, count) * H.middleRows(c0, count);
      const index_t gi = g * k1 + i;
      rhs.col(gi) = T.cwiseProduct(Wd).rowwise().sum();
      for (index_t g2 = 0; g2 < G; ++g2) {
        const index_t d0 = P.group_begin(g2), dc = P.group_end(g2) - d0;
        for (int j = 0; j < k1; ++j)
          M.col(gi * K + g2 * k1 + j) =
              T.middleCols(d0, dc).cwiseProduct(A[static_cast<std::size_t>(j)].middleCols(d0, dc)).rowwise().sum();
      }
    }
  }
  Eigen::MatrixXd theta(rows, K);
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    Eigen::MatrixXd Mr(K, K);
    for (index_t r = r0; r < r1; ++r) {
      for (index_t a = 0; a < K; ++a)
        for (index_t b = 0; b < K; ++b) Mr(a, b) = 0.5 * (M(r, a * K + b) + M(r, b * K + a));
      const double tr = Mr.trace();
      Eigen::VectorXd x = Eigen::VectorXd::Constant(K, std::numeric_limits<double>::quiet_NaN());
      if (tr > 0.0) {
        Mr.diagonal().array() += 1e-12 * tr;  // a plane equal to ± the offset's column makes Mr singular
        x = Mr.ldlt().solve(rhs.row(r).transpose());
      }
      theta.row(r) = x.transpose();
    }
  });
  return theta;
}

struct BCQHessianTrace {
  std::vector<double> objective;  // Σ_r f_r before the first round, then after each round
  index_t rows_recoded = 0;       // rows whose GPTQ codes were kept, over all rounds
  index_t rows_rescaled = 0;      // rows whose least-squares scales were kept, over all rounds
};

// `rounds` of full-Hessian ALTERNATING on the fit P of W, in place; H as from bcq_damped_hessian.
template <class Format>
void bcq_alternate_full_hessian(MatrixView<const float> W, const Eigen::MatrixXd& H, int rounds, BCQPacked<Format>& P,
                                BCQHessianTrace* trace = nullptr) {
  constexpr int n = Format::bits;
  using Params = BCQParams<n>;
  const index_t rows = W.rows(), cols = W.cols(), G = P.groups_per_row();
  LOWBIT_CHECK(P.rows() == rows && P.cols() == cols, "bcq full-Hessian fit: the fit is ", P.rows(), "x", P.cols(),
               ", the weight ", rows, "x", cols);
  Eigen::VectorXd obj = bcq_row_objectives(W, P, H);
  if (trace) trace->objective.assign(1, obj.sum());
  const index_t words = P.words_per_plane();
  // Copies row r of `from` into P where its objective is lower (or equal, when `ties`).
  auto keep_better_rows = [&](const BCQPacked<Format>& from, bool ties, index_t& kept) {
    const Eigen::VectorXd cand = bcq_row_objectives(W, from, H);
    for (index_t r = 0; r < rows; ++r) {
      if (!(cand(r) < obj(r) || (ties && cand(r) == obj(r)))) continue;
      std::copy_n(from.plane(r, 0), n * words, P.planes().begin() + r * n * words);
      for (index_t g = 0; g < G; ++g) P.set_params(r, g, from.params(r, g));
      obj(r) = cand(r);
      ++kept;
    }
  };
  index_t recoded = 0, rescaled = 0;
  GptqStats gptq_stats;  // H is damped already: no further dampening
  const Eigen::MatrixXd U = rounds > 0 ? detail::gptq_inverse_cholesky(H, 0.0, gptq_stats) : Eigen::MatrixXd();
  for (int t = 0; t < rounds; ++t) {
    // 1. codes by GPTQ on the fixed level tables.
    std::vector<Params> grid(static_cast<std::size_t>(rows * G));
    for (index_t r = 0; r < rows; ++r)
      for (index_t g = 0; g < G; ++g) grid[static_cast<std::size_t>(r * G + g)] = P.params(r, g);
    GptqOptions go;
    go.percdamp = 0.0;
    const auto coded = gptq_quantize<Format>(W, H, go, nullptr, &grid, &U);
    keep_better_rows(coded, false, recoded);
    // 2. every row's scales and offsets by least squares given the codes.
    const Eigen::MatrixXd theta = bcq_full_hessian_scales(W, P, H);
    BCQPacked<Format> scaled = P;
    parallel_for(0, rows, [&](index_t r0, index_t r1) {
      std::vector<std::uint32_t> codes(static_cast<std::size_t>(P.group_size()));
      for (index_t r = r0; r < r1; ++r) {
        if (!theta.row(r).allFinite()) continue;
        for (index_t g = 0; g < G; ++g) {
          const index_t c0 = P.group_begin(g), count = P.group_end(g) - c0;
          Params p;
          for (int i = 0; i < n; ++i) p.alpha[i] = static_cast<float>(theta(r, g * (n + 1) + i));
          p.offset = static_cast<float>(theta(r, g * (n + 1) + n));
          for (index_t c = 0; c < count; ++c) codes[static_cast<std::size_t>(c)] = P.code(r, c0 + c);
          bcq_canonicalize<n>(p, codes.data(), count);
          scaled.set_params(r, g, bcq_round(p));
          for (index_t c = 0; c < count; ++c) scaled.set_code(r, c0 + c, codes[static_cast<std::size_t>(c)]);
        }
      }
    });
    keep_better_rows(scaled, true, rescaled);
    if (trace) trace->objective.push_back(obj.sum());
  }
  if (trace) {
    trace->rows_recoded = recoded;
    trace->rows_rescaled = rescaled;
  }
}

}  // namespace lowbit::calib
