// y = Ŵx for Uniform-quantized weights on the GPU, two kernels sharing the LOWBIT_HD arithmetic of
// format/uniform.hpp (tested on the host):
//   - tiled (rows of whole 32-code units, groups of 32, 64, 128... or whole rows, as every LLaMA matrix):
//     a block owns a few rows, its threads split the row into 32-code units, each thread reuses one
//     unit of activations for all of the block's rows and keeps several vector loads in flight;
//   - staged: the tiled kernel with x copied once per persistent block into swizzled shared memory;
//   - general (any shape): one warp per row over uniform_row_partial_dot.
// launch_uniform_matvec picks staged, then tiled, then general, whichever applies first. Both are templated on Bits and
// GroupSize so unpacking and group indexing compile to shifts and constants. Speed on an H200 against
// cuBLAS and the copy bandwidth: docs/benchmarks.md (bench/cuda/bench_cuda_matvec.cu).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/warp/warp_reduce.cuh>
#include <type_traits>
#include <vector>

#include "../../core/error.hpp"
#include "../../format/uniform.hpp"

namespace lowbit::kernels::cuda {

inline void check_cuda(cudaError_t status, const char* what) {
  LOWBIT_CHECK(status == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(status));
}

// ---- the general kernel: any shape ------------------------------------------------------------------
// One warp per row, lanes over words (uniform_row_partial_dot). Used when the row length or the group
// size is not a multiple of 32; measured on an H200 at 2-12% of the copy bandwidth (docs/benchmarks.md),
// because each lane has one 4-byte load in flight and reads x with a stride.
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

// ---- the tiled kernel: rows and groups that are multiples of 32 ------------------------------------
// A block owns Rows rows and all its threads split the row into 32-code units (format/uniform.hpp):
// a thread loads one unit's 32 activations once (eight 16-byte loads) and reuses them for all Rows
// rows, issuing Rows independent loads of Bits words (vectorized for 2, 4 and 8 bits) before any
// arithmetic, so many bytes are in flight per thread. Partial sums meet in a warp reduction and then
// in shared memory across the block's warps.
template <int Words>
__device__ __forceinline__ void load_unit_words(const std::uint32_t* __restrict__ p, std::uint32_t* w) {
  if constexpr (Words == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(p));
    w[0] = v.x, w[1] = v.y;
  } else if constexpr (Words % 4 == 0) {
    LOWBIT_UNROLL
    for (int i = 0; i < Words; i += 4) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(p + i));
      w[i] = v.x, w[i + 1] = v.y, w[i + 2] = v.z, w[i + 3] = v.w;
    }
  } else {
    LOWBIT_UNROLL
    for (int i = 0; i < Words; ++i) w[i] = __ldg(p + i);
  }
}

template <int Bits, int GroupSize, int Rows, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    uniform_matvec_tiled_kernel(UniformMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  constexpr int threads = Warps * 32;
  __shared__ float partial[Warps][Rows];
  const index_t row0 = static_cast<index_t>(blockIdx.x) * Rows;
  const index_t units = m.cols / uniform_unit_codes;
  const index_t group_size = GroupSize > 0 ? GroupSize : m.cols;
  index_t rows[Rows];
  LOWBIT_UNROLL
  for (int r = 0; r < Rows; ++r) rows[r] = row0 + r < m.rows ? row0 + r : m.rows - 1;  // tail rows recompute the last
  float acc[Rows] = {};
  for (index_t u = threadIdx.x; u < units; u += threads) {
    float xv[uniform_unit_codes];
    LOWBIT_UNROLL
    for (int i = 0; i < uniform_unit_codes; i += 4) {
      const float4 v = __ldg(reinterpret_cast<const float4*>(x + u * uniform_unit_codes + i));
      xv[i] = v.x, xv[i + 1] = v.y, xv[i + 2] = v.z, xv[i + 3] = v.w;
    }
    const index_t g = u * uniform_unit_codes / group_size;
    std::uint32_t words[Rows][Bits];
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r) load_unit_words<Bits>(m.codes + rows[r] * m.code_words_per_row + u * Bits, words[r]);
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r)
      acc[r] += m.scale(rows[r], g) * uniform_unit_dot<Bits>(words[r], xv, m.zero<Bits>(rows[r], g));
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
}

