// Training of 1-bit activation encoders (ALGORITHMS.md §4.2, issue 17).
//
// Layer-wise (train_encoders), one block at a time: the FP model runs the calibration tokens block by
// block; before block l is encoded its four distinct linear inputs (taps) and the FP outputs of its seven
// linears are recorded, then block l gets encoders (nn/encoded_linear.hpp: 4 per block, shared by the
// linears reading the same input) trained by AdamW on
//   L = Σ_linears mean((W·enc(x_teacher) − W·x_teacher)²) / mean((W·x_teacher)²)
// over random batches of token rows: the seed's local output matching with the teacher's own inputs
// (its μ = 1 part; each linear's error relative to its output's power, so the seven count alike). The
// residual stream then continues with the FP block's output, as the seed's teacher inputs do. Weights
// stay frozen; only the encoders train (α from the mean |x| of each channel, β = 0; lr warm-up then cosine
// from `lr` to `final_lr`, the seed's 4e-4 → 4e-5; betas 0.9 / 0.95; weight decay on the encoder matrices
// only; gradient norm clipped). With a checkpoint path the encoders trained so far, the current block's
// AdamW state and its batch generator are saved atomically every `checkpoint_every` steps and after every
// block; a rerun of the same run continues from the file and ends bit-identical to an uninterrupted run.
//
// End to end (finetune_encoders_end_to_end), optionally afterwards: every encoder of the model at once,
// forward KL of the encoded model's next-token distributions to the FP model's (train/distill.hpp, with
// its checkpoints), the inner weights frozen. This is what the layer-wise phase cannot do: it sees the
// errors that compound through the residual stream.
//
// The seed's CE term (1 − μ = 0.3 of its layer-wise loss: the next-token loss of the model with block l
// encoded) would need the whole model per layer-wise step; here it is part of the end-to-end phase instead
// (ce_weight: (1 − w)·KL + w·CE). The surrogate's k can be annealed linearly in both phases (k_final).
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../nn/encoded_linear.hpp"
#include "../nn/model.hpp"
#include "adamw.hpp"
#include "checkpoint.hpp"
#include "clip.hpp"
#include "distill.hpp"
#include "token_data.hpp"

