// The discrete step of AQLM (ALGORITHMS.md §1.3, beam_search_xtx): with codebooks and scales fixed,
// re-choose codes to lower tr(ΔW·H·ΔWᵀ), ΔW = Ŵ − W. The objective separates over rows, so each row
// runs its own beam. For a row with residual product r = ΔW_o·H and code (j, m) currently f, the loss of
// candidate e = C_m[c] is L + 2s⟨e − f, r_j⟩ + s²(e − f)ᵀH_jj(e − f); we score every c through
// q = r_j − s·H_jj·f as 2s⟨e, q⟩ + s²·eᵀH_jj e (the quadratic term is shared by all rows) and, after a
// change, update r in O(G·cols) instead of recomputing ΔW·H.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "../core/parallel.hpp"
#include "../core/rng.hpp"
#include "../kernels/cpu/additive_reference.hpp"

namespace lowbit::calib {

struct BeamSearchOptions {
  int beam_size = 1;  // hypotheses kept per row (1 = greedy coordinate descent, AQLM's default)
};

// Padded problem data shared by the calibration steps: W [rows, P] and H [P, P] in fp32, P = padded
// columns, with zeros in the padding so padded weights never affect the objective.
struct AdditiveProblem {
  AdditiveShape shape;
  std::vector<float> W;  // [rows, P]
  std::vector<float> H;  // [P, P]

  index_t P() const { return shape.padded_cols(); }
  const float* w_row(index_t o) const { return W.data() + o * P(); }
  const float* h_row(index_t c) const { return H.data() + c * P(); }
};

// r = (s·u − w)·H for one row and its loss Δ·rᵀ (u = unscaled reconstruction). Returns the loss.
inline double additive_row_residual(const AdditiveProblem& prob, const AdditiveCodes& a, index_t o, float* u,
                                    float* r) {
  const index_t P = prob.P();
  additive_unscaled_row_reference(a, o, u);
  const float s = a.scales[static_cast<std::size_t>(o)];
  const float* w = prob.w_row(o);
  for (index_t c = 0; c < P; ++c) u[c] = s * u[c] - w[c];  // u now holds ΔW_o
  for (index_t c = 0; c < P; ++c) r[c] = 0.0f;
  for (index_t k = 0; k < P; ++k) {
    const float dk = u[k];
    if (dk == 0.0f) continue;
    const float* h = prob.h_row(k);
#pragma omp simd
    for (index_t c = 0; c < P; ++c) r[c] += dk * h[c];
  }
  double loss = 0.0;
  for (index_t c = 0; c < P; ++c) loss += static_cast<double>(u[c]) * r[c];
  return loss;
}

// tr(ΔW·H·ΔWᵀ) computed from scratch (double accumulation), for tests and stopping criteria.
inline double additive_objective(const AdditiveProblem& prob, const AdditiveCodes& a) {
  const index_t rows = prob.shape.rows, P = prob.P();
  std::vector<double> per_row(static_cast<std::size_t>(rows));
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    std::vector<float> u(static_cast<std::size_t>(P)), r(static_cast<std::size_t>(P));
    for (index_t o = r0; o < r1; ++o) per_row[static_cast<std::size_t>(o)] = additive_row_residual(prob, a, o, u.data(), r.data());
  });
  return std::accumulate(per_row.begin(), per_row.end(), 0.0);
}