// ---- the staged kernel: the tiled kernel with x in shared memory -----------------------------------
// Measured with x read from global memory (the tiled kernel above), each 16-byte activation load of a
// warp touches 32 cache lines (the lanes' units are 128 bytes apart) and the L1 spends more time on x
// than on the codes. Here persistent blocks copy x once into shared memory, float4 slots XOR-swizzled
// within each unit's 128 bytes so that the 8 lanes of a 16-byte-load phase hit 8 different bank
// groups (conflict-free), then walk row tiles; a thread takes its unit's activations 8 at a time
// (uniform_codes_dot), keeping its Rows·Bits code words as the only large live state.
LOWBIT_HD index_t uniform_x_swizzle(index_t slot) { return (slot & ~index_t{7}) | ((slot ^ (slot >> 3)) & 7); }

template <int Bits, int GroupSize, int Rows, int Warps>
__global__ void __launch_bounds__(Warps * 32)
    uniform_matvec_staged_kernel(UniformMatrixView m, const float* __restrict__ x, float* __restrict__ y) {
  constexpr int threads = Warps * 32;
  extern __shared__ float4 xs[];  // [cols / 4], swizzled
  __shared__ float partial[Warps][Rows];
  const index_t units = m.cols / uniform_unit_codes;
  const index_t slots = units * (uniform_unit_codes / 4);
  const float4* x4 = reinterpret_cast<const float4*>(x);
  for (index_t i = threadIdx.x; i < slots; i += threads) xs[uniform_x_swizzle(i)] = __ldg(x4 + i);
  __syncthreads();
  const index_t group_size = GroupSize > 0 ? GroupSize : m.cols;
  const index_t tiles = (m.rows + Rows - 1) / Rows;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  for (index_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const index_t row0 = tile * Rows;
    index_t rows[Rows];
    LOWBIT_UNROLL
    for (int r = 0; r < Rows; ++r) rows[r] = row0 + r < m.rows ? row0 + r : m.rows - 1;
    float acc[Rows] = {};
    for (index_t u = threadIdx.x; u < units; u += threads) {
      std::uint32_t words[Rows][Bits];
      LOWBIT_UNROLL
      for (int r = 0; r < Rows; ++r) load_unit_words<Bits>(m.codes + rows[r] * m.code_words_per_row + u * Bits, words[r]);
      const index_t g = u * uniform_unit_codes / group_size;
      float bz[Rows], part[Rows];
      LOWBIT_UNROLL
      for (int r = 0; r < Rows; ++r) bz[r] = uniform_biased_zero(m.zero<Bits>(rows[r], g)), part[r] = 0.0f;
      const index_t base = u * (uniform_unit_codes / 4);
      // 8 activations at a time; the slices are spelled out so that every code offset is a constant
      auto slice = [&](auto first_tag) {
        constexpr int first = decltype(first_tag)::value;
        const float4 a = xs[uniform_x_swizzle(base + first / 4)], b = xs[uniform_x_swizzle(base + first / 4 + 1)];
        const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
        LOWBIT_UNROLL
        for (int r = 0; r < Rows; ++r) part[r] += uniform_codes_dot<Bits, first, 8>(words[r], xv, bz[r]);
      };
      slice(std::integral_constant<int, 0>{});
      slice(std::integral_constant<int, 8>{});
      slice(std::integral_constant<int, 16>{});
      slice(std::integral_constant<int, 24>{});
      LOWBIT_UNROLL
      for (int r = 0; r < Rows; ++r) acc[r] += m.scale(rows[r], g) * part[r];
    }
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
}

// x in shared memory up to this many bytes (40960 columns); wider rows use the tiled kernel.
inline constexpr std::size_t kUniformStagedMaxBytes = 160 * 1024;

// Whether the tiled kernel applies: 32-code units (format/uniform.hpp) and 16-byte aligned x and codes.
inline bool uniform_tiled_applies(const UniformMatrixView& m, const float* x) {
  return uniform_unit_aligned(m.cols, m.group_size) && reinterpret_cast<std::uintptr_t>(x) % 16 == 0 &&
         reinterpret_cast<std::uintptr_t>(m.codes) % 16 == 0;
}

// Default tile of the tiled kernel, the fastest of those timed on an H200 (docs/benchmarks.md).
inline constexpr int kUniformTileRows = 8;
inline constexpr int kUniformTileWarps = 4;
inline constexpr int kUniformStagedRows = 8;
inline constexpr int kUniformStagedWarps = 4;

inline bool uniform_staged_applies(const UniformMatrixView& m, const float* x) {
  return uniform_tiled_applies(m, x) && static_cast<std::size_t>(m.cols) * sizeof(float) <= kUniformStagedMaxBytes;
}

template <class Format, int Rows = kUniformStagedRows, int Warps = kUniformStagedWarps>
void launch_uniform_matvec_staged(const UniformMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(uniform_staged_applies(m, x), "launch_uniform_matvec_staged: needs rows and groups of multiples of 32 "
               "columns, at most ", kUniformStagedMaxBytes / 4, " columns and 16-byte aligned x and codes, got ", m.rows,
               "x", m.cols, " groups of ", m.group_size);
  auto* kernel = &uniform_matvec_staged_kernel<Format::bits, Format::group_size, Rows, Warps>;
  const std::size_t shared = static_cast<std::size_t>(m.cols) * sizeof(float);
  // Opt-in shared memory and resident blocks per SM, asked once per thread, device and size.
  struct Occupancy {
    int device = -1, sms = 0, per_sm = 0;
    std::size_t shared = 0;
  };
  thread_local Occupancy cached;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (cached.device != device || cached.shared != shared) {
    if (shared > 48 * 1024)
      check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared)),
                 "cudaFuncSetAttribute (uniform staged shared memory)");
    check_cuda(cudaDeviceGetAttribute(&cached.sms, cudaDevAttrMultiProcessorCount, device), "cudaDeviceGetAttribute");
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&cached.per_sm, kernel, Warps * 32, shared),
               "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
    cached.device = device;
    cached.shared = shared;
  }
  const index_t tiles = (m.rows + Rows - 1) / Rows;
  const auto blocks =
      static_cast<unsigned>(std::min<index_t>(tiles, static_cast<index_t>(std::max(cached.per_sm, 1)) * cached.sms));
  kernel<<<blocks, Warps * 32, shared, stream>>>(m, x, y);
  check_cuda(cudaGetLastError(), "uniform_matvec_staged_kernel launch");
}

