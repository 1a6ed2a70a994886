// KL divergence against a direct per-position computation with two analytic bigram models (zero for a
// model against itself), and the report: rows from result JSON, markdown table, SVG plot structure.
#include <doctest/doctest.h>

#include <cmath>

#include <lowbit/core/rng.hpp>
#include <lowbit/eval/kld.hpp>
#include <lowbit/eval/report.hpp>

using namespace lowbit;

namespace {

eval::LanguageModel bigram_model(const std::vector<double>& logp, int V, std::string name) {
  eval::LanguageModel lm;
  lm.name = std::move(name);
  lm.vocab_size = V;
  lm.forward = [&logp, V](const std::int32_t* tokens, int B, int T, float* logits) {
    for (int i = 0; i < B * T; ++i)
      for (int v = 0; v < V; ++v) logits[i * V + v] = static_cast<float>(logp[static_cast<std::size_t>(tokens[i] * V + v)]);
  };
  return lm;
}

std::vector<double> random_bigram(int V, Rng& rng, double temperature) {
  std::vector<double> logp(static_cast<std::size_t>(V * V));
  for (int a = 0; a < V; ++a) {
    double z = 0;
    for (int b = 0; b < V; ++b) z += std::exp(logp[static_cast<std::size_t>(a * V + b)] = temperature * rng.normal());
    for (int b = 0; b < V; ++b) logp[static_cast<std::size_t>(a * V + b)] -= std::log(z);
  }
  return logp;
}

}  // namespace

TEST_CASE("KL divergence and top-1 agreement equal a direct computation") {
  const int V = 9;
  Rng rng(17);
  const auto ref = random_bigram(V, rng, 1.5);
  auto noisy = ref;
  for (auto& x : noisy) x += 0.3 * rng.normal();  // a "quantized" model: perturbed logits
  const auto lm_ref = bigram_model(ref, V, "ref"), lm_q = bigram_model(noisy, V, "q");
  std::vector<std::int32_t> tokens(600);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.below(V));
  auto p = eval::perplexity_preset("gptq", 50);
  eval::PerplexityOptions opt;
  opt.quiet = true;
  const auto r = eval::kl_divergence(lm_q, lm_ref, tokens, p, -1, opt);
  // Direct: per position j in each window, KL of row tokens[j] (bigram rows depend only on the input).
  double kl_sum = 0, agree = 0;
  int n = 0;
  for (int s = 0; s + 50 <= 600; s += 50)
    for (int j = 0; j < 49; ++j, ++n) {
      const int a = tokens[static_cast<std::size_t>(s + j)];
      double zq = 0;
      for (int v = 0; v < V; ++v) zq += std::exp(noisy[static_cast<std::size_t>(a * V + v)]);
      double kl = 0;
      int am = 0, ar = 0;
      for (int v = 0; v < V; ++v) {
        const double pr = std::exp(ref[static_cast<std::size_t>(a * V + v)]);
        kl += pr * (ref[static_cast<std::size_t>(a * V + v)] - (noisy[static_cast<std::size_t>(a * V + v)] - std::log(zq)));
        if (ref[static_cast<std::size_t>(a * V + v)] > ref[static_cast<std::size_t>(a * V + ar)]) ar = v;
        if (noisy[static_cast<std::size_t>(a * V + v)] > noisy[static_cast<std::size_t>(a * V + am)]) am = v;
      }
      kl_sum += kl;
      agree += am == ar;
    }
  CHECK(r.positions == n);
  CHECK(r.mean_kld == doctest::Approx(kl_sum / n).epsilon(1e-5));
  CHECK(r.top1_agreement == doctest::Approx(agree / n));
  CHECK(r.mean_kld > 0.01);
  CHECK(r.median_kld <= r.p90_kld);
  CHECK(r.p90_kld <= r.p99_kld);
  CHECK(r.p99_kld <= r.max_kld);
  const auto self = eval::kl_divergence(lm_ref, lm_ref, tokens, p, -1, opt);
  CHECK(self.mean_kld == doctest::Approx(0.0).epsilon(1e-9));
  CHECK(self.top1_agreement == 1.0);
  CHECK(self.nll_model == doctest::Approx(self.nll_reference));
  auto other = bigram_model(ref, V + 1, "other");
  CHECK_THROWS_AS(eval::kl_divergence(other, lm_ref, tokens, p, -1, opt), lowbit::Error);
}

TEST_CASE("report: rows, markdown and SVG") {
  std::vector<eval::ReportRow> rows;
  for (auto [method, bits, ppl] : {std::tuple{"rtn", 4.25, 18.0}, std::tuple{"rtn", 3.25, 35.0}, std::tuple{"gptq", 4.25, 17.0},
                                   std::tuple{"gptq", 3.25, 24.0}, std::tuple{"fp32", 32.0, 16.5}}) {
    nlohmann::json j = {{"kind", "perplexity"}, {"model", "m.gguf"}, {"method", method}, {"bits_per_weight", bits},
                        {"ppl", ppl}, {"nll", std::log(ppl)}, {"nll_stderr", 0.01},
                        {"protocol", {{"description", "gptq: ctx 2048"}}}, {"text", "/x/wikitext2_test.txt"}};
    for (auto& r : eval::report_rows(j, "r.json")) rows.push_back(r);
  }
  nlohmann::json z = {{"kind", "zeroshot"}, {"model", "m.gguf"},
                      {"tasks", {{{"task", "piqa"}, {"acc", 0.6}, {"acc_stderr", 0.01}, {"n", 100}}}}};
  for (auto& r : eval::report_rows(z, "z.json")) rows.push_back(r);
  REQUIRE(rows.size() == 6);
  CHECK(rows[0].stderr_value == doctest::Approx(0.18));
  const auto md = eval::report_markdown(rows);
  CHECK(md.find("| gptq | 3.250 | ppl | 24.0000 |") != std::string::npos);
  CHECK(md.find("piqa acc") != std::string::npos);
  const auto svg = eval::report_svg(rows);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(std::count(svg.begin(), svg.end(), '\n') > 10);
  auto count = [&](const std::string& s) {
    std::size_t c = 0;
    for (auto at = svg.find(s); at != std::string::npos; at = svg.find(s, at + 1)) ++c;
    return c;
  };
  CHECK(count("<circle") == 5);    // one marker per perplexity row with bits/weight
  CHECK(count("<polyline") == 2);  // rtn and gptq have two points each; fp32 a single marker
  CHECK_THROWS_AS(eval::report_rows(nlohmann::json{{"kind", "other"}}, "bad.json"), lowbit::Error);
}
