// The continuous step of AQLM: with codes fixed, update codebooks and per-row scales to lower
// tr(ΔW·H·ΔWᵀ). Two ways: (1) exact — the objective is quadratic in the codebooks, so we solve the
// normal equations A·θ = b (one G×G block of s_o²·H_jj' per pair of code positions of a row) with a
// Cholesky factorization, then set each row's scale in closed form (ALGORITHMS.md §7.3); (2) the
// paper's Adam (lr 1e-4, betas (0, 0.95), amsgrad) on codebooks and scales with gradient 2·ΔW·H.
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/parallel.hpp"
#include "beam_search.hpp"

namespace lowbit::calib {

// V = W·H [rows, P], fixed for a matrix; both exact updates need it.
inline std::vector<float> additive_wh(const AdditiveProblem& prob) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const index_t rows = prob.shape.rows, P = prob.P();
  std::vector<float> V(static_cast<std::size_t>(rows * P));
  Eigen::Map<const RowMajor> W(prob.W.data(), rows, P), H(prob.H.data(), P, P);
  Eigen::Map<RowMajor>(V.data(), rows, P).noalias() = W * H;
  return V;
}

// Solves the SPD system A·x = b by conjugate gradients preconditioned with the inverse G×G diagonal
// blocks of A, from the initial x (the current codebooks), to a relative residual of 1e-10: the same
// solution as a Cholesky solve at O(n²) per iteration instead of O(n³) (n = 4096 for 2x8 g8).
inline void solve_block_jacobi_cg(const Eigen::MatrixXd& A, const Eigen::VectorXd& b, int G, Eigen::VectorXd& x,
                                  int max_iterations = 500, double tolerance = 1e-10) {
  const index_t n = A.rows(), nb = n / G;
  std::vector<Eigen::LLT<Eigen::MatrixXd>> blocks(static_cast<std::size_t>(nb));
  for (index_t i = 0; i < nb; ++i) blocks[static_cast<std::size_t>(i)].compute(A.block(i * G, i * G, G, G));
  auto precondition = [&](const Eigen::VectorXd& r) {
    Eigen::VectorXd z(n);
    for (index_t i = 0; i < nb; ++i) z.segment(i * G, G) = blocks[static_cast<std::size_t>(i)].solve(r.segment(i * G, G));
    return z;
  };
  Eigen::VectorXd r = b - A.selfadjointView<Eigen::Lower>() * x;
  const double target = tolerance * std::max(b.norm(), 1e-300);
  Eigen::VectorXd z = precondition(r), p = z, Ap(n);
  double rz = r.dot(z);
  for (int it = 0; it < max_iterations && r.norm() > target; ++it) {
    Ap.noalias() = A.selfadjointView<Eigen::Lower>() * p;
    const double alpha = rz / p.dot(Ap);
    x += alpha * p;
    r -= alpha * Ap;
    z = precondition(r);
    const double rz_next = r.dot(z);
    p = z + (rz_next / rz) * p;
    rz = rz_next;
  }
}

