// End-to-end distillation of a student Llama (e.g. with quantized linears exposing scales/codebooks, or
// fake-quantized latent weights) against a frozen teacher Llama's next-token distributions: forward KL
// (AQLM global fine-tuning), reverse KL, or BitDistiller's CAKLD whose β is the teacher's mean top-1
// probability estimated on the first `beta_batches` batches; plain cross-entropy on the data as the
// ablation's baseline. AdamW, schedule and clipping as in pretraining; `accumulation` micro-batches per
// update. With `eval_every`, the held-out divergence is measured every that many steps and at the end,
// and the student ends with the parameters of the best measurement (BitDistiller's best-checkpoint reload).
// With `checkpoint` set, the trainable parameters, AdamW state and sampler position are saved atomically
// every `checkpoint_every` steps (train/checkpoint.hpp); a rerun of the same run (same options, data,
// trainable names and starting values) continues from the file and ends bit-identical to an
// uninterrupted run.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../nn/model.hpp"
#include "adamw.hpp"
#include "checkpoint.hpp"
#include "clip.hpp"
#include "losses.hpp"
#include "schedule.hpp"
#include "token_data.hpp"

namespace lowbit::train {

struct DistillOptions {
  DistillLoss loss = DistillLoss::CAKLD;
  std::int64_t steps = 100;
  int batch_size = 4;
  int seq_len = 128;
  LrSchedule schedule{ScheduleKind::Constant, 1e-4f, 0, 100, 1.0f};
  AdamWOptions adam;
  double grad_clip = 1.0;
  int accumulation = 1;  // micro-batches of batch_size sequences per update
  int beta_batches = 10;  // CAKLD: batches used to estimate β
  std::int64_t eval_every = 0;  // > 0: keep the parameters of the best held-out measurement
  std::uint64_t seed = 0;
  std::int64_t eval_tokens = 8192;  // held-out tokens for the before/after divergence
  bool quiet = true;
  // Which student parameters train (by name); default all.
  std::function<bool(const std::string&)> trainable;
  // > 0: the training loss is (1 − ce_weight) · divergence + ce_weight · cross-entropy on the data's next
  // tokens (the Auto Quantization Encoder's μ = 0.7 mix of distillation and next-token loss); the
  // held-out measurement stays the divergence alone.
  double ce_weight = 0.0;
  std::uint64_t run_key = 0;  // folded into the run fingerprint: the caller's own options (e.g. a schedule of its own)
  std::filesystem::path checkpoint;  // empty: no checkpoints
  std::int64_t checkpoint_every = 25;
  std::function<void(std::int64_t step, double loss)> on_step;  // after each update (tests interrupt here)
};

struct DistillResult {
  double beta = 0.0;  // CAKLD β used (0 for forward KL, 1 for reverse KL)
  double first_loss = 0.0, last_loss = 0.0;
  double heldout_before = 0.0, heldout_after = 0.0;  // the same divergence on held-out windows
  std::int64_t best_step = -1;  // with eval_every: the step whose parameters were kept (0: the start)
  std::vector<std::pair<std::int64_t, double>> heldout_curve;  // with eval_every: (step, divergence)
  std::int64_t steps = 0;  // updates done in total, including those before a resume
  bool resumed = false;
  std::int64_t resumed_from_step = 0;
};

// Mean divergence on non-overlapping held-out windows (no gradients).
inline double heldout_divergence(nn::Llama& student, nn::Llama& teacher, const std::vector<std::int32_t>& tokens,
                                 DistillLoss kind, double beta, int seq_len, std::int64_t max_tokens, int batch = 4) {
  const std::int64_t windows = std::min<std::int64_t>(static_cast<std::int64_t>(tokens.size()) / seq_len,
                                                      std::max<std::int64_t>(1, max_tokens / seq_len));
  LOWBIT_CHECK(windows > 0, "distill: held-out data has fewer than ", seq_len, " tokens");
  const index_t vocab = student.config().vocab_size;
  std::vector<float> s, t;
  std::vector<std::int32_t> next;
  double total = 0;
  for (std::int64_t w = 0; w < windows; w += batch) {
    const int B = static_cast<int>(std::min<std::int64_t>(batch, windows - w));
    const std::int32_t* ids = tokens.data() + w * seq_len;
    const index_t n = static_cast<index_t>(B) * seq_len;
    s.resize(static_cast<std::size_t>(n * vocab));
    student.forward(ids, B, seq_len, s.data());
    if (kind == DistillLoss::CE) {  // each window's next tokens; the very last position has none
      next.resize(static_cast<std::size_t>(n));
      for (index_t i = 0; i < n; ++i)
        next[static_cast<std::size_t>(i)] = w * seq_len + i + 1 < static_cast<std::int64_t>(tokens.size()) ? ids[i + 1] : -1;
    } else {
      t.resize(s.size());
      teacher.forward(ids, B, seq_len, t.data());
    }
    total += distill_loss(kind, MatrixView<const float>(s.data(), n, vocab), MatrixView<const float>(t.data(), t.empty() ? 0 : n, vocab),
                          beta, MatrixView<float>{}, 1.0, next.data()) * static_cast<double>(B);
  }
  return total / static_cast<double>(windows);
}

inline DistillResult distill(nn::Llama& student, nn::Llama& teacher, const TokenData& data,
                             const DistillOptions& options) {
  LOWBIT_CHECK(student.config().vocab_size == teacher.config().vocab_size, "distill: student vocabulary ",
               student.config().vocab_size, " differs from the teacher's ", teacher.config().vocab_size);
  const index_t vocab = student.config().vocab_size;
  const int B = options.batch_size, T = options.seq_len;
  const index_t n = static_cast<index_t>(B) * T;
  std::vector<nn::Parameter> all = student.parameters(), chosen;
  for (const auto& p : all)
    if (!options.trainable || options.trainable(p.name)) chosen.push_back(p);
  LOWBIT_CHECK(!chosen.empty(), "distill: no student parameter matches the trainable predicate");
  LOWBIT_CHECK(options.accumulation >= 1, "distill: accumulation must be >= 1, got ", options.accumulation);
  LOWBIT_CHECK(options.eval_every >= 0, "distill: eval_every must be >= 0, got ", options.eval_every);
  LOWBIT_CHECK(options.ce_weight >= 0 && options.ce_weight <= 1, "distill: ce_weight must be in [0, 1], got ",
               options.ce_weight);
  LOWBIT_CHECK(options.ce_weight == 0 || options.loss != DistillLoss::CE,
               "distill: ce_weight mixes cross-entropy into a divergence; the loss is already cross-entropy");
  AdamW optimizer(chosen, options.adam);
  LrSchedule schedule = options.schedule;
  schedule.total_steps = options.steps;
  // The run: options, data, and the names and starting values of what trains.
  TrainingState state;
  state.total_steps = options.steps;
  {
    std::ostringstream f;
    f << static_cast<int>(options.loss) << '|' << options.steps << '|' << B << '|' << T << '|';
    write_optimizer_fingerprint(f, schedule, options.adam);
    f << '|' << options.grad_clip << '|' << options.beta_batches << '|' << options.seed << '|' << data.fingerprint;
    if (options.accumulation != 1 || options.eval_every != 0) f << '|' << options.accumulation << '|' << options.eval_every;
    if (options.ce_weight != 0) f << "|ce" << options.ce_weight;
    if (options.run_key != 0) f << "|key" << options.run_key;
    std::uint64_t h = fnv1a64(f.str().data(), f.str().size());
    for (const auto& p : chosen) {
      h = fnv1a64(p.name.data(), p.name.size(), h);
      h = fnv1a64(p.value, static_cast<std::size_t>(p.size) * sizeof(float), h);
    }
    state.run_fingerprint = h;
  }
  std::vector<std::int32_t> inputs, targets;
  std::vector<float> s(static_cast<std::size_t>(n * vocab)), t(s.size()), ds(s.size()), dce;
  const bool mix = options.ce_weight > 0;
  if (mix) dce.resize(s.size());
  DistillResult result;

  // β from the teacher's confidence on the first batches (the same batches training then starts with).
  result.beta = options.loss == DistillLoss::ReverseKL ? 1.0 : 0.0;
  if (options.loss == DistillLoss::CAKLD) {
    BatchSampler probe(data.train, B, T, Rng(options.seed).fork(2));
    Top1Probability top1;
    for (int i = 0; i < std::max(1, options.beta_batches); ++i) {
      probe.next(inputs, targets);
      teacher.forward(inputs.data(), B, T, t.data());
      top1.add(teacher_top1_probability(MatrixView<const float>(t.data(), n, vocab)));
    }
    result.beta = top1.mean();
  }
  result.heldout_before =
      heldout_divergence(student, teacher, data.heldout, options.loss, result.beta, T, options.eval_tokens);

  BatchSampler sampler(data.train, B, T, Rng(options.seed).fork(2));
  // Best held-out parameters (eval_every): kept in memory, saved beside the checkpoint as `<checkpoint>.best`.
  const bool select = options.eval_every > 0;
  std::vector<std::vector<float>> best;
  double best_value = 0;
  const auto snapshot = [&] {
    best.resize(chosen.size());
    for (std::size_t i = 0; i < chosen.size(); ++i) best[i].assign(chosen[i].value, chosen[i].value + chosen[i].size);
  };
  const std::filesystem::path best_path =
      options.checkpoint.empty() ? std::filesystem::path() : std::filesystem::path(options.checkpoint.string() + ".best");
  if (select) {
    best_value = result.heldout_before;
    result.best_step = 0;
    result.heldout_curve.emplace_back(0, best_value);
    snapshot();
  }
  if (!options.checkpoint.empty() && std::filesystem::exists(options.checkpoint)) {
    Checkpoint ck = read_checkpoint(options.checkpoint);
    LOWBIT_CHECK(ck.state.run_fingerprint == state.run_fingerprint, options.checkpoint.string(),
                 ": distillation checkpoint was written by another run (other options, data or starting "
                 "weights); remove it to start over");
    if (select && std::filesystem::exists(best_path)) {
      Checkpoint b = read_checkpoint(best_path);
      LOWBIT_CHECK(b.state.run_fingerprint == state.run_fingerprint, best_path.string(),
                   ": best-parameters file of another run; remove it and ", options.checkpoint.string());
      restore_checkpoint(b, chosen, nullptr);
      snapshot();
      best_value = b.state.last_loss;
      result.best_step = b.state.step;
    }
    restore_checkpoint(ck, chosen, &optimizer);
    state = ck.state;
    sampler.restore(state.data_rng, state.data_position);
    result.resumed = true;
    result.resumed_from_step = state.step;
    result.first_loss = result.last_loss = state.last_loss;
  }
  auto save = [&] {
    if (options.checkpoint.empty()) return;
    state.data_rng = sampler.rng().state();
    state.data_position = sampler.position();
    if (select) {  // the best parameters first: a kill between the two writes leaves a consistent pair
      std::vector<nn::Parameter> views = chosen;
      for (std::size_t i = 0; i < views.size(); ++i) views[i].value = best[i].data();
      TrainingState b = state;
      b.step = result.best_step;
      b.last_loss = best_value;
      save_checkpoint(best_path, student.config(), views, b, nullptr);
    }
    save_checkpoint(options.checkpoint, student.config(), chosen, state, &optimizer);
  };
  auto measure = [&](std::int64_t step) {
    for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
    const double h = heldout_divergence(student, teacher, data.heldout, options.loss, result.beta, T, options.eval_tokens);
    result.heldout_curve.emplace_back(step, h);
    if (h < best_value) {
      best_value = h;
      result.best_step = step;
      snapshot();
    }
    return h;
  };
  const std::int64_t first_step = state.step;
  const bool ce = options.loss == DistillLoss::CE;
  const double micro_scale = 1.0 / options.accumulation;
  Progress progress("distill", options.steps - first_step, "step", options.quiet);
  for (std::int64_t step = first_step; step < options.steps; ++step) {
    for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
    double loss = 0;
    for (int micro = 0; micro < options.accumulation; ++micro) {
      sampler.next(inputs, targets);
      if (!ce) teacher.forward(inputs.data(), B, T, t.data());
      student.forward_train(inputs.data(), B, T, s.data());
      const double w = mix ? options.ce_weight : 0.0;
      loss += micro_scale * (1.0 - w) *
              distill_loss(options.loss, MatrixView<const float>(s.data(), n, vocab),
                           MatrixView<const float>(t.data(), n, vocab), result.beta,
                           MatrixView<float>(ds.data(), n, vocab), micro_scale * (1.0 - w), targets.data());
      if (mix) {
        loss += micro_scale * w *
                cross_entropy(MatrixView<const float>(s.data(), n, vocab), targets.data(),
                              MatrixView<float>(dce.data(), n, vocab), micro_scale * w);
        for (std::size_t i = 0; i < ds.size(); ++i) ds[i] += dce[i];
      }
      student.backward(ds.data());
    }
    clip_grad_norm(chosen, options.grad_clip);
    optimizer.step(schedule.lr(step));
    if (step == first_step) result.first_loss = loss;
    result.last_loss = loss;
    state.step = step + 1;
    state.last_loss = loss;
    if (select && state.step % options.eval_every == 0 && state.step < options.steps) measure(state.step);
    if (options.checkpoint_every > 0 && state.step % options.checkpoint_every == 0 && state.step < options.steps)
      save();
    char status[64];
    std::snprintf(status, sizeof status, "loss %.4f beta %.3f", loss, result.beta);
    progress.update(1, status);
    if (options.on_step) options.on_step(step + 1, loss);
  }
  result.steps = state.step;
  if (select && (result.heldout_curve.empty() || result.heldout_curve.back().first != state.step)) measure(state.step);
  save();  // the finished run: a rerun restores it instead of training again
  progress.finish();
  for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
  if (select) {
    for (std::size_t i = 0; i < chosen.size(); ++i) std::copy(best[i].begin(), best[i].end(), chosen[i].value);
    result.heldout_after = best_value;
  } else {
    result.heldout_after =
        heldout_divergence(student, teacher, data.heldout, options.loss, result.beta, T, options.eval_tokens);
  }
  return result;
}

}  // namespace lowbit::train
