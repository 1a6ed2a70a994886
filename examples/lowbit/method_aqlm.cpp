// `lowbit quantize` method aqlm (calib/additive_pipeline.hpp): additive quantization for every additive
// format of the registry, with optional block fine-tuning after each block and end-to-end KL
// fine-tuning after the block pass (docs/aqlm.md).
#include <cstdio>
#include <memory>
#include <string>

#include <lowbit/calib/additive_pipeline.hpp>
#include <lowbit/core/hash.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/train/teacher_data.hpp>

#include "quantize_method.hpp"

namespace lowbit_method_aqlm {

using namespace lowbit;

// The share of the teacher samples held out to measure the KL before and after (as the windows' 10%).
constexpr double kTeacherHeldout = 0.1;

struct AqlmCli {
  calib::AqlmOptions options;
  std::string update = "exact-ls";
};

cli::QuantizeMethod make(const AqlmCli& a) {
  LOWBIT_CHECK(a.update == "exact-ls" || a.update == "adam", "--aqlm-update must be exact-ls or adam, got '", a.update,
               "'");
  calib::AqlmOptions o = a.options;
  o.calib.update = a.update == "adam" ? calib::CodebookUpdate::Adam : calib::CodebookUpdate::ExactLeastSquares;
  cli::QuantizeMethod m;
  m.method = calib::aqlm_method(o);
  if (o.finetune_epochs > 0) m.finetune = calib::aqlm_hooks(o).finetune;
  LOWBIT_CHECK(o.e2e_teacher_data.empty() || o.e2e_steps > 0,
               "--aqlm-e2e-teacher-data needs --aqlm-e2e-steps > 0 (it is the end-to-end phase's data)");
  LOWBIT_CHECK(o.e2e_teacher_data.empty() || o.e2e_nsamples == 0,
               "--aqlm-e2e-teacher-data and --aqlm-e2e-nsamples exclude each other (teacher samples or windows)");
  if (!o.e2e_teacher_data.empty()) {
    (void)train::read_teacher_data(o.e2e_teacher_data);  // a bad file fails before calibration
    m.preflight = [o](const nn::ModelConfig& config, const std::string& tokenizer) {
      (void)train::teacher_token_data(train::read_teacher_data(o.e2e_teacher_data), o.e2e_teacher_data,
                                      config.vocab_size, tokenizer, kTeacherHeldout);
    };
  }
  if (o.e2e_steps > 0)
    m.after_calibration = [o](nn::Llama& model, const cli::QuantizeContext& ctx) -> nlohmann::json {
      // Global fine-tuning against the FP model, checkpointed in --run-dir like the block pass.
      const int seq_len = o.e2e_seq_len > 0 ? o.e2e_seq_len : ctx.seqlen - 1;
      std::fprintf(stderr, "[quantize] end-to-end fine-tuning: %lld steps of %d x %d tokens of %s, forward KL to %s\n",
                   static_cast<long long>(o.e2e_steps), o.e2e_batch, seq_len,
                   o.e2e_teacher_data.empty() ? "calibration windows" : o.e2e_teacher_data.c_str(),
                   ctx.model_path.c_str());
      nn::Llama teacher(eval::load_any_weights(ctx.model_path));
      nlohmann::json e2e;
      if (o.e2e_teacher_data.empty()) {
        const auto windows = o.e2e_nsamples > 0 ? ctx.draw_windows(o.e2e_nsamples) : *ctx.tokens;
        e2e = calib::aqlm_finetune_end_to_end(model, teacher, windows, ctx.seqlen, o, ctx.quiet, ctx.run_dir);
      } else {
        const auto data = train::teacher_token_data(train::read_teacher_data(o.e2e_teacher_data), o.e2e_teacher_data,
                                                    model.config().vocab_size, ctx.tokenizer, kTeacherHeldout);
        calib::AqlmOptions keyed = o;  // the checkpoint name hashes the tokens, not the path
        keyed.e2e_teacher_fingerprint =
            fnv1a64(data.heldout.data(), data.heldout.size() * sizeof(std::int32_t),
                    fnv1a64(data.train.data(), data.train.size() * sizeof(std::int32_t)));
        e2e = calib::aqlm_finetune_end_to_end(model, teacher, data, seq_len, keyed, ctx.quiet, ctx.run_dir);
      }
      std::fprintf(stderr, "[quantize] end-to-end: held-out KL %.5f -> %.5f in %.1f s%s\n",
                   e2e["heldout_kl_before"].get<double>(), e2e["heldout_kl_after"].get<double>(),
                   e2e["seconds"].get<double>(),
                   e2e["resumed"].get<bool>()
                       ? (" (resumed at step " + std::to_string(e2e["resumed_from_step"].get<long long>()) + ")").c_str()
                       : "");
      return {{"end_to_end", e2e}};
    };
  return m;
}

const cli::QuantizeMethodRegistration registration{cli::QuantizeMethodSpec{
    {"aqlm"},
    "AQLM additive quantization (k-means, beam search, codebook updates; optional block and end-to-end "
    "fine-tuning): additive formats",
    [](CLI::App& app) -> cli::QuantizeMethodFactory {
      auto a = std::make_shared<AqlmCli>();
      auto& o = a->options;
      auto* g = app.add_option_group("AQLM", "options of --method aqlm (docs/aqlm.md)");
      g->add_option("--aqlm-kmeans-iters", o.calib.kmeans.iterations, "k-means iterations")->capture_default_str();
      g->add_option("--aqlm-beam", o.calib.beam_size, "beam width of the code search")->capture_default_str();
      g->add_option("--aqlm-max-epochs", o.calib.max_epochs, "max alternating epochs per linear")->capture_default_str();
      g->add_option("--aqlm-tolerance", o.calib.relative_mse_tolerance, "relative MSE tolerance")->capture_default_str();
      g->add_option("--aqlm-update", a->update, "codebook update: exact-ls or adam")->capture_default_str();
      g->add_option("--aqlm-adam-steps", o.calib.adam.steps, "Adam steps per epoch")->capture_default_str();
      g->add_option("--aqlm-adam-lr", o.calib.adam.lr, "Adam learning rate")->capture_default_str();
      g->add_option("--aqlm-finetune-epochs", o.finetune_epochs, "block fine-tune epochs, 0 = off")->capture_default_str();
      g->add_option("--aqlm-finetune-lr", o.finetune_lr, "block fine-tune learning rate")->capture_default_str();
      g->add_option("--aqlm-finetune-batch", o.finetune_batch, "block fine-tune sequences per step")->capture_default_str();
      g->add_option("--aqlm-e2e-steps", o.e2e_steps,
                    "end-to-end fine-tuning steps after all blocks (forward KL to the FP model), 0 = off")
          ->capture_default_str();
      g->add_option("--aqlm-e2e-lr", o.e2e_lr, "end-to-end fine-tuning learning rate")->capture_default_str();
      g->add_option("--aqlm-e2e-batch", o.e2e_batch, "end-to-end sequences per step")->capture_default_str();
      g->add_option("--aqlm-e2e-seqlen", o.e2e_seq_len, "end-to-end tokens per sequence (0 = --seqlen - 1)")
          ->capture_default_str();
      g->add_option("--aqlm-e2e-nsamples", o.e2e_nsamples,
                    "calibration windows for the end-to-end phase, drawn like --nsamples with the same seed (the "
                    "first --nsamples are the block pass's); 0 = the block pass's windows; the last 10% are held out")
          ->capture_default_str()
          ->check(CLI::Range(0, 1 << 20));
      g->add_option("--aqlm-e2e-teacher-data", o.e2e_teacher_data,
                    "train the end-to-end phase on `lowbit teacher-data` JSONL (the FP model's own generations, "
                    "BitDistiller's self-distillation data) instead of calibration windows; 10% of the samples "
                    "are held out");
      return [a](const std::string&) { return make(*a); };
    }}};

}  // namespace lowbit_method_aqlm
