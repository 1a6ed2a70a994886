// KL divergence of a model's next-token distribution from a reference model's on the same tokens,
// the measure llama.cpp uses to compare quantizations: it sees every probability, not only the
// target token's, so it separates quantizers that perplexity ranks equally. Reports the mean KL
// (nats) with its standard error, percentiles, top-1 agreement, and both models' perplexities on the
// same scored positions. Windows and scored positions follow a PerplexityProtocol.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/progress.hpp"
#include "language_model.hpp"
#include "log_softmax.hpp"
#include "perplexity.hpp"

namespace lowbit::eval {

struct KldResult {
  PerplexityProtocol protocol;
  std::int64_t positions = 0;
  double mean_kld = 0, kld_stderr = 0;
  double median_kld = 0, p90_kld = 0, p99_kld = 0, max_kld = 0;
  double top1_agreement = 0, top1_stderr = 0;
  double nll_model = 0, nll_reference = 0;  // on the scored targets
  double seconds = 0;
  std::string model, reference, text;

  nlohmann::json to_json() const {
    return {{"kind", "kld"}, {"model", model}, {"reference", reference}, {"text", text},
            {"protocol", protocol.to_json()}, {"positions", positions}, {"mean_kld", mean_kld},
            {"kld_stderr", kld_stderr}, {"median_kld", median_kld}, {"p90_kld", p90_kld}, {"p99_kld", p99_kld},
            {"max_kld", max_kld}, {"top1_agreement", top1_agreement}, {"top1_stderr", top1_stderr},
            {"ppl_model", std::exp(nll_model)}, {"ppl_reference", std::exp(nll_reference)}, {"seconds", seconds}};
  }
};

// KL(P_ref || P_model) = Σ_v p_ref(v) (log p_ref(v) - log p_model(v)) for one position.
inline double kl_divergence_row(const float* reference_logits, const float* model_logits, int V) {
  const double lse_r = log_sum_exp(reference_logits, V), lse_m = log_sum_exp(model_logits, V);
  double kl = 0;
  for (int v = 0; v < V; ++v) {
    const double lr = reference_logits[v] - lse_r;
    kl += std::exp(lr) * (lr - (model_logits[v] - lse_m));
  }
  return std::max(0.0, kl);  // rounding can leave -1e-12 for identical rows
}

inline double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(std::min<double>(static_cast<double>(v.size()) - 1, std::floor(q * static_cast<double>(v.size() - 1) + 0.5)));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

inline KldResult kl_divergence(const LanguageModel& model, const LanguageModel& reference, const std::vector<std::int32_t>& tokens,
                               const PerplexityProtocol& p, std::int32_t bos_id, const PerplexityOptions& opt = {}) {
  LOWBIT_CHECK(model.vocab_size == reference.vocab_size, "kld: model '", model.name, "' has a vocabulary of ", model.vocab_size,
               " but reference '", reference.name, "' has ", reference.vocab_size);
  const int V = model.vocab_size, T = p.ctx;
  for (auto t : tokens) LOWBIT_CHECK(t >= 0 && t < V, "kld: token id ", t, " outside the vocabulary of ", V);
  const auto windows = plan_windows(static_cast<std::int64_t>(tokens.size()), p);
  LOWBIT_CHECK(!windows.empty(), "kld: ", tokens.size(), " tokens are too few for one window of ", T);
  std::vector<std::int32_t> input(static_cast<std::size_t>(T));
  std::vector<float> lm(static_cast<std::size_t>(T) * V), lr(static_cast<std::size_t>(T) * V);
  std::vector<double> kls, top1, nll_m, nll_r;
  const auto start = std::chrono::steady_clock::now();
  Progress progress("kld", static_cast<index_t>(windows.size()), "win", opt.quiet);
  for (const auto& w : windows) {
    std::copy(tokens.begin() + w.start, tokens.begin() + w.start + T, input.begin());
    if (p.bos == BosPolicy::PerWindow) input[0] = bos_id;
    model.forward(input.data(), 1, T, lm.data());
    reference.forward(input.data(), 1, T, lr.data());
    const std::size_t n = static_cast<std::size_t>(w.last - w.first), base = kls.size();
    kls.resize(base + n), top1.resize(base + n), nll_m.resize(base + n), nll_r.resize(base + n);
    parallel_for(w.first, w.last, [&](index_t lo, index_t hi) {
      for (index_t j = lo; j < hi; ++j) {
        const float* rm = lm.data() + static_cast<std::size_t>(j) * V;
        const float* rr = lr.data() + static_cast<std::size_t>(j) * V;
        const auto target = tokens[static_cast<std::size_t>(w.start + j + 1)];
        const std::size_t k = base + static_cast<std::size_t>(j - w.first);
        kls[k] = kl_divergence_row(rr, rm, V);
        top1[k] = argmax(rm, V) == argmax(rr, V) ? 1.0 : 0.0;
        nll_m[k] = -token_log_prob(rm, V, target);
        nll_r[k] = -token_log_prob(rr, V, target);
      }
    }, 16);
    progress.update(1);
  }
  progress.finish();
  KldResult r;
  r.protocol = p;
  r.positions = static_cast<std::int64_t>(kls.size());
  auto mean_se = [](const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m += x;
    m /= static_cast<double>(v.size());
    double ss = 0;
    for (double x : v) ss += (x - m) * (x - m);
    const double n = static_cast<double>(v.size());
    return std::pair<double, double>{m, n > 1 ? std::sqrt(ss / (n - 1) / n) : 0.0};
  };
  std::tie(r.mean_kld, r.kld_stderr) = mean_se(kls);
  std::tie(r.top1_agreement, r.top1_stderr) = mean_se(top1);
  r.nll_model = mean_se(nll_m).first;
  r.nll_reference = mean_se(nll_r).first;
  r.median_kld = percentile(kls, 0.5);
  r.p90_kld = percentile(kls, 0.9);
  r.p99_kld = percentile(kls, 0.99);
  r.max_kld = *std::max_element(kls.begin(), kls.end());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.model = model.name;
  r.reference = reference.name;
  return r;
}

}  // namespace lowbit::eval
