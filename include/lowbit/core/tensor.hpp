// Non-owning, strided tensor views usable on host and device. A view is a pointer plus shape and
// strides (in elements); it never allocates and never frees, so the same struct can be passed by value
// to a CUDA kernel. Ownership lives elsewhere (std::vector on the host, cudaMalloc on the device).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../config.hpp"

namespace lowbit {

using index_t = std::int64_t;

template <class T, int Rank>
struct TensorView {
  static_assert(Rank >= 1 && Rank <= 4, "TensorView supports ranks 1..4");
  T* data = nullptr;
  index_t shape[Rank] = {};
  index_t stride[Rank] = {};  // in elements; the last stride is 1 for contiguous views

  TensorView() = default;

  // A contiguous (row-major) view.
  LOWBIT_HD TensorView(T* ptr, const index_t (&dims)[Rank]) : data(ptr) {
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      shape[d] = dims[d];
      stride[d] = s;
      s *= dims[d];
    }
  }

  LOWBIT_HD index_t size(int d) const { return shape[d]; }
  LOWBIT_HD index_t numel() const {
    index_t n = 1;
    for (int d = 0; d < Rank; ++d) n *= shape[d];
    return n;
  }
  LOWBIT_HD bool empty() const { return numel() == 0; }
  LOWBIT_HD bool contiguous() const {
    index_t s = 1;
    for (int d = Rank - 1; d >= 0; --d) {
      if (shape[d] != 1 && stride[d] != s) return false;
      s *= shape[d];
    }
    return true;
  }

  template <class... I>
  LOWBIT_HD T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "wrong number of indices");
    const index_t ix[Rank] = {static_cast<index_t>(idx)...};
    index_t off = 0;
    for (int d = 0; d < Rank; ++d) off += ix[d] * stride[d];
    return data[off];
  }

  // Implicit conversion to a view of const elements. A constrained member template (U is always T),
  // so a view that is already const has no such operator at all: a plain operator with a requires-clause
  // is still declared there as a conversion to its own type, which nvcc flags (warning #554).
  template <class U = T>
    requires(std::is_same_v<U, T> && !std::is_const_v<U>)
  LOWBIT_HD operator TensorView<const U, Rank>() const {
    TensorView<const U, Rank> v;
    v.data = data;
    for (int d = 0; d < Rank; ++d) {
      v.shape[d] = shape[d];
      v.stride[d] = stride[d];
    }
    return v;
  }
};

template <class T>
using VectorView = TensorView<T, 1>;

// A row-major matrix [rows, cols] with a row stride (leading dimension).
template <class T>
struct MatrixView : TensorView<T, 2> {
  using Base = TensorView<T, 2>;
  MatrixView() = default;
  LOWBIT_HD MatrixView(T* ptr, index_t rows, index_t cols) : Base(ptr, {rows, cols}) {}
  LOWBIT_HD MatrixView(T* ptr, index_t rows, index_t cols, index_t row_stride)
      : Base(ptr, {rows, cols}) {
    this->stride[0] = row_stride;
  }
  LOWBIT_HD index_t rows() const { return this->shape[0]; }
  LOWBIT_HD index_t cols() const { return this->shape[1]; }
  LOWBIT_HD index_t row_stride() const { return this->stride[0]; }
  LOWBIT_HD T* row(index_t r) const { return this->data + r * this->stride[0]; }
  // To a view of const elements; a member template for the same reason as TensorView's.
  template <class U = T>
    requires(std::is_same_v<U, T> && !std::is_const_v<U>)
  LOWBIT_HD operator MatrixView<const U>() const {
    return MatrixView<const U>(this->data, rows(), cols(), row_stride());
  }
};

template <class T>
MatrixView<T> as_matrix(std::vector<T>& v, index_t rows, index_t cols) {
  return MatrixView<T>(v.data(), rows, cols);
}
template <class T>
MatrixView<const T> as_matrix(const std::vector<T>& v, index_t rows, index_t cols) {
  return MatrixView<const T>(v.data(), rows, cols);
}

}  // namespace lowbit
