// RMSNorm (Zhang & Sennrich 2019) as LLaMA uses it: y = g ⊙ x / sqrt(mean(x²) + eps), epsilon taken
// from the checkpoint. The forward saves 1/rms per row; the backward uses it to give
//   dx = r·g⊙dy − (r³/N)·x·Σ(dy⊙g⊙x)   and   dg += Σ_rows dy⊙r·x.
#pragma once

#include <cmath>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "gemm.hpp"

namespace lowbit::nn {

// out[n, dim] = rmsnorm(x[n, dim]) ⊙ gain; inv_rms[n] (optional) receives 1/rms of each row.
template <class F>
void rmsnorm_forward(const F* x, const F* gain, index_t n, index_t dim, F eps, F* out, F* inv_rms = nullptr) {
  parallel_for(
      0, n,
      [&](index_t lo, index_t hi) {
        for (index_t r = lo; r < hi; ++r) {
          const F* xr = x + r * dim;
          double ss = 0;
          for (index_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
          const F inv = static_cast<F>(1.0 / std::sqrt(ss / static_cast<double>(dim) + static_cast<double>(eps)));
          if (inv_rms) inv_rms[r] = inv;
          F* o = out + r * dim;
          for (index_t i = 0; i < dim; ++i) o[i] = gain[i] * (inv * xr[i]);
        }
      },
      chunk_for(4 * dim));
}

// dx[n, dim] += ∂/∂x, dgain[dim] += ∂/∂gain, given the forward's x and inv_rms.
template <class F>
void rmsnorm_backward(const F* x, const F* gain, const F* inv_rms, const F* dout, index_t n, index_t dim, F* dx,
                      F* dgain) {
  for (index_t r = 0; r < n; ++r) {
    const F* xr = x + r * dim;
    const F* dy = dout + r * dim;
    const F inv = inv_rms[r];
    double dot = 0;  // Σ dy ⊙ g ⊙ x
    for (index_t i = 0; i < dim; ++i) dot += static_cast<double>(dy[i]) * gain[i] * xr[i];
    const F coef = static_cast<F>(dot * inv * inv * inv / static_cast<double>(dim));
    if (dx) {
      F* d = dx + r * dim;
      for (index_t i = 0; i < dim; ++i) d[i] += inv * gain[i] * dy[i] - coef * xr[i];
    }
    if (dgain)
      for (index_t i = 0; i < dim; ++i) dgain[i] += dy[i] * inv * xr[i];
  }
}

}  // namespace lowbit::nn
