// Global-norm gradient clipping: all gradients are scaled by one factor so that their joint L2 norm is at
// most max_norm (as torch.nn.utils.clip_grad_norm_). The norm is accumulated in double in a fixed order,
// so it does not depend on the thread count and resumed runs stay bit-identical.
#pragma once

#include <cmath>
#include <vector>

#include "../nn/parameter.hpp"

namespace lowbit::train {

inline double global_grad_norm(const std::vector<nn::Parameter>& params) {
  double sum = 0.0;
  for (const auto& p : params) {
    double part = 0.0;
    for (index_t i = 0; i < p.size; ++i) part += static_cast<double>(p.grad[i]) * p.grad[i];
    sum += part;
  }
  return std::sqrt(sum);
}

// Scales the gradients when their global norm exceeds max_norm; returns the norm before clipping.
// max_norm <= 0 disables clipping (the norm is still returned, for logging).
inline double clip_grad_norm(const std::vector<nn::Parameter>& params, double max_norm) {
  const double norm = global_grad_norm(params);
  if (max_norm > 0 && norm > max_norm) {
    const float scale = static_cast<float>(max_norm / (norm + 1e-6));
    for (const auto& p : params)
      for (index_t i = 0; i < p.size; ++i) p.grad[i] *= scale;
  }
  return norm;
}

}  // namespace lowbit::train
