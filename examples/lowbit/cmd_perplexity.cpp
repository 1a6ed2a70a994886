// `lowbit perplexity`: perplexity of a model on a text or jsonl file under an explicit protocol
// (eval/perplexity.hpp). The protocol and token count are printed with every result; with --json the
// result object is the last line of stdout, and --out-json / --out-md write it for `lowbit report`.
#include <cstdio>
#include <fstream>
#include <string>

#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "cli.hpp"

namespace lowbit_cmd_perplexity {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string text, protocol = "auto", doc_sep, out_json, out_md, method, join, targets;
  int ctx = 0, stride = -1, batch = 0;
  long long limit_tokens = 0;
  bool bos_per_doc = false, score_second_half = false;
  bool join_set = false;
};

// "auto": llama2.c checkpoints are evaluated the way llama2.c does (documents with BOS, ctx inputs
// predicting the next ctx tokens); everything else with the GPTQ/AQLM papers' convention.
std::string resolve_protocol(const std::string& name, const std::string& model) {
  if (name != "auto") return name;
  std::ifstream in(model, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  const bool gguf = in.gcount() == 4 && std::string(magic, 4) == "GGUF";
  const bool llama2c = !gguf && model.size() > 4 && model.substr(model.size() - 4) == ".bin";
  return llama2c ? "llama2.c" : "gptq";
}

nlohmann::json protocol_fields(const eval::PerplexityProtocol& p) {
  auto j = p.to_json();
  j.erase("name");
  j.erase("description");
  return j;
}

int run(const Options& o) {
  o.apply();
  const std::string preset = resolve_protocol(o.protocol, o.model);
  auto p = eval::perplexity_preset(preset, o.ctx);
  const auto preset_fields = protocol_fields(p);
  if (o.stride >= 0) p.stride = o.stride;
  if (!o.doc_sep.empty()) {
    p.doc_sep = o.doc_sep;
    p.per_document_encoding = true;
  }
  if (o.bos_per_doc) {
    p.bos = eval::BosPolicy::PerDocument;
    p.per_document_encoding = true;
  }
  if (o.score_second_half) p.score_second_half = true;
  if (o.join_set) p.join = o.join;
  if (!o.targets.empty()) {
    LOWBIT_CHECK(o.targets == "inside" || o.targets == "shifted", "--targets must be inside or shifted, not '", o.targets, "'");
    p.targets = o.targets == "inside" ? eval::WindowTargets::Inside : eval::WindowTargets::Shifted;
  }
  if (protocol_fields(p) != preset_fields) p.name = preset + "+custom";
  p.validate();

  auto loaded = eval::load_any_model(o.model);
  auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);
  LOWBIT_CHECK(tok->vocab_size() <= loaded.lm.vocab_size, "tokenizer ", tok->describe(), " has ", tok->vocab_size(),
               " tokens but model ", o.model, " only ", loaded.lm.vocab_size);
  auto tokens = eval::protocol_tokens(eval::read_documents(o.text), *tok, p);
  if (o.limit_tokens > 0 && static_cast<long long>(tokens.size()) > o.limit_tokens)
    tokens.resize(static_cast<std::size_t>(o.limit_tokens));
  std::fprintf(stderr, "model %s (%s), tokenizer %s\nprotocol %s\n%zu tokens from %s\n", o.model.c_str(),
               loaded.lm.name.c_str(), tok->describe().c_str(), p.describe().c_str(), tokens.size(), o.text.c_str());
  eval::PerplexityOptions opt;
  opt.batch = o.batch;
  opt.quiet = o.quiet;
  auto r = eval::perplexity(loaded.lm, tokens, p, tok->bos_id(), opt);
  r.model = o.model;
  r.tokenizer = tok->describe();
  r.text = o.text;
  auto j = r.to_json();
  j["threads"] = max_threads();
  j["bits_per_weight"] = loaded.bits_per_weight;
  j["model_bits_per_weight"] = loaded.storage.model_bits_per_weight;
  j["file_bits_per_weight"] = loaded.file_bits_per_weight;
  j["file_mb"] = loaded.file_mb;
  if (!o.method.empty()) j["method"] = o.method;
  std::printf("perplexity %.4f  (mean NLL %.5f ± %.5f nats, %lld predictions, %lld tokens, %lld windows)\n", r.ppl, r.nll,
              r.nll_stderr, static_cast<long long>(r.predictions), static_cast<long long>(r.tokens),
              static_cast<long long>(r.windows));
  std::printf("protocol: %s\n", p.describe().c_str());
  std::printf("storage: %.4f bits/weight over the block linears, %.4f over every weight (token table %s, head %s), "
              "file %.1f MB = %.4f bits/weight\n",
              loaded.bits_per_weight, loaded.storage.model_bits_per_weight, loaded.storage.table_format.c_str(),
              loaded.storage.head_format.c_str(), loaded.file_mb, loaded.file_bits_per_weight);
  std::printf("time %.1f s, %.0f tokens/s, ~%.1f GFLOP/s, %d threads\n", r.seconds, r.tokens_per_second,
              r.gflops_per_second, max_threads());
  if (!o.out_json.empty()) eval::write_json_file(o.out_json, j);
  if (!o.out_md.empty()) eval::write_text_file(o.out_md, r.to_markdown());
  if (o.json) std::printf("%s\n", j.dump().c_str());
  return 0;
}

const cli::Registration registration{
    "perplexity", "Perplexity of a model on a text/jsonl file under a stated protocol", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon);
      app.add_option("--text", o->text, "text file, or .jsonl with {\"text\": ...} per line")->required();
      app.add_option("--protocol", o->protocol,
                     "preset: auto (default: llama2.c for llama2.c .bin models, else gptq), gptq, aqlm, llama.cpp, llama2.c");
      app.add_option("--targets", o->targets, "inside: a window of ctx tokens predicts its own last ctx-1; shifted: ctx inputs predict the next ctx");
      app.add_option("--ctx", o->ctx, "tokens per window (default: the preset's)")->check(CLI::Range(2, 1 << 20));
      app.add_option("--stride", o->stride, "window step (default ctx: non-overlapping; < ctx: sliding)");
      app.add_option("--doc-sep", o->doc_sep, "split the text on this string; documents encoded separately");
      app.add_flag("--bos-per-doc", o->bos_per_doc, "encode each document separately, each starting with BOS");
      app.add_option("--join", o->join, "separator joining jsonl documents (default \"\\n\\n\")")
          ->each([o](const std::string&) { o->join_set = true; });
      app.add_flag("--score-second-half", o->score_second_half, "score only the second half of each window");
      app.add_option("--limit-tokens", o->limit_tokens, "evaluate only the first N tokens of the stream");
      app.add_option("--batch", o->batch, "windows per forward (default: as many as fit 1 GB of logits)")
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--method", o->method, "method label stored in the JSON (for lowbit report)");
      app.add_option("--out-json", o->out_json, "write the result JSON to this file");
      app.add_option("--out-md", o->out_md, "write a markdown table row to this file");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_perplexity
