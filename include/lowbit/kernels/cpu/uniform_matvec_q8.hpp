// y ≈ Ŵx for Uniform-quantized weights with int8 activations, the fast approximate sibling of
// uniform_matvec.hpp. x is quantized once per call to int8 in blocks of up to 256 values with one fp32
// scale each (as llama.cpp's Q8 activations); each block's integer dot product Σ code·x8 then runs on
// AVX-512 VNNI (`vpdpbusd`: the unsigned Bits-bit codes are the u8 operand, x8 the s8 one, 64 weights per
// instruction), and the fp32 scale and zero point are applied once per block: with f = scale·d_block,
//   Σ_{c ∈ block} ŵ_c·x̃_c = f·(Σ code_c·x8_c − zero·Σ x8_c),   x̃_c = d_block·x8_c.
// The only approximation is x̃ for x: |x̃_c − x_c| ≤ d_block/2 (plus fp32 rounding), d = max|x_block|/127.
// The exact fp32-activation kernels stay the default; callers opt in (Quantizer::matvec with
// MatvecPrecision::Int8Activations, or uniform_matvec_q8 here). Formats the int8 kernel does not handle
// fall back to the exact uniform_matvec.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "../../core/bitpack.hpp"
#include "../../core/error.hpp"
#include "../../core/parallel.hpp"
#include "../../format/uniform.hpp"
#include "uniform_matvec.hpp"

namespace lowbit::kernels::cpu {

// ---- int8 activations -------------------------------------------------------------------------------

// Largest activation block: whole-row groups and groups longer than this get one x scale per 256 values.
inline constexpr index_t kQ8MaxBlock = 256;
// x8 is zero-padded to a multiple of this (one 512-bit register of int8), so SIMD loops need no tails.
inline constexpr index_t kQ8Pad = 64;

// Activation block (values sharing one int8 scale) of Format on rows of `cols` columns: the weight group
// when it has at most kQ8MaxBlock columns, else kQ8MaxBlock. Every block then lies inside one weight
// group whenever the group is a multiple of kQ8MaxBlock or at most that long.
template <class Format>
constexpr index_t uniform_q8_block(index_t cols) {
  const index_t g = uniform_group_size(Format::group_size, cols);
  return g <= kQ8MaxBlock ? g : kQ8MaxBlock;
}

// std::allocator with 64-byte alignment: a 512-bit load that splits two cache lines costs two.
template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
  friend bool operator==(const CacheLineAllocator&, const CacheLineAllocator&) { return true; }
};
using Q8Vector = std::vector<std::int8_t, CacheLineAllocator<std::int8_t>>;

// x quantized per block: x̃[c] = scale[c / block]·x8[c], x8 ∈ [−127, 127].
struct Q8Activations {
  index_t cols = 0, block = 0, blocks = 0;
  Q8Vector x8;                    // [round_up(cols, kQ8Pad)], zero past cols; 64-byte aligned
  std::vector<float> scale;       // [blocks] d_b = max|x_b| / 127 (0 for an all-zero block)
  std::vector<std::int32_t> sum;  // [blocks] Σ x8 over the block (for the zero-point correction)
};

namespace detail {
// max|x| over n values; NaN wins (as `a > m || a != a ? a : m`, so the result is NaN if any x is).
inline float q8_block_amax(const float* x, index_t n) {
  float amax = 0.0f;
  index_t c = 0;
#if defined(__AVX2__)
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  __m256 m = _mm256_setzero_ps(), nan = _mm256_setzero_ps();
  for (; c + 8 <= n; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    m = _mm256_max_ps(m, _mm256_and_ps(v, abs_mask));
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  if (_mm256_movemask_ps(nan)) return std::numeric_limits<float>::quiet_NaN();
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  h = _mm_max_ss(h, _mm_movehdup_ps(h));
  amax = _mm_cvtss_f32(h);
#endif
  for (; c < n; ++c) {
    const float a = std::fabs(x[c]);
    amax = a > amax || a != a ? a : amax;
  }
  return amax;
}

// x8[c] = clamp(round-to-nearest-even(x[c]·inv), ±127) for c < n; returns Σ x8. The SIMD steps round
// exactly as the scalar ones (one fp32 product, then nearbyint in the default rounding mode).
inline std::int32_t q8_block_round(const float* x, index_t n, float inv, std::int8_t* x8) {
  std::int32_t s = 0;
  index_t c = 0;
#if defined(__AVX2__)
  const __m256 scale = _mm256_set1_ps(inv), lo = _mm256_set1_ps(-127.0f), hi = _mm256_set1_ps(127.0f);
  __m256i sum = _mm256_setzero_si256();
  for (; c + 16 <= n; c += 16) {
    auto q = [&](index_t o) {
      const __m256 v = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x + c + o), scale),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
    };
    const __m256i a = q(0), b = q(8);
    sum = _mm256_add_epi32(sum, _mm256_add_epi32(a, b));
    // int32 -> int16 -> int8 (values are in range, so the saturating packs are exact); packs work per
    // 128-bit lane, so the 16 bytes come out as a0-3 b0-3 a4-7 b4-7 and one dword shuffle restores order
    const __m256i w = _mm256_packs_epi32(a, b);
    const __m128i bytes = _mm_packs_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(x8 + c), _mm_shuffle_epi32(bytes, _MM_SHUFFLE(3, 1, 2, 0)));
  }
  __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
  s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1)));
  s = _mm_cvtsi128_si32(s4);
#endif
  for (; c < n; ++c) {
    // |x·inv| ≤ 127·(1 + 2^−23): never past ±127
    const float q = std::nearbyint(x[c] * inv);
    const auto v = static_cast<std::int8_t>(q > -127.0f ? (q < 127.0f ? q : 127.0f) : -127.0f);
    x8[c] = v;
    s += v;
  }
  return s;
}
}  // namespace detail

