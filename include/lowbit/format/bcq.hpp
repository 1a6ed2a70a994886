// BCQ<Bits, GroupSize>: binary-coding quantization, the format of UniQuanF (ALGORITHMS.md §3). Each group
// of GroupSize consecutive input weights of a row (whole_row: one group per row) has Bits scales
// α_0..α_(n−1) and an offset, all fp16; every weight picks a sign vector b ∈ {±1}^n and decodes to
//
//     ŵ = Σ_i α_i·b_i + offset,
//
// so a group has its own non-uniform table of 2^n levels and the codes are n bit-planes. Code bit i is
// plane i (1: b_i = +1). Scales are kept in ascending order by the calibrators (α_i = 2^(i−1)·s puts the
// group exactly on a uniform grid of step s: code = the uniform code, the unification of UniQuanF).
//
// Storage (docs/formats.md): planes [rows, Bits·words] u32, where row r holds plane 0's `words` words,
// then plane 1's, ...; bit c%32 of word c/32 of a plane is column c; alphas [rows, groups·Bits] f16
// (group g's scales at g·Bits + i); offsets [rows, groups] f16. A short last group is allowed; padding
// bits of the last word are zero. bits/weight = Bits + 16·(Bits+1)/GroupSize when 32 divides the row.
//
// API for calibrators:
//   BCQParams<Bits> p;  p.alpha[i], p.offset          // fp32 values; bcq_round(p) rounds them to fp16
//   bcq_decode(code, p)  /  bcq_encode(w, p)          // level of a code / nearest level (exhaustive)
//   BCQPacked<Format> P(rows, cols); P.set_params(r, g, p); P.set_code(r, c, code); P.code(r, c)
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../core/bitpack.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/stored_tensor.hpp"
#include "../core/tensor.hpp"
#include "uniform.hpp"

namespace lowbit {

template <int Bits, int GroupSize>
struct BCQ {
  static_assert(Bits >= 1 && Bits <= 4, "lowbit::BCQ: Bits must be between 1 and 4");
  static_assert(GroupSize == whole_row || (GroupSize > 0 && GroupSize % 32 == 0),
                "lowbit::BCQ: GroupSize must be a positive multiple of 32, or lowbit::whole_row");
  static constexpr int bits = Bits;
  static constexpr int group_size = GroupSize;  // 0 (whole_row): one group per row
  static constexpr std::uint32_t levels = 1u << Bits;
  // Descriptor: "bcq:3:128", "bcq:2:row".
  static std::string name() {
    return "bcq:" + std::to_string(Bits) + ":" + (GroupSize > 0 ? std::to_string(GroupSize) : "row");
  }
};

template <class T>
inline constexpr bool is_bcq_format = false;
template <int B, int G>
inline constexpr bool is_bcq_format<BCQ<B, G>> = true;

// A BCQ format (the capability the alternating and uniquanf methods fill).
template <class F>
concept BCQFormat = is_bcq_format<F>;

// Parameters of one group in fp32 (after set_params/params they hold fp16-representable values).
template <int Bits>
struct BCQParams {
  float alpha[Bits] = {};
  float offset = 0.0f;
};

// ---- per-group arithmetic (host and device) ------------------------------------------------------

// ŵ of a code: Σ_i α_i·(±1) + offset, summed in plane order, then the offset.
template <int Bits>
LOWBIT_HD float bcq_decode(std::uint32_t code, const float* alpha, float offset) {
  float acc = 0.0f;
  LOWBIT_UNROLL
  for (int i = 0; i < Bits; ++i) acc += ((code >> i) & 1u) ? alpha[i] : -alpha[i];
  return acc + offset;
}
template <int Bits>
LOWBIT_HD float bcq_decode(std::uint32_t code, const BCQParams<Bits>& p) {
  return bcq_decode<Bits>(code, p.alpha, p.offset);
}

// The code of the level nearest to w (exhaustive over the 2^Bits levels; ties keep the lower code).
template <int Bits>
LOWBIT_HD std::uint32_t bcq_encode(float w, const BCQParams<Bits>& p) {
  std::uint32_t best = 0;
  float best_d = INFINITY;
  for (std::uint32_t code = 0; code < (1u << Bits); ++code) {
    const float d = fabsf(w - bcq_decode<Bits>(code, p));
    if (d < best_d) {
      best_d = d;
      best = code;
    }
  }
  return best;
}

// Σ_{j<count} b_j·x[j] for the first `count` columns of one plane word (b_j = +1 where bit j is set):
// 2·Σ_{set} x − Σ x. Shared by the CUDA kernel and its host tests.
LOWBIT_HD float bcq_word_signed_sum(std::uint32_t word, const float* x, int count) {
  float acc = 0.0f;
  for (int j = 0; j < 32; ++j)
    if (j < count) acc += ((word >> j) & 1u) ? x[j] : -x[j];
  return acc;
}

// Parameters rounded to what the file stores (fp16, round to nearest).
template <int Bits>
inline BCQParams<Bits> bcq_round(BCQParams<Bits> p) {
  for (int i = 0; i < Bits; ++i) p.alpha[i] = to_float(to_half(p.alpha[i]));
  p.offset = to_float(to_half(p.offset));
  return p;
}

// Positive scales in ascending order: flips plane i where α_i < 0 and permutes the planes; the codes
// follow, so every weight keeps its level.
template <int Bits>
void bcq_canonicalize(BCQParams<Bits>& p, std::uint32_t* codes, index_t count) {
  std::uint32_t flip = 0;
  for (int i = 0; i < Bits; ++i)
    if (p.alpha[i] < 0.0f) {
      p.alpha[i] = -p.alpha[i];
      flip |= 1u << i;
    }
  std::array<int, Bits> order{};
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p.alpha[a] < p.alpha[b]; });
  BCQParams<Bits> sorted = p;
  for (int i = 0; i < Bits; ++i) sorted.alpha[i] = p.alpha[order[static_cast<std::size_t>(i)]];
  p = sorted;
  for (index_t c = 0; c < count; ++c) {
    const std::uint32_t old = codes[c] ^ flip;
    std::uint32_t code = 0;
    for (int i = 0; i < Bits; ++i) code |= ((old >> order[static_cast<std::size_t>(i)]) & 1u) << i;
    codes[c] = code;
  }
}

