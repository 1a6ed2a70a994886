// Uniform<Bits, GroupSize, Mode>: group-wise uniform (integer) quantization, the format of RTN, GPTQ and
// BitDistiller. Each group of GroupSize consecutive input weights of a row shares an fp16 scale and, in
// the default asymmetric mode, a Bits-bit integer zero point: ŵ = (code − zero)·scale. This header holds
// the policy, the per-group arithmetic (LOWBIT_HD, shared by the CPU and CUDA kernels and by the
// calibrators) and the packed storage; Quantizer<Uniform<...>> lives in quantizer.hpp.
//
// API for calibrators (GPTQ, AutoClip) — everything a per-group algorithm needs:
//   UniformGroupParams p = uniform_fit<Format>(lo, hi);   // from a (possibly clipped) range; the scale is
//                                                        // rounded to fp16 *before* any code is computed
//   std::uint32_t q = uniform_encode(w, p, Format::max_code);  // clamp(round(w/scale) + zero, 0, 2^b − 1)
//   float w_hat   = uniform_decode(q, p);                // (q − zero)·scale, exactly what kernels compute
//   UniformPacked<Format> P(rows, cols);  (or ::zeros)   // all codes 0, all params unset (scale 0)
//   P.set_params(row, group, p);  P.set_code(row, col, q);  P.code(row, col);  P.params(row, group);
//   P.group_begin(g), P.group_end(g), P.group_size(), P.groups_per_row()   // a short last group is allowed
//
// Rounding: the fp16 scale is rounded toward zero and codes round half away from zero, so the extreme
// weights of a group land exactly on codes 0 and 2^b − 1 (asymmetric) or ±(2^(b−1) − 1) (symmetric); this
// makes quantize → dequantize → quantize reproduce the packed matrix bit for bit.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
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

// GroupSize value meaning "one group per row" (the group is as long as the row).
inline constexpr int whole_row = 0;

// Asymmetric: per-group scale and integer zero from [min, max]. Symmetric: zero fixed at 2^(b−1) (not
// stored), scale from max |w|, levels −(2^(b−1) − 1)..(2^(b−1) − 1) used by RTN.
enum class UniformMode { Asymmetric, Symmetric };

template <int Bits, int GroupSize, UniformMode Mode = UniformMode::Asymmetric>
struct Uniform {
  static_assert(Bits >= 1 && Bits <= 8, "lowbit::Uniform: Bits must be between 1 and 8");
  static_assert(GroupSize > 0 || GroupSize == whole_row,
                "lowbit::Uniform: GroupSize must be positive, or lowbit::whole_row for one group per row");
  static_assert(Mode == UniformMode::Asymmetric || Bits >= 2,
                "lowbit::Uniform: symmetric mode needs at least 2 bits");
  static constexpr int bits = Bits;
  static constexpr int group_size = GroupSize;  // 0 (whole_row): one group per row
  static constexpr UniformMode mode = Mode;
  static constexpr bool symmetric = Mode == UniformMode::Symmetric;
  static constexpr std::uint32_t max_code = (1u << Bits) - 1u;
  static constexpr std::uint32_t symmetric_zero = 1u << (Bits - 1);

  // Descriptor: "uniform:4:128", "uniform:3:row" (whole-row groups), "uniform:4:128:sym".
  static std::string name() {
    std::string n = "uniform:" + std::to_string(Bits) + ":" + (GroupSize > 0 ? std::to_string(GroupSize) : "row");
    if (symmetric) n += ":sym";
    return n;
  }
};

template <class T>
inline constexpr bool is_uniform_format = false;
template <int B, int G, UniformMode M>
inline constexpr bool is_uniform_format<Uniform<B, G, M>> = true;

// Parameters of one group, as stored: fp16 scale and integer zero point (< 2^Bits).
struct UniformGroupParams {
  half_t scale;
  std::uint32_t zero = 0;
};

// ---- per-group arithmetic (host and device) ------------------------------------------------------

// Round half away from zero (the same on host and device).
LOWBIT_HD float uniform_round(float v) {
#if defined(__CUDA_ARCH__)
  return roundf(v);
#else
  return std::round(v);
#endif
}

// The largest fp16 value ≤ v (v ≥ 0); saturates at 65504 instead of overflowing.
LOWBIT_HD std::uint16_t half_bits_round_down(float v) {
  std::uint16_t h = float_to_half_bits(v);
  if (half_bits_to_float(h) > v) --h;
  return h;
}