// d = max|x|/127, x8 = round-to-nearest-even(x·(127/max|x|)). A NaN or infinite x makes its block's d
// non-finite, so y is not finite either (as with the exact path); x8 stays defined.
inline void quantize_activations_q8(const float* x, index_t cols, index_t block, Q8Activations& out) {
  LOWBIT_CHECK(x != nullptr && cols > 0 && block > 0, "quantize_activations_q8: need x, cols > 0 and block > 0, got ",
               cols, " columns, block ", block);
  out.cols = cols;
  out.block = block;
  out.blocks = (cols + block - 1) / block;
  const index_t padded = (cols + kQ8Pad - 1) / kQ8Pad * kQ8Pad;
  out.x8.assign(static_cast<std::size_t>(padded), 0);
  out.scale.assign(static_cast<std::size_t>(out.blocks), 0.0f);
  out.sum.assign(static_cast<std::size_t>(out.blocks), 0);
  for (index_t b = 0; b < out.blocks; ++b) {
    const index_t c0 = b * block, c1 = std::min(cols, c0 + block);
    const float amax = detail::q8_block_amax(x + c0, c1 - c0);
    if (amax == 0.0f) continue;  // all zero: x8 = 0, scale 0
    const float inv = 127.0f / amax;
    std::int32_t s = 0;
    if (inv > 0.0f && inv < std::numeric_limits<float>::infinity()) {  // the usual case: amax finite, not tiny
      s = detail::q8_block_round(x + c0, c1 - c0, inv, out.x8.data() + c0);
    } else {
      // amax infinite or NaN (inv 0 or NaN), or below 127/FLT_MAX (subnormal: inv would overflow, so
      // divide instead); the comparisons map NaN to −127
      const bool tiny = !(inv < std::numeric_limits<float>::infinity()) && amax == amax;
      for (index_t c = c0; c < c1; ++c) {
        const float q = std::nearbyint(tiny ? x[c] / amax * 127.0f : x[c] * inv);
        const auto v = static_cast<std::int8_t>(q > -127.0f ? (q < 127.0f ? q : 127.0f) : -127.0f);
        out.x8[static_cast<std::size_t>(c)] = v;
        s += v;
      }
    }
    out.scale[static_cast<std::size_t>(b)] = amax / 127.0f;
    out.sum[static_cast<std::size_t>(b)] = s;
  }
}

namespace detail {
// Calls f(std::integral_constant<int, I>{}) for I = 0..N-1 (compile-time unrolling).
template <int N, class F>
inline void q8_unroll(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

inline Q8Activations& scratch_q8() {
  thread_local Q8Activations buffer;
  return buffer;
}

// Per-block factors of the rows a thread works on, and x8 in a kernel's lane order (per thread).
inline std::vector<float>& scratch_q8_factors() {
  thread_local std::vector<float> buffer;
  return buffer;
}
inline Q8Vector& scratch_q8_lane_major() {
  thread_local Q8Vector buffer;
  return buffer;
}
}  // namespace detail

// ---- scalar reference -------------------------------------------------------------------------------

// The int8 arithmetic of the fast path, written out plainly: for every run of columns inside one weight
// group g and one activation block b, the exact integer dot Σ code·x8 and Σ x8 (int64), then
// f = scale_g·d_b in fp32 (as the SIMD kernel rounds it) and y += f·(dot − zero·Σx8) in double.
template <class Format>
void uniform_matvec_q8_reference(const UniformPacked<Format>& packed, const Q8Activations& xa, float* y) {
  detail::check_matvec_args(packed, xa.scale.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols(), "uniform_matvec_q8_reference: activations have ", xa.cols,
               " columns, the matrix ", packed.cols());
  const index_t cols = packed.cols(), gs = packed.group_size();
  for (index_t r = 0; r < packed.rows(); ++r) {
    double acc = 0.0;
    for (index_t c = 0; c < cols;) {
      const index_t g = c / gs, b = c / xa.block;
      const index_t end = std::min({cols, (g + 1) * gs, (b + 1) * xa.block});
      std::int64_t dot = 0, sx = 0;
      for (index_t k = c; k < end; ++k) {
        const std::int64_t v = xa.x8[static_cast<std::size_t>(k)];
        dot += static_cast<std::int64_t>(packed.code(r, k)) * v;
        sx += v;
      }
      const float f = packed.scale(r, g) * xa.scale[static_cast<std::size_t>(b)];
      acc += static_cast<double>(f) * static_cast<double>(dot - static_cast<std::int64_t>(packed.zero(r, g)) * sx);
      c = end;
    }
    y[r] = static_cast<float>(acc);
  }
}

template <class Format>
void uniform_matvec_q8_reference(const UniformPacked<Format>& packed, const float* x, float* y) {
  detail::check_matvec_args(packed, x, y);
  Q8Activations xa;
  quantize_activations_q8(x, packed.cols(), uniform_q8_block<Format>(packed.cols()), xa);
  uniform_matvec_q8_reference(packed, xa, y);
}

// ---- AVX-512 VNNI -----------------------------------------------------------------------------------

// Groups whose activation blocks the kernels can cut out of whole SIMD units: every block must lie in
// one group and start on a unit boundary. Bits ∈ {1, 2, 4} also take groups of 32 (a dpbusd lane holds
// 32/Bits consecutive codes there, so a block is whole lanes; see q8_avx512_row_pow2).
template <class Format>
constexpr bool uniform_q8_groups_fit() {
  constexpr int b = Format::bits, g = Format::group_size;
  return g == whole_row || (g % 64 == 0 && (g <= kQ8MaxBlock || g % kQ8MaxBlock == 0)) ||
         (g == 32 && (b == 1 || b == 2 || b == 4));
}

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
#define LOWBIT_HAVE_UNIFORM_Q8_AVX512 1

// Any Bits (1..8) with groups that fit (above).
template <class Format>
constexpr bool uniform_q8_avx512_supports() {
  return uniform_q8_groups_fit<Format>();
}

namespace detail {

// Software prefetch distance for the code stream: the hardware prefetcher alone left the 4-bit kernel at
// ~12 GB/s from DRAM on one Zen 5 core (measured 733 → 431 µs per 4096x4096 W4g128 call with 1 KiB).
inline constexpr int kQ8PrefetchBytes = 1024;

// Codes 0..63 of a unit (8·Bits bytes) into bytes 0..63 of a register, natural order: `vpermb` copies
// bytes 8j·Bits/8 .. +7 into qword j (codes 8j..8j+7 start there, on a byte boundary), `vpmultishiftqb`
// moves code 8j + k (bits k·Bits of that qword) into byte k, an AND drops the neighbours' bits.
template <int Bits>
struct Q8UnpackPattern {
  alignas(64) std::uint8_t gather[64] = {};
  alignas(64) std::uint8_t shift[64] = {};
  constexpr Q8UnpackPattern() {
    for (int p = 0; p < 64; ++p) {
      gather[p] = static_cast<std::uint8_t>((p / 8) * Bits + p % 8);
      shift[p] = static_cast<std::uint8_t>((p % 8) * Bits);
    }
  }
};

// 64 bytes of packed codes at p. Checked: near the end of the code array (codes_end) the load is masked
// so it never reads past it; elsewhere plain loads (masked loads prefetch badly).
template <bool Checked>
inline __m512i q8_load_codes(const std::uint8_t* p, const std::uint8_t* codes_end) {
  if constexpr (Checked) {
    if (p + 64 > codes_end) {
      const auto left = static_cast<unsigned>(codes_end - p);
      return _mm512_maskz_loadu_epi8((1ull << left) - 1ull, p);
    }
  } else {
    (void)codes_end;
  }
  return _mm512_loadu_si512(p);
}

// Horizontal sum by halving (log depth; the masked forms avoid GCC 12's false -Wmaybe-uninitialized).
inline float q8_hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_maskz_extractf32x8_ps(0xFF, v, 0), _mm512_maskz_extractf32x8_ps(0xFF, v, 1));
  __m128 q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_maskz_extractf32x4_ps(0xF, h, 1));
  q = _mm_add_ps(q, _mm_movehl_ps(q, q));
  q = _mm_add_ss(q, _mm_movehdup_ps(q));
  return _mm_cvtss_f32(q);
}

