// Causal grouped-query attention (Ainslie et al. 2023): n_heads query heads share n_kv_heads key/value
// heads, head h reading kv head h / (n_heads / n_kv_heads). One routine serves the batched forward
// over [B, T] (keys are the batch's own tokens) and incremental decoding (keys come from the KV cache,
// queries start at `offset`). Per head the scores, softmax and weighted sum are Eigen products; heads
// run in parallel. The backward recomputes nothing: it uses the saved probabilities P and gives
//   dV += Pᵀ·dO,  dS = P ⊙ (dO·Vᵀ − rowsum(P ⊙ dO·Vᵀ)) / sqrt(d),  dQ += dS·K,  dK += dSᵀ·Q.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include <Eigen/Core>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "gemm.hpp"

namespace lowbit::nn {

struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  index_t q_width() const { return static_cast<index_t>(n_heads) * head_dim; }
  index_t kv_width() const { return static_cast<index_t>(n_kv_heads) * head_dim; }
  int group() const { return n_heads / n_kv_heads; }
};

// Queries are processed in tiles of this many rows: a tile's scores are a [tile, visible keys] block
// that stays in cache, and causality lets tile t skip every key after its last query (half the work of
// a full T x T product for a long prompt).
inline constexpr index_t kAttentionQueryTile = 64;

// Softmax of one score row in place over its first `visible` entries (vectorized exp through Eigen);
// the entries in [visible, width) become 0.
template <class F>
void causal_softmax_row(F* row, index_t visible, index_t width) {
  // The exponentials go to a 64-byte aligned buffer: on an unaligned destination Eigen peels scalar
  // iterations (std::exp, another summation order) up to the first aligned address, so results would
  // depend on where the row lies in memory and runs would not be bit-reproducible. The max and the final
  // scaling are exact element-wise operations, so they may read and write the row directly.
  using Array = Eigen::Array<F, Eigen::Dynamic, 1>;
  thread_local std::vector<F, Eigen::aligned_allocator<F>> buffer;
  if (static_cast<index_t>(buffer.size()) < visible) buffer.resize(static_cast<std::size_t>(visible));
  Eigen::Map<Array, Eigen::Aligned64> e(buffer.data(), visible);
  Eigen::Map<Array> r(row, visible);
  e = (r - r.maxCoeff()).exp();
  r = e * (F(1) / e.sum());
  std::fill(row + visible, row + width, F(0));
}

// q, out: [B*Tq, n_heads*head_dim]; k, v: batch b's keys start at k + b*kv_batch_stride, rows of
// n_kv_heads*head_dim. Query i of a sequence sits at position offset + i and sees keys 0..offset+i
// (Tk >= offset + Tq). probs (optional, [B, n_heads, Tq, Tk]) receives the attention probabilities.
// Work is split into (batch, head, query tile) units, scheduled dynamically because later tiles see
// more keys.
template <class F>
void attention_forward(const F* q, const F* k, const F* v, F* out, int B, int Tq, int Tk, int offset,
                       index_t kv_batch_stride, const AttentionShape& s, F* probs = nullptr) {
  const index_t qw = s.q_width(), kvw = s.kv_width(), hd = s.head_dim;
  const F scale = static_cast<F>(1.0 / std::sqrt(static_cast<double>(hd)));
  const index_t tiles = (Tq + kAttentionQueryTile - 1) / kAttentionQueryTile;
  const index_t units = static_cast<index_t>(B) * s.n_heads * tiles;
  parallel_for_dynamic(0, units, [&](index_t u) {
    thread_local std::vector<F> scratch;  // reused across calls: no page faults per layer
    // Tile-major order from the last tile down: the most expensive units are handed out first.
    const index_t t = tiles - 1 - u / (static_cast<index_t>(B) * s.n_heads);
    const index_t bh = u % (static_cast<index_t>(B) * s.n_heads);
    const index_t b = bh / s.n_heads, h = bh % s.n_heads, kvh = h / s.group();
    const index_t i0 = t * kAttentionQueryTile, rows = std::min<index_t>(kAttentionQueryTile, Tq - i0);
    const index_t keys = std::min<index_t>(Tk, offset + i0 + rows);  // keys the tile's last query sees
    auto Q = eigen_map<F>(q + (b * Tq + i0) * qw + h * hd, rows, hd, qw);
    auto K = eigen_map<F>(k + b * kv_batch_stride + kvh * hd, keys, hd, kvw);
    auto V = eigen_map<F>(v + b * kv_batch_stride + kvh * hd, keys, hd, kvw);
    auto O = eigen_map<F>(out + (b * Tq + i0) * qw + h * hd, rows, hd, qw);
    F* pbuf;
    index_t pstride;
    if (probs) {
      pbuf = probs + ((b * s.n_heads + h) * Tq + i0) * Tk;
      pstride = Tk;
    } else {
      scratch.resize(static_cast<std::size_t>(rows * keys));
      pbuf = scratch.data();
      pstride = keys;
    }
    auto P = eigen_map<F>(pbuf, rows, keys, pstride);
    P.noalias() = (Q * K.transpose()) * scale;
    for (index_t i = 0; i < rows; ++i)
      causal_softmax_row(pbuf + i * pstride, std::min<index_t>(keys, offset + i0 + i + 1), pstride);
    O.noalias() = P * V;
  }, static_cast<index_t>(B) * s.n_heads * Tq * Tk * hd >= kMinParallelWork);
}

