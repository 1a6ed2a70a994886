// `lowbit quantize`: post-training quantization of a LLaMA-family model into lowbit's quantized model
// file (docs/quantized-file.md), block by block over seeded calibration windows (calib/pipeline.hpp),
// resumable through --run-dir. Which method and format each linear gets is a plan: one --method and
// --format for all, or repeated --tensor-format 'REGEX=METHOD:FORMAT' rules (first match wins), so one
// model can mix methods and formats. Methods register themselves (method_*.cpp, quantize_method.hpp),
// formats come from the registry (formats.hpp). With --eval-text it measures perplexity before and
// after (GPTQ protocol) and writes a markdown + JSON report with exact bits/weight, calibration time and
// peak memory.
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <lowbit/calib/allocate.hpp>
#include <lowbit/calib/pipeline.hpp>
#include <lowbit/calib/tables.hpp>
#include <lowbit/core/hash.hpp>
#include <lowbit/core/resources.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/formats.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "cli.hpp"
#include "quantize_method.hpp"

namespace lowbit_cmd_quantize {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string calib_file, out, run_dir, eval_text, report_md, report_json, ppl_json, plan_file;
  std::string method = "gptq", format = "uniform:4:128", eval_protocol = "gptq";
  std::string table_format = calib::kDefaultTableFormat, head_format;  // head: empty = as the table
  std::vector<std::string> tensor_formats;
  int nsamples = 128, seqlen = 512, eval_ctx = 0, batch_sequences = 8, sample_tokens = 512;
  std::uint64_t seed = 0;
  long long eval_limit_tokens = 0;
  bool propagate_fp = false, skip_fp_eval = false, table_format_given = false, head_format_given = false;
  std::map<std::string, cli::QuantizeMethodFactory> factories;  // method name -> factory
};

struct QuantizedSize {
  eval::ModelStorage storage;          // bits/weight over the linears and over every weight, as stored
  double file_bits_per_weight = 0;     // the file's bytes (metadata included) over every weight
  std::uint64_t linear_bytes = 0, file_bytes = 0;
};

