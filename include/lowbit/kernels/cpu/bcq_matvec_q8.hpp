// y ≈ Ŵx for BCQ weights (format/bcq.hpp) with int8 activation tables: the approximate sibling of
// bcq_matvec.hpp under Int8Activations (format/activation.hpp), T-MAC / LUT-GEMM style. Per call, every
// quad of activations x[4q..4q+3] gets its 16 signed sums T_q[m] = Σ_j (bit j of m ? +x : −x)[4q+j] (fp32,
// as BCQQuadTables), and these tables are quantized to int8 per activation block (≤ 8 plane words = 256
// columns inside one group) with one fp32 step d_k = A_k/127, A_k = max over the block's quads of Σ|x|
// (= max_m |T_q[m]|): t8_q[m] = round-to-nearest-even(T_q[m]·127/A_k). A row's plane sums over a block are
// then integers, S_ik = Σ_{w, n} t8_{8w+n}[nibble n of plane i's word w], and
//
//     y = Σ_g o_g·Σ_{c∈g} x_c  +  Σ_k Σ_i (α_{i,g(k)}·d_k)·S_ik          (fp32 fma, in that order).
//
// Error bound (the only approximation is the table rounding): each looked-up entry is within
// 0.50005·d_k of the exact signed sum of its four activations (½ from rounding, the rest from the fp32
// table sum, 127/A and d), and each (plane, quad) of a row looks up one entry, so
//
//     |y_q8 − y| ≤ 0.50005·Σ_k d_k·quads_k·Σ_i |α_{i,g(k)}|   + fp32 rounding
//
// (quads_k = 8·words of block k; the fp32 rounding, of the group sums Σx and of the final sum, is at most
// (group size + terms + 4)·2^−24·Σ_g (|o_g| + Σ_i |α_{i,g}|)·Σ_{c∈g}|x_c|, as the exact path's). Per column this is the per-value error of x8 activations
// (uniform_matvec_q8: d/2 with d = max|x|/127) times up to 4·Σα/|ŵ| in the worst case; in practice the
// roundings are independent and the error is a small multiple of that of uniform_matvec_q8.
//
// Paths:
//   - `bcq_matvec_q8_reference`: the same integer arithmetic in scalar code (the tests require the SIMD
//     path to equal it bit for bit, and it to be within the bound of the exact matvec);
//   - `bcq_matvec_q8_avx512` (AVX-512 BW + VBMI + VNNI): a block of 16 rows; the same plane word of the
//     16 rows is brought into one register (16x16 transpose, as bcq_matvec_avx512), so byte b of lane l is
//     row l's nibbles of quads 8w+2b (low) and 8w+2b+1 (high). A word's eight int8 tables are two
//     registers (quads 8w+0,2,4,6 and 8w+1,3,5,7, 16 bytes each), so one `vpermb` with index
//     (b << 4 | nibble) looks up 64 entries (16 rows x 4 quads), and one `vpdpbusd` against a ones vector
//     adds each row's four lookups into its int32 lane. Per block the int32 sums go to fp32 once, times
//     α·d. (vpermb rather than vpshufb: vpshufb's 16-entry table is per 128-bit lane, and the planes'
//     storage puts four different quads in each lane's bytes.)
//   - `bcq_matvec_q8_avx2` (AVX2 + FMA): 8 rows, the plane word of the 8 rows in one register (8x8
//     transposes); vpshufb's table is per 128-bit lane, so each byte position of a lane takes its own
//     lookup (the other positions' indices set to 0x80, which vpshufb zeroes) and the four are ORed;
//     vpmaddubsw against ones makes int16 pair sums, vpmaddwd the row's int32 sum at the block's end.
// `bcq_matvec_q8` runs the best path the build has, else the exact `bcq_matvec` (never a slow or wrong
// path, only not approximate). Results do not depend on the thread count.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../format/bcq.hpp"
#include "bcq_matvec.hpp"
#include "uniform_matvec_q8.hpp"  // CacheLineAllocator

