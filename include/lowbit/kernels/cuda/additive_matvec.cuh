// y = Ŵx and Ŵ for additively quantized (AQLM) weights on the GPU.
//   - tiled matvec (codes of ≤ 8 bits, rows of whole groups: 2x8, 4x6, 3x7 g8 on LLaMA shapes):
//     persistent blocks decode the codebooks once into shared memory as fp32, each thread reuses one
//     group of activations for a tile of rows (additive_group_dot_f32);
//   - general matvec (any shape; 1x16 and 2x15, whose codebooks cannot fit on chip): one warp per row,
//     Kx8 codebooks staged as fp16 in shared memory, wider ones read through the read-only cache
//     (additive_group_dot);
//   - dequantize: one thread per (row, group).
// The per-group arithmetic is the LOWBIT_HD code of format/additive_shared.hpp that the host tests
// check. Speed on an H200: docs/benchmarks.md.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/warp/warp_reduce.cuh>
#include <vector>

#include "../../core/error.hpp"
#include "../cpu/additive_reference.hpp"
#include "../../format/additive_shared.hpp"

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

// ---- the tiled kernel: B ≤ 8, rows of whole groups -------------------------------------------------
// Persistent blocks decode the M codebooks once into shared memory as fp32 ([M, 2^B, G], 16 KiB for
// 2x8 g8), then walk tiles of Rows rows: every thread takes groups j, j + threads, ..., gathers the
// group's G activations once (16-byte loads) and reuses them for all Rows rows
// (additive_group_dot_f32 of format/additive_shared.hpp). The fp16 row scale is applied after the
// block-wide reduction.
template <int G, int Rows, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    additive_matvec_tiled_kernel(AdditiveDeviceView v, const float* __restrict__ x, float* __restrict__ y) {
  constexpr int threads = Warps * 32;
  extern __shared__ float books[];  // [M, K, G] fp32
  __shared__ float partial[Warps][Rows];
  const AdditiveShape& s = v.shape;
  const index_t K = s.codebook_size();
  const index_t total = s.num_codebooks * K * G;
  for (index_t i = threadIdx.x; i < total; i += threads) books[i] = half_bits_to_float(v.codebooks[i]);
  __syncthreads();
  const index_t groups = s.cols / G;
  const index_t tiles = (s.rows + Rows - 1) / Rows;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (index_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const index_t row0 = tile * Rows;
    const std::uint32_t* row_words[Rows];
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r) row_words[r] = v.codes + (row0 + r < s.rows ? row0 + r : s.rows - 1) * v.words_per_row;
    float acc[Rows] = {};
    for (index_t j = threadIdx.x; j < groups; j += threads) {
      float xg[G];
      if constexpr (G % 4 == 0) {
        LOWBIT_UNROLL
        for (int d = 0; d < G; d += 4) {
          const float4 t = __ldg(reinterpret_cast<const float4*>(x + j * G + d));
          xg[d] = t.x, xg[d + 1] = t.y, xg[d + 2] = t.z, xg[d + 3] = t.w;
        }
      } else {
        LOWBIT_UNROLL
        for (int d = 0; d < G; ++d) xg[d] = __ldg(x + j * G + d);
      }
      LOWBIT_UNROLL
      for (int r = 0; r < Rows; ++r)
        acc[r] += additive_group_dot_f32<G>(books, K, s.num_codebooks, row_words[r], s.code_bits, j, xg);
    }
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r) {
      float t = acc[r];
      LOWBIT_UNROLL
      for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
      if (lane == 0) partial[warp][r] = t;
    }
    __syncthreads();
    if (threadIdx.x < Rows && row0 + threadIdx.x < s.rows) {
      float sum = 0.0f;
      LOWBIT_UNROLL
      for (int w = 0; w < Warps; ++w) sum += partial[w][threadIdx.x];
      y[row0 + threadIdx.x] = sum * half_bits_to_float(v.scales[row0 + threadIdx.x]);
    }
    __syncthreads();  // partial[] is reused by the next tile
  }
}

inline constexpr int kAdditiveTileRows = 8;
inline constexpr int kAdditiveTileWarps = 4;

inline std::size_t additive_tiled_shared_bytes(const AdditiveShape& s) {
  return static_cast<std::size_t>(s.num_codebooks * s.codebook_size() * s.group_size) * sizeof(float);
}

