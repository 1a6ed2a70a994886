// Arithmetic of the additive (AQLM) kernels that runs unchanged on host and device (LOWBIT_HD): reading a
// code from the packed stream, decoding one group from fp16 codebooks, a group's dot product, and the
// beam-search candidate score. The CUDA kernels call exactly these, and the host tests check them
// against the fp32 reference, so a GPU-less build still verifies the device arithmetic.
#pragma once

#include <cstdint>

#include "../config.hpp"
#include "../core/bitpack.hpp"
#include "../core/half.hpp"
#include "../core/tensor.hpp"

namespace lowbit {

// Code (j, m) of a row whose B-bit stream starts at `row_words`.
LOWBIT_HD std::uint32_t additive_code(const std::uint32_t* row_words, index_t j, int m, int num_codebooks, int bits) {
  return unpack_code(row_words, j * num_codebooks + m, bits);
}

// out[d] = Σ_m C_m[code_jm][d] for one group, codebooks as fp16 bits [M, K, G].
LOWBIT_HD void additive_decode_group(const std::uint16_t* codebooks, index_t codebook_size, int num_codebooks,
                                     int group_size, const std::uint32_t* row_words, int bits, index_t j, float* out) {
  for (int d = 0; d < group_size; ++d) out[d] = 0.0f;
  for (int m = 0; m < num_codebooks; ++m) {
    const std::uint32_t code = additive_code(row_words, j, m, num_codebooks, bits);
    const std::uint16_t* c = codebooks + (m * codebook_size + code) * group_size;
    for (int d = 0; d < group_size; ++d) out[d] += half_bits_to_float(c[d]);
  }
}

// Σ_d (Σ_m C_m[code_jm][d]) · x[G·j + d], with columns at or past `cols` (padding) skipped.
LOWBIT_HD float additive_group_dot(const std::uint16_t* codebooks, index_t codebook_size, int num_codebooks,
                                   int group_size, const std::uint32_t* row_words, int bits, index_t j,
                                   const float* x, index_t cols) {
  float acc = 0.0f;
  for (int m = 0; m < num_codebooks; ++m) {
    const std::uint32_t code = additive_code(row_words, j, m, num_codebooks, bits);
    const std::uint16_t* c = codebooks + (m * codebook_size + code) * group_size;
    for (int d = 0; d < group_size; ++d) {
      const index_t col = j * group_size + d;
      if (col < cols) acc += half_bits_to_float(c[d]) * x[col];
    }
  }
  return acc;
}

// The same dot product with fp32 codebooks [M, K, G] and the group's G activations already gathered
// (xg), for rows whose length is a multiple of G (no padding): the tiled CUDA kernel's inner step, with
// the codebooks decoded once into shared memory.
template <int G>
LOWBIT_HD float additive_group_dot_f32(const float* codebooks, index_t codebook_size, int num_codebooks,
                                       const std::uint32_t* row_words, int bits, index_t j, const float* xg) {
  float acc = 0.0f;
  for (int m = 0; m < num_codebooks; ++m) {
    const float* c = codebooks + (m * codebook_size + additive_code(row_words, j, m, num_codebooks, bits)) * G;
    LOWBIT_UNROLL
    for (int d = 0; d < G; ++d) acc += c[d] * xg[d];
  }
  return acc;
}

// eᵀ·H_jj·e for a codeword e and the G×G diagonal block H_jj (row-major).
LOWBIT_HD float additive_quadratic_form(const float* e, const float* hjj, int group_size) {
  float total = 0.0f;
  for (int p = 0; p < group_size; ++p) {
    float hp = 0.0f;
    for (int t = 0; t < group_size; ++t) hp += hjj[p * group_size + t] * e[t];
    total += e[p] * hp;
  }
  return total;
}

// Beam-search score of candidate codeword e for a row (calib/beam_search.hpp): s²·eᵀH_jj e + ⟨e, q⟩ with
// q = 2s(r_j − s·H_jj·f). Equal to the row's new loss up to a constant shared by all candidates.
LOWBIT_HD float additive_candidate_score(const float* e, const float* q, int group_size, float scale_squared,
                                         float quad) {
  float total = scale_squared * quad;
  for (int p = 0; p < group_size; ++p) total += q[p] * e[p];
  return total;
}

}  // namespace lowbit
