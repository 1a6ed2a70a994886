// y = Ŵx for BCQ-quantized weights (format/bcq.hpp) on the CPU, LUT-GEMM style: the codes are bit-planes,
// and for a plane of signs b over a group, Σ_c α·b_c·x_c = α·Σ_c b_c·x_c. The signed sums are looked up:
// a group's scale multiplies the sum of its plane's lookups, and offset·Σ_{c∈group} x_c is added once per
// group.
//
// Paths:
//   - `bcq_matvec_reference`: decodes every weight, double accumulation;
//   - `bcq_matvec_lut` (portable): per 8 activations x[8k..8k+7] one 256-entry table
//     T_k[m] = Σ_j (bit j of m ? +x : −x)[8k+j], one lookup per byte of each plane, a row at a time;
//   - `bcq_matvec_avx512` / `bcq_matvec_avx2` (compiled when the compiler targets them): per 4
//     activations a 16-entry float table (BCQQuadTables), which fits one zmm register (two ymm). A block
//     of 16 rows (8 for AVX2) is processed together: one gather brings the same plane word of the 16 rows
//     into 16 lanes, and each 4-bit nibble of it indexes that quad's table with one `vpermps` (AVX2: two
//     and a blend), so one instruction does 16 rows' lookups for 4 columns. The group's scales and
//     offsets, converted to float once per block, are gathered per lane.
// `bcq_matvec` picks the best. Rows (row blocks) run in parallel (parallel_for), each on exactly one
// thread. All paths sum in float except the reference; they agree within float rounding.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../format/bcq.hpp"

// Forces a kernel's helper lambda inline (also defined, identically, by uniform_matvec.hpp).
#if !defined(LOWBIT_ALWAYS_INLINE)
#if defined(__GNUC__)
#define LOWBIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define LOWBIT_ALWAYS_INLINE
#endif
#endif

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
  // A lambda does not capture a thread_local: the workers must see the caller's tables through a reference.
  thread_local BCQTables caller_tables;
  BCQTables& tables = caller_tables;
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

// ---- SIMD paths: 16-entry tables, a block of rows per register ---------------------------------------

// Per-call state of the SIMD paths: for every quad q of activations x[4q..4q+3] (x zero-padded to whole
// plane words, so padding bits contribute nothing) the 16 signed sums
//     T_q[m] = ((s_0·x_4q + s_1·x_4q+1) + s_2·x_4q+2) + s_3·x_4q+3,   s_j = bit j of m ? +1 : −1,
// summed in that order (each product is exact, so this equals the direct sum whatever the compiler
// contracts), and Σx per group. Nibble k of a plane word (bits 4k..4k+3, columns 32w + 4k ...) indexes
// the table of quad 8w + k.
struct BCQQuadTables {
  std::vector<float> quad;        // [quads, 16]
  std::vector<float> group_sums;  // [groups]
  index_t quads = 0;

  template <class Format>
  void build(const BCQPacked<Format>& packed, const float* x) {
    quads = packed.words_per_plane() * 8;
    quad.resize(static_cast<std::size_t>(quads * 16));
    const index_t cols = packed.cols();
    parallel_for(
        0, quads,
        [&](index_t q0, index_t q1) {
          for (index_t q = q0; q < q1; ++q) {
            float v[4];
            for (int j = 0; j < 4; ++j) v[j] = 4 * q + j < cols ? x[4 * q + j] : 0.0f;
            float* t = quad.data() + q * 16;
            for (int m = 0; m < 16; ++m) {
              float s = (m & 1) ? v[0] : -v[0];
              s += (m & 2) ? v[1] : -v[1];
              s += (m & 4) ? v[2] : -v[2];
              s += (m & 8) ? v[3] : -v[3];
              t[m] = s;
            }
          }
        },
        256);
    group_sums.assign(static_cast<std::size_t>(packed.groups_per_row()), 0.0f);
    for (index_t g = 0; g < packed.groups_per_row(); ++g) {
      float s = 0.0f;
      for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) s += x[c];
      group_sums[static_cast<std::size_t>(g)] = s;
    }
  }
};

