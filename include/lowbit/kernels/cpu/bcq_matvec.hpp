// y = Ŵx for BCQ-quantized weights (format/bcq.hpp) on the CPU, LUT-GEMM style: the codes are bit-planes,
// and for a plane of signs b over a group, Σ_c α·b_c·x_c = α·Σ_c b_c·x_c. The signed sums are looked up:
// per 8 activations x[8k..8k+7] one 256-entry table T_k[m] = Σ_j (bit j of m ? +x : −x)[8k+j] is built
// once per call, then each byte of each plane costs one lookup; a group's scale multiplies the sum of its
// plane's lookups, and offset·Σ_{c∈group} x_c is added once per group.
//
// Paths: `bcq_matvec_reference` (decodes every weight, double accumulation), `bcq_matvec_lut` (portable
// tables, float), and the SIMD paths of the same tables when the compiler targets AVX2 or AVX-512;
// `bcq_matvec` picks the best. Rows run in parallel (parallel_for), each row on exactly one thread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../format/bcq.hpp"

namespace lowbit::kernels::cpu {

inline constexpr index_t kBCQMinRowsPerThread = 16;

namespace detail {
template <class Format>
void check_bcq_args(const BCQPacked<Format>& packed, const float* x, const float* y) {
  LOWBIT_CHECK(packed.rows() > 0 && packed.cols() > 0, "bcq matvec: packed matrix is empty");
  LOWBIT_CHECK(x != nullptr && y != nullptr, "bcq matvec: x and y must not be null");
}
}  // namespace detail

// Row r of Ŵ into out[cols].
template <class Format>
void bcq_dequantize_row(const BCQPacked<Format>& packed, index_t r, float* out) {
  constexpr int bits = Format::bits;
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    const auto p = packed.params(r, g);
    for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) {
      std::uint32_t code = 0;
      for (int i = 0; i < bits; ++i) code |= ((packed.plane(r, i)[c >> 5] >> (c & 31)) & 1u) << i;
      out[c] = bcq_decode<bits>(code, p);
    }
  }
}

// ---- reference ------------------------------------------------------------------------------------

template <class Format>
void bcq_matvec_reference(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  std::vector<float> w(static_cast<std::size_t>(packed.cols()));
  for (index_t r = 0; r < packed.rows(); ++r) {
    bcq_dequantize_row(packed, r, w.data());
    double acc = 0.0;
    for (index_t c = 0; c < packed.cols(); ++c) acc += static_cast<double>(w[c]) * static_cast<double>(x[c]);
    y[r] = static_cast<float>(acc);
  }
}

// ---- the tables -------------------------------------------------------------------------------------

// Per-call state: the 256-entry signed-sum table of every 8 activations (x zero-padded to whole plane
// words, so padding bits contribute nothing) and Σx per group.
struct BCQTables {
  std::vector<float> lut;         // [chunks, 256], chunk k covers x[8k, 8k+8)
  std::vector<float> group_sums;  // [groups]
  index_t chunks = 0;

  template <class Format>
  void build(const BCQPacked<Format>& packed, const float* x) {
    chunks = packed.words_per_plane() * 4;
    lut.resize(static_cast<std::size_t>(chunks * 256));
    group_sums.assign(static_cast<std::size_t>(packed.groups_per_row()), 0.0f);
    const index_t cols = packed.cols();
    parallel_for(
        0, chunks,
        [&](index_t k0, index_t k1) {
          for (index_t k = k0; k < k1; ++k) {
            float v[8];
            float total = 0.0f;
            for (int j = 0; j < 8; ++j) {
              const index_t c = 8 * k + j;
              v[j] = c < cols ? x[c] : 0.0f;
              total += v[j];
            }
            float* t = lut.data() + k * 256;
            t[0] = -total;
            // T[m] = T[m without its highest bit] + 2·x_(highest bit)
            for (int j = 0; j < 8; ++j) {
              const int step = 1 << j;
              const float add = 2.0f * v[j];
              for (int m = 0; m < step; ++m) t[step + m] = t[m] + add;
            }
          }
        },
        64);
    for (index_t g = 0; g < packed.groups_per_row(); ++g) {
      float s = 0.0f;
      for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) s += x[c];
      group_sums[static_cast<std::size_t>(g)] = s;
    }
  }
};

// Σ over the bytes [b0, b1) of one plane of the row's table lookups.
inline float bcq_plane_lookup_sum(const std::uint8_t* plane_bytes, const float* lut, index_t b0, index_t b1) {
  float s0 = 0.0f, s1 = 0.0f;
  index_t b = b0;
  for (; b + 1 < b1; b += 2) {
    s0 += lut[b * 256 + plane_bytes[b]];
    s1 += lut[(b + 1) * 256 + plane_bytes[b + 1]];
  }
  if (b < b1) s0 += lut[b * 256 + plane_bytes[b]];
  return s0 + s1;
}

// ---- portable LUT path --------------------------------------------------------------------------------

template <class Format>
void bcq_matvec_lut(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  constexpr int bits = Format::bits;
  thread_local BCQTables tables;
  tables.build(packed, x);
  const index_t groups = packed.groups_per_row();
  const index_t bytes_per_plane = packed.words_per_plane() * 4;
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          const half_t* alphas = packed.row_alphas(r);
          const half_t* offsets = packed.row_offsets(r);
          float acc = 0.0f;
          for (index_t g = 0; g < groups; ++g) {
            // a group spans whole bytes: group sizes are multiples of 32, a last group ends at the row end
            const index_t b0 = packed.group_begin(g) / 8;
            const index_t b1 = g + 1 < groups ? packed.group_end(g) / 8 : bytes_per_plane;
            float s = to_float(offsets[g]) * tables.group_sums[static_cast<std::size_t>(g)];
            for (int i = 0; i < bits; ++i) {
              const auto* pb = reinterpret_cast<const std::uint8_t*>(packed.plane(r, i));
              s += to_float(alphas[g * bits + i]) * bcq_plane_lookup_sum(pb, tables.lut.data(), b0, b1);
            }
            acc += s;
          }
          y[r] = acc;
        }
      },
      kBCQMinRowsPerThread);
}

// The best path this build has.
template <class Format>
void bcq_matvec(const BCQPacked<Format>& packed, const float* x, float* y) {
  bcq_matvec_lut(packed, x, y);
}

}  // namespace lowbit::kernels::cpu
