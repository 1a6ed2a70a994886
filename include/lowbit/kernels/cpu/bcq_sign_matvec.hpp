// y = Ŵ·s for BCQ bit-plane weights (format/bcq.hpp: ŵ = Σ_i α_i·b_i + offset per group, b_i ∈ ±1 stored
// as bit-planes, 1 = +1) and pure ±1 activation signs s (packed by `pack_signs`, sign_matvec.hpp): the
// XNOR/popcount form. For a group g of len_g columns, plane bits b and sign bits s,
//
//     Σ_{c∈g} b_c·s_c = len_g − 2·popcount(b XOR s)      (agreeing bits give +1, differing ones −1)
//     Σ_{c∈g} s_c     = 2·popcount(s) − len_g            (once per call, shared by all rows)
//     y_r = Σ_g [ Σ_i α_gi·(len_g − 2·popcount(b_gi XOR s_g)) + offset_g·Σ_{c∈g} s_c ]
//
// so a row costs Bits popcounts per 64 columns and no float work per column. The padding bits past
// `cols` are masked off (the last word of a row), so len_g counts only real columns.
//
// Scope: the weights here are NOT folded with the activation scales α_c. An encoded layer's input is
// α_c·s_c, and this exact popcount form holds only when α is one scalar for the layer (or constant over
// each group): the caller multiplies y by that scalar (or ignores it). With per-channel α, fold α into
// fp32 weights and use sign_matvec (sign_matvec.hpp) instead. This path is also the XNOR baseline that
// issue 17 asks to measure against (bench/bench_sign.cpp).
//
// Paths: `bcq_sign_matvec_reference` (decode each row, double Σ ŵ·s) and `bcq_sign_matvec` (64-bit popcounts,
// the per-group integer sums dotted with the fp16 scales in float; rows in parallel, each on one thread).
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../format/bcq.hpp"
#include "bcq_matvec.hpp"
#include "sign_matvec.hpp"

namespace lowbit::kernels::cpu {

namespace detail {
template <class Format>
void check_bcq_sign_args(const BCQPacked<Format>& packed, const std::uint64_t* bits, const float* y) {
  LOWBIT_CHECK(packed.rows() > 0 && packed.cols() > 0, "bcq sign matvec: packed matrix is empty");
  LOWBIT_CHECK(bits != nullptr && y != nullptr, "bcq sign matvec: bits and y must not be null");
}

// popcount(a XOR b) over `n` 32-bit words, two at a time as 64-bit words.
inline int bcq_xor_popcount(const std::uint32_t* a, const std::uint32_t* b, index_t n) {
  int pc = 0;
  index_t k = 0;
  for (; k + 2 <= n; k += 2) {
    std::uint64_t x, y;
    std::memcpy(&x, a + k, 8);
    std::memcpy(&y, b + k, 8);
    pc += std::popcount(x ^ y);
  }
  if (k < n) pc += std::popcount(a[k] ^ b[k]);
  return pc;
}

// popcount(a XOR b) over N 32-bit words (N a compile-time constant: the loop unrolls).
template <index_t N>
LOWBIT_ALWAYS_INLINE inline int bcq_xor_popcount_fixed(const std::uint32_t* a, const std::uint32_t* b) {
  int pc = 0;
  for (index_t k = 0; k + 2 <= N; k += 2) {
    std::uint64_t x, y;
    std::memcpy(&x, a + k, 8);
    std::memcpy(&y, b + k, 8);
    pc += std::popcount(x ^ y);
  }
  if constexpr (N % 2) pc += std::popcount(a[N - 1] ^ b[N - 1]);
  return pc;
}

// Σ_k h[k]·f[k] for fp16 h: 8 lanes per step with F16C and FMA where the build has them.
inline float bcq_half_dot(const half_t* h, const float* f, index_t n) {
  index_t k = 0;
  float acc = 0.0f;
#if defined(__F16C__) && defined(__FMA__)
  __m256 v = _mm256_setzero_ps();
  for (; k + 8 <= n; k += 8)
    v = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + k))), _mm256_loadu_ps(f + k), v);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, v);
  acc = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
#endif
  for (; k < n; ++k) acc += to_float(h[k]) * f[k];
  return acc;
}
}  // namespace detail

// y[r] = Σ_c ŵ[r, c]·s_c, decoding every weight, double accumulation.
template <class Format>
void bcq_sign_matvec_reference(const BCQPacked<Format>& packed, const std::uint64_t* bits, float* y) {
  detail::check_bcq_sign_args(packed, bits, y);
  std::vector<float> w(static_cast<std::size_t>(packed.cols()));
  for (index_t r = 0; r < packed.rows(); ++r) {
    bcq_dequantize_row(packed, r, w.data());
    double acc = 0.0;
    for (index_t c = 0; c < packed.cols(); ++c) acc += static_cast<double>(w[c]) * unpack_sign(bits, c);
    y[r] = static_cast<float>(acc);
  }
}