// The same normal equations solved without forming A: A·v = Σ_o s_o²·D_oᵀ·H·D_o·v, where D_o places the
// row's codewords into its groups. Block-Jacobi CG (diagonal blocks Σ s_o²·H_jj over the positions
// using each codeword), from the current codebooks, to a relative residual of 1e-10.
inline void additive_codebooks_ls_matrix_free(const AdditiveProblem& prob, const std::vector<float>& WH,
                                              AdditiveCodes& a, const std::vector<index_t>& block_of,
                                              const std::vector<index_t>& codeword_of, double ridge) {
  const AdditiveShape& s = a.shape;
  const index_t rows = s.rows, P = prob.P(), K = s.codebook_size(), ncodes = s.codes_per_row();
  const int G = s.group_size, M = s.num_codebooks;
  const index_t nb = static_cast<index_t>(codeword_of.size()), n = nb * G;
  auto block_at = [&](index_t o, index_t i) {
    return block_of[static_cast<std::size_t>((i % M) * K + a.codes[static_cast<std::size_t>(o * ncodes + i)])];
  };
  Eigen::VectorXd b = Eigen::VectorXd::Zero(n), theta(n);
  std::vector<Eigen::MatrixXd> diag(static_cast<std::size_t>(nb), Eigen::MatrixXd::Zero(G, G));
  for (index_t o = 0; o < rows; ++o) {
    const double sc = a.scales[static_cast<std::size_t>(o)];
    for (index_t i = 0; i < ncodes; ++i) {
      const index_t bi = block_at(o, i), g0 = (i / M) * G;
      for (int p = 0; p < G; ++p) {
        b[bi * G + p] += sc * WH[static_cast<std::size_t>(o * P + g0 + p)];
        for (int q = 0; q < G; ++q) diag[static_cast<std::size_t>(bi)](p, q) += sc * sc * prob.H[static_cast<std::size_t>((g0 + p) * P + g0 + q)];
      }
    }
  }
  double mean_diag = 0.0;
  for (const auto& d : diag) mean_diag += d.trace();
  const double lambda = std::max(ridge * mean_diag / static_cast<double>(std::max<index_t>(1, n)), 1e-30);
  for (index_t bidx = 0; bidx < nb; ++bidx) {
    const float* cw = a.codebooks.data() + codeword_of[static_cast<std::size_t>(bidx)] * G;
    for (int p = 0; p < G; ++p) {
      theta[bidx * G + p] = cw[p];
      b[bidx * G + p] += lambda * cw[p];
      diag[static_cast<std::size_t>(bidx)](p, p) += lambda;
    }
  }
  // A·v in two fixed row halves (results independent of the thread count).
  auto apply = [&](const Eigen::VectorXd& v) {
    std::vector<Eigen::VectorXd> partial(2, Eigen::VectorXd::Zero(n));
    parallel_for(0, 2, [&](index_t c0, index_t c1) {
      std::vector<double> w(static_cast<std::size_t>(P)), z(static_cast<std::size_t>(P));
      for (index_t c = c0; c < c1; ++c)
        for (index_t o = rows * c / 2; o < rows * (c + 1) / 2; ++o) {
          std::fill(w.begin(), w.end(), 0.0);
          for (index_t i = 0; i < ncodes; ++i) {
            const index_t bi = block_at(o, i), g0 = (i / M) * G;
            for (int p = 0; p < G; ++p) w[static_cast<std::size_t>(g0 + p)] += v[bi * G + p];
          }
          const double s2 = static_cast<double>(a.scales[static_cast<std::size_t>(o)]) * a.scales[static_cast<std::size_t>(o)];
          for (index_t r = 0; r < P; ++r) {
            const float* h = prob.h_row(r);
            double acc = 0.0;
            for (index_t col = 0; col < P; ++col) acc += h[col] * w[static_cast<std::size_t>(col)];
            z[static_cast<std::size_t>(r)] = s2 * acc;
          }
          for (index_t i = 0; i < ncodes; ++i) {
            const index_t bi = block_at(o, i), g0 = (i / M) * G;
            for (int p = 0; p < G; ++p) partial[static_cast<std::size_t>(c)][bi * G + p] += z[static_cast<std::size_t>(g0 + p)];
          }
        }
    });
    Eigen::VectorXd out = partial[0] + partial[1] + lambda * v;
    return out;
  };
  std::vector<Eigen::LLT<Eigen::MatrixXd>> blocks;
  blocks.reserve(static_cast<std::size_t>(nb));
  for (const auto& d : diag) blocks.emplace_back(d);
  auto precondition = [&](const Eigen::VectorXd& r) {
    Eigen::VectorXd z(n);
    for (index_t i = 0; i < nb; ++i) z.segment(i * G, G) = blocks[static_cast<std::size_t>(i)].solve(r.segment(i * G, G));
    return z;
  };
  Eigen::VectorXd r = b - apply(theta);
  const double target = 1e-10 * std::max(b.norm(), 1e-300);
  Eigen::VectorXd z = precondition(r), p = z;
  double rz = r.dot(z);
  for (int it = 0; it < 500 && r.norm() > target; ++it) {
    const Eigen::VectorXd Ap = apply(p);
    const double alpha = rz / p.dot(Ap);
    theta += alpha * p;
    r -= alpha * Ap;
    z = precondition(r);
    const double rz_next = r.dot(z);
    p = z + (rz_next / rz) * p;
    rz = rz_next;
  }
  if (!theta.allFinite()) return;
  for (index_t bidx = 0; bidx < nb; ++bidx) {
    float* cw = a.codebooks.data() + codeword_of[static_cast<std::size_t>(bidx)] * G;
    for (int q = 0; q < G; ++q) cw[q] = static_cast<float>(theta[bidx * G + q]);
  }
}