// Whether the tiled kernel applies: codes of at most 8 bits, whole groups per row, fp32 codebooks within
// 96 KiB of shared memory, 16-byte aligned x when G is a multiple of 4.
inline bool additive_tiled_applies(const AdditiveShape& s, const float* x) {
  return s.code_bits <= 8 && s.cols % s.group_size == 0 && additive_tiled_shared_bytes(s) <= 96 * 1024 &&
         (s.group_size % 4 != 0 || reinterpret_cast<std::uintptr_t>(x) % 16 == 0);
}

template <int G, int Rows = kAdditiveTileRows, int Warps = kAdditiveTileWarps>
void launch_additive_matvec_tiled_g(const AdditiveDeviceView& v, const float* x, float* y, cudaStream_t stream) {
  auto* kernel = &additive_matvec_tiled_kernel<G, Rows, Warps>;
  const std::size_t shared = additive_tiled_shared_bytes(v.shape);
  // Resident blocks per SM for this kernel and shared-memory size, asked once per thread, device and size
  // (the occupancy query costs more than a small launch).
  struct Occupancy {
    int device = -1, sms = 0, per_sm = 0;
    std::size_t shared = 0;
  };
  thread_local Occupancy cached;
  int device = 0;
  check_cuda_status(cudaGetDevice(&device), "cudaGetDevice");
  if (cached.device != device || cached.shared != shared) {
    if (shared > 48 * 1024)
      check_cuda_status(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
                        "cudaFuncSetAttribute (additive tiled shared memory)");
    check_cuda_status(cudaDeviceGetAttribute(&cached.sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    check_cuda_status(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cached.per_sm, kernel, Warps * 32, shared),
                      "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    cached.device = device;
    cached.shared = shared;
  }
  const index_t tiles = (v.shape.rows + Rows - 1) / Rows;
  const auto blocks =
      static_cast<unsigned>(std::min<index_t>(tiles, static_cast<index_t>(std::max(cached.per_sm, 1)) * cached.sms));
  kernel<<<blocks, Warps * 32, shared, stream>>>(v, x, y);
  check_cuda_status(cudaGetLastError(), "additive_matvec_tiled_kernel launch");
}

template <int Rows = kAdditiveTileRows, int Warps = kAdditiveTileWarps>
void launch_additive_matvec_tiled(const AdditiveDeviceView& v, const float* x, float* y, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(additive_tiled_applies(v.shape, x), "launch_additive_matvec_tiled: needs codes of at most 8 bits, "
               "rows of whole groups and codebooks within 96 KiB as fp32, got ", v.shape.num_codebooks, "x",
               v.shape.code_bits, " g", v.shape.group_size, " ", v.shape.rows, "x", v.shape.cols);
  switch (v.shape.group_size) {
    case 2: return launch_additive_matvec_tiled_g<2, Rows, Warps>(v, x, y, stream);
    case 4: return launch_additive_matvec_tiled_g<4, Rows, Warps>(v, x, y, stream);
    case 8: return launch_additive_matvec_tiled_g<8, Rows, Warps>(v, x, y, stream);
    case 16: return launch_additive_matvec_tiled_g<16, Rows, Warps>(v, x, y, stream);
    default: return launch_additive_matvec_tiled_g<32, Rows, Warps>(v, x, y, stream);
  }
}

// The general kernel (any shape, one warp per row) on `stream`; all pointers are device memory.
inline void launch_additive_matvec_general(const AdditiveDeviceView& v, const float* x, float* y,
                                           cudaStream_t stream = nullptr) {
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

// Launches y[rows] = Ŵ x[cols] on `stream`; all pointers are device memory. The tiled kernel when it
// applies (every Kx8-or-narrower AQLM format on LLaMA shapes), the general one otherwise (1x16, 2x15).
inline void launch_additive_matvec(const AdditiveDeviceView& v, const float* x, float* y, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(v.shape.rows > 0 && v.codes && v.codebooks && v.scales, "launch_additive_matvec: empty matrix view");
  if (additive_tiled_applies(v.shape, x)) {
    launch_additive_matvec_tiled(v, x, y, stream);
  } else {
    launch_additive_matvec_general(v, x, y, stream);
  }
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
