// ggml tensor types as stored in GGUF files, and their dequantization to fp32. lowbit computes in fp32,
// so GGUF weights are expanded once at load time. Each block type is a packed struct whose size is
// pinned by static_assert; the formulas follow ggml's definitions and are written out byte by byte in
// docs/file-formats.md. Types without a dequantizer here are still sized, so files holding them parse.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/tensor.hpp"

namespace lowbit::io {

enum class GgmlType : std::uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct GgmlTypeInfo {
  const char* name;
  std::uint32_t block_elems;  // elements per block (1 for plain types)
  std::uint32_t block_bytes;  // bytes per block
  bool dequantizable;         // lowbit can expand it to fp32
};

// Size and name of a ggml type id, or nullptr for ids lowbit does not know.
inline const GgmlTypeInfo* ggml_type_info(std::uint32_t type) {
  static const GgmlTypeInfo f32{"F32", 1, 4, true}, f16{"F16", 1, 2, true}, q4_0{"Q4_0", 32, 18, true},
      q4_1{"Q4_1", 32, 20, true}, q5_0{"Q5_0", 32, 22, true}, q5_1{"Q5_1", 32, 24, true},
      q8_0{"Q8_0", 32, 34, true}, q8_1{"Q8_1", 32, 36, false}, q2_k{"Q2_K", 256, 84, false},
      q3_k{"Q3_K", 256, 110, false}, q4_k{"Q4_K", 256, 144, true}, q5_k{"Q5_K", 256, 176, false},
      q6_k{"Q6_K", 256, 210, true}, q8_k{"Q8_K", 256, 292, false}, i8{"I8", 1, 1, false}, i16{"I16", 1, 2, false},
      i32{"I32", 1, 4, false}, i64{"I64", 1, 8, false}, f64{"F64", 1, 8, false}, bf16{"BF16", 1, 2, true};
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32: return &f32;
    case GgmlType::F16: return &f16;
    case GgmlType::Q4_0: return &q4_0;
    case GgmlType::Q4_1: return &q4_1;
    case GgmlType::Q5_0: return &q5_0;
    case GgmlType::Q5_1: return &q5_1;
    case GgmlType::Q8_0: return &q8_0;
    case GgmlType::Q8_1: return &q8_1;
    case GgmlType::Q2_K: return &q2_k;
    case GgmlType::Q3_K: return &q3_k;
    case GgmlType::Q4_K: return &q4_k;
    case GgmlType::Q5_K: return &q5_k;
    case GgmlType::Q6_K: return &q6_k;
    case GgmlType::Q8_K: return &q8_k;
    case GgmlType::I8: return &i8;
    case GgmlType::I16: return &i16;
    case GgmlType::I32: return &i32;
    case GgmlType::I64: return &i64;
    case GgmlType::F64: return &f64;
    case GgmlType::BF16: return &bf16;
  }
  return nullptr;
}

inline std::string ggml_type_name(std::uint32_t type) {
  const auto* info = ggml_type_info(type);
  return info ? std::string(info->name) : "unknown type " + std::to_string(type);
}