namespace lowbit::kernels::cpu {

// Plane words per activation block at most (8 words = 256 columns, as Int8Activations::max_block).
inline constexpr index_t kBCQQ8BlockWords = 8;

// The per-call int8 state: x's quad tables quantized per block, and Σx per group.
struct BCQQ8Activations {
  struct Block {
    index_t w0 = 0, w1 = 0, group = 0;  // plane words [w0, w1) of group `group`
    float d = 0.0f;                     // step: A/127 (0 for an all-zero block)
  };
  index_t cols = 0, words = 0;
  // [words, 128] bytes: word w's quads 8w+0, +2, +4, +6 (16 entries each), then 8w+1, +3, +5, +7; byte
  // w·128 + (n & 1)·64 + (n >> 1)·16 + m is t8 of quad 8w + n, entry m. 64-byte aligned.
  std::vector<std::int8_t, CacheLineAllocator<std::int8_t>> t8;
  std::vector<Block> blocks;      // in word order, covering [0, words)
  std::vector<float> group_sums;  // [groups] Σx over the group (fp32, in column order)

  const std::int8_t* entry(index_t quad) const {
    const index_t w = quad / 8, n = quad % 8;
    return t8.data() + w * 128 + (n & 1) * 64 + (n >> 1) * 16;
  }
  std::int8_t* entry(index_t quad) { return const_cast<std::int8_t*>(std::as_const(*this).entry(quad)); }
};

namespace detail {

// The exact table of quad q (x zero-padded), as BCQQuadTables sums it: (±x0 ± x1) ± x2 ± x3 in fp32.
inline void bcq_q8_quad_table(const float* x, index_t cols, index_t q, float t[16], float& amplitude) {
  float v[4];
  for (int j = 0; j < 4; ++j) v[j] = 4 * q + j < cols ? x[4 * q + j] : 0.0f;
  for (int m = 0; m < 16; ++m) {
    float s = (m & 1) ? v[0] : -v[0];
    s += (m & 2) ? v[1] : -v[1];
    s += (m & 4) ? v[2] : -v[2];
    s += (m & 8) ? v[3] : -v[3];
    t[m] = s;
  }
  // max_m |T[m]| is the entry whose signs match x's: ((|x0| + |x1|) + |x2|) + |x3| in the same order
  amplitude = ((std::fabs(v[0]) + std::fabs(v[1])) + std::fabs(v[2])) + std::fabs(v[3]);
}

inline float bcq_q8_max(float a, float b) { return b > a || b != b ? b : a; }  // NaN wins

// t8 = clamp(nearbyint(T·inv), ±127) (inv = 127/A finite and positive), or for a block whose A is tiny
// (127/A overflows) nearbyint(T/A·127); a non-finite A leaves the entries 0 (y is non-finite anyway).
inline std::int8_t bcq_q8_round(float t, float amplitude, float inv, bool tiny) {
  const float q = std::nearbyint(tiny ? t / amplitude * 127.0f : t * inv);
  return static_cast<std::int8_t>(q > -127.0f ? (q < 127.0f ? q : 127.0f) : -127.0f);
}

// Blocks of ≤ kBCQQ8BlockWords words inside each group (groups are whole words; the last runs to the
// row's last word).
template <class Format>
void bcq_q8_blocks(const BCQPacked<Format>& packed, std::vector<BCQQ8Activations::Block>& blocks) {
  blocks.clear();
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    const auto [gw0, gw1] = bcq_group_words(packed, g);
    for (index_t w = gw0; w < gw1; w += kBCQQ8BlockWords)
      blocks.push_back({w, std::min(gw1, w + kBCQQ8BlockWords), g, 0.0f});
  }
}

// Quantizes the tables of one block; amplitude A is the block's max, `exact[16·q]` its quads' fp32 tables.
inline void bcq_q8_quantize_block_scalar(BCQQ8Activations& xa, BCQQ8Activations::Block& b, const float* x) {
  float amax = 0.0f;
  float t[16], a;
  for (index_t q = 8 * b.w0; q < 8 * b.w1; ++q) {
    bcq_q8_quad_table(x, xa.cols, q, t, a);
    amax = bcq_q8_max(amax, a);
  }
  b.d = amax / 127.0f;
  const float inv = 127.0f / amax;
  const bool finite = amax == amax && amax < std::numeric_limits<float>::infinity();
  const bool tiny = finite && !(inv < std::numeric_limits<float>::infinity());
  for (index_t q = 8 * b.w0; q < 8 * b.w1; ++q) {
    std::int8_t* e = xa.entry(q);
    if (amax == 0.0f || !finite) {
      for (int m = 0; m < 16; ++m) e[m] = 0;
      continue;
    }
    bcq_q8_quad_table(x, xa.cols, q, t, a);
    for (int m = 0; m < 16; ++m) e[m] = bcq_q8_round(t[m], amax, inv, tiny);
  }
}

template <class Format>
void bcq_q8_prepare_common(const BCQPacked<Format>& packed, const float* x, BCQQ8Activations& xa) {
  LOWBIT_CHECK(x != nullptr, "bcq int8 activations: x must not be null");
  xa.cols = packed.cols();
  xa.words = packed.words_per_plane();
  xa.t8.resize(static_cast<std::size_t>(xa.words * 128));
  bcq_q8_blocks(packed, xa.blocks);
  xa.group_sums.assign(static_cast<std::size_t>(packed.groups_per_row()), 0.0f);
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    float s = 0.0f;
    for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) s += x[c];
    xa.group_sums[static_cast<std::size_t>(g)] = s;
  }
}

}  // namespace detail