// The uniform grid of step `scale` and integer zero point `zero` (levels (q − zero)·scale, q < 2^Bits)
// as BCQ parameters: α_i = 2^(i−1)·scale, offset = ((2^Bits − 1)/2 − zero)·scale; then code q decodes to
// (q − zero)·scale in exact arithmetic (fp32 here: exact for fp16 scales). This is the unification.
template <int Bits>
LOWBIT_HD BCQParams<Bits> bcq_from_uniform(float scale, std::uint32_t zero) {
  BCQParams<Bits> p;
  float a = 0.5f * scale;
  for (int i = 0; i < Bits; ++i, a *= 2.0f) p.alpha[i] = a;
  p.offset = (0.5f * static_cast<float>((1u << Bits) - 1u) - static_cast<float>(zero)) * scale;
  return p;
}

// Uniform-grid parameters for a (possibly clipped) range [lo, hi]: the asymmetric uniform fit of the
// same width (format/uniform.hpp) written as BCQ, rounded to fp16. The range need not contain zero (the
// offset is free), so it is not widened.
template <int Bits>
inline BCQParams<Bits> bcq_fit_uniform(float lo, float hi) {
  if (hi < lo) std::swap(lo, hi);
  const float span = hi - lo;
  float scale = span / static_cast<float>((1u << Bits) - 1u);
  if (!(scale > 0.0f)) scale = 0.0f;
  BCQParams<Bits> p = bcq_from_uniform<Bits>(scale, 0);
  p.offset = lo + 0.5f * span;  // the midpoint: code 0 → lo, code 2^n − 1 → hi
  return bcq_round(p);
}

// ---- packed storage ----------------------------------------------------------------------------

template <class Format>
class BCQPacked {
  static_assert(is_bcq_format<Format>, "BCQPacked: Format must be a lowbit::BCQ<...>");

 public:
  using format_type = Format;
  static constexpr int bits = Format::bits;
  using Params = BCQParams<Format::bits>;

  BCQPacked() = default;
  BCQPacked(index_t rows, index_t cols) : rows_(rows), cols_(cols) {
    LOWBIT_CHECK(rows > 0 && cols > 0, "BCQ packed storage: shape must be positive, got ", rows, "x", cols);
    group_size_ = uniform_group_size(Format::group_size, cols);
    groups_per_row_ = (cols + group_size_ - 1) / group_size_;
    words_ = packed_words(cols, 1);
    planes_.assign(static_cast<std::size_t>(rows * bits * words_), 0u);
    alphas_.assign(static_cast<std::size_t>(rows * groups_per_row_ * bits), half_t{});
    offsets_.assign(static_cast<std::size_t>(rows * groups_per_row_), half_t{});
  }

  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  std::size_t bytes() const {
    return planes_.size() * sizeof(std::uint32_t) + (alphas_.size() + offsets_.size()) * sizeof(half_t);
  }
  index_t group_size() const { return group_size_; }
  index_t groups_per_row() const { return groups_per_row_; }
  index_t group_begin(index_t group) const { return group * group_size_; }
  index_t group_end(index_t group) const { return std::min(cols_, (group + 1) * group_size_); }
  index_t words_per_plane() const { return words_; }

