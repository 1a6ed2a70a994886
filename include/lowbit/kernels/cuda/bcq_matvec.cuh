// y = Ŵx and Ŵ itself for BCQ-quantized weights (format/bcq.hpp) on the GPU. The arithmetic is the
// LOWBIT_HD code at the end of format/bcq.hpp (BCQMatrixView, bcq_unit_dot, bcq_row_partial_dot,
// bcq_view_weight), run on the host by test_kernels_bcq. Kernels:
//   - staged (rows up to kBCQStagedMaxBytes / 4 columns): persistent blocks copy x once into shared
//     memory, zero-padded to whole plane words and float4 slots XOR-swizzled per 32-column unit (so the 8
//     lanes of a 16-byte load phase hit 8 bank groups), then walk tiles of Rows rows: a thread takes
//     32-column units, reads its unit's activations and Σx once and reuses them for all Rows rows, each
//     row costing Bits coalesced plane-word loads (consecutive threads, consecutive words) and its
//     group's fp16 scales;
//   - tiled: the same with x read from global memory (rows too wide to stage);
//   - general: one warp per row over bcq_row_partial_dot (no alignment needs; the reference of the two).
// Every kernel takes any shape: a last unit past the row end sees zero activations and zero padding bits.
// launch_bcq_matvec picks staged, then tiled. bcq_dequantize writes Ŵ as fp32 [rows, cols].
// Not tuned on hardware: no GPU was available when this was written (tile sizes follow the Uniform
// kernels', which were).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "../../core/error.hpp"
#include "../../format/bcq.hpp"

namespace lowbit::kernels::cuda {

inline void bcq_check_cuda(cudaError_t status, const char* what) {
  LOWBIT_CHECK(status == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(status));
}

inline constexpr int kBCQTileRows = 8;
inline constexpr int kBCQTileWarps = 4;
inline constexpr int kBCQGeneralWarps = 4;
// x in shared memory up to this many bytes (40960 columns); wider rows use the tiled kernel.
inline constexpr std::size_t kBCQStagedMaxBytes = 160 * 1024;

// Float4 slot of a unit's activations in shared memory: slot k of unit u at 8u + (k XOR (u mod 8)).
LOWBIT_HD index_t bcq_x_slot(index_t unit, int k) { return unit * 8 + ((k ^ static_cast<int>(unit)) & 7); }

// ---- the general kernel: one warp per row ---------------------------------------------------------
template <int Bits, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    bcq_matvec_general_kernel(BCQMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * Warps + warp;
  if (row >= m.rows) return;  // the whole warp leaves together
  float v = bcq_row_partial_dot<Bits>(m, row, x, lane, 32);
  LOWBIT_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) y[row] = v;
}

// ---- the tiled and staged kernels ------------------------------------------------------------------

// One unit's 32 activations (zero past the row end) and their sum, from global memory.
__device__ __forceinline__ float bcq_load_unit_global(const float* __restrict__ x, index_t cols, index_t u, bool aligned,
                                                      float* xv) {
  const index_t c0 = u * 32;
  if (aligned && c0 + 32 <= cols) {
    const float4* x4 = reinterpret_cast<const float4*>(x + c0);
    LOWBIT_UNROLL
    for (int k = 0; k < 8; ++k) {
      const float4 v = __ldg(x4 + k);
      xv[4 * k] = v.x, xv[4 * k + 1] = v.y, xv[4 * k + 2] = v.z, xv[4 * k + 3] = v.w;
    }
  } else {
    LOWBIT_UNROLL
    for (int j = 0; j < 32; ++j) xv[j] = c0 + j < cols ? __ldg(x + c0 + j) : 0.0f;
  }
  float s = 0.0f;
  LOWBIT_UNROLL
  for (int j = 0; j < 32; ++j) s += xv[j];
  return s;
}

// One unit's 32 activations from the swizzled shared copy, and their sum.
__device__ __forceinline__ float bcq_load_unit_shared(const float4* xs, index_t u, float* xv) {
  LOWBIT_UNROLL
  for (int k = 0; k < 8; ++k) {
    const float4 v = xs[bcq_x_slot(u, k)];
    xv[4 * k] = v.x, xv[4 * k + 1] = v.y, xv[4 * k + 2] = v.z, xv[4 * k + 3] = v.w;
  }
  float s = 0.0f;
  LOWBIT_UNROLL
  for (int j = 0; j < 32; ++j) s += xv[j];
  return s;
}

