// Block-by-block post-training calibration (DESIGN.md, "How data flows through a calibration run").
// N seeded windows of L calibration tokens (calib/calibration_data.hpp) are embedded once; then for each
// block:
//   1. choose every linear's method and format from the plan (calib/method.hpp);
//   2. run the FP block over the cached inputs, collecting what the chosen methods need: XᵀX of each
//      distinct effective input, a strided sample of its rows, and the FP outputs;
//   3. replace every linear by its method's result;
//   4. optionally fine-tune the quantized block against the FP outputs (a hook, e.g. AQLM's);
//   5. propagate the block's outputs to the next block;
//   6. checkpoint the block and the activations in the run directory (calib/run_dir.hpp), so a killed
//      run resumes exactly where it stopped.
#pragma once

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/hash.hpp"
#include "../core/progress.hpp"
#include "../core/resources.hpp"
#include "../core/tensor.hpp"
#include "../io/quantized_model.hpp"
#include "../nn/model.hpp"
#include "calibration_data.hpp"
#include "group_methods.hpp"
#include "hessian.hpp"
#include "memory_estimate.hpp"
#include "method.hpp"
#include "run_dir.hpp"

namespace lowbit::calib {

// ---- configuration ------------------------------------------------------------------------------

// Settings of the pipeline itself; methods carry their own options (calib/method.hpp).
struct CalibrationConfig {
  std::string method = "gptq";           // the single-method plan of calibrate_model(..., const Method&, ...)
  std::string format = "uniform:4:128";  // and its format (a registered descriptor)
  int nsamples = 128;                    // calibration sequences
  int seqlen = 512;                      // tokens per sequence
  std::uint64_t seed = 0;
  int sample_tokens = 512;           // sampled rows per linear input for methods that need samples (AutoClip)
  bool propagate_quantized = true;   // next block sees the quantized block's outputs (GPTQ) or FP ones
  int batch_sequences = 8;           // sequences per block forward (speed only)
  bool quiet = false;

  // Everything in the pipeline that changes the result (with the plan: the fingerprint and the file's
  // quantization_config).
  nlohmann::json to_json() const {
    return {{"nsamples", nsamples},
            {"seqlen", seqlen},
            {"seed", seed},
            {"sample_tokens", sample_tokens},
            {"propagate", propagate_quantized ? "quantized" : "fp"}};
  }
};

struct CalibrationReport {
  double seconds = 0;
  double peak_rss_mib = 0;
  MemoryEstimate estimate;
  int resumed_from_layer = 0;
  nlohmann::json per_linear = nlohmann::json::object();  // name -> stats (this process's linears)
  nlohmann::json to_json() const {
    return {{"seconds", seconds},
            {"peak_rss_mib", peak_rss_mib},
            {"memory_estimate_mib", estimate.total_mib()},
            {"resumed_from_layer", resumed_from_layer},
            {"per_linear", per_linear}};
  }
};

struct PipelineHooks {
  BlockFinetune finetune;  // optional block fine-tune after the linears were replaced
  // Keep the FP model's activation stream beside the quantized one and hand it to `finetune`
  // (BlockContext::fp_inputs/fp_targets; UniQuanF's QDrop-style mix needs it): one more FP block forward
  // and two more [tokens, dim] buffers; checkpointed with the run.
  bool fp_stream = false;
  // Called after each linear is replaced (layer, role); tests use it to interrupt a run.
  std::function<void(int, nn::LinearRole)> after_linear;
};

// What a quantized file records about how it was made: the pipeline settings, the plan, and each
// linear's method and format.
inline nlohmann::json quantization_config(const CalibrationConfig& cfg, const QuantizationPlan& plan, const nn::Llama& model) {
  nlohmann::json linears = nlohmann::json::object();
  for (int l = 0; l < model.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
      const auto& rule = plan.rule_for(name);
      linears[name] = {{"method", rule.method.name}, {"format", rule.format}};
    }
  return {{"pipeline", cfg.to_json()}, {"plan", plan.to_json()}, {"linears", linears}};
}

// ---- the pipeline -------------------------------------------------------------------------------

namespace detail {

// Statistics of one effective input: XᵀX and sampled rows [sample_rows, width].
struct InputStatistics {
  index_t width = 0;
  bool hessian_wanted = false, samples_wanted = false;
  HessianAccumulator hessian;
  std::vector<float> samples;
};

// The linears of one block with their plan rules, and where each one's input statistics come from:
// the four shared block inputs (attn_in, attn_out, ffn_in, ffn_hidden), or a source of its own when the
// layer transforms its input (nn::Linear::transforms_input).
struct BlockPlan {
  std::array<const QuantizationPlan::Rule*, nn::kLinearRoles> rules{};
  std::array<int, nn::kLinearRoles> source{};  // index into `sources`
  std::vector<InputStatistics> sources;        // 4 shared, then one per transforming linear
  bool needs_forward = false;

