// Helpers shared by the calibration tests: the uniform formats they sweep, and format-neutral access to
// a packed matrix (one code, the dequantized matrix) through the calibrators' GroupGrid.
#pragma once

#include <vector>

#include "lowbit/calib/rtn.hpp"
#include "lowbit/format/nf3.hpp"
#include "lowbit/format/uniform.hpp"

#define LOWBIT_TEST_UNIFORM_FORMATS lowbit::Uniform<4, 128>, lowbit::Uniform<3, 64>, lowbit::Uniform<2, 128>

namespace lowbit::test {

template <class Format>
std::uint32_t code_of(const typename calib::GroupGrid<Format>::Packed& packed, index_t row, index_t col) {
  return packed.code(row, col);
}

inline bool same_params(const UniformGroupParams& a, const UniformGroupParams& b) {
  return a.scale.bits == b.scale.bits && a.zero == b.zero;
}
inline bool same_params(const NF3Params& a, const NF3Params& b) {
  return a.max.bits == b.max.bits && a.min.bits == b.min.bits;
}

// Ŵ from the packed codes and group parameters, element by element (no kernel involved).
template <class Format>
void dequantize_into(const typename calib::GroupGrid<Format>::Packed& packed, std::vector<float>& out, index_t rows,
                     index_t cols) {
  using Grid = calib::GroupGrid<Format>;
  const index_t group = Grid::group_size(cols);
  out.assign(static_cast<std::size_t>(rows * cols), 0.0f);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c)
      out[r * cols + c] = Grid::decode(packed.code(r, c), packed.params(r, c / group));
}

}  // namespace lowbit::test
