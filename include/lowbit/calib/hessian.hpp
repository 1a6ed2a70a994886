// The proxy Hessian of a linear layer's reconstruction error: H = XᵀX over every calibration row X
// that enters the layer. GPTQ, AutoClip and AQLM all score a quantized weight Ŵ by
// tr((W − Ŵ) H (W − Ŵ)ᵀ), so the pipeline accumulates one H per distinct linear input (q/k/v share
// one, gate/up share one). Each batch's XᵀX is formed by a float rank-k update (half the FLOPs of a
// GEMM) and then added into a double-precision running sum, so millions of rows lose no precision.
#pragma once

#include <Eigen/Dense>
#include <cstdint>
#include <string>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

namespace lowbit::calib {

class HessianAccumulator {
 public:
  HessianAccumulator() = default;
  explicit HessianAccumulator(index_t features) { reset(features); }

  void reset(index_t features) {
    LOWBIT_CHECK(features > 0, "HessianAccumulator: feature count must be positive, got ", features);
    features_ = features;
    sum_.setZero(features, features);
    rows_ = 0;
  }

  // Adds XᵀX for a batch X [n, features] (row-major, any row stride).
  void add(MatrixView<const float> X) {
    LOWBIT_CHECK(X.cols() == features_, "HessianAccumulator: batch has ", X.cols(),
                 " features, expected ", features_);
    if (X.rows() == 0) return;
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<const RowMajor, 0, Eigen::OuterStride<>> x(X.data, X.rows(), X.cols(),
                                                         Eigen::OuterStride<>(X.row_stride()));
    Eigen::MatrixXf batch = Eigen::MatrixXf::Zero(features_, features_);
    batch.selfadjointView<Eigen::Lower>().rankUpdate(x.transpose());
    // Only the lower triangle was written; mirror it while widening to double.
    for (index_t j = 0; j < features_; ++j)
      for (index_t i = j; i < features_; ++i) {
        const double v = batch(i, j);
        sum_(i, j) += v;
        if (i != j) sum_(j, i) += v;
      }
    rows_ += X.rows();
  }

  // Adds another accumulator's rows (e.g. from a second thread or a resumed shard).
  void merge(const HessianAccumulator& other) {
    LOWBIT_CHECK(other.features_ == features_, "HessianAccumulator: cannot merge ", other.features_,
                 " features into ", features_);
    sum_ += other.sum_;
    rows_ += other.rows_;
  }

  index_t features() const { return features_; }
  std::int64_t rows() const { return rows_; }
  // Σ xᵀx over all rows seen, [features, features], exactly symmetric.
  const Eigen::MatrixXd& sum() const { return sum_; }
  // H = 2/n · XᵀX as in GPTQ (the scale cancels in every argmin; it fixes what "percdamp" means).
  Eigen::MatrixXd gptq_hessian() const {
    LOWBIT_CHECK(rows_ > 0, "HessianAccumulator: no calibration rows were added");
    return sum_ * (2.0 / static_cast<double>(rows_));
  }

 private:
  index_t features_ = 0;
  Eigen::MatrixXd sum_;
  std::int64_t rows_ = 0;
};

}  // namespace lowbit::calib
