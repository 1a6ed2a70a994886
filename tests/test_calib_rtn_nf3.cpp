// RTN and the NF3 grid: exact round trips (quantize → dequantize → quantize reproduces codes and
// parameters bit for bit), nearest-level encoding checked by brute force, the published NF3 levels,
// the packed kernels (dequantize, matvec) against element-wise decoding, and exact bits per weight.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "lowbit/calib/rtn.hpp"
#include "lowbit/core/rng.hpp"
#include "lowbit/format/nf3.hpp"
#include "test_calib_formats.hpp"

using namespace lowbit;

namespace {

std::vector<float> heavy_tailed(index_t rows, index_t cols, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> W(static_cast<std::size_t>(rows * cols));
  for (auto& w : W) {
    w = static_cast<float>(0.02 * rng.normal());
    if (rng.uniform() < 0.01) w *= 8.0f;  // outliers
  }
  return W;
}

template <class Format>
void check_round_trip(index_t rows, index_t cols) {
  using Grid = calib::GroupGrid<Format>;
  const auto W = heavy_tailed(rows, cols, 11);
  const auto first = calib::rtn_quantize<Format>(MatrixView<const float>(W.data(), rows, cols));
  std::vector<float> W_hat;
  test::dequantize_into<Format>(first, W_hat, rows, cols);
  const auto second = calib::rtn_quantize<Format>(MatrixView<const float>(W_hat.data(), rows, cols));
  const index_t group = Grid::group_size(cols);
  index_t code_diff = 0, param_diff = 0;
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols; ++c) code_diff += first.code(r, c) != second.code(r, c);
    for (index_t g = 0; g * group < cols; ++g) {
      const auto a = first.params(r, g), b = second.params(r, g);
      param_diff += !test::same_params(a, b);
    }
  }
  CHECK(code_diff == 0);
  CHECK(param_diff == 0);
  // Every weight decodes to the grid value nearest to it (brute force over all codes).
  index_t not_nearest = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) {
      const auto p = first.params(r, c / group);
      const float w = W[r * cols + c];
      float best = std::numeric_limits<float>::infinity();
      for (std::uint32_t code = 0; code < (1u << Format::bits); ++code)
        best = std::min(best, std::abs(w - Grid::decode(code, p)));
      not_nearest += std::abs(w - W_hat[r * cols + c]) > best + 1e-6f * std::abs(w);
    }
  CHECK(not_nearest == 0);
}

}  // namespace

TEST_CASE_TEMPLATE("rtn: quantize -> dequantize -> quantize is exact (uniform)", Format, LOWBIT_TEST_UNIFORM_FORMATS) {
  check_round_trip<Format>(48, 384);
  check_round_trip<Format>(5, 200);  // a short last group
}

TEST_CASE("nf3: quantize -> dequantize -> quantize is exact, every weight on its nearest level") {
  check_round_trip<NF3<128>>(48, 384);
  check_round_trip<NF3<64>>(7, 100);
}

TEST_CASE("nf3: the published levels, thresholds halfway, asymmetric scaling") {
  const float expected[8] = {-1.0f, -0.5350f, -0.2469f, 0.0f, 0.1833f, 0.3820f, 0.6230f, 1.0f};
  for (std::uint32_t c = 0; c < 8; ++c) CHECK(nf3_level(c) == expected[c]);
  // max 2, min -0.5: positive side scaled by 2, negative by 0.5.
  const float hi = 2.0f, lo = -0.5f;
  for (std::uint32_t c = 0; c < 8; ++c) {
    const float value = nf3_decode(c, hi, lo);
    CHECK(value == (c >= 3 ? expected[c] * hi : expected[c] * 0.5f));
    CHECK(nf3_encode(value, hi, lo) == c);
  }
  // Just below / above the threshold between 0.1833 and 0.3820 (0.28265 · max).
  CHECK(nf3_encode(0.28260f * hi, hi, lo) == 4u);
  CHECK(nf3_encode(0.28270f * hi, hi, lo) == 5u);
  // Beyond the range clamps to the extreme levels.
  CHECK(nf3_encode(10.0f, hi, lo) == 7u);
  CHECK(nf3_encode(-10.0f, hi, lo) == 0u);
  // A group with no negative weights decodes negatives to zero instead of dividing by zero.
  CHECK(nf3_encode(-0.1f, 1.0f, 0.0f) == 3u);
}

TEST_CASE("nf3: packed dequantize and matvec agree with element-wise decoding, bits per weight exact") {
  using Q = Quantizer<NF3<128>>;
  const index_t rows = 33, cols = 300;  // last group of 44
  const auto W = heavy_tailed(rows, cols, 5);
  const auto packed = Q::quantize(MatrixView<const float>(W.data(), rows, cols));
  std::vector<float> reference;
  test::dequantize_into<NF3<128>>(packed, reference, rows, cols);
  std::vector<float> dense(static_cast<std::size_t>(rows * cols));
  Q::dequantize(packed, MatrixView<float>(dense.data(), rows, cols));
  CHECK(dense == reference);
  // RTN through the calibrators' grid gives the same storage as the format's own quantize.
  const auto via_grid = calib::rtn_quantize<NF3<128>>(MatrixView<const float>(W.data(), rows, cols));
  CHECK(via_grid.codes() == packed.codes());
  Rng rng(9);
  std::vector<float> x(static_cast<std::size_t>(cols)), y(static_cast<std::size_t>(rows));
  for (auto& v : x) v = static_cast<float>(rng.normal());
  Q::matvec(packed, x.data(), y.data());
  for (index_t r = 0; r < rows; ++r) {
    double expect = 0;
    for (index_t c = 0; c < cols; ++c) expect += double(reference[r * cols + c]) * x[c];
    CHECK(y[r] == doctest::Approx(expect).epsilon(1e-4));
  }
  // 3-bit codes packed per row (ceil(300·3/32) = 29 words) + fp16 max and min for 3 groups.
  CHECK(packed.bytes() == static_cast<std::size_t>(rows * (29 * 4 + 3 * 2 * 2)));
  CHECK(Q::bits_per_weight(packed) == doctest::Approx(8.0 * rows * (29 * 4 + 12) / double(rows * cols)));
  CHECK(Q::name() == "nf3:128");
}
