// y = Ŵx for Uniform-quantized weights on the CPU, without materializing Ŵ. A matvec on one token is
// memory-bound, so the fast paths read only the packed codes (Bits/32 of fp32 traffic) and rebuild
// weights in registers: with Bits ≤ 4 every group's 2^Bits possible values (q − z)·s sit in one
// 16-float register and `vpermps` turns codes into weights in one instruction. x is permuted once per
// call into the order in which codes come out of a byte (lane-major), so no code shuffling is needed.
//
// Paths: `uniform_matvec_reference` (double accumulation, obviously correct), `uniform_matvec_scalar`
// (portable, float), `uniform_matvec_avx2` and `uniform_matvec_avx512`
// (compiled when the compiler targets them); `uniform_matvec` picks the best one that supports the format.
// All run multithreaded over rows with parallel_for; each row is computed by exactly one thread.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
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

// Forces a kernel's helper lambda inline. GCC outlines a lambda that has two call sites, and a chunk step
// out of line passes its vector accumulators through memory (the AVX2 int8 kernel ran 1.6x slower so).
#if !defined(LOWBIT_ALWAYS_INLINE)
#if defined(__GNUC__)
#define LOWBIT_ALWAYS_INLINE __attribute__((always_inline))
#else
#define LOWBIT_ALWAYS_INLINE
#endif
#endif

namespace lowbit::kernels::cpu {

// Rows per parallel_for chunk floor: below this a thread's slice costs less than waking it.
inline constexpr index_t kUniformMinRowsPerThread = 16;

namespace detail {
template <class Format>
void check_matvec_args(const UniformPacked<Format>& packed, const float* x, const float* y) {
  LOWBIT_CHECK(packed.rows() > 0 && packed.cols() > 0, "uniform matvec: packed matrix is empty");
  LOWBIT_CHECK(x != nullptr && y != nullptr, "uniform matvec: x and y must not be null");
}
}  // namespace detail

// ---- reference ------------------------------------------------------------------------------------

// Decodes every weight with uniform_decode and accumulates in double.
template <class Format>
void uniform_matvec_reference(const UniformPacked<Format>& packed, const float* x, float* y) {
  detail::check_matvec_args(packed, x, y);
  for (index_t r = 0; r < packed.rows(); ++r) {
    double acc = 0.0;
    for (index_t g = 0; g < packed.groups_per_row(); ++g) {
      const UniformGroupParams p = packed.params(r, g);
      for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c)
        acc += static_cast<double>(uniform_decode(packed.code(r, c), p)) * static_cast<double>(x[c]);
    }
    y[r] = static_cast<float>(acc);
  }
}

// ---- portable scalar --------------------------------------------------------------------------------

template <class Format>
void uniform_matvec_scalar(const UniformPacked<Format>& packed, const float* x, float* y) {
  detail::check_matvec_args(packed, x, y);
  constexpr int bits = Format::bits;
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) {
          const std::uint32_t* words = packed.row_codes(r);
          float acc = 0.0f;
          for (index_t g = 0; g < packed.groups_per_row(); ++g) {
            const float s = packed.scale(r, g);
            const std::uint32_t z = packed.zero(r, g);
            for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c)
              acc += uniform_decode(unpack_code<bits>(words, c), s, z) * x[c];
          }
          y[r] = acc;
        }
      },
      kUniformMinRowsPerThread);
}

// ---- SIMD paths -------------------------------------------------------------------------------------

