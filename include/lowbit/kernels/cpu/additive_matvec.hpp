// CPU kernels for additively quantized matrices (AQLM): the lookup-table matvec for 2^B ≤ 256 codebooks
// (per token, lut[j·M+m][k] = ⟨x_j, C_m[k]⟩, then each row is s_o · Σ lut[code]), a gather path for
// large codebooks (1x16, 2x15) where a per-token table would be bigger than the matrix, and a
// dequantize-to-dense kernel for batched products. The AVX-512 path is tiled so that a 16 KiB slice of
// the table stays in L1 while a tile of rows gathers from it; scalar code is the reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../core/bitpack.hpp"
#include "../../core/half.hpp"
#include "../../core/parallel.hpp"
#include "../../format/additive.hpp"
#include "additive_reference.hpp"

namespace lowbit {

// A read-only view of packed additive storage as the kernels consume it. Codes are the bit stream of
// core/bitpack.hpp, code (j, m) of row o at stream index j·M + m, each row starting on a 32-bit word.
struct AdditiveKernelView {
  AdditiveShape shape;
  const std::uint32_t* codes = nullptr;  // [rows, words_per_row]
  index_t words_per_row = 0;
  const float* codebooks = nullptr;  // [M, 2^B, G] fp32
  const float* scales = nullptr;     // [rows] fp32
  // Optional kernel layout of codes of B ≤ 8 bits, one byte each, 32-row tiles transposed:
  // [ceil(rows/32), codes_per_row, 32] bytes (additive_tile_codes). When present, the AVX-512 kernel
  // looks codes up in registers.
  const std::uint8_t* tiled_codes = nullptr;
};

inline constexpr index_t kAdditiveTileRows = 32;

// Builds the tiled byte layout of B ≤ 8-bit codes (rows past the end are code 0 and ignored).
inline std::vector<std::uint8_t> additive_tile_codes(const AdditiveShape& s, const std::uint32_t* codes,
                                                     index_t words_per_row) {
  LOWBIT_CHECK(s.code_bits >= 1 && s.code_bits <= 8, "additive_tile_codes: needs codes of at most 8 bits, found ",
               s.code_bits);
  const index_t n = s.codes_per_row(), tiles = (s.rows + kAdditiveTileRows - 1) / kAdditiveTileRows;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(tiles * n * kAdditiveTileRows), 0);
  for (index_t o = 0; o < s.rows; ++o) {
    const std::uint32_t* row = codes + o * words_per_row;
    const index_t t = o / kAdditiveTileRows, lane = o % kAdditiveTileRows;
    for (index_t i = 0; i < n; ++i)
      out[static_cast<std::size_t>((t * n + i) * kAdditiveTileRows + lane)] = static_cast<std::uint8_t>(
          s.code_bits == 8 ? reinterpret_cast<const std::uint8_t*>(row)[i] : unpack_code(row, i, s.code_bits));
  }
  return out;
}

// What the CPU kernels derive once from a packed matrix (stored in its kernel cache): fp32 codebooks
// and scales, and on AVX-512 builds the tiled byte layout of B ≤ 8-bit codes.
struct AdditiveDecoded {
  std::vector<float> codebooks, scales;
  std::vector<std::uint8_t> tiled_codes;
};

// The kernel view of packed storage; the first call per matrix decodes into its kernel cache.
inline AdditiveKernelView additive_kernel_view(const AdditivePacked& p) {
  auto& cache = p.kernel_cache();
  std::lock_guard<std::mutex> lock(cache.mutex);
  if (!cache.data) {
    auto d = std::make_shared<AdditiveDecoded>();
    d->codebooks.resize(p.codebooks().size());
    for (std::size_t i = 0; i < p.codebooks().size(); ++i) d->codebooks[i] = to_float(p.codebooks()[i]);
    d->scales.resize(p.scales().size());
    for (std::size_t i = 0; i < p.scales().size(); ++i) d->scales[i] = to_float(p.scales()[i]);
#if defined(__AVX512F__) && defined(__AVX512BW__)
    if (p.shape().code_bits <= 8) d->tiled_codes = additive_tile_codes(p.shape(), p.codes().data(), p.words_per_row());
#endif
    cache.data = std::move(d);
  }
  const auto& d = *static_cast<const AdditiveDecoded*>(cache.data.get());
  return AdditiveKernelView{p.shape(), p.codes().data(), p.words_per_row(), d.codebooks.data(), d.scales.data(),
                            d.tiled_codes.empty() ? nullptr : d.tiled_codes.data()};
}