// code = clamp(round(w / scale) + zero, 0, max_code).
LOWBIT_HD std::uint32_t uniform_encode(float w, float scale, std::uint32_t zero, std::uint32_t max_code) {
  const float q = uniform_round(w / scale) + static_cast<float>(zero);
  const float clamped = q < 0.0f ? 0.0f : (q > static_cast<float>(max_code) ? static_cast<float>(max_code) : q);
  return static_cast<std::uint32_t>(clamped);
}
LOWBIT_HD std::uint32_t uniform_encode(float w, UniformGroupParams p, std::uint32_t max_code) {
  return uniform_encode(w, half_bits_to_float(p.scale.bits), p.zero, max_code);
}

// ŵ = (code − zero)·scale.
LOWBIT_HD float uniform_decode(std::uint32_t code, float scale, std::uint32_t zero) {
  return static_cast<float>(static_cast<int>(code) - static_cast<int>(zero)) * scale;
}
LOWBIT_HD float uniform_decode(std::uint32_t code, UniformGroupParams p) {
  return uniform_decode(code, half_bits_to_float(p.scale.bits), p.zero);
}

// Group parameters from a (possibly clipped) range [lo, hi], runtime width. Asymmetric: the range is
// widened to contain 0, scale = (hi − lo)/(2^b − 1) rounded down to fp16, zero = round(−lo/scale).
// Symmetric: scale = max(|lo|, |hi|)/(2^(b−1) − 1), zero = 2^(b−1). A zero-width range gets the smallest
// positive fp16 scale, so every code is defined and all weights decode to 0.
LOWBIT_HD UniformGroupParams uniform_fit(float lo, float hi, int bits, bool symmetric) {
  const std::uint32_t max_code = (1u << bits) - 1u;
  lo = lo < 0.0f ? lo : 0.0f;
  hi = hi > 0.0f ? hi : 0.0f;
  UniformGroupParams p;
  if (symmetric) {
    const float absmax = -lo > hi ? -lo : hi;
    p.scale.bits = half_bits_round_down(absmax / static_cast<float>((1u << (bits - 1)) - 1u));
    if (p.scale.bits == 0) p.scale.bits = 1;
    p.zero = 1u << (bits - 1);
    return p;
  }
  p.scale.bits = half_bits_round_down((hi - lo) / static_cast<float>(max_code));
  if (p.scale.bits == 0) p.scale.bits = 1;
  const float z = uniform_round(-lo / half_bits_to_float(p.scale.bits));
  p.zero = z > static_cast<float>(max_code) ? max_code : static_cast<std::uint32_t>(z);
  return p;
}

template <class Format>
LOWBIT_HD UniformGroupParams uniform_fit(float lo, float hi) {
  static_assert(is_uniform_format<Format>, "uniform_fit: Format must be a lowbit::Uniform<...>");
  return uniform_fit(lo, hi, Format::bits, Format::symmetric);
}

// Σ_j ŵ_j·x[j] for the first `count` codes of one packed word (Bits divides 32; code j at bits j·Bits),
// all in one group with parameters (scale, zero). Shared by the CUDA kernel and its host tests.
template <int Bits>
LOWBIT_HD float uniform_word_dot(std::uint32_t word, const float* x, int count, float scale, std::uint32_t zero) {
  static_assert(32 % Bits == 0, "uniform_word_dot: Bits must divide 32");
  constexpr int per_word = 32 / Bits;
  constexpr std::uint32_t mask = (1u << Bits) - 1u;
  float acc = 0.0f;
  for (int j = 0; j < per_word; ++j)  // constant trip count: unrolled by host and device compilers
    if (j < count) acc += uniform_decode((word >> (j * Bits)) & mask, scale, zero) * x[j];
  return acc;
}

// ---- 32-code units (the tiled CUDA kernel's step) ------------------------------------------------
// 32 consecutive codes of a row occupy exactly Bits words (32·Bits bits), and when the row length and
// the group size are multiples of 32 such a unit starts on a word boundary and lies inside one group.
// The tiled CUDA matvec hands one unit to a thread at a time; this is its arithmetic, shared with the
// host tests. (q − zero) is formed exactly in fp32 as (2^23 + q) − (2^23 + zero), where 2^23 + q is
// the float whose bits are 0x4B000000 | q: an OR instead of an integer-to-float conversion.
inline constexpr int uniform_unit_codes = 32;

