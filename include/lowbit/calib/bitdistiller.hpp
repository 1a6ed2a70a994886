// BitDistiller (ALGORITHMS.md §2): quantization-aware training by self-distillation, for any group-grid
// format (asymmetric int2/int3/int4, NF3, any group size).
//   1. The `bitdistiller` calibration method starts every linear as an nn::FakeQuantLinear: its latent
//      weight is the FP weight clamped by AutoClip (`init` autoclip, the paper), the plain FP weight (rtn),
//      or GPTQ's (or AutoClip+GPTQ's) dequantized result (gptq, autoclip+gptq: a start that already sits on
//      the grid, so a weight needs a full step to change level; stated as a departure).
//   2. bitdistiller_train distills the whole student against the FP teacher on the teacher's own
//      generations (train/teacher_data.hpp; or calibration windows when none are given) with CAKLD (or
//      forward KL, reverse KL, CE for the ablation), AdamW, a schedule, gradient clipping and accumulation,
//      best-held-out selection, and checkpoints for a bit-identical resume (train/distill.hpp).
//   3. Every fake-quant layer packs into its format (inference_form: RTN of the latent weight, the
//      forward's own arithmetic), so the written file computes exactly what was trained.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/hash.hpp"
#include "../formats.hpp"
#include "../nn/fake_quant_linear.hpp"
#include "../train/block_trainer.hpp"
#include "../train/distill.hpp"
#include "../train/teacher_data.hpp"
#include "group_methods.hpp"
#include "method.hpp"

namespace lowbit::calib {

struct BitDistillerOptions {
  std::string init = "autoclip";  // autoclip | rtn | gptq | autoclip+gptq
  GroupMethodOptions group;       // AutoClip's grid and GPTQ's options for the start
  // ste: straight-through to the latent weights only; range: also through each group's scale to its
  // extreme weights (the paper's quantizers under autograd); clip: clipping-aware (fixed starting range).
  std::string gradient = "ste";
  // QAT
  std::string loss = "cakld";  // cakld | kl | reverse_kl | ce
  std::int64_t steps = 150;
  int batch = 4, seq_len = 256, accumulation = 1;
  float lr = 1e-4f;  // the paper's 8e-6 is for 7B models on 128k-token batches (docs/bitdistiller.md)
  std::string schedule = "cosine";
  std::int64_t warmup = 10;
  float weight_decay = 0.0f;
  double grad_clip = 1.0;
  int beta_batches = 10;
  std::int64_t eval_every = 25;  // best-held-out selection; 0: keep the last parameters
  std::int64_t checkpoint_every = 25;
  double heldout_fraction = 0.2;  // of the teacher samples (the paper holds out a fifth)
  bool train_norms = false;
  std::uint64_t seed = 0;

