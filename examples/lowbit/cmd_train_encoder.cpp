// `lowbit train-encoder`: 1-bit activations before every linear (the Auto Quantization Encoder, issue 17;
// train/encoder.hpp). Every block gets four encoders (one per distinct linear input) of the chosen kind,
// trained one block at a time to match the FP layer outputs, then optionally all at once by KL to the FP
// model (--e2e-steps), and the model is written as a lowbit file that `perplexity`, `eval` and `generate`
// read. The model may already have quantized weights (any lowbit file): its linears stay as they are and
// gain the encoders. With --run-dir both phases checkpoint there and a rerun continues bit-identically.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <lowbit/calib/calibration_data.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/train/encoder.hpp>

#include "cli.hpp"

namespace lowbit_cmd_train_encoder {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string train_text, out, eval_text, run_dir, teacher;
  int nsamples = 32, seqlen = 512, eval_ctx = 2048;
  std::size_t eval_limit = 32768;
  train::EncoderTrainOptions train;
  train::EncoderEndToEndOptions e2e;
  int e2e_nsamples = 64;
};

// A checkpoint file name in the run folder keyed by what decides its contents (the files themselves also
// carry a fingerprint of the run and refuse another one).
std::filesystem::path run_file(const std::string& dir, const std::string& stem, const std::string& key) {
  char name[96];
  std::snprintf(name, sizeof name, "%s-%016llx.ckpt", stem.c_str(), static_cast<unsigned long long>(fnv1a64(key)));
  return std::filesystem::path(dir) / name;
}

