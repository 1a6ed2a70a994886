// Perplexity with an explicit protocol. Published numbers differ by 0.3-0.4 PPL from context length
// alone, so the protocol is a struct printed with every result: how documents are joined and
// tokenized, where BOS goes, the context and stride of the windows, and which positions are scored.
// Presets: "gptq" (GPTQ/AQLM/BitDistiller papers: "\n\n"-join, tokenize once, non-overlapping windows
// of ctx tokens, every position but each window's first scored), "llama.cpp" (BOS replaces each
// window's first token, only the second half scored), "llama2.c" (each document stripped and encoded
// with BOS, windows of ctx inputs predicting the next ctx tokens).
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
#include "../io/tokenizer_base.hpp"
#include "language_model.hpp"
#include "log_softmax.hpp"
#include "text_input.hpp"

namespace lowbit::eval {

enum class BosPolicy {
  None,              // never insert BOS
  TokenizerDefault,  // what the tokenizer does on its own for the joined text (Llama: once at the start)
  PerDocument,       // every document encoded separately, each starting with BOS
  PerWindow,         // BOS replaces the first input token of every window (llama.cpp)
};

// Inside: a window is ctx tokens; position j predicts token j+1 inside it (ctx-1 targets, GPTQ).
// Shifted: ctx inputs predict the following ctx tokens (llama2.c's train/eval loss).
enum class WindowTargets { Inside, Shifted };

inline const char* to_string(BosPolicy b) {
  switch (b) {
    case BosPolicy::None: return "none";
    case BosPolicy::TokenizerDefault: return "tokenizer-default";
    case BosPolicy::PerDocument: return "per-document";
    case BosPolicy::PerWindow: return "per-window";
  }
  return "?";
}
inline const char* to_string(WindowTargets t) { return t == WindowTargets::Inside ? "inside" : "shifted"; }

struct PerplexityProtocol {
  std::string name = "custom";
  int ctx = 2048;                  // tokens per window (inputs)
  int stride = 0;                  // window step; 0 = ctx (non-overlapping); < ctx = sliding
  WindowTargets targets = WindowTargets::Inside;
  bool score_second_half = false;  // llama.cpp: score positions [ctx/2, ...) only
  BosPolicy bos = BosPolicy::TokenizerDefault;
  std::string join = "\n\n";       // joins jsonl documents into one text (tokenized once)
  std::string doc_sep;             // when set, split the text on it into documents
  bool per_document_encoding = false;  // encode documents separately (stripped, empty ones dropped)

  int effective_stride() const { return stride > 0 ? stride : ctx; }
  int first_scored() const { return score_second_half ? ctx / 2 : 0; }

  void validate() const {
    LOWBIT_CHECK(ctx >= 2, "perplexity protocol '", name, "': context ", ctx, " must be at least 2");
    LOWBIT_CHECK(stride >= 0 && stride <= ctx, "perplexity protocol '", name, "': stride ", stride,
                 " must be in [0, ctx = ", ctx, "] (0 = ctx)");
  }

  std::string describe() const {
    std::string s = name + ": ctx " + std::to_string(ctx) + ", stride " + std::to_string(effective_stride()) +
                    ", targets " + to_string(targets) + ", scored " + (score_second_half ? "second half" : "all") +
                    ", BOS " + to_string(bos);
    if (per_document_encoding)
      s += ", documents encoded separately" + (doc_sep.empty() ? std::string() : " (split on '" + doc_sep + "')");
    else
      s += ", documents joined with " + nlohmann::json(join).dump() + " and tokenized once";
    return s;
  }