// Σ_{j<Count} (q_{First+j} − zero)·x[j] over codes First.. of a unit (words = the unit's Bits words),
// with biased_zero = uniform_biased_zero(zero). First and Count are constants, so every shift is one.
LOWBIT_HD float uniform_biased_zero(std::uint32_t zero) { return bits_as_float(0x4B000000u | zero); }

template <int Bits, int First, int Count>
LOWBIT_HD float uniform_codes_dot(const std::uint32_t* words, const float* x, float biased_zero) {
  static_assert(First >= 0 && Count > 0 && First + Count <= uniform_unit_codes, "uniform_codes_dot: codes outside the unit");
  constexpr std::uint32_t mask = (1u << Bits) - 1u;
  float acc = 0.0f;
  LOWBIT_UNROLL
  for (int j = 0; j < Count; ++j) {
    const int bit = (First + j) * Bits, w = bit >> 5, off = bit & 31;
    std::uint32_t v = words[w] >> off;
    if (off + Bits > 32) v |= words[w + 1] << (32 - off);
    acc += (bits_as_float(0x4B000000u | (v & mask)) - biased_zero) * x[j];
  }
  return acc;
}

template <int Bits>
LOWBIT_HD float uniform_unit_dot(const std::uint32_t* words, const float* x, std::uint32_t zero) {
  return uniform_codes_dot<Bits, 0, uniform_unit_codes>(words, x, uniform_biased_zero(zero));
}

// Whether a matrix can use 32-code units: whole units per row, and each unit inside one group.
LOWBIT_HD constexpr bool uniform_unit_aligned(index_t cols, index_t group_size) {
  return cols % uniform_unit_codes == 0 && group_size % uniform_unit_codes == 0;
}

// Columns per group for a row of `cols` weights.
LOWBIT_HD constexpr index_t uniform_group_size(int group_size, index_t cols) {
  return group_size > 0 ? (group_size < cols ? group_size : cols) : cols;
}

// Non-owning view of packed Uniform storage (host or device pointers), passed by value to kernels.
struct UniformMatrixView {
  const std::uint32_t* codes = nullptr;  // [rows, code_words_per_row]
  const std::uint16_t* scales = nullptr;  // [rows, groups_per_row] fp16 bits
  const std::uint32_t* zeros = nullptr;   // [rows, zero_words_per_row]; null when symmetric
  index_t rows = 0, cols = 0, group_size = 0, groups_per_row = 0;
  index_t code_words_per_row = 0, zero_words_per_row = 0;
  std::uint32_t symmetric_zero = 0;  // used when zeros is null

  LOWBIT_HD float scale(index_t row, index_t group) const {
    return half_bits_to_float(scales[row * groups_per_row + group]);
  }
  template <int Bits>
  LOWBIT_HD std::uint32_t zero(index_t row, index_t group) const {
    return zeros ? unpack_code<Bits>(zeros + row * zero_words_per_row, group) : symmetric_zero;
  }
};

// Part of Σ_c ŵ[row, c]·x[c] that a worker `lane` of `stride` workers computes (a CUDA thread of a
// warp, or a host loop over lanes in the tests). When Bits divides 32 and every word lies in one group,
// a worker takes whole words (codes of word w: w·32/Bits ...) and reads the group's parameters once
// per word; otherwise it takes single codes lane, lane + stride, ...
template <int Bits, int GroupSize>
LOWBIT_HD float uniform_row_partial_dot(const UniformMatrixView& m, index_t row, const float* x, index_t lane,
                                        index_t stride) {
  const std::uint32_t* words = m.codes + row * m.code_words_per_row;
  float acc = 0.0f;
  constexpr int per_word = 32 % Bits == 0 ? 32 / Bits : 0;
  constexpr bool whole_words = per_word > 0 && (GroupSize <= 0 || GroupSize % (per_word > 0 ? per_word : 1) == 0);
  if constexpr (whole_words) {
    for (index_t w = lane; w < m.code_words_per_row; w += stride) {
      const index_t c0 = w * per_word;
      const index_t left = m.cols - c0;
      const int count = left < per_word ? static_cast<int>(left) : per_word;
      const index_t g = GroupSize > 0 ? c0 / GroupSize : 0;
      acc += uniform_word_dot<Bits>(words[w], x + c0, count, m.scale(row, g), m.zero<Bits>(row, g));
    }
  } else {
    for (index_t c = lane; c < m.cols; c += stride) {
      const index_t g = c / m.group_size;
      acc += uniform_decode(unpack_code<Bits>(words, c), m.scale(row, g), m.zero<Bits>(row, g)) * x[c];
    }
  }
  return acc;
}