int run(Options o) {
  const auto start = std::chrono::steady_clock::now();
  o.apply();
  cli::check_output_file(o.out, "--out");
  cli::check_input_file(o.train_text, "--train-text");
  cli::check_input_file(o.eval_text, "--eval-text");
  if (!o.teacher.empty()) io::require_model_file(o.teacher);
  (void)nn::EncoderSpec::parse(o.train.encoder);  // a bad --encoder fails before any work
  io::require_model_file(o.model);
  if (!o.eval_text.empty() && std::filesystem::equivalent(o.eval_text, o.train_text))
    std::fprintf(stderr, "lowbit: warning: --train-text is the evaluation text: the encoders are fitted to the text "
                         "they are then scored on\n");
  if (!o.run_dir.empty()) std::filesystem::create_directories(o.run_dir);
  nn::Llama model = io::open_model(o.model);
  auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);
  const auto documents = eval::read_documents(o.train_text);
  const auto tokens =
      calib::draw_calibration_tokens(documents, *tok, o.nsamples, o.seqlen, o.train.seed, o.train_text);
  // the end-to-end phase's windows, drawn now so a text too short for them fails before any training
  std::vector<std::int32_t> e2e_tokens;
  const int e2e_window = o.e2e.seq_len + 1;
  if (o.e2e.steps > 0)
    e2e_tokens = calib::draw_calibration_tokens(documents, *tok, o.e2e_nsamples, e2e_window, o.train.seed + 1,
                                                o.train_text);
  // the end-to-end phase's teacher: --teacher, else the model as given (FP or with quantized weights); loaded
  // now so a wrong one fails before the layer-wise phase
  const std::string teacher_path = o.teacher.empty() ? o.model : o.teacher;
  std::optional<nn::Llama> teacher_model;
  if (o.e2e.steps > 0) {
    LOWBIT_CHECK(model.token_embedding_format() == "f32" && model.output_head_format() == "f32", o.model,
                 ": the end-to-end phase back-propagates through the token table and head, which this file stores as ",
                 model.token_embedding_format(), " / ", model.output_head_format(),
                 "; quantize it with --embedding-format f32, or leave out --e2e-steps");
    teacher_model.emplace(io::open_model(teacher_path));
    LOWBIT_CHECK(teacher_model->config().vocab_size == model.config().vocab_size, teacher_path,
                 ": the teacher's vocabulary has ", teacher_model->config().vocab_size, " tokens, the model's ",
                 model.config().vocab_size);
  }
  if (!o.run_dir.empty())
    o.train.checkpoint = run_file(o.run_dir, "layerwise", o.model + "|" + o.train_text + "|" + o.train.encoder);
  std::fprintf(stderr, "[train-encoder] %s encoders before every linear of %d blocks; %d x %d training tokens from %s; "
               "%d steps of %d rows per block, lr %.2g -> %.2g, k %.1f\n",
               o.train.encoder.c_str(), model.config().n_layers, o.nsamples, o.seqlen, o.train_text.c_str(),
               o.train.steps_per_block, o.train.batch_rows, o.train.lr, o.train.final_lr, o.train.k);
  o.train.quiet = o.quiet;
  const auto r = train::train_encoders(model, tokens, o.seqlen, o.train);
  const double extra = 100.0 * static_cast<double>(r.encoder_macs_per_token) / static_cast<double>(r.linear_macs_per_token);
  std::fprintf(stderr, "[train-encoder] %lld encoder parameters, %lld extra multiply-adds per token (%.1f%% of the "
               "linears'), %.1f s\n", static_cast<long long>(r.encoder_parameters),
               static_cast<long long>(r.encoder_macs_per_token), extra, r.seconds);
  double first = 0, last = 0;
  for (std::size_t l = 0; l < r.first_loss.size(); ++l) {
    first += r.first_loss[l] / static_cast<double>(r.first_loss.size());
    last += r.last_loss[l] / static_cast<double>(r.last_loss.size());
  }
  std::fprintf(stderr, "[train-encoder] relative output error per block (sum over its 7 linears), mean over blocks: "
               "%.4f -> %.4f%s\n", first, last,
               r.resumed ? (" (resumed at step " + std::to_string(r.resumed_from_step) + ")").c_str() : "");
  nlohmann::json e2e_json;
  if (o.e2e.steps > 0) {
    nn::Llama& teacher = *teacher_model;
    const auto data = train::split_tokens(e2e_tokens, 0.1, model.config().vocab_size,
                                          std::to_string(o.e2e_nsamples) + " windows of " + o.train_text);
    o.e2e.seed = o.train.seed;
    o.e2e.quiet = o.quiet;
    o.e2e.checkpoint_every = o.train.checkpoint_every;
    o.e2e.k = o.train.k;
    o.e2e.k_final = o.train.k_final;
    if (!o.run_dir.empty())
      o.e2e.checkpoint = run_file(o.run_dir, "end_to_end", o.model + "|" + o.train_text + "|" + o.train.encoder + "|" + teacher_path);
    std::fprintf(stderr, "[train-encoder] end to end: %lld steps of %d x %d tokens, forward KL to %s, lr %.2g cosine\n",
                 static_cast<long long>(o.e2e.steps), o.e2e.batch, o.e2e.seq_len, teacher_path.c_str(), o.e2e.lr);
    const auto e = train::finetune_encoders_end_to_end(model, teacher, data, o.e2e);
    std::fprintf(stderr, "[train-encoder] end to end: held-out KL %.4f -> %.4f%s\n", e.heldout_before, e.heldout_after,
                 e.resumed ? (" (resumed at step " + std::to_string(e.resumed_from_step) + ")").c_str() : "");
    e2e_json = {{"steps", o.e2e.steps},
                {"teacher", teacher_path},
                {"batch", o.e2e.batch},
                {"seq_len", o.e2e.seq_len},
                {"lr", o.e2e.lr},
                {"ce_weight", o.e2e.ce_weight},
                {"nsamples", o.e2e_nsamples},
                {"train_tokens", data.train.size()},
                {"heldout_tokens", data.heldout.size()},
                {"heldout_kl_before", e.heldout_before},
                {"heldout_kl_after", e.heldout_after}};
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json config = {{"method", "train-encoder"},
                           {"activations", Binary<Heaviside>::name()},
                           {"encoder", o.train.encoder},
                           {"train_text", o.train_text},
                           {"nsamples", o.nsamples},
                           {"seqlen", o.seqlen},
                           {"steps_per_block", o.train.steps_per_block},
                           {"batch_rows", o.train.batch_rows},
                           {"lr", o.train.lr},
                           {"final_lr", o.train.final_lr},
                           {"k", o.train.k},
                           {"k_final", o.train.k_final},
                           {"seed", o.train.seed},
                           {"encoder_parameters", r.encoder_parameters},
                           {"encoder_macs_per_token", r.encoder_macs_per_token},
                           {"linear_macs_per_token", r.linear_macs_per_token},
                           {"first_loss", r.first_loss},
                           {"last_loss", r.last_loss},
                           {"layerwise_seconds", r.seconds},
                           {"seconds", seconds}};
  if (!e2e_json.is_null()) config["end_to_end"] = e2e_json;
  io::write_quantized_model(o.out, model, config, o.model);
  std::fprintf(stderr, "[train-encoder] wrote %s\n", o.out.c_str());
  nlohmann::json out = config;
  if (!o.eval_text.empty()) {
    const auto p = eval::text_perplexity(model, *tok, o.eval_text, "gptq", o.eval_ctx, o.eval_limit, o.quiet);
    std::fprintf(stderr, "[train-encoder] perplexity on %s: %.3f\n", o.eval_text.c_str(), p.ppl);
    out["perplexity"] = p.ppl;
  }
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

const cli::Registration registration{
    "train-encoder",
    "1-bit activations before every linear: learned encoders + Heaviside step, trained layer-wise (issue 17)",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon,
                              "model file (any format lowbit reads; a quantized file keeps its weight formats)");
      app.add_option("--train-text", o->train_text, "training text (.txt or .jsonl; never the evaluation text)")
          ->required();
      app.add_option("--encoder", o->train.encoder,
                     "none (naive sign, α = mean|x|), diag (per-channel α, β), lowrank:R (x + U·relu(V·x), 2·R·d "
                     "multiply-adds), mlp (the seed's d -> d/2 -> d)")
          ->capture_default_str();
      app.add_option("--nsamples", o->nsamples, "training windows")->capture_default_str()->check(CLI::Range(1, 1 << 16));
      app.add_option("--seqlen", o->seqlen, "tokens per window")->capture_default_str()->check(CLI::Range(2, 1 << 16));
      app.add_option("--steps", o->train.steps_per_block, "AdamW steps per block")
          ->capture_default_str()
          ->check(CLI::Range(0, 1 << 24));
      app.add_option("--batch-rows", o->train.batch_rows, "token rows per step")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 24));
      app.add_option("--lr", o->train.lr, "peak learning rate (the seed's 4e-4)")->capture_default_str()->check(CLI::Range(0.0, 10.0));
      app.add_option("--final-lr", o->train.final_lr, "learning rate at the end of the cosine (the seed's 4e-5)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 10.0));
      app.add_option("--warmup", o->train.warmup, "warm-up steps per block")->capture_default_str()->check(CLI::Range(0, 1 << 24));
      app.add_option("--weight-decay", o->train.weight_decay, "AdamW weight decay on the encoder matrices")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 10.0));
      app.add_option("--k", o->train.k, "sharpness of the arctan surrogate gradient")->capture_default_str()->check(CLI::Range(1e-3, 1e3));
      app.add_option("--k-final", o->train.k_final,
                     "anneal k linearly to this over each block's steps and over the end-to-end steps (0: constant k)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1e3));
      app.add_option("--seed", o->train.seed, "seed of the windows, the initial encoders and the batches")->capture_default_str();
      app.add_option("--e2e-steps", o->e2e.steps,
                     "then train every encoder at once by forward KL to the model as given (0: layer-wise only)")
          ->capture_default_str()
          ->check(CLI::Range(0, 1 << 24));
      app.add_option("--teacher", o->teacher,
                     "model the end-to-end phase distills from (default: --model itself; give the FP model when "
                     "--model has quantized weights)");
      app.add_option("--e2e-ce-weight", o->e2e.ce_weight,
                     "share w of next-token cross-entropy in the end-to-end loss (1 - w)·KL + w·CE (the seed mixes "
                     "0.3 CE into its layer-wise loss)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1.0));
      app.add_option("--e2e-lr", o->e2e.lr, "peak learning rate of that phase (cosine to a tenth)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 10.0));
      app.add_option("--e2e-batch", o->e2e.batch, "sequences per end-to-end step")->capture_default_str()->check(CLI::Range(1, 4096));
      app.add_option("--e2e-seqlen", o->e2e.seq_len, "tokens per end-to-end sequence")
          ->capture_default_str()
          ->check(CLI::Range(2, 1 << 16));
      app.add_option("--e2e-nsamples", o->e2e_nsamples,
                     "windows of --train-text for the end-to-end phase (the last 10% held out for its KL)")
          ->capture_default_str()
          ->check(CLI::Range(2, 1 << 20));
      app.add_option("--run-dir", o->run_dir,
                     "checkpoint folder: both phases save there (every --checkpoint-every steps) and a rerun of the "
                     "same command continues bit-identically")
          ->capture_default_str();
      app.add_option("--checkpoint-every", o->train.checkpoint_every, "steps between checkpoints (layer-wise steps count over all blocks)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 24));
      app.add_option("--out", o->out, "output lowbit file")->required();
      app.add_option("--eval-text", o->eval_text, "print the perplexity on this text after training (gptq protocol)");
      app.add_option("--eval-ctx", o->eval_ctx, "context of that evaluation")->capture_default_str()->check(CLI::Range(2, 1 << 20));
      app.add_option("--eval-limit-tokens", o->eval_limit, "tokens of the evaluation text scored (0: all)")->capture_default_str();
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_train_encoder