// Row r's per-block factors f[k] = scale_g(k)·d_k (fp32, as the reference rounds them); returns the
// row's zero-point correction Σ_k f[k]·(zero_g(k)·Σx8_k). One block per group (the usual case) takes 16
// blocks per step: fp16 scales by vcvtph2ps, zero points unpacked like codes, zero·Σx8 exact in int32.
template <class Format>
inline float q8_avx512_row_factors(const UniformPacked<Format>& packed, index_t r, const Q8Activations& xa,
                                   float* f) {
  constexpr int bits = Format::bits;
  constexpr int gsz = Format::group_size;
  const half_t* scales = packed.row_scales(r);
  const std::uint32_t* zeros = packed.row_zeros(r);
  const index_t nb = xa.blocks;
  if constexpr (gsz > 0 && gsz <= kQ8MaxBlock) {
    static constexpr Q8UnpackPattern<bits> pattern{};
    const auto* zero_bytes = reinterpret_cast<const std::uint8_t*>(zeros);
    __m512 corr = _mm512_setzero_ps();
    for (index_t k = 0; k < nb; k += 16) {
      const auto n = static_cast<unsigned>(std::min<index_t>(16, nb - k));
      const auto m = static_cast<__mmask16>((1u << n) - 1u);
      const __m512 s = _mm512_maskz_cvtph_ps(m, _mm256_maskz_loadu_epi16(m, scales + k));
      const __m512 fk = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, xa.scale.data() + k));
      _mm512_mask_storeu_ps(f + k, m, fk);
      __m512i z;
      if constexpr (Format::symmetric) {
        z = _mm512_set1_epi32(static_cast<int>(Format::symmetric_zero));
      } else {
        // zero points k..k+15: 2·Bits bytes from byte k·Bits/8 (k is a multiple of 16)
        const unsigned zbytes = (n * bits + 7) / 8;
        __m512i raw = _mm512_maskz_loadu_epi8((1ull << zbytes) - 1ull, zero_bytes + k * bits / 8);
        if constexpr (bits < 8) {
          raw = _mm512_maskz_permutexvar_epi8(~0ull, _mm512_load_si512(pattern.gather), raw);
          raw = _mm512_and_si512(_mm512_maskz_multishift_epi64_epi8(~0ull, _mm512_load_si512(pattern.shift), raw),
                                 _mm512_set1_epi8(static_cast<char>(Format::max_code)));
        }
        z = _mm512_maskz_cvtepu8_epi32(kAllLanes, _mm512_maskz_extracti32x4_epi32(0xF, raw, 0));
      }
      const __m512i zsx = _mm512_mullo_epi32(z, _mm512_maskz_loadu_epi32(m, xa.sum.data() + k));  // |·| < 2^23
      corr = _mm512_fmadd_ps(fk, _mm512_maskz_cvtepi32_ps(kAllLanes, zsx), corr);
    }
    return q8_hsum(corr);
  } else {
    float corr = 0.0f;
    for (index_t k = 0; k < nb; ++k) {
      const index_t g = gsz > 0 ? k / (gsz / kQ8MaxBlock) : 0;
      f[k] = packed.scale(r, g) * xa.scale[static_cast<std::size_t>(k)];
      const std::int32_t zsx = static_cast<std::int32_t>(packed.zero(r, g)) * xa.sum[static_cast<std::size_t>(k)];
      corr += f[k] * static_cast<float>(zsx);
    }
    return corr;
  }
}

