// `lowbit kld`: KL divergence and top-1 agreement of a (quantized) model's next-token distribution
// against a reference model on the same tokens of a text, windows as in `lowbit perplexity`.
#include <cstdio>
#include <string>

#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/kld.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "cli.hpp"

namespace lowbit_cmd_kld {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string reference, text, protocol = "gptq", out_json;
  int ctx = 0;
  long long limit_tokens = 0;
};

int run(const Options& o) {
  o.apply();
  const auto p = eval::perplexity_preset(o.protocol, o.ctx);
  auto model = eval::load_any_model(o.model);
  auto reference = eval::load_any_model(o.reference);
  auto tok = io::load_tokenizer(o.reference, o.tokenizer);
  auto tokens = eval::protocol_tokens(eval::read_documents(o.text), *tok, p);
  if (o.limit_tokens > 0 && static_cast<long long>(tokens.size()) > o.limit_tokens)
    tokens.resize(static_cast<std::size_t>(o.limit_tokens));
  std::fprintf(stderr, "protocol %s\n%zu tokens from %s\n", p.describe().c_str(), tokens.size(), o.text.c_str());
  eval::PerplexityOptions opt;
  opt.quiet = o.quiet;
  auto r = eval::kl_divergence(model.lm, reference.lm, tokens, p, tok->bos_id(), opt);
  r.model = o.model;
  r.reference = o.reference;
  r.text = o.text;
  std::printf("KL(reference || model): mean %.6f ± %.6f nats, median %.6f, p90 %.6f, p99 %.6f, max %.4f\n", r.mean_kld,
              r.kld_stderr, r.median_kld, r.p90_kld, r.p99_kld, r.max_kld);
  std::printf("top-1 agreement %.4f ± %.4f over %lld positions; ppl model %.4f, reference %.4f; %.1f s\n", r.top1_agreement,
              r.top1_stderr, static_cast<long long>(r.positions), std::exp(r.nll_model), std::exp(r.nll_reference), r.seconds);
  const auto j = r.to_json();
  if (!o.out_json.empty()) eval::write_json_file(o.out_json, j);
  if (o.json) std::printf("%s\n", j.dump().c_str());
  return 0;
}

const cli::Registration registration{
    "kld", "KL divergence and top-1 agreement of a model against a reference model", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon, "model under test (e.g. a lowbit quantized file)",
                              "tokenizer file (default: the reference's)");
      app.add_option("--reference", o->reference, "reference model (e.g. full precision)")->required();
      app.add_option("--text", o->text, "text or jsonl file")->required();
      app.add_option("--protocol", o->protocol, "window preset as in `lowbit perplexity` (default gptq)");
      app.add_option("--ctx", o->ctx, "tokens per window (default: the protocol's)")->check(CLI::Range(2, 1 << 20));
      app.add_option("--limit-tokens", o->limit_tokens, "use only the first N tokens");
      app.add_option("--out-json", o->out_json, "write the result JSON here");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_kld
