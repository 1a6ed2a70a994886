// The slow, obviously correct reconstruction and matvec of an additively quantized matrix in its
// unpacked fp32 form (AdditiveCodes, format/additive.hpp), which every fast path is tested against.
// Ŵ[o, G·j + d] = s_o · Σ_m C_m[codes[o, j, m]][d]  (AQLM, ALGORITHMS.md §1.1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../config.hpp"
#include "../../core/error.hpp"
#include "../../core/tensor.hpp"
#include "../../format/additive.hpp"

namespace lowbit {

// Unscaled reconstruction of one row over the padded width: u[G·j + d] = Σ_m C_m[codes[o,j,m]][d].
inline void additive_unscaled_row_reference(const AdditiveCodes& a, index_t row, float* u) {
  const auto& s = a.shape;
  for (index_t j = 0; j < s.groups(); ++j) {
    float* dst = u + j * s.group_size;
    for (int d = 0; d < s.group_size; ++d) dst[d] = 0.0f;
    for (int m = 0; m < s.num_codebooks; ++m) {
      const float* c = a.codeword(m, a.code(row, j, m));
      for (int d = 0; d < s.group_size; ++d) dst[d] += c[d];
    }
  }
}

// Ŵ [rows, cols] (padding columns dropped).
inline void additive_dequantize_reference(const AdditiveCodes& a, MatrixView<float> out) {
  const auto& s = a.shape;
  LOWBIT_CHECK(out.rows() == s.rows && out.cols() == s.cols, "additive dequantize: output is [", out.rows(),
               ", ", out.cols(), "], expected [", s.rows, ", ", s.cols, "]");
  std::vector<float> u(static_cast<std::size_t>(s.padded_cols()));
  for (index_t o = 0; o < s.rows; ++o) {
    additive_unscaled_row_reference(a, o, u.data());
    for (index_t c = 0; c < s.cols; ++c) out(o, c) = a.scales[static_cast<std::size_t>(o)] * u[static_cast<std::size_t>(c)];
  }
}

// y[rows] = Ŵ x[cols], accumulated in double.
inline void additive_matvec_reference(const AdditiveCodes& a, const float* x, float* y) {
  const auto& s = a.shape;
  std::vector<float> u(static_cast<std::size_t>(s.padded_cols()));
  for (index_t o = 0; o < s.rows; ++o) {
    additive_unscaled_row_reference(a, o, u.data());
    double acc = 0.0;
    for (index_t c = 0; c < s.cols; ++c) acc += static_cast<double>(u[static_cast<std::size_t>(c)]) * x[c];
    y[o] = static_cast<float>(acc * a.scales[static_cast<std::size_t>(o)]);
  }
}

}  // namespace lowbit
