// A test-only weight format, written the way docs/adding-a-format.md says, to prove that a format is one
// header plus one registry line: Sign<Group> stores one bit per weight (its sign) and one fp16 scale per
// group, ŵ = ±scale. It is a group-grid format (fit/encode/decode), so rtn and gptq can fill it, and it
// needs no edit anywhere else: the file reader and writer, the CLI (`--format sign:64`), `lowbit
// formats` and the generic tests find it through the registry. Programs opt in by compiling with
// -DLOWBIT_USER_FORMATS_HEADER='"formats/sign_format.hpp"' (tests/CMakeLists.txt does, for a second
// build of the generic tests and of the CLI).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <lowbit/core/bitpack.hpp>
#include <lowbit/core/error.hpp>
#include <lowbit/core/half.hpp>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/stored_tensor.hpp>
#include <lowbit/core/tensor.hpp>
#include <lowbit/format/activation.hpp>
#include <lowbit/format/concepts.hpp>

namespace lowbit::test {

// ---- the policy and its arithmetic -------------------------------------------------------------------
template <int Group>
struct Sign {
  static_assert(Group > 0 && Group % 32 == 0, "Sign<Group>: group size must be a positive multiple of 32");
  static constexpr int bits = 1;
  static constexpr int group_size = Group;
  static std::string name() { return "sign:" + std::to_string(Group); }
};

struct SignParams {
  half_t scale;  // > 0
};

// Levels ±s for a range [lo, hi]: s = max(|lo|, |hi|) / 2, the MSE-optimal 1-bit level of a uniform spread.
inline SignParams sign_fit(float lo, float hi) {
  const float s = std::max(std::fabs(lo), std::fabs(hi)) / 2.0f;
  SignParams p{to_half(s)};
  if (p.scale.bits == 0) p.scale.bits = 1;
  return p;
}
inline std::uint32_t sign_encode(float w) { return w >= 0.0f ? 1u : 0u; }
inline float sign_decode(std::uint32_t code, SignParams p) { return code ? to_float(p.scale) : -to_float(p.scale); }

// ---- packed storage: codes [rows, cols/32] u32, scales [rows, groups] f16 -----------------------------
template <int Group>
class SignPacked {
 public:
  SignPacked() = default;
  SignPacked(index_t rows, index_t cols) : rows_(rows), cols_(cols) {
    LOWBIT_CHECK(rows > 0 && cols > 0, "SignPacked: shape must be positive, got ", rows, "x", cols);
    words_ = packed_words(cols, 1);
    groups_ = (cols + Group - 1) / Group;
    codes_.assign(static_cast<std::size_t>(rows * words_), 0u);
    scales_.assign(static_cast<std::size_t>(rows * groups_), half_t{});
  }
  index_t rows() const { return rows_; }
  index_t cols() const { return cols_; }
  index_t groups_per_row() const { return groups_; }
  std::size_t bytes() const { return codes_.size() * 4 + scales_.size() * 2; }

  void set_params(index_t row, index_t group, SignParams p) { scales_[static_cast<std::size_t>(row * groups_ + group)] = p.scale; }
  SignParams params(index_t row, index_t group) const { return {scales_[static_cast<std::size_t>(row * groups_ + group)]}; }
  void set_code(index_t row, index_t col, std::uint32_t code) {
    std::uint32_t& w = codes_[static_cast<std::size_t>(row * words_ + col / 32)];
    w = (w & ~(1u << (col % 32))) | ((code & 1u) << (col % 32));
  }
  std::uint32_t code(index_t row, index_t col) const {
    return (codes_[static_cast<std::size_t>(row * words_ + col / 32)] >> (col % 32)) & 1u;
  }

  std::vector<StoredTensor> stored_tensors() const { return tensors_of(*this); }
  std::vector<StoredTensorSlot> stored_tensors() { return tensors_of(*this); }

 private:
  template <class Self>
  static StoredTensorsOf<Self> tensors_of(Self& p) {
    return {stored_tensor("codes", StoredType::U32, {p.rows_, p.words_}, p.codes_),
            stored_tensor("scales", StoredType::F16, {p.rows_, p.groups_}, p.scales_)};
  }
  index_t rows_ = 0, cols_ = 0, words_ = 0, groups_ = 0;
  std::vector<std::uint32_t> codes_;
  std::vector<half_t> scales_;
};

}  // namespace lowbit::test

namespace lowbit {

// ---- the façade -------------------------------------------------------------------------------------
template <int Group>
struct Quantizer<test::Sign<Group>> {
  using Format = test::Sign<Group>;
  using Packed = test::SignPacked<Group>;
  using Params = test::SignParams;

  static std::string name() { return Format::name(); }
  static Params fit(float lo, float hi) { return test::sign_fit(lo, hi); }
  static std::uint32_t encode(float w, const Params&) { return test::sign_encode(w); }
  static float decode(std::uint32_t code, const Params& p) { return test::sign_decode(code, p); }

  static Packed quantize(MatrixView<const float> W) {
    Packed p(W.rows(), W.cols());
    for (index_t r = 0; r < W.rows(); ++r)
      for (index_t g = 0; g < p.groups_per_row(); ++g) {
        const index_t c0 = g * Group, c1 = std::min<index_t>(W.cols(), c0 + Group);
        float lo = W(r, c0), hi = W(r, c0);
        for (index_t c = c0; c < c1; ++c) lo = std::min(lo, W(r, c)), hi = std::max(hi, W(r, c));
        const Params params = fit(lo, hi);
        p.set_params(r, g, params);
        for (index_t c = c0; c < c1; ++c) p.set_code(r, c, encode(W(r, c), params));
      }
    return p;
  }
  static void dequantize(const Packed& p, MatrixView<float> W) {
    for (index_t r = 0; r < p.rows(); ++r)
      for (index_t c = 0; c < p.cols(); ++c) W(r, c) = decode(p.code(r, c), p.params(r, c / Group));
  }
  static void matvec(const Packed& p, const float* x, float* y) {
    for (index_t r = 0; r < p.rows(); ++r) {
      float acc = 0.0f;
      for (index_t c = 0; c < p.cols(); ++c) acc += decode(p.code(r, c), p.params(r, c / Group)) * x[c];
      y[r] = acc;
    }
  }
  static double bits_per_weight(const Packed& p) {
    return 8.0 * static_cast<double>(p.bytes()) / static_cast<double>(p.rows() * p.cols());
  }
};

// ---- the one registry line ---------------------------------------------------------------------------
template <class... F>
struct FormatList;
using UserFormats = FormatList<test::Sign<64>>;

}  // namespace lowbit
