// Quantizer<BCQ<Bits, Group>>: binary-coding quantization (format/bcq.hpp) behind the Quantizer façade.
// Its default quantization is the greedy residual fit (Guo et al. 2017; the `rtn` method for BCQ): per
// group, offset = mean(w), then for each plane b_i = sign(r), α_i = mean|r|, r −= α_i·b_i. As a group-grid
// format its fit(lo, hi) is the uniform grid over [lo, hi] (UniQuanF's unified initialization), so GPTQ
// and AutoClip can fill it too. The matvec is the LUT kernel of kernels/cpu/bcq_matvec.hpp, or with
// Int8Activations the int8-table kernel of kernels/cpu/bcq_matvec_q8.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <string>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../format/activation.hpp"
#include "../format/bcq.hpp"
#include "../format/concepts.hpp"
#include "../kernels/cpu/bcq_matvec.hpp"
#include "../kernels/cpu/bcq_matvec_q8.hpp"

namespace lowbit {

// The greedy residual fit of one group of `count` weights: parameters with α ascending (fp16-rounded)
// and the nearest-level codes for them written to codes[count].
template <int Bits>
BCQParams<Bits> bcq_greedy_fit(const float* w, index_t count, std::uint32_t* codes) {
  double mean = 0.0;
  for (index_t c = 0; c < count; ++c) mean += w[c];
  mean /= static_cast<double>(count);
  BCQParams<Bits> p;
  p.offset = static_cast<float>(mean);
  std::vector<float> r(w, w + count);
  float desc[Bits];
  for (int i = 0; i < Bits; ++i) {
    double a = 0.0;
    for (index_t c = 0; c < count; ++c) a += std::fabs(r[c] - p.offset);
    desc[i] = static_cast<float>(a / static_cast<double>(count));
    for (index_t c = 0; c < count; ++c) r[c] -= (r[c] - p.offset >= 0.0f ? desc[i] : -desc[i]);
  }
  for (int i = 0; i < Bits; ++i) p.alpha[i] = desc[Bits - 1 - i];  // ascending
  p = bcq_round(p);
  for (index_t c = 0; c < count; ++c) codes[c] = bcq_encode<Bits>(w[c], p);
  return p;
}

template <int Bits, int GroupSize>
struct Quantizer<BCQ<Bits, GroupSize>> {
  using Format = BCQ<Bits, GroupSize>;
  using Packed = BCQPacked<Format>;
  using Params = BCQParams<Bits>;

  static std::string name() { return Format::name(); }

  // Group-grid arithmetic: the uniform grid over [lo, hi], nearest level, level of a code.
  static Params fit(float lo, float hi) { return bcq_fit_uniform<Bits>(lo, hi); }
  static std::uint32_t encode(float w, const Params& p) { return bcq_encode<Bits>(w, p); }
  static float decode(std::uint32_t code, const Params& p) { return bcq_decode<Bits>(code, p); }

  // The greedy residual fit of every group.
  static Packed quantize(MatrixView<const float> W) {
    Packed packed(W.rows(), W.cols());
    parallel_for(0, W.rows(), [&](index_t r0, index_t r1) {
      std::vector<std::uint32_t> codes(static_cast<std::size_t>(packed.group_size()));
      for (index_t r = r0; r < r1; ++r)
        for (index_t g = 0; g < packed.groups_per_row(); ++g) {
          const index_t c0 = packed.group_begin(g), c1 = packed.group_end(g);
          packed.set_params(r, g, bcq_greedy_fit<Bits>(W.row(r) + c0, c1 - c0, codes.data()));
          for (index_t c = c0; c < c1; ++c) packed.set_code(r, c, codes[static_cast<std::size_t>(c - c0)]);
        }
    });
    return packed;
  }

  static void dequantize(const Packed& packed, MatrixView<float> W) {
    LOWBIT_CHECK(W.rows() == packed.rows() && W.cols() == packed.cols(), "bcq dequantize: output is ", W.rows(),
                 "x", W.cols(), ", expected ", packed.rows(), "x", packed.cols());
    parallel_for(0, packed.rows(), [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) dequantize_row(packed, r, W.row(r));
    });
  }

  static void dequantize_row(const Packed& packed, index_t r, float* out) {
    kernels::cpu::bcq_dequantize_row(packed, r, out);
  }

  // y = Ŵx (LUT kernel), or with Int8Activations the int8-table kernel (approximate within the bound of
  // kernels/cpu/bcq_matvec_q8.hpp; the exact path where this build has no such kernel).
  template <ActivationFormat A = F32Activations>
  static void matvec(const Packed& packed, const float* x, float* y) {
    if constexpr (std::same_as<A, Int8Activations>)
      kernels::cpu::bcq_matvec_q8(packed, x, y);
    else
      kernels::cpu::bcq_matvec(packed, x, y);
  }
  // Whether matvec<A> has a kernel of its own on this build (otherwise it is the exact path).
  template <ActivationFormat A>
  static constexpr bool has_kernel_for() {
    if constexpr (std::same_as<A, Int8Activations>)
      return kernels::cpu::bcq_q8_supported();
    else
      return A::exact;
  }

  static double bits_per_weight(const Packed& packed) {
    return 8.0 * static_cast<double>(packed.bytes()) / static_cast<double>(packed.rows() * packed.cols());
  }
};

static_assert(QuantizerFor<Quantizer<BCQ<3, 128>>>);
static_assert(GroupGridFormat<BCQ<2, whole_row>>);

}  // namespace lowbit