namespace detail {

// Calls f(std::integral_constant<int, I>{}) for I = 0..N-1 (compile-time unrolling: constant shifts).
template <int N, class F>
LOWBIT_ALWAYS_INLINE inline void bcq_unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

// Word range [w0, w1) of group g in a plane (groups are whole words: sizes are multiples of 32, and the
// last group runs to the end of the row, padding bits included).
template <class Format>
inline std::pair<index_t, index_t> bcq_group_words(const BCQPacked<Format>& packed, index_t g) {
  const index_t w0 = packed.group_begin(g) / 32;
  const index_t w1 = g + 1 < packed.groups_per_row() ? packed.group_end(g) / 32 : packed.words_per_plane();
  return {w0, w1};
}

// The fp16 scales and offsets of rows [r0, r0 + n) as float, row i at out + i·stride: its groups·Bits
// scales, then its groups offsets (stride ≥ groups·(Bits + 1)).
template <class Format>
inline void bcq_block_params(const BCQPacked<Format>& packed, index_t r0, index_t n, float* out, index_t stride) {
  constexpr int bits = Format::bits;
  const index_t groups = packed.groups_per_row();
  auto convert = [](const half_t* h, index_t count, float* f) {
    index_t i = 0;
#if defined(__F16C__)
    for (; i + 8 <= count; i += 8)
      _mm256_storeu_ps(f + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
#endif
    for (; i < count; ++i) f[i] = to_float(h[i]);
  };
  for (index_t i = 0; i < n; ++i) {
    convert(packed.row_alphas(r0 + i), groups * bits, out + i * stride);
    convert(packed.row_offsets(r0 + i), groups, out + i * stride + groups * bits);
  }
}

// A thread's scratch for the float scales and offsets of a block of `lanes` rows.
template <class Format>
float* bcq_scratch_params(const BCQPacked<Format>& packed, index_t lanes) {
  thread_local std::vector<float> buffer;
  const std::size_t size = static_cast<std::size_t>(lanes * packed.groups_per_row() * (Format::bits + 1));
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

// Runs block(r0) for the blocks of `Lanes` rows starting at r0, split over the threads (parallel_for;
// each block on one thread).
template <index_t Lanes, class Format, class Block>
void bcq_for_row_blocks(const BCQPacked<Format>& packed, Block&& block) {
  parallel_for(
      0, (packed.rows() + Lanes - 1) / Lanes,
      [&](index_t b0, index_t b1) {
        for (index_t b = b0; b < b1; ++b) block(b * Lanes);
      },
      std::max<index_t>(1, kBCQMinRowsPerThread / Lanes));
}

}  // namespace detail

#if defined(__AVX512F__)
#define LOWBIT_HAVE_BCQ_AVX512 1

namespace detail {

// Unmasked AVX-512 intrinsics of GCC 12 read an "undefined" register that -Wall flags as uninitialized
// (GCC bug 105593); the all-lanes masked forms compile to the same instructions.
inline constexpr __mmask16 kBCQAllLanes = 0xFFFF;

// A value the compiler must hold in a register: GCC otherwise folds the table (or word) load into each
// of the Bits vpermps (vpsrld) that use it, and on Zen 4 the repeated 64-byte loads cost ~5-15%.
template <class V>
LOWBIT_ALWAYS_INLINE inline V bcq_in_register(V v) {
#if defined(__GNUC__)
  asm("" : "+v"(v));
#endif
  return v;
}

// In-register transpose of a 16x16 float (or int, cast) matrix: r[i] lane j becomes r[j] lane i.
// Four stages of 16 shuffles (32-bit, 64-bit interleaves, then two 128-bit lane shuffles).
LOWBIT_ALWAYS_INLINE inline void bcq_transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int k = 0; k < 8; ++k) {
    t[2 * k] = _mm512_maskz_unpacklo_ps(kBCQAllLanes, r[2 * k], r[2 * k + 1]);      // per 128-bit lane: a0 b0 a1 b1
    t[2 * k + 1] = _mm512_maskz_unpackhi_ps(kBCQAllLanes, r[2 * k], r[2 * k + 1]);  // a2 b2 a3 b3
  }
  for (int k = 0; k < 4; ++k) {
    const __m512d ab01 = _mm512_castps_pd(t[4 * k]), cd01 = _mm512_castps_pd(t[4 * k + 2]);
    const __m512d ab23 = _mm512_castps_pd(t[4 * k + 1]), cd23 = _mm512_castps_pd(t[4 * k + 3]);
    r[4 * k] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, ab01, cd01));      // a0 b0 c0 d0
    r[4 * k + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, ab01, cd01));  // a1 b1 c1 d1
    r[4 * k + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xFF, ab23, cd23));  // a2 b2 c2 d2
    r[4 * k + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xFF, ab23, cd23));  // a3 b3 c3 d3
  }
  // r[4k + j], 128-bit lane L: rows 4k..4k+3 of column 4L + j; a 4x4 transpose of 128-bit lanes.
  for (int j = 0; j < 4; ++j) {
    const __m512 u0 = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, r[j], r[4 + j], 0x44), u1 = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, r[j], r[4 + j], 0xEE);
    const __m512 u2 = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, r[8 + j], r[12 + j], 0x44), u3 = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, r[8 + j], r[12 + j], 0xEE);
    t[j] = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, u0, u2, 0x88);
    t[4 + j] = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, u0, u2, 0xDD);
    t[8 + j] = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, u1, u3, 0x88);
    t[12 + j] = _mm512_maskz_shuffle_f32x4(kBCQAllLanes, u1, u3, 0xDD);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Scratch of one block: every plane's words of a 16-word chunk transposed (word k of the 16 rows at