// One row: Σ_k f[k]·Σ_{c ∈ block k} code_c·x8_c. Checked: the row's last 64-byte loads may pass the end of
// the code array (the last rows), so loads there are masked.
template <class Format, bool Checked>
inline float q8_avx512_row(const UniformPacked<Format>& packed, index_t r, const Q8Activations& xa, const float* f,
                           const std::uint8_t* codes_end) {
  constexpr int bits = Format::bits;
  constexpr int unit_bytes = 8 * bits;  // 64 codes
  constexpr int gsz = Format::group_size;
  // Columns of every activation block but a row's last (when a row has more than one block).
  constexpr int seg = gsz > 0 && gsz <= kQ8MaxBlock ? gsz : static_cast<int>(kQ8MaxBlock);
  constexpr int seg_units = seg / 64;
  static constexpr Q8UnpackPattern<bits> pattern{};
  const __m512i gather = _mm512_load_si512(pattern.gather);
  const __m512i shift = _mm512_load_si512(pattern.shift);
  const __m512i mask = _mm512_set1_epi8(static_cast<char>(Format::max_code));
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r));
  const std::int8_t* x8 = xa.x8.data();

  auto unit = [&](const std::uint8_t* p, const std::int8_t* xp, __m512i iacc) {
    const __m512i raw = q8_load_codes<Checked>(p, codes_end);
    __m512i q = raw;
    if constexpr (bits < 8) {
      q = _mm512_maskz_permutexvar_epi8(~0ull, gather, raw);
      q = _mm512_and_si512(_mm512_maskz_multishift_epi64_epi8(~0ull, shift, q), mask);
    }
    return _mm512_dpbusd_epi32(iacc, q, _mm512_loadu_si512(xp));
  };

  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  auto full_block = [&]<int A>(std::integral_constant<int, A>, index_t k) {
    const std::uint8_t* p = bytes + k * seg * bits / 8;
    const std::int8_t* xp = x8 + k * seg;
    for (int i = 0; i < seg * bits / 8; i += 64)
      _mm_prefetch(reinterpret_cast<const char*>(p + i + kQ8PrefetchBytes), _MM_HINT_T0);
    __m512i iacc = _mm512_setzero_si512();
    q8_unroll<seg_units>(
        [&]<int U>(std::integral_constant<int, U>) { iacc = unit(p + U * unit_bytes, xp + U * 64, iacc); });
    acc[A] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, iacc), _mm512_set1_ps(f[k]), acc[A]);
  };

  const index_t last = xa.blocks - 1;
  index_t k = 0;
  for (; k + 4 <= last; k += 4)
    q8_unroll<4>([&]<int A>(std::integral_constant<int, A> a) { full_block(a, k + A); });
  for (; k < last; ++k) full_block(std::integral_constant<int, 0>{}, k);
  // The last block: possibly short (x8 is zero past the row, so the codes read past it add nothing).
  {
    const index_t c0 = last * xa.block;
    const index_t units = (packed.cols() - c0 + 63) / 64;
    __m512i iacc = _mm512_setzero_si512();
    for (index_t u = 0; u < units; ++u) iacc = unit(bytes + (c0 + u * 64) * bits / 8, x8 + c0 + u * 64, iacc);
    acc[1] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, iacc), _mm512_set1_ps(f[last]), acc[1]);
  }
  return q8_hsum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

// Bits ∈ {1, 2, 4}: cheaper than vpermb + vpmultishiftqb. A 64-byte chunk holds C = 512/Bits codes; slot
// j = (bytes >> j·Bits) & mask holds codes (8/Bits)·k + j of the chunk in byte k, so x8 is permuted once
// per call into that order (q8_lane_major) and a chunk costs one load, 8/Bits shift+AND pairs and 8/Bits
// vpdpbusd. dpbusd lane l sums 4 consecutive bytes of each slot, i.e. the codes C·l/16 .. C·(l+1)/16 − 1:
// when a chunk spans several activation blocks, lanes take their block's factor by one vpermps.
template <int Bits>
inline void q8_lane_major(const Q8Activations& xa, Q8Vector& out) {
  constexpr int slots = 8 / Bits, chunk = 64 * slots;
  const index_t n = (xa.cols + chunk - 1) / chunk * chunk;
  out.assign(static_cast<std::size_t>(n), 0);
  std::int8_t* dst = out.data();
  for (index_t q0 = 0; q0 < n; q0 += chunk)
    for (int j = 0; j < slots; ++j)
      for (int k = 0; k < 64; ++k) {
        const index_t c = q0 + slots * k + j;
        dst[q0 + 64 * j + k] = c < xa.cols ? xa.x8[static_cast<std::size_t>(c)] : 0;
      }
}

template <class Format, bool Checked>
inline float q8_avx512_row_pow2(const UniformPacked<Format>& packed, index_t r, const Q8Activations& xa,
                                const std::int8_t* x8p, const float* f, const std::uint8_t* codes_end) {
  constexpr int bits = Format::bits;
  constexpr int slots = 8 / bits, chunk = 64 * slots;
  constexpr int gsz = Format::group_size;
  constexpr int seg = gsz > 0 && gsz <= kQ8MaxBlock ? gsz : static_cast<int>(kQ8MaxBlock);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r));
  const __m512i mask = _mm512_set1_epi8(static_cast<char>(Format::max_code));
  auto do_chunk = [&](index_t q, __m512i iacc) {
    const std::uint8_t* p = bytes + q * 64;
    _mm_prefetch(reinterpret_cast<const char*>(p + kQ8PrefetchBytes), _MM_HINT_T0);
    const __m512i raw = q8_load_codes<Checked>(p, codes_end);
    const std::int8_t* xq = x8p + q * chunk;
    // two partial sums: shorter vpdpbusd dependency chains
    __m512i part[2] = {iacc, _mm512_setzero_si512()};
    q8_unroll<slots>([&]<int J>(std::integral_constant<int, J>) {
      __m512i v = raw;
      if constexpr (J > 0) v = _mm512_maskz_srli_epi16(~__mmask32{0}, raw, J * bits);
      part[J % 2] = _mm512_dpbusd_epi32(part[J % 2], _mm512_and_si512(v, mask), _mm512_load_si512(xq + 64 * J));
    });
    return _mm512_add_epi32(part[0], part[1]);
  };
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  const index_t n_chunks = (packed.cols() + chunk - 1) / chunk;
  if constexpr (seg >= chunk) {
    constexpr int per_block = seg / chunk;
    auto full_block = [&]<int A>(std::integral_constant<int, A>, index_t k) {
      __m512i iacc = _mm512_setzero_si512();
      q8_unroll<per_block>([&]<int T>(std::integral_constant<int, T>) { iacc = do_chunk(k * per_block + T, iacc); });
      acc[A] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, iacc), _mm512_set1_ps(f[k]), acc[A]);
    };
    const index_t last = xa.blocks - 1;
    index_t k = 0;
    for (; k + 4 <= last; k += 4)
      q8_unroll<4>([&]<int A>(std::integral_constant<int, A> a) { full_block(a, k + A); });
    for (; k < last; ++k) full_block(std::integral_constant<int, 0>{}, k);
    __m512i iacc = _mm512_setzero_si512();
    for (index_t q = last * per_block; q < n_chunks; ++q) iacc = do_chunk(q, iacc);
    acc[1] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, iacc), _mm512_set1_ps(f[last]), acc[1]);
  } else {
    constexpr int per_chunk = chunk / seg;  // blocks per chunk: lanes l take block l·per_chunk/16
    alignas(64) static constexpr auto lane_block = [] {
      std::array<std::int32_t, 16> idx{};
      for (int l = 0; l < 16; ++l) idx[static_cast<std::size_t>(l)] = l * per_chunk / 16;
      return idx;
    }();
    const __m512i idx = _mm512_load_si512(lane_block.data());
    auto one = [&]<int A>(std::integral_constant<int, A>, index_t q) {
      const __m512i iacc = do_chunk(q, _mm512_setzero_si512());
      const __m512 fv = _mm512_maskz_permutexvar_ps(kAllLanes, idx, _mm512_loadu_ps(f + q * per_chunk));
      acc[A] = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, iacc), fv, acc[A]);
    };
    index_t q = 0;
    for (; q + 4 <= n_chunks; q += 4)
      q8_unroll<4>([&]<int A>(std::integral_constant<int, A> a) { one(a, q + A); });
    for (; q < n_chunks; ++q) one(std::integral_constant<int, 0>{}, q);
  }
  return q8_hsum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

}  // namespace detail