inline std::uint32_t additive_code_at(const AdditiveKernelView& v, index_t row, index_t i) {
  const std::uint32_t* w = v.codes + row * v.words_per_row;
  switch (v.shape.code_bits) {
    case 8: return reinterpret_cast<const std::uint8_t*>(w)[i];
    case 16: return reinterpret_cast<const std::uint16_t*>(w)[i];
    default: return unpack_code(w, i, v.shape.code_bits);
  }
}

enum class AdditiveKernel { Auto, Scalar, Avx2, Avx512, Avx512Table, Gather };

// Size in floats of the per-token lookup table.
inline index_t additive_lut_size(const AdditiveShape& s) { return s.codes_per_row() * s.codebook_size(); }

// lut[(j·M + m)·K + k] = Σ_d x[G·j + d] · C_m[k][d], padding columns read as zero. `transposed` is
// scratch of M·G·K floats (codebooks as [M, G, K], so the inner loop runs over k in SIMD lanes).
inline void additive_build_lut(const AdditiveKernelView& v, const float* x, float* lut,
                               std::vector<float>& transposed) {
  const auto& s = v.shape;
  const index_t K = s.codebook_size();
  const int G = s.group_size, M = s.num_codebooks;
  transposed.resize(static_cast<std::size_t>(M * G * K));
  for (int m = 0; m < M; ++m)
    for (index_t k = 0; k < K; ++k)
      for (int d = 0; d < G; ++d)
        transposed[static_cast<std::size_t>((m * G + d) * K + k)] = v.codebooks[(m * K + k) * G + d];
  const float* ct = transposed.data();
  parallel_for(
      0, s.groups(),
      [&](index_t j0, index_t j1) {
        for (index_t j = j0; j < j1; ++j) {
          float xg[32];
          for (int d = 0; d < G; ++d) {
            const index_t c = j * G + d;
            xg[d] = c < s.cols ? x[c] : 0.0f;
          }
          for (int m = 0; m < M; ++m) {
            float* out = lut + (j * M + m) * K;
            const float* cm = ct + static_cast<index_t>(m) * G * K;
            // 16 table entries at a time stay in registers across the G products.
            index_t k = 0;
            for (; k + 16 <= K; k += 16) {
              float acc[16] = {};
              for (int d = 0; d < G; ++d) {
                const float xd = xg[d];
                const float* row = cm + d * K + k;
#pragma omp simd
                for (int t = 0; t < 16; ++t) acc[t] += xd * row[t];
              }
              for (int t = 0; t < 16; ++t) out[k + t] = acc[t];
            }
            for (; k < K; ++k) {
              float acc = 0.0f;
              for (int d = 0; d < G; ++d) acc += xg[d] * cm[d * K + k];
              out[k] = acc;
            }
          }
        }
      },
      16);
}

// Scalar reference over the table: y[o] = s_o · Σ_i lut[i·K + code_i].
inline void additive_lut_rows_scalar(const AdditiveKernelView& v, const float* lut, index_t r0, index_t r1,
                                     float* y) {
  const index_t n = v.shape.codes_per_row(), K = v.shape.codebook_size();
  for (index_t o = r0; o < r1; ++o) {
    float acc = 0.0f;
    for (index_t i = 0; i < n; ++i) acc += lut[i * K + additive_code_at(v, o, i)];
    y[o] = acc * v.scales[o];
  }
}