template <class Format, int Rows = kUniformTileRows, int Warps = kUniformTileWarps>
void launch_uniform_matvec_tiled(const UniformMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(uniform_tiled_applies(m, x), "launch_uniform_matvec_tiled: needs rows and groups of multiples of 32 "
               "columns and 16-byte aligned x and codes, got ", m.rows, "x", m.cols, " groups of ", m.group_size);
  const auto blocks = static_cast<unsigned>((m.rows + Rows - 1) / Rows);
  uniform_matvec_tiled_kernel<Format::bits, Format::group_size, Rows, Warps><<<blocks, Warps * 32, 0, stream>>>(m, x, y);
  check_cuda(cudaGetLastError(), "uniform_matvec_tiled_kernel launch");
}

template <class Format>
void launch_uniform_matvec_general(const UniformMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  constexpr int warps = kUniformWarpsPerBlock;
  const auto blocks = static_cast<unsigned>((m.rows + warps - 1) / warps);
  uniform_matvec_kernel<Format::bits, Format::group_size, warps><<<blocks, warps * 32, 0, stream>>>(m, x, y);
  check_cuda(cudaGetLastError(), "uniform_matvec_kernel launch");
}

// Launches y[rows] = Ŵ x[cols] on `stream`; m, x and y must point to device memory. Picks the tiled
// kernel when the shape allows it, the general one otherwise.
template <class Format>
void launch_uniform_matvec(const UniformMatrixView& m, const float* x, float* y, cudaStream_t stream = nullptr) {
  static_assert(is_uniform_format<Format>, "launch_uniform_matvec: Format must be a lowbit::Uniform<...>");
  LOWBIT_CHECK(m.rows > 0 && m.cols > 0 && m.codes && m.scales, "launch_uniform_matvec: empty matrix view");
  if (uniform_staged_applies(m, x)) {
    launch_uniform_matvec_staged<Format>(m, x, y, stream);
  } else if (uniform_tiled_applies(m, x)) {
    launch_uniform_matvec_tiled<Format>(m, x, y, stream);
  } else {
    launch_uniform_matvec_general<Format>(m, x, y, stream);
  }
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
