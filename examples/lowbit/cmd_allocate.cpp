// `lowbit allocate`: mixed-precision bit allocation (calib/allocate.hpp, docs/allocation.md). Measures
// each tensor's sensitivity to every candidate format on calibration text (or reads a sensitivity file
// made before), then chooses one candidate per tensor under a bits/weight budget and writes a plan that
// `lowbit quantize --plan` executes.
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <lowbit/calib/allocate.hpp>
#include <lowbit/calib/calibration_data.hpp>
#include <lowbit/calib/tables.hpp>
#include <lowbit/core/hash.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/eval/text_input.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/io/tokenizer.hpp>
#include <lowbit/nn/stored_linear.hpp>

#include "cli.hpp"
#include "quantize_method.hpp"

namespace lowbit_cmd_allocate {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string calib_file, sensitivity_in, sensitivity_out, out;
  std::string candidates = "gptq:uniform:2:128,gptq:uniform:3:128,gptq:uniform:4:128";
  std::string table_candidates;  // empty: the tables are not measured (block scope only)
  std::string measure = "reference", scope = "blocks";
  std::string table_format = calib::kDefaultTableFormat;
  std::vector<double> target_bpw;            // several: one plan each, --out with {bpw}
  std::vector<std::string> strategies = {"knapsack"};  // several: one plan each, --out with {strategy}
  int nsamples = 128, seqlen = 512, batch_sequences = 8, sample_tokens = 512, kl_samples = 4, kl_seqlen = 256;
  std::uint64_t seed = 0;
  std::map<std::string, cli::QuantizeMethodFactory> factories;
};

nlohmann::json::object_t source_of(const Options& o, const nn::ModelConfig& mc) {
  return {{"model", o.model},
          {"fingerprint", file_fingerprint(o.model)},
          {"n_layers", mc.n_layers},
          {"dim", mc.dim},
          {"hidden_dim", mc.hidden_dim},
          {"vocab_size", mc.vocab_size},
          {"calibration_file", o.calib_file},
          {"calibration_fingerprint", file_fingerprint(o.calib_file)},
          {"nsamples", o.nsamples},
          {"seqlen", o.seqlen},
          {"seed", o.seed},
          {"kl_samples", o.kl_samples},
          {"kl_seqlen", o.kl_seqlen},
          {"measure", o.measure}};
}

// One letter per candidate, for the map of choices over depth.
void print_plan(const calib::AllocationPlan& p, const calib::SensitivityTable& s) {
  std::map<std::string, int> count;
  std::map<std::string, std::string> rows;  // role -> one letter per block
  std::vector<std::string> roles;
  for (const auto& t : p.tensors) {
    const std::string label = t.method + ":" + t.format;
    ++count[label];
    std::size_t k = 0;
    for (const auto& tt : s.tensors)
      if (tt.name == t.name) {
        const auto& c = s.candidates_of(tt);
        k = static_cast<std::size_t>(std::find(c.begin(), c.end(), calib::Candidate{t.method, t.format}) - c.begin());
        if (tt.is_table()) continue;
        if (!rows.count(tt.role)) roles.push_back(tt.role);
        rows[tt.role] += static_cast<char>('a' + k);
      }
  }
  std::fprintf(stderr, "[allocate] %s plan: %.4f bits/weight over the block linears, %.4f over the whole model "
                       "(target %.4f over the %s), predicted KL %.5f nats/token%s\n",
               p.strategy.c_str(), p.linear_bits_per_weight, p.model_bits_per_weight, p.target_bits_per_weight,
               p.scope == "blocks" ? "block linears" : "whole model", p.predicted_kl, p.exact ? "" : " (rounded DP)");
  for (const auto& [label, n] : count) std::fprintf(stderr, "[allocate]   %4d x %s\n", n, label.c_str());
  std::string legend;
  for (std::size_t k = 0; k < s.candidates.size(); ++k)
    legend += std::string(legend.empty() ? "" : ", ") + static_cast<char>('a' + k) + " = " + s.candidates[k].label();
  std::fprintf(stderr, "[allocate] per block (%s):\n", legend.c_str());
  for (const auto& r : roles) std::fprintf(stderr, "[allocate]   %-16s %s\n", r.c_str(), rows[r].c_str());
  for (const auto& t : p.tensors)
    if (t.name == "tok_embeddings" || t.name == "output")
      std::fprintf(stderr, "[allocate]   %-16s %s\n", t.name.c_str(), t.format.c_str());
}