// The int8 state of x for `packed`'s shape, in scalar code (what the reference uses).
template <class Format>
void bcq_prepare_q8_scalar(const BCQPacked<Format>& packed, const float* x, BCQQ8Activations& xa) {
  detail::bcq_q8_prepare_common(packed, x, xa);
  for (auto& b : xa.blocks) detail::bcq_q8_quantize_block_scalar(xa, b, x);
}

// ---- scalar reference -------------------------------------------------------------------------------

// The integer arithmetic of the SIMD path written out plainly (and its fp32 steps in the same order):
// out = Σ_g fma(o_g, Σx_g); then per block k, per plane i: out = fma(float(S_ik), α_i·d_k, out).
template <class Format>
void bcq_matvec_q8_reference(const BCQPacked<Format>& packed, const BCQQ8Activations& xa, float* y) {
  detail::check_bcq_args(packed, xa.group_sums.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols() && xa.words == packed.words_per_plane(),
               "bcq_matvec_q8_reference: activations prepared for ", xa.cols, " columns, the matrix has ",
               packed.cols());
  constexpr int bits = Format::bits;
  for (index_t r = 0; r < packed.rows(); ++r) {
    const auto* alphas = packed.row_alphas(r);
    const auto* offsets = packed.row_offsets(r);
    float out = 0.0f;
    for (index_t g = 0; g < packed.groups_per_row(); ++g)
      out = std::fma(to_float(offsets[g]), xa.group_sums[static_cast<std::size_t>(g)], out);
    for (const auto& b : xa.blocks)
      for (int i = 0; i < bits; ++i) {
        std::int32_t s = 0;
        const std::uint32_t* plane = packed.plane(r, i);
        for (index_t w = b.w0; w < b.w1; ++w)
          for (index_t n = 0; n < 8; ++n) s += xa.entry(8 * w + n)[(plane[w] >> (4 * n)) & 15u];
        const float f = to_float(alphas[b.group * bits + i]) * b.d;
        out = std::fma(static_cast<float>(s), f, out);
      }
    y[r] = out;
  }
}

template <class Format>
void bcq_matvec_q8_reference(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  BCQQ8Activations xa;
  bcq_prepare_q8_scalar(packed, x, xa);
  bcq_matvec_q8_reference(packed, xa, y);
}

// ---- AVX-512 BW + VBMI + VNNI -------------------------------------------------------------------------

#if defined(LOWBIT_HAVE_BCQ_AVX512) && defined(__AVX512BW__) && defined(__AVX512VBMI__) && defined(__AVX512VNNI__)
#define LOWBIT_HAVE_BCQ_Q8_AVX512 1

