// Results as files people read: every evaluation writes its JSON (and a markdown table), and
// `lowbit report` merges many result files into one markdown table and an SVG plot of perplexity
// against bits per weight, one line per method, log-scale perplexity axis. The SVG is written by hand
// (no plotting dependency) so docs/results.md can show pictures straight from the JSON files.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"

namespace lowbit::eval {

// Writes `text` to `path` atomically (core/atomic_file.hpp: never a half-written report).
inline void write_text_file(const std::string& path, const std::string& text) { write_file_atomically(path, text); }

inline void write_json_file(const std::string& path, const nlohmann::json& j) { write_text_file(path, j.dump(2) + "\n"); }

inline nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path);
  LOWBIT_CHECK(in.good(), "result file ", path, ": cannot open");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail("result file ", path, ": not valid JSON (", e.what(), ")");
  }
}

// One row of the merged report.
struct ReportRow {
  std::string file, method, model, metric_name, protocol;
  double bits_per_weight = 0;  // 0: unknown
  double value = 0;            // perplexity, or accuracy for zero-shot results
  double stderr_value = 0;
};

// Rows from a result JSON: a perplexity result gives one row; a zero-shot result one row per task.
// `method` defaults to the model file name, bits/weight to the "bits_per_weight" field (absent: 0).
inline std::vector<ReportRow> report_rows(const nlohmann::json& j, const std::string& file) {
  std::vector<ReportRow> rows;
  ReportRow base;
  base.file = file;
  base.model = j.value("model", std::string());
  base.method = j.value("method", std::filesystem::path(base.model).filename().string());
  base.bits_per_weight = j.value("bits_per_weight", 0.0);
  const std::string kind = j.value("kind", std::string());
  if (kind == "perplexity") {
    ReportRow r = base;
    r.metric_name = "ppl";
    r.value = j.at("ppl").get<double>();
    const double nll = j.at("nll").get<double>();
    r.stderr_value = r.value * j.value("nll_stderr", 0.0);  // delta method: d exp(x) = exp(x) dx
    (void)nll;
    if (j.contains("protocol")) r.protocol = j["protocol"].value("description", std::string());
    if (j.contains("text")) r.protocol = std::filesystem::path(j["text"].get<std::string>()).filename().string() + "; " + r.protocol;
    rows.push_back(r);
  } else if (kind == "zeroshot") {
    for (const auto& t : j.at("tasks")) {
      ReportRow r = base;
      r.metric_name = t.at("task").get<std::string>() + " acc";
      r.value = t.at("acc").get<double>();
      r.stderr_value = t.value("acc_stderr", 0.0);
      r.protocol = "n=" + std::to_string(t.value("n", 0));
      rows.push_back(r);
    }
  } else {
    fail("result file ", file, ": unknown result kind '", kind, "' (expected perplexity or zeroshot)");
  }
  return rows;
}

inline std::string report_markdown(const std::vector<ReportRow>& rows) {
  std::ostringstream md;
  md << "| method | bits/weight | metric | value | ± | protocol / notes | file |\n";
  md << "|---|---:|---|---:|---:|---|---|\n";
  char buf[64];
  for (const auto& r : rows) {
    md << "| " << r.method << " | ";
    if (r.bits_per_weight > 0) {
      std::snprintf(buf, sizeof buf, "%.3f", r.bits_per_weight);
      md << buf;
    } else {
      md << "?";
    }
    std::snprintf(buf, sizeof buf, " | %s | %.4f | %.4f | ", r.metric_name.c_str(), r.value, r.stderr_value);
    md << buf << r.protocol << " | " << std::filesystem::path(r.file).filename().string() << " |\n";
  }
  return md.str();
}