  // What changes the result of the QAT step (the run fingerprint of its checkpoints; the file's config).
  nlohmann::json qat_json() const {
    return {{"loss", loss},       {"steps", steps},     {"batch", batch},          {"seq_len", seq_len},
            {"accumulation", accumulation}, {"lr", lr}, {"schedule", schedule},    {"warmup", warmup},
            {"weight_decay", weight_decay}, {"grad_clip", grad_clip}, {"beta_batches", beta_batches},
            {"eval_every", eval_every},     {"heldout_fraction", heldout_fraction}, {"train_norms", train_norms},
            {"gradient", gradient}, {"seed", seed}};
  }
  nlohmann::json to_json() const {
    nlohmann::json j = group.to_json(init);
    j["init"] = init;
    j["gradient"] = gradient;
    return j;
  }
};

inline void check(const BitDistillerOptions& o) {
  LOWBIT_CHECK(o.init == "autoclip" || o.init == "rtn" || o.init == "gptq" || o.init == "autoclip+gptq",
               "bitdistiller: unknown start '", o.init, "' (known: autoclip, rtn, gptq, autoclip+gptq)");
  (void)train::parse_distill_loss(o.loss);
  LOWBIT_CHECK(o.gradient == "ste" || o.gradient == "range" || o.gradient == "clip", "bitdistiller: unknown gradient '",
               o.gradient, "' (known: ste, range, clip)");
  (void)train::parse_schedule_kind(o.schedule);
  LOWBIT_CHECK(o.steps >= 0 && o.steps <= (1LL << 40), "bitdistiller: steps must be >= 0, got ", o.steps);
  LOWBIT_CHECK(o.batch >= 1 && o.seq_len >= 2 && o.accumulation >= 1, "bitdistiller: batch, accumulation must be >= 1 "
               "and the sequence length >= 2");
  LOWBIT_CHECK(o.lr >= 0 && o.weight_decay >= 0 && o.grad_clip >= 0, "bitdistiller: learning rate, weight decay and "
               "gradient clip must be >= 0");
  LOWBIT_CHECK(o.warmup >= 0 && o.eval_every >= 0 && o.checkpoint_every >= 0 && o.beta_batches >= 1,
               "bitdistiller: warm-up, eval and checkpoint intervals must be >= 0 and beta batches >= 1");
  LOWBIT_CHECK(o.heldout_fraction > 0 && o.heldout_fraction < 1, "bitdistiller: the held-out fraction must be in (0, 1), got ",
               o.heldout_fraction);
}

inline bool init_uses_gptq(const std::string& init) { return init == "gptq" || init == "autoclip+gptq"; }

inline constexpr auto fake_quant_formats = []<class F>() { return GroupGridFormat<F> && !BCQFormat<F>; };

// The `bitdistiller` method: each linear becomes a fake-quant layer over the chosen start.
inline Method bitdistiller_method(const BitDistillerOptions& options) {
  check(options);
  Method m;
  m.name = "bitdistiller";
  m.capability = "group-grid format other than BCQ";
  m.accepts = accepts_formats_where(fake_quant_formats);
  m.needs_hessian = init_uses_gptq(options.init);
  m.needs_samples = options.init == "autoclip" || options.init == "autoclip+gptq";
  m.options = options.to_json();
  m.block_checkpoints = false;  // the latent weights live until QAT ends; QAT checkpoints them itself
  m.run = [options](const LinearJob& job) {
    return visit_format_if(
        job.format, fake_quant_formats,
        [&]<class F>(FormatTag<F>) {
          LinearOutcome out;
          const std::string clip = options.init == "autoclip" || options.init == "autoclip+gptq" ? "autoclip" : "rtn";
          std::vector<float> W = detail::clipped_weight<F>(clip, options.group, job, out.stats);
          const index_t rows = job.weight.rows(), cols = job.weight.cols();
          if (init_uses_gptq(options.init)) {
            LOWBIT_CHECK(job.hessian && job.hessian->rows() > 0, job.name, ": gptq needs the input Hessian");
            GptqStats s;
            const auto packed = gptq_quantize<F>(MatrixView<const float>(W.data(), rows, cols), job.hessian->gptq_hessian(),
                                                 options.group.gptq, &s);
            out.stats["gptq_proxy_loss"] = s.proxy_loss;
            nn::QuantizedLinear<F>(packed).dequantize(MatrixView<float>(W.data(), rows, cols));
          }
          out.layer = std::make_unique<nn::FakeQuantLinear<F>>(MatrixView<const float>(W.data(), rows, cols),
                                                              nn::parse_fake_quant_gradient(options.gradient));
          return out;
        },
        "group-grid format other than BCQ");
  };
  return m;
}

inline bool is_fake_quant_layer(const nn::Linear& layer) { return dynamic_cast<const nn::FakeQuantTraining*>(&layer) != nullptr; }

// QAT of every fake-quant layer of `student` against `teacher`, then the fold into packed layers.
// Checkpoints go to `run_dir` (qat-<hash of the QAT options>.ckpt) when it is set; `on_step` runs after every update.
inline nlohmann::json bitdistiller_train(nn::Llama& student, nn::Llama& teacher, const train::TokenData& data,
                                         const BitDistillerOptions& o, bool quiet, const std::string& run_dir = {},
                                         std::function<void(std::int64_t, double)> on_step = {}) {
  check(o);
  const auto start = std::chrono::steady_clock::now();
  int layers = 0;
  for (int l = 0; l < student.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) layers += is_fake_quant_layer(student.linear(l, role));
  LOWBIT_CHECK(layers > 0, "bitdistiller: the student has no fake-quant layer (quantize with --method bitdistiller)");
  const int T = std::min<int>(o.seq_len, static_cast<int>(std::min(data.train.size(), data.heldout.size())) - 1);
  LOWBIT_CHECK(T >= 2, "bitdistiller: too little data (", data.train.size(), " training and ", data.heldout.size(),
               " held-out tokens)");
  train::DistillOptions d;
  d.loss = train::parse_distill_loss(o.loss);
  d.steps = o.steps;
  d.batch_size = o.batch;
  d.seq_len = T;
  d.accumulation = o.accumulation;
  d.schedule.kind = train::parse_schedule_kind(o.schedule);
  d.schedule.peak_lr = o.lr;
  d.schedule.warmup_steps = o.warmup;
  d.schedule.min_ratio = 0.1f;
  d.adam.beta1 = 0.9f;
  d.adam.beta2 = 0.999f;
  d.adam.weight_decay = o.weight_decay;
  d.grad_clip = o.grad_clip;
  d.beta_batches = o.beta_batches;
  d.eval_every = o.eval_every;
  d.checkpoint_every = o.checkpoint_every;
  d.seed = o.seed;
  d.eval_tokens = static_cast<std::int64_t>(data.heldout.size());
  d.quiet = quiet;
  d.on_step = std::move(on_step);  // after each update (tests interrupt here)
  d.trainable = o.train_norms ? train::names_containing({"fq_weight", "norm"}) : train::names_containing({"fq_weight"});
  if (!run_dir.empty()) {
    const std::string key = o.qat_json().dump();
    char name[64];
    std::snprintf(name, sizeof name, "qat-%016llx.ckpt", static_cast<unsigned long long>(fnv1a64(key)));
    std::filesystem::create_directories(run_dir);
    d.checkpoint = std::filesystem::path(run_dir) / name;
  }
  const auto r = train::distill(student, teacher, data, d);
  for (int l = 0; l < student.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles)
      if (is_fake_quant_layer(student.linear(l, role))) student.set_linear(l, role, student.linear(l, role).inference_form());
  nlohmann::json curve = nlohmann::json::array();
  for (const auto& [step, v] : r.heldout_curve) curve.push_back({step, v});
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {{"options", o.qat_json()},
          {"data", data.description},
          {"train_tokens", data.train.size()},
          {"heldout_tokens", data.heldout.size()},
          {"tokens_seen", static_cast<long long>(r.steps) * o.batch * o.accumulation * T},
          {"seq_len", T},
          {"beta", r.beta},
          {"steps", r.steps},
          {"first_loss", r.first_loss},
          {"last_loss", r.last_loss},
          {"heldout_before", r.heldout_before},
          {"heldout_after", r.heldout_after},
          {"best_step", r.best_step},
          {"heldout_curve", curve},
          {"resumed", r.resumed},
          {"resumed_from_step", r.resumed_from_step},
          {"layers", layers},
          {"seconds", seconds}};
}

}  // namespace lowbit::calib