// y[r] = Σ_c ŵ[r, c]·s_c by XNOR/popcount (see the top of this file). `bits` holds signs_words(cols)
// words; bits past cols are ignored.
template <class Format>
void bcq_sign_matvec(const BCQPacked<Format>& packed, const std::uint64_t* bits, float* y) {
  detail::check_bcq_sign_args(packed, bits, y);
  constexpr int nbits = Format::bits;
  const index_t cols = packed.cols(), words = packed.words_per_plane(), groups = packed.groups_per_row();
  // Per call: the signs as 32-bit words with the bits past cols cleared, and per group its length and
  // Σ s_c. A lambda does not capture a thread_local: the workers see these through references.
  thread_local std::vector<std::uint32_t> caller_signs;
  thread_local std::vector<float> caller_lens, caller_sign_sums;  // per group: len_g, Σ_{c∈g} s_c
  std::vector<std::uint32_t>& s32 = caller_signs;
  std::vector<float>& lens = caller_lens;
  std::vector<float>& sign_sums = caller_sign_sums;
  s32.assign(static_cast<std::size_t>(words), 0u);
  std::memcpy(s32.data(), bits, static_cast<std::size_t>(std::min<index_t>(words, 2 * signs_words(cols))) * 4);
  if (cols % 32) s32[static_cast<std::size_t>(words - 1)] &= (1u << (cols % 32)) - 1u;
  lens.resize(static_cast<std::size_t>(groups));
  sign_sums.resize(static_cast<std::size_t>(groups));
  for (index_t g = 0; g < groups; ++g) {
    const auto [w0, w1] = detail::bcq_group_words(packed, g);
    int pc = 0;
    for (index_t w = w0; w < w1; ++w) pc += std::popcount(s32[static_cast<std::size_t>(w)]);
    const index_t len = packed.group_end(g) - packed.group_begin(g);
    lens[static_cast<std::size_t>(g)] = static_cast<float>(len);
    sign_sums[static_cast<std::size_t>(g)] = static_cast<float>(2 * pc - len);
  }
  // The last word of a row may carry plane padding bits: the format keeps them zero, but the last group
  // masks its last word anyway, so the count is exact whatever they hold.
  const std::uint32_t last_mask = cols % 32 ? (1u << (cols % 32)) - 1u : 0xFFFFFFFFu;
  // Full groups of a grouped format have a compile-time number of words (unrolled, 64-bit popcounts);
  // the last group (short, or the whole row) takes the general loop.
  static constexpr index_t fixed_words = Format::group_size > 0 ? Format::group_size / 32 : 0;
  const index_t full_groups = fixed_words > 0 ? groups - 1 : 0;
  // Per row: the integer part of every (group, plane) as a float, terms[g·Bits + i] = len_g − 2·popcount
  // (planes in memory order, the full groups of a grouped format unrolled), then two dot products with
  // the row's fp16 scales and offsets (8 lanes at a time with F16C: no per-group dependency chain).
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        thread_local std::vector<float> worker_terms;
        worker_terms.resize(static_cast<std::size_t>(groups * nbits));
        float* terms = worker_terms.data();
        for (index_t r = r0; r < r1; ++r) {
          const std::uint32_t* planes = packed.plane(r, 0);  // plane i at planes + i·words
          for (int i = 0; i < nbits; ++i) {
            const std::uint32_t* plane = planes + i * words;
            index_t g = 0;
            if constexpr (fixed_words > 0) {
              for (; g < full_groups; ++g)
                terms[g * nbits + i] =
                    lens[static_cast<std::size_t>(g)] -
                    2.0f * static_cast<float>(detail::bcq_xor_popcount_fixed<fixed_words>(plane + g * fixed_words,
                                                                                           s32.data() + g * fixed_words));
            }
            const index_t w0 = packed.group_begin(g) / 32;  // the last group: its words run to the row end
            const int pc = detail::bcq_xor_popcount(plane + w0, s32.data() + w0, words - 1 - w0) +
                           std::popcount((plane[words - 1] ^ s32[static_cast<std::size_t>(words - 1)]) & last_mask);
            terms[g * nbits + i] = lens[static_cast<std::size_t>(g)] - 2.0f * static_cast<float>(pc);
          }
          y[r] = detail::bcq_half_dot(packed.row_alphas(r), terms, groups * nbits) +
                 detail::bcq_half_dot(packed.row_offsets(r), sign_sums.data(), groups);
        }
      },
      kBCQMinRowsPerThread);
}

}  // namespace lowbit::kernels::cpu