// ---- packed storage -----------------------------------------------------------------------------

// Owning storage of a Uniform-quantized matrix [rows, cols]. Byte layout (docs/formats.md):
//   codes   uint32 [rows, code_words_per_row]   Bits-bit codes, core/bitpack.hpp stream per row
//   scales  fp16   [rows, groups_per_row]
//   zeros   uint32 [rows, zero_words_per_row]   Bits-bit zero points, bitpack stream per row
//                                               (asymmetric only; symmetric stores none)
template <class Format>
class UniformPacked {
  static_assert(is_uniform_format<Format>, "UniformPacked: Format must be a lowbit::Uniform<...>");

 public:
  using format_type = Format;
  static constexpr int bits = Format::bits;

  UniformPacked() = default;
  UniformPacked(index_t rows, index_t cols) : rows_(rows), cols_(cols) {
    LOWBIT_CHECK(rows > 0 && cols > 0, "Uniform packed storage: shape must be positive, got ", rows, "x", cols);
    group_size_ = uniform_group_size(Format::group_size, cols);
    groups_per_row_ = (cols + group_size_ - 1) / group_size_;
    code_words_per_row_ = packed_words(cols, bits);
    zero_words_per_row_ = Format::symmetric ? 0 : packed_words(groups_per_row_, bits);
    codes_.assign(static_cast<std::size_t>(rows * code_words_per_row_), 0u);
    scales_.assign(static_cast<std::size_t>(rows * groups_per_row_), half_t{});
    zeros_.assign(static_cast<std::size_t>(rows * zero_words_per_row_), 0u);
  }
  static UniformPacked zeros(index_t rows, index_t cols) { return UniformPacked(rows, cols); }

  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  // Storage bytes exactly as stored: code words + fp16 scales + zero words.
  std::size_t bytes() const {
    return codes_.size() * sizeof(std::uint32_t) + scales_.size() * sizeof(half_t) +
           zeros_.size() * sizeof(std::uint32_t);
  }

  index_t group_size() const { return group_size_; }
  index_t groups_per_row() const { return groups_per_row_; }
  index_t group_begin(index_t group) const { return group * group_size_; }
  index_t group_end(index_t group) const { return std::min(cols_, (group + 1) * group_size_); }
  index_t code_words_per_row() const { return code_words_per_row_; }
  index_t zero_words_per_row() const { return zero_words_per_row_; }

  // ---- incremental build and element access ----
  void set_params(index_t row, index_t group, UniformGroupParams p) {
    check_group(row, group);
    LOWBIT_CHECK(p.zero <= Format::max_code, "Uniform packed storage: zero point ", p.zero, " does not fit in ",
                 bits, " bits");
    LOWBIT_CHECK(!Format::symmetric || p.zero == Format::symmetric_zero, "Uniform packed storage: symmetric format ",
                 "has zero ", Format::symmetric_zero, ", got ", p.zero);
    scales_[static_cast<std::size_t>(row * groups_per_row_ + group)] = p.scale;
    if constexpr (!Format::symmetric) write_field(zeros_.data() + row * zero_words_per_row_, group, p.zero);
  }
  void set_group_params(index_t row, index_t group, UniformGroupParams p) { set_params(row, group, p); }
  void set_group_params(index_t row, index_t group, half_t scale, std::uint32_t zero) {
    set_params(row, group, UniformGroupParams{scale, zero});
  }
  UniformGroupParams params(index_t row, index_t group) const {
    return UniformGroupParams{scale_bits(row, group), zero(row, group)};
  }
  half_t scale_bits(index_t row, index_t group) const {
    return scales_[static_cast<std::size_t>(row * groups_per_row_ + group)];
  }
  float scale(index_t row, index_t group) const { return to_float(scale_bits(row, group)); }
  std::uint32_t zero(index_t row, index_t group) const {
    if constexpr (Format::symmetric) {
      (void)row;
      (void)group;
      return Format::symmetric_zero;
    } else {
      return unpack_code<bits>(zeros_.data() + row * zero_words_per_row_, group);
    }
  }

