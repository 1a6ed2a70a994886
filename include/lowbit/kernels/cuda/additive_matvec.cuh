// y = Ŵx and Ŵ for additively quantized (AQLM) weights on the GPU. Kx8 (2^B ≤ 256): the M fp16
// codebooks (M·256·G·2 bytes, 8 KiB for 2x8 g8) are staged in shared memory once per block, so every
// lookup is an on-chip read; 1x16 / 2x15: the codebooks (1 MiB for 1x16 g8) cannot fit, so lookups read
// global memory through the read-only cache. One warp per row, lanes stride over groups, and each lane
// runs additive_group_dot (kernels/cpu/additive_shared.hpp), the same LOWBIT_HD code the host tests
// check; cub::WarpReduce sums the lanes and the fp16 row scale is applied once per row.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cub/warp/warp_reduce.cuh>
#include <vector>

#include "../../core/error.hpp"
#include "../cpu/additive_reference.hpp"
#include "../cpu/additive_shared.hpp"

namespace lowbit::kernels::cuda {

// Device pointers to packed additive storage (layout of format/additive.hpp).
struct AdditiveDeviceView {
  AdditiveShape shape;
  const std::uint32_t* codes = nullptr;  // [rows, words_per_row]
  index_t words_per_row = 0;
  const std::uint16_t* codebooks = nullptr;  // fp16 bits [M, 2^B, G]
  const std::uint16_t* scales = nullptr;     // fp16 bits [rows]
};

// 4 warps per block: enough blocks for 576..5632-row matrices on an H100; not tuned on hardware
// (no GPU was available when this was written).
inline constexpr int kAdditiveWarpsPerBlock = 4;

inline void check_cuda_status(cudaError_t status, const char* what) {
  LOWBIT_CHECK(status == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(status));
}

template <int Warps, bool SharedCodebooks>
__global__ void __launch_bounds__(Warps * 32)
    additive_matvec_kernel(AdditiveDeviceView v, const float* __restrict__ x, float* __restrict__ y) {
  using WarpReduce = cub::WarpReduce<float>;
  __shared__ typename WarpReduce::TempStorage temp[Warps];
  extern __shared__ std::uint16_t staged[];  // [M, 256, G] when SharedCodebooks
  const AdditiveShape& s = v.shape;
  const index_t K = s.codebook_size();
  const std::uint16_t* codebooks = v.codebooks;
  if constexpr (SharedCodebooks) {
    const index_t total = s.num_codebooks * K * s.group_size;
    for (index_t i = threadIdx.x; i < total; i += blockDim.x) staged[i] = v.codebooks[i];
    __syncthreads();
    codebooks = staged;
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * Warps + warp;
  if (row >= s.rows) return;  // after the only __syncthreads; the warp leaves as a whole
  const std::uint32_t* row_words = v.codes + row * v.words_per_row;
  float acc = 0.0f;
  for (index_t j = lane; j < s.groups(); j += 32)
    acc += additive_group_dot(codebooks, K, s.num_codebooks, s.group_size, row_words, s.code_bits, j, x, s.cols);
  const float sum = WarpReduce(temp[warp]).Sum(acc);
  if (lane == 0) y[row] = sum * half_bits_to_float(v.scales[row]);
}

// One thread per (row, group): out[row, G·j + d] = s_row · Σ_m C_m[code][d] (padding dropped).
__global__ void additive_dequantize_kernel(AdditiveDeviceView v, float* __restrict__ out) {
  const AdditiveShape& s = v.shape;
  const index_t groups = s.groups();
  const index_t id = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (id >= s.rows * groups) return;
  const index_t row = id / groups, j = id % groups;
  float values[32];
  additive_decode_group(v.codebooks, s.codebook_size(), s.num_codebooks, s.group_size, v.codes + row * v.words_per_row,
                        s.code_bits, j, values);
  const float scale = half_bits_to_float(v.scales[row]);
  for (int d = 0; d < s.group_size; ++d) {
    const index_t col = j * s.group_size + d;
    if (col < s.cols) out[row * s.cols + col] = values[d] * scale;
  }
}

// Bytes of shared memory the Kx8 path stages; above the default 48 KiB the gather path is used.
inline std::size_t additive_shared_codebook_bytes(const AdditiveShape& s) {
  return static_cast<std::size_t>(s.num_codebooks * s.codebook_size() * s.group_size) * sizeof(std::uint16_t);
}

// Launches y[rows] = Ŵ x[cols] on `stream`; all pointers are device memory.
inline void launch_additive_matvec(const AdditiveDeviceView& v, const float* x, float* y, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(v.shape.rows > 0 && v.codes && v.codebooks && v.scales, "launch_additive_matvec: empty matrix view");
  constexpr int warps = kAdditiveWarpsPerBlock;
  const auto blocks = static_cast<unsigned>((v.shape.rows + warps - 1) / warps);
  const std::size_t shared = additive_shared_codebook_bytes(v.shape);
  if (v.shape.code_bits <= 8 && shared <= 48 * 1024) {
    additive_matvec_kernel<warps, true><<<blocks, warps * 32, shared, stream>>>(v, x, y);
  } else {
    additive_matvec_kernel<warps, false><<<blocks, warps * 32, 0, stream>>>(v, x, y);
  }
  check_cuda_status(cudaGetLastError(), "additive_matvec_kernel launch");
}

inline void launch_additive_dequantize(const AdditiveDeviceView& v, float* out, cudaStream_t stream = nullptr) {
  const index_t work = v.shape.rows * v.shape.groups();
  const auto blocks = static_cast<unsigned>((work + 255) / 256);
  additive_dequantize_kernel<<<blocks, 256, 0, stream>>>(v, out);
  check_cuda_status(cudaGetLastError(), "additive_dequantize_kernel launch");
}

// Owns a device copy of packed additive storage (codes words, fp16 codebooks and scales as raw bits).
class DeviceAdditiveMatrix {
 public:
  DeviceAdditiveMatrix(const AdditiveShape& shape, const std::vector<std::uint32_t>& codes, index_t words_per_row,
                       const std::vector<std::uint16_t>& codebooks, const std::vector<std::uint16_t>& scales) {
    view_.shape = shape;
    view_.words_per_row = words_per_row;
    view_.codes = upload(codes, codes_);
    view_.codebooks = upload(codebooks, codebooks_);
    view_.scales = upload(scales, scales_);
  }
  ~DeviceAdditiveMatrix() {
    cudaFree(codes_);
    cudaFree(codebooks_);
    cudaFree(scales_);
  }
  DeviceAdditiveMatrix(const DeviceAdditiveMatrix&) = delete;
  DeviceAdditiveMatrix& operator=(const DeviceAdditiveMatrix&) = delete;

  const AdditiveDeviceView& view() const { return view_; }
  void matvec(const float* x, float* y, cudaStream_t stream = nullptr) const { launch_additive_matvec(view_, x, y, stream); }
  void dequantize(float* out, cudaStream_t stream = nullptr) const { launch_additive_dequantize(view_, out, stream); }

 private:
  template <class T>
  static const T* upload(const std::vector<T>& host, void*& device) {
    check_cuda_status(cudaMalloc(&device, host.size() * sizeof(T)), "cudaMalloc (additive matrix)");
    check_cuda_status(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
                      "cudaMemcpy (additive matrix)");
    return static_cast<const T*>(device);
  }
  AdditiveDeviceView view_{};
  void* codes_ = nullptr;
  void* codebooks_ = nullptr;
  void* scales_ = nullptr;
};

}  // namespace lowbit::kernels::cuda
