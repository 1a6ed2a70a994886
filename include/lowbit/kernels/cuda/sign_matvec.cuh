// y = W'·s on the GPU for a 1-bit activation (issue 17; the math, the sign convention and the CPU paths
// are in kernels/cpu/sign_matvec.hpp): y = 2·Σ_{s_c=+1} W'[:, c] − rowsum, fp32 weights with the channel
// scales folded in, rowsum = W'·1 precomputed. The per-element arithmetic is the LOWBIT_HD code of that
// header (sign_select_add, sign_quad_nibble, sign_quad_selected, sign_row_partial, sign_combine), which
// test_kernels_sign runs on the host. The packed signs are the CPU's 64-bit words read as 32-bit words
// (little-endian halves: bit c%32 of word c/32 is sign c), so one buffer serves both sides.
// Kernels (one warp per row, lanes on consecutive columns, a shuffle reduction, lane 0 writes):
//   - vec4: float4 loads (needs cols % 4 == 0 and W 16-byte aligned): lane l takes units l, l + 32, ...
//     of 4 columns, whose 4 sign bits are one nibble of a 32-bit sign word (8 lanes read the same word:
//     a broadcast); no multiplications, a select per element;
//   - general: any shape and alignment, one column per lane per step (sign_row_partial).
// launch_sign_matvec picks vec4 when it applies. Helpers: launch_pack_signs (one warp per 32 columns,
// __ballot_sync of v > 0; writes whole 64-bit words, padding bits zero) and launch_sign_rowsums.
// Not tuned on hardware: no GPU was available when this was written.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../../core/error.hpp"
#include "../cpu/sign_matvec.hpp"

namespace lowbit::kernels::cuda {

inline void sign_check_cuda(cudaError_t status, const char* what) {
  LOWBIT_CHECK(status == cudaSuccess, "CUDA ", what, " failed: ", cudaGetErrorString(status));
}

inline constexpr int kSignWarps = 4;  // rows (warps) per block

__device__ __forceinline__ float sign_warp_sum(float v) {
  LOWBIT_UNROLL
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- the matvec kernels ----------------------------------------------------------------------------
template <int Warps>
__global__ void __launch_bounds__(Warps * 32)
    sign_matvec_general_kernel(const float* __restrict__ W, const float* __restrict__ rowsum,
                               const std::uint32_t* __restrict__ s32, index_t rows, index_t cols, float* __restrict__ y) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * Warps + warp;
  if (row >= rows) return;  // the whole warp leaves together
  const float v = sign_warp_sum(sign_row_partial(W + row * cols, s32, cols, lane, 32));
  if (lane == 0) y[row] = sign_combine(v, rowsum[row]);
}

template <int Warps>
__global__ void __launch_bounds__(Warps * 32)
    sign_matvec_vec4_kernel(const float* __restrict__ W, const float* __restrict__ rowsum,
                            const std::uint32_t* __restrict__ s32, index_t rows, index_t cols, float* __restrict__ y) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * Warps + warp;
  if (row >= rows) return;
  const index_t quads = cols / 4;
  const float4* w4 = reinterpret_cast<const float4*>(W + row * cols);
  float acc = 0.0f;
#pragma unroll 4
  for (index_t q = lane; q < quads; q += 32) {
    const float4 v = __ldg(w4 + q);
    acc += sign_quad_selected(v.x, v.y, v.z, v.w, sign_quad_nibble(s32, q));
  }
  acc = sign_warp_sum(acc);
  if (lane == 0) y[row] = sign_combine(acc, rowsum[row]);
}

// ---- helpers: packing signs, row sums ---------------------------------------------------------------

// s32[w] = the 32 sign bits of v[32w, 32w + 32) (zero past n), for w < words32 (a whole number of 64-bit
// words). One thread per column; every lane of a warp reaches the ballot. (A template, like the other
// kernels, so that the header can be included by several translation units.)
template <int Threads>
__global__ void __launch_bounds__(Threads) sign_pack_kernel(const float* __restrict__ v, index_t n, std::uint32_t* __restrict__ s32,
                                 index_t words32) {
  const index_t c = static_cast<index_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool positive = c < n && sign_is_positive(v[c]);
  const unsigned word = __ballot_sync(0xffffffffu, positive);
  if ((threadIdx.x & 31) == 0 && c / 32 < words32) s32[c / 32] = word;
}

