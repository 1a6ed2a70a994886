// `lowbit demo`: the README's main job. It takes the built-in default model (pretraining it on the
// synthetic corpus first when it is not cached, about a minute), quantizes every linear with each method
// that works, and prints held-out perplexity and exact bits/weight per method, FP baseline first.
// Adding a row is one entry in demo_rows(): a name, a method and a registered format.
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <lowbit/calib/additive_pipeline.hpp>
#include <lowbit/calib/allocate.hpp>
#include <lowbit/calib/bcq_methods.hpp>
#include <lowbit/calib/bitdistiller.hpp>
#include <lowbit/calib/group_methods.hpp>
#include <lowbit/calib/pipeline.hpp>
#include <lowbit/calib/uniquanf.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/nn/model.hpp>
#include <lowbit/train/pretrain.hpp>

#include "cli.hpp"

namespace lowbit_cmd_demo {

using namespace lowbit;

struct DemoContext {
  const nn::ModelWeights* weights = nullptr;                       // the FP model (BitDistiller's teacher)
  const std::vector<std::int32_t>* calibration_tokens = nullptr;  // training stream of the default model
  int seq_len = 128;
  std::uint64_t seed = 0;
};

// One table row: a method of calib/ and a registered format (formats.hpp); an empty method is the FP
// baseline. Adding a row is one line here.
struct DemoRow {
  std::string name;    // table row
  std::string method;  // rtn | gptq | autoclip+gptq | aqlm | ... ("": FP baseline)
  std::string format;  // e.g. "uniform:4:128"
};

std::vector<DemoRow> demo_rows() {
  return {
      {"FP32 (baseline)", "", "f32"},
      {"RTN W4 g128", "rtn", "uniform:4:128"},
      {"RTN W4 g32", "rtn", "uniform:4:32"},
      {"RTN W3 g128", "rtn", "uniform:3:128"},
      {"RTN W2 g128", "rtn", "uniform:2:128"},
      {"RTN W2 g32", "rtn", "uniform:2:32"},
      {"GPTQ W4 g128", "gptq", "uniform:4:128"},
      {"GPTQ W3 g128", "gptq", "uniform:3:128"},
      {"GPTQ W2 g128", "gptq", "uniform:2:128"},
      {"AutoClip+GPTQ W2", "autoclip+gptq", "uniform:2:128"},
      // On the default model's 128-wide matrices codebooks are expensive (one 256 x 8 fp16 codebook is
      // 4 KiB next to a 32 KiB 128x128 fp16 matrix), so 1x8 g8 is the ~2-bit format here; on real models
      // 2x8 g8 is (docs/aqlm.md). AQLM rows run with two epochs of block fine-tuning.
      {"AQLM 1x8 g8 + FT", "aqlm", "additive:1:8:8"},
      {"AQLM 2x8 g8 + FT", "aqlm", "additive:2:8:8"},
      // UniQuanF's binary-coding formats (docs/uniquanf.md): the greedy fit, ALTERNATING, and UniQuanF
      // (uniform-grid init, ALTERNATING, two epochs of block-wise reconstruction with the QDrop mix).
      {"BCQ W3 g128 greedy", "rtn", "bcq:3:128"},
      {"BCQ W3 g128 ALTERNATING", "alternating", "bcq:3:128"},
      {"BCQ W3 g128 UniQuanF", "uniquanf", "bcq:3:128"},
      {"BCQ W2 g128 UniQuanF", "uniquanf", "bcq:2:128"},
      // BitDistiller (docs/bitdistiller.md): AutoClip start, then QAT distilled with CAKLD from the FP
      // model's own continuations of 16-token prompts.
      {"BitDistiller QAT W2", "bitdistiller", "uniform:2:128"},
      // Mixed precision (docs/allocation.md): GPTQ at 2, 3 or 4 bits per tensor within 3.0 bits/weight,
      // chosen by the exact knapsack on measured sensitivity, and the same budget spread evenly.
      {"GPTQ mixed, knapsack", "allocate:knapsack", "2/3/4 @ 3.0"},
      {"GPTQ mixed, spread", "allocate:uniform", "2/3/4 @ 3.0"},
  };
}

calib::BitDistillerOptions demo_qat_options(const DemoContext& ctx) {
  calib::BitDistillerOptions o;
  o.steps = 150;
  o.batch = 4;
  o.seq_len = ctx.seq_len;
  o.lr = 1e-4f;  // on this model 1e-4 beat 3e-4, 5e-5 and 1e-3 (held-out NLL after 150 steps)
  o.seed = ctx.seed;
  return o;
}

// BitDistiller's teacher data, at token level: the FP model continues the first 16 tokens of each
// calibration window (temperature 0.7) up to the window length; the last fifth is held out.
train::TokenData demo_teacher_data(nn::Llama& teacher, const std::vector<std::int32_t>& windows, const DemoContext& ctx) {
  train::TeacherDataOptions o;
  o.max_new_tokens = ctx.seq_len - 16;
  o.seed = ctx.seed;
  const std::size_t n = windows.size() / static_cast<std::size_t>(ctx.seq_len);
  train::TokenData d;
  for (std::size_t k = 0; k < n; ++k) {
    const auto first = windows.begin() + static_cast<std::ptrdiff_t>(k * static_cast<std::size_t>(ctx.seq_len));
    const std::vector<std::int32_t> prompt(first, first + 16);
    auto& out = k + n / 5 < n ? d.train : d.heldout;
    out.insert(out.end(), prompt.begin(), prompt.end());
    const auto cont = train::teacher_continuation(teacher, prompt, o, k, {});
    out.insert(out.end(), cont.begin(), cont.end());
  }
  d.vocab_size = teacher.config().vocab_size;
  d.description = "teacher continuations";
  d.finalize();
  return d;
}

// A mixed-precision plan for the row "allocate:STRATEGY": each linear's GPTQ format among 2, 3 and 4 bits
// (groups of 128) within 3.0 bits/weight, from the sensitivity measured once on the calibration windows.
calib::QuantizationPlan mixed_plan(const std::string& strategy, const std::vector<std::int32_t>& tokens,
                                   const calib::CalibrationConfig& cfg, const DemoContext& ctx) {
  static std::unique_ptr<calib::SensitivityTable> measured;
  if (!measured) {
    calib::SensitivityOptions opt;
    for (const char* f : {"uniform:2:128", "uniform:3:128", "uniform:4:128"})
      opt.candidates.push_back({{"gptq", f}, calib::group_method("gptq")});
    opt.kl_samples = 4;
    opt.kl_seqlen = cfg.seqlen;
    opt.quiet = true;
    nn::Llama work(*ctx.weights);
    measured = std::make_unique<calib::SensitivityTable>(
        calib::measure_sensitivity(work, [&] { return nn::Llama(*ctx.weights); }, tokens, cfg, opt));
  }
  const auto a = calib::allocate(*measured, 3.0, calib::Scope::Blocks, calib::parse_strategy(strategy), 0);
  calib::QuantizationPlan plan;
  const auto gptq = calib::group_method("gptq");
  for (const auto& t : a.tensors) plan.add(calib::exact_name_pattern(t.name), gptq, t.format);
  return plan;
}

// Block-by-block calibration (calib/pipeline.hpp) of every linear with the row's method and format, on
// 32 sequences of the default model's own training stream (RTN reads none of them).
void quantize_row(nn::Llama& model, const DemoRow& row, const DemoContext& ctx) {
  calib::CalibrationConfig cfg;
  cfg.format = row.format;
  cfg.nsamples = 32;
  cfg.seqlen = ctx.seq_len;
  cfg.seed = ctx.seed;
  cfg.quiet = true;
  const auto n = static_cast<std::size_t>(cfg.nsamples) * static_cast<std::size_t>(cfg.seqlen);
  LOWBIT_CHECK(ctx.calibration_tokens && ctx.calibration_tokens->size() >= n, "demo: not enough calibration tokens for ",
               row.method);
  const std::vector<std::int32_t> tokens(ctx.calibration_tokens->begin(),
                                         ctx.calibration_tokens->begin() + static_cast<std::ptrdiff_t>(n));
  calib::Method method;
  calib::PipelineHooks hooks;
  if (row.method.rfind("allocate:", 0) == 0) {
    calib::calibrate_model(model, tokens, cfg, mixed_plan(row.method.substr(9), tokens, cfg, ctx));
    return;
  }
  if (row.method == "aqlm") {
    calib::AqlmOptions aqlm;
    aqlm.finetune_epochs = 2;
    method = calib::aqlm_method(aqlm);
    hooks = calib::aqlm_hooks(aqlm);
  } else if (row.method == "alternating") {
    method = calib::bcq_method(row.method, {});
  } else if (row.method == "uniquanf") {
    calib::UniQuanFOptions uq;
    uq.epochs = 2;
    uq.seed = ctx.seed;
    method = calib::uniquanf_method(uq);
    hooks.finetune = [uq](calib::BlockContext& c) { return calib::uniquanf_finetune_block(c, uq); };
    hooks.fp_stream = true;
  } else if (row.method == "bitdistiller") {
    method = calib::bitdistiller_method(demo_qat_options(ctx));
  } else {
    method = calib::group_method(row.method);
  }
  calib::calibrate_model(model, tokens, cfg, calib::QuantizationPlan(method, row.format), nlohmann::json::object(), "",
                         hooks);
  if (row.method == "bitdistiller") {
    nn::Llama teacher(*ctx.weights);
    calib::bitdistiller_train(model, teacher, demo_teacher_data(teacher, tokens, ctx), demo_qat_options(ctx), true);
  }
}

// Exact bits per weight of the block linears as stored (codes, scales, zeros, codebooks).
double linear_bits_per_weight(nn::Llama& model) {
  double bytes = 0, weights = 0;
  for (int l = 0; l < model.n_layers(); ++l)
    for (auto role : nn::kAllLinearRoles) {
      const auto& lin = model.linear(l, role);
      bytes += static_cast<double>(lin.bytes());
      weights += static_cast<double>(lin.in_features() * lin.out_features());
    }
  return 8.0 * bytes / weights;
}

struct DemoArgs : cli::CommonOptions {  // --model: a lowbit checkpoint instead of the built-in default model
  std::int64_t eval_tokens = 32768;
};

int run_demo(const DemoArgs& a) {
  a.apply();
  train::PretrainResult trained;
  trained.steps_this_run = 0;
  const nn::ModelWeights weights =
      a.model.empty() ? train::default_model_weights(a.quiet, &trained) : train::load_pretrained(a.model);
  const std::string model_name = a.model.empty() ? train::default_model_path().string() : a.model;
  // The held-out stream of the default model's synthetic corpus (never trained on) and its train stream.
  const train::PretrainOptions defaults;
  const auto data = train::synthetic_token_data(defaults.seed, 1u << 18, 1u << 17);
  const int seq_len = std::min(weights.config.max_seq_len, defaults.seq_len);
  DemoContext context{&weights, &data.train, seq_len, defaults.seed};
  if (!a.quiet && trained.steps_this_run > 0)
    std::fprintf(stderr, "demo: pretrained the default model: held-out loss %.4f (unigram entropy %.4f) in %.0f s\n",
                 trained.heldout_loss, trained.unigram_entropy, trained.seconds);

  nlohmann::json rows = nlohmann::json::array();
  double baseline_ppl = 0;
  const std::int64_t predictions = std::min<std::int64_t>(
      (static_cast<std::int64_t>(data.heldout.size()) - 1) / seq_len, std::max<std::int64_t>(1, a.eval_tokens / seq_len)) *
      seq_len;
  if (!a.json) {
    std::printf("lowbit demo: %s (dim %d, %d layers, vocab %d)\n", model_name.c_str(), weights.config.dim,
                weights.config.n_layers, weights.config.vocab_size);
    std::printf("held-out: synthetic corpus, %lld byte-token predictions, windows of %d; bits/weight over the block "
                "linears (embedding/head stay fp32)\n\n",
                static_cast<long long>(predictions), seq_len);
    std::printf("| %-23s | %-14s | %11s | %9s | %10s | %8s |\n", "method", "format", "bits/weight", "NLL", "perplexity",
                "vs FP");
    std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(25, '-').c_str(), std::string(16, '-').c_str(),
                std::string(13, '-').c_str(), std::string(11, '-').c_str(), std::string(12, '-').c_str(),
                std::string(10, '-').c_str());
  }
  for (const auto& method : demo_rows()) {
    nn::Llama model(weights);
    if (!method.method.empty()) quantize_row(model, method, context);
    const double bpw = linear_bits_per_weight(model);
    const double nll = train::heldout_loss(model, data.heldout, seq_len, a.eval_tokens);
    const double ppl = std::exp(nll);
    if (method.method.empty()) baseline_ppl = ppl;
    const double delta = baseline_ppl > 0 ? 100.0 * (ppl / baseline_ppl - 1.0) : 0.0;
    rows.push_back({{"method", method.name}, {"format", method.format}, {"bits_per_weight", bpw}, {"nll", nll},
                    {"ppl", ppl}, {"ppl_increase_percent", delta}, {"predictions", predictions}});
    if (!a.json) {
      std::printf("| %-23s | %-14s | %11.3f | %9.4f | %10.4f | %+7.2f%% |\n", method.name.c_str(), method.format.c_str(),
                  bpw, nll, ppl, delta);
      std::fflush(stdout);
    }
  }
  if (a.json) {
    nlohmann::json out{{"model", model_name}, {"eval", "synthetic held-out"}, {"seq_len", seq_len},
                       {"predictions", predictions}, {"results", rows}};
    std::printf("%s\n", out.dump().c_str());
  }
  return 0;
}

const lowbit::cli::Registration registration{
    "demo",
    "Pretrain the built-in model if needed, quantize it with every working method, print perplexity vs bits/weight",
    [](CLI::App& app) -> lowbit::cli::Action {
      auto a = std::make_shared<DemoArgs>();
      cli::add_common_options(app, *a, cli::kModel | cli::kThreads | cli::kQuiet | cli::kJson,
                              "a lowbit checkpoint (lowbit pretrain) instead of the built-in default model");
      app.add_option("--eval-tokens", a->eval_tokens, "Held-out predictions per method")->capture_default_str();
      return [a] { return run_demo(*a); };
    }};

}  // namespace lowbit_cmd_demo
