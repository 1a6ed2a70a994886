// Layer-wise training of 1-bit activation encoders (ALGORITHMS.md §4.2, issue 17), one block at a time:
// the FP model runs the calibration tokens block by block; before block l is encoded its four distinct
// linear inputs (taps) and the FP outputs of its seven linears are recorded, then block l gets encoders
// (nn/encoded_linear.hpp: 4 per block, shared by the linears reading the same input) trained by AdamW on
//   L = Σ_linears mean((W·enc(x_teacher) − W·x_teacher)²) / mean((W·x_teacher)²)
// over random batches of token rows: the seed's local output matching with the teacher's own inputs
// (its μ = 1 part; each linear's error relative to its output's power, so the seven count alike). The
// residual stream then continues with the FP block's output, as the seed's teacher inputs do. Weights
// stay frozen; only the encoders train (α from the mean |x| of each channel, β = 0) (lr warm-up then cosine from `lr` to `final_lr`, the seed's
// 4e-4 → 4e-5; betas 0.9 / 0.95; weight decay on the encoder matrices only; gradient norm clipped).
// Not here yet: the seed's CE term (1 − μ = 0.3 of its loss) and the end-to-end KL phase.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../nn/encoded_linear.hpp"
#include "../nn/model.hpp"
#include "adamw.hpp"
#include "clip.hpp"

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
  float k = 4.0f;  // surrogate sharpness
  std::uint64_t seed = 0;
  bool quiet = false;
};

struct EncoderTrainResult {
  std::vector<double> first_loss, last_loss;  // per block: the relative output error before and after
  std::int64_t encoder_parameters = 0, encoder_macs_per_token = 0, linear_macs_per_token = 0;
  double seconds = 0;
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
  const int B = static_cast<int>(tokens.size() / static_cast<std::size_t>(seqlen));
  const index_t n = static_cast<index_t>(tokens.size());
  std::vector<float> x(static_cast<std::size_t>(n * cfg.dim));
  model.embed(tokens.data(), n, x.data());
  EncoderTrainResult result;
  const int blocks = cfg.n_layers;
  Progress progress("encoders", static_cast<std::int64_t>(blocks) * std::max(1, o.steps_per_block), "step", o.quiet);
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
    if (!params.empty() && o.steps_per_block > 0) {
      AdamWOptions ao;
      ao.beta2 = 0.95f;
      ao.weight_decay = o.weight_decay;
      ao.decays = [](const std::string& name) { return name == "down" || name == "up"; };
      AdamW adam(params, ao);
      for (int s = 0; s < o.steps_per_block; ++s) {
        adam.zero_grad();
        (void)step_loss(draw(), true);
        if (o.grad_clip > 0) clip_grad_norm(params, o.grad_clip);
        const double t = o.steps_per_block > o.warmup
                             ? static_cast<double>(s - std::min(s, o.warmup)) / (o.steps_per_block - o.warmup)
                             : 1.0;
        const double lr = s < o.warmup ? o.lr * (s + 1.0) / o.warmup
                                       : o.final_lr + 0.5 * (o.lr - o.final_lr) * (1 + std::cos(3.14159265358979 * t));
        adam.step(static_cast<float>(lr));
        progress.update(1);
      }
    } else {
      progress.update(std::max(1, o.steps_per_block));
    }
    result.last_loss.push_back(step_loss(probe, false));
    for (auto* e : layers) e->release_workspace();
  }
  progress.finish();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace lowbit::train