int run(const Options& o) {
  o.apply();
  LOWBIT_CHECK(o.measure == "reference" || o.measure == "all", "--measure: '", o.measure, "' is not reference or all");
  const auto scope = calib::parse_scope(o.scope);
  std::vector<calib::Strategy> strategies;
  for (const auto& s : o.strategies) strategies.push_back(calib::parse_strategy(s));
  const bool allocating = !o.target_bpw.empty();
  LOWBIT_CHECK(allocating || !o.sensitivity_out.empty(), "give --target-bpw (and --out) to allocate, or "
                                                         "--sensitivity-out to only measure");
  LOWBIT_CHECK(!allocating || !o.out.empty(), "--target-bpw needs --out (the plan file)");
  LOWBIT_CHECK(o.target_bpw.size() < 2 || o.out.find("{bpw}") != std::string::npos, "--out '", o.out,
               "': several --target-bpw need '{bpw}' in the file name (e.g. plan_{bpw}.json)");
  LOWBIT_CHECK(strategies.size() < 2 || o.out.find("{strategy}") != std::string::npos, "--out '", o.out,
               "': several --strategy need '{strategy}' in the file name (e.g. {strategy}_{bpw}.json)");
  const auto out_path = [&](double bpw, const std::string& strategy) {
    std::string path = o.out;
    char b[32];
    std::snprintf(b, sizeof b, "%g", bpw);
    for (auto [key, value] : {std::pair<std::string, std::string>{"{bpw}", b}, {"{strategy}", strategy}})
      for (std::size_t at; (at = path.find(key)) != std::string::npos;) path.replace(at, key.size(), value);
    return path;
  };
  for (double bpw : o.target_bpw)
    for (const auto& s : o.strategies) cli::check_output_file(out_path(bpw, s), "--out");
  if (!o.sensitivity_out.empty()) cli::check_output_file(o.sensitivity_out, "--sensitivity-out");
  cli::check_input_file(o.sensitivity_in, "--sensitivity");
  calib::check_table_format(o.table_format, "--embedding-format");
  io::require_model_file(o.model);

  calib::SensitivityTable table;
  calib::CandidateLayers layers;
  std::unique_ptr<calib::KlProbe> probe;
  std::function<nn::Llama()> load_fp = [&] { return nn::Llama(eval::load_any_weights(o.model)); };
  nn::ModelConfig mc;
  if (!o.sensitivity_in.empty()) {
    table = calib::SensitivityTable::from_json(eval::read_json_file(o.sensitivity_in), o.sensitivity_in);
    const auto fp = file_fingerprint(o.model);
    LOWBIT_CHECK(table.source.value("fingerprint", std::string()) == fp, o.sensitivity_in, ": measured on ",
                 table.source.value("model", std::string("?")), " (fingerprint ",
                 table.source.value("fingerprint", std::string("?")), "), not on ", o.model, " (", fp, ")");
    mc = nn::Llama(eval::load_any_weights(o.model)).config();
    calib::check_sensitivity_matches(table, mc, o.sensitivity_in);
    std::fprintf(stderr, "[allocate] read %zu tensors' sensitivity from %s\n", table.tensors.size(),
                 o.sensitivity_in.c_str());
  } else {
    LOWBIT_CHECK(!o.calib_file.empty(), "--calib is required unless --sensitivity names a measured file");
    cli::check_input_file(o.calib_file, "--calib");
    // Methods and candidates fail before the model is read.
    calib::SensitivityOptions sopt;
    std::map<std::string, cli::QuantizeMethod> built;
    for (const auto& c : calib::parse_candidates(o.candidates, "--candidates")) {
      LOWBIT_CHECK(c.format != "f32", "--candidates: f32 is a table candidate only");
      auto it = o.factories.find(c.method);
      LOWBIT_CHECK(it != o.factories.end(), "--candidates: unknown method '", c.method, "'");
      if (!built.count(c.method)) built.emplace(c.method, it->second(c.method));
      const auto& m = built.at(c.method);
      LOWBIT_CHECK(!m.finetune && !m.after_calibration, "--candidates: method '", c.method,
                   "' has steps around the block pass (fine-tuning), which a per-tensor probe cannot run");
      LOWBIT_CHECK(!m.method.accepts || m.method.accepts(c.format), "--candidates: method '", c.method,
                   "' cannot produce ", c.format);
      sopt.candidates.push_back({c, m.method});
    }
    if (!o.table_candidates.empty())
      for (const auto& c : calib::parse_candidates(o.table_candidates, "--table-candidates")) {
        LOWBIT_CHECK(c.method == "rtn", "--table-candidates: the token table / head are quantized by rtn, not '",
                     c.method, "'");
        sopt.table_formats.push_back(c.format);
      }
    sopt.measure_all = o.measure == "all";
    sopt.kl_samples = o.kl_samples;
    sopt.kl_seqlen = o.kl_seqlen;
    sopt.quiet = o.quiet;
    calib::CalibrationConfig cfg;
    cfg.nsamples = o.nsamples;
    cfg.seqlen = o.seqlen;
    cfg.seed = o.seed;
    cfg.sample_tokens = o.sample_tokens;
    cfg.batch_sequences = o.batch_sequences;
    cfg.quiet = o.quiet;

    std::fprintf(stderr, "[allocate] loading %s\n", o.model.c_str());
    nn::Llama work(eval::load_any_weights(o.model));
    mc = work.config();
    auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);
    const auto tokens = calib::draw_calibration_tokens(eval::read_documents(o.calib_file), *tok, o.nsamples, o.seqlen,
                                                       o.seed, o.calib_file);
    std::fprintf(stderr, "[allocate] %zu candidates on %d linears (%d x %d calibration tokens), KL of %s on %d x %d "
                         "tokens\n",
                 sopt.candidates.size(), 7 * mc.n_layers, o.nsamples, o.seqlen,
                 sopt.measure_all ? "every candidate" : "the cheapest candidate per tensor", o.kl_samples, o.kl_seqlen);
    table = calib::measure_sensitivity(work, load_fp, tokens, cfg, sopt, &layers);
    table.source = source_of(o, mc);
    if (!o.sensitivity_out.empty()) {
      eval::write_json_file(o.sensitivity_out, table.to_json());
      std::fprintf(stderr, "[allocate] wrote %s\n", o.sensitivity_out.c_str());
    }
    if (allocating) {
      nn::Llama fp = load_fp();
      probe = std::make_unique<calib::KlProbe>(fp, calib::kl_windows(tokens, o.seqlen, sopt), o.kl_seqlen,
                                               o.batch_sequences);
    }
  }
  if (!allocating) return 0;

  // The tables' cost in the block scope: --embedding-format as quantize stores them (the format's storage
  // for the table's shape; nothing is quantized).
  const std::uint64_t table_bytes =
      (o.table_format == "f32"
           ? std::uint64_t{4} * static_cast<std::uint64_t>(mc.vocab_size) * static_cast<std::uint64_t>(mc.dim)
           : nn::make_stored_linear(o.table_format, mc.vocab_size, mc.dim, [](const StoredTensorSlot&) {})->bytes()) *
      (table.tied ? 1 : 2);
  for (double bpw : o.target_bpw)
    for (std::size_t si = 0; si < strategies.size(); ++si) {
      auto plan = calib::allocate(table, bpw, scope, strategies[si], table_bytes);
      if (probe) plan.measured_kl = calib::measure_plan_kl(plan, table, layers, load_fp, *probe);
      if (scope == calib::Scope::Blocks) plan.source["embedding_format"] = o.table_format;
      plan.source["command"] = cli::invocation();
      const std::string path = out_path(bpw, o.strategies[si]);
      eval::write_json_file(path, plan.to_json());
      print_plan(plan, table);
      if (!std::isnan(plan.measured_kl))
        std::fprintf(stderr,
                     "[allocate] whole plan on the calibration windows: measured KL %.5f, predicted %.5f (%+.1f%%)\n",
                     plan.measured_kl, plan.predicted_kl, 100.0 * (plan.predicted_kl / plan.measured_kl - 1.0));
      std::fprintf(stderr, "[allocate] wrote %s; run it with: lowbit quantize --model %s --plan %s --calib ... --out ...\n",
                   path.c_str(), o.model.c_str(), path.c_str());
      if (o.json) std::printf("%s\n", plan.to_json().dump().c_str());
    }
  return 0;
}