namespace detail {

// Sign patterns of the 16 entries for x_j: bit j of m ? +1 : −1.
inline __m512 bcq_q8_signs(int j) {
  alignas(64) float s[16];
  for (int m = 0; m < 16; ++m) s[m] = ((m >> j) & 1) ? 1.0f : -1.0f;
  return _mm512_load_ps(s);
}

// The same tables and rounding as bcq_prepare_q8_scalar, 16 entries per instruction: each product with
// ±1 is exact and the sums run in the scalar order, so the fp32 tables are equal; the conversion rounds
// to nearest even as nearbyint does in the default mode. Blocks with a zero, tiny or non-finite A take
// the scalar code.
template <class Format>
void bcq_prepare_q8_avx512(const BCQPacked<Format>& packed, const float* x, BCQQ8Activations& xa) {
  bcq_q8_prepare_common(packed, x, xa);
  const __m512 s0 = bcq_q8_signs(0), s1 = bcq_q8_signs(1), s2 = bcq_q8_signs(2), s3 = bcq_q8_signs(3);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
  const index_t cols = xa.cols;
  thread_local std::vector<float> tables;  // the block's fp32 tables
  tables.resize(static_cast<std::size_t>(kBCQQ8BlockWords * 8 * 16));
  for (auto& b : xa.blocks) {
    float amax = 0.0f;
    const index_t q0 = 8 * b.w0, q1 = 8 * b.w1;
    for (index_t q = q0; q < q1; ++q) {
      float v[4];
      if (4 * q + 4 <= cols) {
        for (int j = 0; j < 4; ++j) v[j] = x[4 * q + j];
      } else {
        for (int j = 0; j < 4; ++j) v[j] = 4 * q + j < cols ? x[4 * q + j] : 0.0f;
      }
      __m512 t = _mm512_mul_ps(_mm512_set1_ps(v[0]), s0);
      t = _mm512_add_ps(t, _mm512_mul_ps(_mm512_set1_ps(v[1]), s1));
      t = _mm512_add_ps(t, _mm512_mul_ps(_mm512_set1_ps(v[2]), s2));
      t = _mm512_add_ps(t, _mm512_mul_ps(_mm512_set1_ps(v[3]), s3));
      _mm512_storeu_ps(tables.data() + (q - q0) * 16, t);
      amax = bcq_q8_max(amax, ((std::fabs(v[0]) + std::fabs(v[1])) + std::fabs(v[2])) + std::fabs(v[3]));
    }
    const float inv = 127.0f / amax;
    if (!(amax > 0.0f && inv < std::numeric_limits<float>::infinity() && amax < std::numeric_limits<float>::infinity())) {
      bcq_q8_quantize_block_scalar(xa, b, x);
      continue;
    }
    b.d = amax / 127.0f;
    const __m512 scale = _mm512_set1_ps(inv);
    for (index_t q = q0; q < q1; ++q) {
      const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(tables.data() + (q - q0) * 16), scale);
      __m512i v = _mm512_cvtps_epi32(p);  // MXCSR rounding: nearest even
      v = _mm512_min_epi32(_mm512_max_epi32(v, lo), hi);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(xa.entry(q)), _mm512_cvtsepi32_epi8(v));
    }
  }
}

#if !defined(LOWBIT_BCQ_Q8_PREFETCH_BLOCKS)
#define LOWBIT_BCQ_Q8_PREFETCH_BLOCKS 2
#endif
#if !defined(LOWBIT_BCQ_Q8_PREFETCH_HINT)
#define LOWBIT_BCQ_Q8_PREFETCH_HINT _MM_HINT_T1
#endif
inline constexpr index_t kBCQQ8PrefetchBlocks = LOWBIT_BCQ_Q8_PREFETCH_BLOCKS;

