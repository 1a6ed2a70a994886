// What a weight format is. A format is an empty policy type (Uniform<4,128>, Additive<2,8,8>, ...)
// with static constexpr parameters validated by static_assert; `Quantizer<Format>` is specialized per
// format family and provides the operations below. Generic code (QuantizedLinear, the quantized model
// file, benchmarks) is written against the `QuantizerFor` concept only.
#pragma once

#include <concepts>
#include <cstddef>
#include <string>

#include "../config.hpp"
#include "../core/tensor.hpp"

namespace lowbit {

// Primary template: every supported format family specializes it. Using an unsupported type fails in
// one readable line.
template <class Format>
struct Quantizer {
  static_assert(dependent_false<Format>, "lowbit: no Quantizer specialization for this format type");
};

// The operations every Quantizer<Format> provides.
//   Packed                      owning packed storage (codes + scales + codebooks), with rows(),
//                               cols() and bytes() (storage bytes, exactly as stored)
//   quantize(W)                 round-to-nearest (or the format's default) quantization of W [rows, cols]
//   dequantize(P, W)            writes Ŵ [rows, cols]
//   matvec(P, x, y)             y[rows] = Ŵ x[cols] without materializing Ŵ
//   bits_per_weight(P)          8 * bytes() / (rows * cols): scales, zeros and codebooks included
//   name()                      e.g. "uniform:4:128"
template <class Q>
concept QuantizerFor = requires(const typename Q::Packed& packed, MatrixView<const float> w,
                                MatrixView<float> out, const float* x, float* y) {
  typename Q::Format;
  { Q::quantize(w) } -> std::same_as<typename Q::Packed>;
  { Q::dequantize(packed, out) };
  { Q::matvec(packed, x, y) };
  { Q::bits_per_weight(packed) } -> std::convertible_to<double>;
  { Q::name() } -> std::convertible_to<std::string>;
  { packed.rows() } -> std::convertible_to<index_t>;
  { packed.cols() } -> std::convertible_to<index_t>;
  { packed.bytes() } -> std::convertible_to<std::size_t>;
};

}  // namespace lowbit