const cli::Registration registration{
    "allocate",
    "Mixed-precision allocation: measure each tensor's sensitivity to every candidate format, then choose formats "
    "under a bits/weight budget (an exact knapsack) and write a plan for `quantize --plan`",
    [](CLI::App& app) -> cli::Action {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon);
      app.add_option("--calib", o->calib_file, "calibration text (.txt, or .jsonl with {\"text\": ...}); never the evaluation text");
      app.add_option("--candidates", o->candidates,
                     "comma-separated METHOD:FORMAT candidates for every block linear (methods as in `lowbit "
                     "quantize --method`; options such as --damp apply)")
          ->capture_default_str();
      app.add_option("--table-candidates", o->table_candidates,
                     "comma-separated rtn:FORMAT candidates for the token table / output head (rtn:f32 keeps fp32); "
                     "needed for --scope model, e.g. rtn:f32,rtn:uniform:8:row:sym,rtn:uniform:4:64");
      app.add_option("--measure", o->measure,
                     "reference: measure the KL of each tensor's cheapest candidate and scale the others' output error "
                     "by it; all: measure every candidate (|candidates| times slower)")
          ->capture_default_str();
      app.add_option("--kl-samples", o->kl_samples, "calibration windows the KL is measured on")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--kl-seqlen", o->kl_seqlen, "tokens of each of those windows")
          ->capture_default_str()
          ->check(CLI::Range(2, 1 << 20));
      app.add_option("--nsamples", o->nsamples, "calibration sequences (the Hessians of GPTQ and of the proxy)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--seqlen", o->seqlen, "tokens per calibration sequence")->capture_default_str()->check(CLI::Range(2, 1 << 20));
      app.add_option("--seed", o->seed, "seed of the calibration sampling")->capture_default_str();
      app.add_option("--sample-tokens", o->sample_tokens, "token rows sampled for methods that need samples")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 24));
      app.add_option("--batch-sequences", o->batch_sequences, "sequences per block forward")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--sensitivity", o->sensitivity_in, "read a sensitivity file written by --sensitivity-out (no measuring)");
      app.add_option("--sensitivity-out", o->sensitivity_out, "write the measured sensitivity here (reusable for other budgets)");
      app.add_option("--target-bpw", o->target_bpw,
                     "budget in bits per weight over the --scope; several (comma-separated or repeated) write one "
                     "plan each, --out naming them with {bpw}")
          ->delimiter(',')
          ->check(CLI::PositiveNumber);
      app.add_option("--scope", o->scope, "blocks: the block linears' bits/weight; model: every weight (token table / "
                                          "head chosen from --table-candidates, fp32 norms counted)")
          ->capture_default_str();
      app.add_option("--strategy", o->strategies,
                     "knapsack (exact, least predicted KL), or a baseline: uniform (spread evenly), block-adversary "
                     "(the seed's rule: the blocks whose MLP error is largest get more bits), role-depth (llama.cpp: "
                     "attn_v and ffn_down in its use_more_bits blocks first); several write one plan each, --out "
                     "naming them with {strategy}")
          ->delimiter(',')
          ->capture_default_str();
      app.add_option("--embedding-format", o->table_format,
                     "the token table's format assumed for the whole-model bits/weight in --scope blocks (as "
                     "quantize's --embedding-format)")
          ->capture_default_str();
      app.add_option("--out", o->out, "the plan file (JSON) for `lowbit quantize --plan`; {bpw} and {strategy} in the name "
                                      "are replaced by each plan's budget and strategy");
      for (const auto& spec : cli::quantize_methods()) {
        auto factory = spec.setup(app);
        for (const auto& name : spec.names) o->factories[name] = factory;
      }
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_allocate