// y[r0, r0 + 16) (fewer at the end: lanes past the last row repeat it and are not stored).
template <class Format>
inline void bcq_q8_avx512_block(const BCQPacked<Format>& packed, const BCQQ8Activations& xa, index_t r0,
                                BCQBlockScratch<Format::bits>& scratch, float* y) {
  constexpr int bits = Format::bits;
  constexpr int lanes = 16;
  const index_t n = std::min<index_t>(lanes, packed.rows() - r0);
  const index_t words = packed.words_per_plane();
  const index_t groups = packed.groups_per_row();
  const index_t stride = groups * (bits + 1);
  const index_t stride16 = (stride + 15) / 16 * 16;
  // the parameters, transposed: α_i of group g at params[(g·Bits + i)·16], offsets after the scales
  if (scratch.rows.size() != static_cast<std::size_t>(lanes * stride16)) {
    scratch.rows.assign(static_cast<std::size_t>(lanes * stride16), 0.0f);
    scratch.params.resize(static_cast<std::size_t>(stride16 * lanes));
  }
  bcq_block_params(packed, r0, n, scratch.rows.data(), stride16);
  for (index_t j0 = 0; j0 < stride16; j0 += 16) {
    __m512 r[16];
    for (int l = 0; l < lanes; ++l)
      r[l] = _mm512_loadu_ps(scratch.rows.data() + std::min<index_t>(l, n - 1) * stride16 + j0);
    bcq_transpose16(r);
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(scratch.params.data() + (j0 + k) * 16, r[k]);
  }
  const float* params = scratch.params.data();
  const std::uint32_t* first = packed.plane(r0, 0);
  const index_t row_stride = bits * words;
  // Software prefetch of the block kBCQQ8PrefetchBlocks ahead: its parameters now, its planes (one
  // contiguous range) a slice per word. Without it the 16·Bits interleaved streams of a block leave DRAM
  // latency exposed.
  const index_t ahead = r0 + kBCQQ8PrefetchBlocks * lanes;
  const index_t ahead_n = ahead < packed.rows() ? std::min<index_t>(lanes, packed.rows() - ahead) : 0;
  const char* ahead_planes = ahead_n > 0 ? reinterpret_cast<const char*>(packed.plane(ahead, 0)) : nullptr;
  const index_t ahead_lines = ahead_n * bits * words * 4 / 64;
  if (ahead_n > 0) {
    const char* a = reinterpret_cast<const char*>(packed.row_alphas(ahead));
    for (index_t b = 0; b < ahead_n * groups * bits * 2; b += 64) _mm_prefetch(a + b, LOWBIT_BCQ_Q8_PREFETCH_HINT);
    const char* o = reinterpret_cast<const char*>(packed.row_offsets(ahead));
    for (index_t b = 0; b < ahead_n * groups * 2; b += 64) _mm_prefetch(o + b, LOWBIT_BCQ_Q8_PREFETCH_HINT);
  }
  __m512 out = _mm512_setzero_ps();
  for (index_t g = 0; g < groups; ++g)
    out = _mm512_fmadd_ps(_mm512_loadu_ps(params + (groups * bits + g) * 16),
                          _mm512_set1_ps(xa.group_sums[static_cast<std::size_t>(g)]), out);
  // index byte b of a lane: b << 4 selects the quad's 16 entries in the word's table register
  const __m512i select = _mm512_set1_epi32(0x30201000);
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i acc_lo[bits], acc_hi[bits];
  for (int i = 0; i < bits; ++i) acc_lo[i] = acc_hi[i] = _mm512_setzero_si512();
  const BCQQ8Activations::Block* block = xa.blocks.data();
  for (index_t w = 0; w < words; ++w) {
    const index_t k = w % 16;
    if (k == 0) {
      const index_t c0 = w;
      const index_t cw = std::min<index_t>(16, words - c0);
      const auto load_mask = static_cast<__mmask16>(cw == 16 ? 0xFFFFu : (1u << cw) - 1u);
      for (int i = 0; i < bits; ++i) {
        __m512 r[16];
        // row l's plane i at first + l·row_stride (lanes past the last row repeat it); plain loads where
        // the chunk is whole (masked ones defeat the hardware prefetcher)
        const std::uint32_t* p = first + i * words + c0;
        if (cw == 16) {
          for (int l = 0; l < lanes; ++l, p += l < n ? row_stride : 0) r[l] = _mm512_loadu_ps(reinterpret_cast<const float*>(p));
        } else {
          for (int l = 0; l < lanes; ++l, p += l < n ? row_stride : 0)
            r[l] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(load_mask, p));
        }
        bcq_transpose16(r);
        for (int j = 0; j < 16; ++j) _mm512_store_ps(reinterpret_cast<float*>(scratch.words[i][j]), r[j]);
      }
    }
    if (ahead_planes)
      for (index_t line = w * ahead_lines / words; line < (w + 1) * ahead_lines / words; ++line)
        _mm_prefetch(ahead_planes + line * 64, LOWBIT_BCQ_Q8_PREFETCH_HINT);
    const __m512i table_lo = _mm512_load_si512(xa.t8.data() + w * 128);
    const __m512i table_hi = _mm512_load_si512(xa.t8.data() + w * 128 + 64);
    for (int i = 0; i < bits; ++i) {
      const __m512i v = _mm512_load_si512(scratch.words[i][k]);
      // (v & 0x0F) | select, and the same of v >> 4
      const __m512i index_lo = _mm512_ternarylogic_epi32(v, nibble, select, 0xEA);
      const __m512i index_hi =
          _mm512_ternarylogic_epi32(_mm512_maskz_srli_epi32(kBCQAllLanes, v, 4), nibble, select, 0xEA);
      acc_lo[i] = _mm512_dpbusd_epi32(acc_lo[i], ones, _mm512_permutexvar_epi8(index_lo, table_lo));
      acc_hi[i] = _mm512_dpbusd_epi32(acc_hi[i], ones, _mm512_permutexvar_epi8(index_hi, table_hi));
    }
    if (w + 1 == block->w1) {
      const __m512 d = _mm512_set1_ps(block->d);
      for (int i = 0; i < bits; ++i) {
        const __m512 f = _mm512_mul_ps(_mm512_loadu_ps(params + (block->group * bits + i) * 16), d);
        out = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc_lo[i], acc_hi[i])), f, out);
        acc_lo[i] = acc_hi[i] = _mm512_setzero_si512();
      }
      ++block;
    }
  }
  _mm512_mask_storeu_ps(y + r0, static_cast<__mmask16>((1u << n) - 1u), out);
}

