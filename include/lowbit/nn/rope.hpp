// Rotary position embedding (Su et al. 2021). Dimension pairs of each head are rotated by pos·θ_k with
// θ_k = theta^(−2k/head_dim). Two pairings exist in the wild (see RopeLayout in config.hpp): adjacent
// pairs (2k, 2k+1) as llama2.c and GGUF store q/k, and half-split pairs (k, k + head_dim/2) as Hugging
// Face stores them. The backward is the inverse rotation (the transpose of an orthogonal map).
#pragma once

#include <cmath>
#include <vector>

#include "../core/tensor.hpp"
#include "config.hpp"

namespace lowbit::nn {

template <class F>
class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(int head_dim, double theta, RopeLayout layout, int positions = 0)
      : head_dim_(head_dim), theta_(theta), layout_(layout) {
    ensure(positions);
  }

  // Makes cos/sin available for positions [0, positions).
  void ensure(int positions) {
    if (positions <= positions_) return;
    const int half = head_dim_ / 2;
    cos_.resize(static_cast<std::size_t>(positions) * half);
    sin_.resize(static_cast<std::size_t>(positions) * half);
    for (int p = positions_; p < positions; ++p)
      for (int k = 0; k < half; ++k) {
        const double freq = std::pow(theta_, -2.0 * k / head_dim_);
        const double angle = p * freq;
        cos_[static_cast<std::size_t>(p) * half + k] = static_cast<F>(std::cos(angle));
        sin_[static_cast<std::size_t>(p) * half + k] = static_cast<F>(std::sin(angle));
      }
    positions_ = positions;
  }

  int head_dim() const { return head_dim_; }
  int positions() const { return positions_; }
  RopeLayout layout() const { return layout_; }

  // Rotates every head of one row (n_heads * head_dim values) to position `pos`; `inverse` rotates back
  // (used by the backward pass).
  void rotate(F* row, int n_heads, int pos, bool inverse = false) const {
    const int half = head_dim_ / 2;
    const F* c = cos_.data() + static_cast<std::size_t>(pos) * half;
    const F* s = sin_.data() + static_cast<std::size_t>(pos) * half;
    const index_t step_a = layout_ == RopeLayout::Interleaved ? 2 : 1;
    const index_t offset_b = layout_ == RopeLayout::Interleaved ? 1 : half;
    for (int h = 0; h < n_heads; ++h) {
      F* head = row + static_cast<index_t>(h) * head_dim_;
      for (int k = 0; k < half; ++k) {
        F* a = head + k * step_a;
        F* b = a + offset_b;
        const F sn = inverse ? -s[k] : s[k];
        const F x0 = *a, x1 = *b;
        *a = x0 * c[k] - x1 * sn;
        *b = x0 * sn + x1 * c[k];
      }
    }
  }

 private:
  int head_dim_ = 0;
  double theta_ = 10000.0;
  RopeLayout layout_ = RopeLayout::Interleaved;
  int positions_ = 0;
  std::vector<F> cos_, sin_;
};

// Rotates x [B*T rows, n_heads*head_dim] in place; row b*T + t sits at position start_pos + t.
template <class F>
void rope_forward(const RopeTable<F>& table, F* x, index_t rows, index_t row_stride, int n_heads, int T,
                  int start_pos = 0) {
  for (index_t r = 0; r < rows; ++r) table.rotate(x + r * row_stride, n_heads, start_pos + static_cast<int>(r % T));
}

// The gradient of rope_forward: dx is rotated back in place.
template <class F>
void rope_backward(const RopeTable<F>& table, F* dx, index_t rows, index_t row_stride, int n_heads, int T,
                   int start_pos = 0) {
  for (index_t r = 0; r < rows; ++r)
    table.rotate(dx + r * row_stride, n_heads, start_pos + static_cast<int>(r % T), true);
}

}  // namespace lowbit::nn