template <int Warps>
__global__ void __launch_bounds__(Warps * 32)
    sign_rowsum_kernel(const float* __restrict__ W, index_t rows, index_t cols, float* __restrict__ rowsum) {
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const index_t row = static_cast<index_t>(blockIdx.x) * Warps + warp;
  if (row >= rows) return;
  float acc = 0.0f;
  for (index_t c = lane; c < cols; c += 32) acc += W[row * cols + c];
  acc = sign_warp_sum(acc);
  if (lane == 0) rowsum[row] = acc;
}

// ---- launchers (all pointers in device memory) ------------------------------------------------------

inline void check_sign_launch(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                              index_t cols, const float* y, const char* who) {
  LOWBIT_CHECK(rows > 0 && cols > 0, who, ": shape must be positive, got ", rows, "x", cols);
  LOWBIT_CHECK(W && rowsum && bits && y, who, ": null pointer");
}

// Whether the float4 kernel applies: whole float4 units per row and a 16-byte aligned W.
inline bool sign_vec4_applies(const float* W, index_t cols) {
  return cols % 4 == 0 && reinterpret_cast<std::uintptr_t>(W) % 16 == 0;
}

template <int Warps = kSignWarps>
void launch_sign_matvec_general(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                                index_t cols, float* y, cudaStream_t stream = nullptr) {
  check_sign_launch(W, rowsum, bits, rows, cols, y, "launch_sign_matvec_general");
  const auto blocks = static_cast<unsigned>((rows + Warps - 1) / Warps);
  sign_matvec_general_kernel<Warps><<<blocks, Warps * 32, 0, stream>>>(
      W, rowsum, reinterpret_cast<const std::uint32_t*>(bits), rows, cols, y);
  sign_check_cuda(cudaGetLastError(), "sign_matvec_general_kernel launch");
}

template <int Warps = kSignWarps>
void launch_sign_matvec_vec4(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows,
                             index_t cols, float* y, cudaStream_t stream = nullptr) {
  check_sign_launch(W, rowsum, bits, rows, cols, y, "launch_sign_matvec_vec4");
  LOWBIT_CHECK(sign_vec4_applies(W, cols), "launch_sign_matvec_vec4: needs cols % 4 == 0 and a 16-byte aligned W, got ",
               cols, " columns");
  const auto blocks = static_cast<unsigned>((rows + Warps - 1) / Warps);
  sign_matvec_vec4_kernel<Warps><<<blocks, Warps * 32, 0, stream>>>(
      W, rowsum, reinterpret_cast<const std::uint32_t*>(bits), rows, cols, y);
  sign_check_cuda(cudaGetLastError(), "sign_matvec_vec4_kernel launch");
}

// y[rows] = 2·Σ_{s_c=+1} W'[:, c] − rowsum on `stream`; bits: signs_words(cols) 64-bit words.
inline void launch_sign_matvec(const float* W, const float* rowsum, const std::uint64_t* bits, index_t rows, index_t cols,
                               float* y, cudaStream_t stream = nullptr) {
  if (sign_vec4_applies(W, cols))
    launch_sign_matvec_vec4(W, rowsum, bits, rows, cols, y, stream);
  else
    launch_sign_matvec_general(W, rowsum, bits, rows, cols, y, stream);
}

// bits[signs_words(n)] = the packed signs of v[n] (as pack_signs on the host, bit for bit).
inline void launch_pack_signs(const float* v, index_t n, std::uint64_t* bits, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(n > 0 && v && bits, "launch_pack_signs: empty input or null pointer");
  const index_t words32 = 2 * cpu::signs_words(n);
  constexpr int threads = 256;
  const auto blocks = static_cast<unsigned>((words32 * 32 + threads - 1) / threads);
  sign_pack_kernel<threads><<<blocks, threads, 0, stream>>>(v, n, reinterpret_cast<std::uint32_t*>(bits), words32);
  sign_check_cuda(cudaGetLastError(), "sign_pack_kernel launch");
}

// rowsum[rows] = W'·1 (float, a warp per row).
inline void launch_sign_rowsums(const float* W, index_t rows, index_t cols, float* rowsum, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(rows > 0 && cols > 0 && W && rowsum, "launch_sign_rowsums: empty shape or null pointer");
  const auto blocks = static_cast<unsigned>((rows + kSignWarps - 1) / kSignWarps);
  sign_rowsum_kernel<kSignWarps><<<blocks, kSignWarps * 32, 0, stream>>>(W, rows, cols, rowsum);
  sign_check_cuda(cudaGetLastError(), "sign_rowsum_kernel launch");
}

}  // namespace lowbit::kernels::cuda