// words[i][k]), and the rows' scales and offsets transposed (parameter j of the 16 rows at params[j]).
template <int Bits>
struct BCQBlockScratch {
  alignas(64) std::uint32_t words[Bits][16][16];
  std::vector<float> rows;    // [16, stride16]: each row's parameters as float
  std::vector<float> params;  // [stride16, 16]
};

// y[r0, r0 + 16) (fewer at the end: lanes past the last row repeat it and are not stored). The block's
// planes are read 16 words (512 columns) per row at a time and transposed in registers so that one
// vector holds the same word of the 16 rows; each 4-bit nibble of it then indexes its quad's table with
// one vpermps. A group's plane sum is scaled by the per-lane α when the group (or the chunk) ends.
template <class Format>
inline void bcq_avx512_block(const BCQPacked<Format>& packed, const BCQQuadTables& tables, index_t r0,
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
    scratch.rows.assign(static_cast<std::size_t>(lanes * stride16), 0.0f);  // padding columns stay zero
    scratch.params.resize(static_cast<std::size_t>(stride16 * lanes));
  }
  bcq_block_params(packed, r0, n, scratch.rows.data(), stride16);
  for (index_t j0 = 0; j0 < stride16; j0 += 16) {
    __m512 r[16];
    for (int l = 0; l < lanes; ++l) r[l] = _mm512_loadu_ps(scratch.rows.data() + std::min<index_t>(l, n - 1) * stride16 + j0);
    bcq_transpose16(r);
    for (int k = 0; k < 16; ++k) _mm512_storeu_ps(scratch.params.data() + (j0 + k) * 16, r[k]);
  }
  const float* params = scratch.params.data();
  const std::uint32_t* row_planes[lanes];
  for (int l = 0; l < lanes; ++l) row_planes[l] = packed.plane(r0 + std::min<index_t>(l, n - 1), 0);
  const float* quad = tables.quad.data();
  // words per group: a constant for grouped formats (a row shorter than one group has one group, and
  // every word index is then below it), the whole row otherwise
  constexpr index_t fixed_group_words = Format::group_size > 0 ? Format::group_size / 32 : 0;
  const index_t group_words = fixed_group_words > 0 ? fixed_group_words : words;
  // Software prefetch of the next block (its planes, a slice per chunk, and its parameters): without it
  // the 16·Bits interleaved streams of a block ran at a fraction of the DRAM bandwidth.
  const index_t next = std::min<index_t>(packed.rows(), r0 + lanes);
  const index_t next_n = std::min<index_t>(lanes, packed.rows() - next);
  const char* next_planes = next_n > 0 ? reinterpret_cast<const char*>(packed.plane(next, 0)) : nullptr;
  const index_t next_lines = next_n * bits * words * 4 / 64;
  const index_t chunks = (words + 15) / 16;
  if (next_n > 0) {
    const char* a = reinterpret_cast<const char*>(packed.row_alphas(next));
    for (index_t b = 0; b < next_n * groups * bits * 2; b += 64) _mm_prefetch(a + b, _MM_HINT_T0);
    const char* o = reinterpret_cast<const char*>(packed.row_offsets(next));
    for (index_t b = 0; b < next_n * groups * 2; b += 64) _mm_prefetch(o + b, _MM_HINT_T0);
  }
  __m512 out = _mm512_setzero_ps();
  for (index_t g = 0; g < groups; ++g)
    out = _mm512_fmadd_ps(_mm512_loadu_ps(params + (groups * bits + g) * 16),
                          _mm512_set1_ps(tables.group_sums[static_cast<std::size_t>(g)]), out);
  for (index_t c0 = 0; c0 < words; c0 += 16) {
    const index_t cw = std::min<index_t>(16, words - c0);
    const auto load_mask = static_cast<__mmask16>(cw == 16 ? 0xFFFFu : (1u << cw) - 1u);
    if (next_planes) {
      const index_t chunk = c0 / 16;
      for (index_t line = chunk * next_lines / chunks; line < (chunk + 1) * next_lines / chunks; ++line)
        _mm_prefetch(next_planes + line * 64, _MM_HINT_T1);
    }
    for (int i = 0; i < bits; ++i) {
      __m512 r[16];
      for (int l = 0; l < lanes; ++l)
        r[l] = _mm512_castsi512_ps(_mm512_maskz_loadu_epi32(load_mask, row_planes[l] + i * words + c0));
      bcq_transpose16(r);
      for (int k = 0; k < 16; ++k) _mm512_store_ps(reinterpret_cast<float*>(scratch.words[i][k]), r[k]);
    }
    for (index_t w = c0; w < c0 + cw;) {
      const index_t g = fixed_group_words > 0 ? w / fixed_group_words : 0;
      const index_t end = std::min<index_t>(c0 + cw, (g + 1) * group_words);
      __m512 acc[2][bits];
      for (int i = 0; i < bits; ++i) acc[0][i] = acc[1][i] = _mm512_setzero_ps();
      for (; w < end; ++w) {
        __m512i word[bits];
        for (int i = 0; i < bits; ++i) word[i] = bcq_in_register(_mm512_load_si512(scratch.words[i][w - c0]));
        const float* tq = quad + w * 8 * 16;
        bcq_unroll<8>([&]<int K>(std::integral_constant<int, K>) LOWBIT_ALWAYS_INLINE {
          const __m512 table = bcq_in_register(_mm512_loadu_ps(tq + K * 16));
          for (int i = 0; i < bits; ++i) {
            const __m512i index = K == 0 ? word[i] : _mm512_maskz_srli_epi32(kBCQAllLanes, word[i], 4 * K);
            acc[K & 1][i] = _mm512_add_ps(acc[K & 1][i], _mm512_maskz_permutexvar_ps(kBCQAllLanes, index, table));
          }
        });
      }
      for (int i = 0; i < bits; ++i)
        out = _mm512_fmadd_ps(_mm512_loadu_ps(params + (g * bits + i) * 16), _mm512_add_ps(acc[0][i], acc[1][i]), out);
    }
  }
  _mm512_mask_storeu_ps(y + r0, static_cast<__mmask16>((1u << n) - 1u), out);
}

}  // namespace detail

