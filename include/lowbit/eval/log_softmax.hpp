// Numerically stable log-softmax pieces over one row of logits: the log-sum-exp (max-shifted;
// vectorized float exponentials summed in double, so a 50k-entry vocabulary loses nothing), a token's
// log-probability, and the full log-probability row. Shared by perplexity, zero-shot scoring and KL divergence.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include <Eigen/Core>

namespace lowbit::eval {

inline double log_sum_exp(const float* logits, int n) {
  const Eigen::Map<const Eigen::ArrayXf> row(logits, n);
  const float m = row.maxCoeff();
  // exp(x - m) <= 1 in float (Eigen's vectorized exp, ~1 ulp) summed in double per chunk: the
  // relative error of the sum stays ~1e-7 while a 49k-entry row costs a few microseconds.
  constexpr int kChunk = 1024;
  alignas(64) float tmp[kChunk];
  double s = 0.0;
  for (int i = 0; i < n; i += kChunk) {
    const int len = std::min(kChunk, n - i);
    Eigen::Map<Eigen::ArrayXf> buf(tmp, len);
    buf = (row.segment(i, len) - m).exp();
    s += buf.cast<double>().sum();
  }
  return static_cast<double>(m) + std::log(s);
}

// log p(token) under softmax(logits).
inline double token_log_prob(const float* logits, int n, std::int32_t token) {
  return static_cast<double>(logits[token]) - log_sum_exp(logits, n);
}

// out[i] = log softmax(logits)[i].
inline void log_softmax(const float* logits, int n, std::vector<double>& out) {
  out.resize(static_cast<std::size_t>(n));
  const double lse = log_sum_exp(logits, n);
  for (int i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = static_cast<double>(logits[i]) - lse;
}

inline int argmax(const float* logits, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

}  // namespace lowbit::eval
