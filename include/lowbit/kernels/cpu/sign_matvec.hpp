// y = W'·s for a 1-bit activation (issue 17, the "encoded" linear layer): the input of channel c is
// α_c·s_c with s ∈ {±1}^cols, and with α folded into the weights once at load (W' = W·diag(α), rows x
// cols, row-major fp32; `fold_channel_scales`) the product needs no multiplications:
//
//     y = W'·s = Σ_{s_c=+1} W'[:,c] − Σ_{s_c=−1} W'[:,c] = 2·(Σ_{s_c=+1} W'[:,c]) − W'·1,
//
// i.e. adds of the selected columns and one precomputed row-sum vector rowsum = W'·1 (`sign_rowsums`).
//
// The signs travel packed (`pack_signs`): bit c%64 of word c/64 is 1 when v[c] > 0, i.e. s_c = +1; a
// 0 (and −0, NaN) maps to s_c = −1. The caller passes v − β (the encoder's threshold already
// subtracted), so the bits are the ±1 of sign(v − β) with sign(0) = −1. Bits past n are zero.
//
// Paths (all sum in float except the reference; they agree within float rounding of Σ|W'|):
//   - `sign_matvec_reference`: Σ of the selected weights in double, then 2·Σ − rowsum; scalar;
//   - `sign_matvec_avx512` (compiled when the compiler targets AVX-512F): 32 columns per step; the 16
//     sign bits of each half are a __mmask16 and `_mm512_mask_add_ps` adds the selected lanes (two
//     accumulators); the tail is a masked load (never reads past the row), so any cols works;
//   - `sign_matvec_avx2` (AVX2): 16 columns per step, each 8 bits become an all-ones/zero lane mask
//     (broadcast, AND with 1,2,..,128, compare) that ANDs the weights before the add; scalar tail;
//   - `sign_matvec_scalar`: the portable fallback.
// `sign_matvec` picks the best. One row at a time: the weights are then read as one sequential stream.
// Interleaving 4 rows to reuse each mask was measured slower on the Zen 4 VM this was written on (4096x4096
// DRAM-resident: 0.7-0.9x; 576x576: 0.5x of the one-row loop), the masks being nearly free next to the
// loads. Rows (blocks of 4) run in parallel (parallel_for), each on one thread.
//
// The LOWBIT_HD helpers first below (sign_is_positive, sign_bit, sign_select_add, sign_quad_selected,
// sign_row_partial, ...) are the arithmetic of the CUDA kernels (kernels/cuda/sign_matvec.cuh);
// test_kernels_sign runs them on the host. BCQ bit-plane weights with sign activations (XNOR/popcount)
// are in bcq_sign_matvec.hpp.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../config.hpp"
#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../core/tensor.hpp"

