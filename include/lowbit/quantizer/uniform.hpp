// Quantizer<Uniform<Bits, GroupSize, Mode>>: round-to-nearest quantization with each group's own
// min/max (or max |w|), dequantization, the fastest CPU matvec of this build (fp32 activations, or int8
// activations on request: format/activation.hpp), and the storage cost.
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
#include "../format/concepts.hpp"
#include "../format/uniform.hpp"
#include "../kernels/cpu/uniform_matvec.hpp"
#include "../kernels/cpu/uniform_matvec_q8.hpp"

namespace lowbit {

template <int Bits, int GroupSize, UniformMode Mode>
struct Quantizer<Uniform<Bits, GroupSize, Mode>> {
  using Format = Uniform<Bits, GroupSize, Mode>;
  using Packed = UniformPacked<Format>;
  using Params = UniformGroupParams;

  static std::string name() { return Format::name(); }

  // Per-group arithmetic (the grid calibrators use; see format/uniform.hpp).
  static Params fit(float lo, float hi) { return uniform_fit<Format>(lo, hi); }
  static std::uint32_t encode(float w, const Params& p) { return uniform_encode(w, p, Format::max_code); }
  static float decode(std::uint32_t code, const Params& p) { return uniform_decode(code, p); }

  // Round-to-nearest; throws lowbit::Error on an empty matrix or a NaN/Inf weight.
  static Packed quantize(MatrixView<const float> W) {
    LOWBIT_CHECK(W.data != nullptr && W.rows() > 0 && W.cols() > 0, name(), " quantize: weight matrix is empty (",
                 W.rows(), "x", W.cols(), ")");
    for (index_t r = 0; r < W.rows(); ++r) {
      const float* w = W.row(r);
      for (index_t c = 0; c < W.cols(); ++c)
        LOWBIT_CHECK(std::isfinite(w[c]), name(), " quantize: weight (", r, ", ", c, ") is ", w[c],
                     "; expected a finite value");
    }
    Packed packed(W.rows(), W.cols());
    parallel_for(
        0, W.rows(),
        [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) {
            const float* w = W.row(r);
            for (index_t g = 0; g < packed.groups_per_row(); ++g) {
              const index_t c0 = packed.group_begin(g), c1 = packed.group_end(g);
              float lo = w[c0], hi = w[c0];
              for (index_t c = c0 + 1; c < c1; ++c) {
                lo = std::min(lo, w[c]);
                hi = std::max(hi, w[c]);
              }
              const Params p = fit(lo, hi);
              packed.set_params(r, g, p);
              for (index_t c = c0; c < c1; ++c) packed.set_code(r, c, encode(w[c], p));
            }
          }
        },
        8);
    return packed;
  }

  static void dequantize(const Packed& packed, MatrixView<float> W) {
    LOWBIT_CHECK(W.rows() == packed.rows() && W.cols() == packed.cols(), name(), " dequantize: output is ",
                 W.rows(), "x", W.cols(), ", expected ", packed.rows(), "x", packed.cols());
    parallel_for(
        0, packed.rows(),
        [&](index_t r0, index_t r1) {
          for (index_t r = r0; r < r1; ++r) dequantize_row(packed, r, W.row(r));
        },
        8);
  }

  // Row r of Ŵ into out[cols].
  static void dequantize_row(const Packed& packed, index_t r, float* out) {
    const std::uint32_t* words = packed.row_codes(r);
    for (index_t g = 0; g < packed.groups_per_row(); ++g) {
      const float s = packed.scale(r, g);
      const std::uint32_t z = packed.zero(r, g);
      for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c)
        out[c] = uniform_decode(unpack_code<Bits>(words, c), s, z);
    }
  }

  // y[rows] = Ŵ x[cols] with the fastest CPU path of this build (kernels/cpu/uniform_matvec.hpp), for
  // fp32 activations or, with Int8Activations, the int8 kernels of kernels/cpu/uniform_matvec_q8.hpp
  // (the exact path where this build or format has no int8 kernel: format/activation.hpp).
  template <ActivationFormat A = F32Activations>
  static void matvec(const Packed& packed, const float* x, float* y) {
    if constexpr (std::same_as<A, Int8Activations>)
      kernels::cpu::uniform_matvec_q8(packed, x, y);
    else
      kernels::cpu::uniform_matvec(packed, x, y);
  }
  // Whether matvec<A> has a kernel of its own on this build (otherwise it is the exact path).
  template <ActivationFormat A>
  static constexpr bool has_kernel_for() {
    if constexpr (std::same_as<A, Int8Activations>)
      return kernels::cpu::uniform_q8_supported<Format>();
    else
      return A::exact;
  }

  static double bits_per_weight(const Packed& packed) {
    return 8.0 * static_cast<double>(packed.bytes()) / static_cast<double>(packed.rows() * packed.cols());
  }
};

static_assert(QuantizerFor<Quantizer<Uniform<4, 128>>>);
static_assert(QuantizerFor<Quantizer<Uniform<3, whole_row, UniformMode::Symmetric>>>);

}  // namespace lowbit
