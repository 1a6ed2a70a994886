// Block-level training for calibration methods (AQLM and UniQuanF block fine-tuning): given one block's
// cached inputs X [N sequences, T, dim] and target outputs Y (the FP block's outputs), train a chosen
// subset of the block's parameters (a predicate on names: codebooks, scales, norm gains, ...) to minimize
// mean((block(X) − Y)²) with AdamW on mini-batches of sequences. The last sequences are held out; after
// each epoch their MSE is measured and the best parameters are kept (early stopping with patience).
// Deterministic for a fixed seed: the only randomness is the epoch shuffle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../nn/model.hpp"
#include "adamw.hpp"
#include "clip.hpp"
#include "losses.hpp"

namespace lowbit::train {

struct BlockTrainOptions {
  int epochs = 10;
  int batch_sequences = 4;
  int heldout_sequences = -1;  // -1: max(1, N / 10) when N >= 2
  int patience = 2;            // epochs without held-out improvement before stopping (0: never stop early)
  double min_relative_improvement = 1e-4;  // improvements smaller than this count as none
  double grad_clip = 0.0;
  std::uint64_t seed = 0;
  bool quiet = true;
  AdamWOptions adam = [] {
    AdamWOptions o;
    o.lr = 1e-4f;
    o.beta1 = 0.9f;
    o.beta2 = 0.95f;
    return o;
  }();
  // Which block parameters train, by canonical name ("layers.3.ffn_norm.weight", ...). Default: all.
  std::function<bool(const std::string&)> trainable;
  // Learning-rate multiplier per trainable parameter, by name (default: 1 for all); each distinct
  // multiplier gets its own AdamW (UniQuanF trains its transform and its BCQ scales at different rates).
  std::function<float(const std::string&)> lr_scale;
  bool cosine = false;     // decay the learning rate to 0 over all steps by a half cosine (else constant)
  bool keep_best = true;   // end with the parameters of the best held-out epoch (false: the last epoch's)
  // QDrop-style input mix: each element of a training batch's input is taken from `mix_inputs` (same
  // layout as the inputs) with probability `mix_prob`, else from the inputs; held-out MSE uses the inputs.
  const float* mix_inputs = nullptr;
  double mix_prob = 0.0;
};

struct BlockTrainResult {
  double initial_train_mse = 0, initial_heldout_mse = 0;
  double best_heldout_mse = 0;  // of the parameters kept
  double final_train_mse = 0;   // training-split MSE of the parameters kept
  int epochs_run = 0, best_epoch = 0;  // best_epoch 0: the initial parameters were best
  std::int64_t steps = 0;
  std::size_t trained_values = 0;
};

// Names that match any of `fragments` (for trainable predicates: {"norm", "codebooks", "scales"}).
inline std::function<bool(const std::string&)> names_containing(std::vector<std::string> fragments) {
  return [fragments = std::move(fragments)](const std::string& name) {
    for (const auto& f : fragments)
      if (name.find(f) != std::string::npos) return true;
    return false;
  };
}

// Mean squared error of the block on sequences [first, first + count) (no gradients).
inline double block_mse(nn::Llama& model, int layer, const float* inputs, const float* targets, int first, int count,
                        int T, int batch_sequences) {
  const index_t dim = model.config().dim;
  const index_t per_seq = static_cast<index_t>(T) * dim;
  std::vector<float> x;
  double total = 0.0;
  for (int s = first; s < first + count; s += batch_sequences) {
    const int B = std::min(batch_sequences, first + count - s);
    x.assign(inputs + s * per_seq, inputs + (s + B) * per_seq);
    model.block_forward(layer, x.data(), B, T);
    total += mse(x.data(), targets + s * per_seq, B * per_seq) * static_cast<double>(B);
  }
  return count > 0 ? total / count : 0.0;
}

// inputs, targets: [N, T, dim] row-major.
inline BlockTrainResult train_block(nn::Llama& model, int layer, const float* inputs, const float* targets, int N,
                                    int T, const BlockTrainOptions& options) {
  const index_t dim = model.config().dim;
  const index_t per_seq = static_cast<index_t>(T) * dim;
  LOWBIT_CHECK(N >= 1 && T >= 1, "train_block: need at least one sequence of one token (got N=", N, ", T=", T, ")");
  int heldout = options.heldout_sequences >= 0 ? options.heldout_sequences : (N >= 2 ? std::max(1, N / 10) : 0);
  LOWBIT_CHECK(heldout < N, "train_block: ", heldout, " held-out sequences leave none of ", N, " to train on");
  const int n_train = N - heldout;
  const int batch = std::max(1, std::min(options.batch_sequences, n_train));

  std::vector<nn::Parameter> all = model.block_parameters(layer), chosen;
  for (const auto& p : all)
    if (!options.trainable || options.trainable(p.name)) chosen.push_back(p);
  LOWBIT_CHECK(!chosen.empty(), "train_block: no parameter of layer ", layer, " matches the trainable predicate");
  BlockTrainResult result;
  for (const auto& p : chosen) result.trained_values += static_cast<std::size_t>(p.size);

  auto snapshot = [&] {
    std::vector<std::vector<float>> s;
    for (const auto& p : chosen) s.emplace_back(p.value, p.value + p.size);
    return s;
  };
  auto restore = [&](const std::vector<std::vector<float>>& s) {
    for (std::size_t i = 0; i < chosen.size(); ++i) std::memcpy(chosen[i].value, s[i].data(), s[i].size() * sizeof(float));
  };

  const float* heldout_in = inputs;
  auto heldout_mse = [&] {
    return heldout > 0 ? block_mse(model, layer, heldout_in, targets, n_train, heldout, T, batch)
                       : block_mse(model, layer, inputs, targets, 0, n_train, T, batch);
  };
  result.initial_train_mse = block_mse(model, layer, inputs, targets, 0, n_train, T, batch);
  result.initial_heldout_mse = heldout > 0 ? heldout_mse() : result.initial_train_mse;
  result.best_heldout_mse = result.initial_heldout_mse;
  auto best = snapshot();

  // One optimizer per learning-rate multiplier.
  std::vector<float> scales;
  std::vector<std::vector<nn::Parameter>> groups;
  for (const auto& p : chosen) {
    const float k = options.lr_scale ? options.lr_scale(p.name) : 1.0f;
    const auto at = std::find(scales.begin(), scales.end(), k);
    if (at == scales.end()) {
      scales.push_back(k);
      groups.push_back({p});
    } else {
      groups[static_cast<std::size_t>(at - scales.begin())].push_back(p);
    }
  }
  std::vector<AdamW> optimizers;
  for (auto& g : groups) optimizers.emplace_back(std::move(g), options.adam);
  const std::int64_t total_steps =
      static_cast<std::int64_t>(options.epochs) * ((n_train + batch - 1) / batch);
  Rng rng(options.seed);
  Rng mix_rng(options.seed ^ 0x9e3779b97f4a7c15ULL);
  std::vector<int> order(static_cast<std::size_t>(n_train));
  std::vector<float> x_in, x_out, d_out;
  nn::BasicBlockActivations<float> acts;
  int epochs_without_improvement = 0;
  Progress progress("block " + std::to_string(layer), static_cast<index_t>(options.epochs) * n_train, "seq",
                    options.quiet);
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    std::iota(order.begin(), order.end(), 0);
    for (int i = n_train - 1; i > 0; --i) std::swap(order[i], order[rng.below(static_cast<std::uint64_t>(i) + 1)]);
    for (int s = 0; s < n_train; s += batch) {
      const int B = std::min(batch, n_train - s);
      x_in.resize(static_cast<std::size_t>(B * per_seq));
      std::vector<float> y(static_cast<std::size_t>(B * per_seq));
      for (int b = 0; b < B; ++b) {
        const index_t src = order[static_cast<std::size_t>(s + b)] * per_seq;
        std::memcpy(x_in.data() + b * per_seq, inputs + src, per_seq * sizeof(float));
        std::memcpy(y.data() + b * per_seq, targets + src, per_seq * sizeof(float));
        if (options.mix_inputs && options.mix_prob > 0.0)
          for (index_t i = 0; i < per_seq; ++i)
            if (mix_rng.uniform() < options.mix_prob) x_in[static_cast<std::size_t>(b * per_seq + i)] = options.mix_inputs[src + i];
      }
      x_out.resize(x_in.size());
      d_out.resize(x_in.size());
      model.block_forward_train(layer, x_in.data(), B, T, x_out.data(), acts);
      const double loss = mse(x_out.data(), y.data(), B * per_seq, d_out.data());
      for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
      model.block_backward(layer, acts, d_out.data(), nullptr);
      if (options.grad_clip > 0) clip_grad_norm(chosen, options.grad_clip);
      const double progress_frac = static_cast<double>(result.steps) / static_cast<double>(std::max<std::int64_t>(1, total_steps));
      const float lr = options.cosine ? static_cast<float>(0.5 * options.adam.lr * (1.0 + std::cos(3.141592653589793 * progress_frac)))
                                      : options.adam.lr;
      for (std::size_t g = 0; g < optimizers.size(); ++g) optimizers[g].step(lr * scales[g]);
      ++result.steps;
      char status[64];
      std::snprintf(status, sizeof status, "epoch %d mse %.4g", epoch, loss);
      progress.update(B, status);
    }
    result.epochs_run = epoch;
    const double h = heldout_mse();
    if (h < result.best_heldout_mse * (1.0 - options.min_relative_improvement)) {
      result.best_heldout_mse = h;
      result.best_epoch = epoch;
      best = snapshot();
      epochs_without_improvement = 0;
    } else if (options.patience > 0 && ++epochs_without_improvement >= options.patience) {
      break;
    }
  }
  progress.finish();
  if (options.keep_best) {
    restore(best);
  } else {
    result.best_heldout_mse = heldout_mse();
    result.best_epoch = result.epochs_run;
  }
  for (const auto& p : all) std::fill(p.grad, p.grad + p.size, 0.0f);
  result.final_train_mse = block_mse(model, layer, inputs, targets, 0, n_train, T, batch);
  return result;
}

}  // namespace lowbit::train