#if defined(__AVX2__)
// AVX2, 8-bit codes: eight codes per gather, one row at a time.
inline void additive_lut_rows_avx2(const AdditiveKernelView& v, const float* lut, index_t r0, index_t r1,
                                   float* y) {
  const index_t n = v.shape.codes_per_row();
  const __m256i lane_base = _mm256_setr_epi32(0, 256, 512, 768, 1024, 1280, 1536, 1792);
  for (index_t o = r0; o < r1; ++o) {
    const std::uint8_t* codes = reinterpret_cast<const std::uint8_t*>(v.codes + o * v.words_per_row);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    index_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m128i c16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i));
      const __m256i ia = _mm256_add_epi32(_mm256_cvtepu8_epi32(c16), lane_base);
      const __m256i ib = _mm256_add_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(c16, 8)), lane_base);
      acc0 = _mm256_add_ps(acc0, _mm256_i32gather_ps(lut + i * 256, ia, 4));
      acc1 = _mm256_add_ps(acc1, _mm256_i32gather_ps(lut + (i + 8) * 256, ib, 4));
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    float acc = _mm_cvtss_f32(h);
    for (; i < n; ++i) acc += lut[i * 256 + codes[i]];
    y[o] = acc * v.scales[o];
  }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// Horizontal sum written out (GCC 12's _mm512_reduce_add_ps trips -Wmaybe-uninitialized).
inline float additive_hsum512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  s4 = _mm_add_ss(s4, _mm_shuffle_ps(s4, s4, 1));
  return _mm_cvtss_f32(s4);
}

// AVX-512, 8-bit codes: rows are processed in tiles; for each 16-table slice of the LUT (16 KiB, L1)
// every row of the tile does one 16-lane gather into its own accumulator, so the table is streamed from
// L2 once per tile instead of once per row.
inline void additive_lut_rows_avx512(const AdditiveKernelView& v, const float* lut, index_t r0, index_t r1,
                                     float* y) {
  constexpr index_t kTileRows = 128;  // 128 accumulators (8 KiB) + the tile's codes stay in L1/L2
  const index_t n = v.shape.codes_per_row();
  const __m512i lane_base = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32(256));
  const index_t full = n / 16;
  const int tail = static_cast<int>(n - full * 16);
  const __mmask16 tail_mask = static_cast<__mmask16>((1u << tail) - 1u);
  alignas(64) __m512 acc[kTileRows];
  for (index_t t0 = r0; t0 < r1; t0 += kTileRows) {
    const index_t t1 = std::min(r1, t0 + kTileRows);
    const index_t rows = t1 - t0;
    for (index_t r = 0; r < rows; ++r) acc[r] = _mm512_setzero_ps();
    const std::uint8_t* base = reinterpret_cast<const std::uint8_t*>(v.codes + t0 * v.words_per_row);
    const index_t stride = v.words_per_row * 4;
    for (index_t c = 0; c < full; ++c) {
      const float* slice = lut + c * 16 * 256;
      const std::uint8_t* codes = base + c * 16;
      index_t r = 0;
      for (; r + 2 <= rows; r += 2) {
        const __m512i i0 = _mm512_add_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + r * stride))), lane_base);
        const __m512i i1 = _mm512_add_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + (r + 1) * stride))),
            lane_base);
        acc[r] = _mm512_add_ps(acc[r], _mm512_i32gather_ps(i0, slice, 4));
        acc[r + 1] = _mm512_add_ps(acc[r + 1], _mm512_i32gather_ps(i1, slice, 4));
      }
      for (; r < rows; ++r) {
        const __m512i i0 = _mm512_add_epi32(
            _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + r * stride))), lane_base);
        acc[r] = _mm512_add_ps(acc[r], _mm512_i32gather_ps(i0, slice, 4));
      }
    }
    if (tail) {
      const float* slice = lut + full * 16 * 256;
      for (index_t r = 0; r < rows; ++r) {
        const __m512i i0 = _mm512_add_epi32(_mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(tail_mask, base + r * stride + full * 16)),
                                            lane_base);
        acc[r] = _mm512_add_ps(acc[r], _mm512_mask_i32gather_ps(_mm512_setzero_ps(), tail_mask, i0, slice, 4));
      }
    }
    for (index_t r = 0; r < rows; ++r) y[t0 + r] = additive_hsum512(acc[r]) * v.scales[t0 + r];
  }
}
#endif

