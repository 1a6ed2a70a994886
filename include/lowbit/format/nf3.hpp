// NF3<Group>: BitDistiller's asymmetric NormalFloat-style 3-bit grid (ALGORITHMS.md §2.1). Each group
// of `Group` consecutive input weights stores its max (≥ 0) and min (≤ 0) in fp16; positive weights are
// divided by the max, negative ones by |min|, and rounded to the nearest of eight fixed levels, which
// sit denser near zero where LLM weights concentrate. Codes are 3-bit, packed per row with
// core/bitpack.hpp (each row starts on a 32-bit word); a short last group is allowed.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../core/bitpack.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/stored_tensor.hpp"
#include "../core/tensor.hpp"

namespace lowbit {

template <int GroupSize>
struct NF3 {
  static_assert(GroupSize >= 8 && GroupSize % 8 == 0, "NF3: group size must be a positive multiple of 8");
  static constexpr int bits = 3;
  static constexpr int group_size = GroupSize;
  static constexpr int levels = 8;
  static std::string name() { return "nf3:" + std::to_string(GroupSize); }
};

template <class Format>
inline constexpr bool is_nf3_format = false;
template <int G>
inline constexpr bool is_nf3_format<NF3<G>> = true;

// The eight levels, code 0..7, ascending. Code 3 is exactly zero.
LOWBIT_HD float nf3_level(std::uint32_t code) {
  constexpr float table[8] = {-1.0f, -0.5350f, -0.2469f, 0.0f, 0.1833f, 0.3820f, 0.6230f, 1.0f};
  return table[code & 7u];
}

// Decision thresholds halfway between consecutive levels (threshold k separates code k and k+1).
LOWBIT_HD float nf3_threshold(int k) {
  return 0.5f * (nf3_level(static_cast<std::uint32_t>(k)) + nf3_level(static_cast<std::uint32_t>(k + 1)));
}

// Group parameters as stored: fp16 max ≥ 0 and fp16 min ≤ 0.
struct NF3Params {
  half_t max;
  half_t min;
};

// Parameters for a group whose (possibly clipped) range is [lo, hi]; zero always lies in the range.
LOWBIT_HD NF3Params nf3_fit(float lo, float hi) {
  return NF3Params{to_half(hi > 0.0f ? hi : 0.0f), to_half(lo < 0.0f ? lo : 0.0f)};
}

// Normalizes w by the side's magnitude and returns the code of the nearest level (ties go up).
LOWBIT_HD std::uint32_t nf3_encode(float w, float group_max, float group_min) {
  float v = 0.0f;
  if (w >= 0.0f) {
    v = group_max > 0.0f ? w / group_max : 0.0f;
  } else {
    v = group_min < 0.0f ? w / -group_min : 0.0f;
  }
  std::uint32_t code = 0;
  LOWBIT_UNROLL
  for (int k = 0; k < 7; ++k) code += v >= nf3_threshold(k) ? 1u : 0u;
  return code;
}

LOWBIT_HD float nf3_decode(std::uint32_t code, float group_max, float group_min) {
  const float level = nf3_level(code);
  return level >= 0.0f ? level * group_max : level * -group_min;
}

// Owning storage of an NF3-quantized matrix [rows, cols].
template <int GroupSize>
class NF3Packed {
 public:
  static constexpr int bits = 3;
  NF3Packed() = default;
  NF3Packed(index_t rows, index_t cols) : rows_(rows), cols_(cols) {
    LOWBIT_CHECK(rows > 0 && cols > 0, "NF3Packed: shape must be positive, got ", rows, "x", cols);
    words_per_row_ = packed_words(cols, bits);
    groups_per_row_ = (cols + GroupSize - 1) / GroupSize;
    codes_.assign(static_cast<std::size_t>(rows * words_per_row_), 0u);
    maxes_.assign(static_cast<std::size_t>(rows * groups_per_row_), half_t{});
    mins_.assign(static_cast<std::size_t>(rows * groups_per_row_), half_t{});
  }

  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t words_per_row() const { return words_per_row_; }
  index_t groups_per_row() const { return groups_per_row_; }
  std::size_t bytes() const {
    return codes_.size() * sizeof(std::uint32_t) + (maxes_.size() + mins_.size()) * sizeof(half_t);
  }

  // Incremental build: parameters of a group, then codes (a code may be overwritten).
  void set_params(index_t row, index_t group, NF3Params p) {
    maxes_[static_cast<std::size_t>(row * groups_per_row_ + group)] = p.max;
    mins_[static_cast<std::size_t>(row * groups_per_row_ + group)] = p.min;
  }
  NF3Params params(index_t row, index_t group) const {
    const auto i = static_cast<std::size_t>(row * groups_per_row_ + group);
    return NF3Params{maxes_[i], mins_[i]};
  }
  void set_code(index_t row, index_t col, std::uint32_t code) {
    LOWBIT_CHECK(code < 8u, "NF3 packed storage: code ", code, " does not fit in 3 bits");
    std::uint32_t* words = codes_.data() + row * words_per_row_;
    const index_t bit = col * bits;
    const int off = static_cast<int>(bit & 31);
    words[bit >> 5] &= ~(7u << off);
    if (off + bits > 32) words[(bit >> 5) + 1] &= ~(7u >> (32 - off));
    pack_code(words, col, bits, code);
  }
  std::uint32_t code(index_t row, index_t col) const {
    return unpack_code<bits>(codes_.data() + row * words_per_row_, col);
  }

  // The tensors a file stores (docs/quantized-file.md): codes [rows, words] u32, max and min
  // [rows, groups] f16.
  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_tensors() { return tensors_of(*this); }

  // Raw storage, as written to the quantized model file.
  std::vector<std::uint32_t>& codes() { return codes_; }    // [rows, words_per_row]
  std::vector<half_t>& maxes() { return maxes_; }             // [rows, groups_per_row]
  std::vector<half_t>& mins() { return mins_; }               // [rows, groups_per_row]
  const std::vector<std::uint32_t>& codes() const { return codes_; }
  const std::vector<half_t>& maxes() const { return maxes_; }
  const std::vector<half_t>& mins() const { return mins_; }

 private:
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& p) {
    return {stored_tensor("codes", StoredType::U32, {p.rows_, p.words_per_row_}, p.codes_),
                       stored_tensor("max", StoredType::F16, {p.rows_, p.groups_per_row_}, p.maxes_),
                       stored_tensor("min", StoredType::F16, {p.rows_, p.groups_per_row_}, p.mins_)};
  }

  index_t rows_ = 0, cols_ = 0, words_per_row_ = 0, groups_per_row_ = 0;
  std::vector<std::uint32_t> codes_;
  std::vector<half_t> maxes_, mins_;
};


}  // namespace lowbit
