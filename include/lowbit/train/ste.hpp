// Gradients through non-differentiable steps. Quantization-aware training rounds weights in the forward
// pass and lets the gradient through unchanged (identity STE) or only inside the clipping range
// (clipped STE). The Auto Quantization Encoder's parametric Heaviside H(y) = α·sign(y − β) uses an arctan
// surrogate (ALGORITHMS.md §4.1): the backward pass treats the step as smooth with slope k near zero.
//
// Surrogates for ∂H/∂y with u = y − β (∂H/∂β = −∂H/∂y always):
//   AqeSqrt       α·(2/π)·k / sqrt((k u)² + 1)  what the AQE repo computes; it is the exact derivative of
//                 α·(2/π)·asinh(k u), which is the smooth function our finite-difference test checks.
//   ExactArctan   α·(2/π)·k / (1 + (k u)²)      the true derivative of α·(2/π)·arctan(k u).
// ∂H/∂α: Sign (default) uses sign(u), the exact derivative of the forward value α·sign(u); Smooth uses
// (2/π)·arctan(k u), consistent with the surrogate (the AQE repo writes (2/π)·arctan(y), i.e. k = 1, β = 0).
#pragma once

#include <cmath>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace lowbit::train {

// Identity STE: ∂round(x)/∂x := 1.
template <class T>
void ste_identity_backward(const T* dout, T* din, index_t count) {
  for (index_t i = 0; i < count; ++i) din[i] += dout[i];
}

// Clipped STE: the gradient passes where lo ≤ x ≤ hi (the values a clamp-then-round leaves unclamped).
template <class T>
void ste_clipped_backward(const T* x, const T* dout, T* din, index_t count, T lo, T hi) {
  for (index_t i = 0; i < count; ++i)
    if (x[i] >= lo && x[i] <= hi) din[i] += dout[i];
}

enum class HeavisideSurrogate { AqeSqrt, ExactArctan };
enum class HeavisideAlphaGrad { Sign, Smooth };

template <class T>
struct ParametricHeaviside {
  T k = T(4);
  HeavisideSurrogate surrogate = HeavisideSurrogate::AqeSqrt;
  HeavisideAlphaGrad alpha_grad = HeavisideAlphaGrad::Sign;

  static constexpr T two_over_pi = T(0.63661977236758134308);

  static T sign(T u) { return u > T(0) ? T(1) : (u < T(0) ? T(-1) : T(0)); }

  // The smooth function whose derivative the surrogate is, per unit α: (2/π)·asinh(k u) or (2/π)·arctan(k u).
  T smooth(T u) const {
    return surrogate == HeavisideSurrogate::AqeSqrt ? two_over_pi * std::asinh(k * u) : two_over_pi * std::atan(k * u);
  }
  // d smooth / du.
  T slope(T u) const {
    const T ku = k * u;
    return surrogate == HeavisideSurrogate::AqeSqrt ? two_over_pi * k / std::sqrt(ku * ku + T(1))
                                                    : two_over_pi * k / (T(1) + ku * ku);
  }

  // y, out: [rows, channels]; alpha, beta: [channels]. out = α_c·sign(y − β_c).
  void forward(MatrixView<const T> y, const T* alpha, const T* beta, MatrixView<T> out) const {
    LOWBIT_CHECK(out.rows() == y.rows() && out.cols() == y.cols(), "ParametricHeaviside: output is [", out.rows(),
                 ", ", out.cols(), "], expected [", y.rows(), ", ", y.cols(), "]");
    for (index_t r = 0; r < y.rows(); ++r)
      for (index_t c = 0; c < y.cols(); ++c) out(r, c) = alpha[c] * sign(y(r, c) - beta[c]);
  }

  // Accumulates (+=) dy [rows, channels] and dalpha, dbeta [channels] from dout.
  void backward(MatrixView<const T> y, const T* alpha, const T* beta, MatrixView<const T> dout, MatrixView<T> dy,
                T* dalpha, T* dbeta) const {
    for (index_t r = 0; r < y.rows(); ++r)
      for (index_t c = 0; c < y.cols(); ++c) {
        const T u = y(r, c) - beta[c];
        const T g = dout(r, c);
        const T d_u = alpha[c] * slope(u) * g;
        if (dy.data) dy(r, c) += d_u;
        if (dbeta) dbeta[c] -= d_u;
        if (dalpha) dalpha[c] += (alpha_grad == HeavisideAlphaGrad::Sign ? sign(u) : two_over_pi * std::atan(k * u)) * g;
      }
  }
};

}  // namespace lowbit::train
