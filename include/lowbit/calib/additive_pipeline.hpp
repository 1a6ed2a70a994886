// AQLM inside the block-by-block calibration pipeline (calib/pipeline.hpp): a Method that replaces each
// linear by QuantizedLinear<F> for any registered AdditiveFormat F, calibrated against its input
// Hessian; a block fine-tune hook (ALGORITHMS.md §1.3 step 3) that turns the block's layers into their
// trainable forms (nn::Linear::trainable_form: codebooks and scales of AQLM layers; layers of other
// formats stay frozen), trains them and the RMSNorm gains against the FP block outputs with
// train/block_trainer.hpp (held-out early stopping), and returns them to their packed fp16 forms; and the
// optional end-to-end "global fine-tuning" after the block pass (ALGORITHMS.md §1.4, P step only), the
// same over the whole model by forward KL to the FP model. `lowbit quantize --method aqlm` and
// examples/example_aqlm.cpp use this.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "../core/hash.hpp"
#include "../format/additive.hpp"
#include "../formats.hpp"
#include "../nn/additive_linear.hpp"
#include "../nn/quantized_linear.hpp"
#include "../train/block_trainer.hpp"
#include "../train/distill.hpp"
#include "additive.hpp"
#include "method.hpp"
#include "pipeline.hpp"

namespace lowbit::calib {

struct AqlmOptions {
  AdditiveCalibOptions calib = [] {
    AdditiveCalibOptions o;
    o.kmeans.iterations = 25;  // the paper uses 100; 25 reaches the same objective on SmolLM2 shapes within 1%
    o.max_epochs = 20;
    o.relative_mse_tolerance = 0.01;
    return o;
  }();
  int finetune_epochs = 0;  // 0: no block fine-tuning
  float finetune_lr = 1e-4f;
  int finetune_batch = 4;  // sequences per step
  int finetune_patience = 2;
  bool finetune_norms = true;  // also train the block's RMSNorm gains
  // End-to-end fine-tuning after all blocks (aqlm_finetune_end_to_end); not part of to_json(), which
  // fingerprints the block pass for resuming, so changing these reuses the calibrated blocks.
  std::int64_t e2e_steps = 0;  // 0: off
  float e2e_lr = 1e-4f;
  int e2e_batch = 1;     // sequences per step
  int e2e_seq_len = 0;   // tokens per sequence; 0: the calibration sequence length
  int e2e_nsamples = 0;  // calibration windows drawn for this phase; 0: the block pass's windows
  // A `lowbit teacher-data` file: the phase trains on the FP model's own generations instead of the
  // calibration windows (BitDistiller's self-distillation data, docs/aqlm.md); its fingerprint is
  // e2e_teacher_fingerprint, so a checkpoint made on other data is not resumed.
  std::string e2e_teacher_data;
  std::uint64_t e2e_teacher_fingerprint = 0;

  nlohmann::json e2e_json() const {
    nlohmann::json j = {{"steps", e2e_steps},     {"lr", e2e_lr},
                        {"batch", e2e_batch},     {"seq_len", e2e_seq_len},
                        {"nsamples", e2e_nsamples}, {"loss", "forward-kl"}};
    if (!e2e_teacher_data.empty()) j["teacher_data_fnv1a64"] = e2e_teacher_fingerprint;
    return j;
  }