namespace detail {

// Codes of one SIMD "unit" (Lanes consecutive lane values) come from a byte-lane load: lane k of slot j
// of a chunk holds code chunk_begin + k·(8/Bits) + j. Returns x permuted accordingly over the full
// chunks of each group; the tail of a group (fewer codes than a chunk) stays in natural order and is
// read from x directly.
template <int Bits, int Lanes>
constexpr int chunk_codes() {
  return Lanes * (8 / Bits);
}

template <int Bits, int Lanes>
void permute_x_lane_major(const float* x, index_t cols, index_t group_size, std::vector<float>& out) {
  constexpr int slots = 8 / Bits;
  constexpr int chunk = chunk_codes<Bits, Lanes>();
  out.assign(static_cast<std::size_t>(cols), 0.0f);
  for (index_t g0 = 0; g0 < cols; g0 += group_size) {
    const index_t g1 = std::min(cols, g0 + group_size);
    const index_t full = g0 + (g1 - g0) / chunk * chunk;
    for (index_t c0 = g0; c0 < full; c0 += chunk)
      for (int j = 0; j < slots; ++j)
        for (int k = 0; k < Lanes; ++k) out[static_cast<std::size_t>(c0 + j * Lanes + k)] = x[c0 + k * slots + j];
    for (index_t c = full; c < g1; ++c) out[static_cast<std::size_t>(c)] = x[c];
  }
}

// Scalar dot of the codes [c0, c1) of one row with x, decoded with group parameters (s, z).
template <int Bits>
inline float tail_dot(const std::uint32_t* words, const float* x, index_t c0, index_t c1, float s,
                      std::uint32_t z) {
  float acc = 0.0f;
  for (index_t c = c0; c < c1; ++c) acc += uniform_decode(unpack_code<Bits>(words, c), s, z) * x[c];
  return acc;
}

inline std::vector<float>& scratch_x() {
  thread_local std::vector<float> buffer;
  return buffer;
}

}  // namespace detail

#if defined(__AVX512F__) && defined(__AVX512BW__)
#define LOWBIT_HAVE_UNIFORM_AVX512 1

// Whether the AVX-512 kernel handles this format (others fall back to the portable path).
template <class Format>
constexpr bool uniform_avx512_supports() {
  constexpr int b = Format::bits;
  if constexpr (32 % b == 0) {
    return Format::group_size == whole_row || Format::group_size % (16 * (8 / b)) == 0;
  } else {
#if defined(__AVX512VBMI__)
    return Format::group_size == whole_row || Format::group_size % 64 == 0;
#else
    return false;
#endif
  }
}

namespace detail {

// Unmasked intrinsics of GCC 12 read an "undefined" register that -Wall flags as uninitialized (GCC bug
// 105593); the all-lanes masked forms compile to the same instructions without the false warning.
inline constexpr __mmask16 kAllLanes = 0xFFFF;

// Horizontal sum (written out: GCC 12's _mm512_reduce_add_ps trips the same warning).
inline float avx512_hsum(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float sum = 0.0f;
  for (float lane : lanes) sum += lane;
  return sum;
}

// 16 weights from 16 lane codes (code in the low Bits of each lane, higher bits arbitrary).
template <int Bits>
inline __m512 avx512_decode(__m512i lane_codes, __m512 table, __m512 scale, __m512 neg_zero_scale) {
  if constexpr (Bits <= 4) {
    (void)scale;
    (void)neg_zero_scale;
    return _mm512_maskz_permutexvar_ps(kAllLanes, lane_codes, table);  // table[i]: weight of the code in low 4 bits i
  } else {
    (void)table;
    const __m512i q = _mm512_and_si512(lane_codes, _mm512_set1_epi32((1 << Bits) - 1));
    return _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(kAllLanes, q), scale, neg_zero_scale);
  }
}

// Calls f(std::integral_constant<int, I>{}) for I = 0..N-1 (compile-time unrolling).
template <int N, class F>
inline void for_each_index(F&& f) {
  [&]<int... I>(std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
  }(std::make_integer_sequence<int, N>{});
}

inline float scale_to_float(half_t h) {
#if defined(__F16C__)
  return _cvtsh_ss(h.bits);
#else
  return to_float(h);
#endif
}