// Exact least-squares codebooks for fixed codes and scales. Only codewords some code uses are
// unknowns; `ridge` (relative to the mean diagonal) pulls each toward its current value, which keeps
// the system positive definite without biasing well-determined codewords. Up to `direct_max_unknowns`
// the normal equations are solved by Cholesky (LLT), above by block-Jacobi CG to the same solution.
inline void additive_update_codebooks_ls(const AdditiveProblem& prob, const std::vector<float>& WH, AdditiveCodes& a,
                                         double ridge = 1e-7, index_t direct_max_unknowns = 2048) {
  const AdditiveShape& s = a.shape;
  const index_t rows = s.rows, P = prob.P(), K = s.codebook_size(), ncodes = s.codes_per_row();
  const int G = s.group_size, M = s.num_codebooks;
  // Map used codewords (m, k) to unknown blocks.
  std::vector<index_t> block_of(static_cast<std::size_t>(M * K), -1);
  std::vector<index_t> codeword_of;
  for (index_t o = 0; o < rows; ++o)
    for (index_t i = 0; i < ncodes; ++i) {
      const index_t cw = (i % M) * K + a.codes[static_cast<std::size_t>(o * ncodes + i)];
      if (block_of[static_cast<std::size_t>(cw)] < 0) {
        block_of[static_cast<std::size_t>(cw)] = static_cast<index_t>(codeword_of.size());
        codeword_of.push_back(cw);
      }
    }
  const index_t nb = static_cast<index_t>(codeword_of.size()), n = nb * G;
  // Few rows relative to the unknowns (small matrices): A·v costs rows·P² matrix-free but n² dense,
  // and assembling A costs rows·(codes per row)²·G²; solve matrix-free then.
  if (n > direct_max_unknowns && static_cast<double>(rows) * P * P < 0.25 * static_cast<double>(n) * n) {
    additive_codebooks_ls_matrix_free(prob, WH, a, block_of, codeword_of, ridge);
    return;
  }
  // Accumulate A (upper block triangle plus mirrored blocks) and b in two fixed row halves, so the
  // float sums do not depend on the thread count.
  const int chunks = rows >= 2 ? 2 : 1;
  std::vector<Eigen::MatrixXf> partial_A(static_cast<std::size_t>(chunks));
  std::vector<Eigen::VectorXd> partial_b(static_cast<std::size_t>(chunks));
  parallel_for(0, chunks, [&](index_t c0, index_t c1) {
    std::vector<index_t> blk(static_cast<std::size_t>(ncodes)), grp(static_cast<std::size_t>(ncodes));
    for (index_t c = c0; c < c1; ++c) {
      Eigen::MatrixXf& A = partial_A[static_cast<std::size_t>(c)];
      Eigen::VectorXd& b = partial_b[static_cast<std::size_t>(c)];
      A.setZero(n, n);
      b.setZero(n);
      const index_t o0 = rows * c / chunks, o1 = rows * (c + 1) / chunks;
      for (index_t o = o0; o < o1; ++o) {
        const float sc = a.scales[static_cast<std::size_t>(o)], s2 = sc * sc;
        for (index_t i = 0; i < ncodes; ++i) {
          blk[static_cast<std::size_t>(i)] =
              block_of[static_cast<std::size_t>((i % M) * K + a.codes[static_cast<std::size_t>(o * ncodes + i)])];
          grp[static_cast<std::size_t>(i)] = i / M;
        }
        for (index_t i = 0; i < ncodes; ++i) {
          const index_t bi = blk[static_cast<std::size_t>(i)] * G, gi = grp[static_cast<std::size_t>(i)] * G;
          const float* v = WH.data() + o * P + gi;
          for (int p = 0; p < G; ++p) b[bi + p] += static_cast<double>(sc) * v[p];
          for (index_t t = i; t < ncodes; ++t) {
            const index_t bt = blk[static_cast<std::size_t>(t)] * G, gt = grp[static_cast<std::size_t>(t)] * G;
            // A[bi + p, bt + q] += s²·H[gi + p, gt + q] (column-major A, symmetric H), and for t > i the
            // mirrored block A[bt + q, bi + p].
            float* Ad = A.data();
            for (int q = 0; q < G; ++q) {
              const float* h = prob.h_row(gt + q) + gi;
              float* dst = Ad + (bt + q) * n + bi;
              for (int p = 0; p < G; ++p) dst[p] += s2 * h[p];
            }
            if (t != i)
              for (int p = 0; p < G; ++p) {
                const float* h = prob.h_row(gi + p) + gt;
                float* dst = Ad + (bi + p) * n + bt;
                for (int q = 0; q < G; ++q) dst[q] += s2 * h[q];
              }
          }
        }
      }
    }
  });
  Eigen::MatrixXd A = partial_A[0].cast<double>();
  Eigen::VectorXd b = partial_b[0];
  for (int c = 1; c < chunks; ++c) {
    A += partial_A[static_cast<std::size_t>(c)].cast<double>();
    b += partial_b[static_cast<std::size_t>(c)];
  }
  partial_A.clear();
  const double mean_diag = n > 0 ? A.diagonal().mean() : 0.0;
  const double lambda = std::max(ridge * mean_diag, 1e-30);
  for (index_t bidx = 0; bidx < nb; ++bidx) {
    const float* cw = a.codebooks.data() + codeword_of[static_cast<std::size_t>(bidx)] * G;
    for (int p = 0; p < G; ++p) {
      A(bidx * G + p, bidx * G + p) += lambda;
      b[bidx * G + p] += lambda * cw[p];
    }
  }
  Eigen::VectorXd theta(n);
  for (index_t bidx = 0; bidx < nb; ++bidx)
    for (int p = 0; p < G; ++p) theta[bidx * G + p] = a.codebooks[static_cast<std::size_t>(codeword_of[static_cast<std::size_t>(bidx)] * G + p)];
  if (n <= direct_max_unknowns) {
    Eigen::LLT<Eigen::MatrixXd> llt(A);
    theta = llt.info() == Eigen::Success ? Eigen::VectorXd(llt.solve(b)) : Eigen::VectorXd(A.ldlt().solve(b));
  } else {
    solve_block_jacobi_cg(A, b, G, theta);
  }
  if (!theta.allFinite()) return;  // keep the old codebooks rather than poison them
  for (index_t bidx = 0; bidx < nb; ++bidx) {
    float* cw = a.codebooks.data() + codeword_of[static_cast<std::size_t>(bidx)] * G;
    for (int p = 0; p < G; ++p) cw[p] = static_cast<float>(theta[bidx * G + p]);
  }
}

