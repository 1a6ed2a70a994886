// UniQuanF (ALGORITHMS.md §3): the unified initialization of every BCQ linear (calib/bcq.hpp), then
// block-wise reconstruction: the block's linears become nn::UniQuanFLinear (FP weight frozen; FlexRound's
// log-scales δ1, δ2, δ3 and the BCQ scales trained), trained with Adam and a half-cosine decay to 0 to
// match the FP block's outputs (MSE), codes re-mapped locally every `period` steps, the clipping-aware
// STE; after the block, each layer folds into a plain BCQ layer (the unification theorem).
//
// Scaled to two CPU cores (stated in docs/uniquanf.md): the release trains 20 epochs over 128 x 2048
// tokens per block (2560 steps at batch 1); the defaults here train `epochs` over lowbit's calibration
// windows (32 x 512 by default) in batches of 4 windows, with the release's learning rates
// (u_lr 5e-3 for δ, b_lr 5e-4 for α), period 2 and T = 15 alternating rounds.
//
// Inputs (QDrop, the paper's setting): the pipeline keeps the FP model's own activation stream X_fp beside
// the quantized model's X_q (PipelineHooks::fp_stream); each training input element is X_fp's with
// probability `input_mix` (0.5), else X_q's, and the target is the FP block's output on X_fp. Held-out MSE
// is measured on X_q alone (what the deployed block sees). input_mix 0: X_q in, FP block(X_q) as target.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "../core/error.hpp"
#include "../formats.hpp"
#include "../nn/uniquanf_linear.hpp"
#include "../train/block_trainer.hpp"
#include "bcq_methods.hpp"
#include "method.hpp"

namespace lowbit::calib {

struct UniQuanFOptions {
  BCQFitOptions fit = [] {
    BCQFitOptions o;
    o.init = BCQInit::Uniform;
    o.weighting = BCQWeighting::Full;  // the layer-output error, not the release's plain weight error
    return o;
  }();
  int epochs = 4;            // 0: the initialization alone
  int batch_sequences = 4;
  float u_lr = 5e-3f;        // δ1, δ2, δ3
  float b_lr = 5e-4f;        // the BCQ scales a
  int period = 2;            // steps between local re-mappings of the codes
  float input_mix = 0.5f;    // QDrop: probability of an FP-stream input element (0: quantized inputs only)
  std::uint64_t seed = 0;

  nlohmann::json to_json() const {
    nlohmann::json j = fit.to_json();
    j["epochs"] = epochs;
    if (epochs > 0) {
      j["batch_sequences"] = batch_sequences;
      j["u_lr"] = u_lr;
      j["b_lr"] = b_lr;
      j["period"] = period;
      j["input_mix"] = input_mix;
    }
    return j;
  }
};

inline void check(const UniQuanFOptions& o) {
  LOWBIT_CHECK(o.epochs >= 0 && o.epochs <= 10000, "uniquanf: epochs must be in [0, 10000], got ", o.epochs);
  LOWBIT_CHECK(o.batch_sequences >= 1, "uniquanf: batch must be at least one window, got ", o.batch_sequences);
  LOWBIT_CHECK(o.u_lr >= 0.0f && o.b_lr >= 0.0f, "uniquanf: learning rates must be >= 0");
  LOWBIT_CHECK(o.period >= 0, "uniquanf: the remapping period must be >= 0, got ", o.period);
  LOWBIT_CHECK(o.input_mix >= 0.0f && o.input_mix <= 1.0f, "uniquanf: the input mix must be in [0, 1], got ", o.input_mix);
}

// The `uniquanf` method: the unified initialization, returned as a trainable UniQuanF layer when block
// training follows (epochs > 0: uniquanf_finetune_block folds it), as a plain BCQ layer otherwise.
inline Method uniquanf_method(const UniQuanFOptions& options) {
  check(options);
  Method m = bcq_method("uniquanf", options.fit);
  m.options = options.to_json();
  if (options.epochs == 0) return m;
  m.run = [options](const LinearJob& job) {
    return run_bcq_fit(job, options.fit,
                       [&]<class F>(MatrixView<const float> W, BCQPacked<F> fit) -> nn::LinearPtr {
                         return std::make_unique<nn::UniQuanFLinear<F>>(W, fit, options.period);
                       });
  };
  return m;
}

inline bool is_uniquanf_layer(const nn::Linear& layer) { return dynamic_cast<const nn::UniQuanFTraining*>(&layer) != nullptr; }

// Block-wise reconstruction of the block's UniQuanF layers, then their fold into BCQ layers.
inline nlohmann::json uniquanf_finetune_block(BlockContext& ctx, const UniQuanFOptions& options) {
  nn::Llama& model = *ctx.model;
  bool any = false;
  for (auto role : nn::kAllLinearRoles) any = any || is_uniquanf_layer(model.linear(ctx.layer, role));
  if (!any) return nlohmann::json::object();
  train::BlockTrainOptions t;
  t.epochs = options.epochs;
  t.batch_sequences = options.batch_sequences;
  t.patience = 0;
  t.keep_best = false;  // the schedule decays to 0: the last parameters are the result
  t.cosine = true;
  t.seed = options.seed + static_cast<std::uint64_t>(ctx.layer);
  t.adam.lr = options.u_lr;
  t.adam.beta1 = 0.9f;
  t.adam.beta2 = 0.999f;
  t.adam.weight_decay = 0.0f;
  const float ratio = options.u_lr > 0.0f ? options.b_lr / options.u_lr : 0.0f;
  t.lr_scale = [ratio](const std::string& name) { return name.find("bcq_alpha") != std::string::npos ? ratio : 1.0f; };
  t.trainable = train::names_containing({"uq_delta", "bcq_alpha"});
  // QDrop: inputs mix the quantized and the FP stream, targets are the FP block on the FP stream.
  const bool mix = options.input_mix > 0.0f;
  LOWBIT_CHECK(!mix || ctx.fp_inputs.data, "uniquanf: the input mix needs the FP activation stream "
               "(calib::PipelineHooks::fp_stream)");
  if (mix) {
    t.mix_inputs = ctx.fp_inputs.data;
    t.mix_prob = options.input_mix;
  }
  const float* targets = mix ? ctx.fp_targets.data : ctx.targets.data;
  const auto r = train::train_block(model, ctx.layer, ctx.inputs.data, targets, ctx.nsamples, ctx.seqlen, t);
  std::int64_t remapped = 0;
  for (auto role : nn::kAllLinearRoles)
    if (const auto* uq = dynamic_cast<const nn::UniQuanFTraining*>(&model.linear(ctx.layer, role))) {
      remapped += uq->remapped_codes();
      model.set_linear(ctx.layer, role, model.linear(ctx.layer, role).inference_form());
    }
  return {{"uniquanf_initial_heldout_mse", r.initial_heldout_mse},
          {"uniquanf_final_heldout_mse", r.best_heldout_mse},
          {"uniquanf_initial_train_mse", r.initial_train_mse},
          {"uniquanf_final_train_mse", r.final_train_mse},
          {"uniquanf_steps", r.steps},
          {"uniquanf_remapped_codes", remapped},
          {"uniquanf_trained_values", r.trained_values}};
}

}  // namespace lowbit::calib
