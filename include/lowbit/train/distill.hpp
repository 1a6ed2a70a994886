// End-to-end distillation of a student Llama (e.g. with quantized linears exposing scales/codebooks, or
// fake-quantized latent weights) against a frozen teacher Llama's next-token distributions: forward KL
// (AQLM global fine-tuning), reverse KL, or BitDistiller's CAKLD whose β is the teacher's mean top-1
// probability estimated on the first `beta_batches` batches. AdamW, schedule and clipping as in pretraining.
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
  int beta_batches = 10;  // CAKLD: batches used to estimate β
  std::uint64_t seed = 0;
  std::int64_t eval_tokens = 8192;  // held-out tokens for the before/after divergence
  bool quiet = true;
  // Which student parameters train (by name); default all.
  std::function<bool(const std::string&)> trainable;
  std::filesystem::path checkpoint;  // empty: no checkpoints
  std::int64_t checkpoint_every = 25;
  std::function<void(std::int64_t step, double loss)> on_step;  // after each update (tests interrupt here)
};

struct DistillResult {
  double beta = 0.0;  // CAKLD β used (0 for forward KL, 1 for reverse KL)
  double first_loss = 0.0, last_loss = 0.0;
  double heldout_before = 0.0, heldout_after = 0.0;  // the same divergence on held-out windows
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
  double total = 0;
  for (std::int64_t w = 0; w < windows; w += batch) {
    const int B = static_cast<int>(std::min<std::int64_t>(batch, windows - w));
    const std::int32_t* ids = tokens.data() + w * seq_len;
    const index_t n = static_cast<index_t>(B) * seq_len;
    s.resize(static_cast<std::size_t>(n * vocab));
    t.resize(s.size());
    student.forward(ids, B, seq_len, s.data());
    teacher.forward(ids, B, seq_len, t.data());
    total += distill_loss(kind, MatrixView<const float>(s.data(), n, vocab), MatrixView<const float>(t.data(), n, vocab),
                          beta) * static_cast<double>(B);
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
    std::uint64_t h = fnv1a64(f.str().data(), f.str().size());
    for (const auto& p : chosen) {
      h = fnv1a64(p.name.data(), p.name.size(), h);
      h = fnv1a64(p.value, static_cast<std::size_t>(p.size) * sizeof(float), h);
    }
    state.run_fingerprint = h;
  }
  std::vector<std::int32_t> inputs, targets;
  std::vector<float> s(static_cast<std::size_t>(n * vocab)), t(s.size()), ds(s.size());
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
  if (!options.checkpoint.empty() && std::filesystem::exists(options.checkpoint)) {
    Checkpoint ck = read_checkpoint(options.checkpoint);
    LOWBIT_CHECK(ck.state.run_fingerprint == state.run_fingerprint, options.checkpoint.string(),
                 ": distillation checkpoint was written by another run (other options, data or starting "
                 "weights); remove it to start over");
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
    save_checkpoint(options.checkpoint, student.config(), chosen, state, &optimizer);
  };
  const std::int64_t first_step = state.step;
  Progress progress("distill", options.steps - first_step, "step", options.quiet);
  for (std::int64_t step = first_step; step < options.steps; ++step) {
    sampler.next(inputs, targets);
    teacher.forward(inputs.data(), B, T, t.data());
    student.forward_train(inputs.data(), B, T, s.data());
    const double loss = distill_loss(options.loss, MatrixView<const float>(s.data(), n, vocab),
                                     MatrixView<const float>(t.data(), n, vocab), result.beta,
                                     MatrixView<float>(ds.data(), n, vocab));
    for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
    student.backward(ds.data());
    clip_grad_norm(chosen, options.grad_clip);
    optimizer.step(schedule.lr(step));
    if (step == first_step) result.first_loss = loss;
    result.last_loss = loss;
    state.step = step + 1;
    state.last_loss = loss;
    if (options.checkpoint_every > 0 && state.step % options.checkpoint_every == 0 && state.step < options.steps)
      save();
    char status[64];
    std::snprintf(status, sizeof status, "loss %.4f beta %.3f", loss, result.beta);
    progress.update(1, status);
    if (options.on_step) options.on_step(step + 1, loss);
  }
  result.steps = state.step;
  save();  // the finished run: a rerun restores it instead of training again
  progress.finish();
  for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
  result.heldout_after =
      heldout_divergence(student, teacher, data.heldout, options.loss, result.beta, T, options.eval_tokens);
  return result;
}

}  // namespace lowbit::train