// values[z][t][i] = ((i >> t·Bits) & max_code) − z: for every zero point, the integer weight of code t
// among the 4/Bits codes in a 4-bit lookup index (Bits ≤ 4); scaled by the group's scale per group.
template <int Bits, int CodesPerIndex>
struct CodeMinusZeroTables {
  static constexpr int zero_points = Bits <= 4 ? (1 << Bits) : 1;
  alignas(64) float values[zero_points][CodesPerIndex][16] = {};
  constexpr CodeMinusZeroTables() {
    for (int z = 0; z < zero_points; ++z)
      for (int t = 0; t < CodesPerIndex; ++t)
        for (int i = 0; i < 16; ++i)
          values[z][t][i] = static_cast<float>(((i >> (t * Bits)) & ((1 << Bits) - 1)) - z);
  }
};

// One row, power-of-two Bits: chunks of 16 bytes (16·8/Bits codes), x already lane-major permuted.
// Full groups of a compile-time GroupSize are unrolled; the short last group (or a whole-row group)
// takes a runtime loop and a scalar tail.
template <class Format>
inline float avx512_row_pow2(const UniformPacked<Format>& packed, index_t r, const float* xp, const float* x) {
  constexpr int bits = Format::bits;
  constexpr int slots = 8 / bits;
  constexpr int chunk = 16 * slots;
  constexpr int chunk_bytes = 16;
  // vpermps reads the low 4 bits of a lane, i.e. 4/Bits codes at once: table t maps those bits to the
  // weight of code t among them, so a lane needs a shift only every 4 bits, not every code.
  constexpr int codes_per_index = bits <= 4 ? 4 / bits : 1;
  const std::uint32_t* words = packed.row_codes(r);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(words);
  const half_t* scales = packed.row_scales(r);
  const std::uint32_t* zeros = packed.row_zeros(r);
  static constexpr CodeMinusZeroTables<bits, codes_per_index> code_tables{};
  // 8 accumulators: FMA latency (4 cycles) × 2 FMA pipes; with 4 the loop was latency-bound.
  constexpr int n_acc = 8;
  __m512 acc[n_acc];
  for (auto& a : acc) a = _mm512_setzero_ps();
  __m512 table[codes_per_index];
  __m512 scale = _mm512_setzero_ps(), neg_zero_scale = _mm512_setzero_ps();
  float s = 0.0f;
  std::uint32_t z = 0;
  auto setup_group = [&](index_t g) {
    s = scale_to_float(scales[g]);
    if constexpr (Format::symmetric) {
      z = Format::symmetric_zero;
    } else {
      z = unpack_code<bits>(zeros, g);
    }
    scale = _mm512_set1_ps(s);
    neg_zero_scale = _mm512_set1_ps(-static_cast<float>(z) * s);
    if constexpr (bits <= 4) {
      for (int t = 0; t < codes_per_index; ++t) table[t] = _mm512_mul_ps(_mm512_load_ps(code_tables.values[z][t]), scale);
    }
  };
  // Chunk k of a group feeds accumulators (k·slots + J) mod 8, so consecutive FMAs are independent.
  auto do_chunk = [&]<int K>(std::integral_constant<int, K>, const std::uint8_t* chunk_bytes_ptr, const float* xc) {
    const __m512i d =
        _mm512_maskz_cvtepu8_epi32(kAllLanes, _mm_loadu_si128(reinterpret_cast<const __m128i*>(chunk_bytes_ptr)));
    for_each_index<slots>([&]<int J>(std::integral_constant<int, J>) {
      constexpr int shift = bits <= 4 ? (J / codes_per_index) * 4 : J * bits;
      const __m512i lane_codes = shift == 0 ? d : _mm512_maskz_srli_epi32(kAllLanes, d, shift);
      const __m512 w = avx512_decode<bits>(lane_codes, table[J % codes_per_index], scale, neg_zero_scale);
      acc[(K * slots + J) % n_acc] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xc + J * 16), acc[(K * slots + J) % n_acc]);
    });
  };
  index_t g = 0;
  if constexpr (Format::group_size > 0) {
    constexpr int chunks_per_group = Format::group_size / chunk;
    const index_t full_groups = packed.cols() / Format::group_size;
    const std::uint8_t* bp = bytes;
    const float* xc = xp;
    for (; g < full_groups; ++g) {
      setup_group(g);
      for_each_index<chunks_per_group>([&]<int K>(std::integral_constant<int, K> k) {
        do_chunk(k, bp + K * chunk_bytes, xc + K * chunk);
      });
      bp += chunks_per_group * chunk_bytes;
      xc += Format::group_size;
    }
  }
  float tail = 0.0f;
  for (; g < packed.groups_per_row(); ++g) {
    const index_t c0 = packed.group_begin(g), c1 = packed.group_end(g);
    setup_group(g);
    const index_t full = c0 + (c1 - c0) / chunk * chunk;
    index_t c = c0;
    for (; c + 2 * chunk <= full; c += 2 * chunk) {
      do_chunk(std::integral_constant<int, 0>{}, bytes + c * bits / 8, xp + c);
      do_chunk(std::integral_constant<int, 1>{}, bytes + (c + chunk) * bits / 8, xp + c + chunk);
    }
    if (c < full) {
      do_chunk(std::integral_constant<int, 0>{}, bytes + c * bits / 8, xp + c);
      c += chunk;
    }
    if (c < c1) tail += detail::tail_dot<bits>(words, x, c, c1, s, z);
  }
  for (int i = 1; i < n_acc; ++i) acc[0] = _mm512_add_ps(acc[0], acc[i]);
  return avx512_hsum(acc[0]) + tail;
}