  // ---- incremental build and element access ----
  void set_params(index_t row, index_t group, const Params& p) {
    check_group(row, group);
    half_t* a = alphas_.data() + (row * groups_per_row_ + group) * bits;
    for (int i = 0; i < bits; ++i) a[i] = to_half(p.alpha[i]);
    offsets_[static_cast<std::size_t>(row * groups_per_row_ + group)] = to_half(p.offset);
  }
  Params params(index_t row, index_t group) const {
    const half_t* a = alphas_.data() + (row * groups_per_row_ + group) * bits;
    Params p;
    for (int i = 0; i < bits; ++i) p.alpha[i] = to_float(a[i]);
    p.offset = to_float(offsets_[static_cast<std::size_t>(row * groups_per_row_ + group)]);
    return p;
  }
  void set_code(index_t row, index_t col, std::uint32_t code) {
    LOWBIT_CHECK(row >= 0 && row < rows_ && col >= 0 && col < cols_, "BCQ packed storage: element (", row, ", ",
                 col, ") is outside ", rows_, "x", cols_);
    LOWBIT_CHECK(code < Format::levels, "BCQ packed storage: code ", code, " does not fit in ", bits, " bits");
    const std::uint32_t bit = 1u << (col & 31);
    for (int i = 0; i < bits; ++i) {
      std::uint32_t& w = planes_[static_cast<std::size_t>((row * bits + i) * words_ + (col >> 5))];
      w = ((code >> i) & 1u) ? (w | bit) : (w & ~bit);
    }
  }
  std::uint32_t code(index_t row, index_t col) const {
    std::uint32_t code = 0;
    for (int i = 0; i < bits; ++i)
      code |= ((plane(row, i)[col >> 5] >> (col & 31)) & 1u) << i;
    return code;
  }
  float weight(index_t row, index_t col) const { return bcq_decode<bits>(code(row, col), params(row, col / group_size_)); }

  // ---- raw storage (kernels, model files) ----
  const std::uint32_t* plane(index_t row, int i) const { return planes_.data() + (row * bits + i) * words_; }
  const half_t* row_alphas(index_t row) const { return alphas_.data() + row * groups_per_row_ * bits; }
  const half_t* row_offsets(index_t row) const { return offsets_.data() + row * groups_per_row_; }
  std::vector<std::uint32_t>& planes() { return planes_; }
  std::vector<half_t>& alphas() { return alphas_; }
  std::vector<half_t>& offsets() { return offsets_; }
  const std::vector<std::uint32_t>& planes() const { return planes_; }
  const std::vector<half_t>& alphas() const { return alphas_; }
  const std::vector<half_t>& offsets() const { return offsets_; }

  // The tensors a file stores (docs/quantized-file.md): planes [rows, bits·words] u32, alphas
  // [rows, groups·bits] f16, offsets [rows, groups] f16.
  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_tensors() { return tensors_of(*this); }

  friend bool operator==(const BCQPacked& a, const BCQPacked& b) {
    const auto same = [](const std::vector<half_t>& x, const std::vector<half_t>& y) {
      return std::equal(x.begin(), x.end(), y.begin(), y.end(), [](half_t p, half_t q) { return p.bits == q.bits; });
    };
    return a.rows_ == b.rows_ && a.cols_ == b.cols_ && a.planes_ == b.planes_ && same(a.alphas_, b.alphas_) &&
           same(a.offsets_, b.offsets_);
  }

 private:
  void check_group(index_t row, index_t group) const {
    LOWBIT_CHECK(row >= 0 && row < rows_ && group >= 0 && group < groups_per_row_, "BCQ packed storage: group (",
                 row, ", ", group, ") is outside ", rows_, "x", groups_per_row_, " groups");
  }
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& p) {
    return {stored_tensor("planes", StoredType::U32, {p.rows_, bits * p.words_}, p.planes_),
            stored_tensor("alphas", StoredType::F16, {p.rows_, p.groups_per_row_ * bits}, p.alphas_),
            stored_tensor("offsets", StoredType::F16, {p.rows_, p.groups_per_row_}, p.offsets_)};
  }

  index_t rows_ = 0, cols_ = 0, group_size_ = 0, groups_per_row_ = 0, words_ = 0;
  std::vector<std::uint32_t> planes_;
  std::vector<half_t> alphas_, offsets_;
};

}  // namespace lowbit