// y ≈ Ŵx with activations already quantized (xa.block must be uniform_q8_block<Format>(cols)).
template <class Format>
void uniform_matvec_q8_avx512(const UniformPacked<Format>& packed, const Q8Activations& xa, float* y) {
  static_assert(uniform_q8_avx512_supports<Format>(), "uniform_matvec_q8_avx512: format not supported by this path");
  detail::check_matvec_args(packed, xa.scale.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols() && xa.block == uniform_q8_block<Format>(packed.cols()),
               "uniform_matvec_q8_avx512: activations quantized for ", xa.cols, " columns in blocks of ", xa.block,
               ", expected ", packed.cols(), " in blocks of ", uniform_q8_block<Format>(packed.cols()));
  constexpr int bits = Format::bits;
  constexpr bool pow2 = bits == 1 || bits == 2 || bits == 4;
  const auto* codes_end = reinterpret_cast<const std::uint8_t*>(packed.codes().data() + packed.codes().size());
  // Byte offset past the last 64-byte load of a row.
  const index_t row_read = pow2 ? (packed.cols() + 512 / bits - 1) / (512 / bits) * 64
                                : (packed.cols() - 1) / 64 * 8 * bits + 64;
  const std::int8_t* x8p = nullptr;
  if constexpr (pow2) {
    Q8Vector& lane_major = detail::scratch_q8_lane_major();
    detail::q8_lane_major<bits>(xa, lane_major);
    x8p = lane_major.data();
  }
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        // Factors of row r + 1 are computed before row r runs (two buffers): loads right behind the masked
        // stores that wrote them would wait for the stores to retire (no store forwarding), every row.
        std::vector<float>& f = detail::scratch_q8_factors();
        const auto stride = static_cast<std::size_t>(xa.blocks + 16);
        f.assign(2 * stride, 0.0f);  // zeros past the row: read by vpermps
        float* cur = f.data();
        float* next = f.data() + stride;
        float next_corr = detail::q8_avx512_row_factors(packed, r0, xa, cur);
        for (index_t r = r0; r < r1; ++r) {
          const float corr = next_corr;
          if (r + 1 < r1) next_corr = detail::q8_avx512_row_factors(packed, r + 1, xa, next);
          const bool checked = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r)) + row_read > codes_end;
          float dot;
          if constexpr (pow2) {
            dot = checked ? detail::q8_avx512_row_pow2<Format, true>(packed, r, xa, x8p, cur, codes_end)
                          : detail::q8_avx512_row_pow2<Format, false>(packed, r, xa, x8p, cur, codes_end);
          } else {
            dot = checked ? detail::q8_avx512_row<Format, true>(packed, r, xa, cur, codes_end)
                          : detail::q8_avx512_row<Format, false>(packed, r, xa, cur, codes_end);
          }
          y[r] = dot - corr;
          std::swap(cur, next);
        }
      },
      kUniformMinRowsPerThread);
}

template <class Format>
void uniform_matvec_q8_avx512(const UniformPacked<Format>& packed, const float* x, float* y) {
  detail::check_matvec_args(packed, x, y);
  Q8Activations& xa = detail::scratch_q8();
  quantize_activations_q8(x, packed.cols(), uniform_q8_block<Format>(packed.cols()), xa);
  uniform_matvec_q8_avx512(packed, xa, y);
}
#endif  // AVX-512 VNNI + VBMI

// ---- AVX2 (AVX-VNNI vpdpbusd, or vpmaddubsw + vpmaddwd) --------------------------------------------

#if defined(LOWBIT_HAVE_UNIFORM_AVX2)
#define LOWBIT_HAVE_UNIFORM_Q8_AVX2 1
#if defined(__AVXVNNI__)
inline constexpr bool kQ8HaveAvxVnni = true;
#else
inline constexpr bool kQ8HaveAvxVnni = false;
#endif

// Bits ∈ {1, 2, 4} (the codes come out of a 32-byte chunk by shift + AND, as in the AVX-512 pow2 path;
// vpmaddubsw cannot take 8-bit codes without saturating), the same groups as the AVX-512 kernel.
template <class Format>
constexpr bool uniform_q8_avx2_supports() {
  constexpr int b = Format::bits;
  return (b == 1 || b == 2 || b == 4 || b == 8) && uniform_q8_groups_fit<Format>();
}

