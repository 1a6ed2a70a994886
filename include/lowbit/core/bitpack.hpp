// Packing of b-bit codes (b = 1..8 and 16) into 32-bit words.
//
// Layout (documented in docs/formats.md): codes form one little-endian bit stream; code i occupies
// bits [i*b, i*b + b) of that stream, word k holds stream bits [32k, 32k + 32). When b divides 32
// (1, 2, 4, 8, 16) no code straddles a word and word k holds codes [k*32/b, (k+1)*32/b); for
// b = 3, 5, 6, 7 a code may straddle two words. Packed rows of a matrix each start on a word boundary.
#pragma once

#include <cstdint>
#include <vector>

#include "../config.hpp"
#include "error.hpp"
#include "tensor.hpp"

namespace lowbit {

LOWBIT_HD constexpr bool valid_code_bits(int bits) { return (bits >= 1 && bits <= 8) || bits == 16; }

// Number of 32-bit words needed for `count` codes of `bits` bits.
LOWBIT_HD constexpr index_t packed_words(index_t count, int bits) {
  return (count * bits + 31) / 32;
}

// Reads code i from a packed stream (runtime width).
LOWBIT_HD std::uint32_t unpack_code(const std::uint32_t* words, index_t i, int bits) {
  const index_t bit = i * bits;
  const index_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  const std::uint32_t mask = bits == 32 ? 0xffffffffu : ((1u << bits) - 1u);
  std::uint64_t v = words[w] >> off;
  if (off + bits > 32) v |= static_cast<std::uint64_t>(words[w + 1]) << (32 - off);
  return static_cast<std::uint32_t>(v) & mask;
}

// Compile-time width: the compiler folds shifts and masks, so kernels unroll per format.
template <int Bits>
LOWBIT_HD std::uint32_t unpack_code(const std::uint32_t* words, index_t i) {
  static_assert(valid_code_bits(Bits), "code width must be 1..8 or 16 bits");
  constexpr std::uint32_t mask = (1u << Bits) - 1u;
  if constexpr (32 % Bits == 0) {
    constexpr int per_word = 32 / Bits;
    return (words[i / per_word] >> ((i % per_word) * Bits)) & mask;
  } else {
    return unpack_code(words, i, Bits);
  }
}

// Writes code i into a zero-initialised packed stream.
LOWBIT_HD void pack_code(std::uint32_t* words, index_t i, int bits, std::uint32_t code) {
  const index_t bit = i * bits;
  const index_t w = bit >> 5;
  const int off = static_cast<int>(bit & 31);
  words[w] |= code << off;
  if (off + bits > 32) words[w + 1] |= code >> (32 - off);
}

// Packs `codes` (each < 2^bits) into a new word vector; throws on an out-of-range code.
inline std::vector<std::uint32_t> pack_codes(const std::uint32_t* codes, index_t count, int bits) {
  LOWBIT_CHECK(valid_code_bits(bits), "pack_codes: code width ", bits,
               " is not supported (expected 1..8 or 16)");
  std::vector<std::uint32_t> words(static_cast<std::size_t>(packed_words(count, bits)), 0u);
  const std::uint32_t limit = 1u << bits;
  for (index_t i = 0; i < count; ++i) {
    LOWBIT_CHECK(codes[i] < limit, "pack_codes: code ", codes[i], " at index ", i, " does not fit in ",
                 bits, " bits");
    pack_code(words.data(), i, bits, codes[i]);
  }
  return words;
}

inline std::vector<std::uint32_t> unpack_codes(const std::uint32_t* words, index_t count, int bits) {
  LOWBIT_CHECK(valid_code_bits(bits), "unpack_codes: code width ", bits, " is not supported");
  std::vector<std::uint32_t> codes(static_cast<std::size_t>(count));
  for (index_t i = 0; i < count; ++i) codes[static_cast<std::size_t>(i)] = unpack_code(words, i, bits);
  return codes;
}

}  // namespace lowbit
