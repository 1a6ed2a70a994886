// QuantizedLinear<Format>: a Linear whose weight lives in a packed quantized format, for any registered
// weight format (format/concepts.hpp). One token (decoding) goes through the format's matvec, which
// reads only the packed codes, with the activation format chosen by set_activations (format/
// activation.hpp: exact fp32 by default); a batch (prefill, training) dequantizes Ŵ once into a cached
// dense copy and uses the Eigen GEMM, where compute, not weight traffic, dominates. Nothing is trainable
// here: a format family with trainable parameters provides its trainable form by specializing
// TrainableForm<Format> next to that form (nn/additive_linear.hpp for AQLM), and trainable_form()
// returns it.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../format/activation.hpp"
#include "../format/concepts.hpp"
#include "../quantizer.hpp"
#include "gemm.hpp"
#include "linear.hpp"

namespace lowbit::nn {

// Specialized per format family that has a trainable form:
//   static LinearPtr make(const typename Quantizer<Format>::Packed&);
template <class Format>
struct TrainableForm;

template <class Format>
concept HasTrainableForm = requires(const typename Quantizer<Format>::Packed& packed) {
  { TrainableForm<Format>::make(packed) } -> std::same_as<LinearPtr>;
};

template <class Format>
  requires WeightFormat<Format>
class QuantizedLinear : public Linear {
 public:
  using Q = Quantizer<Format>;
  using Packed = typename Q::Packed;

  explicit QuantizedLinear(Packed packed) : packed_(std::move(packed)) {
    LOWBIT_CHECK(packed_.rows() > 0 && packed_.cols() > 0, "QuantizedLinear<", Q::name(),
                 ">: packed weight is empty");
  }
  QuantizedLinear(QuantizedLinear&& other) noexcept
      : packed_(std::move(other.packed_)),
        matvec_(other.matvec_),
        activations_(std::move(other.activations_)),
        dense_(std::move(other.dense_)) {}
  QuantizedLinear(const QuantizedLinear&) = delete;
  QuantizedLinear& operator=(const QuantizedLinear&) = delete;

  // Round-to-nearest quantization of a dense weight W [out, in].
  static QuantizedLinear from_dense(MatrixView<const float> W) { return QuantizedLinear(Q::quantize(W)); }

  index_t in_features() const override { return packed_.cols(); }
  index_t out_features() const override { return packed_.rows(); }

  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    check_shapes(X.rows(), X.cols(), Y.rows(), Y.cols(), "forward");
    if (X.rows() == 1) {
      matvec_(packed_, X.row(0), Y.row(0));
      return;
    }
    matmul_xwt<float>(X, dense(), Y);
  }

  // dX += dY·Ŵ; there is nothing trainable, so X is not needed.
  void backward(MatrixView<const float> X, MatrixView<const float> dY, MatrixView<float> dX) override {
    check_shapes(X.rows(), X.cols(), dY.rows(), dY.cols(), "backward");
    if (!dX.data) return;
    LOWBIT_CHECK(dX.rows() == dY.rows() && dX.cols() == in_features(), "QuantizedLinear<", Q::name(),
                 ">::backward: dX is ", dX.rows(), "x", dX.cols(), ", expected ", dY.rows(), "x", in_features());
    matmul_add_dyw<float>(dY, dense(), dX);
  }

  void dequantize(MatrixView<float> W) const override { Q::dequantize(packed_, W); }
  // One row through the format's own row decoder when it has one (every built-in family does).
  void dequantize_row(index_t r, float* out) const override {
    if constexpr (requires { Q::dequantize_row(packed_, r, out); }) {
      LOWBIT_CHECK(r >= 0 && r < out_features(), "QuantizedLinear<", Q::name(), ">::dequantize_row: row ", r,
                   " is outside [0, ", out_features(), ")");
      Q::dequantize_row(packed_, r, out);
    } else {
      Linear::dequantize_row(r, out);
    }
  }
  std::size_t bytes() const override { return packed_.bytes(); }
  std::string format() const override { return Q::name(); }
  std::vector<StoredTensor> stored_tensors() const override { return packed_.stored_tensors(); }

  LinearPtr trainable_form() const override {
    if constexpr (HasTrainableForm<Format>)
      return TrainableForm<Format>::make(packed_);
    else
      return nullptr;
  }

  const Packed& packed() const { return packed_; }

  // The activation format of single-token (decoding) products: F32Activations (exact, the default) or
  // Int8Activations (x quantized to int8 per block, the VNNI kernels); a format without a kernel for it
  // computes the exact product. Batched products always use the exact dense path.
  template <ActivationFormat A>
  void set_activations() {
    matvec_ = &matvec_with<Format, A>;
    activations_ = A::name();
  }
  // The same by name ("f32", "int8"); throws on an unknown name.
  bool set_activations(const std::string& name) override {
    bool found = false;
    [&]<class... A>(ActivationFormatList<A...>) {
      ((!found && A::name() == name ? (set_activations<A>(), found = true) : false), ...);
    }(RegisteredActivationFormats{});
    LOWBIT_CHECK(found, "QuantizedLinear<", Q::name(), ">: unknown activation format '", name, "' (known: f32, int8)");
    return true;
  }
  const std::string& activations() const { return activations_; }

  void release_workspace() override { release_dense_cache(); }

  // Drops the cached dense Ŵ (it is rebuilt on the next batched call).
  void release_dense_cache() {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    dense_.clear();
    dense_.shrink_to_fit();
  }

 private:
  void check_shapes(index_t in_rows, index_t in_cols, index_t out_rows, index_t out_cols, const char* what) const {
    LOWBIT_CHECK(in_cols == in_features() && out_cols == out_features() && in_rows == out_rows, "QuantizedLinear<",
                 Q::name(), ">::", what, ": got ", in_rows, "x", in_cols, " and ", out_rows, "x", out_cols, " for a ",
                 out_features(), "x", in_features(), " weight");
  }

  MatrixView<const float> dense() const {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (dense_.empty()) {
      dense_.resize(static_cast<std::size_t>(out_features() * in_features()));
      Q::dequantize(packed_, MatrixView<float>(dense_.data(), out_features(), in_features()));
    }
    return MatrixView<const float>(dense_.data(), out_features(), in_features());
  }

  Packed packed_;
  void (*matvec_)(const Packed&, const float*, float*) = &matvec_with<Format, F32Activations>;
  std::string activations_ = F32Activations::name();
  mutable std::mutex cache_mutex_;
  mutable std::vector<float> dense_;  // [out, in] Ŵ for batched products; empty until first needed
};

}  // namespace lowbit::nn

// The trainable forms of the format families that have one (each specializes TrainableForm next to
// itself). Included here, after QuantizedLinear, so that every user of QuantizedLinear sees them.
#include "additive_linear.hpp"