#if defined(__AVX512VBMI__)
// For unit u (codes 16u..16u+15 of a 64-code block), lane k: the two bytes holding code 16u + k and the
// bit offset of the code in the first of them.
template <int Bits>
struct OddBitsPattern {
  alignas(64) std::uint8_t bytes[4][64] = {};
  alignas(64) std::uint32_t shifts[4][16] = {};
  constexpr OddBitsPattern() {
    for (int u = 0; u < 4; ++u)
      for (int k = 0; k < 16; ++k) {
        const int bit = (u * 16 + k) * Bits;
        bytes[u][4 * k + 0] = static_cast<std::uint8_t>(bit / 8);
        bytes[u][4 * k + 1] = static_cast<std::uint8_t>(bit / 8 + 1);
        shifts[u][k] = static_cast<std::uint32_t>(bit % 8);
      }
  }
};

// One row, Bits ∈ {3, 5, 6, 7}: blocks of 64 codes (8·Bits bytes); `vpermb` moves the two bytes that hold
// each code into its lane and a per-lane shift aligns it. x stays in natural order.
template <class Format>
inline float avx512_row_odd(const UniformPacked<Format>& packed, index_t r, const float* x) {
  constexpr int bits = Format::bits;
  constexpr int block = 64;
  const std::uint32_t* words = packed.row_codes(r);
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(words);
  // byte gather pattern and shift per lane for the four 16-code units of a block (built once)
  static constexpr OddBitsPattern<bits> pattern{};
  __m512i gather[4], shift[4];
  for (int u = 0; u < 4; ++u) {
    gather[u] = _mm512_load_si512(pattern.bytes[u]);
    shift[u] = _mm512_load_si512(pattern.shifts[u]);
  }
  __m512 table_index = _mm512_setzero_ps();
  if constexpr (bits <= 4) {
    alignas(64) float idx[16];
    for (int i = 0; i < 16; ++i) idx[i] = static_cast<float>(i & static_cast<int>(Format::max_code));
    table_index = _mm512_load_ps(idx);
  }
  // A block is 8·Bits ≤ 56 bytes of codes.
  constexpr int block_bytes = bits * 8;
  const auto* codes_end = reinterpret_cast<const std::uint8_t*>(packed.codes().data() + packed.codes().size());
  const half_t* scales = packed.row_scales(r);
  const std::uint32_t* zeros = packed.row_zeros(r);
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  __m512 table = table_index, scale = table_index, neg_zero_scale = table_index;
  float s = 0.0f;
  std::uint32_t z = 0;
  auto setup_group = [&](index_t g) {
    s = scale_to_float(scales[g]);
    if constexpr (Format::symmetric) {
      z = Format::symmetric_zero;
    } else {
      z = unpack_code<bits>(zeros, g);
    }
    scale = _mm512_set1_ps(s);
    neg_zero_scale = _mm512_set1_ps(-static_cast<float>(z) * s);
    table = _mm512_mul_ps(_mm512_sub_ps(table_index, _mm512_set1_ps(static_cast<float>(z))), scale);
  };
  auto do_block = [&](const std::uint8_t* block_ptr, const float* xc) {
    // A plain 64-byte load wherever it stays inside the code array: masked loads are not prefetched
    // well (measured 3x slower on Zen 5 once the codes spill out of L2).
    const __m512i raw = block_ptr + 64 <= codes_end ? _mm512_loadu_si512(block_ptr)
                                                    : _mm512_maskz_loadu_epi8((1ull << (bits * 8)) - 1ull, block_ptr);
    for_each_index<4>([&]<int U>(std::integral_constant<int, U>) {
      const __m512i lane_codes =
          _mm512_maskz_srlv_epi32(kAllLanes, _mm512_maskz_permutexvar_epi8(~0ull, gather[U], raw), shift[U]);
      const __m512 w = avx512_decode<bits>(lane_codes, table, scale, neg_zero_scale);
      acc[U] = _mm512_fmadd_ps(w, _mm512_loadu_ps(xc + U * 16), acc[U]);
    });
  };
  index_t g = 0;
  if constexpr (Format::group_size > 0) {
    constexpr int blocks_per_group = Format::group_size / block;
    const index_t full_groups = packed.cols() / Format::group_size;
    const std::uint8_t* bp = bytes;
    const float* xc = x;
    for (; g < full_groups; ++g) {
      setup_group(g);
      for_each_index<blocks_per_group>([&]<int K>(std::integral_constant<int, K>) {
        do_block(bp + K * block_bytes, xc + K * block);
      });
      bp += blocks_per_group * block_bytes;
      xc += Format::group_size;
    }
  }
  float tail = 0.0f;
  for (; g < packed.groups_per_row(); ++g) {
    const index_t c0 = packed.group_begin(g), c1 = packed.group_end(g);
    setup_group(g);
    const index_t full = c0 + (c1 - c0) / block * block;
    index_t c = c0;
    for (; c < full; c += block) do_block(bytes + c * bits / 8, x + c);
    if (c < c1) tail += detail::tail_dot<bits>(words, x, c, c1, s, z);
  }
  return avx512_hsum(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]))) + tail;
}
#endif

}  // namespace detail

