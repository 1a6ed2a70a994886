// The key/value cache of incremental decoding: for every layer, the rotated keys and the values of
// all positions seen so far, [max_len, n_kv_heads*head_dim] each. With grouped-query attention it is
// n_heads/n_kv_heads times smaller than caching per query head.
#pragma once

#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "config.hpp"

namespace lowbit::nn {

template <class F>
struct BasicKVCache {
  int n_layers = 0;
  int max_len = 0;
  index_t kv_width = 0;
  std::vector<F> keys, values;  // [n_layers, max_len, kv_width]

  BasicKVCache() = default;
  BasicKVCache(const ModelConfig& c, int max_positions)
      : n_layers(c.n_layers), max_len(max_positions), kv_width(c.kv_dim()) {
    LOWBIT_CHECK(max_positions > 0, "KVCache: max_len must be positive, got ", max_positions);
    keys.assign(static_cast<std::size_t>(n_layers) * max_len * kv_width, F(0));
    values.assign(keys.size(), F(0));
  }

  F* key(int layer, int pos) { return keys.data() + (static_cast<index_t>(layer) * max_len + pos) * kv_width; }
  F* value(int layer, int pos) { return values.data() + (static_cast<index_t>(layer) * max_len + pos) * kv_width; }
};

using KVCache = BasicKVCache<float>;

}  // namespace lowbit::nn
