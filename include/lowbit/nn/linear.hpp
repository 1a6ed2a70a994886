// The Linear interface: every projection in the model goes through it, so a dense fp32 layer, a
// QuantizedLinear<Uniform<3,128>>, a QuantizedLinear<Additive<2,8,8>> or an encoder-wrapped layer can
// replace each other without touching the model code (DESIGN.md, idea 3). Activations are row-major
// [tokens, features]; weights are [out_features, in_features] as in PyTorch and llama2.c.
// `Linear` is the fp32 interface every format implements; `BasicLinear<double>` exists only so the
// finite-difference checks run the model's own code in double precision.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "../core/tensor.hpp"
#include "parameter.hpp"

namespace lowbit::nn {

template <class T>
class BasicLinear {
 public:
  virtual ~BasicLinear() = default;

  virtual index_t in_features() const = 0;
  virtual index_t out_features() const = 0;

  // Y[n, out] = X[n, in] · Ŵᵀ (Y is overwritten).
  virtual void forward(MatrixView<const T> X, MatrixView<T> Y) const = 0;

  // dX[n, in] += dY[n, out] · Ŵ, and the layer's own trainable parameters accumulate their gradients
  // (+=). `X` is the input that forward() saw. A layer with nothing trainable only propagates dX.
  virtual void backward(MatrixView<const T> X, MatrixView<const T> dY, MatrixView<T> dX) = 0;

  // Trainable tensors (dense weights; or scales/codebooks/latent weights of a quantized layer).
  virtual std::vector<BasicParameter<T>> parameters() { return {}; }

  // Writes the effective weight Ŵ [out, in].
  virtual void dequantize(MatrixView<T> W) const = 0;

  // Storage of the weight representation in bytes, exactly as stored (codes, scales, codebooks).
  virtual std::size_t bytes() const = 0;

  // Format descriptor: "f32", "uniform:4:128", "additive:2:8:8", ...
  virtual std::string format() const = 0;

  // Frees memory that the layer can rebuild on demand (e.g. a quantized layer's dequantized copy for
  // batched calls). Calibration calls it once a block is finished, so caches do not pile up.
  virtual void release_workspace() {}

  double bits_per_weight() const {
    return 8.0 * static_cast<double>(bytes()) / static_cast<double>(in_features() * out_features());
  }
};

using Linear = BasicLinear<float>;
using LinearPtr = std::unique_ptr<Linear>;

template <class T>
using BasicLinearPtr = std::unique_ptr<BasicLinear<T>>;

}  // namespace lowbit::nn