namespace detail {

// x8 in the order codes leave a 32-byte chunk: x8p[q·C + 32j + k] = x8[q·C + (8/Bits)·k + j], C = 256/Bits.
template <int Bits>
inline void q8_lane_major_avx2(const Q8Activations& xa, Q8Vector& out) {
  constexpr int slots = 8 / Bits, chunk = 32 * slots;
  const index_t n = (xa.cols + chunk - 1) / chunk * chunk;
  out.assign(static_cast<std::size_t>(n), 0);
  for (index_t q0 = 0; q0 < n; q0 += chunk)
    for (int j = 0; j < slots; ++j)
      for (int k = 0; k < 32; ++k) {
        const index_t c = q0 + slots * k + j;
        out[static_cast<std::size_t>(q0 + 32 * j + k)] = c < xa.cols ? xa.x8[static_cast<std::size_t>(c)] : 0;
      }
}

// Σ over 4 consecutive bytes of u·s (u unsigned ≤ 15, s signed) added to the 8 int32 lanes of acc.
template <bool Vnni>
inline __m256i q8_avx2_dot(__m256i acc, __m256i u, __m256i s) {
#if defined(__AVXVNNI__)
  if constexpr (Vnni) return _mm256_dpbusd_avx_epi32(acc, u, s);
#endif
  // |u·s + u'·s'| ≤ 2·15·127: vpmaddubsw never saturates for codes of at most 4 bits
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}

// As q8_avx2_dot for Bits-bit codes; 8-bit codes c are taken as c − 128 (kQ8Avx2CodeOffset): the sign
// moves onto the activation (vpsignb), so |c − 128|·(±s) pairs stay within 2·128·127 < 2^15.
template <int Bits, bool Vnni>
inline __m256i q8_avx2_dot_codes(__m256i acc, __m256i codes, __m256i s) {
  if constexpr (Bits == 8) {
    const __m256i c = _mm256_xor_si256(codes, _mm256_set1_epi8(static_cast<char>(0x80)));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(c), _mm256_sign_epi8(s, c)),
                                                   _mm256_set1_epi16(1)));
  } else {
    return q8_avx2_dot<Vnni>(acc, codes, s);
  }
}

// 8-bit codes enter the dot products as signed c − 128 (vpmaddubsw's unsigned operand is then |c − 128|
// ≤ 128 and its pair sums stay below 2^15; see q8_avx2_dot_codes), so their zero point is taken as
// zero − 128 (0 for the symmetric format). Narrower codes enter as they are.
template <int Bits>
inline constexpr std::int32_t kQ8Avx2CodeOffset = Bits == 8 ? 128 : 0;

// fp16 scale to fp32: one vcvtph2ps where the build has F16C (scales are finite, so it equals the
// portable conversion), else core/half.hpp's.
inline float q8_scale_to_float(half_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h.bits);
#else
  return to_float(h);
#endif
}

// The activation side of the factors for one call: d_k and Σx8_k copied into arrays padded with zeros
// to whole steps of 8 blocks (plus one step), so the row factors below load them without tails.
struct Q8Avx2Side {
  std::vector<float> d;
  std::vector<std::int32_t> sx;
  index_t blocks = 0;
  void assign(const Q8Activations& xa) {
    blocks = xa.blocks;
    const auto n = static_cast<std::size_t>((xa.blocks + 7) / 8 * 8 + 8);
    d.assign(n, 0.0f);
    sx.assign(n, 0);
    std::copy(xa.scale.begin(), xa.scale.end(), d.begin());
    std::copy(xa.sum.begin(), xa.sum.end(), sx.begin());
  }
};
inline Q8Avx2Side& scratch_q8_avx2_side() {
  thread_local Q8Avx2Side side;
  return side;
}

// Row r's factors f[k] = scale·d_k and the zero-point correction, as q8_avx512_row_factors, eight
// blocks per step when each activation block is one whole group of at most 256 columns and the codes
// have 1, 2 or 4 bits (the zero points of 8 groups then lie in one 32-bit word). On rows of a few
// hundred columns this is a third of a row's work, so it does no per-row copying: eight fp16 scales
// are one 16-byte load (read through a copy only where it would pass the end of the scale array), and
// lanes past the row's last block are cleared (their d is 0, but a neighbour row's scale could be
// anything a file holds).
template <class Format>
inline float q8_avx2_row_factors(const UniformPacked<Format>& packed, index_t r, const Q8Avx2Side& side, float* f) {
  constexpr int gsz = Format::group_size, bits = Format::bits;
  const half_t* scales = packed.row_scales(r);
  if constexpr (gsz > 0 && gsz <= kQ8MaxBlock && (bits == 1 || bits == 2 || bits == 4)) {
    const half_t* scales_end = packed.scales().data() + packed.scales().size();
    const std::uint32_t* zeros = packed.row_zeros(r);
    const __m256i shifts = _mm256_setr_epi32(0, bits, 2 * bits, 3 * bits, 4 * bits, 5 * bits, 6 * bits, 7 * bits);
    const __m256i zmask = _mm256_set1_epi32((1 << bits) - 1);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 corr = _mm256_setzero_ps();
    for (index_t k0 = 0; k0 < side.blocks; k0 += 8) {
      __m128i h;
      if (scales + k0 + 8 <= scales_end) {
        h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + k0));
      } else {
        alignas(16) std::uint16_t tail[8] = {};
        std::memcpy(tail, scales + k0, static_cast<std::size_t>(scales_end - (scales + k0)) * sizeof(half_t));
        h = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
      }
      __m256 fv = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_loadu_ps(side.d.data() + k0));
      if (k0 + 8 > side.blocks) {
        const __m256i live = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(side.blocks - k0)), lane);
        fv = _mm256_and_ps(fv, _mm256_castsi256_ps(live));
      }
      _mm256_storeu_ps(f + k0, fv);  // f has 8 slots past the last block
      __m256i z;
      if constexpr (Format::symmetric) {
        z = _mm256_set1_epi32(static_cast<int>(Format::symmetric_zero));
      } else {
        const std::uint32_t word = zeros[k0 * bits / 32] >> ((k0 * bits) % 32);
        z = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts), zmask);
      }
      const __m256i zsx =
          _mm256_mullo_epi32(z, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(side.sx.data() + k0)));
      corr = _mm256_fmadd_ps(fv, _mm256_cvtepi32_ps(zsx), corr);
    }
    return avx2_hsum(corr);
  }
  float corr = 0.0f;
  for (index_t k = 0; k < side.blocks; ++k) {
    index_t g = 0;
    if constexpr (gsz > 0) g = gsz <= kQ8MaxBlock ? k : k / (gsz / kQ8MaxBlock);
    f[k] = q8_scale_to_float(scales[g]) * side.d[static_cast<std::size_t>(k)];
    const std::int32_t zero = static_cast<std::int32_t>(packed.zero(r, g)) - kQ8Avx2CodeOffset<Format::bits>;
    if (zero == 0) continue;
    const std::int32_t zsx = zero * side.sx[static_cast<std::size_t>(k)];
    corr += f[k] * static_cast<float>(zsx);
  }
  return corr;
}

