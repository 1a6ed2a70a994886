// The classifier at the top of the model and its loss: logits = norm(x) · Eᵀ (E the output matrix, or
// the token embedding when the checkpoint ties them) and token-level cross-entropy with its gradient
// softmax(logits) − onehot(target). The loss is computed from a max-shifted log-sum-exp in double, so
// a 49k-token vocabulary loses no precision.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "gemm.hpp"

namespace lowbit::nn {

// log-softmax of one row at `index`.
template <class F>
double log_softmax_at(const F* logits, index_t vocab, index_t index) {
  F mx = logits[0];
  for (index_t j = 1; j < vocab; ++j) mx = std::max(mx, logits[j]);
  double sum = 0;
  for (index_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(logits[j]) - mx);
  return static_cast<double>(logits[index]) - mx - std::log(sum);
}

// Sum over rows of −log softmax(logits[r])[targets[r]]; rows whose target is negative are ignored.
// When dlogits is given (it may alias logits) it receives scale·(softmax − onehot) for every row
// (zero for ignored rows). Returns the summed loss; `counted` (optional) the number of scored rows.
template <class F>
double cross_entropy(const F* logits, const std::int32_t* targets, index_t n, index_t vocab, F* dlogits = nullptr,
                     double scale = 1.0, index_t* counted = nullptr) {
  for (index_t r = 0; r < n; ++r)
    LOWBIT_CHECK(targets[r] < vocab, "cross_entropy: target ", targets[r], " at row ", r,
                 " is outside the vocabulary [0, ", vocab, ")");
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
  parallel_for(
      0, n,
      [&](index_t lo, index_t hi) {
        for (index_t r = lo; r < hi; ++r) {
          const std::int32_t t = targets[r];
          const F* row = logits + r * vocab;
          if (t < 0) {
            if (dlogits) std::fill_n(dlogits + r * vocab, vocab, F(0));
            continue;
          }
          F mx = row[0];
          for (index_t j = 1; j < vocab; ++j) mx = std::max(mx, row[j]);
          double sum = 0;
          for (index_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<double>(row[j]) - mx);
          const double log_z = mx + std::log(sum);
          row_loss[static_cast<std::size_t>(r)] = log_z - static_cast<double>(row[t]);
          if (dlogits) {
            F* d = dlogits + r * vocab;
            const F target_logit = row[t];  // read before a possibly aliased write
            for (index_t j = 0; j < vocab; ++j)
              d[j] = static_cast<F>(scale * std::exp(static_cast<double>(row[j]) - log_z));
            d[t] = static_cast<F>(scale * (std::exp(static_cast<double>(target_logit) - log_z) - 1.0));
          }
        }
      },
      chunk_for(4 * vocab));
  double total = 0;  // summed in row order: the result does not depend on the thread count
  index_t scored = 0;
  for (index_t r = 0; r < n; ++r)
    if (targets[r] >= 0) {
      total += row_loss[static_cast<std::size_t>(r)];
      ++scored;
    }
  if (counted) *counted = scored;
  return total;
}

}  // namespace lowbit::nn
