// Zero-shot multiple choice by log-likelihood, with lm-evaluation-harness semantics: each choice's
// continuation is scored given its context (context and continuation encoded jointly, the
// continuation's tokens being the tail beyond the context's own tokens; trailing context spaces move
// into the continuation), acc = argmax of the summed log-probability, acc_norm = argmax of it divided
// by the choice's UTF-8 byte length, LAMBADA-style items also get greedy-match accuracy and perplexity.
// Standard errors are sample std / sqrt(n). Requests run longest-first in padded batches.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/progress.hpp"
#include "../io/tokenizer_base.hpp"
#include "language_model.hpp"
#include "log_softmax.hpp"
#include "tasks.hpp"

namespace lowbit::eval {

// A request as token ids: the model reads `input` and the last `continuation.size()` positions
// predict the continuation tokens.
struct EncodedRequest {
  std::vector<std::int32_t> input;
  std::vector<std::int32_t> continuation;
};

inline EncodedRequest encode_request(const io::Tokenizer& tok, const ChoiceRequest& r, int max_length) {
  std::string context = r.context, continuation = r.continuation;
  // lm-eval: trailing whitespace of the context belongs to the continuation.
  const auto kept = context.find_last_not_of(" \t\n\r\v\f");
  const std::size_t n_spaces = kept == std::string::npos ? context.size() : context.size() - kept - 1;
  if (n_spaces > 0) {
    continuation = context.substr(context.size() - n_spaces) + continuation;
    context.resize(context.size() - n_spaces);
  }
  auto whole = tok.encode(context + continuation, false);
  auto context_ids = context.empty() ? std::vector<std::int32_t>{} : tok.encode(context, false);
  EncodedRequest e;
  if (context_ids.size() < whole.size() && std::equal(context_ids.begin(), context_ids.end(), whole.begin())) {
    e.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(context_ids.size()), whole.end());
  } else {
    // The joint encoding merged across the boundary or differs in the context part: keep lm-eval's
    // length-based split when it leaves a continuation, otherwise encode the continuation alone.
    if (context_ids.size() < whole.size())
      e.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(context_ids.size()), whole.end());
    else
      e.continuation = tok.encode(continuation, false);
  }
  LOWBIT_CHECK(!e.continuation.empty(), "zero-shot: continuation '", continuation, "' encodes to no tokens");
  if (context_ids.empty()) {  // lm-eval prefixes an empty context with the end-of-text token
    const auto prefix = tok.bos_id() >= 0 ? tok.bos_id() : tok.eos_id();
    LOWBIT_CHECK(prefix >= 0, "zero-shot: empty context and the tokenizer has neither BOS nor EOS");
    context_ids.push_back(prefix);
  }
  std::vector<std::int32_t> full = context_ids;
  full.insert(full.end(), e.continuation.begin(), e.continuation.end());
  if (static_cast<int>(full.size()) > max_length + 1) full.erase(full.begin(), full.end() - (max_length + 1));
  LOWBIT_CHECK(e.continuation.size() < full.size(), "zero-shot: continuation of ", e.continuation.size(),
               " tokens does not fit the context limit of ", max_length);
  full.pop_back();
  e.input = std::move(full);
  return e;
}

struct RequestScore {
  double log_prob = 0;  // sum over continuation tokens
  bool greedy = false;  // every continuation token is the argmax
  int tokens = 0;
};

struct ZeroShotOptions {
  int limit = 0;                       // first N items of each task (0 = all)
  int max_length = 2048;               // model context for a request
  int max_batch = 64;                  // requests per forward
  double logits_budget_bytes = 5e8;    // caps batch * length * vocab * 4
  bool quiet = false;
};

// Scores requests in padded batches, longest first.
inline std::vector<RequestScore> score_requests(const LanguageModel& lm, const std::vector<EncodedRequest>& reqs,
                                                const ZeroShotOptions& opt, const std::string& label) {
  std::vector<std::size_t> order(reqs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return reqs[a].input.size() > reqs[b].input.size(); });
  std::vector<RequestScore> scores(reqs.size());
  const int V = lm.vocab_size;
  Progress progress(label, static_cast<index_t>(reqs.size()), "req", opt.quiet);
  std::vector<std::int32_t> tokens;
  std::vector<float> logits;
  for (std::size_t i = 0; i < order.size();) {
    const int T = static_cast<int>(reqs[order[i]].input.size());
    const int fit = static_cast<int>(std::max(1.0, opt.logits_budget_bytes / (4.0 * V * T)));
    const int B = static_cast<int>(std::min<std::size_t>(std::min(fit, opt.max_batch), order.size() - i));
    tokens.assign(static_cast<std::size_t>(B) * T, 0);  // right padding never affects earlier positions
    for (int b = 0; b < B; ++b) {
      const auto& in = reqs[order[i + static_cast<std::size_t>(b)]].input;
      for (auto t : in)
        LOWBIT_CHECK(t >= 0 && t < V, "zero-shot: token id ", t, " outside the model's vocabulary of ", V);
      std::copy(in.begin(), in.end(), tokens.begin() + static_cast<std::ptrdiff_t>(b) * T);
    }
    logits.resize(static_cast<std::size_t>(B) * T * V);
    lm.forward(tokens.data(), B, T, logits.data());
    parallel_for(0, B, [&](index_t lo, index_t hi) {
      for (index_t b = lo; b < hi; ++b) {
        const auto& r = reqs[order[i + static_cast<std::size_t>(b)]];
        const int len = static_cast<int>(r.input.size()), n = static_cast<int>(r.continuation.size());
        RequestScore s;
        s.greedy = true;
        s.tokens = n;
        for (int k = 0; k < n; ++k) {
          const float* row = logits.data() + (static_cast<std::size_t>(b) * T + static_cast<std::size_t>(len - n + k)) * V;
          const auto target = r.continuation[static_cast<std::size_t>(k)];
          s.log_prob += token_log_prob(row, V, target);
          s.greedy = s.greedy && argmax(row, V) == target;
        }
        scores[order[i + static_cast<std::size_t>(b)]] = s;
      }
    });
    i += static_cast<std::size_t>(B);
    progress.update(B);
  }
  progress.finish();
  return scores;
}

