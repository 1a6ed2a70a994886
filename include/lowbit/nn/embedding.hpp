// Token embedding: a row lookup in the table [vocab, dim]. Its backward scatters the output gradient
// back into the rows that were read (+=), so a tied output head and the embedding share one gradient.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace lowbit::nn {

// out[r, :] = table[tokens[r], :] for r in [0, n).
template <class F>
void embedding_forward(const F* table, index_t vocab, index_t dim, const std::int32_t* tokens, index_t n, F* out) {
  for (index_t r = 0; r < n; ++r) {
    const std::int32_t t = tokens[r];
    LOWBIT_CHECK(t >= 0 && t < vocab, "embedding: token id ", t, " at position ", r, " is outside the vocabulary [0, ",
                 vocab, ")");
    std::copy_n(table + static_cast<index_t>(t) * dim, dim, out + r * dim);
  }
}

// dtable[tokens[r], :] += dout[r, :]
template <class F>
void embedding_backward(const std::int32_t* tokens, index_t n, index_t dim, const F* dout, F* dtable) {
  for (index_t r = 0; r < n; ++r) {
    F* row = dtable + static_cast<index_t>(tokens[r]) * dim;
    const F* d = dout + r * dim;
    for (index_t i = 0; i < dim; ++i) row[i] += d[i];
  }
}

}  // namespace lowbit::nn