// Closed-form scales for fixed codes and codebooks: s_o = ⟨(W·H)_o, u_o⟩ / (u_o·H·u_oᵀ).
inline void additive_update_scales_ls(const AdditiveProblem& prob, const std::vector<float>& WH, AdditiveCodes& a) {
  const index_t rows = a.shape.rows, P = prob.P();
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    std::vector<float> u(static_cast<std::size_t>(P)), hu(static_cast<std::size_t>(P));
    for (index_t o = r0; o < r1; ++o) {
      additive_unscaled_row_reference(a, o, u.data());
      std::fill(hu.begin(), hu.end(), 0.0f);
      for (index_t k = 0; k < P; ++k) {
        const float uk = u[static_cast<std::size_t>(k)];
        if (uk == 0.0f) continue;
        const float* h = prob.h_row(k);
#pragma omp simd
        for (index_t c = 0; c < P; ++c) hu[static_cast<std::size_t>(c)] += uk * h[c];
      }
      double num = 0.0, den = 0.0;
      const float* v = WH.data() + o * P;
      for (index_t c = 0; c < P; ++c) {
        num += static_cast<double>(v[c]) * u[static_cast<std::size_t>(c)];
        den += static_cast<double>(hu[static_cast<std::size_t>(c)]) * u[static_cast<std::size_t>(c)];
      }
      if (den > 0.0 && std::isfinite(num / den)) a.scales[static_cast<std::size_t>(o)] = static_cast<float>(num / den);
    }
  });
}

