// The continuous step of AQLM: with codes fixed, update codebooks and per-row scales to lower
// tr(ΔW·H·ΔWᵀ). Two ways: (1) exact — the objective is quadratic in the codebooks, so we solve the
// normal equations A·θ = b (one G×G block of s_o²·H_jj' per pair of code positions of a row) — Cholesky
// on the assembled A for small systems, matrix-free preconditioned CG (one GEMM per step) for large ones —
// then set each row's scale in closed form (ALGORITHMS.md §7.3); (2) the
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

// Limits of the conjugate-gradient solve of the normal equations (the large-matrix path).
struct AdditiveLsSolveOptions {
  double ridge = 1e-7;                    // relative to the mean diagonal, toward the current codewords
  index_t direct_max_unknowns = 2048;     // up to this many unknowns: assemble A and factor it (Cholesky) ...
  double direct_max_block_updates = 4e6;  // ... if assembling it takes at most this many G×G block updates
  double residual_tolerance = 1e-10;      // CG stops at ‖r‖ ≤ tol·‖b‖ ...
  double objective_tolerance = 0.0;       // ... or when a CG step lowers the objective by < this fraction
  int max_iterations = 500;               // ... or after this many steps
};

// The same normal equations solved without forming A: A·v = Σ_o s_o²·D_oᵀ·H·D_o·v, where D_o places the
// row's codewords into its groups. One A·v is a dense [rows, P]·[P, P] product (the rows' reconstructions
// under the codebooks v, times H), computed in fixed 64-row chunks so the sums do not depend on the thread
// count. Block-Jacobi preconditioned CG (diagonal blocks Σ s_o²·H_jj over the positions using each
// codeword), warm-started from the current codebooks. CG from x0 lowers the quadratic objective
// monotonically, so stopping early never makes the codebooks worse than they were.
inline void additive_codebooks_ls_matrix_free(const AdditiveProblem& prob, const std::vector<float>& WH,
                                              AdditiveCodes& a, const std::vector<index_t>& block_of,
                                              const std::vector<index_t>& codeword_of,
                                              const AdditiveLsSolveOptions& opt) {
  using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const AdditiveShape& s = a.shape;
  const index_t rows = s.rows, P = prob.P(), K = s.codebook_size(), ncodes = s.codes_per_row();
  const int G = s.group_size, M = s.num_codebooks;
  const index_t nb = static_cast<index_t>(codeword_of.size()), n = nb * G;
  std::vector<index_t> blk(static_cast<std::size_t>(rows * ncodes));
  for (index_t o = 0; o < rows; ++o)
    for (index_t i = 0; i < ncodes; ++i)
      blk[static_cast<std::size_t>(o * ncodes + i)] =
          block_of[static_cast<std::size_t>((i % M) * K + a.codes[static_cast<std::size_t>(o * ncodes + i)])];
  Eigen::VectorXd b = Eigen::VectorXd::Zero(n), theta(n);
  std::vector<Eigen::MatrixXd> diag(static_cast<std::size_t>(nb), Eigen::MatrixXd::Zero(G, G));
  double energy = 0.0;  // Σ_o w_o·H·w_oᵀ: the objective is energy + θᵀAθ − 2bᵀθ without the ridge
  for (index_t o = 0; o < rows; ++o) {
    const double sc = a.scales[static_cast<std::size_t>(o)];
    for (index_t c = 0; c < P; ++c) energy += static_cast<double>(prob.w_row(o)[c]) * WH[static_cast<std::size_t>(o * P + c)];
    for (index_t i = 0; i < ncodes; ++i) {
      const index_t bi = blk[static_cast<std::size_t>(o * ncodes + i)], g0 = (i / M) * G;
      Eigen::MatrixXd& d = diag[static_cast<std::size_t>(bi)];
      for (int p = 0; p < G; ++p) {
        b[bi * G + p] += sc * WH[static_cast<std::size_t>(o * P + g0 + p)];
        const float* h = prob.h_row(g0 + p) + g0;
        for (int q = 0; q < G; ++q) d(p, q) += sc * sc * h[q];
      }
    }
  }
  double mean_diag = 0.0;
  for (const auto& d : diag) mean_diag += d.trace();
  const double lambda = std::max(opt.ridge * mean_diag / static_cast<double>(std::max<index_t>(1, n)), 1e-30);
  double theta0_norm2 = 0.0;
  for (index_t bidx = 0; bidx < nb; ++bidx) {
    const float* cw = a.codebooks.data() + codeword_of[static_cast<std::size_t>(bidx)] * G;
    for (int p = 0; p < G; ++p) {
      theta[bidx * G + p] = cw[p];
      b[bidx * G + p] += lambda * cw[p];
      theta0_norm2 += static_cast<double>(cw[p]) * cw[p];
      diag[static_cast<std::size_t>(bidx)](p, p) += lambda;
    }
  }
  constexpr index_t kChunk = 64;
  const index_t chunks = (rows + kChunk - 1) / kChunk;
  std::vector<Eigen::VectorXd> partial(static_cast<std::size_t>(chunks));
  std::vector<float> vf(static_cast<std::size_t>(n));
  Eigen::Map<const RowMajor> H(prob.H.data(), P, P);
  auto apply = [&](const Eigen::VectorXd& v) {
    for (index_t i = 0; i < n; ++i) vf[static_cast<std::size_t>(i)] = static_cast<float>(v[i]);
    parallel_for(0, chunks, [&](index_t c0, index_t c1) {
      RowMajor U, Z;
      for (index_t c = c0; c < c1; ++c) {
        const index_t o0 = c * kChunk, o1 = std::min(rows, o0 + kChunk);
        U.setZero(o1 - o0, P);
        for (index_t o = o0; o < o1; ++o) {
          const float sc = a.scales[static_cast<std::size_t>(o)];
          float* u = U.data() + (o - o0) * P;
          for (index_t i = 0; i < ncodes; ++i) {
            const float* cw = vf.data() + blk[static_cast<std::size_t>(o * ncodes + i)] * G;
            float* dst = u + (i / M) * G;
            for (int p = 0; p < G; ++p) dst[p] += sc * cw[p];
          }
        }
        Z.noalias() = U * H;
        Eigen::VectorXd& out = partial[static_cast<std::size_t>(c)];
        out.setZero(n);
        for (index_t o = o0; o < o1; ++o) {
          const double sc = a.scales[static_cast<std::size_t>(o)];
          const float* z = Z.data() + (o - o0) * P;
          for (index_t i = 0; i < ncodes; ++i) {
            const index_t bi = blk[static_cast<std::size_t>(o * ncodes + i)] * G;
            const float* zg = z + (i / M) * G;
            for (int p = 0; p < G; ++p) out[bi + p] += sc * zg[p];
          }
        }
      }
    });
    Eigen::VectorXd out = lambda * v;
    for (const auto& part : partial) out += part;
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
  // Objective (with the ridge, which is 0 at the start) at θ: energy + θᵀAθ − 2bᵀθ + λ‖θ0‖².
  double objective = energy + theta.dot(b - r) - 2.0 * b.dot(theta) + lambda * theta0_norm2;
  const double target = opt.residual_tolerance * std::max(b.norm(), 1e-300);
  Eigen::VectorXd z = precondition(r), p = z;
  double rz = r.dot(z);
  for (int it = 0; it < opt.max_iterations && r.norm() > target; ++it) {
    const Eigen::VectorXd Ap = apply(p);
    const double pAp = p.dot(Ap);
    if (!(pAp > 0.0)) break;
    const double alpha = rz / pAp;
    theta += alpha * p;
    r -= alpha * Ap;
    // This step lowered the objective by α·rᵀz (exact arithmetic).
    const double gain = alpha * rz;
    objective -= gain;
    if (opt.objective_tolerance > 0.0 && gain < opt.objective_tolerance * std::max(objective, 1e-300)) break;
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
// the system positive definite without biasing well-determined codewords. Small systems that are cheap
// to assemble (`direct_max_unknowns`, `direct_max_block_updates`) are solved by Cholesky (LLT), the
// others by block-Jacobi CG to the same solution.
inline void additive_update_codebooks_ls(const AdditiveProblem& prob, const std::vector<float>& WH, AdditiveCodes& a,
                                         const AdditiveLsSolveOptions& solve = {}) {
  const double ridge = solve.ridge;
  const index_t direct_max_unknowns = solve.direct_max_unknowns;
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
  // Otherwise solve matrix-free: assembling A costs rows·(codes per row)²/2 scattered G×G block updates
  // of an n² matrix (≈ 30 s for 576x1536 2x8 g8; 4x6 g8 on 576x576 has only 2048 unknowns but 24 M
  // block updates, 86% of its calibration time in a profile), one matrix-free A·v a dense rows·P² GEMM.
  const double block_updates = 0.5 * static_cast<double>(rows) * static_cast<double>(ncodes) * static_cast<double>(ncodes);
  if (n > direct_max_unknowns || block_updates > solve.direct_max_block_updates) {
    additive_codebooks_ls_matrix_free(prob, WH, a, block_of, codeword_of, solve);
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
  {
    Eigen::LLT<Eigen::MatrixXd> llt(A);
    theta = llt.info() == Eigen::Success ? Eigen::VectorXd(llt.solve(b)) : Eigen::VectorXd(A.ldlt().solve(b));
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