template <class Format>
void uniform_matvec_avx512(const UniformPacked<Format>& packed, const float* x, float* y) {
  static_assert(uniform_avx512_supports<Format>(), "uniform_matvec_avx512: format not supported by this path");
  detail::check_matvec_args(packed, x, y);
  constexpr int bits = Format::bits;
  if constexpr (32 % bits == 0) {
    std::vector<float>& xp = detail::scratch_x();
    detail::permute_x_lane_major<bits, 16>(x, packed.cols(), packed.group_size(), xp);
    const float* xpp = xp.data();
    parallel_for(
        0, packed.rows(),
        [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) y[r] = detail::avx512_row_pow2(packed, r, xpp, x);
        },
        kUniformMinRowsPerThread);
  } else {
#if defined(__AVX512VBMI__)
    parallel_for(
        0, packed.rows(),
        [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) y[r] = detail::avx512_row_odd(packed, r, x);
        },
        kUniformMinRowsPerThread);
#endif
  }
}
#endif  // AVX-512

#if defined(__AVX2__) && defined(__FMA__)
#define LOWBIT_HAVE_UNIFORM_AVX2 1

template <class Format>
constexpr bool uniform_avx2_supports() {
  constexpr int b = Format::bits;
  if constexpr (32 % b == 0) {
    return Format::group_size == whole_row || Format::group_size % (8 * (8 / b)) == 0;
  } else {
    return false;
  }
}

