// The Linear interface: every projection in the model goes through it, so a dense fp32 layer, a
// QuantizedLinear<Uniform<3,128>>, a QuantizedLinear<Additive<2,8,8>> or an encoder-wrapped layer can
// replace each other without touching the model code (DESIGN.md, idea 3). Activations are row-major
// [tokens, features]; weights are [out_features, in_features] as in PyTorch and llama2.c.
// A layer also owns its life cycle: it names its format (descriptor), lists the tensors a file stores
// for it, turns into its trainable form and back, and says what input its weights really multiply, so
// io/, calib/ and train/ handle every format family through this interface alone.
// `Linear` is the fp32 interface every format implements; `BasicLinear<double>` exists only so the
// finite-difference checks run the model's own code in double precision.
#pragma once

#include <algorithm>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/stored_tensor.hpp"
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

  // Row r of Ŵ into out[in_features()]: what a token table stored in this layer's format reads per
  // token (nn/model.hpp). Formats override it to decode one row; this fallback decodes the whole
  // matrix, so it is correct for any layer but meant for tests and rare calls.
  virtual void dequantize_row(index_t r, T* out) const {
    LOWBIT_CHECK(r >= 0 && r < out_features(), "dequantize_row: row ", r, " is outside [0, ", out_features(), ")");
    std::vector<T> w(static_cast<std::size_t>(out_features() * in_features()));
    dequantize(MatrixView<T>(w.data(), out_features(), in_features()));
    std::copy_n(w.data() + r * in_features(), in_features(), out);
  }

  // Storage of the weight representation in bytes, exactly as stored (codes, scales, codebooks).
  virtual std::size_t bytes() const = 0;

  // Format descriptor: "f32", "uniform:4:128", "additive:2:8:8", ...
  virtual std::string format() const = 0;

  // Switches the activation format of single-token products (format/activation.hpp: "f32" exact,
  // "int8" for the integer kernels). Returns whether this layer has such a choice; a layer without one
  // (dense fp32) keeps its exact product and returns false.
  virtual bool set_activations(const std::string& name) {
    (void)name;
    return false;
  }

  // Frees memory that the layer can rebuild on demand (e.g. a quantized layer's dequantized copy for
  // batched calls). Calibration calls it once a block is finished, so caches do not pile up.
  virtual void release_workspace() {}

  // ---- life cycle ----
  // The tensors a file stores for this layer, named "<linear>.<suffix>" there: a dense layer's
  // "weight", or a packed format's own tensors (format/). Views into the layer, valid while it lives.
  // A trainable form has none of its own: write its inference_form() instead.
  virtual std::vector<StoredTensor> stored_tensors() const {
    fail("layer of format '", format(), "' has no stored form; convert it with inference_form() first");
  }

  // The form that training updates (a quantized layer whose scales or codebooks become parameters,
  // codes frozen), or nullptr when the layer has nothing to train that way (a dense layer trains its
  // own weight, a format without a trainable form stays frozen).
  virtual std::unique_ptr<BasicLinear> trainable_form() const { return nullptr; }
  // The packed form a trainable layer returns to (rounded to its stored precision), or nullptr when the
  // layer already is one.
  virtual std::unique_ptr<BasicLinear> inference_form() const { return nullptr; }

  // What the weights multiply: X itself, unless the layer transforms its input first (a learned
  // activation encoder). Calibration statistics (H = XᵀX) are taken on this effective input.
  virtual bool transforms_input() const { return false; }
  virtual void effective_input(MatrixView<const T> X, MatrixView<T> out) const {
    LOWBIT_CHECK(out.rows() == X.rows() && out.cols() == X.cols(), "effective_input: output is ", out.rows(), "x",
                 out.cols(), ", input ", X.rows(), "x", X.cols());
    for (index_t r = 0; r < X.rows(); ++r)
      for (index_t c = 0; c < X.cols(); ++c) out(r, c) = X(r, c);
  }

  double bits_per_weight() const {
    return 8.0 * static_cast<double>(bytes()) / static_cast<double>(in_features() * out_features());
  }
};

using Linear = BasicLinear<float>;
using LinearPtr = std::unique_ptr<Linear>;

template <class T>
using BasicLinearPtr = std::unique_ptr<BasicLinear<T>>;

}  // namespace lowbit::nn