  bool wants_taps() const {
    for (const auto& s : sources)
      if (s.hessian_wanted || s.samples_wanted) return true;
    return false;
  }
};

inline BlockPlan plan_block(const nn::Llama& model, int layer, const QuantizationPlan& plan, index_t sample_rows,
                            bool needs_targets) {
  const auto& mc = model.config();
  const index_t widths[4] = {mc.dim, static_cast<index_t>(mc.n_heads) * mc.head_dim(), mc.dim, mc.hidden_dim};
  BlockPlan b;
  b.sources.resize(4);
  for (int k = 0; k < 4; ++k) b.sources[static_cast<std::size_t>(k)].width = widths[k];
  for (auto role : nn::kAllLinearRoles) {
    const auto r = static_cast<std::size_t>(role);
    b.rules[r] = &plan.rule_for(nn::ModelWeights::layer_name(layer, nn::linear_role_name(role)));
    int source = static_cast<int>(input_of(role));
    if (model.linear(layer, role).transforms_input()) {
      b.sources.push_back(InputStatistics{});
      b.sources.back().width = widths[source];
      source = static_cast<int>(b.sources.size()) - 1;
    }
    b.source[r] = source;
    auto& s = b.sources[static_cast<std::size_t>(source)];
    s.hessian_wanted = s.hessian_wanted || b.rules[r]->method.needs_hessian;
    s.samples_wanted = s.samples_wanted || (b.rules[r]->method.needs_samples && sample_rows > 0);
  }
  for (auto& s : b.sources) {
    if (s.hessian_wanted) s.hessian.reset(s.width);
    if (s.samples_wanted) s.samples.assign(static_cast<std::size_t>(sample_rows * s.width), 0.0f);
  }
  b.needs_forward = b.wants_taps() || needs_targets;
  return b;
}

// Step 2: FP block over the cached inputs x [N·L, dim]; fills the statistics and (when `targets` is not
// null) the FP outputs.
inline void collect_statistics(nn::Llama& model, int layer, const std::vector<float>& x, int N, int L, int batch,
                               index_t sample_rows, BlockPlan& b, std::vector<float>* targets) {
  const int dim = model.config().dim;
  const index_t n_tok = static_cast<index_t>(N) * L;
  const index_t sample_step = sample_rows > 0 ? n_tok / sample_rows : 1;
  const bool want_taps = b.wants_taps();
  nn::BlockTaps taps;
  std::vector<float> work, effective;
  for (int s0 = 0; b.needs_forward && s0 < N; s0 += batch) {
    const int B = std::min(batch, N - s0);
    const index_t row0 = static_cast<index_t>(s0) * L, rows = static_cast<index_t>(B) * L;
    work.assign(x.begin() + row0 * dim, x.begin() + (row0 + rows) * dim);
    model.block_forward(layer, work.data(), B, L, want_taps ? &taps : nullptr);
    if (targets) std::copy(work.begin(), work.end(), targets->begin() + row0 * dim);
    if (!want_taps) continue;
    const std::vector<float>* tapped[4] = {&taps.attn_in, &taps.attn_out, &taps.ffn_in, &taps.ffn_hidden};
    for (std::size_t src = 0; src < b.sources.size(); ++src) {
      auto& s = b.sources[src];
      if (!s.hessian_wanted && !s.samples_wanted) continue;
      // the tapped block input this source reads, transformed by its layer when it has one of its own
      int k = static_cast<int>(src);
      const nn::Linear* transform = nullptr;
      if (src >= 4)
        for (auto role : nn::kAllLinearRoles)
          if (b.source[static_cast<std::size_t>(role)] == static_cast<int>(src)) {
            k = static_cast<int>(input_of(role));
            transform = &model.linear(layer, role);
          }
      const auto& raw = *tapped[k];
      LOWBIT_CHECK(static_cast<index_t>(raw.size()) == rows * s.width, "calibrate: block ", layer, " tap ", k, " holds ",
                   raw.size(), " values, expected ", rows * s.width);
      MatrixView<const float> X(raw.data(), rows, s.width);
      if (transform) {
        effective.resize(raw.size());
        transform->effective_input(X, MatrixView<float>(effective.data(), rows, s.width));
        X = MatrixView<const float>(effective.data(), rows, s.width);
      }
      if (s.hessian_wanted) s.hessian.add(X);
      if (s.samples_wanted)
        for (index_t i = 0; i < sample_rows; ++i) {
          const index_t global = i * sample_step;
          if (global >= row0 && global < row0 + rows)
            std::copy_n(X.row(global - row0), s.width, s.samples.data() + i * s.width);
        }
    }
  }
}

// Step 3: replaces every linear of the block by its method's result.
inline void replace_linears(nn::Llama& model, int layer, const BlockPlan& b, index_t sample_rows,
                            const CalibrationConfig& cfg, CalibrationReport& report, const PipelineHooks& hooks) {
  const int n_layers = model.config().n_layers;
  for (auto role : nn::kAllLinearRoles) {
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = static_cast<std::size_t>(role);
    const auto& rule = *b.rules[r];
    const auto& stats = b.sources[static_cast<std::size_t>(b.source[r])];
    auto& current = model.linear(layer, role);
    const index_t out = current.out_features(), in = current.in_features();
    std::vector<float> W(static_cast<std::size_t>(out * in));
    current.dequantize(MatrixView<float>(W.data(), out, in));
    LinearJob job;
    job.layer = layer;
    job.role = role;
    job.name = nn::ModelWeights::layer_name(layer, nn::linear_role_name(role));
    job.format = rule.format;
    job.weight = MatrixView<const float>(W.data(), out, in);
    job.hessian = rule.method.needs_hessian ? &stats.hessian : nullptr;
    job.sample_inputs = stats.samples_wanted ? MatrixView<const float>(stats.samples.data(), sample_rows, in)
                                             : MatrixView<const float>();
    job.seed = cfg.seed;
    LinearOutcome result = rule.method.run(job);
    LOWBIT_CHECK(result.layer != nullptr, job.name, ": method '", rule.method.name, "' returned no layer");
    LOWBIT_CHECK(result.layer->format() == rule.format, job.name, ": method '", rule.method.name, "' produced format '",
                 result.layer->format(), "', the plan asked for '", rule.format, "'");
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    result.stats["seconds"] = secs;
    result.stats["method"] = rule.method.name;
    result.stats["format"] = result.layer->format();
    result.stats["bits_per_weight"] = result.layer->bits_per_weight();
    if (!cfg.quiet) {
      std::string extra;
      if (result.stats.contains("gptq_proxy_loss"))
        extra += " gptq-loss " + std::to_string(result.stats["gptq_proxy_loss"].get<double>());
      if (result.stats.contains("autoclip_clipped_groups"))
        extra += " clipped " + std::to_string(result.stats["autoclip_clipped_groups"].get<index_t>()) + " groups";
      std::fprintf(stderr, "[calibrate] block %d/%d %-22s %s %s%s (%.2fs)\n", layer + 1, n_layers,
                   nn::linear_role_name(role), rule.method.name.c_str(), result.layer->format().c_str(), extra.c_str(),
                   secs);
    }
    report.per_linear[job.name] = result.stats;
    model.set_linear(layer, role, std::move(result.layer));
    if (hooks.after_linear) hooks.after_linear(layer, role);
  }
}

}  // namespace detail

// Calibrates every linear of `model` in place according to `plan`. `tokens` is [nsamples, seqlen];
// `fingerprint` identifies the model file and calibration data (the configuration, plan and token
// stream are added here); with a `run_dir` the run is checkpointed there and resumes from it.
inline CalibrationReport calibrate_model(nn::Llama& model, const std::vector<std::int32_t>& tokens,
                                         const CalibrationConfig& cfg, const QuantizationPlan& plan,
                                         nlohmann::json fingerprint = nlohmann::json::object(),
                                         const std::string& run_dir = {}, const PipelineHooks& hooks = {}) {
  const auto start_time = std::chrono::steady_clock::now();
  const auto& mc = model.config();
  const int N = cfg.nsamples, L = cfg.seqlen, dim = mc.dim;
  const index_t n_tok = static_cast<index_t>(N) * L;
  LOWBIT_CHECK(!plan.empty(), "calibrate: the quantization plan has no rules");
  LOWBIT_CHECK(static_cast<index_t>(tokens.size()) == n_tok, "calibrate: got ", tokens.size(), " tokens, expected ",
               N, " x ", L);
  for (auto t : tokens)
    LOWBIT_CHECK(t >= 0 && t < mc.vocab_size, "calibrate: token id ", t, " outside the vocabulary of ", mc.vocab_size);
  bool any_samples = false, any_statistics = false;
  for (const auto& r : plan.rules()) {
    any_samples = any_samples || r.method.needs_samples;
    any_statistics = any_statistics || r.method.needs_samples || r.method.needs_hessian;
  }
  const index_t sample_rows = any_samples ? std::min<index_t>(cfg.sample_tokens, n_tok) : 0;
  const bool needs_targets = static_cast<bool>(hooks.finetune) || !cfg.propagate_quantized;
  // A plan whose methods read no statistics (RTN alone) needs no block inputs at all.
  const bool needs_inputs = any_statistics || needs_targets;

  CalibrationReport report;
  report.estimate = estimate_memory(mc, N, L, static_cast<int>(sample_rows), cfg.batch_sequences, needs_targets);
  if (!cfg.quiet) std::fprintf(stderr, "[calibrate] %s\n", report.estimate.describe().c_str());

  // Resume: the fingerprint must match; finished blocks are reloaded and the activations restored.
  fingerprint["config"] = cfg.to_json();
  fingerprint["plan"] = plan.to_json();
  fingerprint["tokens"] =
      hex64(fnv1a64(tokens.data(), tokens.size() * sizeof(std::int32_t))) + ":" + std::to_string(tokens.size());
  // A plan with a method whose layers stay trainable after the block pass keeps no block checkpoints.
  CheckpointDir ckpt(plan.block_checkpoints() ? run_dir : std::string());
  if (!run_dir.empty() && !plan.block_checkpoints() && !cfg.quiet)
    std::fprintf(stderr, "[calibrate] note: the plan's layers stay trainable after this pass, so its blocks are not "
                         "checkpointed in %s (a resumed run repeats this pass)\n", run_dir.c_str());
  std::vector<float> x;  // [n_tok, dim] inputs of the current block
  const bool fp_stream = hooks.fp_stream && static_cast<bool>(hooks.finetune);
  std::vector<float> x_fp, targets_fp;  // the FP model's own stream (fp_stream)
  int first_layer = 0;
  if (fp_stream) fingerprint["fp_stream"] = true;
  if (ckpt.enabled()) {
    ckpt.open(fingerprint);
    first_layer = ckpt.load_state(x, n_tok, dim);
    if (fp_stream && first_layer > 0)
      LOWBIT_CHECK(ckpt.load_state(x_fp, n_tok, dim, "activations_fp") == first_layer, run_dir,
                   ": the FP activations do not point past the same block as the quantized ones");
    for (int l = 0; l < first_layer; ++l) {
      LOWBIT_CHECK(std::filesystem::exists(ckpt.block_path(l)), run_dir, ": activations are past block ", l, " but ",
                   ckpt.block_path(l), " is missing");
      io::load_block_checkpoint(ckpt.block_path(l), model, l);
    }
    if (first_layer > 0 && !cfg.quiet)
      std::fprintf(stderr, "[calibrate] resuming %s at block %d/%d\n", run_dir.c_str(), first_layer, mc.n_layers);
  }
  report.resumed_from_layer = first_layer;
  if (first_layer == 0) {
    x.resize(static_cast<std::size_t>(n_tok * dim));
    model.embed(tokens.data(), n_tok, x.data());
    if (fp_stream) x_fp = x;
  }

  const int batch = std::max(1, std::min(cfg.batch_sequences, N));
  std::vector<float> targets;
  if (needs_targets) targets.resize(x.size());
  Progress blocks("calibrate", mc.n_layers, "block", cfg.quiet, 0.0);
  blocks.update(first_layer);
  for (int layer = first_layer; layer < mc.n_layers; ++layer) {
    const auto block_start = std::chrono::steady_clock::now();
    // 1-2. methods and formats of the block's linears; the statistics they need and the FP outputs
    auto b = detail::plan_block(model, layer, plan, sample_rows, needs_targets);
    detail::collect_statistics(model, layer, x, N, L, batch, sample_rows, b, needs_targets ? &targets : nullptr);
    if (fp_stream) {  // the FP block on the FP stream, before its linears are replaced
      targets_fp = x_fp;
      for (int s0 = 0; s0 < N; s0 += batch)
        model.block_forward(layer, targets_fp.data() + static_cast<index_t>(s0) * L * dim, std::min(batch, N - s0), L,
                            nullptr);
    }
    // 3. replace every linear
    detail::replace_linears(model, layer, b, sample_rows, cfg, report, hooks);
    b.sources.clear();
    // 4. optional fine-tune of the quantized block against the FP targets
    if (hooks.finetune) {
      BlockContext ctx{layer, &model, MatrixView<const float>(x.data(), n_tok, dim),
                       MatrixView<const float>(targets.data(), n_tok, dim), N, L, {}, {}};
      if (fp_stream) {
        ctx.fp_inputs = MatrixView<const float>(x_fp.data(), n_tok, dim);
        ctx.fp_targets = MatrixView<const float>(targets_fp.data(), n_tok, dim);
      }
      report.per_linear[nn::ModelWeights::layer_name(layer, "finetune")] = hooks.finetune(ctx);
    }
    // 5. next block's inputs
    if (cfg.propagate_quantized) {
      for (int s0 = 0; needs_inputs && s0 < N; s0 += batch)
        model.block_forward(layer, x.data() + static_cast<index_t>(s0) * L * dim, std::min(batch, N - s0), L, nullptr);
    } else {
      x.swap(targets);
    }
    for (auto role : nn::kAllLinearRoles) model.linear(layer, role).release_workspace();
    // 6. checkpoint: the block's layers first, then the activations that point past it
    if (fp_stream) x_fp.swap(targets_fp);
    if (ckpt.enabled()) {
      io::save_block_checkpoint(ckpt.block_path(layer), model, layer);
      if (fp_stream) ckpt.save_state(layer + 1, x_fp, n_tok, dim, "activations_fp");
      ckpt.save_state(layer + 1, x, n_tok, dim);
    }
    const double block_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - block_start).count();
    char status[96];
    std::snprintf(status, sizeof status, "block %.1fs, peak RSS %.0f MiB", block_secs, peak_rss_mib());
    blocks.update(1, status);
  }
  blocks.finish();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  report.peak_rss_mib = peak_rss_mib();
  if (!cfg.quiet)
    std::fprintf(stderr, "[calibrate] done in %s, peak RSS %.0f MiB\n", format_duration(report.seconds).c_str(),
                 report.peak_rss_mib);
  return report;
}

// One method and format for every linear: the plan QuantizationPlan(method, cfg.format).
inline CalibrationReport calibrate_model(nn::Llama& model, const std::vector<std::int32_t>& tokens,
                                         const CalibrationConfig& cfg, const Method& method,
                                         nlohmann::json fingerprint = nlohmann::json::object(),
                                         const std::string& run_dir = {}, const PipelineHooks& hooks = {}) {
  return calibrate_model(model, tokens, cfg, QuantizationPlan(method, cfg.format), std::move(fingerprint), run_dir,
                         hooks);
}

}  // namespace lowbit::calib
