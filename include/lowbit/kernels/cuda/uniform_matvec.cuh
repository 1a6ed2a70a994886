// y = Ŵx for Uniform-quantized weights on the GPU. The kernel is thin on purpose: one warp per row,
// each lane runs the same LOWBIT_HD row routine the host tests exercise (uniform_row_partial_dot in
// format/uniform.hpp: unpack, affine dequant, dot), and cub::WarpReduce sums the lanes. Templated on
// Bits and GroupSize so unpacking and group indexing compile to shifts and constants.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/warp/warp_reduce.cuh>
#include <vector>

#include "../../core/error.hpp"
#include "../../format/uniform.hpp"

namespace lowbit::kernels::cuda {

// Rows (warps) per block. 4 warps = 128 threads keeps enough blocks in flight for 1536-row matrices
// on a 132-SM H100; it is not tuned on hardware yet (no GPU was available when this was written).
inline constexpr int kUniformWarpsPerBlock = 4;

template <int Bits, int GroupSize, int WarpsPerBlock>
__global__ void __launch_bounds__(WarpsPerBlock * 32)
    uniform_matvec_kernel(UniformMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  using WarpReduce = cub::WarpReduce<float>;
  __shared__ typename WarpReduce::TempStorage temp[WarpsPerBlock];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * WarpsPerBlock + warp;
  if (row >= m.rows) return;  // the whole warp leaves together, so the reduction below stays warp-complete
  const float partial = uniform_row_partial_dot<Bits, GroupSize>(m, row, x, lane, 32);
  const float sum = WarpReduce(temp[warp]).Sum(partial);
  if (lane == 0) y[row] = sum;
}

inline void check_cuda(cudaError_t status, const char* what) {
  LOWBIT_CHECK(status == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(status));
}

// Launches y[rows] = Ŵ x[cols] on `stream`; m, x and y must point to device memory.
template <class Format>
void launch_uniform_matvec(const UniformMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  static_assert(is_uniform_format<Format>, "launch_uniform_matvec: Format must be a lowbit::Uniform<...>");
  LOWBIT_CHECK(m.rows > 0 && m.cols > 0 && m.codes && m.scales, "launch_uniform_matvec: empty matrix view");
  constexpr int warps = kUniformWarpsPerBlock;
  const auto blocks = static_cast<unsigned>((m.rows + warps - 1) / warps);
  uniform_matvec_kernel<Format::bits, Format::group_size, warps><<<blocks, warps * 32, 0, stream>>>(m, x, y);
  check_cuda(cudaGetLastError(), "uniform_matvec_kernel launch");
}

// Device copy of a UniformPacked matrix (owning; freed in the destructor).
template <class Format>
class DeviceUniformMatrix {
 public:
  explicit DeviceUniformMatrix(const UniformPacked<Format>& packed) : view_(packed.view()) {
    codes_ = upload(packed.codes().data(), packed.codes().size() * sizeof(std::uint32_t));
    scales_ = upload(packed.scales().data(), packed.scales().size() * sizeof(half_t));
    if (!packed.zero_words().empty())
      zeros_ = upload(packed.zero_words().data(), packed.zero_words().size() * sizeof(std::uint32_t));
    view_.codes = static_cast<const std::uint32_t*>(codes_);
    view_.scales = static_cast<const std::uint16_t*>(scales_);
    view_.zeros = static_cast<const std::uint32_t*>(zeros_);
  }
  ~DeviceUniformMatrix() {
    cudaFree(codes_);
    cudaFree(scales_);
    cudaFree(zeros_);
  }
  DeviceUniformMatrix(const DeviceUniformMatrix&) = delete;
  DeviceUniformMatrix& operator=(const DeviceUniformMatrix&) = delete;

  const UniformMatrixView& view() const { return view_; }
  void matvec(const float* x_device, float* y_device, cudaStream_t stream = nullptr) const {
    launch_uniform_matvec<Format>(view_, x_device, y_device, stream);
  }

 private:
  static void* upload(const void* host, std::size_t bytes) {
    void* device = nullptr;
    check_cuda(cudaMalloc(&device, bytes), "cudaMalloc");
    check_cuda(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    return device;
  }
  UniformMatrixView view_;
  void* codes_ = nullptr;
  void* scales_ = nullptr;
  void* zeros_ = nullptr;
};

}  // namespace lowbit::kernels::cuda