#if defined(__AVX512F__) && defined(__AVX512BW__)
// AVX-512, codes of B ≤ 8 bits, tables in registers: the per-token LUT is quantized once to int16 with
// one step Δ = max|lut| / 32767 (relative error ≤ 1.5e-5 of the largest entry), so one table of up to
// 256 entries is Regs = 2 (B ≤ 6, padded to 64 entries), 4 (B = 7) or 8 (B = 8) zmm registers, and 32
// rows' codes for a position are looked up with Regs/2 vpermi2w + Regs/2 − 1 blends — no gathers.
// Rows come in 32-row tiles of transposed byte codes (AdditiveKernelView::tiled_codes); 4 tiles share
// each table load. y = Δ · s_o · Σ int16 lookups (int32 accumulation is exact).
inline constexpr index_t additive_table_stride(int code_bits) { return code_bits <= 6 ? 64 : index_t{1} << code_bits; }

template <int Regs>
inline __m512i additive_table_lookup(const __m512i (&T)[Regs], __m512i idx) {
  const __m512i q0 = _mm512_permutex2var_epi16(T[0], idx, T[1]);  // index bits 0-5
  if constexpr (Regs == 2) {
    return q0;
  } else {
    const __m512i q1 = _mm512_permutex2var_epi16(T[2], idx, T[3]);
    const __mmask32 m6 = _mm512_test_epi16_mask(idx, _mm512_set1_epi16(64));
    const __m512i lo = _mm512_mask_blend_epi16(m6, q0, q1);
    if constexpr (Regs == 4) {
      return lo;
    } else {
      const __m512i q2 = _mm512_permutex2var_epi16(T[4], idx, T[5]);
      const __m512i q3 = _mm512_permutex2var_epi16(T[6], idx, T[7]);
      const __m512i hi = _mm512_mask_blend_epi16(m6, q2, q3);
      return _mm512_mask_blend_epi16(_mm512_test_epi16_mask(idx, _mm512_set1_epi16(128)), lo, hi);
    }
  }
}

template <int Regs>
inline void additive_lut_rows_avx512_table(const AdditiveKernelView& v, const std::int16_t* lut16, float delta,
                                           index_t tile0, index_t tile1, float* y) {
  const index_t n = v.shape.codes_per_row();
  constexpr index_t kStride = Regs * 32;  // int16 entries per position
  constexpr int kTilesPerPass = 4;
  for (index_t t0 = tile0; t0 < tile1; t0 += kTilesPerPass) {
    const int tiles = static_cast<int>(std::min<index_t>(kTilesPerPass, tile1 - t0));
    __m512i acc_lo[kTilesPerPass], acc_hi[kTilesPerPass];
    for (int t = 0; t < kTilesPerPass; ++t) acc_lo[t] = acc_hi[t] = _mm512_setzero_si512();
    for (index_t i = 0; i < n; ++i) {
      const __m512i* table = reinterpret_cast<const __m512i*>(lut16 + i * kStride);
      __m512i T[Regs];
      for (int r = 0; r < Regs; ++r) T[r] = _mm512_loadu_si512(table + r);
      for (int t = 0; t < tiles; ++t) {
        const std::uint8_t* codes = v.tiled_codes + ((t0 + t) * n + i) * kAdditiveTileRows;
        const __m512i idx = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes)));
        const __m512i val = additive_table_lookup<Regs>(T, idx);
        acc_lo[t] = _mm512_add_epi32(acc_lo[t], _mm512_cvtepi16_epi32(_mm512_castsi512_si256(val)));
        acc_hi[t] = _mm512_add_epi32(acc_hi[t], _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(val, 1)));
      }
    }
    for (int t = 0; t < tiles; ++t) {
      alignas(64) std::int32_t sums[32];
      _mm512_store_si512(reinterpret_cast<__m512i*>(sums), acc_lo[t]);
      _mm512_store_si512(reinterpret_cast<__m512i*>(sums + 16), acc_hi[t]);
      const index_t row0 = (t0 + t) * kAdditiveTileRows;
      const index_t rows = std::min<index_t>(kAdditiveTileRows, v.shape.rows - row0);
      for (index_t r = 0; r < rows; ++r) y[row0 + r] = static_cast<float>(sums[r]) * delta * v.scales[row0 + r];
    }
  }
}