struct TaskResult {
  std::string task, file;
  int n = 0;
  double acc = 0, acc_stderr = 0, acc_norm = 0, acc_norm_stderr = 0;
  double ppl = 0;  // LAMBADA: exp(-mean log-likelihood of the last word), as lm-eval reports it
  bool single_choice = false;  // LAMBADA-style: acc is the greedy match of the continuation
  std::int64_t requests = 0, tokens = 0;
  double seconds = 0;

  nlohmann::json to_json() const {
    nlohmann::json j = {{"task", task}, {"file", file}, {"n", n}, {"acc", acc}, {"acc_stderr", acc_stderr},
                        {"requests", requests}, {"tokens", tokens}, {"seconds", seconds}};
    if (single_choice) {
      j["ppl"] = ppl;
    } else {
      j["acc_norm"] = acc_norm;
      j["acc_norm_stderr"] = acc_norm_stderr;
    }
    return j;
  }
};

// Mean and its standard error (sample std with n-1, over sqrt(n)) of 0/1 outcomes.
inline std::pair<double, double> mean_and_stderr(const std::vector<double>& v) {
  if (v.empty()) return {0, 0};
  const double n = static_cast<double>(v.size());
  const double mean = std::accumulate(v.begin(), v.end(), 0.0) / n;
  if (v.size() < 2) return {mean, 0};
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / (n - 1)) / std::sqrt(n)};
}

inline TaskResult evaluate_task(const LanguageModel& lm, const io::Tokenizer& tok, const Task& task, const ZeroShotOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  const std::size_t n_items =
      opt.limit > 0 ? std::min<std::size_t>(task.items.size(), static_cast<std::size_t>(opt.limit)) : task.items.size();
  LOWBIT_CHECK(n_items > 0, "task ", task.name, " (", task.file, "): no items");
  std::vector<EncodedRequest> reqs;
  std::vector<std::size_t> first(n_items + 1);
  for (std::size_t i = 0; i < n_items; ++i) {
    first[i] = reqs.size();
    for (const auto& c : task.items[i].choices) reqs.push_back(encode_request(tok, c, opt.max_length));
  }
  first[n_items] = reqs.size();
  const auto scores = score_requests(lm, reqs, opt, task.name);
  TaskResult r;
  r.task = task.name;
  r.file = task.file;
  r.n = static_cast<int>(n_items);
  r.requests = static_cast<std::int64_t>(reqs.size());
  for (const auto& e : reqs) r.tokens += static_cast<std::int64_t>(e.input.size());
  std::vector<double> acc, acc_norm, ll;
  for (std::size_t i = 0; i < n_items; ++i) {
    const auto& item = task.items[i];
    if (item.choices.size() == 1) {
      r.single_choice = true;
      acc.push_back(scores[first[i]].greedy ? 1.0 : 0.0);
      ll.push_back(scores[first[i]].log_prob);
      continue;
    }
    std::size_t best = 0, best_norm = 0;
    for (std::size_t c = 0; c < item.choices.size(); ++c) {
      const double lp = scores[first[i] + c].log_prob;
      const double norm = lp / static_cast<double>(std::max<std::size_t>(1, item.choices[c].norm_bytes));
      if (lp > scores[first[i] + best].log_prob) best = c;
      if (norm > scores[first[i] + best_norm].log_prob /
                     static_cast<double>(std::max<std::size_t>(1, item.choices[best_norm].norm_bytes)))
        best_norm = c;
    }
    acc.push_back(static_cast<int>(best) == item.gold ? 1.0 : 0.0);
    acc_norm.push_back(static_cast<int>(best_norm) == item.gold ? 1.0 : 0.0);
  }
  std::tie(r.acc, r.acc_stderr) = mean_and_stderr(acc);
  std::tie(r.acc_norm, r.acc_norm_stderr) = mean_and_stderr(acc_norm);
  if (!ll.empty()) r.ppl = std::exp(-std::accumulate(ll.begin(), ll.end(), 0.0) / static_cast<double>(ll.size()));
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace lowbit::eval