// ---- device view and the arithmetic of the CUDA kernels (kernels/cuda/bcq_matvec.cuh) -------------
// Here rather than in the .cuh so that the host tests (test_kernels_bcq) run exactly this arithmetic.
namespace lowbit {

// Non-owning view of a BCQPacked matrix; the pointers are host or device memory (the CUDA launchers
// take device pointers). Layout as BCQPacked: planes [rows, Bits·words], alphas [rows, groups·Bits],
// offsets [rows, groups] (fp16 bits).
struct BCQMatrixView {
  const std::uint32_t* planes = nullptr;
  const std::uint16_t* alphas = nullptr;
  const std::uint16_t* offsets = nullptr;
  index_t rows = 0, cols = 0, group_size = 0, groups_per_row = 0, words = 0;  // words per plane

  template <int Bits>
  LOWBIT_HD const std::uint32_t* plane(index_t row, int i) const {
    return planes + (row * Bits + i) * words;
  }
  template <int Bits>
  LOWBIT_HD float alpha(index_t row, index_t group, int i) const {
    return half_bits_to_float(alphas[(row * groups_per_row + group) * Bits + i]);
  }
  LOWBIT_HD float offset(index_t row, index_t group) const {
    return half_bits_to_float(offsets[row * groups_per_row + group]);
  }
};

template <class Format>
BCQMatrixView bcq_matrix_view(const BCQPacked<Format>& packed) {
  BCQMatrixView v;
  v.planes = packed.planes().data();
  v.alphas = reinterpret_cast<const std::uint16_t*>(packed.alphas().data());
  v.offsets = reinterpret_cast<const std::uint16_t*>(packed.offsets().data());
  v.rows = packed.rows();
  v.cols = packed.cols();
  v.group_size = packed.group_size();
  v.groups_per_row = packed.groups_per_row();
  v.words = packed.words_per_plane();
  return v;
}

// ŵ[row, col] read through a view (the dequantize kernel).
template <int Bits>
LOWBIT_HD float bcq_view_weight(const BCQMatrixView& m, index_t row, index_t col) {
  const index_t g = col / m.group_size;
  std::uint32_t code = 0;
  float alpha[Bits];
  LOWBIT_UNROLL
  for (int i = 0; i < Bits; ++i) {
    code |= ((m.plane<Bits>(row, i)[col >> 5] >> (col & 31)) & 1u) << i;
    alpha[i] = m.alpha<Bits>(row, g, i);
  }
  return bcq_decode<Bits>(code, alpha, m.offset(row, g));
}

// Σ_c ŵ_c·x_c over one 32-column unit of one row: `words[i]` is plane i's word of the unit, xv its 32
// activations (zero past the row end: padding bits are zero too), xsum = Σ xv, and the unit lies in one
// group with scales alpha[Bits] and offset.
template <int Bits>
LOWBIT_HD float bcq_unit_dot(const std::uint32_t* words, const float* xv, float xsum, const float* alpha, float offset) {
  float acc = offset * xsum;
  LOWBIT_UNROLL
  for (int i = 0; i < Bits; ++i) acc += alpha[i] * bcq_word_signed_sum(words[i], xv, 32);
  return acc;
}

// Part of Σ_c ŵ[row, c]·x[c] that worker `lane` of `stride` workers computes (a CUDA lane of a warp, or
// a host loop in the tests): the worker takes plane words lane, lane + stride, ... (every word lies in
// one group: group sizes are multiples of 32), reading x directly (only the row's `cols` entries).
template <int Bits>
LOWBIT_HD float bcq_row_partial_dot(const BCQMatrixView& m, index_t row, const float* x, index_t lane, index_t stride) {
  float acc = 0.0f;
  for (index_t w = lane; w < m.words; w += stride) {
    const index_t c0 = w * 32;
    const index_t left = m.cols - c0;
    const int count = left < 32 ? static_cast<int>(left) : 32;
    const index_t g = c0 / m.group_size;
    float xsum = 0.0f;
    for (int j = 0; j < count; ++j) xsum += x[c0 + j];
    float part = m.offset(row, g) * xsum;
    LOWBIT_UNROLL
    for (int i = 0; i < Bits; ++i)
      part += m.alpha<Bits>(row, g, i) * bcq_word_signed_sum(m.plane<Bits>(row, i)[w], x + c0, count);
    acc += part;
  }
  return acc;
}

}  // namespace lowbit