namespace lowbit::train {

struct EncoderTrainOptions {
  std::string encoder = "diag";  // none | diag | lowrank:R | mlp
  int steps_per_block = 200;
  int batch_rows = 256;  // token rows per step
  float lr = 4e-4f;
  float final_lr = 4e-5f;
  int warmup = 20;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;
  float k = 4.0f;         // surrogate sharpness
  float k_final = 0.0f;   // > 0: k goes linearly from `k` to this over each block's steps (annealing)
  std::uint64_t seed = 0;
  bool quiet = false;
  std::filesystem::path checkpoint;  // empty: no checkpoints
  int checkpoint_every = 100;        // steps (counted over all blocks); a checkpoint also ends every block
  std::function<void(std::int64_t step)> on_step;  // after each update (tests interrupt here)
};

struct EncoderTrainResult {
  std::vector<double> first_loss, last_loss;  // per block: the relative output error before and after
  std::int64_t encoder_parameters = 0, encoder_macs_per_token = 0, linear_macs_per_token = 0;
  double seconds = 0;
  bool resumed = false;
  std::int64_t resumed_from_step = 0;  // steps (over all blocks) restored from the checkpoint
};

// The block's linear inputs for the rows in `tap` order of block_encoded_inputs().
template <class F>
const std::vector<F>& tap_of(const nn::BasicBlockTaps<F>& t, int input) {
  switch (input) {
    case 0: return t.attn_in;
    case 1: return t.attn_out;
    case 2: return t.ffn_in;
    default: return t.ffn_hidden;
  }
}

namespace detail {
// The run a layer-wise checkpoint belongs to: options, tokens, and the FP model's logits on the first
// window (any other weights give other logits).
inline std::uint64_t encoder_run_fingerprint(nn::Llama& model, const std::vector<std::int32_t>& tokens, int seqlen,
                                             const EncoderTrainOptions& o) {
  std::ostringstream f;
  f << "encoders|" << o.encoder << '|' << o.steps_per_block << '|' << o.batch_rows << '|' << o.lr << '|' << o.final_lr
    << '|' << o.warmup << '|' << o.weight_decay << '|' << o.grad_clip << '|' << o.k << '|' << o.seed << '|' << seqlen;
  if (o.k_final > 0) f << "|anneal" << o.k_final;
  std::uint64_t h = fnv1a64(f.str());
  h = fnv1a64(tokens.data(), tokens.size() * sizeof(std::int32_t), h);
  const auto& cfg = model.config();
  h = fnv1a64(&cfg.dim, sizeof cfg.dim, h);
  std::vector<float> logits(static_cast<std::size_t>(seqlen) * static_cast<std::size_t>(cfg.vocab_size));
  model.forward(tokens.data(), 1, seqlen, logits.data());
  return fnv1a64(logits.data(), logits.size() * sizeof(float), h);
}
}  // namespace detail

// The surrogate sharpness of step `s` of `steps`: `k`, or annealed linearly to `k_final` (> 0). A pure
// function of the step, so a resumed run uses the k it would have used.
inline float annealed_k(float k, float k_final, std::int64_t s, std::int64_t steps) {
  if (k_final <= 0 || steps <= 1) return k;
  return k + (k_final - k) * static_cast<float>(s) / static_cast<float>(steps - 1);
}

// Sets the surrogate sharpness of every encoder of `model`.
inline void set_surrogate_k(nn::Llama& model, float k) {
  for (int l = 0; l < model.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles)
      if (auto* e = dynamic_cast<nn::EncodedLinear*>(&model.block(l).linear(role)); e && e->owns_encoder())
        e->encoder().k = k;
}

// Encodes every block of `model` with `o.encoder` and trains the encoders on `tokens` (nwin windows of
// `seqlen` tokens, row-major). `none` has nothing to train: its blocks are only encoded.
inline EncoderTrainResult train_encoders(nn::Llama& model, const std::vector<std::int32_t>& tokens, int seqlen,
                                         const EncoderTrainOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  const auto& cfg = model.config();
  const auto spec = nn::EncoderSpec::parse(o.encoder);
  LOWBIT_CHECK(seqlen >= 1 && !tokens.empty() && tokens.size() % static_cast<std::size_t>(seqlen) == 0,
               "train_encoders: ", tokens.size(), " tokens are not whole windows of ", seqlen);
  LOWBIT_CHECK(o.steps_per_block >= 0 && o.batch_rows >= 1 && o.lr >= 0 && o.final_lr >= 0 && o.k > 0,
               "train_encoders: steps >= 0, batch rows >= 1, learning rates >= 0 and k > 0 are required");
  LOWBIT_CHECK(o.checkpoint_every >= 1, "train_encoders: checkpoint_every must be >= 1, got ", o.checkpoint_every);
  const int B = static_cast<int>(tokens.size() / static_cast<std::size_t>(seqlen));
  const index_t n = static_cast<index_t>(tokens.size());
  const int blocks = cfg.n_layers;
  const std::int64_t S = o.steps_per_block;
  EncoderTrainResult result;

  // A checkpoint of this run: its encoders by name, its step (over all blocks), the AdamW state and batch
  // generator of the block it stopped in.
  TrainingState state;
  state.total_steps = S * blocks;
  std::map<std::string, const nn::Tensor*> saved;
  Checkpoint ck;
  if (!o.checkpoint.empty()) {
    state.run_fingerprint = detail::encoder_run_fingerprint(model, tokens, seqlen, o);
    if (std::filesystem::exists(o.checkpoint)) {
      ck = read_checkpoint(o.checkpoint);
      LOWBIT_CHECK(ck.state.run_fingerprint == state.run_fingerprint, o.checkpoint.string(),
                   ": encoder checkpoint was written by another run (other options, tokens or model); remove it "
                   "to start over");
      LOWBIT_CHECK(ck.state.step >= 0 && ck.state.step <= state.total_steps, o.checkpoint.string(), ": step ",
                   ck.state.step, " is outside this run's ", state.total_steps);
      for (const auto& [name, t] : ck.tensors) saved[name] = &t;
      result.resumed = true;
      result.resumed_from_step = ck.state.step;
    }
  }
  const std::int64_t resume = result.resumed ? ck.state.step : -1;
  std::vector<nn::Parameter> trained;  // canonical names: every encoder of the finished blocks, then this block's

  std::vector<float> x(static_cast<std::size_t>(n * cfg.dim));
  model.embed(tokens.data(), n, x.data());
  Progress progress("encoders", static_cast<std::int64_t>(blocks) * std::max<std::int64_t>(1, S), "step", o.quiet);
  for (int l = 0; l < blocks; ++l) {
    nn::BlockTaps taps;
    model.block_forward(l, x.data(), B, seqlen, &taps);  // FP block: taps, and x moves on as the teacher's
    auto& block = model.block(l);
    nn::encode_block(block, spec, Rng(o.seed).fork(static_cast<std::uint64_t>(l)).next_u64());
    std::vector<nn::EncodedLinear*> layers;
    std::vector<int> input_of;
    std::vector<nn::Parameter> params;
    int input = 0;
    for (const auto& in : nn::block_encoded_inputs()) {
      for (auto role : in.readers) {
        auto* e = dynamic_cast<nn::EncodedLinear*>(&block.linear(role));
        LOWBIT_CHECK(e != nullptr, "train_encoders: block ", l, " ", nn::linear_role_name(role), " is not encoded");
        e->encoder().k = o.k;
        layers.push_back(e);
        input_of.push_back(input);
        if (e->owns_encoder() && e->encoder().trainable()) {
          // α_c starts at mean_rows |x_c|, the scale that makes ±α_c match the input's magnitude (the seed's
          // α = 1 is far off for inputs of another scale: on stories260K its first relative error is 10-40)
          const auto& X = tap_of(taps, input);
          const index_t w = e->in_features();
          std::vector<double> m(static_cast<std::size_t>(w), 0.0);
          for (index_t r = 0; r < n; ++r)
            for (index_t c = 0; c < w; ++c) m[static_cast<std::size_t>(c)] += std::abs(X[static_cast<std::size_t>(r * w + c)]);
          for (index_t c = 0; c < w; ++c)
            e->encoder().alpha()[static_cast<std::size_t>(c)] = static_cast<float>(std::max(m[static_cast<std::size_t>(c)] / n, 1e-8));
        }
        if (e->owns_encoder()) {
          result.encoder_parameters += e->encoder().parameter_count();
          result.encoder_macs_per_token += e->encoder().macs_per_token();
          for (auto& p : e->encoder().parameters()) params.push_back(p);
        }
        result.linear_macs_per_token += e->in_features() * e->out_features();
      }
      ++input;
    }
    // the same parameters under their canonical names ("layers.3.attention.wq.encoder.alpha"), in
    // training order
    const std::size_t block_first = trained.size();
    {
      std::map<const float*, std::string> names;
      for (const auto& p : model.block_parameters(l)) names[p.value] = p.name;
      for (auto p : params) {
        p.name = names.at(p.value);
        trained.push_back(p);
      }
    }
    auto restore = [&](std::size_t first) {
      for (std::size_t i = first; i < trained.size(); ++i) {
        const auto it = saved.find(trained[i].name);
        LOWBIT_CHECK(it != saved.end() && it->second->numel() == trained[i].size, o.checkpoint.string(), ": tensor '",
                     trained[i].name, "' is missing or has another size");
        std::copy(it->second->data.begin(), it->second->data.end(), trained[i].value);
      }
    };
    // FP outputs of the seven linears on their recorded inputs, and each one's mean power.
    std::vector<std::vector<float>> y_fp(layers.size());
    std::vector<double> power(layers.size());
    for (std::size_t i = 0; i < layers.size(); ++i) {
      const auto& X = tap_of(taps, input_of[i]);
      const index_t in = layers[i]->in_features(), out = layers[i]->out_features();
      y_fp[i].resize(static_cast<std::size_t>(n * out));
      layers[i]->inner().forward(MatrixView<const float>(X.data(), n, in), MatrixView<float>(y_fp[i].data(), n, out));
      double s = 0;
      for (float v : y_fp[i]) s += static_cast<double>(v) * v;
      power[i] = std::max(s / static_cast<double>(y_fp[i].size()), 1e-30);
    }
    const index_t rows = std::min<index_t>(o.batch_rows, n);
    Rng pick = Rng(o.seed ^ 0x5eedu).fork(static_cast<std::uint64_t>(l));
    // Relative output error of the batch (rows `idx`); with `train`, also the encoder gradients.
    std::array<std::vector<float>, 4> batch;  // the batch rows of each distinct input, gathered once per step
    auto step_loss = [&](const std::vector<index_t>& idx, bool train) {
      const index_t m = static_cast<index_t>(idx.size());
      for (int input = 0; input < 4; ++input) {
        const auto& X = tap_of(taps, input);
        const index_t in = static_cast<index_t>(X.size()) / n;
        auto& xb = batch[static_cast<std::size_t>(input)];
        xb.resize(static_cast<std::size_t>(m * in));
        for (index_t r = 0; r < m; ++r) std::copy_n(X.data() + idx[static_cast<std::size_t>(r)] * in, in, xb.data() + r * in);
      }
      double total = 0;
      for (std::size_t i = 0; i < layers.size(); ++i) {
        const index_t in = layers[i]->in_features(), out = layers[i]->out_features();
        std::vector<float> yb(static_cast<std::size_t>(m * out)), dy(static_cast<std::size_t>(m * out));
        // the readers of one input pass the same buffer, so their shared encoder encodes it once (its memo)
        const auto& xb = batch[static_cast<std::size_t>(input_of[i])];
        MatrixView<const float> Xb(xb.data(), m, in);
        layers[i]->forward(Xb, MatrixView<float>(yb.data(), m, out));
        const double scale = 1.0 / (static_cast<double>(m * out) * power[i]);
        double s = 0;
        for (index_t r = 0; r < m; ++r)
          for (index_t c = 0; c < out; ++c) {
            const double d = static_cast<double>(yb[static_cast<std::size_t>(r * out + c)]) -
                             y_fp[i][static_cast<std::size_t>(idx[static_cast<std::size_t>(r)] * out + c)];
            s += d * d;
            dy[static_cast<std::size_t>(r * out + c)] = static_cast<float>(2.0 * d * scale);
          }
        total += s * scale;
        if (train)  // encoder gradients (the frozen inner layer's own gradient accumulates unused)
          layers[i]->backward(Xb, MatrixView<const float>(dy.data(), m, out), MatrixView<float>(nullptr, m, in));
      }
      return total;
    };
    auto draw = [&] {
      std::vector<index_t> idx(static_cast<std::size_t>(rows));
      for (auto& v : idx) v = static_cast<index_t>(pick.below(static_cast<std::uint64_t>(n)));
      return idx;
    };
    // a fixed probe batch measures the block's error before and after
    const auto probe = draw();
    result.first_loss.push_back(step_loss(probe, false));
    const std::int64_t base = S * l;
    if (resume >= base + S) {  // finished before the interruption: its trained encoders come from the file
      restore(block_first);
      progress.update(std::max<std::int64_t>(1, S));
    } else if (!params.empty() && S > 0) {
      AdamWOptions ao;
      ao.beta2 = 0.95f;
      ao.weight_decay = o.weight_decay;
      ao.decays = [](const std::string& name) { return name == "down" || name == "up"; };
      AdamW adam(params, ao);
      std::int64_t first = 0;
      if (resume > base) {  // interrupted inside this block: its encoders, AdamW and batch generator
        restore(block_first);
        LOWBIT_CHECK(!ck.optimizer_state.empty(), o.checkpoint.string(), ": no optimizer state for block ", l);
        std::istringstream in(ck.optimizer_state);
        adam.read(in, o.checkpoint.string());
        pick.set_state(ck.state.data_rng);
        first = resume - base;
        progress.update(first);
      }
      auto save = [&](std::int64_t done, bool with_optimizer) {
        state.step = base + done;
        state.data_rng = pick.state();
        save_checkpoint(o.checkpoint, cfg, trained, state, with_optimizer ? &adam : nullptr);
      };
      for (std::int64_t s = first; s < S; ++s) {
        adam.zero_grad();
        if (o.k_final > 0)
          for (auto* e : layers)
            if (e->owns_encoder()) e->encoder().k = annealed_k(o.k, o.k_final, s, S);
        state.last_loss = step_loss(draw(), true);
        if (o.grad_clip > 0) clip_grad_norm(params, o.grad_clip);
        const double t = S > o.warmup ? static_cast<double>(s - std::min<std::int64_t>(s, o.warmup)) / static_cast<double>(S - o.warmup)
                                      : 1.0;
        const double lr = s < o.warmup ? o.lr * (static_cast<double>(s) + 1.0) / o.warmup
                                       : o.final_lr + 0.5 * (o.lr - o.final_lr) * (1 + std::cos(3.14159265358979 * t));
        adam.step(static_cast<float>(lr));
        progress.update(1);
        if (!o.checkpoint.empty() && (s + 1) < S && (base + s + 1) % o.checkpoint_every == 0) save(s + 1, true);
        if (o.on_step) o.on_step(base + s + 1);
      }
      if (!o.checkpoint.empty()) save(S, false);
    } else {
      progress.update(std::max<std::int64_t>(1, S));
    }
    result.last_loss.push_back(step_loss(probe, false));
    for (auto* e : layers) e->release_workspace();
  }
  progress.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

struct EncoderEndToEndOptions {
  std::int64_t steps = 0;  // 0: off
  int batch = 4;           // sequences per step
  int seq_len = 256;
  float lr = 1e-3f;  // peak; cosine to lr / 10 after `warmup` steps
  std::int64_t warmup = 10;
  float weight_decay = 0.1f;  // on the encoder matrices only
  double grad_clip = 1.0;
  double ce_weight = 0.0;  // > 0: (1 − w)·KL + w·CE(next token); the seed's layer-wise μ = 0.7 is w = 0.3
  float k = 4.0f, k_final = 0.0f;  // surrogate sharpness, annealed linearly to k_final (> 0) over the steps
  std::uint64_t seed = 0;
  bool quiet = false;
  std::filesystem::path checkpoint;  // empty: no checkpoints (train/distill.hpp's, bit-identical resume)
  std::int64_t checkpoint_every = 25;
  std::function<void(std::int64_t step, double loss)> on_step;
};

// Every encoder of `student` (an encoded model) trained at once by forward KL to `teacher` (the FP model)
// on `data`; the inner weights stay frozen. Returns the distillation record (held-out KL before and after).
inline DistillResult finetune_encoders_end_to_end(nn::Llama& student, nn::Llama& teacher, const TokenData& data,
                                                  const EncoderEndToEndOptions& o) {
  DistillOptions d;
  d.loss = DistillLoss::ForwardKL;
  d.steps = o.steps;
  d.batch_size = o.batch;
  d.seq_len = o.seq_len;
  d.schedule = LrSchedule{ScheduleKind::Cosine, o.lr, std::min(o.warmup, o.steps), o.steps, 0.1f};
  d.adam.beta2 = 0.95f;
  d.adam.weight_decay = o.weight_decay;
  d.adam.decays = [](const std::string& name) { return name.ends_with(".down") || name.ends_with(".up"); };
  d.grad_clip = o.grad_clip;
  d.seed = o.seed;
  d.eval_tokens = static_cast<std::int64_t>(data.heldout.size());
  d.quiet = o.quiet;
  d.trainable = [](const std::string& name) { return name.find(".encoder.") != std::string::npos; };
  d.ce_weight = o.ce_weight;
  if (o.k != 4.0f || o.k_final > 0) {
    const float ks[2] = {o.k, o.k_final};
    d.run_key = fnv1a64(ks, sizeof ks);
  }
  d.checkpoint = o.checkpoint;
  d.checkpoint_every = o.checkpoint_every;
  // k of the first step (a resumed run starts where its checkpoint stopped), then of each next step
  std::int64_t first = 0;
  if (!o.checkpoint.empty() && std::filesystem::exists(o.checkpoint)) first = read_checkpoint(o.checkpoint).state.step;
  set_surrogate_k(student, annealed_k(o.k, o.k_final, first, o.steps));
  d.on_step = [&](std::int64_t step, double loss) {
    if (o.k_final > 0) set_surrogate_k(student, annealed_k(o.k, o.k_final, step, o.steps));
    if (o.on_step) o.on_step(step, loss);
  };
  return distill(student, teacher, data, d);
}

}  // namespace lowbit::train
