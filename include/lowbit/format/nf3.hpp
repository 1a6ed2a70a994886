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
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "concepts.hpp"

namespace lowbit {

template <int GroupSize>
struct NF3 {
  static_assert(GroupSize >= 8 && GroupSize % 8 == 0, "NF3: group size must be a positive multiple of 8");
  static constexpr int bits = 3;
  static constexpr int group_size = GroupSize;
  static constexpr int levels = 8;
};

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

  // Raw storage, as written to the quantized model file.
  std::vector<std::uint32_t>& codes() { return codes_; }    // [rows, words_per_row]
  std::vector<half_t>& maxes() { return maxes_; }             // [rows, groups_per_row]
  std::vector<half_t>& mins() { return mins_; }               // [rows, groups_per_row]
  const std::vector<std::uint32_t>& codes() const { return codes_; }
  const std::vector<half_t>& maxes() const { return maxes_; }
  const std::vector<half_t>& mins() const { return mins_; }

 private:
  index_t rows_ = 0, cols_ = 0, words_per_row_ = 0, groups_per_row_ = 0;
  std::vector<std::uint32_t> codes_;
  std::vector<half_t> maxes_, mins_;
};

template <int GroupSize>
struct Quantizer<NF3<GroupSize>> {
  using Format = NF3<GroupSize>;
  using Packed = NF3Packed<GroupSize>;
  using Params = NF3Params;

  static std::string name() { return "nf3:" + std::to_string(GroupSize); }

  static Params fit(float lo, float hi) { return nf3_fit(lo, hi); }
  static std::uint32_t encode(float w, const Params& p) {
    return nf3_encode(w, to_float(p.max), to_float(p.min));
  }
  static float decode(std::uint32_t code, const Params& p) {
    return nf3_decode(code, to_float(p.max), to_float(p.min));
  }

  // Round-to-nearest with each group's own max and min.
  static Packed quantize(MatrixView<const float> W) {
    Packed packed(W.rows(), W.cols());
    parallel_for(0, W.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const float* w = W.row(r);
        for (index_t g = 0; g < packed.groups_per_row(); ++g) {
          const index_t c0 = g * GroupSize, c1 = std::min<index_t>(W.cols(), c0 + GroupSize);
          float lo = w[c0], hi = w[c0];
          for (index_t c = c0; c < c1; ++c) {
            lo = std::min(lo, w[c]);
            hi = std::max(hi, w[c]);
          }
          const Params p = fit(lo, hi);
          packed.set_params(r, g, p);
          for (index_t c = c0; c < c1; ++c) packed.set_code(r, c, encode(w[c], p));
        }
      }
    });
    return packed;
  }

  static void dequantize(const Packed& packed, MatrixView<float> W) {
    LOWBIT_CHECK(W.rows() == packed.rows() && W.cols() == packed.cols(), "nf3 dequantize: output is ",
                 W.rows(), "x", W.cols(), ", expected ", packed.rows(), "x", packed.cols());
    parallel_for(0, packed.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) dequantize_row(packed, r, W.row(r));
    });
  }

  static void dequantize_row(const Packed& packed, index_t r, float* out) {
    for (index_t g = 0; g < packed.groups_per_row(); ++g) {
      const Params p = packed.params(r, g);
      const float hi = to_float(p.max), lo = to_float(p.min);
      const index_t c0 = g * GroupSize, c1 = std::min<index_t>(packed.cols(), c0 + GroupSize);
      for (index_t c = c0; c < c1; ++c) out[c] = nf3_decode(packed.code(r, c), hi, lo);
    }
  }

  // y = Ŵx: per group, the positive and negative level sums are scaled once by max and |min|.
  static void matvec(const Packed& packed, const float* x, float* y) {
    parallel_for(0, packed.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const std::uint32_t* words = packed.codes().data() + r * packed.words_per_row();
        float acc = 0.0f;
        for (index_t g = 0; g < packed.groups_per_row(); ++g) {
          const Params p = packed.params(r, g);
          const index_t c0 = g * GroupSize, c1 = std::min<index_t>(packed.cols(), c0 + GroupSize);
          float pos = 0.0f, neg = 0.0f;
          for (index_t c = c0; c < c1; ++c) {
            const std::uint32_t code = unpack_code<3>(words, c);
            const float level = nf3_level(code);
            if (code >= 3u) pos += level * x[c];
            else neg += level * x[c];
          }
          acc += pos * to_float(p.max) - neg * to_float(p.min);
        }
        y[r] = acc;
      }
    }, 16);
  }

  static double bits_per_weight(const Packed& packed) {
    return 8.0 * static_cast<double>(packed.bytes()) /
           static_cast<double>(packed.rows() * packed.cols());
  }
};

static_assert(QuantizerFor<Quantizer<NF3<128>>>);

}  // namespace lowbit