// ---- block layouts (all fields little-endian; fp16 fields stored as raw bits) ---------------------
struct BlockQ4_0 {
  std::uint16_t d;        // fp16 scale
  std::uint8_t qs[16];    // element j in low nibble of qs[j], element j+16 in the high nibble
};
struct BlockQ4_1 {
  std::uint16_t d, m;     // fp16 scale and minimum
  std::uint8_t qs[16];
};
struct BlockQ5_0 {
  std::uint16_t d;
  std::uint8_t qh[4];     // fifth bit of element j is bit j of the little-endian uint32 qh
  std::uint8_t qs[16];
};
struct BlockQ5_1 {
  std::uint16_t d, m;
  std::uint8_t qh[4];
  std::uint8_t qs[16];
};
struct BlockQ8_0 {
  std::uint16_t d;
  std::int8_t qs[32];
};
struct BlockQ4_K {
  std::uint16_t d, dmin;    // super-block scales of the 6-bit sub-block scales and minimums
  std::uint8_t scales[12];  // 8 (scale, min) pairs of 6 bits each
  std::uint8_t qs[128];     // 256 nibbles
};
struct BlockQ6_K {
  std::uint8_t ql[128];     // low 4 bits
  std::uint8_t qh[64];      // high 2 bits
  std::int8_t scales[16];   // 8-bit sub-block scales (16 elements each)
  std::uint16_t d;          // fp16 super-block scale
};
static_assert(sizeof(BlockQ4_0) == 18, "Q4_0 block is 18 bytes");
static_assert(sizeof(BlockQ4_1) == 20, "Q4_1 block is 20 bytes");
static_assert(sizeof(BlockQ5_0) == 22, "Q5_0 block is 22 bytes");
static_assert(sizeof(BlockQ5_1) == 24, "Q5_1 block is 24 bytes");
static_assert(sizeof(BlockQ8_0) == 34, "Q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_K) == 144, "Q4_K block is 144 bytes");
static_assert(sizeof(BlockQ6_K) == 210, "Q6_K block is 210 bytes");

namespace detail {

template <class Block>
Block load_block(const std::uint8_t* src, index_t i) {
  Block b;
  std::memcpy(&b, src + i * static_cast<index_t>(sizeof(Block)), sizeof(Block));
  return b;
}

// Q4_K packs 8 six-bit (scale, min) pairs into 12 bytes: pairs 0..3 in the low 6 bits of bytes 0..3
// (scale) and 4..7 (min); pairs 4..7 take their low 4 bits from bytes 8..11 and their top 2 bits from
// the spare top bits of bytes 0..3 (scale) and 4..7 (min).
inline void q4_k_scale_min(int j, const std::uint8_t* q, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63;
    min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

}  // namespace detail

// Expands `n` consecutive elements of type `type` starting at `src` (which must hold n / block_elems
// whole blocks) into dst[0..n). Throws when the type cannot be dequantized or n is not whole blocks.
inline void dequantize_ggml(std::uint32_t type, const std::uint8_t* src, float* dst, index_t n) {
  const auto* info = ggml_type_info(type);
  LOWBIT_CHECK(info && info->dequantizable, "cannot dequantize ggml ", ggml_type_name(type),
               ": supported are F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K");
  LOWBIT_CHECK(n % info->block_elems == 0, "ggml ", info->name, ": ", n, " elements is not a multiple of the block size ",
               info->block_elems);
  const index_t blocks = n / info->block_elems;
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<std::size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (index_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_bits_to_float(h);
      }
      return;
    case GgmlType::BF16:
      for (index_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_bits_to_float(h);
      }
      return;
    case GgmlType::Q4_0:
      for (index_t b = 0; b < blocks; ++b) {
        const auto blk = detail::load_block<BlockQ4_0>(src, b);
        const float d = half_bits_to_float(blk.d);
        float* y = dst + b * 32;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>((blk.qs[j] & 0x0F) - 8) * d;
          y[j + 16] = static_cast<float>((blk.qs[j] >> 4) - 8) * d;
        }
      }
      return;
    case GgmlType::Q4_1:
      for (index_t b = 0; b < blocks; ++b) {
        const auto blk = detail::load_block<BlockQ4_1>(src, b);
        const float d = half_bits_to_float(blk.d), m = half_bits_to_float(blk.m);
        float* y = dst + b * 32;
        for (int j = 0; j < 16; ++j) {
          y[j] = static_cast<float>(blk.qs[j] & 0x0F) * d + m;
          y[j + 16] = static_cast<float>(blk.qs[j] >> 4) * d + m;
        }
      }
      return;
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool has_min = static_cast<GgmlType>(type) == GgmlType::Q5_1;
      const int centre = has_min ? 0 : 16;  // Q5_0 codes are signed around 16, Q5_1 has a minimum
      for (index_t b = 0; b < blocks; ++b) {
        float d, m;
        std::uint32_t qh;
        const std::uint8_t* qs;
        BlockQ5_0 b0;
        BlockQ5_1 b1;
        if (has_min) {
          b1 = detail::load_block<BlockQ5_1>(src, b);
          d = half_bits_to_float(b1.d);
          m = half_bits_to_float(b1.m);
          std::memcpy(&qh, b1.qh, 4);
          qs = b1.qs;
        } else {
          b0 = detail::load_block<BlockQ5_0>(src, b);
          d = half_bits_to_float(b0.d);
          m = 0.0f;
          std::memcpy(&qh, b0.qh, 4);
          qs = b0.qs;
        }
        float* y = dst + b * 32;
        for (int j = 0; j < 16; ++j) {
          const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
          const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
          y[j] = static_cast<float>(lo - centre) * d + m;
          y[j + 16] = static_cast<float>(hi - centre) * d + m;
        }
      }
      return;
    }
    case GgmlType::Q8_0:
      for (index_t b = 0; b < blocks; ++b) {
        const auto blk = detail::load_block<BlockQ8_0>(src, b);
        const float d = half_bits_to_float(blk.d);
        float* y = dst + b * 32;
        for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(blk.qs[j]) * d;
      }
      return;
    case GgmlType::Q4_K:
      for (index_t b = 0; b < blocks; ++b) {
        const auto blk = detail::load_block<BlockQ4_K>(src, b);
        const float d = half_bits_to_float(blk.d), dmin = half_bits_to_float(blk.dmin);
        float* y = dst + b * 256;
        // four 64-element chunks; chunk c uses sub-blocks 2c (low nibbles of qs[32c..32c+32)) and 2c+1
        // (high nibbles of the same bytes)
        for (int c = 0; c < 4; ++c) {
          int sc0, m0, sc1, m1;
          detail::q4_k_scale_min(2 * c, blk.scales, sc0, m0);
          detail::q4_k_scale_min(2 * c + 1, blk.scales, sc1, m1);
          const float d0 = d * static_cast<float>(sc0), mm0 = dmin * static_cast<float>(m0);
          const float d1 = d * static_cast<float>(sc1), mm1 = dmin * static_cast<float>(m1);
          const std::uint8_t* q = blk.qs + 32 * c;
          for (int l = 0; l < 32; ++l) {
            y[64 * c + l] = d0 * static_cast<float>(q[l] & 0x0F) - mm0;
            y[64 * c + 32 + l] = d1 * static_cast<float>(q[l] >> 4) - mm1;
          }
        }
      }
      return;
    case GgmlType::Q6_K:
      for (index_t b = 0; b < blocks; ++b) {
        const auto blk = detail::load_block<BlockQ6_K>(src, b);
        const float d = half_bits_to_float(blk.d);
        float* y = dst + b * 256;
        // two 128-element halves; half h uses ql[64h..64h+64), qh[32h..32h+32), scales[8h..8h+8)
        for (int h = 0; h < 2; ++h) {
          const std::uint8_t* ql = blk.ql + 64 * h;
          const std::uint8_t* qh = blk.qh + 32 * h;
          const std::int8_t* sc = blk.scales + 8 * h;
          float* yh = y + 128 * h;
          for (int l = 0; l < 32; ++l) {
            const int s = l / 16;
            const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            yh[l] = d * static_cast<float>(sc[s]) * static_cast<float>(q1);
            yh[l + 32] = d * static_cast<float>(sc[s + 2]) * static_cast<float>(q2);
            yh[l + 64] = d * static_cast<float>(sc[s + 4]) * static_cast<float>(q3);
            yh[l + 96] = d * static_cast<float>(sc[s + 6]) * static_cast<float>(q4);
          }
        }
      }
      return;
    default:
      break;
  }
  fail("cannot dequantize ggml ", ggml_type_name(type));
}

}  // namespace lowbit::io