// Whether a block's vpmaddubsw pair sums can be added as int16 with one vpmaddwd per block instead of
// one per product: codes of at most 4 bits, and a lane's sum of max(seg, chunk)/32 products, each at
// most 2·max_code·127 in magnitude, fits in int16 (4-bit codes in blocks of 256: 8·3810 = 30480).
template <class Format, bool Vnni>
constexpr bool q8_avx2_int16_sums() {
  constexpr int bits = Format::bits, chunk = 256, gsz = Format::group_size;
  constexpr int seg = gsz > 0 && gsz <= kQ8MaxBlock ? gsz : static_cast<int>(kQ8MaxBlock);
  constexpr int products = (seg > chunk / bits ? seg : chunk / bits) / 32;
  return !Vnni && bits <= 4 && products * 2 * Format::max_code * 127 <= 32767;
}

// One row: Σ_k f[k]·Σ_{c ∈ block k} code_c·x8_c. Checked: the row's last 32-byte loads may pass the end
// of the code array (the last rows), so loads there go through a copy. (Two or four rows per step, sharing
// each activation load, measured slower on an AVX2-only Zen core: the accumulators spill.)
template <class Format, bool Vnni, bool Checked>
inline float q8_avx2_row(const UniformPacked<Format>& packed, index_t r, const Q8Activations& xa,
                         const std::int8_t* x8p, const float* f, const std::uint8_t* codes_end) {
  constexpr int bits = Format::bits;
  constexpr int slots = 8 / bits, chunk = 32 * slots;
  constexpr int gsz = Format::group_size;
  constexpr int seg = gsz > 0 && gsz <= kQ8MaxBlock ? gsz : static_cast<int>(kQ8MaxBlock);
  constexpr bool int16_sums = q8_avx2_int16_sums<Format, Vnni>();
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(Format::max_code));
  const __m256i ones = _mm256_set1_epi16(1);
  (void)mask, (void)ones;  // 8-bit codes need no mask; only int16 sums need the ones
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r));
  auto load = [&](const std::uint8_t* p) LOWBIT_ALWAYS_INLINE {
    if constexpr (Checked) {
      if (p + 32 > codes_end) {
        alignas(32) std::uint8_t tail[32] = {};
        std::memcpy(tail, p, static_cast<std::size_t>(codes_end - p));
        return _mm256_load_si256(reinterpret_cast<const __m256i*>(tail));
      }
    } else {
      (void)codes_end;
    }
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  };
  // Chunk q into the integer accumulator.
  auto do_chunk = [&](index_t q, __m256i iacc) LOWBIT_ALWAYS_INLINE {
    const __m256i raw = load(bytes + q * 32);
    const std::int8_t* xq = x8p + q * chunk;
    q8_unroll<slots>([&]<int J>(std::integral_constant<int, J>) {
      const __m256i xs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32 * J));
      __m256i v = raw;
      if constexpr (J > 0) v = _mm256_srli_epi16(v, J * bits);
      if constexpr (bits < 8) v = _mm256_and_si256(v, mask);
      if constexpr (int16_sums)
        iacc = _mm256_add_epi16(iacc, _mm256_maddubs_epi16(v, xs));
      else
        iacc = q8_avx2_dot_codes<bits, Vnni>(iacc, v, xs);
    });
    return iacc;
  };
  // The row's last chunk when it holds at most chunk/2 columns (576 columns of 2-bit codes: 4.5 chunks):
  // its codes and x8 lie in the low 16 bytes of each 32, so 128-bit steps do it at half the cost (an
  // AVX2 Zen core splits 256-bit operations in two). int16 sums only (the 128-bit dot is maddubs).
  auto do_half_chunk = [&](index_t q, __m256i iacc) LOWBIT_ALWAYS_INLINE {
    __m128i raw;
    const std::uint8_t* p = bytes + q * 32;
    if (Checked && p + 16 > codes_end) {
      alignas(16) std::uint8_t tail[16] = {};
      std::memcpy(tail, p, static_cast<std::size_t>(codes_end - p));
      raw = _mm_load_si128(reinterpret_cast<const __m128i*>(tail));
    } else {
      raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    }
    const std::int8_t* xq = x8p + q * chunk;
    __m128i half = _mm_setzero_si128();
    q8_unroll<slots>([&]<int J>(std::integral_constant<int, J>) {
      const __m128i xs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(xq + 32 * J));
      __m128i v = raw;
      if constexpr (J > 0) v = _mm_srli_epi16(v, J * bits);
      v = _mm_and_si128(v, _mm256_castsi256_si128(mask));
      half = _mm_add_epi16(half, _mm_maddubs_epi16(v, xs));
    });
    return _mm256_add_epi16(iacc, _mm256_zextsi128_si256(half));
  };
  const bool half_tail = int16_sums && packed.cols() - (packed.cols() - 1) / chunk * chunk <= chunk / 2;
  (void)do_half_chunk, (void)half_tail;
  auto to_float = [&](__m256i v) LOWBIT_ALWAYS_INLINE {
    if constexpr (int16_sums) v = _mm256_madd_epi16(v, ones);
    return _mm256_cvtepi32_ps(v);
  };
  __m256 acc = _mm256_setzero_ps();
  const index_t n_chunks = (packed.cols() + chunk - 1) / chunk;
  if constexpr (seg >= chunk) {
    constexpr int per_block = seg / chunk;
    const index_t last = xa.blocks - 1;
    auto block = [&](index_t k, index_t q0, index_t q1, bool last_block) LOWBIT_ALWAYS_INLINE {
      __m256i iacc = _mm256_setzero_si256();
      if (!last_block)
        q8_unroll<per_block>([&]<int T>(std::integral_constant<int, T>) { iacc = do_chunk(q0 + T, iacc); });
      else
        for (index_t q = q0; q < q1; ++q) {
          if constexpr (int16_sums) {
            if (half_tail && q == n_chunks - 1) {
              iacc = do_half_chunk(q, iacc);
              continue;
            }
          }
          iacc = do_chunk(q, iacc);
        }
      acc = _mm256_fmadd_ps(to_float(iacc), _mm256_set1_ps(f[k]), acc);
    };
    for (index_t k = 0; k < last; ++k) block(k, k * per_block, (k + 1) * per_block, false);
    block(last, last * per_block, n_chunks, true);  // possibly short: x8 is zero past the row
  } else {
    constexpr int per_chunk = chunk / seg;  // lanes l take block l·per_chunk/8
    const __m256i idx = _mm256_setr_epi32(0, 1 * per_chunk / 8, 2 * per_chunk / 8, 3 * per_chunk / 8, 4 * per_chunk / 8,
                                          5 * per_chunk / 8, 6 * per_chunk / 8, 7 * per_chunk / 8);
    for (index_t q = 0; q < n_chunks; ++q) {
      const __m256i iacc = do_chunk(q, _mm256_setzero_si256());
      const __m256 fv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(f + q * per_chunk), idx);
      acc = _mm256_fmadd_ps(to_float(iacc), fv, acc);
    }
  }
  return avx2_hsum(acc);
}

}  // namespace detail

