// `lowbit quantize`: post-training quantization of a LLaMA-family model with RTN, GPTQ, AutoClip or
// AutoClip+GPTQ into lowbit's quantized model file (docs/quantized-file.md), block by block over seeded
// calibration windows (calib/pipeline.hpp), resumable through --run-dir. With --eval-text it measures
// perplexity before and after (GPTQ protocol) and writes a markdown + JSON report with exact
// bits/weight, calibration time and peak memory.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>

#include <lowbit/calib/additive_pipeline.hpp>  // AQLM (aqlm helper)
#include <lowbit/calib/pipeline.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "cli.hpp"

namespace {

using namespace lowbit;

struct Options {
  std::string model, tokenizer, calib_file, out, run_dir, eval_text, report_md, report_json, ppl_json;
  std::string method = "gptq", format = "uniform:4:128", eval_protocol = "gptq";
  int nsamples = 128, seqlen = 512, threads = 0, eval_ctx = 0, batch_sequences = 8, autoclip_tokens = 512;
  std::uint64_t seed = 0;
  double damp = 0.01;
  long long eval_limit_tokens = 0;
  bool act_order = false, static_groups = false, propagate_fp = false, autoclip_qk = false, skip_fp_eval = false;
  bool quiet = false;
  calib::AqlmOptions aqlm;  // AQLM knobs (aqlm helper)
  std::string aqlm_update = "exact-ls";
};

struct QuantizedSize {
  double linear_bits_per_weight = 0;  // codes + scales + zeros over the quantized linears
  double model_bits_per_weight = 0;   // the whole file (embeddings, norms, head, metadata) over all parameters
  std::uint64_t linear_weights = 0, linear_bytes = 0, file_bytes = 0, parameters = 0;
};

QuantizedSize measure_size(nn::Llama& model, const std::string& file) {
  QuantizedSize s;
  const auto& c = model.config();
  for (int l = 0; l < c.n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      auto& lin = model.linear(l, role);
      s.linear_weights += static_cast<std::uint64_t>(lin.out_features() * lin.in_features());
      s.linear_bytes += lin.bytes();
    }
  s.parameters = s.linear_weights + static_cast<std::uint64_t>(c.vocab_size) * c.dim * (c.tied_embeddings ? 1 : 2) +
                 static_cast<std::uint64_t>(c.dim) * (2 * c.n_layers + 1);
  s.file_bytes = std::filesystem::file_size(file);
  s.linear_bits_per_weight = 8.0 * double(s.linear_bytes) / double(s.linear_weights);
  s.model_bits_per_weight = 8.0 * double(s.file_bytes) / double(s.parameters);
  return s;
}

eval::PerplexityResult measure_perplexity(nn::Llama& model, const io::Tokenizer& tok, const Options& o,
                                          const std::string& label) {
  auto p = eval::perplexity_preset(o.eval_protocol, o.eval_ctx);
  auto tokens = eval::protocol_tokens(eval::read_documents(o.eval_text), tok, p);
  if (o.eval_limit_tokens > 0 && static_cast<long long>(tokens.size()) > o.eval_limit_tokens)
    tokens.resize(static_cast<std::size_t>(o.eval_limit_tokens));
  auto lm = eval::wrap_model(model, label);
  eval::PerplexityOptions opt;
  opt.quiet = o.quiet;
  auto r = eval::perplexity(lm, tokens, p, tok.bos_id(), opt);
  r.model = label;
  r.tokenizer = tok.describe();
  r.text = o.eval_text;
  std::fprintf(stderr, "[quantize] %s: perplexity %.4f (%lld predictions, %s)\n", label.c_str(), r.ppl,
               static_cast<long long>(r.predictions), p.describe().c_str());
  return r;
}

std::string command_line(const Options& o) {
  std::ostringstream c;
  c << "lowbit quantize --model " << o.model << " --method " << o.method << " --format " << o.format << " --calib "
    << o.calib_file << " --nsamples " << o.nsamples << " --seqlen " << o.seqlen << " --seed " << o.seed;
  if (o.method.find("gptq") != std::string::npos) c << " --damp " << o.damp;
  if (o.act_order) c << " --act-order";
  if (o.static_groups) c << " --static-groups";
  if (o.propagate_fp) c << " --propagate-fp";
  if (o.method == "aqlm") {
    const auto& a = o.aqlm;
    c << " --aqlm-kmeans-iters " << a.calib.kmeans.iterations << " --aqlm-beam " << a.calib.beam_size
      << " --aqlm-max-epochs " << a.calib.max_epochs << " --aqlm-tolerance " << a.calib.relative_mse_tolerance
      << " --aqlm-update " << o.aqlm_update;
    if (o.aqlm_update == "adam") c << " --aqlm-adam-steps " << a.calib.adam.steps << " --aqlm-adam-lr " << a.calib.adam.lr;
    c << " --aqlm-finetune-epochs " << a.finetune_epochs;
    if (a.finetune_epochs > 0) c << " --aqlm-finetune-lr " << a.finetune_lr << " --aqlm-finetune-batch " << a.finetune_batch;
    if (a.e2e_steps > 0)
      c << " --aqlm-e2e-steps " << a.e2e_steps << " --aqlm-e2e-lr " << a.e2e_lr << " --aqlm-e2e-batch " << a.e2e_batch
        << " --aqlm-e2e-seqlen " << a.e2e_seq_len;
  }
  c << " --out " << o.out;
  if (!o.eval_text.empty()) {
    c << " --eval-text " << o.eval_text;
    if (o.eval_ctx > 0) c << " --eval-ctx " << o.eval_ctx;
    if (o.eval_limit_tokens > 0) c << " --eval-limit-tokens " << o.eval_limit_tokens;
  }
  if (o.threads > 0) c << " --threads " << o.threads;
  return c.str();
}

int run(const Options& o) {
  if (o.threads > 0) set_num_threads(o.threads);
  calib::CalibrationConfig cfg;
  cfg.method = o.method;
  cfg.format = o.format;
  cfg.nsamples = o.nsamples;
  cfg.seqlen = o.seqlen;
  cfg.seed = o.seed;
  cfg.gptq.percdamp = o.damp;
  cfg.gptq.act_order = o.act_order;
  cfg.gptq.static_groups = o.static_groups;
  cfg.autoclip_tokens = o.autoclip_tokens;
  cfg.autoclip_qk = o.autoclip_qk;
  cfg.propagate_quantized = !o.propagate_fp;
  cfg.batch_sequences = o.batch_sequences;
  cfg.quiet = o.quiet;
  // ---- AQLM branch (aqlm helper): --method aqlm --format additive:M:B:G ----
  const bool aqlm = o.method == "aqlm";
  calib::AqlmOptions aqlm_options = o.aqlm;
  aqlm_options.calib.update = o.aqlm_update == "adam" ? calib::CodebookUpdate::Adam : calib::CodebookUpdate::ExactLeastSquares;
  LOWBIT_CHECK(!aqlm || o.aqlm_update == "adam" || o.aqlm_update == "exact-ls", "--aqlm-update must be exact-ls or adam");
  if (aqlm) parse_additive_format(o.format);  // fail early on a malformed descriptor
  const auto calibrator = aqlm ? calib::aqlm_calibrator(aqlm_options) : calib::group_calibrator(o.method);
  const calib::PipelineHooks hooks = aqlm ? calib::aqlm_hooks(aqlm_options) : calib::PipelineHooks{};
  // ---- end AQLM branch ----
  if (!aqlm) io::visit_group_format(o.format, [](auto) { return 0; });  // fail early on an unknown format

  std::fprintf(stderr, "[quantize] loading %s\n", o.model.c_str());
  auto model = std::make_unique<nn::Llama>(eval::load_any_weights(o.model));
  auto tok = io::load_tokenizer(o.model, o.tokenizer);
  const auto& mc = model->config();
  std::fprintf(stderr, "[quantize] %d layers, dim %d, hidden %d, vocab %d; %s %s, %d x %d calibration tokens, %d threads\n",
               mc.n_layers, mc.dim, mc.hidden_dim, mc.vocab_size, o.method.c_str(), o.format.c_str(), o.nsamples,
               o.seqlen, max_threads());

  nlohmann::json report = {{"command", command_line(o)}, {"model", o.model}, {"method", o.method}, {"format", o.format},
                           {"calibration_file", o.calib_file}, {"threads", max_threads()}, {"config", cfg.to_json()}};
  if (!o.eval_text.empty() && !o.skip_fp_eval) {
    auto before = measure_perplexity(*model, *tok, o, "fp32");
    report["ppl_before"] = before.to_json();
  }

  const auto tokens =
      calib::draw_calibration_tokens(eval::read_documents(o.calib_file), *tok, o.nsamples, o.seqlen, o.seed, o.calib_file);
  nlohmann::json fingerprint = {{"model", calib::file_fingerprint(o.model)},
                                {"calibration_file", calib::file_fingerprint(o.calib_file)}};
  if (aqlm) fingerprint["aqlm"] = aqlm_options.to_json();  // AQLM (aqlm helper)
  auto cal = calib::calibrate_model(*model, tokens, cfg, calibrator, fingerprint, o.run_dir, hooks);
  if (aqlm && aqlm_options.e2e_steps > 0) {
    // Global fine-tuning against the FP model, checkpointed in --run-dir like the block pass.
    std::fprintf(stderr, "[quantize] end-to-end fine-tuning: %lld steps of %d x %d tokens, forward KL to %s\n",
                 static_cast<long long>(aqlm_options.e2e_steps), aqlm_options.e2e_batch,
                 aqlm_options.e2e_seq_len > 0 ? aqlm_options.e2e_seq_len : o.seqlen - 1, o.model.c_str());
    nn::Llama teacher(eval::load_any_weights(o.model));
    const auto e2e = calib::aqlm_finetune_end_to_end(*model, teacher, tokens, o.seqlen, aqlm_options, o.quiet, o.run_dir);
    std::fprintf(stderr, "[quantize] end-to-end: held-out KL %.5f -> %.5f in %.1f s%s\n",
                 e2e["heldout_kl_before"].get<double>(), e2e["heldout_kl_after"].get<double>(),
                 e2e["seconds"].get<double>(),
                 e2e["resumed"].get<bool>()
                     ? (" (resumed at step " + std::to_string(e2e["resumed_from_step"].get<long long>()) + ")").c_str()
                     : "");
    report["end_to_end"] = e2e;
  }
  io::write_quantized_model(o.out, *model, cfg.to_json(), o.model);
  const auto size = measure_size(*model, o.out);
  std::fprintf(stderr, "[quantize] wrote %s: %.4f bits/weight over the linears, %.4f over the whole file\n",
               o.out.c_str(), size.linear_bits_per_weight, size.model_bits_per_weight);
  report["calibration"] = cal.to_json();
  report["calibration_seconds"] = cal.seconds;
  report["peak_rss_mib"] = cal.peak_rss_mib;
  report["bits_per_weight"] = size.linear_bits_per_weight;
  report["model_bits_per_weight"] = size.model_bits_per_weight;
  report["linear_bytes"] = size.linear_bytes;
  report["file_bytes"] = size.file_bytes;
  report["out"] = o.out;

  if (!o.eval_text.empty()) {
    model.reset();  // evaluate exactly what was written
    nn::Llama loaded = io::load_quantized_model(o.out);
    auto after = measure_perplexity(loaded, *tok, o, o.out);
    auto j = after.to_json();
    j["method"] = o.method + " " + o.format;
    j["bits_per_weight"] = size.linear_bits_per_weight;
    report["ppl_after"] = j;
    if (!o.ppl_json.empty()) eval::write_json_file(o.ppl_json, j);
  }
  report["peak_rss_mib"] = calib::peak_rss_mib();

  std::ostringstream md;
  char buf[512];
  md << "| method | format | bits/weight (linears) | bits/weight (file) | PPL before | PPL after | calibration | peak RSS |\n";
  md << "|---|---|---:|---:|---:|---:|---:|---:|\n";
  auto ppl = [&](const char* key) {
    return report.contains(key) ? std::to_string(report[key]["ppl"].get<double>()).substr(0, 8) : std::string("-");
  };
  std::snprintf(buf, sizeof buf, "| %s | %s | %.4f | %.4f | %s | %s | %.1f s | %.0f MiB |\n", o.method.c_str(),
                o.format.c_str(), size.linear_bits_per_weight, size.model_bits_per_weight, ppl("ppl_before").c_str(),
                ppl("ppl_after").c_str(), cal.seconds, report["peak_rss_mib"].get<double>());
  md << buf << "\nCommand: `" << command_line(o) << "`\n";
  if (report.contains("ppl_after"))
    md << "\nProtocol: " << report["ppl_after"]["protocol"].value("description", std::string()) << ", "
       << report["ppl_after"]["predictions"].get<long long>() << " predictions\n";
  std::printf("%s", md.str().c_str());
  if (!o.report_md.empty()) eval::write_text_file(o.report_md, md.str());
  if (!o.report_json.empty()) eval::write_json_file(o.report_json, report);
  return 0;
}

const cli::Registration registration{
    "quantize", "Quantize a model (RTN, GPTQ, AutoClip, AutoClip+GPTQ, AQLM) into a lowbit quantized file",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--model", o->model, "model file (GGUF, llama2.c .bin, safetensors)")->required();
      app.add_option("--tokenizer", o->tokenizer, "tokenizer file (default: inside/beside the model)");
      app.add_option("--method", o->method, "rtn | gptq | autoclip | autoclip+gptq | aqlm");
      app.add_option("--format", o->format, "uniform:BITS:GROUP (BITS 2,3,4,8; GROUP 64,128), nf3:128, or with --method aqlm additive:M:B:G (e.g. 2:8:8, 3:8:8, 4:6:8, 3:7:8, 1:16:8; docs/aqlm.md)");
      app.add_option("--calib", o->calib_file, "calibration text (.txt, or .jsonl with {\"text\": ...})")->required();
      app.add_option("--nsamples", o->nsamples, "calibration sequences (default 128)");
      app.add_option("--seqlen", o->seqlen, "tokens per calibration sequence (default 512)");
      app.add_option("--seed", o->seed, "seed of the calibration sampling (default 0)");
      app.add_option("--damp", o->damp, "GPTQ dampening, fraction of mean diag(H) (default 0.01)");
      app.add_flag("--act-order", o->act_order, "GPTQ: quantize columns by decreasing diag(H) (implies static groups)");
      app.add_flag("--static-groups", o->static_groups, "GPTQ: fit group ranges on the unmodified weights");
      app.add_option("--autoclip-tokens", o->autoclip_tokens, "token rows sampled for the AutoClip objective (512)");
      app.add_flag("--autoclip-qk", o->autoclip_qk, "also clip q/k projections (BitDistiller skips them)");
      app.add_flag("--propagate-fp", o->propagate_fp, "feed FP block outputs to the next block (default: quantized)");
      app.add_option("--batch-sequences", o->batch_sequences, "calibration sequences per block forward (8)");
      app.add_option("--run-dir", o->run_dir, "checkpoint folder: a killed run resumes from it");
      app.add_option("--out", o->out, "output quantized model file (.safetensors)")->required();
      app.add_option("--eval-text", o->eval_text, "measure perplexity before and after on this text");
      app.add_option("--eval-protocol", o->eval_protocol, "perplexity protocol preset (default gptq)");
      app.add_option("--eval-ctx", o->eval_ctx, "perplexity context (default: the preset's, 2048 for gptq)");
      app.add_option("--eval-limit-tokens", o->eval_limit_tokens, "evaluate only the first N tokens");
      app.add_flag("--skip-fp-eval", o->skip_fp_eval, "do not measure the full-precision perplexity");
      app.add_option("--report-md", o->report_md, "write the markdown report here");
      app.add_option("--report-json", o->report_json, "write the JSON report here");
      app.add_option("--ppl-json", o->ppl_json, "write the quantized model's perplexity result (for lowbit report)");
      app.add_option("--threads", o->threads, "OpenMP threads (default: all)");
      app.add_flag("--quiet", o->quiet, "no progress output");
      // ---- AQLM knobs (aqlm helper; docs/aqlm.md) ----
      app.add_option("--aqlm-kmeans-iters", o->aqlm.calib.kmeans.iterations, "AQLM: k-means iterations (25)");
      app.add_option("--aqlm-beam", o->aqlm.calib.beam_size, "AQLM: beam width of the code search (1)");
      app.add_option("--aqlm-max-epochs", o->aqlm.calib.max_epochs, "AQLM: max alternating epochs per linear (20)");
      app.add_option("--aqlm-tolerance", o->aqlm.calib.relative_mse_tolerance, "AQLM: relative MSE tolerance (0.01)");
      app.add_option("--aqlm-update", o->aqlm_update, "AQLM: codebook update, exact-ls or adam (exact-ls)");
      app.add_option("--aqlm-adam-steps", o->aqlm.calib.adam.steps, "AQLM: Adam steps per epoch (100)");
      app.add_option("--aqlm-adam-lr", o->aqlm.calib.adam.lr, "AQLM: Adam learning rate (1e-4)");
      app.add_option("--aqlm-finetune-epochs", o->aqlm.finetune_epochs, "AQLM: block fine-tune epochs, 0 = off (0)");
      app.add_option("--aqlm-finetune-lr", o->aqlm.finetune_lr, "AQLM: block fine-tune learning rate (1e-4)");
      app.add_option("--aqlm-finetune-batch", o->aqlm.finetune_batch, "AQLM: block fine-tune sequences per step (4)");
      app.add_option("--aqlm-e2e-steps", o->aqlm.e2e_steps,
                     "AQLM: end-to-end fine-tuning steps after all blocks (forward KL to the FP model), 0 = off (0)");
      app.add_option("--aqlm-e2e-lr", o->aqlm.e2e_lr, "AQLM: end-to-end fine-tuning learning rate (1e-4)");
      app.add_option("--aqlm-e2e-batch", o->aqlm.e2e_batch, "AQLM: end-to-end sequences per step (1)");
      app.add_option("--aqlm-e2e-seqlen", o->aqlm.e2e_seq_len,
                     "AQLM: end-to-end tokens per sequence (0 = --seqlen - 1)");
      return [o] { return run(*o); };
    }};

}  // namespace