// ---- the arithmetic of the CUDA kernels (kernels/cuda/sign_matvec.cuh) ------------------------------
// Here rather than in the .cuh so that the host tests (test_kernels_sign) run exactly this arithmetic.
// The device side reads the packed signs as 32-bit words `s32` (the little-endian halves of the 64-bit
// words: bit c%32 of s32[c/32] is sign c).
namespace lowbit::kernels {

// The sign convention: bit 1 (s = +1) when v > 0; 0, −0 and NaN give bit 0 (s = −1).
LOWBIT_HD bool sign_is_positive(float v) { return v > 0.0f; }

// Sign bit c (1: s_c = +1).
LOWBIT_HD std::uint32_t sign_bit(const std::uint32_t* s32, index_t c) { return (s32[c >> 5] >> (c & 31)) & 1u; }

// The masked add of one element: acc + (bit ? w : 0).
LOWBIT_HD float sign_select_add(float acc, float w, std::uint32_t bit) { return acc + (bit ? w : 0.0f); }

// The 4 sign bits of the float4 unit q (columns 4q..4q+3) as a nibble.
LOWBIT_HD std::uint32_t sign_quad_nibble(const std::uint32_t* s32, index_t q) {
  return (s32[q >> 3] >> ((q & 7) * 4)) & 0xFu;
}

// Σ of the selected elements of a float4 unit, in a fixed order.
LOWBIT_HD float sign_quad_selected(float w0, float w1, float w2, float w3, std::uint32_t nibble) {
  return ((nibble & 1u) ? w0 : 0.0f) + ((nibble & 2u) ? w1 : 0.0f) + (((nibble & 4u) ? w2 : 0.0f) + ((nibble & 8u) ? w3 : 0.0f));
}

// The part of Σ_{s_c=+1} w_row[c] that worker `lane` of `stride` takes: columns lane, lane + stride, ...
// (the general kernel: a warp per row, consecutive lanes on consecutive columns).
LOWBIT_HD float sign_row_partial(const float* w_row, const std::uint32_t* s32, index_t cols, index_t lane, index_t stride) {
  float acc = 0.0f;
  for (index_t c = lane; c < cols; c += stride) acc = sign_select_add(acc, w_row[c], sign_bit(s32, c));
  return acc;
}

// The same over float4 units q = lane, lane + stride, ... of a row of 4·quads columns (the vector kernel).
LOWBIT_HD float sign_row_partial_quads(const float* w_row, const std::uint32_t* s32, index_t quads, index_t lane,
                                       index_t stride) {
  float acc = 0.0f;
  for (index_t q = lane; q < quads; q += stride)
    acc += sign_quad_selected(w_row[4 * q], w_row[4 * q + 1], w_row[4 * q + 2], w_row[4 * q + 3], sign_quad_nibble(s32, q));
  return acc;
}

// y from the selected sum and the row sum: 2·selected − rowsum.
LOWBIT_HD float sign_combine(float selected, float rowsum) { return 2.0f * selected - rowsum; }

}  // namespace lowbit::kernels

namespace lowbit::kernels::cpu {

static_assert(std::endian::native == std::endian::little,
              "sign_matvec: packed sign words are also read as 32-bit halves (little-endian layout)");

inline constexpr index_t kSignMinRowsPerThread = 16;

// 64-bit words that hold n packed signs.
constexpr index_t signs_words(index_t n) { return (n + 63) / 64; }

// bits[signs_words(n)]: bit c%64 of word c/64 = (v[c] > 0); 0, −0 and NaN give 0 (s_c = −1); the bits
// past n in the last word are zero.
inline void pack_signs(const float* v, index_t n, std::uint64_t* bits) {
  const index_t words = signs_words(n);
  for (index_t w = 0; w < words; ++w) {
    const index_t c0 = w * 64;
    const index_t count = std::min<index_t>(64, n - c0);
    std::uint64_t word = 0;
    index_t j = 0;
#if defined(__AVX512F__)
    for (; j + 16 <= count; j += 16) {
      const __mmask16 m = _mm512_cmp_ps_mask(_mm512_loadu_ps(v + c0 + j), _mm512_setzero_ps(), _CMP_GT_OQ);
      word |= static_cast<std::uint64_t>(m) << j;
    }
#endif
    for (; j < count; ++j) word |= static_cast<std::uint64_t>(sign_is_positive(v[c0 + j])) << j;
    bits[w] = word;
  }
}

// s_c ∈ {+1, −1} of packed sign c.
inline float unpack_sign(const std::uint64_t* bits, index_t c) {
  return ((bits[c >> 6] >> (c & 63)) & 1u) ? 1.0f : -1.0f;
}

// W[r, c] *= alpha[c] (W' = W·diag(α), done once when the layer is loaded).
inline void fold_channel_scales(float* W, index_t rows, index_t cols, const float* alpha) {
  parallel_for(
      0, rows,
      [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r)
          for (index_t c = 0; c < cols; ++c) W[r * cols + c] *= alpha[c];
      },
      kSignMinRowsPerThread);
}

// rowsum[r] = Σ_c W'[r, c] (summed in double, rounded once).
inline void sign_rowsums(const float* W, index_t rows, index_t cols, float* rowsum) {
  parallel_for(
      0, rows,
      [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          double acc = 0.0;
          for (index_t c = 0; c < cols; ++c) acc += W[r * cols + c];
          rowsum[r] = static_cast<float>(acc);
        }
      },
      kSignMinRowsPerThread);
}

