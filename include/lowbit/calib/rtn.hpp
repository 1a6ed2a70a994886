// Round-to-nearest (RTN), the baseline every calibrated method is measured against, and `GroupGrid`,
// the small per-group view of a format that GPTQ and AutoClip need: fit a group's parameters from a
// (possibly clipped) range [lo, hi], encode a weight to a code, decode it back, and write both into the
// format's packed storage. The grid forwards to the format's own arithmetic (fp16-rounded parameters
// included), so a calibrator's codes always mean exactly what the kernels will compute.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../format/concepts.hpp"
#include "../format/uniform.hpp"
#include "../quantizer.hpp"

namespace lowbit::calib {

// Default grid: the format's Quantizer exposes Params, fit(lo, hi), encode(w, p), decode(code, p) and
// a group size; its Packed exposes an incremental build (set_params, set_code). A format whose API
// differs specializes GroupGrid instead.
template <class Format>
struct GroupGrid {
  using Q = Quantizer<Format>;
  using Packed = typename Q::Packed;
  using Params = typename Q::Params;

  // Columns per group for a row of `cols` weights (a whole-row group returns cols).
  static index_t group_size(index_t cols) {
    return Format::group_size > 0 ? std::min<index_t>(Format::group_size, cols) : cols;
  }
  static Packed make(index_t rows, index_t cols) { return Packed(rows, cols); }
  static Params fit(float lo, float hi) { return Q::fit(lo, hi); }
  static std::uint32_t encode(float w, const Params& p) { return Q::encode(w, p); }
  static float decode(std::uint32_t code, const Params& p) { return Q::decode(code, p); }
  static void set_params(Packed& packed, index_t row, index_t group, const Params& p) {
    packed.set_params(row, group, p);
  }
  static void set_code(Packed& packed, index_t row, index_t col, std::uint32_t code) {
    packed.set_code(row, col, code);
  }
};

// Uniform<Bits, Group, Mode>: the per-group arithmetic of format/uniform.hpp (fp16 scale rounded before
// any code is computed, integer zero point), so codes match the kernels bit for bit.
template <int Bits, int GroupSize, UniformMode Mode>
struct GroupGrid<Uniform<Bits, GroupSize, Mode>> {
  using Format = Uniform<Bits, GroupSize, Mode>;
  using Packed = UniformPacked<Format>;
  using Params = UniformGroupParams;
  static index_t group_size(index_t cols) { return uniform_group_size(GroupSize, cols); }
  static Packed make(index_t rows, index_t cols) { return Packed(rows, cols); }
  static Params fit(float lo, float hi) { return uniform_fit<Format>(lo, hi); }
  static std::uint32_t encode(float w, const Params& p) { return uniform_encode(w, p, Format::max_code); }
  static float decode(std::uint32_t code, const Params& p) { return uniform_decode(code, p); }
  static void set_params(Packed& packed, index_t row, index_t group, const Params& p) {
    packed.set_params(row, group, p);
  }
  static void set_code(Packed& packed, index_t row, index_t col, std::uint32_t code) {
    packed.set_code(row, col, code);
  }
};

// Quantizes one row segment with parameters fitted to its own min/max; writes the fake-quantized
// values to `out` when it is not null. Returns the parameters.
template <class Format>
typename GroupGrid<Format>::Params rtn_group(const float* w, index_t count, float* out = nullptr) {
  using Grid = GroupGrid<Format>;
  float lo = w[0], hi = w[0];
  for (index_t c = 1; c < count; ++c) {
    lo = std::min(lo, w[c]);
    hi = std::max(hi, w[c]);
  }
  const auto p = Grid::fit(lo, hi);
  if (out)
    for (index_t c = 0; c < count; ++c) out[c] = Grid::decode(Grid::encode(w[c], p), p);
  return p;
}

// RTN of W [rows, cols]: every group's parameters come from its own min and max.
template <class Format>
typename GroupGrid<Format>::Packed rtn_quantize(MatrixView<const float> W) {
  using Grid = GroupGrid<Format>;
  LOWBIT_CHECK(W.rows() > 0 && W.cols() > 0, "rtn: empty weight matrix ", W.rows(), "x", W.cols());
  auto packed = Grid::make(W.rows(), W.cols());
  const index_t group = Grid::group_size(W.cols());
  parallel_for(0, W.rows(), [&](index_t r0, index_t r1) {
    for (index_t r = r0; r < r1; ++r) {
      const float* w = W.row(r);
      for (index_t c0 = 0, g = 0; c0 < W.cols(); c0 += group, ++g) {
        const index_t count = std::min(group, W.cols() - c0);
        const auto p = rtn_group<Format>(w + c0, count);
        Grid::set_params(packed, r, g, p);
        for (index_t c = 0; c < count; ++c) Grid::set_code(packed, r, c0 + c, Grid::encode(w[c0 + c], p));
      }
    }
  }, 8);
  return packed;
}

}  // namespace lowbit::calib
