// The SwiGLU feed-forward of LLaMA (Shazeer 2020): down(silu(gate(x)) ⊙ up(x)). The three
// projections are Linear layers owned by the block; this header holds the element-wise gate between
// them, forward and backward: with s = σ(g), h = g·s·u, dg = dh·u·s·(1 + g·(1 − s)), du = dh·g·s.
#pragma once

#include <cmath>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "gemm.hpp"

namespace lowbit::nn {

template <class F>
F sigmoid(F x) {
  return F(1) / (F(1) + std::exp(-x));
}

// h[i] = silu(gate[i]) * up[i] for i in [0, count).
template <class F>
void swiglu_forward(const F* gate, const F* up, index_t count, F* h) {
  parallel_for(
      0, count,
      [&](index_t lo, index_t hi) {
        for (index_t i = lo; i < hi; ++i) h[i] = gate[i] * sigmoid(gate[i]) * up[i];
      },
      kMinParallelWork / 8);
}

// dgate += ∂/∂gate, dup += ∂/∂up.
template <class F>
void swiglu_backward(const F* gate, const F* up, const F* dh, index_t count, F* dgate, F* dup) {
  parallel_for(
      0, count,
      [&](index_t lo, index_t hi) {
        for (index_t i = lo; i < hi; ++i) {
          const F g = gate[i], s = sigmoid(g);
          dgate[i] += dh[i] * up[i] * s * (F(1) + g * (F(1) - s));
          dup[i] += dh[i] * g * s;
        }
      },
      kMinParallelWork / 8);
}

}  // namespace lowbit::nn