// One beam-search pass over all (group, codebook) positions, groups in a random order drawn from `rng`
// (the same order for every row). Updates a.codes in place; returns the new objective (incremental, in
// double). No row's loss ever increases: keeping the current code is always a candidate.
inline double additive_beam_search(const AdditiveProblem& prob, AdditiveCodes& a, const BeamSearchOptions& options,
                                   Rng& rng) {
  const AdditiveShape& s = a.shape;
  const index_t rows = s.rows, P = prob.P(), groups = s.groups(), K = s.codebook_size(), ncodes = s.codes_per_row();
  const int G = s.group_size, M = s.num_codebooks;
  const int beam = std::max(1, options.beam_size);

  std::vector<index_t> group_order(static_cast<std::size_t>(groups));
  std::iota(group_order.begin(), group_order.end(), index_t{0});
  for (index_t i = groups - 1; i > 0; --i)
    std::swap(group_order[static_cast<std::size_t>(i)],
              group_order[static_cast<std::size_t>(rng.below(static_cast<std::uint64_t>(i + 1)))]);

  // Per-row beams: hypothesis h of row o owns codes, residual product r and loss.
  struct Beam {
    int size = 1;
    std::vector<std::uint32_t> codes;  // [beam, ncodes]
    std::vector<float> r;              // [beam, P]
    std::vector<double> loss;          // [beam]
  };
  std::vector<Beam> beams(static_cast<std::size_t>(rows));
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    std::vector<float> u(static_cast<std::size_t>(P));
    for (index_t o = r0; o < r1; ++o) {
      Beam& b = beams[static_cast<std::size_t>(o)];
      b.codes.assign(static_cast<std::size_t>(beam * ncodes), 0u);
      b.r.assign(static_cast<std::size_t>(beam * P), 0.0f);
      b.loss.assign(static_cast<std::size_t>(beam), 0.0);
      std::copy(a.codes.begin() + o * ncodes, a.codes.begin() + (o + 1) * ncodes, b.codes.begin());
      b.loss[0] = additive_row_residual(prob, a, o, u.data(), b.r.data());
    }
  });

  // Shared per-step data: codebooks transposed to [G, K] (one per m) and the quadratic forms
  // C_m[k]ᵀ·H_jj·C_m[k] for every step, so a single parallel region runs the whole pass.
  std::vector<float> transposed(static_cast<std::size_t>(M * G * K));
  for (int m = 0; m < M; ++m)
    for (index_t k = 0; k < K; ++k)
      for (int p = 0; p < G; ++p) transposed[static_cast<std::size_t>((m * G + p) * K + k)] = a.codeword(m, k)[p];
  std::vector<float> quad_all(static_cast<std::size_t>(groups * M * K));  // [groups, M, K]
  parallel_for(0, groups, [&](index_t j0, index_t j1) {
    for (index_t j = j0; j < j1; ++j)
      for (int m = 0; m < M; ++m)
        for (index_t k = 0; k < K; ++k) {
          const float* e = a.codeword(m, k);
          float qf = 0.0f;
          for (int p = 0; p < G; ++p) {
            const float* h = prob.h_row(j * G + p) + j * G;
            float hp = 0.0f;
            for (int q = 0; q < G; ++q) hp += h[q] * e[q];
            qf += e[p] * hp;
          }
          quad_all[static_cast<std::size_t>((j * M + m) * K + k)] = qf;
        }
  });
  parallel_for(0, rows, [&](index_t r0, index_t r1) {
    std::vector<float> score(static_cast<std::size_t>(K));
    struct Candidate {
      double loss;
      int parent;
      std::uint32_t code;
    };
    std::vector<Candidate> pool;
    std::vector<std::uint32_t> new_codes;
    std::vector<float> new_r;
    std::vector<double> new_loss;
    std::vector<float> hjj(static_cast<std::size_t>(G * G));
    for (index_t gi = 0; gi < groups; ++gi) {
      const index_t j = group_order[static_cast<std::size_t>(gi)];
      for (index_t p = 0; p < G; ++p)
        for (index_t q = 0; q < G; ++q) hjj[static_cast<std::size_t>(p * G + q)] = prob.H[static_cast<std::size_t>((j * G + p) * P + j * G + q)];
      for (int m = 0; m < M; ++m) {
        const index_t pos = j * M + m;
        const float* quad = quad_all.data() + pos * K;
        const float* tr_m = transposed.data() + static_cast<index_t>(m) * G * K;
        for (index_t o = r0; o < r1; ++o) {
          Beam& b = beams[static_cast<std::size_t>(o)];
          const float sc = a.scales[static_cast<std::size_t>(o)];
          pool.clear();
          for (int h = 0; h < b.size; ++h) {
            const std::uint32_t old = b.codes[static_cast<std::size_t>(h * ncodes + pos)];
            const float* f = a.codeword(m, old);
            const float* rj = b.r.data() + h * P + j * G;
            float q[32];
            for (int p = 0; p < G; ++p) {
              float hf = 0.0f;
              for (int t = 0; t < G; ++t) hf += hjj[static_cast<std::size_t>(p * G + t)] * f[t];
              q[p] = 2.0f * sc * (rj[p] - sc * hf);
            }
            const float s2 = sc * sc;
#pragma omp simd
            for (index_t k = 0; k < K; ++k) score[static_cast<std::size_t>(k)] = s2 * quad[k];
            for (int p = 0; p < G; ++p) {
              const float qp = q[p];
              const float* row = tr_m + p * K;
#pragma omp simd
              for (index_t k = 0; k < K; ++k) score[static_cast<std::size_t>(k)] += qp * row[k];
            }
            const double base = b.loss[static_cast<std::size_t>(h)] - static_cast<double>(score[old]);
            if (beam == 1) {
              // Greedy: move only on a strict improvement over the current code.
              std::uint32_t best = old;
              float best_score = score[old];
              for (index_t k = 0; k < K; ++k)
                if (score[static_cast<std::size_t>(k)] < best_score) {
                  best_score = score[static_cast<std::size_t>(k)];
                  best = static_cast<std::uint32_t>(k);
                }
              pool.push_back({base + best_score, h, best});
            } else {
              // This hypothesis's best `beam` codes; the current code is always offered.
              std::vector<std::uint32_t> idx(static_cast<std::size_t>(K));
              std::iota(idx.begin(), idx.end(), 0u);
              const index_t take = std::min<index_t>(beam, K);
              std::partial_sort(idx.begin(), idx.begin() + take, idx.end(), [&](std::uint32_t x, std::uint32_t y) {
                return score[x] < score[y] || (score[x] == score[y] && x < y);
              });
              bool has_old = false;
              for (index_t t = 0; t < take; ++t) {
                pool.push_back({base + score[idx[static_cast<std::size_t>(t)]], h, idx[static_cast<std::size_t>(t)]});
                has_old |= idx[static_cast<std::size_t>(t)] == old;
              }
              if (!has_old) pool.push_back({b.loss[static_cast<std::size_t>(h)], h, old});
            }
          }
          if (beam == 1) {
            const Candidate& c = pool[0];
            const std::uint32_t old = b.codes[static_cast<std::size_t>(pos)];
            if (c.code != old) {
              float delta[32];
              const float* e = a.codeword(m, c.code);
              const float* f = a.codeword(m, old);
              for (int p = 0; p < G; ++p) delta[p] = sc * (e[p] - f[p]);
              float* r = b.r.data();
              for (int p = 0; p < G; ++p) {
                const float dp = delta[p];
                const float* h = prob.h_row(j * G + p);
#pragma omp simd
                for (index_t col = 0; col < P; ++col) r[col] += dp * h[col];
              }
              b.codes[static_cast<std::size_t>(pos)] = c.code;
              b.loss[0] = c.loss;
            }
            continue;
          }
          // Wider beam: keep the best `beam` distinct code vectors among all candidates.
          std::stable_sort(pool.begin(), pool.end(), [](const Candidate& x, const Candidate& y) {
            return x.loss < y.loss || (x.loss == y.loss && (x.parent < y.parent || (x.parent == y.parent && x.code < y.code)));
          });
          std::vector<const Candidate*> kept;
          for (const Candidate& c : pool) {
            if (static_cast<int>(kept.size()) == beam) break;
            bool duplicate = false;
            for (const Candidate* k : kept) {
              if (k->code != c.code) continue;
              if (k->parent == c.parent) {
                duplicate = true;
                break;
              }
              const std::uint32_t* x = b.codes.data() + k->parent * ncodes;
              const std::uint32_t* y = b.codes.data() + c.parent * ncodes;
              bool same = true;
              for (index_t i = 0; i < ncodes && same; ++i) same = i == pos || x[i] == y[i];
              if (same) {
                duplicate = true;
                break;
              }
            }
            if (!duplicate) kept.push_back(&c);
          }
          const int n_kept = static_cast<int>(kept.size());
          new_codes.assign(static_cast<std::size_t>(beam * ncodes), 0u);
          new_r.assign(static_cast<std::size_t>(beam * P), 0.0f);
          new_loss.assign(static_cast<std::size_t>(beam), 0.0);
          for (int t = 0; t < n_kept; ++t) {
            const Candidate& c = *kept[static_cast<std::size_t>(t)];
            std::copy(b.codes.begin() + c.parent * ncodes, b.codes.begin() + (c.parent + 1) * ncodes,
                      new_codes.begin() + t * ncodes);
            std::copy(b.r.begin() + c.parent * P, b.r.begin() + (c.parent + 1) * P, new_r.begin() + t * P);
            const std::uint32_t old = new_codes[static_cast<std::size_t>(t * ncodes + pos)];
            if (c.code != old) {
              const float* e = a.codeword(m, c.code);
              const float* f = a.codeword(m, old);
              float* r = new_r.data() + t * P;
              for (int p = 0; p < G; ++p) {
                const float dp = sc * (e[p] - f[p]);
                const float* h = prob.h_row(j * G + p);
#pragma omp simd
                for (index_t col = 0; col < P; ++col) r[col] += dp * h[col];
              }
              new_codes[static_cast<std::size_t>(t * ncodes + pos)] = c.code;
            }
            new_loss[static_cast<std::size_t>(t)] = c.loss;
          }
          b.codes.swap(new_codes);
          b.r.swap(new_r);
          b.loss.swap(new_loss);
          b.size = n_kept;
        }
      }
    }
  });

  double total = 0.0;
  for (index_t o = 0; o < rows; ++o) {
    const Beam& b = beams[static_cast<std::size_t>(o)];
    const int best = static_cast<int>(std::min_element(b.loss.begin(), b.loss.begin() + b.size) - b.loss.begin());
    std::copy(b.codes.begin() + best * ncodes, b.codes.begin() + (best + 1) * ncodes, a.codes.begin() + o * ncodes);
    total += b.loss[static_cast<std::size_t>(best)];
  }
  return total;
}

}  // namespace lowbit::calib