template <class Format>
void bcq_matvec_avx512(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  thread_local BCQQuadTables caller_tables;
  BCQQuadTables& tables = caller_tables;  // captured by the workers (a thread_local would not be)
  tables.build(packed, x);
  detail::bcq_for_row_blocks<16>(packed, [&](index_t r0) {
    thread_local detail::BCQBlockScratch<Format::bits> scratch;
    detail::bcq_avx512_block(packed, tables, r0, scratch, y);
  });
}
#endif  // AVX-512

#if defined(__AVX2__) && defined(__FMA__)
#define LOWBIT_HAVE_BCQ_AVX2 1

namespace detail {

// y[r0, r0 + 8): a quad's 16-entry table is two ymm registers; `vpermps` reads the low 3 bits of a
// nibble in each half and a blend on its bit 3 (moved to the sign bit) picks the half.
template <class Format>
inline void bcq_avx2_block(const BCQPacked<Format>& packed, const BCQQuadTables& tables, index_t r0, float* params,
                           float* y) {
  constexpr int bits = Format::bits;
  constexpr int lanes = 8;
  const index_t n = std::min<index_t>(lanes, packed.rows() - r0);
  const index_t words = packed.words_per_plane();
  const index_t groups = packed.groups_per_row();
  const index_t stride = groups * (bits + 1);
  bcq_block_params(packed, r0, n, params, stride);
  alignas(32) std::int32_t row_index[lanes], param_index[lanes];
  for (int l = 0; l < lanes; ++l) {
    const index_t row = std::min<index_t>(l, n - 1);
    row_index[l] = static_cast<std::int32_t>(row * bits * words);
    param_index[l] = static_cast<std::int32_t>(row * stride);
  }
  const __m256i rows_at = _mm256_load_si256(reinterpret_cast<const __m256i*>(row_index));
  const __m256i params_at = _mm256_load_si256(reinterpret_cast<const __m256i*>(param_index));
  const auto* planes = reinterpret_cast<const int*>(packed.plane(r0, 0));
  const float* quad = tables.quad.data();
  __m256 out = _mm256_setzero_ps();
  for (index_t g = 0; g < groups; ++g) {
    const auto [w0, w1] = bcq_group_words(packed, g);
    __m256 acc[2][bits];
    for (int i = 0; i < bits; ++i) acc[0][i] = acc[1][i] = _mm256_setzero_ps();
    __m256i at = _mm256_add_epi32(rows_at, _mm256_set1_epi32(static_cast<std::int32_t>(w0)));
    for (index_t w = w0; w < w1; ++w) {
      __m256i word[bits];
      for (int i = 0; i < bits; ++i)
        word[i] = _mm256_i32gather_epi32(planes, _mm256_add_epi32(at, _mm256_set1_epi32(static_cast<std::int32_t>(i * words))), 4);
      const float* tq = quad + w * 8 * 16;
      bcq_unroll<8>([&]<int K>(std::integral_constant<int, K>) LOWBIT_ALWAYS_INLINE {
        const __m256 lo = _mm256_loadu_ps(tq + K * 16), hi = _mm256_loadu_ps(tq + K * 16 + 8);
        for (int i = 0; i < bits; ++i) {
          const __m256i index = K == 0 ? word[i] : _mm256_srli_epi32(word[i], 4 * K);
          const __m256 high_half = _mm256_castsi256_ps(K == 7 ? word[i] : _mm256_slli_epi32(word[i], 28 - 4 * K));
          const __m256 v = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, index), _mm256_permutevar8x32_ps(hi, index),
                                            high_half);
          acc[K & 1][i] = _mm256_add_ps(acc[K & 1][i], v);
        }
      });
      at = _mm256_add_epi32(at, _mm256_set1_epi32(1));
    }
    for (int i = 0; i < bits; ++i) {
      const __m256 alpha = _mm256_i32gather_ps(
          params, _mm256_add_epi32(params_at, _mm256_set1_epi32(static_cast<std::int32_t>(g * bits + i))), 4);
      out = _mm256_fmadd_ps(alpha, _mm256_add_ps(acc[0][i], acc[1][i]), out);
    }
    const __m256 offset = _mm256_i32gather_ps(
        params, _mm256_add_epi32(params_at, _mm256_set1_epi32(static_cast<std::int32_t>(groups * bits + g))), 4);
    out = _mm256_fmadd_ps(offset, _mm256_set1_ps(tables.group_sums[static_cast<std::size_t>(g)]), out);
  }
  alignas(32) float result[lanes];
  _mm256_store_ps(result, out);
  for (index_t l = 0; l < n; ++l) y[r0 + l] = result[l];
}

}  // namespace detail

