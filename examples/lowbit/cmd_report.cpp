// `lowbit report`: merges result JSON files written by `lowbit perplexity/eval --out-json` (or by the
// quantization commands) into one markdown table and an SVG plot of perplexity vs bits per weight.
#include <cstdio>
#include <string>
#include <vector>

#include <lowbit/eval/report.hpp>

#include "cli.hpp"

namespace lowbit_cmd_report {

using namespace lowbit;

struct Options {
  std::vector<std::string> inputs;
  std::string out_md, out_svg, title = "Perplexity vs bits per weight";
};

int run(const Options& o) {
  std::vector<eval::ReportRow> rows;
  for (const auto& f : o.inputs)
    for (auto& r : eval::report_rows(eval::read_json_file(f), f)) rows.push_back(std::move(r));
  const auto md = eval::report_markdown(rows);
  std::fputs(md.c_str(), stdout);
  if (!o.out_md.empty()) eval::write_text_file(o.out_md, md);
  if (!o.out_svg.empty()) {
    eval::write_text_file(o.out_svg, eval::report_svg(rows, o.title));
    std::fprintf(stderr, "wrote %s\n", o.out_svg.c_str());
  }
  return 0;
}

const cli::Registration registration{
    "report", "Merge result JSON files into a markdown table and an SVG plot", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("inputs", o->inputs, "result JSON files")->required()->check(CLI::ExistingFile);
      app.add_option("--out-md", o->out_md, "write the markdown table here");
      app.add_option("--out-svg", o->out_svg, "write the perplexity vs bits/weight plot here");
      app.add_option("--title", o->title, "plot title");
      return [o] { return run(*o); };
    }};

}  // namespace lowbit_cmd_report
