// QuantizedLinear<Format>: a Linear whose weight lives in a packed quantized format, for any Format
// with a Quantizer satisfying QuantizerFor. One token (decoding) goes through the format's matvec,
// which reads only the packed codes; a batch (prefill, training) dequantizes Ŵ once into a cached dense
// copy and uses the Eigen GEMM, where compute, not weight traffic, dominates. Nothing is trainable
// here; formats with trainable scales or codebooks specialize or wrap this class.
#pragma once

#include <cstddef>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../format/concepts.hpp"
#include "../quantizer.hpp"
#include "gemm.hpp"
#include "linear.hpp"

namespace lowbit::nn {

template <class Format>
  requires QuantizerFor<Quantizer<Format>>
class QuantizedLinear : public Linear {
 public:
  using Q = Quantizer<Format>;
  using Packed = typename Q::Packed;

  explicit QuantizedLinear(Packed packed) : packed_(std::move(packed)) {
    LOWBIT_CHECK(packed_.rows() > 0 && packed_.cols() > 0, "QuantizedLinear<", Q::name(),
                 ">: packed weight is empty");
  }
  QuantizedLinear(QuantizedLinear&& other) noexcept
      : packed_(std::move(other.packed_)), precision_(other.precision_), dense_(std::move(other.dense_)) {}
  QuantizedLinear(const QuantizedLinear&) = delete;
  QuantizedLinear& operator=(const QuantizedLinear&) = delete;

  // Round-to-nearest quantization of a dense weight W [out, in].
  static QuantizedLinear from_dense(MatrixView<const float> W) { return QuantizedLinear(Q::quantize(W)); }

  index_t in_features() const override { return packed_.cols(); }
  index_t out_features() const override { return packed_.rows(); }

  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    check_shapes(X.rows(), X.cols(), Y.rows(), Y.cols(), "forward");
    if (X.rows() == 1) {
      if constexpr (requires(const Packed& p, const float* x, float* y) { Q::matvec(p, x, y, MatvecPrecision::Exact); })
        Q::matvec(packed_, X.row(0), Y.row(0), precision_);
      else
        Q::matvec(packed_, X.row(0), Y.row(0));
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
  std::size_t bytes() const override { return packed_.bytes(); }
  std::string format() const override { return Q::name(); }

  const Packed& packed() const { return packed_; }

  // How single-token (decoding) products treat the activation: Exact (fp32, the default) or
  // Int8Activations (x quantized to int8 per block, the VNNI kernel; formats without that kernel
  // ignore it). Batched products always use the exact dense path.
  void set_matvec_precision(MatvecPrecision p) { precision_ = p; }
  MatvecPrecision matvec_precision() const { return precision_; }

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
  MatvecPrecision precision_ = MatvecPrecision::Exact;
  mutable std::mutex cache_mutex_;
  mutable std::vector<float> dense_;  // [out, in] Ŵ for batched products; empty until first needed
};

}  // namespace lowbit::nn