// The fp32 table [codes_per_row, K] as int16 with stride additive_table_stride(B) (zero padding);
// returns Δ.
inline float additive_quantize_lut(const AdditiveShape& s, const float* lut, std::vector<std::int16_t>& lut16) {
  const index_t n = s.codes_per_row(), K = s.codebook_size(), stride = additive_table_stride(s.code_bits);
  const index_t total = n * K;
  __m512 vmax = _mm512_setzero_ps();
  index_t i = 0;
  for (; i + 16 <= total; i += 16) vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_loadu_ps(lut + i)));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, vmax);
  float max_abs = 0.0f;
  for (float value : lanes) max_abs = std::max(max_abs, value);
  for (; i < total; ++i) max_abs = std::max(max_abs, std::abs(lut[i]));
  const float delta = max_abs > 0.0f ? max_abs / 32767.0f : 1.0f;
  const float inv_delta = 1.0f / delta;
  lut16.resize(static_cast<std::size_t>(n * stride));
  if (K == stride) {  // K ≥ 64: one contiguous conversion, 16 entries at a time
    const __m512 inv = _mm512_set1_ps(inv_delta);
    for (index_t e = 0; e < total; e += 16) {
      const __m512i rounded = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(lut + e), inv),
                                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(lut16.data() + e), _mm512_cvtsepi32_epi16(rounded));
    }
  } else {  // small codebooks: per position, K entries then zeros up to 64
    for (index_t p = 0; p < n; ++p)
      for (index_t k = 0; k < stride; ++k)
        lut16[static_cast<std::size_t>(p * stride + k)] =
            k < K ? static_cast<std::int16_t>(std::nearbyint(lut[p * K + k] * inv_delta)) : std::int16_t{0};
  }
  return delta;
}
#endif

// Gather path for any B (used for B > 8): each row sums the M selected codewords of every group and
// takes the dot product with the matching slice of x. G is a template so the inner loops vectorize.
template <int G>
void additive_gather_rows(const AdditiveKernelView& v, const float* x, index_t r0, index_t r1, float* y) {
  const auto& s = v.shape;
  const index_t K = s.codebook_size(), groups = s.groups();
  const int M = s.num_codebooks;
  const index_t full_groups = s.cols / G;  // groups with no padding
  for (index_t o = r0; o < r1; ++o) {
    float acc[G] = {};
    for (index_t j = 0; j < groups; ++j) {
      float sum[G];
      const float* c0 = v.codebooks + static_cast<index_t>(additive_code_at(v, o, j * M)) * G;
      for (int d = 0; d < G; ++d) sum[d] = c0[d];
      for (int m = 1; m < M; ++m) {
        const float* cm = v.codebooks + (m * K + additive_code_at(v, o, j * M + m)) * G;
        for (int d = 0; d < G; ++d) sum[d] += cm[d];
      }
      const float* xg = x + j * G;
      if (j < full_groups) {
        for (int d = 0; d < G; ++d) acc[d] += sum[d] * xg[d];
      } else {
        for (int d = 0; d < G; ++d)
          if (j * G + d < s.cols) acc[d] += sum[d] * xg[d];
      }
    }
    float total = 0.0f;
    for (int d = 0; d < G; ++d) total += acc[d];
    y[o] = total * v.scales[o];
  }
}