namespace detail {
inline float avx2_hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One row, power-of-two Bits: chunks of 8 bytes (8·8/Bits codes), weights by convert + fma.
template <class Format>
inline float avx2_row_pow2(const UniformPacked<Format>& packed, index_t r, const float* xp, const float* x) {
  constexpr int bits = Format::bits;
  constexpr int slots = 8 / bits;
  constexpr int chunk = 8 * slots;
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(packed.row_codes(r));
  const __m256i mask = _mm256_set1_epi32(static_cast<int>(Format::max_code));
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  float tail = 0.0f;
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    const index_t c0 = packed.group_begin(g), c1 = packed.group_end(g);
    const float s = packed.scale(r, g);
    const std::uint32_t z = packed.zero(r, g);
    const __m256 scale = _mm256_set1_ps(s);
    const __m256 neg_zero_scale = _mm256_set1_ps(-static_cast<float>(z) * s);
    const index_t full = c0 + (c1 - c0) / chunk * chunk;
    index_t c = c0;
    for (; c < full; c += chunk) {
      std::int64_t eight_bytes;
      std::memcpy(&eight_bytes, bytes + c * bits / 8, 8);
      const __m256i d = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(eight_bytes));
      auto slot = [&]<int J>(std::integral_constant<int, J>) {
        const __m256i q = _mm256_and_si256(J == 0 ? d : _mm256_srli_epi32(d, J * bits), mask);
        const __m256 w = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), scale, neg_zero_scale);
        if constexpr (J % 2 == 0)
          acc0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp + c + J * 8), acc0);
        else
          acc1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp + c + J * 8), acc1);
      };
      [&]<int... J>(std::integer_sequence<int, J...>) {
        (slot(std::integral_constant<int, J>{}), ...);
      }(std::make_integer_sequence<int, slots>{});
    }
    if (c < c1) tail += detail::tail_dot<bits>(packed.row_codes(r), x, c, c1, s, z);
  }
  return avx2_hsum(_mm256_add_ps(acc0, acc1)) + tail;
}
}  // namespace detail

template <class Format>
void uniform_matvec_avx2(const UniformPacked<Format>& packed, const float* x, float* y) {
  static_assert(uniform_avx2_supports<Format>(), "uniform_matvec_avx2: format not supported by this path");
  detail::check_matvec_args(packed, x, y);
  std::vector<float>& xp = detail::scratch_x();
  detail::permute_x_lane_major<Format::bits, 8>(x, packed.cols(), packed.group_size(), xp);
  const float* xpp = xp.data();
  parallel_for(
      0, packed.rows(),
      [&](index_t r0, index_t r1) {
        for (index_t r = r0; r < r1; ++r) y[r] = detail::avx2_row_pow2(packed, r, xpp, x);
      },
      kUniformMinRowsPerThread);
}
#endif  // AVX2

// Which path `uniform_matvec` takes for Format on this build: "avx512", "avx2" or "scalar".
template <class Format>
constexpr const char* uniform_matvec_path() {
#if defined(LOWBIT_HAVE_UNIFORM_AVX512)
  if constexpr (uniform_avx512_supports<Format>()) return "avx512";
#endif
#if defined(LOWBIT_HAVE_UNIFORM_AVX2)
  if constexpr (uniform_avx2_supports<Format>()) return "avx2";
#endif
  return "scalar";
}

// The fastest path this build has for Format.
template <class Format>
void uniform_matvec(const UniformPacked<Format>& packed, const float* x, float* y) {
#if defined(LOWBIT_HAVE_UNIFORM_AVX512)
  if constexpr (uniform_avx512_supports<Format>()) {
    uniform_matvec_avx512(packed, x, y);
    return;
  }
#endif
#if defined(LOWBIT_HAVE_UNIFORM_AVX2)
  if constexpr (uniform_avx2_supports<Format>()) {
    uniform_matvec_avx2(packed, x, y);
    return;
  }
#endif
  uniform_matvec_scalar(packed, x, y);
}

}  // namespace lowbit::kernels::cpu
