// 1-bit activation formats (ALGORITHMS.md §4): the input of a linear layer becomes x̂_c = α_c·step(u_c)
// with u = f(x) − β (f a learned encoder, nn/activation_encoder.hpp) and step(u) ∈ {−1, +1}, so a row of
// the product is y = W·(α ⊙ s) = W'·s with W' = W·diag(α) and s ∈ {±1}^d: multiplication-free masked adds
// (kernels/cpu/sign_matvec.hpp). Unlike F32Activations / Int8Activations (format/activation.hpp), which
// only choose a kernel, a binary format changes what the layer computes, so it wraps the layer
// (nn/encoded_linear.hpp) instead of being switched on it.
//
// The step is a policy. `Heaviside` is the Auto Quantization Encoder's parametric sign:
//   forward   step(u) = +1 if u > 0, else −1 (0 maps to −1, the packed-sign kernels' convention);
//   backward  the surrogate of the arctan, step(u) ≈ (2/π)·atan(k·u), so d step/du ≈ (2/π)·k/(1 + (k·u)²)
//             with sharpness k (the seed's k = 4; the trainer may anneal it). The seed's later commit
//             wrote k/sqrt((k·u)² + 1) instead of the arctan's own derivative; lowbit uses the
//             derivative of the function it names, so finite differences of `surrogate` check it.
#pragma once

#include <cmath>
#include <concepts>
#include <string>

#include "activation.hpp"

namespace lowbit {

struct Heaviside {
  static std::string name() { return "heaviside"; }
  static constexpr double default_k = 4.0;

  template <class T>
  static T step(T u) {
    return u > T(0) ? T(1) : T(-1);
  }
  // The smooth function whose derivative the backward pass uses.
  template <class T>
  static T surrogate(T u, T k) {
    return T(2.0 / 3.14159265358979323846) * std::atan(k * u);
  }
  template <class T>
  static T surrogate_grad(T u, T k) {
    const T ku = k * u;
    return T(2.0 / 3.14159265358979323846) * k / (T(1) + ku * ku);
  }
};

template <class S>
concept StepFunction = requires(float u) {
  { S::name() } -> std::convertible_to<std::string>;
  { S::template step<float>(u) } -> std::convertible_to<float>;
  { S::template surrogate<float>(u, u) } -> std::convertible_to<float>;
  { S::template surrogate_grad<float>(u, u) } -> std::convertible_to<float>;
};

// Per-channel ±α activations through step S.
template <StepFunction S>
struct Binary {
  using Step = S;
  static std::string name() { return "binary:" + S::name(); }
  static constexpr bool exact = false;
  static constexpr int bits = 1;
};

static_assert(ActivationFormat<Binary<Heaviside>>);

}  // namespace lowbit