inline void additive_gather_rows(const AdditiveKernelView& v, const float* x, index_t r0, index_t r1, float* y) {
  switch (v.shape.group_size) {
    case 2: return additive_gather_rows<2>(v, x, r0, r1, y);
    case 4: return additive_gather_rows<4>(v, x, r0, r1, y);
    case 8: return additive_gather_rows<8>(v, x, r0, r1, y);
    case 16: return additive_gather_rows<16>(v, x, r0, r1, y);
    case 32: return additive_gather_rows<32>(v, x, r0, r1, y);
    default: fail("additive gather: unsupported group size ", v.shape.group_size);
  }
}

// The fastest kernel compiled in for this layout (additive_matvec upgrades Auto to Avx512Table when the
// view carries tiled codes).
inline AdditiveKernel additive_default_kernel(const AdditiveShape& s) {
  if (s.code_bits > 8) return AdditiveKernel::Gather;
  if (s.code_bits == 8) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    return AdditiveKernel::Avx512;
#elif defined(__AVX2__)
    return AdditiveKernel::Avx2;
#endif
  }
  return AdditiveKernel::Scalar;
}

inline bool additive_kernel_available([[maybe_unused]] const AdditiveShape& s, AdditiveKernel k) {
  switch (k) {
    case AdditiveKernel::Auto:
    case AdditiveKernel::Scalar:
    case AdditiveKernel::Gather: return true;
    case AdditiveKernel::Avx2:
#if defined(__AVX2__)
      return s.code_bits == 8;
#else
      return false;
#endif
    case AdditiveKernel::Avx512:
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
      return s.code_bits == 8;
#else
      return false;
#endif
    case AdditiveKernel::Avx512Table:
#if defined(__AVX512F__) && defined(__AVX512BW__)
      return s.code_bits <= 8;  // and the view must carry tiled codes
#else
      return false;
#endif
  }
  return false;
}

// y[rows] = Ŵ x, multithreaded over rows (the table is built once per call, in parallel over groups).
inline void additive_matvec(const AdditiveKernelView& v, const float* x, float* y,
                            AdditiveKernel kernel = AdditiveKernel::Auto) {
  const auto& s = v.shape;
  if (kernel == AdditiveKernel::Auto)
    kernel = v.tiled_codes && additive_kernel_available(s, AdditiveKernel::Avx512Table) ? AdditiveKernel::Avx512Table
                                                                                         : additive_default_kernel(s);
  LOWBIT_CHECK(additive_kernel_available(s, kernel) && (kernel != AdditiveKernel::Avx512Table || v.tiled_codes),
               "additive matvec: the requested kernel is not available for ", s.num_codebooks, "x", s.code_bits,
               " codes on this build");
  if (kernel == AdditiveKernel::Gather) {
    parallel_for(0, s.rows, [&](index_t r0, index_t r1) { additive_gather_rows(v, x, r0, r1, y); }, 32);
    return;
  }
  thread_local std::vector<float> lut, transposed;
  lut.resize(static_cast<std::size_t>(additive_lut_size(s)));
  additive_build_lut(v, x, lut.data(), transposed);
  const float* table = lut.data();
#if defined(__AVX512F__) && defined(__AVX512BW__)
  if (kernel == AdditiveKernel::Avx512Table) {
    thread_local std::vector<std::int16_t> lut16;
    const float delta = additive_quantize_lut(s, table, lut16);
    const std::int16_t* table16 = lut16.data();
    const index_t tiles = (s.rows + kAdditiveTileRows - 1) / kAdditiveTileRows;
    parallel_for(0, tiles, [&](index_t t0, index_t t1) {
      switch (additive_table_stride(s.code_bits)) {
        case 64: additive_lut_rows_avx512_table<2>(v, table16, delta, t0, t1, y); break;
        case 128: additive_lut_rows_avx512_table<4>(v, table16, delta, t0, t1, y); break;
        default: additive_lut_rows_avx512_table<8>(v, table16, delta, t0, t1, y); break;
      }
    });
    return;
  }
#endif
  parallel_for(
      0, s.rows,
      [&](index_t r0, index_t r1) {
        switch (kernel) {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
          case AdditiveKernel::Avx512: additive_lut_rows_avx512(v, table, r0, r1, y); break;
#endif
#if defined(__AVX2__)
          case AdditiveKernel::Avx2: additive_lut_rows_avx2(v, table, r0, r1, y); break;
#endif
          default: additive_lut_rows_scalar(v, table, r0, r1, y); break;
        }
      },
      32);
}

