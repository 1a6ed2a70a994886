// The three matrix products a layer needs, forward and backward, on row-major buffers through Eigen
// maps: Y = X·Wᵀ (forward), dX += dY·W (input gradient), dW += dYᵀ·X (weight gradient). Large products
// use Eigen's OpenMP-parallel GEMM; a product with only a few rows (incremental decoding) is split
// over output features with parallel_for, since Eigen does not parallelize matrix-vector products.
#pragma once

#include <algorithm>

#include <Eigen/Core>

#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace lowbit::nn {

template <class T>
using RowMajor = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <class T>
using ConstMap = Eigen::Map<const RowMajor<T>, 0, Eigen::OuterStride<>>;
template <class T>
using MutMap = Eigen::Map<RowMajor<T>, 0, Eigen::OuterStride<>>;

template <class T>
ConstMap<T> eigen_map(MatrixView<const T> m) {
  return ConstMap<T>(m.data, m.rows(), m.cols(), Eigen::OuterStride<>(m.row_stride()));
}
template <class T>
MutMap<T> eigen_map(MatrixView<T> m) {
  return MutMap<T>(m.data, m.rows(), m.cols(), Eigen::OuterStride<>(m.row_stride()));
}
template <class T>
ConstMap<T> eigen_map(const T* p, index_t rows, index_t cols, index_t stride = -1) {
  return ConstMap<T>(p, rows, cols, Eigen::OuterStride<>(stride < 0 ? cols : stride));
}
template <class T>
MutMap<T> eigen_map(T* p, index_t rows, index_t cols, index_t stride = -1) {
  return MutMap<T>(p, rows, cols, Eigen::OuterStride<>(stride < 0 ? cols : stride));
}

// Smallest amount of work (multiply-adds or element operations) worth handing to one thread: forking
// threads for less costs more than it saves, badly so when the machine is oversubscribed.
inline constexpr index_t kMinParallelWork = 32768;

// min_chunk for parallel_for over units that each cost `work_per_unit`.
inline index_t chunk_for(index_t work_per_unit) {
  return std::max<index_t>(1, kMinParallelWork / std::max<index_t>(1, work_per_unit));
}

// Rows at or below this count take the feature-parallel matrix-vector path.
inline constexpr index_t kSmallBatchRows = 4;

// Y[n, out] = X[n, in] · W[out, in]ᵀ   (overwrites Y; `accumulate` adds instead).
template <class T>
void matmul_xwt(MatrixView<const T> X, MatrixView<const T> W, MatrixView<T> Y, bool accumulate = false) {
  const index_t n = X.rows(), out = W.rows(), in = W.cols();
  if (n <= kSmallBatchRows) {
    parallel_for(
        0, out,
        [&](index_t lo, index_t hi) {
          auto Wb = eigen_map<T>(W.row(lo), hi - lo, in, W.row_stride());
          auto Xm = eigen_map(X);
          auto Yb = eigen_map<T>(Y.data + lo, n, hi - lo, Y.row_stride());
          if (accumulate)
            Yb.noalias() += Xm * Wb.transpose();
          else
            Yb.noalias() = Xm * Wb.transpose();
        },
        std::max<index_t>(16, chunk_for(in * n)));
    return;
  }
  auto Ym = eigen_map(Y);
  if (accumulate)
    Ym.noalias() += eigen_map(X) * eigen_map(W).transpose();
  else
    Ym.noalias() = eigen_map(X) * eigen_map(W).transpose();
}

// dX[n, in] += dY[n, out] · W[out, in]
template <class T>
void matmul_add_dyw(MatrixView<const T> dY, MatrixView<const T> W, MatrixView<T> dX) {
  eigen_map(dX).noalias() += eigen_map(dY) * eigen_map(W);
}

// dW[out, in] += dY[n, out]ᵀ · X[n, in]
template <class T>
void matmul_add_dytx(MatrixView<const T> dY, MatrixView<const T> X, MatrixView<T> dW) {
  eigen_map(dW).noalias() += eigen_map(dY).transpose() * eigen_map(X);
}

}  // namespace lowbit::nn