inline BCQQ8Activations& bcq_q8_scratch() {
  thread_local BCQQ8Activations buffer;
  return buffer;
}

}  // namespace detail

// The int8 state of x, 16 table entries per instruction (equal to bcq_prepare_q8_scalar's).
template <class Format>
void bcq_prepare_q8(const BCQPacked<Format>& packed, const float* x, BCQQ8Activations& xa) {
  detail::bcq_prepare_q8_avx512(packed, x, xa);
}

template <class Format>
void bcq_matvec_q8_avx512(const BCQPacked<Format>& packed, const BCQQ8Activations& xa, float* y) {
  detail::check_bcq_args(packed, xa.group_sums.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols() && xa.words == packed.words_per_plane(),
               "bcq_matvec_q8_avx512: activations prepared for ", xa.cols, " columns, the matrix has ", packed.cols());
  detail::bcq_for_row_blocks<16>(packed, [&](index_t r0) {
    thread_local detail::BCQBlockScratch<Format::bits> scratch;
    detail::bcq_q8_avx512_block(packed, xa, r0, scratch, y);
  });
}

template <class Format>
void bcq_matvec_q8_avx512(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  BCQQ8Activations& xa = detail::bcq_q8_scratch();  // the caller's; the workers get it by reference
  bcq_prepare_q8(packed, x, xa);
  bcq_matvec_q8_avx512(packed, xa, y);
}
#else
template <class Format>
void bcq_prepare_q8(const BCQPacked<Format>& packed, const float* x, BCQQ8Activations& xa) {
  bcq_prepare_q8_scalar(packed, x, xa);
}
#endif  // AVX-512 BW + VBMI + VNNI

// ---- AVX2 ---------------------------------------------------------------------------------------------

#if defined(LOWBIT_HAVE_BCQ_AVX2)
#define LOWBIT_HAVE_BCQ_Q8_AVX2 1

namespace detail {

// In-register transpose of an 8x8 int32 matrix: r[i] lane j becomes r[j] lane i.
inline void bcq_q8_transpose8(__m256i r[8]) {
  __m256i t[8], u[8];
  for (int k = 0; k < 4; ++k) {
    t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
    t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 2; ++k) {
    u[4 * k] = _mm256_unpacklo_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 1] = _mm256_unpackhi_epi64(t[4 * k], t[4 * k + 2]);
    u[4 * k + 2] = _mm256_unpacklo_epi64(t[4 * k + 1], t[4 * k + 3]);
    u[4 * k + 3] = _mm256_unpackhi_epi64(t[4 * k + 1], t[4 * k + 3]);
  }
  // u[4k + j], 128-bit lane L: rows 4k..4k+3 of column 4L + j
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x20);
    r[4 + j] = _mm256_permute2x128_si256(u[j], u[4 + j], 0x31);
  }
}