inline std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// Perplexity (log scale) vs bits/weight, one polyline per method, points sorted by bits. Rows other
// than perplexity or without bits/weight are left out.
inline std::string report_svg(const std::vector<ReportRow>& rows, const std::string& title = "Perplexity vs bits per weight") {
  std::map<std::string, std::vector<std::pair<double, double>>> series;
  for (const auto& r : rows)
    if (r.metric_name == "ppl" && r.bits_per_weight > 0 && r.value > 0) series[r.method].emplace_back(r.bits_per_weight, r.value);
  const double W = 720, H = 460, left = 70, right = 190, top = 40, bottom = 60;
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << " " << H
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">" << xml_escape(title) << "</text>\n";
  if (series.empty()) {
    svg << "<text x=\"" << W / 2 << "\" y=\"" << H / 2 << "\" text-anchor=\"middle\">no perplexity rows with bits/weight</text>\n</svg>\n";
    return svg.str();
  }
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (auto& [m, pts] : series) {
    std::sort(pts.begin(), pts.end());
    for (auto [x, y] : pts) {
      xmin = std::min(xmin, x), xmax = std::max(xmax, x);
      ymin = std::min(ymin, y), ymax = std::max(ymax, y);
    }
  }
  xmin = std::floor(xmin) - 0.5, xmax = std::ceil(xmax) + 0.5;
  double ly0 = std::log10(ymin), ly1 = std::log10(ymax);
  if (ly1 - ly0 < 0.1) ly0 -= 0.05, ly1 += 0.05;
  const double pad = 0.05 * (ly1 - ly0);
  ly0 -= pad, ly1 += pad;
  const double pw = W - left - right, ph = H - top - bottom;
  auto X = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto Y = [&](double y) { return top + (ly1 - std::log10(y)) / (ly1 - ly0) * ph; };
  svg << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"none\" stroke=\"#333\"/>\n";
  // x ticks at integers
  for (double x = std::ceil(xmin); x <= xmax; x += 1) {
    svg << "<line x1=\"" << X(x) << "\" y1=\"" << top + ph << "\" x2=\"" << X(x) << "\" y2=\"" << top
        << "\" stroke=\"#ddd\"/>\n<text x=\"" << X(x) << "\" y=\"" << top + ph + 16 << "\" text-anchor=\"middle\">" << x
        << "</text>\n";
  }
  // y ticks at 1, 2, 5 x 10^k inside the range (log scale)
  for (int k = static_cast<int>(std::floor(ly0)) - 1; k <= static_cast<int>(std::ceil(ly1)); ++k)
    for (double m : {1.0, 2.0, 5.0}) {
      const double y = m * std::pow(10.0, k);
      if (std::log10(y) < ly0 || std::log10(y) > ly1) continue;
      char label[32];
      std::snprintf(label, sizeof label, "%g", y);
      svg << "<line x1=\"" << left << "\" y1=\"" << Y(y) << "\" x2=\"" << left + pw << "\" y2=\"" << Y(y)
          << "\" stroke=\"#ddd\"/>\n<text x=\"" << left - 6 << "\" y=\"" << Y(y) + 4 << "\" text-anchor=\"end\">" << label
          << "</text>\n";
    }
  svg << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 18 << "\" text-anchor=\"middle\">bits per weight</text>\n";
  svg << "<text transform=\"translate(18," << top + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">perplexity (log scale)</text>\n";
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
  int i = 0;
  for (const auto& [method, pts] : series) {
    const char* color = colors[i % 10];
    std::ostringstream path;
    for (auto [x, y] : pts) path << (path.tellp() > 0 ? " " : "") << X(x) << "," << Y(y);
    if (pts.size() > 1)
      svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"" << path.str() << "\"/>\n";
    for (auto [x, y] : pts) {
      char tip[64];
      std::snprintf(tip, sizeof tip, "%.3f bits, ppl %.3f", x, y);
      svg << "<circle cx=\"" << X(x) << "\" cy=\"" << Y(y) << "\" r=\"4\" fill=\"" << color << "\"><title>" << xml_escape(method)
          << ": " << tip << "</title></circle>\n";
    }
    const double ly = top + 10 + 18 * i;
    svg << "<line x1=\"" << left + pw + 12 << "\" y1=\"" << ly << "\" x2=\"" << left + pw + 32 << "\" y2=\"" << ly << "\" stroke=\""
        << color << "\" stroke-width=\"3\"/>\n<text x=\"" << left + pw + 38 << "\" y=\"" << ly + 4 << "\">" << xml_escape(method)
        << "</text>\n";
    ++i;
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace lowbit::eval
