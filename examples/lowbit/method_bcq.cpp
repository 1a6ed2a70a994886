// `lowbit quantize` methods alternating and uniquanf (calib/bcq_methods.hpp, calib/uniquanf.hpp):
// binary-coding quantization for every BCQ format of the registry (bcq:BITS:GROUP). `--method rtn
// --format bcq:...` is the greedy residual fit alone (method_group.cpp).
#include <memory>
#include <string>

#include <lowbit/calib/bcq_methods.hpp>
#include <lowbit/calib/uniquanf.hpp>

#include "quantize_method.hpp"

namespace lowbit_method_bcq {

using namespace lowbit;

const cli::QuantizeMethodRegistration registration{cli::QuantizeMethodSpec{
    {"alternating", "uniquanf"},
    "binary-coding quantization: ALTERNATING least squares from the greedy fit (Xu et al. 2018); UniQuanF "
    "(uniform-grid init, ALTERNATING, block-wise reconstruction with FlexRound's transform): BCQ formats "
    "(bcq:BITS:GROUP)",
    [](CLI::App& app) -> cli::QuantizeMethodFactory {
      auto o = std::make_shared<calib::UniQuanFOptions>();
      auto* g = app.add_option_group("BCQ", "options of --method alternating, uniquanf (docs/uniquanf.md)");
      g->add_option("--bcq-rounds", o->fit.rounds, "ALTERNATING rounds T per group (UniQuanF's release: 15)")
          ->capture_default_str();
      auto weighting = std::make_shared<std::string>();
      g->add_option("--bcq-hessian", *weighting,
                    "how each weight's error counts in the fit: none (equally), diag (by diag(XᵀX) of its input "
                    "column) or full (the diag fit, then rounds of GPTQ codes and least-squares scales for the "
                    "layer-output error tr(ΔW XᵀX ΔWᵀ)); default: none for alternating (Xu et al.), full for "
                    "uniquanf")
          ->check(CLI::IsMember({"none", "diag", "full"}));
      g->add_option("--bcq-hessian-rounds", o->fit.hessian_rounds,
                    "full: rounds of code and scale updates after the diag fit")
          ->capture_default_str();
      g->add_option("--bcq-clip-grid", o->fit.clip_grid,
                    "uniquanf: clip ratios tried per group, evenly spaced in [1 - max shrink, 1] (1: no search, "
                    "the release setting)")
          ->capture_default_str();
      g->add_option("--bcq-max-shrink", o->fit.max_shrink, "uniquanf: largest fraction of the range the clip removes")
          ->capture_default_str();
      g->add_option("--bcq-lp", o->fit.lp, "uniquanf: exponent p of the clip search's L_p error")->capture_default_str();
      g->add_option("--uq-epochs", o->epochs,
                    "uniquanf: block-wise reconstruction epochs over the calibration windows (0: the "
                    "initialization alone; the release trains 20 over 128 x 2048 tokens)")
          ->capture_default_str();
      g->add_option("--uq-batch", o->batch_sequences, "uniquanf: calibration windows per step")->capture_default_str();
      g->add_option("--uq-u-lr", o->u_lr, "uniquanf: Adam learning rate of the transform (delta1, delta2, delta3)")
          ->capture_default_str();
      g->add_option("--uq-b-lr", o->b_lr, "uniquanf: Adam learning rate of the BCQ scales")->capture_default_str();
      g->add_option("--uq-period", o->period, "uniquanf: steps between local re-mappings of the codes (0: never)")
          ->capture_default_str();
      g->add_option("--uq-input-mix", o->input_mix,
                    "uniquanf: probability that a block input element is the FP model's own activation rather than "
                    "the quantized model's (QDrop-style; the targets are then the FP block on the FP stream; 0: "
                    "quantized inputs, FP block on them as targets)")
          ->capture_default_str();
      g->add_option("--uq-seed", o->seed, "uniquanf: seed of the window shuffle and the input mix")->capture_default_str();
      return [o, weighting](const std::string& name) {
        cli::QuantizeMethod m;
        const bool alternating = name == "alternating";
        o->fit.weighting = weighting->empty() ? (alternating ? calib::BCQWeighting::None : calib::BCQWeighting::Full)
                                              : calib::parse_bcq_weighting(*weighting);
        if (alternating) {
          m.method = calib::bcq_method(name, o->fit);
          return m;
        }
        m.method = calib::uniquanf_method(*o);
        if (o->epochs > 0) {
          const calib::UniQuanFOptions opts = *o;
          m.finetune = [opts](calib::BlockContext& ctx) { return calib::uniquanf_finetune_block(ctx, opts); };
          m.fp_stream = opts.input_mix > 0.0f;
        }
        return m;
      };
    }}};

}  // namespace lowbit_method_bcq