QuantizedSize measure_size(nn::Llama& model, const std::string& file) {
  QuantizedSize s;
  s.storage = eval::model_storage(model);
  for (int l = 0; l < model.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) s.linear_bytes += model.linear(l, role).bytes();
  s.file_bytes = std::filesystem::file_size(file);
  s.file_bits_per_weight = 8.0 * double(s.file_bytes) / s.storage.parameters;
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

std::string known_methods(const Options& o) {
  std::string out;
  for (const auto& [name, factory] : o.factories) out += (out.empty() ? "" : ", ") + name;
  return out;
}

// The plan from --tensor-format rules, from an allocation plan file (--plan: one exact-name rule per
// linear), or one rule '.*' from --method/--format; each method is built once, and the steps around the
// block pass come from the methods the plan uses.
struct Plan {
  calib::QuantizationPlan plan;
  std::vector<cli::QuantizeMethod> methods;  // the distinct methods used, in order of first use
  std::string table_format, head_format;     // from an allocation plan in the whole-model scope; empty otherwise
  std::string description;                   // of an allocation plan: "knapsack plan (block linears)"
};

Plan make_plan(const Options& o) {
  std::vector<calib::RuleText> rules;
  Plan p;
  if (!o.plan_file.empty()) {
    LOWBIT_CHECK(o.tensor_formats.empty(), "--plan and --tensor-format both choose every linear's format: give one");
    const auto a = calib::AllocationPlan::from_json(eval::read_json_file(o.plan_file), o.plan_file);
    const auto fp = file_fingerprint(o.model);
    LOWBIT_CHECK(a.source.value("fingerprint", std::string()) == fp, o.plan_file, ": a plan for ",
                 a.source.value("model", std::string("?")), " (fingerprint ", a.source.value("fingerprint", std::string("?")),
                 "), not for ", o.model, " (", fp, "); allocate again for this model");
    for (const auto& t : a.tensors) {
      if (t.name == "tok_embeddings") p.table_format = t.format;
      else if (t.name == "output") p.head_format = t.format;
      else rules.push_back({calib::exact_name_pattern(t.name), t.method, t.format});
    }
    if (!p.table_format.empty() && p.head_format.empty()) p.head_format = p.table_format;  // tied
    // the budget is the result's bits/weight: one series per strategy and scope in `lowbit report`'s plot
    p.description = a.strategy + " plan (" + (a.scope == "blocks" ? "block linears" : "whole model") + ")";
  } else if (o.tensor_formats.empty()) {
    rules.push_back({".*", o.method, o.format});
  } else {
    for (const auto& text : o.tensor_formats) rules.push_back(calib::parse_rule_text(text));
  }
  std::map<std::string, std::size_t> built;
  for (const auto& r : rules) {
    auto it = o.factories.find(r.method);
    LOWBIT_CHECK(it != o.factories.end(), "unknown method '", r.method, "' (known: ", known_methods(o), ")");
    if (!built.count(r.method)) {
      built[r.method] = p.methods.size();
      p.methods.push_back(it->second(r.method));
    }
    p.plan.add(r.pattern, p.methods[built[r.method]].method, r.format);
  }
  return p;
}

int run(const Options& o) {
  o.apply();
  // everything that can fail fast fails before the model is read
  cli::check_output_file(o.out, "--out");
  cli::check_folder(o.run_dir, "--run-dir");
  cli::check_input_file(o.calib_file, "--calib");
  cli::check_input_file(o.eval_text, "--eval-text");
  cli::check_input_file(o.tokenizer, "--tokenizer");
  for (const auto& [path, option] : {std::pair{o.report_md, "--report-md"}, std::pair{o.report_json, "--report-json"},
                                     std::pair{o.ppl_json, "--ppl-json"}})
    if (!path.empty()) cli::check_output_file(path, option);
  io::require_model_file(o.model);
  cli::check_input_file(o.plan_file, "--plan");
  const Plan plan = make_plan(o);  // fails early on an unknown method or format, or a method that cannot fill it
  LOWBIT_CHECK(plan.table_format.empty() || (!o.table_format_given && !o.head_format_given), "--plan ", o.plan_file,
               " chooses the token table's format (", plan.table_format, "): leave out --embedding-format/--head-format");
  const std::string table_format = plan.table_format.empty() ? o.table_format : plan.table_format;
  const std::string head_format =
      !plan.head_format.empty() ? plan.head_format : (o.head_format.empty() ? o.table_format : o.head_format);
  calib::check_table_format(table_format, "--embedding-format");
  calib::check_table_format(head_format, "--head-format");
  calib::CalibrationConfig cfg;
  cfg.nsamples = o.nsamples;
  cfg.seqlen = o.seqlen;
  cfg.seed = o.seed;
  cfg.sample_tokens = o.sample_tokens;
  cfg.propagate_quantized = !o.propagate_fp;
  cfg.batch_sequences = o.batch_sequences;
  cfg.quiet = o.quiet;
  calib::PipelineHooks hooks;
  std::vector<calib::BlockFinetune> finetunes;
  for (const auto& m : plan.methods) {
    if (m.finetune) finetunes.push_back(m.finetune);
    hooks.fp_stream = hooks.fp_stream || m.fp_stream;
  }
  if (!finetunes.empty())
    hooks.finetune = [finetunes](calib::BlockContext& ctx) {
      nlohmann::json out = nlohmann::json::object();
      for (const auto& f : finetunes) out.update(f(ctx));
      return out;
    };

  std::fprintf(stderr, "[quantize] loading %s\n", o.model.c_str());
  bool requantizing = false;
  auto model = std::make_unique<nn::Llama>(eval::load_any_weights(o.model, &requantizing));
  if (requantizing)
    std::fprintf(stderr,
                 "[quantize] note: %s is a lowbit quantized file: quantizing its dequantized weights, so the errors "
                 "of both quantizations add up (its source model, %s, gives a better result)\n",
                 o.model.c_str(), io::quantized_model_info(o.model).value("source_model", std::string("unknown")).c_str());
  auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);
  const auto& mc = model->config();
  LOWBIT_CHECK(!mc.tied_embeddings || head_format == table_format, o.model,
               ": the token table is tied to the output head (one tensor): --embedding-format ", table_format,
               " and --head-format ", head_format, " differ");
  if (!o.plan_file.empty())  // every linear of this model has exactly one entry: the rules are exact names
    for (int l = 0; l < mc.n_layers; ++l)
      for (auto role : nn::kAllLinearRoles) {
        const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
        bool found = false;
        for (const auto& r : plan.plan.rules()) found = found || r.pattern == calib::exact_name_pattern(name);
        LOWBIT_CHECK(found, o.plan_file, ": the plan has no entry for ", name, " of ", o.model);
      }
  LOWBIT_CHECK(tok->vocab_size() <= mc.vocab_size, "tokenizer ", tok->describe(), " has ", tok->vocab_size(),
               " tokens but the model has ", mc.vocab_size, "; pass the model's own --tokenizer");
  for (const auto& m : plan.methods)
    if (m.preflight) m.preflight(mc, tok->describe());
  // The calibration set and its cached activations are sized by the flags: refuse a run that cannot fit
  // before anything is drawn or allocated.
  const auto need = calib::estimate_memory(mc, o.nsamples, o.seqlen, o.sample_tokens, o.batch_sequences, false);
  const double have = physical_memory_mib();
  LOWBIT_CHECK(have == 0 || need.total_mib() < have, "--nsamples ", o.nsamples, " x --seqlen ", o.seqlen,
               ": calibration would need at least ", static_cast<long long>(need.total_mib()), " MiB (",
               need.describe(), "), more than this machine's ", static_cast<long long>(have),
               " MiB; lower --nsamples or --seqlen");
  const std::string plan_text = !o.plan_file.empty()         ? plan.description
                                : o.tensor_formats.empty() ? o.method + " " + o.format
                                                           : std::to_string(o.tensor_formats.size()) + " tensor rules";
  std::fprintf(stderr, "[quantize] %d layers, dim %d, hidden %d, vocab %d; %s, %d x %d calibration tokens, %d threads\n",
               mc.n_layers, mc.dim, mc.hidden_dim, mc.vocab_size, plan_text.c_str(), o.nsamples, o.seqlen,
               max_threads());
  const auto qconfig = calib::quantization_config(cfg, plan.plan, *model);
  nlohmann::json report = {{"command", cli::invocation()}, {"model", o.model}, {"calibration_file", o.calib_file},
                           {"threads", max_threads()}, {"quantization_config", qconfig}};
  if (!o.plan_file.empty()) report["plan"] = eval::read_json_file(o.plan_file);
  if (o.tensor_formats.empty() && o.plan_file.empty()) {
    report["method"] = o.method;
    report["format"] = o.format;
  }
  if (!o.eval_text.empty() && !o.skip_fp_eval) report["ppl_before"] = measure_perplexity(*model, *tok, o, "fp32").to_json();

  const auto draw_windows = [&](int n) {
    return calib::draw_calibration_tokens(eval::read_documents(o.calib_file), *tok, n, o.seqlen, o.seed, o.calib_file);
  };
  const auto tokens = draw_windows(o.nsamples);
  nlohmann::json fingerprint = {{"model", file_fingerprint(o.model)},
                                {"calibration_file", file_fingerprint(o.calib_file)}};
  auto cal = calib::calibrate_model(*model, tokens, cfg, plan.plan, fingerprint, o.run_dir, hooks);
  const cli::QuantizeContext ctx{o.model, tok->describe(), &tokens, o.seqlen, o.quiet, o.run_dir, draw_windows};
  for (const auto& m : plan.methods)
    if (m.after_calibration) report.update(m.after_calibration(*model, ctx));
  calib::quantize_tables(*model, table_format, head_format);
  io::write_quantized_model(o.out, *model, qconfig, o.model);
  const auto size = measure_size(*model, o.out);
  std::fprintf(stderr,
               "[quantize] wrote %s (%.1f MB): %.4f bits/weight over the block linears, %.4f over every weight "
               "(token table %s, head %s, norms f32), %.4f for the whole file\n",
               o.out.c_str(), double(size.file_bytes) / 1e6, size.storage.linear_bits_per_weight,
               size.storage.model_bits_per_weight, size.storage.table_format.c_str(), size.storage.head_format.c_str(),
               size.file_bits_per_weight);
  report["calibration"] = cal.to_json();
  report["calibration_seconds"] = cal.seconds;
  report["bits_per_weight"] = size.storage.linear_bits_per_weight;
  report["model_bits_per_weight"] = size.storage.model_bits_per_weight;
  report["file_bits_per_weight"] = size.file_bits_per_weight;
  report["token_table_format"] = size.storage.table_format;
  report["head_format"] = size.storage.head_format;
  report["norm_format"] = "f32";
  report["linear_bytes"] = size.linear_bytes;
  report["file_bytes"] = size.file_bytes;
  report["file_mb"] = double(size.file_bytes) / 1e6;
  report["out"] = o.out;

  if (!o.eval_text.empty()) {
    model.reset();  // evaluate exactly what was written
    nn::Llama loaded = io::load_quantized_model(o.out);
    auto after = measure_perplexity(loaded, *tok, o, o.out);
    auto j = after.to_json();
    j["method"] = plan_text;
    j["bits_per_weight"] = size.storage.linear_bits_per_weight;
    j["file_bits_per_weight"] = size.file_bits_per_weight;
    report["ppl_after"] = j;
    if (!o.ppl_json.empty()) eval::write_json_file(o.ppl_json, j);
  }
  report["peak_rss_mib"] = peak_rss_mib();

  std::ostringstream md;
  char buf[512];
  md << "| method | format | table/head | bits/weight (linears) | bits/weight (file) | file MB | PPL before | PPL after | "
        "calibration | peak RSS |\n";
  md << "|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
  auto ppl = [&](const char* key) {
    return report.contains(key) ? std::to_string(report[key]["ppl"].get<double>()).substr(0, 8) : std::string("-");
  };
  const bool per_tensor = !o.tensor_formats.empty() || !o.plan_file.empty();
  const std::string method_cell = per_tensor ? "per tensor" : o.method;
  const std::string format_cell = per_tensor ? "mixed (quantization_config)" : o.format;
  const std::string tables = size.storage.table_format == size.storage.head_format
                                 ? size.storage.table_format
                                 : size.storage.table_format + " / " + size.storage.head_format;
  std::snprintf(buf, sizeof buf, "| %s | %s | %s | %.4f | %.4f | %.1f | %s | %s | %.1f s | %.0f MiB |\n",
                method_cell.c_str(), format_cell.c_str(), tables.c_str(), size.storage.linear_bits_per_weight,
                size.file_bits_per_weight, double(size.file_bytes) / 1e6, ppl("ppl_before").c_str(),
                ppl("ppl_after").c_str(), cal.seconds, report["peak_rss_mib"].get<double>());
  md << buf << "\nCommand: `" << cli::invocation() << "`\n";
  if (report.contains("ppl_after"))
    md << "\nProtocol: " << report["ppl_after"]["protocol"].value("description", std::string()) << ", "
       << report["ppl_after"]["predictions"].get<long long>() << " predictions\n";
  std::printf("%s", md.str().c_str());
  if (!o.report_md.empty()) eval::write_text_file(o.report_md, md.str());
  if (!o.report_json.empty()) eval::write_json_file(o.report_json, report);
  if (o.json) std::printf("%s\n", report.dump().c_str());
  return 0;
}