// y[r0, r0 + 8): the same plane word of 8 rows in one register (8x8 transposes of 8-word chunks); byte b
// of a lane holds the row's nibbles of quads 8w+2b and 8w+2b+1. vpshufb's table is per 128-bit lane, so
// each of the four byte positions takes its own lookup (its quad's 16 entries in both lanes), with the
// other positions' indices set to 0x80 (vpshufb writes 0 there), and the four results are ORed;
// vpmaddubsw against ones then adds a row's pairs into int16 (|sum| ≤ 2·127), accumulated over the block
// (≤ 8 words x 2 halves: ≤ 4064), and vpmaddwd turns them into the row's int32 sum at the block's end.
template <class Format>
inline void bcq_q8_avx2_block(const BCQPacked<Format>& packed, const BCQQ8Activations& xa, index_t r0, float* params,
                              std::uint32_t (*words_scratch)[8][8], float* y) {
  constexpr int bits = Format::bits;
  constexpr int lanes = 8;
  const index_t n = std::min<index_t>(lanes, packed.rows() - r0);
  const index_t words = packed.words_per_plane();
  const index_t groups = packed.groups_per_row();
  const index_t stride = groups * (bits + 1);
  bcq_block_params(packed, r0, n, params, stride);
  alignas(32) std::int32_t param_index[lanes];
  for (int l = 0; l < lanes; ++l) param_index[l] = static_cast<std::int32_t>(std::min<index_t>(l, n - 1) * stride);
  const __m256i params_at = _mm256_load_si256(reinterpret_cast<const __m256i*>(param_index));
  auto param = [&](index_t j) {
    return _mm256_i32gather_ps(params, _mm256_add_epi32(params_at, _mm256_set1_epi32(static_cast<std::int32_t>(j))), 4);
  };
  const std::uint32_t* first = packed.plane(r0, 0);
  const index_t row_stride = bits * words;
  // the next block's planes, a slice per word
  const index_t ahead = r0 + 2 * lanes;
  const index_t ahead_n = ahead < packed.rows() ? std::min<index_t>(lanes, packed.rows() - ahead) : 0;
  const char* ahead_planes = ahead_n > 0 ? reinterpret_cast<const char*>(packed.plane(ahead, 0)) : nullptr;
  const index_t ahead_lines = ahead_n * bits * words * 4 / 64;
  __m256 out = _mm256_setzero_ps();
  for (index_t g = 0; g < groups; ++g)
    out = _mm256_fmadd_ps(param(groups * bits + g), _mm256_set1_ps(xa.group_sums[static_cast<std::size_t>(g)]), out);
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  __m256i other[4];  // 0x80 in the bytes of the other three positions of each lane
  for (int b = 0; b < 4; ++b)
    other[b] = _mm256_set1_epi32(static_cast<std::int32_t>(0x80808080u & ~(0xFFu << (8 * b))));
  __m256i acc[bits];
  for (int i = 0; i < bits; ++i) acc[i] = _mm256_setzero_si256();
  const BCQQ8Activations::Block* block = xa.blocks.data();
  for (index_t w = 0; w < words; ++w) {
    const index_t k = w % 8;
    if (k == 0) {
      const index_t cw = std::min<index_t>(8, words - w);
      for (int i = 0; i < bits; ++i) {
        __m256i r[8];
        const std::uint32_t* p = first + i * words + w;
        for (int l = 0; l < lanes; ++l, p += l < n ? row_stride : 0) {
          if (cw == 8) {
            r[l] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
          } else {
            alignas(32) std::uint32_t tail[8] = {};
            std::copy(p, p + cw, tail);
            r[l] = _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
          }
        }
        bcq_q8_transpose8(r);
        for (int j = 0; j < 8; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(words_scratch[i][j]), r[j]);
      }
    }
    if (ahead_planes)
      for (index_t line = w * ahead_lines / words; line < (w + 1) * ahead_lines / words; ++line)
        _mm_prefetch(ahead_planes + line * 64, _MM_HINT_T1);
    const std::int8_t* t = xa.t8.data() + w * 128;
    __m256i table[2][4];
    for (int h = 0; h < 2; ++h)
      for (int b = 0; b < 4; ++b)
        table[h][b] = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(t + h * 64 + b * 16)));
    for (int i = 0; i < bits; ++i) {
      const __m256i v = _mm256_load_si256(reinterpret_cast<const __m256i*>(words_scratch[i][k]));
      const __m256i index[2] = {_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi32(v, 4), nibble)};
      for (int h = 0; h < 2; ++h) {
        __m256i look = _mm256_shuffle_epi8(table[h][0], _mm256_or_si256(index[h], other[0]));
        for (int b = 1; b < 4; ++b)
          look = _mm256_or_si256(look, _mm256_shuffle_epi8(table[h][b], _mm256_or_si256(index[h], other[b])));
        acc[i] = _mm256_add_epi16(acc[i], _mm256_maddubs_epi16(ones8, look));
      }
    }
    if (w + 1 == block->w1) {
      const __m256 d = _mm256_set1_ps(block->d);
      for (int i = 0; i < bits; ++i) {
        const __m256 f = _mm256_mul_ps(param(block->group * bits + i), d);
        out = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_madd_epi16(acc[i], ones16)), f, out);
        acc[i] = _mm256_setzero_si256();
      }
      ++block;
    }
  }
  alignas(32) float result[lanes];
  _mm256_store_ps(result, out);
  for (index_t l = 0; l < n; ++l) y[r0 + l] = result[l];
}