namespace detail {
inline void check_sign_args(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows, index_t cols,
                            const float* y) {
  LOWBIT_CHECK(rows > 0 && cols > 0, "sign matvec: shape must be positive, got ", rows, "x", cols);
  LOWBIT_CHECK(W && rowsum && bits && y, "sign matvec: W, rowsum, bits and y must not be null");
}

// Runs block(r0, n) for blocks of `Lanes` rows (n < Lanes only for the last), split over the threads.
template <index_t Lanes, class Block>
void sign_for_row_blocks(index_t rows, Block&& block) {
  parallel_for(
      0, (rows + Lanes - 1) / Lanes,
      [&](index_t b0, index_t b1) {
        for (index_t b = b0; b < b1; ++b) block(b * Lanes, std::min<index_t>(Lanes, rows - b * Lanes));
      },
      std::max<index_t>(1, kSignMinRowsPerThread / Lanes));
}

// The 16 (32) sign bits of columns [c, c + 16) ([c, c + 32)); c a multiple of 16 (32).
inline std::uint32_t sign_bits16(const std::uint64_t* bits, index_t c) {
  return static_cast<std::uint32_t>(bits[c >> 6] >> (c & 63)) & 0xFFFFu;
}
inline std::uint32_t sign_bits32(const std::uint64_t* bits, index_t c) {
  return static_cast<std::uint32_t>(bits[c >> 6] >> (c & 63));
}
}  // namespace detail

// ---- reference ------------------------------------------------------------------------------------

// y[r] = 2·Σ_{s_c=+1} W'[r, c] − rowsum[r], the sum in double.
inline void sign_matvec_reference(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                                  index_t cols, float* y) {
  detail::check_sign_args(W, rowsum, bits, rows, cols, y);
  for (index_t r = 0; r < rows; ++r) {
    double selected = 0.0;
    for (index_t c = 0; c < cols; ++c)
      if ((bits[c >> 6] >> (c & 63)) & 1u) selected += W[r * cols + c];
    y[r] = static_cast<float>(2.0 * selected - static_cast<double>(rowsum[r]));
  }
}

// ---- portable path --------------------------------------------------------------------------------

inline void sign_matvec_scalar(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                               index_t cols, float* y) {
  detail::check_sign_args(W, rowsum, bits, rows, cols, y);
  detail::sign_for_row_blocks<4>(rows, [&](index_t r0, index_t n) {
    for (index_t r = r0; r < r0 + n; ++r) {
      const float* w = W + r * cols;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      index_t c = 0;
      for (; c + 4 <= cols; c += 4) {
        const std::uint64_t word = bits[c >> 6] >> (c & 63);
        for (int j = 0; j < 4; ++j) acc[j] += ((word >> j) & 1u) ? w[c + j] : 0.0f;
      }
      for (; c < cols; ++c) acc[0] += ((bits[c >> 6] >> (c & 63)) & 1u) ? w[c] : 0.0f;
      y[r] = 2.0f * ((acc[0] + acc[1]) + (acc[2] + acc[3])) - rowsum[r];
    }
  });
}

// ---- AVX-512: masked adds -------------------------------------------------------------------------
#if defined(__AVX512F__)
#define LOWBIT_HAVE_SIGN_AVX512 1

namespace detail {

// Σ of the 16 lanes in a fixed tree order (GCC 12's _mm512_reduce_add_ps trips -Wuninitialized inside
// its own headers, bug 105593).
inline float sign_hsum16(__m512 v) {
  alignas(64) float t[16];
  _mm512_store_ps(t, v);
  for (int n = 8; n > 0; n /= 2)
    for (int j = 0; j < n; ++j) t[j] += t[j + n];
  return t[0];
}

// y[r]. Per 32 columns: one 32-bit slice of the sign word, its halves as __mmask16, and two masked adds
// (two accumulators); the tail (< 32 columns) is masked loads of 16, so nothing past the row is read.
inline void sign_avx512_row(const float* W, const float* rowsum, const std::uint64_t* bits, index_t cols, index_t r,
                            float* y) {
  const float* w = W + r * cols;
  __m512 lo = _mm512_setzero_ps(), hi = _mm512_setzero_ps();
  index_t c = 0;
  for (; c + 32 <= cols; c += 32) {
    const std::uint32_t s = sign_bits32(bits, c);
    lo = _mm512_mask_add_ps(lo, static_cast<__mmask16>(s), lo, _mm512_loadu_ps(w + c));
    hi = _mm512_mask_add_ps(hi, static_cast<__mmask16>(s >> 16), hi, _mm512_loadu_ps(w + c + 16));
  }
  for (; c < cols; c += 16) {
    const index_t left = cols - c;
    const auto tail = static_cast<__mmask16>(left >= 16 ? 0xFFFFu : (1u << left) - 1u);
    lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(static_cast<__mmask16>(sign_bits16(bits, c) & tail), w + c));
  }
  y[r] = 2.0f * sign_hsum16(_mm512_add_ps(lo, hi)) - rowsum[r];
}

}  // namespace detail

