// What a weight format is. A format is an empty policy type (Uniform<4,128>, Additive<2,8,8>, ...)
// with static constexpr parameters validated by static_assert and a descriptor `name()`;
// `Quantizer<Format>` is specialized per format family and provides the operations below. Generic code
// (QuantizedLinear, the quantized model file, benchmarks, calibrators) is written against these
// concepts only; a family-specific capability (AdditiveFormat) sits next to its family.
#pragma once

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../core/stored_tensor.hpp"
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

// A format whose packed storage a file can hold: storage for a shape can be allocated empty and lists
// its named tensors, read-only for writing and writable for a reader to fill (core/stored_tensor.hpp).
template <class Format>
concept StorableFormat = std::constructible_from<typename Quantizer<Format>::Packed, index_t, index_t> &&
                         requires(typename Quantizer<Format>::Packed& packed,
                                  const typename Quantizer<Format>::Packed& stored) {
  { packed.stored_tensors() } -> std::same_as<std::vector<StoredTensorSlot>>;
  { stored.stored_tensors() } -> std::same_as<std::vector<StoredTensor>>;
};

// A weight format lowbit can quantize, run and store: every registered format is one (formats.hpp).
template <class Format>
concept WeightFormat = QuantizerFor<Quantizer<Format>> && StorableFormat<Format> && requires {
  { Format::name() } -> std::convertible_to<std::string>;
};

// A group-grid format: each group of `Format::group_size` weights of a row (0: the whole row) has its
// own parameters fitted from a range [lo, hi], every weight is encoded independently on that grid, and
// the packed storage is built group by group. RTN, GPTQ and AutoClip fill any such format.
template <class Format>
concept GroupGridFormat =
    WeightFormat<Format> &&
    requires(typename Quantizer<Format>::Packed& packed, const typename Quantizer<Format>::Params& p, float w,
             std::uint32_t code, index_t i) {
      { Format::group_size } -> std::convertible_to<int>;
      { Quantizer<Format>::fit(w, w) } -> std::same_as<typename Quantizer<Format>::Params>;
      { Quantizer<Format>::encode(w, p) } -> std::convertible_to<std::uint32_t>;
      { Quantizer<Format>::decode(code, p) } -> std::convertible_to<float>;
      packed.set_params(i, i, p);
      packed.set_code(i, i, code);
      { packed.code(i, i) } -> std::convertible_to<std::uint32_t>;
      { packed.params(i, i) } -> std::convertible_to<typename Quantizer<Format>::Params>;
    };

}  // namespace lowbit
