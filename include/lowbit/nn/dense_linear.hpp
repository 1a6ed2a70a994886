// The full-precision Linear: a dense weight W [out, in] with its gradient buffer. It is what a model
// loaded from a checkpoint starts with, and what calibrators read (dequantize) and replace. The
// gradient buffer is allocated on first use, so inference never pays for it.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "gemm.hpp"
#include "linear.hpp"

namespace lowbit::nn {

template <class T>
class BasicDenseLinear final : public BasicLinear<T> {
 public:
  BasicDenseLinear(index_t out_features, index_t in_features)
      : out_(out_features), in_(in_features), weight_(static_cast<std::size_t>(out_features * in_features), T(0)) {}
  BasicDenseLinear(index_t out_features, index_t in_features, std::vector<T> weight)
      : out_(out_features), in_(in_features), weight_(std::move(weight)) {
    LOWBIT_CHECK(static_cast<index_t>(weight_.size()) == out_ * in_, "DenseLinear: weight holds ", weight_.size(),
                 " values, expected ", out_, "x", in_);
  }

  index_t in_features() const override { return in_; }
  index_t out_features() const override { return out_; }

  void forward(MatrixView<const T> X, MatrixView<T> Y) const override {
    check_shapes(X, Y, "forward");
    matmul_xwt<T>(X, weight_view(), Y);
  }

  void backward(MatrixView<const T> X, MatrixView<const T> dY, MatrixView<T> dX) override {
    check_shapes(X, dY, "backward");
    if (dX.data) matmul_add_dyw<T>(dY, weight_view(), dX);
    ensure_grad();
    matmul_add_dytx<T>(dY, X, MatrixView<T>(grad_.data(), out_, in_));
  }

  std::vector<BasicParameter<T>> parameters() override {
    ensure_grad();
    return {BasicParameter<T>{"weight", weight_.data(), grad_.data(), out_ * in_}};
  }

  void dequantize(MatrixView<T> W) const override {
    LOWBIT_CHECK(W.rows() == out_ && W.cols() == in_, "DenseLinear::dequantize: output is ", W.rows(), "x",
                 W.cols(), ", expected ", out_, "x", in_);
    for (index_t r = 0; r < out_; ++r) std::copy_n(weight_.data() + r * in_, in_, W.row(r));
  }

  void dequantize_row(index_t r, T* out) const override {
    LOWBIT_CHECK(r >= 0 && r < out_, "DenseLinear::dequantize_row: row ", r, " is outside [0, ", out_, ")");
    std::copy_n(weight_.data() + r * in_, in_, out);
  }
  std::size_t bytes() const override { return weight_.size() * sizeof(T); }
  std::string format() const override { return sizeof(T) == 4 ? "f32" : "f64"; }
  std::vector<StoredTensor> stored_tensors() const override {
    static_assert(sizeof(T) == 4 || sizeof(T) == 8);
    if constexpr (sizeof(T) == 4)
      return {stored_tensor("weight", StoredType::F32, {out_, in_}, weight_)};
    else
      return BasicLinear<T>::stored_tensors();  // f64 layers exist for gradient checks only
  }

  MatrixView<const T> weight_view() const { return MatrixView<const T>(weight_.data(), out_, in_); }
  MatrixView<T> weight_view() { return MatrixView<T>(weight_.data(), out_, in_); }
  std::vector<T>& weight() { return weight_; }
  const std::vector<T>& weight() const { return weight_; }
  std::vector<T>& grad() {
    ensure_grad();
    return grad_;
  }

 private:
  template <class A, class B>
  void check_shapes(const A& X, const B& Y, const char* what) const {
    LOWBIT_CHECK(X.cols() == in_ && Y.cols() == out_ && X.rows() == Y.rows(), "DenseLinear::", what,
                 ": got input ", X.rows(), "x", X.cols(), " and output ", Y.rows(), "x", Y.cols(),
                 " for a ", out_, "x", in_, " weight");
  }
  void ensure_grad() {
    if (grad_.size() != weight_.size()) grad_.assign(weight_.size(), T(0));
  }

  index_t out_, in_;
  std::vector<T> weight_;
  std::vector<T> grad_;
};

using DenseLinear = BasicDenseLinear<float>;

}  // namespace lowbit::nn