// Σ over this thread's units of the tile's Rows rows, then the block's sum per row into y.
template <int Bits, int Rows, int Warps, class LoadUnit>
__device__ __forceinline__ void bcq_tile(const BCQMatrixView& m, index_t row0, LoadUnit&& load_unit, float* y,
                                         float (*partial)[Rows]) {
  constexpr int threads = Warps * 32;
  const index_t group_words = m.groups_per_row > 1 ? m.group_size / 32 : m.words;
  index_t rows[Rows];
  LOWBIT_UNROLL
  for (int r = 0; r < Rows; ++r) rows[r] = row0 + r < m.rows ? row0 + r : m.rows - 1;  // tail rows recompute the last
  float acc[Rows] = {};
  for (index_t u = threadIdx.x; u < m.words; u += threads) {
    std::uint32_t words[Rows][Bits];
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r)
      LOWBIT_UNROLL
      for (int i = 0; i < Bits; ++i) words[r][i] = __ldg(m.planes + (rows[r] * Bits + i) * m.words + u);
    float xv[32];
    const float xsum = load_unit(u, xv);
    const index_t g = u / group_words;
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r) {
      float alpha[Bits];
      LOWBIT_UNROLL
      for (int i = 0; i < Bits; ++i) alpha[i] = m.alpha<Bits>(rows[r], g, i);
      acc[r] += bcq_unit_dot<Bits>(words[r], xv, xsum, alpha, m.offset(rows[r], g));
    }
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  LOWBIT_UNROLL
  for (int r = 0; r < Rows; ++r) {
    float v = acc[r];
    LOWBIT_UNROLL
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    if (lane == 0) partial[warp][r] = v;
  }
  __syncthreads();
  if (threadIdx.x < Rows && row0 + threadIdx.x < m.rows) {
    float sum = 0.0f;
    LOWBIT_UNROLL
    for (int w = 0; w < Warps; ++w) sum += partial[w][threadIdx.x];
    y[row0 + threadIdx.x] = sum;
  }
  __syncthreads();  // partial[] is reused by the next tile
}

template <int Bits, int Rows, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    bcq_matvec_tiled_kernel(BCQMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  __shared__ float partial[Warps][Rows];
  const bool aligned = reinterpret_cast<std::uintptr_t>(x) % 16 == 0;
  bcq_tile<Bits, Rows, Warps>(
      m, static_cast<index_t>(blockIdx.x) * Rows,
      [&](index_t u, float* xv) { return bcq_load_unit_global(x, m.cols, u, aligned, xv); }, y, partial);
}

template <int Bits, int Rows, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    bcq_matvec_staged_kernel(BCQMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  constexpr int threads = Warps * 32;
  extern __shared__ float4 xs[];  // [words · 8], swizzled per unit, zero past the row end
  __shared__ float partial[Warps][Rows];
  for (index_t slot = threadIdx.x; slot < m.words * 8; slot += threads) {
    const index_t u = slot / 8, c = slot * 4;
    float4 v;
    v.x = c < m.cols ? x[c] : 0.0f;
    v.y = c + 1 < m.cols ? x[c + 1] : 0.0f;
    v.z = c + 2 < m.cols ? x[c + 2] : 0.0f;
    v.w = c + 3 < m.cols ? x[c + 3] : 0.0f;
    xs[bcq_x_slot(u, static_cast<int>(slot % 8))] = v;
  }
  __syncthreads();
  const index_t tiles = (m.rows + Rows - 1) / Rows;
  for (index_t tile = blockIdx.x; tile < tiles; tile += gridDim.x)
    bcq_tile<Bits, Rows, Warps>(
        m, tile * Rows, [&](index_t u, float* xv) { return bcq_load_unit_shared(xs, u, xv); }, y, partial);
}

// ---- dequantize ------------------------------------------------------------------------------------
template <int Bits>
__global__ void bcq_dequantize_kernel(BCQMatrixView m, float* __restrict__ w) {
  const index_t i = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= m.rows * m.cols) return;
  w[i] = bcq_view_weight<Bits>(m, i / m.cols, i % m.cols);
}

// ---- launchers (m, x, y, w in device memory) ------------------------------------------------------

inline void check_bcq_view(const BCQMatrixView& m, const char* who) {
  LOWBIT_CHECK(m.rows > 0 && m.cols > 0 && m.planes && m.alphas && m.offsets, who, ": empty matrix view");
}

inline bool bcq_staged_applies(const BCQMatrixView& m) {
  return static_cast<std::size_t>(m.words) * 32 * sizeof(float) <= kBCQStagedMaxBytes;
}

template <class Format, int Rows = kBCQTileRows, int Warps = kBCQTileWarps>
void launch_bcq_matvec_staged(const BCQMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  check_bcq_view(m, "launch_bcq_matvec_staged");
  LOWBIT_CHECK(bcq_staged_applies(m), "launch_bcq_matvec_staged: at most ", kBCQStagedMaxBytes / 4,
               " columns, got ", m.cols);
  auto* kernel = &bcq_matvec_staged_kernel<Format::bits, Rows, Warps>;
  const std::size_t shared = static_cast<std::size_t>(m.words) * 32 * sizeof(float);
  // Opt-in shared memory and resident blocks per SM, asked once per thread, device and size.
  struct Occupancy {
    int device = -1, sms = 0, per_sm = 0;
    std::size_t shared = 0;
  };
  thread_local Occupancy cached;
  int device = 0;
  bcq_check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (cached.device != device || cached.shared != shared) {
    if (shared > 48 * 1024)
      bcq_check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
                     "cudaFuncSetAttribute (bcq staged shared memory)");
    bcq_check_cuda(cudaDeviceGetAttribute(&cached.sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    bcq_check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cached.per_sm, kernel, Warps * 32, shared),
                   "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    cached.device = device;
    cached.shared = shared;
  }
  const index_t tiles = (m.rows + Rows - 1) / Rows;
  const auto blocks =
      static_cast<unsigned>(std::min<index_t>(tiles, static_cast<index_t>(std::max(cached.per_sm, 1)) * cached.sms));
  kernel<<<blocks, Warps * 32, shared, stream>>>(m, x, y);
  bcq_check_cuda(cudaGetLastError(), "bcq_matvec_staged_kernel launch");
}