inline BCQQ8Activations& bcq_q8_scratch_avx2() {
  thread_local BCQQ8Activations buffer;
  return buffer;
}

}  // namespace detail

template <class Format>
void bcq_matvec_q8_avx2(const BCQPacked<Format>& packed, const BCQQ8Activations& xa, float* y) {
  detail::check_bcq_args(packed, xa.group_sums.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols() && xa.words == packed.words_per_plane(),
               "bcq_matvec_q8_avx2: activations prepared for ", xa.cols, " columns, the matrix has ", packed.cols());
  detail::bcq_for_row_blocks<8>(packed, [&](index_t r0) {
    alignas(32) std::uint32_t words_scratch[Format::bits][8][8];
    detail::bcq_q8_avx2_block(packed, xa, r0, detail::bcq_scratch_params(packed, 8), words_scratch, y);
  });
}

template <class Format>
void bcq_matvec_q8_avx2(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  BCQQ8Activations& xa = detail::bcq_q8_scratch_avx2();  // the caller's; the workers get it by reference
  bcq_prepare_q8(packed, x, xa);
  bcq_matvec_q8_avx2(packed, xa, y);
}
#endif  // AVX2

// ---- dispatch ---------------------------------------------------------------------------------------

// Whether bcq_matvec_q8 uses int8 tables on this build (else it is the exact bcq_matvec).
inline constexpr bool bcq_q8_supported() {
#if defined(LOWBIT_HAVE_BCQ_Q8_AVX512) || defined(LOWBIT_HAVE_BCQ_Q8_AVX2)
  return true;
#else
  return false;
#endif
}

// Which path bcq_matvec_q8 takes: "avx512-vbmi-vnni", "avx2" or "exact" (bcq_matvec, fp32 activations).
inline constexpr const char* bcq_matvec_q8_path() {
#if defined(LOWBIT_HAVE_BCQ_Q8_AVX512)
  return "avx512-vbmi-vnni";
#elif defined(LOWBIT_HAVE_BCQ_Q8_AVX2)
  return "avx2";
#else
  return "exact";
#endif
}

// y ≈ Ŵx with int8 activation tables where this build has a kernel; otherwise the exact bcq_matvec.
template <class Format>
void bcq_matvec_q8(const BCQPacked<Format>& packed, const float* x, float* y) {
#if defined(LOWBIT_HAVE_BCQ_Q8_AVX512)
  bcq_matvec_q8_avx512(packed, x, y);
#elif defined(LOWBIT_HAVE_BCQ_Q8_AVX2)
  bcq_matvec_q8_avx2(packed, x, y);
#else
  bcq_matvec(packed, x, y);
#endif
}

}  // namespace lowbit::kernels::cpu
