// Language-model training from scratch (or from an initial checkpoint): AdamW with warm-up + cosine
// schedule, global-norm clipping, random windows from a token stream, periodic held-out evaluation,
// progress with loss, tokens/s and ETA, and atomic resumable checkpoints. `lowbit pretrain` with no
// arguments trains the built-in default model (~0.8M parameters, byte vocabulary) on the synthetic corpus;
// the demo and tests use the result. A resumed run is bit-identical to an uninterrupted one because every
// input of a step (weights, AdamW moments, step number, sampler RNG state) is in the checkpoint.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../nn/model.hpp"
#include "adamw.hpp"
#include "byte_vocab.hpp"
#include "checkpoint.hpp"
#include "clip.hpp"
#include "losses.hpp"
#include "schedule.hpp"
#include "token_data.hpp"

namespace lowbit::train {

// A LLaMA over the byte vocabulary (tied embeddings, interleaved RoPE, theta 10000, eps 1e-5) of the
// given shape: the built-in default model and the tests' tiny models.
inline nn::ModelConfig byte_model_config(int dim, int hidden_dim, int n_layers, int n_heads, int n_kv_heads,
                                         int max_seq_len) {
  nn::ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden_dim;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv_heads;
  c.vocab_size = ByteVocabulary::size;
  c.max_seq_len = max_seq_len;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_layout = nn::RopeLayout::Interleaved;
  c.tied_embeddings = true;
  return c;
}

// The built-in default: dim 128, 4 layers, 4 heads (2 KV heads), SwiGLU 352, context 128, byte vocab.
inline nn::ModelConfig default_model_config() { return byte_model_config(128, 352, 4, 4, 2, 128); }

// ${LOWBIT_CACHE:-~/.cache/lowbit}
inline std::filesystem::path lowbit_cache_dir() {
  if (const char* env = std::getenv("LOWBIT_CACHE"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/tmp") / ".cache" / "lowbit";
}
inline std::filesystem::path default_model_path() { return lowbit_cache_dir() / "default-model.bin"; }

struct PretrainOptions {
  int batch_size = 16;
  int seq_len = 128;
  std::int64_t steps = 200;
  LrSchedule schedule{ScheduleKind::Cosine, 3e-3f, 20, 200, 0.1f};
  AdamWOptions adam = [] {
    AdamWOptions o;
    o.beta1 = 0.9f;
    o.beta2 = 0.95f;
    o.weight_decay = 0.1f;
    o.decays = is_decayed_weight;
    return o;
  }();
  double grad_clip = 1.0;
  std::uint64_t seed = 1234;
  std::int32_t masked_target = -1;  // a token id never used as a training target (see BatchSampler)
  std::filesystem::path checkpoint;  // empty: no checkpoints
  std::int64_t checkpoint_every = 100;
  bool resume = false;
  std::int64_t eval_every = 100;        // held-out loss every N steps (0: only at the end)
  std::int64_t eval_tokens = 16384;     // held-out tokens per evaluation
  bool quiet = false;
  // Called after every step with (step, training loss); a test uses it to stop a run early.
  std::function<void(std::int64_t, double)> on_step;
};

struct PretrainResult {
  std::int64_t steps_done = 0;        // total updates in the model now
  std::int64_t steps_this_run = 0;    // updates executed by this call
  double first_loss = 0.0, last_loss = 0.0;  // training loss of the first / last step of this call
  double heldout_loss_before = 0.0;   // held-out mean NLL (nats/token) before this call's training
  double heldout_loss = 0.0;          // after
  double unigram_entropy = 0.0;       // of the held-out tokens (nats)
  double seconds = 0.0;
  double tokens_per_second = 0.0;
  bool resumed = false;
};

// Mean next-token NLL (nats) over non-overlapping windows of seq_len + 1 tokens from `tokens`, at most
// `max_tokens` predictions (all when <= 0). Uses the inference forward, so it needs no gradients.
inline double heldout_loss(nn::Llama& model, const std::vector<std::int32_t>& tokens, int seq_len,
                           std::int64_t max_tokens, int batch = 8) {
  const std::int64_t windows_available = (static_cast<std::int64_t>(tokens.size()) - 1) / seq_len;
  std::int64_t windows = windows_available;
  if (max_tokens > 0) windows = std::min<std::int64_t>(windows, std::max<std::int64_t>(1, max_tokens / seq_len));
  LOWBIT_CHECK(windows > 0, "held-out data has ", tokens.size(), " tokens, fewer than one window of ", seq_len + 1);
  const int vocab = model.config().vocab_size;
  std::vector<std::int32_t> inputs, targets;
  std::vector<float> logits;
  double total = 0.0;
  std::int64_t count = 0;
  for (std::int64_t w0 = 0; w0 < windows; w0 += batch) {
    const int B = static_cast<int>(std::min<std::int64_t>(batch, windows - w0));
    inputs.resize(static_cast<std::size_t>(B) * seq_len);
    targets.resize(inputs.size());
    for (int b = 0; b < B; ++b)
      for (int t = 0; t < seq_len; ++t) {
        const std::size_t src = static_cast<std::size_t>((w0 + b) * seq_len + t);
        inputs[static_cast<std::size_t>(b) * seq_len + t] = tokens[src];
        targets[static_cast<std::size_t>(b) * seq_len + t] = tokens[src + 1];
      }
    logits.resize(inputs.size() * static_cast<std::size_t>(vocab));
    model.forward(inputs.data(), B, seq_len, logits.data());
    const index_t n = static_cast<index_t>(inputs.size());
    total += cross_entropy(MatrixView<const float>(logits.data(), n, vocab), targets.data()) * static_cast<double>(n);
    count += n;
  }
  return total / static_cast<double>(count);
}

inline std::uint64_t run_fingerprint(const nn::ModelConfig& config, const TokenData& data, const PretrainOptions& o) {
  std::ostringstream s;
  s << config_fingerprint(config) << '|' << data.fingerprint << '|' << o.batch_size << '|' << o.seq_len << '|'
    << o.steps << '|';
  write_optimizer_fingerprint(s, o.schedule, o.adam);
  s << '|' << o.grad_clip << '|' << o.seed << '|' << o.masked_target;
  const std::string text = s.str();
  return fnv1a64(text.data(), text.size());
}

// Trains `model` on `data`. With options.resume and an existing checkpoint, continues from it (the
// checkpoint's run fingerprint must match these options and data).
inline PretrainResult pretrain(nn::Llama& model, const TokenData& data, const PretrainOptions& options) {
  const auto& config = model.config();
  LOWBIT_CHECK(data.vocab_size <= config.vocab_size, "pretrain: data vocabulary ", data.vocab_size,
               " exceeds the model's ", config.vocab_size);
  LOWBIT_CHECK(options.seq_len <= config.max_seq_len, "pretrain: sequence length ", options.seq_len,
               " exceeds the model context ", config.max_seq_len);
  LOWBIT_CHECK(options.steps > 0 && options.batch_size > 0 && options.seq_len > 0,
               "pretrain: steps, batch size and sequence length must be positive");
  auto params = model.parameters();
  AdamW optimizer(params, options.adam);
  BatchSampler sampler(data.train, options.batch_size, options.seq_len, Rng(options.seed).fork(1),
                       options.masked_target);
  LrSchedule schedule = options.schedule;
  schedule.total_steps = options.steps;
  TrainingState state;
  state.total_steps = options.steps;
  state.run_fingerprint = run_fingerprint(config, data, options);
  PretrainResult result;

  if (options.resume && !options.checkpoint.empty() && std::filesystem::exists(options.checkpoint)) {
    Checkpoint ck = read_checkpoint(options.checkpoint);
    LOWBIT_CHECK(config_fingerprint(ck.config) == config_fingerprint(config), options.checkpoint.string(),
                 ": checkpoint is for another model configuration");
    LOWBIT_CHECK(ck.state.run_fingerprint == state.run_fingerprint, options.checkpoint.string(),
                 ": checkpoint was written by a run with other options or data (run fingerprint ",
                 ck.state.run_fingerprint, ", this run ", state.run_fingerprint, "); remove it or drop --resume");
    restore_checkpoint(ck, params, &optimizer);
    state = ck.state;
    sampler.restore(state.data_rng, state.data_position);
    result.resumed = true;
  }

  const std::int64_t eval_tokens = options.eval_tokens;
  result.unigram_entropy = unigram_entropy(data.heldout, data.vocab_size);
  result.heldout_loss_before = heldout_loss(model, data.heldout, options.seq_len, eval_tokens);
  const std::int64_t tokens_per_step = static_cast<std::int64_t>(options.batch_size) * options.seq_len;
  Progress progress("pretrain", (options.steps - state.step) * tokens_per_step, "tok", options.quiet);
  std::vector<std::int32_t> inputs, targets;
  double last_heldout = result.heldout_loss_before;

  auto save = [&] {
    if (options.checkpoint.empty()) return;
    state.data_rng = sampler.rng().state();
    state.data_position = sampler.position();
    save_checkpoint(options.checkpoint, config, params, state, &optimizer);
  };

  for (std::int64_t step = state.step; step < options.steps; ++step) {
    sampler.next(inputs, targets);
    model.zero_grad();
    const double loss = model.forward_backward_ce(inputs.data(), targets.data(), options.batch_size, options.seq_len);
    LOWBIT_CHECK(std::isfinite(loss), "pretrain: training loss became ", loss, " at step ", step,
                 " (lower the learning rate)");
    clip_grad_norm(params, options.grad_clip);
    const float lr = schedule.lr(step);
    optimizer.step(lr);
    state.step = step + 1;
    state.last_loss = loss;
    if (result.steps_this_run == 0) result.first_loss = loss;
    result.last_loss = loss;
    ++result.steps_this_run;
    if (options.eval_every > 0 && state.step % options.eval_every == 0 && state.step < options.steps)
      last_heldout = heldout_loss(model, data.heldout, options.seq_len, eval_tokens);
    if (!options.checkpoint.empty() && options.checkpoint_every > 0 && state.step % options.checkpoint_every == 0 &&
        state.step < options.steps)
      save();
    char status[128];
    std::snprintf(status, sizeof status, "step %lld loss %.4f held-out %.4f lr %.2e",
                  static_cast<long long>(state.step), loss, last_heldout, static_cast<double>(lr));
    progress.update(tokens_per_step, status);
    if (options.on_step) options.on_step(state.step, loss);
  }
  progress.finish();
  result.seconds = progress.elapsed();
  result.tokens_per_second = result.seconds > 0
                                 ? static_cast<double>(result.steps_this_run * tokens_per_step) / result.seconds
                                 : 0.0;
  result.steps_done = state.step;
  result.heldout_loss = heldout_loss(model, data.heldout, options.seq_len, eval_tokens);
  save();
  return result;
}

// A freshly initialized model for `config` (seeded), as pretrain() starts from.
inline nn::Llama initial_model(const nn::ModelConfig& config, std::uint64_t seed) {
  Rng rng = Rng(seed).fork(0);
  return nn::Llama::random_init(config, rng);
}

// The built-in default model: loads the cached checkpoint, or pretrains it (about a minute on 2 cores)
// and caches it at default_model_path().
inline nn::ModelWeights default_model_weights(bool quiet = false, PretrainResult* trained = nullptr) {
  const auto path = default_model_path();
  // Train when nothing is cached, or finish a run that was interrupted.
  if (!std::filesystem::exists(path) || read_checkpoint(path).state.step < read_checkpoint(path).state.total_steps) {
    PretrainOptions options;
    options.checkpoint = path;
    options.checkpoint_every = 100;
    options.resume = true;
    options.quiet = quiet;
    const auto data = synthetic_token_data(options.seed, 4u << 20, 1u << 17);
    nn::Llama model = initial_model(default_model_config(), options.seed);
    auto r = pretrain(model, data, options);
    if (trained) *trained = r;
  }
  return load_pretrained(path);
}

}  // namespace lowbit::train
