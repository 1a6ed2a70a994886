// `lowbit eval`: zero-shot accuracies (lm-evaluation-harness semantics, eval/zeroshot.hpp) of a model
// on PIQA, ARC-Easy, WinoGrande, HellaSwag and LAMBADA from ../shared/data/tasks. Prints a table with
// standard errors; --json puts the result object on the last line of stdout, --out-json/--out-md
// write it for `lowbit report`.
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <lowbit/core/parallel.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/report.hpp>
#include <lowbit/eval/zeroshot.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "cli.hpp"

namespace lowbit_cmd_eval {

using namespace lowbit;

struct Options : cli::CommonOptions {
  std::string tasks = "piqa,arc_easy,winogrande,hellaswag,lambada", data_dir, out_json, out_md, method;
  int limit = 0, max_length = 2048, batch = 64;
};

std::string default_data_dir() {
#ifdef LOWBIT_SHARED_DATA_DEFAULT
  return std::string(LOWBIT_SHARED_DATA_DEFAULT) + "/tasks";
#else
  return "../shared/data/tasks";
#endif
}

int run(const Options& o) {
  o.apply();
  auto loaded = eval::load_any_model(o.model);
  auto tok = eval::load_any_tokenizer(o.model, o.tokenizer);
  const std::string data_dir = o.data_dir.empty() ? default_data_dir() : o.data_dir;
  eval::ZeroShotOptions opt;
  opt.limit = o.limit;
  opt.max_length = o.max_length;
  opt.max_batch = o.batch;
  opt.quiet = o.quiet;
  nlohmann::json out = {{"kind", "zeroshot"}, {"model", o.model}, {"tokenizer", tok->describe()},
                        {"limit", o.limit}, {"threads", max_threads()}, {"tasks", nlohmann::json::array()}};
  if (!o.method.empty()) out["method"] = o.method;
  out["bits_per_weight"] = loaded.bits_per_weight;
  std::ostringstream md;
  md << "| task | n | acc | acc_norm | other | time |\n|---|---:|---:|---:|---|---:|\n";
  std::stringstream list(o.tasks);
  for (std::string name; std::getline(list, name, ',');) {
    if (name.empty()) continue;
    const auto task = eval::read_task(name, data_dir);
    const auto r = eval::evaluate_task(loaded.lm, *tok, task, opt);
    out["tasks"].push_back(r.to_json());
    char line[256];
    if (r.single_choice)
      std::snprintf(line, sizeof line, "| %s | %d | %.4f ± %.4f | | ppl %.3f | %.0f s |\n", r.task.c_str(), r.n, r.acc,
                    r.acc_stderr, r.ppl, r.seconds);
    else
      std::snprintf(line, sizeof line, "| %s | %d | %.4f ± %.4f | %.4f ± %.4f | | %.0f s |\n", r.task.c_str(), r.n, r.acc,
                    r.acc_stderr, r.acc_norm, r.acc_norm_stderr, r.seconds);
    md << line;
    std::fputs(line, stderr);
  }
  std::printf("model %s, %s%s\n%s", o.model.c_str(), tok->describe().c_str(),
              o.limit > 0 ? (", first " + std::to_string(o.limit) + " items per task").c_str() : "", md.str().c_str());
  if (!o.out_json.empty()) eval::write_json_file(o.out_json, out);
  if (!o.out_md.empty()) eval::write_text_file(o.out_md, md.str());
  if (o.json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

const cli::Registration registration{
    "eval", "Zero-shot accuracy on PIQA, ARC-Easy, WinoGrande, HellaSwag, LAMBADA (lm-eval semantics)", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      cli::add_common_options(app, *o, cli::kAllCommon);
      app.add_option("--tasks", o->tasks, "comma-separated: piqa,arc_easy,arc_challenge,winogrande,hellaswag,lambada");
      app.add_option("--limit", o->limit, "first N items of each task (0 = all)");
      app.add_option("--data-dir", o->data_dir, "folder with the task files (default ../shared/data/tasks)");
      app.add_option("--max-length", o->max_length, "context limit per request in tokens");
      app.add_option("--batch", o->batch, "maximum requests per forward")->check(CLI::Range(1, 1 << 20));
      app.add_option("--method", o->method, "method label stored in the JSON");
      app.add_option("--out-json", o->out_json, "write the result JSON here");
      app.add_option("--out-md", o->out_md, "write the markdown table here");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_eval