  nlohmann::json to_json() const {
    return {{"kmeans_iterations", calib.kmeans.iterations},
            {"max_points_per_centroid", calib.kmeans.max_points_per_centroid},
            {"beam_size", calib.beam_size},
            {"max_epochs", calib.max_epochs},
            {"relative_mse_tolerance", calib.relative_mse_tolerance},
            {"codebook_update", calib.update == CodebookUpdate::ExactLeastSquares ? "exact-ls" : "adam"},
            {"adam_steps", calib.adam.steps},
            {"adam_lr", calib.adam.lr},
            {"seed", calib.seed},
            {"finetune_epochs", finetune_epochs},
            {"finetune_lr", finetune_lr},
            {"finetune_batch", finetune_batch},
            {"finetune_patience", finetune_patience},
            {"finetune_norms", finetune_norms}};
  }
};

inline constexpr auto additive_formats = []<class F>() { return AdditiveFormat<F>; };

// Unpacked codes of an AQLM layer in either form (fp16 codebooks and scales as stored).
inline AdditiveCodes additive_codes_of(const nn::Linear& linear) { return nn::additive_codes(linear); }

// Per-linear AQLM for every registered additive format: H = XᵀX / N from the pipeline, seed derived from
// the run seed and the tensor name.
inline Method aqlm_method(const AqlmOptions& options) {
  Method m;
  m.name = "aqlm";
  m.capability = "additive format";
  m.accepts = accepts_formats_where(additive_formats);
  m.needs_hessian = true;
  m.needs_samples = false;
  m.options = options.to_json();
  m.run = [options](const LinearJob& job) {
    return visit_format_if(
        job.format, additive_formats,
        [&]<class F>(FormatTag<F>) {
          AdditiveCalibOptions o = options.calib;
          o.num_codebooks = F::num_codebooks;
          o.code_bits = F::code_bits;
          o.group_size = F::group_size;
          o.label = job.name;
          o.seed = options.calib.seed ^ (job.seed * 0x9e3779b97f4a7c15ULL) ^ std::hash<std::string>{}(job.name);
          LOWBIT_CHECK(job.hessian && job.hessian->rows() > 0, job.name, ": aqlm needs the input Hessian");
          const auto& sum = job.hessian->sum();
          const index_t n = sum.rows();
          std::vector<float> H(static_cast<std::size_t>(n * n));
          const double inv_rows = 1.0 / static_cast<double>(job.hessian->rows());
          for (index_t r = 0; r < n; ++r)
            for (index_t col = 0; col < n; ++col)
              H[static_cast<std::size_t>(r * n + col)] = static_cast<float>(sum(r, col) * inv_rows);
          AdditiveCalibReport report;
          const AdditiveCodes codes = calibrate_additive(job.weight, MatrixView<const float>(H.data(), n, n), o, &report);
          LinearOutcome out;
          out.layer = std::make_unique<nn::QuantizedLinear<F>>(Quantizer<F>::pack(codes));
          out.stats["aq_initial_relative_mse"] = report.initial_relative_mse;
          out.stats["aq_relative_mse"] = report.relative_mse;
          out.stats["aq_epochs"] = report.epochs;
          return out;
        },
        "additive format");
  };
  return m;
}

// Turns the linears of one block into their trainable forms (true: the layers that have one; the rest
// stay as they are and, having no parameters, stay frozen) or back into their packed forms (false).
inline void set_block_trainable(nn::Llama& model, int layer, bool trainable) {
  for (auto role : nn::kAllLinearRoles) {
    auto& lin = model.linear(layer, role);
    if (auto other = trainable ? lin.trainable_form() : lin.inference_form()) model.set_linear(layer, role, std::move(other));
  }
}

// Block fine-tuning: the block's layers in their trainable forms, trained, and back (fp16).
inline nlohmann::json aqlm_finetune_block(BlockContext& ctx, const AqlmOptions& options) {
  nn::Llama& model = *ctx.model;
  set_block_trainable(model, ctx.layer, true);
  train::BlockTrainOptions t;
  t.epochs = options.finetune_epochs;
  t.batch_sequences = options.finetune_batch;
  t.patience = options.finetune_patience;
  t.seed = options.calib.seed + static_cast<std::uint64_t>(ctx.layer);
  t.adam.lr = options.finetune_lr;
  t.adam.weight_decay = 0.0f;
  t.trainable = options.finetune_norms ? train::names_containing({"codebooks", "scales", "norm"})
                                       : train::names_containing({"codebooks", "scales"});
  const auto r = train::train_block(model, ctx.layer, ctx.inputs.data, ctx.targets.data, ctx.nsamples, ctx.seqlen, t);
  set_block_trainable(model, ctx.layer, false);
  return {{"initial_heldout_mse", r.initial_heldout_mse},
          {"best_heldout_mse", r.best_heldout_mse},
          {"epochs_run", r.epochs_run},
          {"best_epoch", r.best_epoch}};
}

// Global fine-tuning (ALGORITHMS.md §1.4, the P step; no discrete V step): after the block pass, train
// the codebooks, scales and RMSNorm gains of the whole quantized model (codes frozen) with AdamW
// (betas 0.9 / 0.95) on the forward KL to the FP teacher's next-token distributions over `data` (its
// held-out part measures the KL before and after). Deterministic for a seed. With a `run_dir`, progress is
// checkpointed there (end_to_end-<hash of the e2e options>.ckpt, every 25 steps): a killed run continues
// where it stopped and ends bit-identical to an uninterrupted one. Training sequences are `seq_len` tokens
// (fewer when the training data is shorter).
inline nlohmann::json aqlm_finetune_end_to_end(nn::Llama& student, nn::Llama& teacher, const train::TokenData& data,
                                               int seq_len, const AqlmOptions& options, bool quiet = false,
                                               const std::string& run_dir = {}) {
  const auto start = std::chrono::steady_clock::now();
  LOWBIT_CHECK(seq_len >= 2, "aqlm end-to-end fine-tuning: sequences of ", seq_len, " tokens (at least 2)");
  LOWBIT_CHECK(data.train.size() >= 3 && !data.heldout.empty(),
               "aqlm end-to-end fine-tuning: too little data in ", data.description, " (", data.train.size(),
               " training and ", data.heldout.size(), " held-out tokens)");
  train::DistillOptions d;
  d.loss = train::DistillLoss::ForwardKL;
  d.steps = options.e2e_steps;
  d.batch_size = options.e2e_batch;
  d.seq_len = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(seq_len), data.train.size() - 1));
  d.schedule.peak_lr = options.e2e_lr;  // constant schedule
  d.adam.beta2 = 0.95f;
  d.adam.weight_decay = 0.0f;
  d.seed = options.calib.seed;
  d.eval_tokens = static_cast<std::int64_t>(data.heldout.size());
  d.quiet = quiet;
  d.trainable = options.finetune_norms ? train::names_containing({"codebooks", "scales", "norm"})
                                       : train::names_containing({"codebooks", "scales"});
  if (!run_dir.empty()) {
    const std::string key = options.e2e_json().dump();
    char name[64];
    std::snprintf(name, sizeof name, "end_to_end-%016llx.ckpt", static_cast<unsigned long long>(fnv1a64(key)));
    std::filesystem::create_directories(run_dir);
    d.checkpoint = std::filesystem::path(run_dir) / name;
  }
  for (int l = 0; l < student.config().n_layers; ++l) set_block_trainable(student, l, true);
  const auto r = train::distill(student, teacher, data, d);
  for (int l = 0; l < student.config().n_layers; ++l) set_block_trainable(student, l, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {{"options", options.e2e_json()},
          {"steps", r.steps},
          {"data", data.description},
          {"train_tokens", data.train.size()},
          {"heldout_tokens", data.heldout.size()},
          {"first_loss", r.first_loss},
          {"last_loss", r.last_loss},
          {"heldout_kl_before", r.heldout_before},
          {"heldout_kl_after", r.heldout_after},
          {"resumed", r.resumed},
          {"resumed_from_step", r.resumed_from_step},
          {"seconds", seconds}};
}

