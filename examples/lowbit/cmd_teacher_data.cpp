// `lowbit teacher-data`: BitDistiller's step 2 (train/teacher_data.hpp). The full-precision model continues
// prompts cut from calibration text; `lowbit quantize --method bitdistiller --teacher-data FILE` distills the
// quantized student on the result. Resumable: rerun the same command after a kill.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <lowbit/core/hash.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/train/teacher_data.hpp>

#include "cli.hpp"

namespace lowbit_cmd_teacher_data {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::vector<std::string> prompts;
  std::string out, eval_text;
  train::TeacherDataOptions data;
};

int run(Options o) {
  o.apply();
  cli::check_output_file(o.out, "--out");
  cli::check_input_file(o.eval_text, "--eval-text");
  train::check(o.data);
  std::vector<train::TeacherSource> sources;
  for (const auto& p : o.prompts) {
    sources.push_back(train::parse_teacher_source(p));
    cli::check_input_file(sources.back().path, "--prompts");
  }
  io::require_model_file(o.model);
  const auto prompts = train::draw_teacher_prompts(sources, o.data);
  if (!o.eval_text.empty()) {
    const int found = train::prompts_found_in(prompts, eval::read_file_bytes(o.eval_text));
    if (found > 0)
      std::fprintf(stderr,
                   "lowbit: warning: %d of %zu prompts occur verbatim in the evaluation text %s: the student would be "
                   "distilled on text it is then evaluated on; draw prompts from calibration text instead\n",
                   found, prompts.size(), o.eval_text.c_str());
  }
  nn::Llama model = io::open_model(o.model);
  auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);

  if (o.data.chat) {
    o.data.chat_template = eval::chat_template_of(o.model);
    (void)eval::chat_prompt(*tok, o.data.chat_template, "x");  // a template or tokenizer without ChatML fails now
  }
  train::TeacherHeader header;
  header.options = o.data.to_json();
  for (const auto& s : sources) header.options["sources"].push_back({{"path", s.path}, {"weight", s.weight}});
  header.model = o.model;
  header.model_fingerprint = file_fingerprint(o.model);
  header.tokenizer = tok->describe();
  header.vocab_size = model.config().vocab_size;
  std::fprintf(stderr, "[teacher-data] %zu prompts of %d characters from %zu source(s); up to %d new tokens each, "
               "temperature %.2f, top-p %.2f, seed %llu\n", prompts.size(), o.data.prompt_chars, sources.size(),
               o.data.max_new_tokens, o.data.temperature, o.data.top_p, static_cast<unsigned long long>(o.data.seed));
  const auto r = train::generate_teacher_data(model, *tok, prompts, header, o.data, o.out);
  std::fprintf(stderr, "[teacher-data] %s: %lld samples kept from an earlier run, %lld generated (%lld tokens) in %.1f s\n",
               o.out.c_str(), static_cast<long long>(r.kept), static_cast<long long>(r.written),
               static_cast<long long>(r.new_tokens), r.seconds);
  if (o.json)
    std::printf("%s\n", nlohmann::json{{"out", o.out}, {"kept", r.kept}, {"written", r.written},
                                       {"new_tokens", r.new_tokens}, {"seconds", r.seconds}}.dump().c_str());
  return 0;
}

const cli::Registration registration{
    "teacher-data",
    "Generate BitDistiller teacher data: the FP model continues prompts cut from calibration text (JSONL, resumable)",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon, "the full-precision teacher model");
      app.add_option("--prompts", o->prompts,
                     "prompt source FILE or FILE:WEIGHT (.txt: one paragraph per line; .jsonl: {\"text\"} documents), "
                     "repeatable; weights give each source's share of the samples. Use calibration text, never the "
                     "evaluation text")
          ->required();
      app.add_option("--samples", o->data.samples, "number of prompts (and continuations)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 24));
      app.add_option("--max-new-tokens", o->data.max_new_tokens, "tokens generated per prompt at most (EOS stops early)")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--temperature", o->data.temperature, "sampling temperature (BitDistiller: 0.7)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 100.0));
      app.add_option("--top-p", o->data.top_p, "nucleus sampling mass (1: the full distribution)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 1.0));
      app.add_option("--seed", o->data.seed, "seed of the prompt choice and of every sample's sampler")->capture_default_str();
      app.add_option("--prompt-chars", o->data.prompt_chars, "characters of each paragraph used as the prompt")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--min-paragraph-chars", o->data.min_paragraph_chars, "only paragraphs at least this long give prompts")
          ->capture_default_str()
          ->check(CLI::Range(1, 1 << 30));
      app.add_option("--eval-text", o->eval_text, "evaluation text: warn if prompts occur in it");
      app.add_flag("--chat", o->data.chat,
                   "each prompt is a user turn of the model's chat template (ChatML) and the teacher answers as the "
                   "assistant, stopped at the end-of-turn token: distillation data for a chat model");
      app.add_option("--out", o->out, "output JSONL; an existing file of the same run is continued")->required();
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_teacher_data
