// Calibration of the BCQ formats (format/bcq.hpp; ALGORITHMS.md §3): the ALTERNATING algorithm of Xu et
// al. (2018) and UniQuanF's unified initialization, per group of a row.
//
// ALTERNATING, one group of weights w with per-weight importances h (1, or diag(XᵀX) for the
// Hessian-weighted variant): starting from parameters and codes, each round
//   1. solves the weighted least-squares problem for the n scales and the offset given the codes
//      (min Σ_c h_c (w_c − Σ_i α_i b_ic − o)², an (n+1)×(n+1) system in double),
//   2. makes every scale positive (flipping its plane) and sorts them ascending (permuting the planes),
//      rounds them to fp16 and keeps them only if the objective did not grow (fp16 rounding could),
//   3. re-assigns every weight to its nearest level (exhaustive over the 2^n levels; exact given the
//      parameters, since the objective is separable per weight).
// So the objective never increases (tests/test_calib_bcq.cpp checks it round by round).
//
// UniQuanF's unified initialization starts exactly on the uniform grid: α_i = 2^(i−1)·s over the group's
// (optionally clipped) range, the clip ratio chosen by the L_p error (p = 2.4) of the uniform grid, then
// ALTERNATING from there. `rtn` for BCQ is the greedy residual fit (quantizer/bcq.hpp).
#pragma once

#include <Eigen/Dense>
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../format/bcq.hpp"
#include "../quantizer/bcq.hpp"

namespace lowbit::calib {

// Σ_c h_c (w_c − ŵ_c)² of one group for given parameters and codes (h null: all 1).
template <int Bits>
double bcq_group_objective(const float* w, const float* h, index_t count, const BCQParams<Bits>& p,
                           const std::uint32_t* codes) {
  double e = 0.0;
  for (index_t c = 0; c < count; ++c) {
    const double d = static_cast<double>(w[c]) - static_cast<double>(bcq_decode<Bits>(codes[c], p));
    e += (h ? static_cast<double>(h[c]) : 1.0) * d * d;
  }
  return e;
}

// Nearest-level codes for every weight of a group.
template <int Bits>
void bcq_assign(const float* w, index_t count, const BCQParams<Bits>& p, std::uint32_t* codes) {
  for (index_t c = 0; c < count; ++c) codes[c] = bcq_encode<Bits>(w[c], p);
}

// The weighted least-squares scales and offset for fixed codes; false when the system is degenerate
// (no weight, or a non-finite solution).
template <int Bits>
bool bcq_solve_scales(const float* w, const float* h, index_t count, const std::uint32_t* codes, BCQParams<Bits>& out) {
  using Mat = Eigen::Matrix<double, Bits + 1, Bits + 1>;
  using Vec = Eigen::Matrix<double, Bits + 1, 1>;
  Mat M = Mat::Zero();
  Vec rhs = Vec::Zero();
  Vec a;
  for (index_t c = 0; c < count; ++c) {
    for (int i = 0; i < Bits; ++i) a(i) = ((codes[c] >> i) & 1u) ? 1.0 : -1.0;
    a(Bits) = 1.0;
    const double hc = h ? static_cast<double>(h[c]) : 1.0;
    M.noalias() += hc * a * a.transpose();
    rhs += hc * static_cast<double>(w[c]) * a;
  }
  const double tr = M.trace();
  if (!(tr > 0.0)) return false;
  M += Mat::Identity() * (1e-12 * tr);  // a plane equal to ± the offset's column makes M singular
  const Vec x = M.ldlt().solve(rhs);
  if (!x.allFinite()) return false;
  for (int i = 0; i < Bits; ++i) out.alpha[i] = static_cast<float>(x(i));
  out.offset = static_cast<float>(x(Bits));
  return true;
}

// T rounds of ALTERNATING from (p, codes), in place. Returns the objective after each round in
// `trace` (trace[0]: before the first round) when given.
template <int Bits>
void bcq_alternate(const float* w, const float* h, index_t count, int rounds, BCQParams<Bits>& p,
                   std::uint32_t* codes, std::vector<double>* trace = nullptr) {
  double obj = bcq_group_objective<Bits>(w, h, count, p, codes);
  if (trace) trace->assign(1, obj);
  std::vector<std::uint32_t> trial(codes, codes + count);
  for (int t = 0; t < rounds; ++t) {
    BCQParams<Bits> q = p;
    std::copy_n(codes, count, trial.begin());
    if (bcq_solve_scales<Bits>(w, h, count, trial.data(), q)) {
      bcq_canonicalize<Bits>(q, trial.data(), count);
      q = bcq_round(q);
      const double e = bcq_group_objective<Bits>(w, h, count, q, trial.data());
      if (e <= obj) {
        p = q;
        std::copy_n(trial.begin(), count, codes);
        obj = e;
      }
    }
    bcq_assign<Bits>(w, count, p, codes);
    obj = bcq_group_objective<Bits>(w, h, count, p, codes);
    if (trace) trace->push_back(obj);
  }
}

// UniQuanF's unified initialization of one group: the uniform grid over [lo·r, hi·r] for the clip ratio r
// (from `clip_grid` ratios evenly spaced in [1 − max_shrink, 1]; 1 ratio: no search) with the smallest
// Σ h·|w − ŵ|^p, and its nearest-level codes.
template <int Bits>
BCQParams<Bits> bcq_uniform_init(const float* w, const float* h, index_t count, int clip_grid, float max_shrink,
                                 double lp, std::uint32_t* codes) {
  float lo = w[0], hi = w[0];
  for (index_t c = 1; c < count; ++c) {
    lo = std::min(lo, w[c]);
    hi = std::max(hi, w[c]);
  }
  const float mid = 0.5f * (lo + hi), half = 0.5f * (hi - lo);
  BCQParams<Bits> best = bcq_fit_uniform<Bits>(lo, hi);
  double best_err = INFINITY;
  const int n = std::max(1, clip_grid);
  for (int k = 0; k < n; ++k) {
    const float r = n == 1 ? 1.0f : 1.0f - max_shrink * static_cast<float>(k) / static_cast<float>(n - 1);
    const auto p = bcq_fit_uniform<Bits>(mid - r * half, mid + r * half);
    double err = 0.0;
    for (index_t c = 0; c < count; ++c) {
      const double d = std::fabs(static_cast<double>(w[c]) - bcq_decode<Bits>(bcq_encode<Bits>(w[c], p), p));
      err += (h ? static_cast<double>(h[c]) : 1.0) * std::pow(d, lp);
    }
    if (err < best_err) {
      best_err = err;
      best = p;
    }
  }
  bcq_assign<Bits>(w, count, best, codes);
  return best;
}

// ---- whole matrices ---------------------------------------------------------------------------------

enum class BCQInit { Greedy, Uniform };

// How each weight's error counts: equally (None), by diag(XᵀX) of its input column (Diagonal), or by the
// layer-output error tr(ΔW XᵀX ΔWᵀ) (Full: the diagonal fit, then rounds of calib/bcq_hessian.hpp).
enum class BCQWeighting { None, Diagonal, Full };

inline const char* to_string(BCQWeighting w) {
  return w == BCQWeighting::None ? "none" : w == BCQWeighting::Diagonal ? "diag" : "full";
}
inline BCQWeighting parse_bcq_weighting(const std::string& s) {
  if (s == "none") return BCQWeighting::None;
  if (s == "diag") return BCQWeighting::Diagonal;
  if (s == "full") return BCQWeighting::Full;
  fail("unknown BCQ error weighting '", s, "' (known: none, diag, full)");
}

struct BCQFitOptions {
  BCQInit init = BCQInit::Greedy;
  int rounds = 15;            // ALTERNATING rounds T (UniQuanF's release value)
  BCQWeighting weighting = BCQWeighting::None;
  int hessian_rounds = 4;     // Full: rounds of code (GPTQ) and scale (least squares) updates
  double damp = 0.01;         // Full: H += damp·mean(diag H)·I, as GPTQ dampens
  int clip_grid = 1;          // uniform init: clip ratios tried (1: none, the release setting)
  float max_shrink = 0.3f;    // uniform init: the smallest ratio is 1 − max_shrink
  double lp = 2.4;            // uniform init: error exponent of the clip search