inline void sign_matvec_avx512(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                               index_t cols, float* y) {
  detail::check_sign_args(W, rowsum, bits, rows, cols, y);
  detail::sign_for_row_blocks<4>(rows, [&](index_t r0, index_t n) {
    for (index_t r = r0; r < r0 + n; ++r) detail::sign_avx512_row(W, rowsum, bits, cols, r, y);
  });
}
#endif  // AVX-512

// ---- AVX2: AND with a lane mask, then add -----------------------------------------------------------
#if defined(__AVX2__)
#define LOWBIT_HAVE_SIGN_AVX2 1

namespace detail {

// All-ones in lane j where bit j of `byte` is set.
inline __m256 sign_lane_mask8(std::uint32_t byte) {
  const __m256i lanes = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i b = _mm256_set1_epi32(static_cast<int>(byte));
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(b, lanes), lanes));
}

// y[r]: per 16 columns two lane masks and two AND-then-add (two accumulators); scalar tail.
inline void sign_avx2_row(const float* W, const float* rowsum, const std::uint64_t* bits, index_t cols, index_t r,
                          float* y) {
  const float* w = W + r * cols;
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  index_t c = 0;
  for (; c + 16 <= cols; c += 16) {
    const std::uint32_t s = sign_bits16(bits, c);
    a0 = _mm256_add_ps(a0, _mm256_and_ps(sign_lane_mask8(s & 0xFFu), _mm256_loadu_ps(w + c)));
    a1 = _mm256_add_ps(a1, _mm256_and_ps(sign_lane_mask8(s >> 8), _mm256_loadu_ps(w + c + 8)));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(a0, a1));
  float acc = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
  for (; c < cols; ++c) acc += ((bits[c >> 6] >> (c & 63)) & 1u) ? w[c] : 0.0f;
  y[r] = 2.0f * acc - rowsum[r];
}

}  // namespace detail

inline void sign_matvec_avx2(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                             index_t cols, float* y) {
  detail::check_sign_args(W, rowsum, bits, rows, cols, y);
  detail::sign_for_row_blocks<4>(rows, [&](index_t r0, index_t n) {
    for (index_t r = r0; r < r0 + n; ++r) detail::sign_avx2_row(W, rowsum, bits, cols, r, y);
  });
}
#endif  // AVX2

// Which path `sign_matvec` takes on this build: "avx512", "avx2" or "scalar".
inline constexpr const char* sign_matvec_path() {
#if defined(LOWBIT_HAVE_SIGN_AVX512)
  return "avx512";
#elif defined(LOWBIT_HAVE_SIGN_AVX2)
  return "avx2";
#else
  return "scalar";
#endif
}

// y[rows] = W'·s = 2·Σ_{s_c=+1} W'[:, c] − rowsum, with the best path this build has.
inline void sign_matvec(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows, index_t cols,
                        float* y) {
#if defined(LOWBIT_HAVE_SIGN_AVX512)
  sign_matvec_avx512(W, rowsum, bits, rows, cols, y);
#elif defined(LOWBIT_HAVE_SIGN_AVX2)
  sign_matvec_avx2(W, rowsum, bits, rows, cols, y);
#else
  sign_matvec_scalar(W, rowsum, bits, rows, cols, y);
#endif
}

}  // namespace lowbit::kernels::cpu
