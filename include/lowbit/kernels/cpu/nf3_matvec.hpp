// CPU matvec and row dequantization for NF3<Group> (format/nf3.hpp): per group, the positive and
// negative level sums are accumulated apart and scaled once by max and |min|.
#pragma once

#include <algorithm>
#include <cstdint>

#include "../../core/bitpack.hpp"
#include "../../core/parallel.hpp"
#include "../../format/nf3.hpp"

namespace lowbit::kernels::cpu {

// Row r of Ŵ into out[cols].
template <int GroupSize>
void nf3_dequantize_row(const NF3Packed<GroupSize>& packed, index_t r, float* out) {
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    const NF3Params p = packed.params(r, g);
    const float hi = to_float(p.max), lo = to_float(p.min);
    const index_t c0 = g * GroupSize, c1 = std::min<index_t>(packed.cols(), c0 + GroupSize);
    for (index_t c = c0; c < c1; ++c) out[c] = nf3_decode(packed.code(r, c), hi, lo);
  }
}

// y[rows] = Ŵ x[cols].
template <int GroupSize>
void nf3_matvec(const NF3Packed<GroupSize>& packed, const float* x, float* y) {
  parallel_for(0, packed.rows(), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const std::uint32_t* words = packed.codes().data() + r * packed.words_per_row();
      float acc = 0.0f;
      for (index_t g = 0; g < packed.groups_per_row(); ++g) {
        const NF3Params p = packed.params(r, g);
        const index_t c0 = g * GroupSize, c1 = std::min<index_t>(packed.cols(), c0 + GroupSize);
        float pos = 0.0f, neg = 0.0f;
        for (index_t c = c0; c < c1; ++c) {
          const std::uint32_t code = unpack_code<3>(words, c);
          const float level = nf3_level(code);
          if (code >= 3u) pos += level * x[c];
          else neg += level * x[c];
        }
        acc += pos * to_float(p.max) - neg * to_float(p.min);
      }
      y[r] = acc;
    }
  }, 16);
}

}  // namespace lowbit::kernels::cpu