  nlohmann::json to_json() const {
    nlohmann::json j = {{"init", init == BCQInit::Greedy ? "greedy" : "uniform"},
                        {"rounds", rounds},
                        {"weighting", to_string(weighting)},
                        {"clip_grid", clip_grid},
                        {"max_shrink", max_shrink},
                        {"lp", lp}};
    if (weighting == BCQWeighting::Full) {
      j["hessian_rounds"] = hessian_rounds;
      j["damp"] = damp;
    }
    return j;
  }
};

struct BCQFitStats {
  double objective_init = 0.0, objective = 0.0;  // Σ over groups, weighted as fitted
};

// Fits every group of W [rows, cols] (init, then `rounds` of ALTERNATING); `h` [cols] are per-column
// importances or null.
template <class Format>
BCQPacked<Format> bcq_fit(MatrixView<const float> W, const float* h, const BCQFitOptions& o, BCQFitStats* stats = nullptr) {
  constexpr int Bits = Format::bits;
  BCQPacked<Format> packed(W.rows(), W.cols());
  std::vector<double> init_err(static_cast<std::size_t>(W.rows()), 0.0), err(init_err.size(), 0.0);
  parallel_for(0, W.rows(), [&](index_t r0, index_t r1) {
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(packed.group_size()));
    for (index_t r = r0; r < r1; ++r)
      for (index_t g = 0; g < packed.groups_per_row(); ++g) {
        const index_t c0 = packed.group_begin(g), count = packed.group_end(g) - c0;
        const float* w = W.row(r) + c0;
        const float* hg = h ? h + c0 : nullptr;
        BCQParams<Bits> p = o.init == BCQInit::Greedy
                                ? bcq_greedy_fit<Bits>(w, count, codes.data())
                                : bcq_uniform_init<Bits>(w, hg, count, o.clip_grid, o.max_shrink, o.lp, codes.data());
        init_err[static_cast<std::size_t>(r)] += bcq_group_objective<Bits>(w, hg, count, p, codes.data());
        bcq_alternate<Bits>(w, hg, count, o.rounds, p, codes.data());
        err[static_cast<std::size_t>(r)] += bcq_group_objective<Bits>(w, hg, count, p, codes.data());
        packed.set_params(r, g, p);
        for (index_t c = 0; c < count; ++c) packed.set_code(r, c0 + c, codes[static_cast<std::size_t>(c)]);
      }
  });
  if (stats) {
    stats->objective_init = std::accumulate(init_err.begin(), init_err.end(), 0.0);
    stats->objective = std::accumulate(err.begin(), err.end(), 0.0);
  }
  return packed;
}

}  // namespace lowbit::calib
