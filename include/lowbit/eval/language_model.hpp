// What the evaluations need from a model: a batched forward from token ids to next-token logits
// [B*T, vocab], the vocabulary size and context limit, and an estimate of the FLOPs of a forward (for
// reporting achieved FLOP/s). An adapter type so perplexity, zero-shot and KLD run on nn::Llama, on a
// quantized model, or on a tiny analytic model in tests alike.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace lowbit::eval {

struct LanguageModel {
  std::string name;
  int vocab_size = 0;
  int max_context = 0;  // 0: unlimited
  // logits[(b*T + t)*vocab + v] for tokens[b*T + t], causal within each row.
  std::function<void(const std::int32_t* tokens, int B, int T, float* logits)> forward;
  // FLOPs of one forward over [B, T] (0 when unknown).
  std::function<double(int B, int T)> forward_flops;
};

// Wraps any model with config() (nn::ModelConfig) and forward(tokens, B, T, logits); the model must
// outlive the adapter.
template <class Model>
LanguageModel wrap_model(Model& model, std::string name) {
  const auto& c = model.config();
  LanguageModel lm;
  lm.name = std::move(name);
  lm.vocab_size = c.vocab_size;
  lm.max_context = 0;  // RoPE models run past their training length; protocols choose the context
  lm.forward = [&model](const std::int32_t* tokens, int B, int T, float* logits) { model.forward(tokens, B, T, logits); };
  const double dim = c.dim, hidden = c.hidden_dim, kv = c.kv_dim(), layers = c.n_layers, vocab = c.vocab_size;
  // Matmul FLOPs: q,k,v,o + gate/up/down per layer, the head, and causal attention (QKᵀ and PV, T/2 keys on average).
  lm.forward_flops = [=](int B, int T) {
    const double tokens = static_cast<double>(B) * T;
    const double per_token = 2.0 * (layers * (dim * (2 * dim + 2 * kv) + 3 * dim * hidden) + vocab * dim);
    const double attention = 2.0 * 2.0 * layers * dim * (T + 1) / 2.0;
    return tokens * (per_token + attention);
  };
  return lm;
}

}  // namespace lowbit::eval
