// IEEE fp16 and bfloat16 conversion on host and device, bit-exact with round-to-nearest-even.
// Storage types are plain uint16_t wrappers so packed formats have a fixed, documented byte layout
// independent of compiler support for _Float16 or cuda_fp16.h.
#pragma once

#include <cstdint>
#include <cstring>

#include "../config.hpp"

namespace lowbit {

struct half_t {
  std::uint16_t bits = 0;
};
struct bf16_t {
  std::uint16_t bits = 0;
};

LOWBIT_HD std::uint32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}
LOWBIT_HD float bits_as_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

// fp32 -> fp16, round to nearest even; overflow goes to inf, NaN stays NaN (quiet).
LOWBIT_HD std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t x = float_as_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
  }
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // result is subnormal or zero
    if (abs < 0x33000000u) return static_cast<std::uint16_t>(sign);  // < half of min subnormal
    const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    // value = mant * 2^(e-150) and a subnormal half counts units of 2^-24, so q = mant >> (126 - e)
    const int drop = 126 - static_cast<int>(abs >> 23);  // 14..24
    std::uint32_t q = mant >> drop;
    const std::uint32_t rem = mant & ((1u << drop) - 1u);
    const std::uint32_t halfway = 1u << (drop - 1);
    if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
    return static_cast<std::uint16_t>(sign | q);
  }
  // normal: rebias exponent 127 -> 15, keep 10 mantissa bits, round to nearest even
  std::uint32_t h = ((abs >> 13) - (112u << 10));
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

LOWBIT_HD float half_bits_to_float(std::uint16_t h) {
#if defined(__CUDA_ARCH__)
  // One hardware conversion on the device (exact, like the bit manipulation below).
  float f;
  asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
#else
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return bits_as_float(sign);
    // subnormal: value = mant * 2^-24
    float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -v : v;
  }
  if (exp == 31) return bits_as_float(sign | 0x7f800000u | (mant << 13));
  return bits_as_float(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

// fp32 -> bf16, round to nearest even; NaN stays NaN.
LOWBIT_HD std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t x = float_as_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}
LOWBIT_HD float bf16_bits_to_float(std::uint16_t b) {
  return bits_as_float(static_cast<std::uint32_t>(b) << 16);
}

LOWBIT_HD half_t to_half(float f) { return half_t{float_to_half_bits(f)}; }
LOWBIT_HD float to_float(half_t h) { return half_bits_to_float(h.bits); }
LOWBIT_HD bf16_t to_bf16(float f) { return bf16_t{float_to_bf16_bits(f)}; }
LOWBIT_HD float to_float(bf16_t b) { return bf16_bits_to_float(b.bits); }

}  // namespace lowbit