// Backward of the batched causal forward (offset 0, Tq = Tk = T, keys of batch b at b*T rows).
// dq [B*T, n_heads*hd], dk, dv [B*T, n_kv_heads*hd] accumulate (+=).
template <class F>
void attention_backward(const F* q, const F* k, const F* v, const F* probs, const F* dout, int B, int T,
                        const AttentionShape& s, F* dq, F* dk, F* dv) {
  const index_t qw = s.q_width(), kvw = s.kv_width(), hd = s.head_dim;
  const F scale = static_cast<F>(1.0 / std::sqrt(static_cast<double>(hd)));
  // One unit per (batch, kv head): the query heads of a group all write the same dK/dV columns.
  const index_t units = static_cast<index_t>(B) * s.n_kv_heads;
  parallel_for(0, units, [&](index_t lo, index_t hi) {
    RowMajor<F> dP(T, T);
    for (index_t u = lo; u < hi; ++u) {
      const index_t b = u / s.n_kv_heads, kvh = u % s.n_kv_heads;
      auto K = eigen_map<F>(k + b * T * kvw + kvh * hd, T, hd, kvw);
      auto V = eigen_map<F>(v + b * T * kvw + kvh * hd, T, hd, kvw);
      auto dK = eigen_map<F>(dk + b * T * kvw + kvh * hd, T, hd, kvw);
      auto dV = eigen_map<F>(dv + b * T * kvw + kvh * hd, T, hd, kvw);
      for (index_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h) {
        auto Q = eigen_map<F>(q + b * T * qw + h * hd, T, hd, qw);
        auto dQ = eigen_map<F>(dq + b * T * qw + h * hd, T, hd, qw);
        auto dO = eigen_map<F>(dout + b * T * qw + h * hd, T, hd, qw);
        auto P = eigen_map<F>(probs + (b * s.n_heads + h) * T * T, T, T);
        dV.noalias() += P.transpose() * dO;
        dP.noalias() = dO * V.transpose();
        for (index_t i = 0; i < T; ++i) {
          F dot = 0;
          for (index_t j = 0; j <= i; ++j) dot += P(i, j) * dP(i, j);
          for (index_t j = 0; j <= i; ++j) dP(i, j) = P(i, j) * (dP(i, j) - dot) * scale;
          for (index_t j = i + 1; j < T; ++j) dP(i, j) = F(0);
        }
        dQ.noalias() += dP * K;
        dK.noalias() += dP.transpose() * Q;
      }
    }
  }, chunk_for(4 * s.group() * static_cast<index_t>(T) * T * hd));
}

}  // namespace lowbit::nn
