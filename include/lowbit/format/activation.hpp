// Activation formats: how a linear layer's input vector is represented when it meets the packed
// weights, as compile-time policies like the weight formats. A kernel is specialized per (weight format,
// activation format) pair; `Quantizer<W>::matvec<A>(packed, x, y)` runs it, and a pair without a kernel
// of its own computes the exact fp32-activation result (never a slow path, never a wrong one).
//   F32Activations   x as given: the reference numerics and every format's default.
//   Int8Activations  x quantized to int8 per block of up to 256 values with one fp32 scale each (as
//                    llama.cpp's Q8 activations), so the product runs on integer dot-product instructions
//                    (AVX-512 VNNI / AVX2); each x[c] is off by at most half its block's step
//                    max|x_block|/127.
// Learned 1-bit activations (an encoder and a Heaviside step before the layer) are another policy of
// this kind; they change the layer, not just its kernel, so they wrap it (ALGORITHMS.md §4).
#pragma once

#include <concepts>
#include <string>

namespace lowbit {

struct F32Activations {
  static std::string name() { return "f32"; }
  static constexpr bool exact = true;
};

struct Int8Activations {
  static std::string name() { return "int8"; }
  static constexpr bool exact = false;
  static constexpr int max_block = 256;  // values per fp32 scale (a whole group when the group is shorter)
};

template <class A>
concept ActivationFormat = requires {
  { A::name() } -> std::convertible_to<std::string>;
  { A::exact } -> std::convertible_to<bool>;
};

template <class... A>
struct ActivationFormatList {};
// Every activation format the decoding layers can be switched to (QuantizedLinear::set_activations).
using RegisteredActivationFormats = ActivationFormatList<F32Activations, Int8Activations>;

static_assert(ActivationFormat<F32Activations> && ActivationFormat<Int8Activations>);

}  // namespace lowbit