std::string methods_help() {
  std::string out = "calibration method:";
  for (const auto& spec : cli::quantize_methods()) {
    std::string names;
    for (const auto& n : spec.names) names += (names.empty() ? "" : ", ") + n;
    out += "\n  " + names + ": " + spec.summary;
  }
  return out;
}

// `quantize`, and `qat`: the same command with BitDistiller's method and a 2-bit format as defaults.
cli::Action setup(CLI::App& app, const std::string& method, const std::string& format) {
      auto o = std::make_shared<Options>();
      o->method = method;
      o->format = format;
      cli::add_common_options(app, *o, cli::kAllCommon);
      app.add_option("--method", o->method, methods_help())->capture_default_str();
      app.add_option("--format", o->format,
                     "weight format (`lowbit formats` lists them with their bits/weight): " +
                         lowbit::detail::joined(format_names()))
          ->capture_default_str();
      app.add_option("--tensor-format", o->tensor_formats,
                     "per-tensor rule REGEX=METHOD:FORMAT, repeatable, first match wins; REGEX is searched in "
                     "names like layers.3.attention.wq, layers.3.feed_forward.w2 (e.g. "
                     "'feed_forward\\.w2=gptq:uniform:4:128' then '.*=aqlm:additive:2:8:8'); replaces "
                     "--method/--format");
      auto* table_opt = app.add_option("--embedding-format", o->table_format,
                                       "format of the token table (RTN; 'f32' keeps it in fp32); on a tied model also "
                                       "the head's")
                            ->capture_default_str();
      auto* head_opt = app.add_option("--head-format", o->head_format,
                                      "format of the output head (default: --embedding-format; a tied model has one "
                                      "tensor for both)");
      app.add_option("--plan", o->plan_file,
                     "an allocation plan from `lowbit allocate` (each linear's method and format, and the table's in "
                     "its whole-model scope); replaces --method/--format/--tensor-format");
      app.add_option("--calib", o->calib_file, "calibration text (.txt, or .jsonl with {\"text\": ...})")->required();
      app.add_option("--nsamples", o->nsamples, "calibration sequences")->capture_default_str()->check(CLI::Range(1, 1 << 20));
      app.add_option("--seqlen", o->seqlen, "tokens per calibration sequence")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--seed", o->seed, "seed of the calibration sampling")->capture_default_str();
      app.add_option("--sample-tokens,--autoclip-tokens", o->sample_tokens,
                     "token rows sampled per linear input for methods that need samples (AutoClip)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 24));
      app.add_flag("--propagate-fp", o->propagate_fp, "feed FP block outputs to the next block (default: quantized)");
      app.add_option("--batch-sequences", o->batch_sequences, "calibration sequences per block forward")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--run-dir", o->run_dir, "checkpoint folder: a killed run resumes from it");
      app.add_option("--out", o->out, "output quantized model file (.safetensors)")->required();
      app.add_option("--eval-text", o->eval_text, "measure perplexity before and after on this text");
      app.add_option("--eval-protocol", o->eval_protocol, "perplexity protocol preset")->capture_default_str();
      app.add_option("--eval-ctx", o->eval_ctx, "perplexity context (default: the preset's, 2048 for gptq)")
          ->check(CLI::Range(2, 1 << 20));
      app.add_option("--eval-limit-tokens", o->eval_limit_tokens, "evaluate only the first N tokens")
          ->check(CLI::Range(1LL, 1LL << 40));
      app.add_flag("--skip-fp-eval", o->skip_fp_eval, "do not measure the full-precision perplexity");
      app.add_option("--report-md", o->report_md, "write the markdown report here");
      app.add_option("--report-json", o->report_json, "write the JSON report here");
      app.add_option("--ppl-json", o->ppl_json, "write the quantized model's perplexity result (for lowbit report)");
      for (const auto& spec : cli::quantize_methods()) {
        auto factory = spec.setup(app);
        for (const auto& name : spec.names) o->factories[name] = factory;
      }
      return [o, table_opt, head_opt] {
        o->table_format_given = table_opt->count() > 0;
        o->head_format_given = head_opt->count() > 0;
        return run(*o);
      };
}

const cli::Registration registration{
    "quantize", "Quantize a model into a lowbit quantized file, one method and format for all linears or per tensor",
    [](CLI::App& app) { return setup(app, "gptq", "uniform:4:128"); }};

const cli::Registration qat_registration{
    "qat",
    "BitDistiller quantization-aware training: `quantize` with --method bitdistiller and --format uniform:2:128 as "
    "defaults (make teacher data first with `lowbit teacher-data`)",
    [](CLI::App& app) { return setup(app, "bitdistiller", "uniform:2:128"); }};

}  // namespace lowbit_cmd_quantize