// y ≈ Ŵx with activations already quantized; Vnni: AVX-VNNI vpdpbusd, else vpmaddubsw + vpmaddwd.
template <class Format, bool Vnni = kQ8HaveAvxVnni>
void uniform_matvec_q8_avx2(const UniformPacked<Format>& packed, const Q8Activations& xa, float* y) {
  static_assert(uniform_q8_avx2_supports<Format>(), "uniform_matvec_q8_avx2: format not supported by this path");
  static_assert(!Vnni || kQ8HaveAvxVnni, "uniform_matvec_q8_avx2: this build does not target AVX-VNNI");
  detail::check_matvec_args(packed, xa.scale.data(), y);
  LOWBIT_CHECK(xa.cols == packed.cols() && xa.block == uniform_q8_block<Format>(packed.cols()),
               "uniform_matvec_q8_avx2: activations quantized for ", xa.cols, " columns in blocks of ", xa.block,
               ", expected ", packed.cols(), " in blocks of ", uniform_q8_block<Format>(packed.cols()));
  constexpr int bits = Format::bits;
  const auto* codes_end = reinterpret_cast<const std::uint8_t*>(packed.codes().data() + packed.codes().size());
  const index_t row_read = (packed.cols() + 256 / bits - 1) / (256 / bits) * 32;
  Q8Vector& lane_major = detail::scratch_q8_lane_major();
  detail::q8_lane_major_avx2<bits>(xa, lane_major);
  const std::int8_t* x8p = lane_major.data();
  detail::Q8Avx2Side& side = detail::scratch_q8_avx2_side();
  side.assign(xa);
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        std::vector<float>& f = detail::scratch_q8_factors();
        f.assign(static_cast<std::size_t>(xa.blocks + 8), 0.0f);  // zeros past the row: read by vpermps
        for (index_t r = r0; r < r1; ++r) {
          const float corr = detail::q8_avx2_row_factors(packed, r, side, f.data());
          const bool checked = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r)) + row_read > codes_end;
          const float dot = checked ? detail::q8_avx2_row<Format, Vnni, true>(packed, r, xa, x8p, f.data(), codes_end)
                                    : detail::q8_avx2_row<Format, Vnni, false>(packed, r, xa, x8p, f.data(), codes_end);
          y[r] = dot - corr;
        }
      },
      kUniformMinRowsPerThread);
}

template <class Format, bool Vnni = kQ8HaveAvxVnni>
void uniform_matvec_q8_avx2(const UniformPacked<Format>& packed, const float* x, float* y) {
  detail::check_matvec_args(packed, x, y);
  Q8Activations& xa = detail::scratch_q8();
  quantize_activations_q8(x, packed.cols(), uniform_q8_block<Format>(packed.cols()), xa);
  uniform_matvec_q8_avx2<Format, Vnni>(packed, xa, y);
}
#endif  // AVX2

// ---- dispatch ---------------------------------------------------------------------------------------

// Whether uniform_matvec_q8 quantizes activations for Format on this build (else it is the exact path).
template <class Format>
constexpr bool uniform_q8_supported() {
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  if constexpr (uniform_q8_avx512_supports<Format>()) return true;
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  if constexpr (uniform_q8_avx2_supports<Format>()) return true;
#endif
  return false;
}

// Which path uniform_matvec_q8 takes: "avx512-vnni", "avx2-vnni", "avx2" (vpmaddubsw), or "exact"
// (uniform_matvec with fp32 activations).
template <class Format>
constexpr const char* uniform_matvec_q8_path() {
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  if constexpr (uniform_q8_avx512_supports<Format>()) return "avx512-vnni";
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  if constexpr (uniform_q8_avx2_supports<Format>()) return kQ8HaveAvxVnni ? "avx2-vnni" : "avx2";
#endif
  return "exact";
}

// y ≈ Ŵx with int8 activations where this build has a kernel for Format; otherwise the exact
// fp32-activation uniform_matvec (never a slow path).
template <class Format>
void uniform_matvec_q8(const UniformPacked<Format>& packed, const float* x, float* y) {
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  if constexpr (uniform_q8_avx512_supports<Format>()) {
    uniform_matvec_q8_avx512(packed, x, y);
    return;
  }
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  if constexpr (uniform_q8_avx2_supports<Format>()) {
    uniform_matvec_q8_avx2(packed, x, y);
    return;
  }
#endif
  uniform_matvec(packed, x, y);
}

}  // namespace lowbit::kernels::cpu