// The same on calibration windows (`seqlen` tokens each): the last 10% (at least one window) are held out;
// sequences are `e2e_seq_len` tokens (default and at most seqlen - 1).
inline nlohmann::json aqlm_finetune_end_to_end(nn::Llama& student, nn::Llama& teacher,
                                               const std::vector<std::int32_t>& windows, int seqlen,
                                               const AqlmOptions& options, bool quiet = false,
                                               const std::string& run_dir = {}) {
  LOWBIT_CHECK(seqlen > 1 && windows.size() % static_cast<std::size_t>(seqlen) == 0 && windows.size() >= 2u * seqlen,
               "aqlm end-to-end fine-tuning needs at least 2 calibration windows of ", seqlen, " tokens (got ",
               windows.size(), " tokens)");
  const std::size_t n = windows.size() / static_cast<std::size_t>(seqlen);
  const std::size_t heldout = std::max<std::size_t>(1, n / 10);
  train::TokenData data;
  data.train.assign(windows.begin(), windows.end() - static_cast<std::ptrdiff_t>(heldout * seqlen));
  data.heldout.assign(windows.end() - static_cast<std::ptrdiff_t>(heldout * seqlen), windows.end());
  data.vocab_size = student.config().vocab_size;
  data.description = "calibration windows";
  data.finalize();
  const int seq_len = std::min(options.e2e_seq_len > 0 ? options.e2e_seq_len : seqlen, seqlen - 1);
  auto r = aqlm_finetune_end_to_end(student, teacher, data, seq_len, options, quiet, run_dir);
  r["train_windows"] = n - heldout;
  r["heldout_windows"] = heldout;
  return r;
}

inline PipelineHooks aqlm_hooks(const AqlmOptions& options) {
  PipelineHooks hooks;
  if (options.finetune_epochs > 0)
    hooks.finetune = [options](BlockContext& ctx) { return aqlm_finetune_block(ctx, options); };
  return hooks;
}

}  // namespace lowbit::calib