template <class Format>
void bcq_matvec_avx2(const BCQPacked<Format>& packed, const float* x, float* y) {
  detail::check_bcq_args(packed, x, y);
  thread_local BCQQuadTables caller_tables;
  BCQQuadTables& tables = caller_tables;  // captured by the workers (a thread_local would not be)
  tables.build(packed, x);
  detail::bcq_for_row_blocks<8>(packed, [&](index_t r0) {
    detail::bcq_avx2_block(packed, tables, r0, detail::bcq_scratch_params(packed, 8), y);
  });
}
#endif  // AVX2

// Which path `bcq_matvec` takes on this build: "avx512", "avx2" or "lut".
inline constexpr const char* bcq_matvec_path() {
#if defined(LOWBIT_HAVE_BCQ_AVX512)
  return "avx512";
#elif defined(LOWBIT_HAVE_BCQ_AVX2)
  return "avx2";
#else
  return "lut";
#endif
}

// The best path this build has.
template <class Format>
void bcq_matvec(const BCQPacked<Format>& packed, const float* x, float* y) {
#if defined(LOWBIT_HAVE_BCQ_AVX512)
  bcq_matvec_avx512(packed, x, y);
#elif defined(LOWBIT_HAVE_BCQ_AVX2)
  bcq_matvec_avx2(packed, x, y);
#else
  bcq_matvec_lut(packed, x, y);
#endif
}

}  // namespace lowbit::kernels::cpu