  nlohmann::json to_json() const {
    return {{"name", name},
            {"ctx", ctx},
            {"stride", effective_stride()},
            {"targets", to_string(targets)},
            {"scored", score_second_half ? "second-half" : "all"},
            {"bos", to_string(bos)},
            {"join", join},
            {"doc_sep", doc_sep},
            {"per_document_encoding", per_document_encoding},
            {"description", describe()}};
  }
};

// Named presets; `ctx` <= 0 keeps the preset's default context.
inline PerplexityProtocol perplexity_preset(const std::string& name, int ctx = 0) {
  PerplexityProtocol p;
  p.name = name;
  if (name == "gptq" || name == "aqlm") {
    p.ctx = name == "aqlm" ? 4096 : 2048;
    p.targets = WindowTargets::Inside;
    p.bos = BosPolicy::TokenizerDefault;
    p.join = "\n\n";
  } else if (name == "llama.cpp") {
    p.ctx = 512;
    p.targets = WindowTargets::Inside;
    p.score_second_half = true;
    p.bos = BosPolicy::PerWindow;
  } else if (name == "llama2.c") {
    p.ctx = 512;
    p.targets = WindowTargets::Shifted;
    p.bos = BosPolicy::PerDocument;
    p.per_document_encoding = true;
    p.doc_sep = "<|endoftext|>";
  } else {
    fail("unknown perplexity protocol '", name, "' (known: gptq, aqlm, llama.cpp, llama2.c)");
  }
  if (ctx > 0) p.ctx = ctx;
  return p;
}

// The token stream a protocol evaluates.
inline std::vector<std::int32_t> protocol_tokens(const std::vector<std::string>& documents, const io::Tokenizer& tok,
                                                 const PerplexityProtocol& p) {
  std::vector<std::string> docs;
  for (const auto& d : documents) {
    if (p.doc_sep.empty()) {
      docs.push_back(d);
    } else {
      for (auto& part : split_on(d, p.doc_sep)) docs.push_back(std::move(part));
    }
  }
  std::vector<std::int32_t> tokens;
  if (p.per_document_encoding) {
    const bool bos = p.bos == BosPolicy::PerDocument || (p.bos == BosPolicy::TokenizerDefault && tok.adds_bos_by_default());
    for (const auto& d : docs) {
      const auto text = strip(d);
      if (text.empty()) continue;
      const auto ids = tok.encode(text, bos);
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
  } else {
    std::string text;
    for (std::size_t i = 0; i < docs.size(); ++i) {
      if (i) text += p.join;
      text += docs[i];
    }
    const bool bos = p.bos == BosPolicy::PerDocument || (p.bos == BosPolicy::TokenizerDefault && tok.adds_bos_by_default());
    tokens = tok.encode(text, bos);
  }
  return tokens;
}

// One window: inputs tokens[start, start + ctx); positions j in [first, last) are scored against
// tokens[start + j + 1].
struct Window {
  std::int64_t start = 0;
  int first = 0, last = 0;
};

inline std::vector<Window> plan_windows(std::int64_t n_tokens, const PerplexityProtocol& p) {
  p.validate();
  std::vector<Window> windows;
  const int predictions = p.targets == WindowTargets::Shifted ? p.ctx : p.ctx - 1;
  std::int64_t scored_until = -1;  // highest target index already scored (sliding windows)
  for (std::int64_t s = 0; s + predictions + 1 <= n_tokens; s += p.effective_stride()) {
    Window w{s, p.first_scored(), predictions};
    if (scored_until >= 0) w.first = std::max<int>(w.first, static_cast<int>(scored_until - s));  // target s+j+1 > scored_until
    if (w.first < w.last) windows.push_back(w);
    scored_until = s + predictions;
  }
  return windows;
}

struct PerplexityResult {
  PerplexityProtocol protocol;
  double nll = 0;         // mean negative log-likelihood (nats) per scored token
  double nll_stderr = 0;  // sample std of per-token NLL / sqrt(predictions)
  double ppl = 0;
  std::int64_t tokens = 0;       // tokens in the evaluated stream
  std::int64_t predictions = 0;  // scored positions
  std::int64_t windows = 0;
  double seconds = 0;
  double tokens_per_second = 0;  // forwarded tokens / s
  double gflops_per_second = 0;  // estimated model FLOP/s reached (0 when unknown)
  std::string model, tokenizer, text;

  nlohmann::json to_json() const {
    return {{"kind", "perplexity"},
            {"model", model},
            {"tokenizer", tokenizer},
            {"text", text},
            {"protocol", protocol.to_json()},
            {"nll", nll},
            {"nll_stderr", nll_stderr},
            {"ppl", ppl},
            {"tokens", tokens},
            {"predictions", predictions},
            {"windows", windows},
            {"seconds", seconds},
            {"tokens_per_second", tokens_per_second},
            {"gflops_per_second", gflops_per_second}};
  }

  std::string to_markdown() const {
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "| model | text | protocol | tokens | predictions | NLL | PPL | time |\n"
                  "|---|---|---|---:|---:|---:|---:|---:|\n"
                  "| %s | %s | %s | %lld | %lld | %.5f ± %.5f | %.4f | %.1f s |\n",
                  model.c_str(), text.c_str(), protocol.describe().c_str(), static_cast<long long>(tokens),
                  static_cast<long long>(predictions), nll, nll_stderr, ppl, seconds);
    return buf;
  }
};

struct PerplexityOptions {
  int batch = 0;                       // windows per forward; 0 = as many as fit logits_budget_bytes
  double logits_budget_bytes = 1.0e9;  // auto batch limit for the [B*ctx, vocab] logits buffer
  bool quiet = false;
};

// Scores `tokens` under the protocol's windows.
inline PerplexityResult perplexity(const LanguageModel& lm, const std::vector<std::int32_t>& tokens,
                                   const PerplexityProtocol& p, std::int32_t bos_id, const PerplexityOptions& opt = {}) {
  p.validate();
  LOWBIT_CHECK(lm.forward && lm.vocab_size > 0, "perplexity: model '", lm.name, "' has no forward function");
  LOWBIT_CHECK(lm.max_context <= 0 || p.ctx <= lm.max_context, "perplexity: context ", p.ctx,
               " exceeds the model's limit of ", lm.max_context);
  LOWBIT_CHECK(p.bos != BosPolicy::PerWindow || bos_id >= 0,
               "perplexity protocol '", p.name, "' puts BOS in every window but the tokenizer has no BOS token");
  for (auto t : tokens)
    LOWBIT_CHECK(t >= 0 && t < lm.vocab_size, "perplexity: token id ", t, " outside the model's vocabulary of ",
                 lm.vocab_size, " (tokenizer and model do not match)");
  const auto windows = plan_windows(static_cast<std::int64_t>(tokens.size()), p);
  LOWBIT_CHECK(!windows.empty(), "perplexity: ", tokens.size(), " tokens are too few for one window of ", p.ctx,
               " (protocol ", p.name, ")");
  const int V = lm.vocab_size, T = p.ctx;
  int B = opt.batch;
  if (B <= 0) B = static_cast<int>(std::max(1.0, opt.logits_budget_bytes / (4.0 * V * T)));
  B = std::min<int>(B, static_cast<int>(windows.size()));

  PerplexityResult r;
  r.protocol = p;
  r.tokens = static_cast<std::int64_t>(tokens.size());
  r.windows = static_cast<std::int64_t>(windows.size());
  std::vector<std::int32_t> batch_tokens(static_cast<std::size_t>(B) * T);
  std::vector<float> logits(static_cast<std::size_t>(B) * T * V);
  std::vector<double> nll_values;
  double flops = 0;
  const auto start = std::chrono::steady_clock::now();
  Progress progress("perplexity", static_cast<index_t>(windows.size()), "win", opt.quiet);
  double sum = 0;
  for (std::size_t w0 = 0; w0 < windows.size(); w0 += static_cast<std::size_t>(B)) {
    const int nb = static_cast<int>(std::min<std::size_t>(B, windows.size() - w0));
    for (int b = 0; b < nb; ++b) {
      const auto& w = windows[w0 + static_cast<std::size_t>(b)];
      std::copy(tokens.begin() + w.start, tokens.begin() + w.start + T, batch_tokens.begin() + static_cast<std::ptrdiff_t>(b) * T);
      if (p.bos == BosPolicy::PerWindow) batch_tokens[static_cast<std::size_t>(b) * T] = bos_id;
    }
    lm.forward(batch_tokens.data(), nb, T, logits.data());
    if (lm.forward_flops) flops += lm.forward_flops(nb, T);
    for (int b = 0; b < nb; ++b) {
      const auto& w = windows[w0 + static_cast<std::size_t>(b)];
      std::vector<double> local(static_cast<std::size_t>(w.last - w.first));
      parallel_for(
          w.first, w.last,
          [&](index_t lo, index_t hi) {
            for (index_t j = lo; j < hi; ++j) {
              const float* row = logits.data() + (static_cast<std::size_t>(b) * T + static_cast<std::size_t>(j)) * V;
              const auto target = tokens[static_cast<std::size_t>(w.start + j + 1)];
              local[static_cast<std::size_t>(j - w.first)] = -token_log_prob(row, V, target);
            }
          },
          16);
      for (double v : local) sum += v;
      nll_values.insert(nll_values.end(), local.begin(), local.end());
    }
    char status[64];
    std::snprintf(status, sizeof status, "ppl %.4f", std::exp(sum / static_cast<double>(nll_values.size())));
    progress.update(nb, status);
  }
  progress.finish();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.predictions = static_cast<std::int64_t>(nll_values.size());
  r.nll = sum / static_cast<double>(r.predictions);
  double var = 0;
  for (double v : nll_values) var += (v - r.nll) * (v - r.nll);
  var /= std::max<double>(1.0, static_cast<double>(r.predictions - 1));
  r.nll_stderr = std::sqrt(var / static_cast<double>(r.predictions));
  r.ppl = std::exp(r.nll);
  r.tokens_per_second = r.seconds > 0 ? static_cast<double>(r.windows) * T / r.seconds : 0;
  r.gflops_per_second = r.seconds > 0 ? flops / r.seconds * 1e-9 : 0;
  r.model = lm.name;
  return r;
}

// The whole recipe in one call, for drivers and examples: the documents of `text_path` tokenized under the
// `preset` protocol (context `ctx`, 0 = the preset's), the first `limit_tokens` of them (0 = all) scored.
template <class Model>
PerplexityResult text_perplexity(Model& model, const io::Tokenizer& tok, const std::string& text_path,
                                 const std::string& preset = "gptq", int ctx = 0, std::size_t limit_tokens = 0,
                                 bool quiet = true) {
  const auto protocol = perplexity_preset(preset, ctx);
  auto tokens = protocol_tokens(read_documents(text_path), tok, protocol);
  if (limit_tokens > 0 && tokens.size() > limit_tokens) tokens.resize(limit_tokens);
  PerplexityOptions options;
  options.quiet = quiet;
  return perplexity(wrap_model(model, "model"), tokens, protocol, tok.bos_id(), options);
}

}  // namespace lowbit::eval
