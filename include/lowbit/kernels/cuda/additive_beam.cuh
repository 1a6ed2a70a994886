// The scoring step of AQLM's beam search on the GPU: for one (group j, codebook m) position, every row
// scores all 2^B candidate codewords (s²·eᵀH_jj e + ⟨e, q_row⟩, additive_candidate_score — the LOWBIT_HD
// function the host beam search's formula is tested against) and keeps its `beam` best with
// cub::BlockRadixSort. The score matrix [rows, 2^B] is never materialised: a block owns a row and sorts
// chunks of candidates, carrying the running top-k from chunk to chunk (works for 2^16 codewords).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <cub/block/block_radix_sort.cuh>

#include "../../core/error.hpp"
#include "../../format/additive_shared.hpp"

namespace lowbit::kernels::cuda {

inline constexpr int kBeamThreads = 128;
inline constexpr int kBeamItems = 8;  // 1024 candidates sorted per chunk
inline constexpr int kBeamMaxWidth = 64;

// q [rows, G] (2s(r_j − s·H_jj·f) per row), scales [rows], codebook [K, G] fp32 (codebook m), quad [K]
// (C_m[k]ᵀH_jj C_m[k]); writes the `beam` lowest scores per row, ascending: top_codes/top_scores [rows, beam].
template <int Threads, int Items>
__global__ void __launch_bounds__(Threads)
    additive_beam_topk_kernel(const float* __restrict__ q, const float* __restrict__ scales,
                              const float* __restrict__ codebook, const float* __restrict__ quad, index_t K,
                              int group_size, int beam, std::uint32_t* __restrict__ top_codes,
                              float* __restrict__ top_scores) {
  using Sort = cub::BlockRadixSort<float, Threads, Items, std::uint32_t>;
  __shared__ typename Sort::TempStorage sort_storage;
  __shared__ float carried_scores[kBeamMaxWidth];
  __shared__ std::uint32_t carried_codes[kBeamMaxWidth];
  __shared__ float row_q[32];
  const index_t row = blockIdx.x;
  if (threadIdx.x < group_size) row_q[threadIdx.x] = q[row * group_size + threadIdx.x];
  if (threadIdx.x < beam) {
    carried_scores[threadIdx.x] = FLT_MAX;
    carried_codes[threadIdx.x] = 0xffffffffu;
  }
  __syncthreads();
  const float s = scales[row];
  const float s2 = s * s;
  constexpr int chunk = Threads * Items;
  const index_t fresh_per_chunk = chunk - beam;
  for (index_t base = 0; base < K; base += fresh_per_chunk) {
    float keys[Items];
    std::uint32_t values[Items];
    for (int i = 0; i < Items; ++i) {
      const int flat = static_cast<int>(threadIdx.x) * Items + i;  // blocked arrangement
      if (flat < beam) {
        keys[i] = carried_scores[flat];
        values[i] = carried_codes[flat];
      } else {
        const index_t k = base + (flat - beam);
        if (k < K) {
          keys[i] = additive_candidate_score(codebook + k * group_size, row_q, group_size, s2, quad[k]);
          values[i] = static_cast<std::uint32_t>(k);
        } else {
          keys[i] = FLT_MAX;
          values[i] = 0xffffffffu;
        }
      }
    }
    __syncthreads();  // everyone has read the carried top-k
    Sort(sort_storage).Sort(keys, values);
    for (int i = 0; i < Items; ++i) {
      const int flat = static_cast<int>(threadIdx.x) * Items + i;
      if (flat < beam) {
        carried_scores[flat] = keys[i];
        carried_codes[flat] = values[i];
      }
    }
    __syncthreads();
  }
  if (threadIdx.x < beam) {
    top_scores[row * beam + threadIdx.x] = carried_scores[threadIdx.x];
    top_codes[row * beam + threadIdx.x] = carried_codes[threadIdx.x];
  }
}

// All pointers are device memory; beam in 1..64, group size ≤ 32.
inline void launch_additive_beam_topk(const float* q, const float* scales, const float* codebook, const float* quad,
                                      index_t rows, index_t K, int group_size, int beam, std::uint32_t* top_codes,
                                      float* top_scores, cudaStream_t stream = nullptr) {
  LOWBIT_CHECK(beam >= 1 && beam <= kBeamMaxWidth, "launch_additive_beam_topk: beam width must be 1..", kBeamMaxWidth,
               ", got ", beam);
  LOWBIT_CHECK(group_size >= 1 && group_size <= 32, "launch_additive_beam_topk: group size must be ≤ 32, got ", group_size);
  additive_beam_topk_kernel<kBeamThreads, kBeamItems><<<static_cast<unsigned>(rows), kBeamThreads, 0, stream>>>(
      q, scales, codebook, quad, K, group_size, beam, top_codes, top_scores);
  const cudaError_t status = cudaGetLastError();
  LOWBIT_CHECK(status == cudaSuccess, "CUDA additive_beam_topk_kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace lowbit::kernels::cuda
