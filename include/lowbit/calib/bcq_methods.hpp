// The BCQ calibration methods (calib/bcq.hpp) as `calib::Method`s for every BCQ format of the registry:
//   alternating  greedy init, then T rounds of ALTERNATING (Xu et al. 2018), optionally weighted by
//                diag(XᵀX) of the layer's input, or followed by full-Hessian rounds (calib/bcq_hessian.hpp);
//   uniquanf     UniQuanF's unified initialization (the uniform grid, an optional clip search with the
//                L_p error), then ALTERNATING; the block-wise reconstruction that follows it is a
//                pipeline hook (calib/uniquanf.hpp).
// `rtn` for BCQ (the greedy fit alone) is the rtn group method (calib/group_methods.hpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../formats.hpp"
#include "../nn/quantized_linear.hpp"
#include "bcq.hpp"
#include "bcq_hessian.hpp"
#include "method.hpp"

namespace lowbit::calib {

inline constexpr auto bcq_formats = []<class F>() { return BCQFormat<F>; };

// The importance of each input column: diag(XᵀX) (+1e-8·mean, so a dead column keeps a tiny weight).
inline std::vector<float> column_importance(const HessianAccumulator& H) {
  const auto& S = H.sum();
  std::vector<float> h(static_cast<std::size_t>(S.rows()));
  double mean = 0.0;
  for (index_t c = 0; c < S.rows(); ++c) mean += S(c, c);
  mean /= static_cast<double>(std::max<index_t>(1, S.rows()));
  for (index_t c = 0; c < S.rows(); ++c) h[static_cast<std::size_t>(c)] = static_cast<float>(S(c, c) + 1e-8 * mean + 1e-30);
  return h;
}

// Fits the job's weight to its BCQ format (weighted as the options say: by diag(XᵀX), or diag then
// full-Hessian rounds) and hands the weight and the fit to make_layer, a template lambda `<class F>
// (MatrixView<const float> W, BCQPacked<F>) -> nn::LinearPtr`: the plain BCQ layer, or a trainable form
// built on the fit.
template <class MakeLayer>
LinearOutcome run_bcq_fit(const LinearJob& job, const BCQFitOptions& options, MakeLayer make_layer) {
  return visit_format_if(
      job.format, bcq_formats,
      [&]<class F>(FormatTag<F>) {
        std::vector<float> h;
        if (options.weighting != BCQWeighting::None) {
          LOWBIT_CHECK(job.hessian && job.hessian->rows() > 0, job.name, ": the Hessian-weighted fit needs XᵀX");
          h = column_importance(*job.hessian);
        }
        BCQFitStats s;
        auto packed = bcq_fit<F>(job.weight, h.empty() ? nullptr : h.data(), options, &s);
        LinearOutcome out;
        out.stats["objective_init"] = s.objective_init;
        out.stats["objective"] = s.objective;
        if (options.weighting == BCQWeighting::Full) {
          const Eigen::MatrixXd H = bcq_damped_hessian(job.hessian->gptq_hessian(), options.damp);
          BCQHessianTrace trace;
          bcq_alternate_full_hessian<F>(job.weight, H, options.hessian_rounds, packed, &trace);
          out.stats["hessian_objective_start"] = trace.objective.front();
          out.stats["hessian_objective"] = trace.objective.back();
          out.stats["hessian_rows_recoded"] = trace.rows_recoded;
          out.stats["hessian_rows_rescaled"] = trace.rows_rescaled;
        }
        out.layer = make_layer.template operator()<F>(job.weight, std::move(packed));
        return out;
      },
      "BCQ format");
}

// `name` is alternating or uniquanf.
inline Method bcq_method(const std::string& name, BCQFitOptions options) {
  LOWBIT_CHECK(name == "alternating" || name == "uniquanf", "unknown BCQ method '", name,
               "' (known: alternating, uniquanf)");
  options.init = name == "uniquanf" ? BCQInit::Uniform : BCQInit::Greedy;
  if (name == "alternating") options.clip_grid = 1;
  LOWBIT_CHECK(options.rounds >= 0 && options.rounds <= 1000, name, ": alternating rounds must be in [0, 1000], got ",
               options.rounds);
  LOWBIT_CHECK(options.clip_grid >= 1 && options.clip_grid <= 1000, name, ": clip grid must be in [1, 1000], got ",
               options.clip_grid);
  LOWBIT_CHECK(options.max_shrink >= 0.0f && options.max_shrink < 1.0f, name, ": max shrink must be in [0, 1), got ",
               options.max_shrink);
  LOWBIT_CHECK(options.lp > 0.0 && options.lp <= 16.0, name, ": L_p exponent must be in (0, 16], got ", options.lp);
  LOWBIT_CHECK(options.hessian_rounds >= 0 && options.hessian_rounds <= 1000, name,
               ": full-Hessian rounds must be in [0, 1000], got ", options.hessian_rounds);
  LOWBIT_CHECK(options.damp >= 0.0 && options.damp <= 1.0, name, ": dampening must be in [0, 1], got ", options.damp);
  Method m;
  m.name = name;
  m.capability = "BCQ format";
  m.accepts = accepts_formats_where(bcq_formats);
  m.needs_hessian = options.weighting != BCQWeighting::None;
  m.needs_samples = false;
  m.options = options.to_json();
  m.run = [options](const LinearJob& job) {
    return run_bcq_fit(job, options, []<class F>(MatrixView<const float>, BCQPacked<F> packed) -> nn::LinearPtr {
      return std::make_unique<nn::QuantizedLinear<F>>(std::move(packed));
    });
  };
  return m;
}

}  // namespace lowbit::calib