// Rows [r0, r1) of Ŵ into `out` (row stride honoured); row o lands in out.row(o − out_row0).
template <int G>
void additive_dequantize_rows(const AdditiveKernelView& v, index_t r0, index_t r1, MatrixView<float> out,
                              index_t out_row0 = 0) {
  const auto& s = v.shape;
  const index_t K = s.codebook_size(), groups = s.groups();
  const int M = s.num_codebooks;
  for (index_t o = r0; o < r1; ++o) {
    float* dst = out.row(o - out_row0);
    const float scale = v.scales[o];
    for (index_t j = 0; j < groups; ++j) {
      float sum[G];
      const float* c0 = v.codebooks + static_cast<index_t>(additive_code_at(v, o, j * M)) * G;
      for (int d = 0; d < G; ++d) sum[d] = c0[d];
      for (int m = 1; m < M; ++m) {
        const float* cm = v.codebooks + (m * K + additive_code_at(v, o, j * M + m)) * G;
        for (int d = 0; d < G; ++d) sum[d] += cm[d];
      }
      const index_t width = std::min<index_t>(G, s.cols - j * G);
      if (width == G) {
        for (int d = 0; d < G; ++d) dst[j * G + d] = sum[d] * scale;
      } else {
        for (index_t d = 0; d < width; ++d) dst[j * G + d] = sum[d] * scale;
      }
    }
  }
}

// Row r of Ŵ into out[cols].
inline void additive_dequantize_row(const AdditiveKernelView& v, index_t r, float* out) {
  const auto& s = v.shape;
  LOWBIT_CHECK(r >= 0 && r < s.rows, "additive dequantize_row: row ", r, " is outside [0, ", s.rows, ")");
  MatrixView<float> dst(out, 1, s.cols);
  switch (s.group_size) {
    case 2: additive_dequantize_rows<2>(v, r, r + 1, dst, r); break;
    case 4: additive_dequantize_rows<4>(v, r, r + 1, dst, r); break;
    case 8: additive_dequantize_rows<8>(v, r, r + 1, dst, r); break;
    case 16: additive_dequantize_rows<16>(v, r, r + 1, dst, r); break;
    default: additive_dequantize_rows<32>(v, r, r + 1, dst, r); break;
  }
}

inline void additive_dequantize(const AdditiveKernelView& v, MatrixView<float> out) {
  const auto& s = v.shape;
  LOWBIT_CHECK(out.rows() == s.rows && out.cols() == s.cols, "additive dequantize: output is [", out.rows(), ", ",
               out.cols(), "], expected [", s.rows, ", ", s.cols, "]");
  parallel_for(
      0, s.rows,
      [&](index_t r0, index_t r1) {
        switch (s.group_size) {
          case 2: additive_dequantize_rows<2>(v, r0, r1, out); break;
          case 4: additive_dequantize_rows<4>(v, r0, r1, out); break;
          case 8: additive_dequantize_rows<8>(v, r0, r1, out); break;
          case 16: additive_dequantize_rows<16>(v, r0, r1, out); break;
          default: additive_dequantize_rows<32>(v, r0, r1, out); break;
        }
      },
      16);
}

}  // namespace lowbit
