// Choosing the next token from logits: greedy (temperature 0), temperature sampling, and nucleus
// (top-p) sampling (Holtzman et al. 2019), with the same semantics as llama2.c's run.c. All randomness
// comes from an explicit lowbit::Rng, so a seed reproduces a generation exactly.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"

namespace lowbit::nn {

// Index of the largest logit (the first one on ties).
template <class F>
index_t argmax(const F* x, index_t n) {
  index_t best = 0;
  for (index_t i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

class Sampler {
 public:
  // temperature 0 is greedy; top_p outside (0, 1) samples from the full distribution.
  Sampler(index_t vocab, float temperature, float top_p, std::uint64_t seed)
      : vocab_(vocab), temperature_(temperature), top_p_(top_p), rng_(seed) {
    LOWBIT_CHECK(temperature >= 0, "sampler: temperature must be >= 0, got ", temperature);
    LOWBIT_CHECK(top_p >= 0 && top_p <= 1, "sampler: top-p must be in [0, 1], got ", top_p);
    LOWBIT_CHECK(vocab > 0, "sampler: empty vocabulary");
  }

  // Picks a token from logits [vocab] (the logits are not modified).
  std::int32_t sample(const float* logits) {
    if (temperature_ == 0.0f) return static_cast<std::int32_t>(argmax(logits, vocab_));
    probs_.resize(static_cast<std::size_t>(vocab_));
    const float mx = *std::max_element(logits, logits + vocab_);
    double sum = 0;
    for (index_t i = 0; i < vocab_; ++i) {
      probs_[static_cast<std::size_t>(i)] = std::exp(static_cast<double>(logits[i] - mx) / temperature_);
      sum += probs_[static_cast<std::size_t>(i)];
    }
    for (auto& p : probs_) p /= sum;
    const double coin = rng_.uniform();
    if (top_p_ <= 0.0f || top_p_ >= 1.0f || vocab_ < 2) return sample_full(coin);
    return sample_top_p(coin);
  }

  Rng& rng() { return rng_; }

 private:
  std::int32_t sample_full(double coin) const {
    double cdf = 0;
    for (index_t i = 0; i < vocab_; ++i) {
      cdf += probs_[static_cast<std::size_t>(i)];
      if (coin < cdf) return static_cast<std::int32_t>(i);
    }
    return static_cast<std::int32_t>(vocab_ - 1);  // rounding
  }

  // Smallest set of most likely tokens whose mass exceeds top_p, renormalized. Tokens below
  // (1 - top_p) / (vocab - 1) cannot be in that set and are dropped before sorting, as run.c does.
  std::int32_t sample_top_p(double coin) {
    const double cutoff = (1.0 - top_p_) / static_cast<double>(vocab_ - 1);
    order_.clear();
    for (index_t i = 0; i < vocab_; ++i)
      if (probs_[static_cast<std::size_t>(i)] >= cutoff) order_.push_back(static_cast<std::int32_t>(i));
    if (order_.empty()) return static_cast<std::int32_t>(argmax(probs_.data(), vocab_));  // top_p < 1/vocab
    std::sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) {
      const double pa = probs_[static_cast<std::size_t>(a)], pb = probs_[static_cast<std::size_t>(b)];
      return pa != pb ? pa > pb : a < b;
    });
    double mass = 0;
    std::size_t last = order_.size() - 1;
    for (std::size_t i = 0; i < order_.size(); ++i) {
      mass += probs_[static_cast<std::size_t>(order_[i])];
      if (mass > top_p_) {
        last = i;
        break;
      }
    }
    const double r = coin * mass;
    double cdf = 0;
    for (std::size_t i = 0; i <= last; ++i) {
      cdf += probs_[static_cast<std::size_t>(order_[i])];
      if (r < cdf) return order_[i];
    }
    return order_[last];
  }

  index_t vocab_;
  float temperature_, top_p_;
  Rng rng_;
  std::vector<double> probs_;
  std::vector<std::int32_t> order_;
};

}  // namespace lowbit::nn