  // Overwrites code (row, col); any previous value is cleared first.
  void set_code(index_t row, index_t col, std::uint32_t code) {
    LOWBIT_CHECK(row >= 0 && row < rows_ && col >= 0 && col < cols_, "Uniform packed storage: element (", row,
                 ", ", col, ") is outside ", rows_, "x", cols_);
    LOWBIT_CHECK(code <= Format::max_code, "Uniform packed storage: code ", code, " does not fit in ", bits,
                 " bits");
    write_field(codes_.data() + row * code_words_per_row_, col, code);
  }
  std::uint32_t code(index_t row, index_t col) const {
    return unpack_code<bits>(codes_.data() + row * code_words_per_row_, col);
  }
  float weight(index_t row, index_t col) const {
    const index_t g = col / group_size_;
    return uniform_decode(code(row, col), scale(row, g), zero(row, g));
  }

  // A kernel view of this storage (host pointers); the CUDA launcher takes one with device pointers.
  UniformMatrixView view() const {
    UniformMatrixView v;
    v.codes = codes_.data();
    v.scales = reinterpret_cast<const std::uint16_t*>(scales_.data());
    v.zeros = Format::symmetric ? nullptr : zeros_.data();
    v.rows = rows_;
    v.cols = cols_;
    v.group_size = group_size_;
    v.groups_per_row = groups_per_row_;
    v.code_words_per_row = code_words_per_row_;
    v.zero_words_per_row = zero_words_per_row_;
    v.symmetric_zero = Format::symmetric_zero;
    return v;
  }

  // ---- raw storage (kernels, model files) ----
  const std::uint32_t* row_codes(index_t row) const { return codes_.data() + row * code_words_per_row_; }
  const half_t* row_scales(index_t row) const { return scales_.data() + row * groups_per_row_; }
  const std::uint32_t* row_zeros(index_t row) const { return zeros_.data() + row * zero_words_per_row_; }
  std::vector<std::uint32_t>& codes() { return codes_; }  // [rows, code_words_per_row]
  std::vector<half_t>& scales() { return scales_; }        // [rows, groups_per_row]
  std::vector<std::uint32_t>& zero_words() { return zeros_; }  // [rows, zero_words_per_row]
  const std::vector<std::uint32_t>& codes() const { return codes_; }
  const std::vector<half_t>& scales() const { return scales_; }
  const std::vector<std::uint32_t>& zero_words() const { return zeros_; }

  // The tensors a file stores (docs/quantized-file.md): codes [rows, words] u32, scales [rows, groups]
  // f16, zeros [rows, zero words] u32 (asymmetric only).
  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_tensors() { return tensors_of(*this); }

  friend bool operator==(const UniformPacked& a, const UniformPacked& b) {
    return a.rows_ == b.rows_ && a.cols_ == b.cols_ && a.codes_ == b.codes_ && a.zeros_ == b.zeros_ &&
           std::equal(a.scales_.begin(), a.scales_.end(), b.scales_.begin(), b.scales_.end(),
                      [](half_t x, half_t y) { return x.bits == y.bits; });
  }

 private:
  void check_group(index_t row, index_t group) const {
    LOWBIT_CHECK(row >= 0 && row < rows_ && group >= 0 && group < groups_per_row_, "Uniform packed storage: group (",
                 row, ", ", group, ") is outside ", rows_, "x", groups_per_row_, " groups");
  }
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& p) {
    StoredTensorsOf<Self> v;
    v.push_back(stored_tensor("codes", StoredType::U32, {p.rows_, p.code_words_per_row_}, p.codes_));
    v.push_back(stored_tensor("scales", StoredType::F16, {p.rows_, p.groups_per_row_}, p.scales_));
    if (p.zero_words_per_row_ > 0)
      v.push_back(stored_tensor("zeros", StoredType::U32, {p.rows_, p.zero_words_per_row_}, p.zeros_));
    return v;
  }

  // Clears then writes field i of a Bits-bit stream (pack_code alone only ORs into zeroed words).
  static void write_field(std::uint32_t* words, index_t i, std::uint32_t value) {
    constexpr std::uint32_t mask = Format::max_code;
    const index_t bit = i * bits;
    const index_t w = bit >> 5;
    const int off = static_cast<int>(bit & 31);
    words[w] &= ~(mask << off);
    if (off + bits > 32) words[w + 1] &= ~(mask >> (32 - off));
    pack_code(words, i, bits, value);
  }

  index_t rows_ = 0, cols_ = 0, group_size_ = 0, groups_per_row_ = 0;
  index_t code_words_per_row_ = 0, zero_words_per_row_ = 0;
  std::vector<std::uint32_t> codes_;
  std::vector<half_t> scales_;
  std::vector<std::uint32_t> zeros_;
};

}  // namespace lowbit
