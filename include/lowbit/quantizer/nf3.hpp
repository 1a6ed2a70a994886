// Quantizer<NF3<Group>>: BitDistiller's NF3 grid (format/nf3.hpp) behind the Quantizer façade: the
// per-group arithmetic the calibrators use (fit, encode, decode), round-to-nearest quantization,
// dequantization and the CPU matvec of kernels/cpu/nf3_matvec.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"
#include "../format/activation.hpp"
#include "../format/concepts.hpp"
#include "../format/nf3.hpp"
#include "../kernels/cpu/nf3_matvec.hpp"

namespace lowbit {

template <int GroupSize>
struct Quantizer<NF3<GroupSize>> {
  using Format = NF3<GroupSize>;
  using Packed = NF3Packed<GroupSize>;
  using Params = NF3Params;

  static std::string name() { return Format::name(); }

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
    kernels::cpu::nf3_dequantize_row(packed, r, out);
  }

  // y = Ŵx (kernels/cpu/nf3_matvec.hpp); NF3 has no int8-activation kernel, so every activation format
  // computes the exact product.
  template <ActivationFormat A = F32Activations>
  static void matvec(const Packed& packed, const float* x, float* y) {
    kernels::cpu::nf3_matvec(packed, x, y);
  }

  static double bits_per_weight(const Packed& packed) {
    return 8.0 * static_cast<double>(packed.bytes()) /
           static_cast<double>(packed.rows() * packed.cols());
  }
};

static_assert(QuantizerFor<Quantizer<NF3<128>>>);

}  // namespace lowbit