// Adam over codebooks and scales as in the AQLM paper's continuous step. The state persists across
// calls (one per matrix) so successive epochs continue the same optimizer.
struct AdditiveAdamOptions {
  int steps = 100;
  double lr = 1e-4;
  double beta1 = 0.0;
  double beta2 = 0.95;
  double eps = 1e-8;
  bool amsgrad = true;
};

struct AdditiveAdamState {
  std::vector<double> m, v, v_max;  // over [codebooks..., scales...]
  long step = 0;
};

inline void additive_update_adam(const AdditiveProblem& prob, AdditiveCodes& a, const AdditiveAdamOptions& opt,
                                 AdditiveAdamState& state) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const AdditiveShape& s = a.shape;
  const index_t rows = s.rows, P = prob.P(), K = s.codebook_size(), ncodes = s.codes_per_row();
  const int G = s.group_size, M = s.num_codebooks;
  const std::size_t n_cb = a.codebooks.size(), n_all = n_cb + a.scales.size();
  if (state.m.size() != n_all) {
    state.m.assign(n_all, 0.0);
    state.v.assign(n_all, 0.0);
    state.v_max.assign(n_all, 0.0);
    state.step = 0;
  }
  RowMajor U(rows, P), D(rows, P);
  Eigen::Map<const RowMajor> W(prob.W.data(), rows, P), H(prob.H.data(), P, P);
  std::vector<double> grad(n_all);
  for (int step = 0; step < opt.steps; ++step) {
    parallel_for(0, rows, [&](index_t r0, index_t r1) {
      for (index_t o = r0; o < r1; ++o) additive_unscaled_row_reference(a, o, U.data() + o * P);
    });
    Eigen::Map<const Eigen::VectorXf> scales(a.scales.data(), rows);
    D = scales.asDiagonal() * U - W;
    const RowMajor grad_w = (2.0f / static_cast<float>(rows)) * (D * H);  // d loss / d Ŵ, loss = tr(ΔW H ΔWᵀ)/rows
    std::fill(grad.begin(), grad.end(), 0.0);
    for (index_t o = 0; o < rows; ++o) {
      const float sc = a.scales[static_cast<std::size_t>(o)];
      double gs = 0.0;
      for (index_t i = 0; i < ncodes; ++i) {
        const index_t j = i / M;
        const int m = static_cast<int>(i % M);
        const index_t cw = (m * K + a.codes[static_cast<std::size_t>(o * ncodes + i)]) * G;
        for (int p = 0; p < G; ++p) grad[static_cast<std::size_t>(cw + p)] += static_cast<double>(sc) * grad_w(o, j * G + p);
      }
      for (index_t c = 0; c < P; ++c) gs += static_cast<double>(grad_w(o, c)) * U(o, c);
      grad[n_cb + static_cast<std::size_t>(o)] = gs;
    }
    ++state.step;
    const double bc1 = 1.0 - std::pow(opt.beta1, static_cast<double>(state.step));
    const double bc2 = 1.0 - std::pow(opt.beta2, static_cast<double>(state.step));
    for (std::size_t i = 0; i < n_all; ++i) {
      state.m[i] = opt.beta1 * state.m[i] + (1.0 - opt.beta1) * grad[i];
      state.v[i] = opt.beta2 * state.v[i] + (1.0 - opt.beta2) * grad[i] * grad[i];
      double v = state.v[i];
      if (opt.amsgrad) {
        state.v_max[i] = std::max(state.v_max[i], v);
        v = state.v_max[i];
      }
      const double update = opt.lr * (state.m[i] / bc1) / (std::sqrt(v / bc2) + opt.eps);
      float& target = i < n_cb ? a.codebooks[i] : a.scales[i - n_cb];
      target = static_cast<float>(target - update);
    }
  }
}

}  // namespace lowbit::calib