template <class Format, int Rows = kBCQTileRows, int Warps = kBCQTileWarps>
void launch_bcq_matvec_tiled(const BCQMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  check_bcq_view(m, "launch_bcq_matvec_tiled");
  const auto blocks = static_cast<unsigned>((m.rows + Rows - 1) / Rows);
  bcq_matvec_tiled_kernel<Format::bits, Rows, Warps><<<blocks, Warps * 32, 0, stream>>>(m, x, y);
  bcq_check_cuda(cudaGetLastError(), "bcq_matvec_tiled_kernel launch");
}

template <class Format>
void launch_bcq_matvec_general(const BCQMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  check_bcq_view(m, "launch_bcq_matvec_general");
  constexpr int warps = kBCQGeneralWarps;
  const auto blocks = static_cast<unsigned>((m.rows + warps - 1) / warps);
  bcq_matvec_general_kernel<Format::bits, warps><<<blocks, warps * 32, 0, stream>>>(m, x, y);
  bcq_check_cuda(cudaGetLastError(), "bcq_matvec_general_kernel launch");
}

// y[rows] = Ŵ x[cols] on `stream`: the staged kernel when x fits in shared memory, the tiled one otherwise.
template <class Format>
void launch_bcq_matvec(const BCQMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  static_assert(is_bcq_format<Format>, "launch_bcq_matvec: Format must be a lowbit::BCQ<...>");
  if (bcq_staged_applies(m))
    launch_bcq_matvec_staged<Format>(m, x, y, stream);
  else
    launch_bcq_matvec_tiled<Format>(m, x, y, stream);
}

// w[rows, cols] = Ŵ (fp32, row-major) on `stream`.
template <class Format>
void launch_bcq_dequantize(const BCQMatrixView& m, float* w, cudaStream_t stream = nullptr) {
  static_assert(is_bcq_format<Format>, "launch_bcq_dequantize: Format must be a lowbit::BCQ<...>");
  check_bcq_view(m, "launch_bcq_dequantize");
  constexpr int threads = 256;
  const auto blocks = static_cast<unsigned>((m.rows * m.cols + threads - 1) / threads);
  bcq_dequantize_kernel<Format::bits><<<blocks, threads, 0, stream>>>(m, w);
  bcq_check_cuda(cudaGetLastError(), "bcq_dequantize_kernel launch");
}

// Device copy of a BCQPacked matrix (owning; freed in the destructor).
template <class Format>
class DeviceBCQMatrix {
 public:
  explicit DeviceBCQMatrix(const BCQPacked<Format>& packed) : view_(bcq_matrix_view(packed)) {
    planes_ = upload(packed.planes().data(), packed.planes().size() * sizeof(std::uint32_t));
    alphas_ = upload(packed.alphas().data(), packed.alphas().size() * sizeof(half_t));
    offsets_ = upload(packed.offsets().data(), packed.offsets().size() * sizeof(half_t));
    view_.planes = static_cast<const std::uint32_t*>(planes_);
    view_.alphas = static_cast<const std::uint16_t*>(alphas_);
    view_.offsets = static_cast<const std::uint16_t*>(offsets_);
  }
  ~DeviceBCQMatrix() {
    cudaFree(planes_);
    cudaFree(alphas_);
    cudaFree(offsets_);
  }
  DeviceBCQMatrix(const DeviceBCQMatrix&) = delete;
  DeviceBCQMatrix& operator=(const DeviceBCQMatrix&) = delete;

  const BCQMatrixView& view() const { return view_; }
  void matvec(const float* x_device, float* y_device, cudaStream_t stream = nullptr) const {
    launch_bcq_matvec<Format>(view_, x_device, y_device, stream);
  }
  void dequantize(float* w_device, cudaStream_t stream = nullptr) const {
    launch_bcq_dequantize<Format>(view_, w_device, stream);
  }

 private:
  static void* upload(const void* host, std::size_t bytes) {
    void* device = nullptr;
    bcq_check_cuda(cudaMalloc(&device, bytes), "cudaMalloc");
    bcq_check_cuda(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy to device");
    return device;
  }
  BCQMatrixView view_;
  void* planes_ = nullptr;
  void* alphas_ = nullptr;
  void* offsets_ = nullptr;
};

}  // namespace lowbit::kernels::cuda
