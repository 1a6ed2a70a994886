// Autoregressive decoding with timing: `decode` feeds a prompt (prefill), then samples and feeds one
// token at a time until a stop token or the step budget, calling back with every new token. It reports
// prefill and decode speed as wall time and as process CPU time (all threads), so a measurement on a
// shared machine can be read as CPU-time tokens/s. `lowbit generate` prints text with it; `lowbit
// bench-decode` times it; the tests check its greedy tokens against the batched forward.
#pragma once

#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <vector>

#include "../core/error.hpp"
#include "../core/resources.hpp"
#include "../nn/model.hpp"
#include "../nn/sampler.hpp"

namespace lowbit::eval {

// Wall and CPU clocks read together.
struct Stopwatch {
  std::chrono::steady_clock::time_point wall0 = std::chrono::steady_clock::now();
  double cpu0 = process_cpu_seconds();
  double wall() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count(); }
  double cpu() const { return process_cpu_seconds() - cpu0; }
};

struct DecodeStats {
  int prompt_tokens = 0, generated = 0;
  double prefill_wall = 0, prefill_cpu = 0, decode_wall = 0, decode_cpu = 0;
  bool stopped = false;  // a stop token ended it before the budget
  std::int32_t stop_token = -1;  // which one (not in `tokens`)
  std::vector<std::int32_t> tokens;  // the generated tokens (not the prompt)

  static double rate(int n, double s) { return s > 0 ? n / s : 0.0; }
  double prefill_tok_s() const { return rate(prompt_tokens, prefill_wall); }
  double prefill_tok_cpu_s() const { return rate(prompt_tokens, prefill_cpu); }
  double decode_tok_s() const { return rate(generated, decode_wall); }
  double decode_tok_cpu_s() const { return rate(generated, decode_cpu); }
};

struct DecodeOptions {
  int max_new_tokens = 128;
  std::vector<std::int32_t> stop_tokens;  // sampling one of these ends decoding (it is not emitted)
  // Called with every generated token (after the stop check). Returning false stops decoding.
  std::function<bool(std::int32_t)> on_token;
};

// Decodes after `prompt` with `sampler`; the KV cache must hold prompt + max_new_tokens positions.
inline DecodeStats decode(nn::Llama& model, nn::KVCache& cache, const std::vector<std::int32_t>& prompt,
                          nn::Sampler& sampler, const DecodeOptions& options) {
  LOWBIT_CHECK(!prompt.empty(), "decode: the prompt is empty (start with BOS)");
  LOWBIT_CHECK(options.max_new_tokens >= 0, "decode: max_new_tokens is ", options.max_new_tokens);
  const auto& cfg = model.config();
  LOWBIT_CHECK(static_cast<std::int64_t>(prompt.size()) + options.max_new_tokens <= cache.max_len, "decode: ",
               prompt.size(), " prompt tokens + ", options.max_new_tokens, " new ones exceed the KV cache's ",
               cache.max_len, " positions");
  DecodeStats st;
  st.prompt_tokens = static_cast<int>(prompt.size());
  std::vector<float> logits(static_cast<std::size_t>(cfg.vocab_size));
  Stopwatch prefill;
  model.forward_prefill(prompt.data(), static_cast<int>(prompt.size()), 0, cache, logits.data(), true);
  st.prefill_wall = prefill.wall();
  st.prefill_cpu = prefill.cpu();
  Stopwatch run;
  int pos = static_cast<int>(prompt.size());
  while (st.generated < options.max_new_tokens) {
    const std::int32_t next = sampler.sample(logits.data());
    bool stop = false;
    for (auto s : options.stop_tokens) stop = stop || next == s;
    if (stop) {
      st.stopped = true;
      st.stop_token = next;
      break;
    }
    st.tokens.push_back(next);
    ++st.generated;
    if (options.on_token && !options.on_token(next)) break;
    if (st.generated == options.max_new_tokens) break;
    model.forward_token(next, pos++, cache, logits.data());
  }
  st.decode_wall = run.wall();
  st.decode_cpu = run.cpu();
  return st;
}

}  // namespace lowbit::eval
