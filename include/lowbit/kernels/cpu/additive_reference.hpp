// The unpacked, fp32 form of an additively quantized matrix, and the slow, obviously correct
// reconstruction and matvec every fast path is tested against. Calibration works on this form (codes as
// plain integers, codebooks and scales in fp32); the packed storage of format/additive.hpp is derived
// from it. Ŵ[o, G·j + d] = s_o · Σ_m C_m[codes[o, j, m]][d]  (AQLM, ALGORITHMS.md §1.1).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "../../config.hpp"
#include "../../core/error.hpp"
#include "../../core/tensor.hpp"

namespace lowbit {

// Runtime description of an additive layout: M codebooks of 2^B vectors of G weights each.
struct AdditiveShape {
  index_t rows = 0;
  index_t cols = 0;
  int num_codebooks = 0;  // M
  int code_bits = 0;      // B
  int group_size = 0;     // G

  LOWBIT_HD index_t groups() const { return (cols + group_size - 1) / group_size; }
  LOWBIT_HD index_t padded_cols() const { return groups() * group_size; }
  LOWBIT_HD index_t codebook_size() const { return index_t{1} << code_bits; }
  LOWBIT_HD index_t codes_per_row() const { return groups() * num_codebooks; }

  void validate(const std::string& what) const {
    LOWBIT_CHECK(rows > 0 && cols > 0, what, ": additive matrix must be non-empty, found [", rows, ", ",
                 cols, "]");
    LOWBIT_CHECK(num_codebooks >= 1 && num_codebooks <= 8, what, ": number of codebooks must be 1..8, found ",
                 num_codebooks);
    LOWBIT_CHECK(code_bits >= 1 && code_bits <= 16, what, ": code bits must be 1..16, found ", code_bits);
    LOWBIT_CHECK(group_size == 2 || group_size == 4 || group_size == 8 || group_size == 16 || group_size == 32,
                 what, ": group size must be 2, 4, 8, 16 or 32, found ", group_size);
  }
  bool operator==(const AdditiveShape&) const = default;
};

struct AdditiveCodes {
  AdditiveShape shape;
  std::vector<std::uint32_t> codes;  // [rows, groups, M]
  std::vector<float> codebooks;      // [M, 2^B, G]
  std::vector<float> scales;         // [rows]

  AdditiveCodes() = default;
  explicit AdditiveCodes(const AdditiveShape& s)
      : shape(s),
        codes(static_cast<std::size_t>(s.rows * s.codes_per_row()), 0u),
        codebooks(static_cast<std::size_t>(s.num_codebooks * s.codebook_size() * s.group_size), 0.0f),
        scales(static_cast<std::size_t>(s.rows), 1.0f) {}

  std::uint32_t& code(index_t row, index_t group, int m) {
    return codes[static_cast<std::size_t>((row * shape.groups() + group) * shape.num_codebooks + m)];
  }
  std::uint32_t code(index_t row, index_t group, int m) const {
    return codes[static_cast<std::size_t>((row * shape.groups() + group) * shape.num_codebooks + m)];
  }
  float* codeword(int m, index_t k) {
    return codebooks.data() + (m * shape.codebook_size() + k) * shape.group_size;
  }
  const float* codeword(int m, index_t k) const {
    return codebooks.data() + (m * shape.codebook_size() + k) * shape.group_size;
  }
};

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
