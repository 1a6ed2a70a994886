// The BCQ matvec kernels against the slow reference (double accumulation of decoded weights) and against
// dequantize-then-GEMV: every CPU path this build has (portable 256-entry LUT, AVX2, AVX-512) on odd
// shapes — 1, 3, 17 and 576 rows (partial row blocks), columns that are not a multiple of 32 or of the
// group (short last groups, whole-row groups) — for 1..4 bits and groups of 32, 64, 128 and whole rows;
// thread-count independence; both lookup tables against direct sums; and the LOWBIT_HD arithmetic of the
// CUDA kernels (format/bcq.hpp: bcq_word_signed_sum, bcq_unit_dot, bcq_row_partial_dot,
// bcq_view_weight), executed here on the host.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/bcq_matvec.hpp>
#include <lowbit/quantizer/bcq.hpp>
#include <string>
#include <vector>

#include "test_kernels_util.hpp"

using namespace lowbit;
namespace cpu = lowbit::kernels::cpu;
using lowbit::test::random_vector;

namespace {

constexpr index_t kRows[] = {1, 3, 17, 576};
constexpr index_t kCols[] = {32, 96, 200, 576, 1536, 4096};

// Σ_c |ŵ[r, c]·x[c]| per row: the scale of the rounding error of any summation order.
template <class Format>
std::vector<double> abs_products(const std::vector<float>& w_hat, index_t rows, index_t cols, const float* x) {
  std::vector<double> s(static_cast<std::size_t>(rows), 0.0);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) s[r] += std::fabs(double(w_hat[r * cols + c]) * x[c]);
  return s;
}

template <class Format>
void check_all_paths(index_t rows, index_t cols, std::uint64_t seed) {
  using Q = Quantizer<Format>;
  constexpr int bits = Format::bits;
  Rng rng(seed);
  const auto w = random_vector(rows * cols, rng, seed % 2 == 1);
  const auto x = random_vector(cols, rng, seed % 3 == 2);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> w_hat(static_cast<std::size_t>(rows * cols));
  Q::dequantize(packed, MatrixView<float>(w_hat.data(), rows, cols));
  const auto scale = abs_products<Format>(w_hat, rows, cols, x.data());
  std::vector<float> ref(rows), got(rows);
  cpu::bcq_matvec_reference(packed, x.data(), ref.data());
  const std::string shape = Q::name() + " " + std::to_string(rows) + "x" + std::to_string(cols);
  auto expect_close = [&](const std::string& path, const std::vector<float>& a, const std::vector<float>& b) {
    for (index_t r = 0; r < rows; ++r) {
      const double tol = 1e-4 * scale[r] + 1e-6;
      if (!(std::fabs(double(a[r]) - b[r]) <= tol)) {
        FAIL_CHECK(shape, " path ", path, " row ", r, ": ", a[r], " vs ", b[r], " (tolerance ", tol, ")");
        return;
      }
    }
  };
  // dequantize, then a plain GEMV (float, natural order): the reference must match it
  std::vector<float> gemv(rows);
  for (index_t r = 0; r < rows; ++r) {
    float acc = 0.0f;
    for (index_t c = 0; c < cols; ++c) acc += w_hat[r * cols + c] * x[c];
    gemv[r] = acc;
  }
  expect_close("reference vs dequantize+gemv", ref, gemv);
  auto run = [&](const std::string& path, auto&& fn) {
    std::fill(got.begin(), got.end(), std::nanf(""));  // an unwritten row fails
    fn();
    expect_close(path, got, ref);
    expect_close(path + " vs dequantize+gemv", got, gemv);
  };
  run("lut", [&] { cpu::bcq_matvec_lut(packed, x.data(), got.data()); });
#if defined(LOWBIT_HAVE_BCQ_AVX2)
  run("avx2", [&] { cpu::bcq_matvec_avx2(packed, x.data(), got.data()); });
#endif
#if defined(LOWBIT_HAVE_BCQ_AVX512)
  run("avx512", [&] { cpu::bcq_matvec_avx512(packed, x.data(), got.data()); });
#endif
  run(std::string("dispatch ") + cpu::bcq_matvec_path(), [&] { Q::matvec(packed, x.data(), got.data()); });

  // The CUDA kernels' arithmetic on the host: the general kernel (one warp per row), the tiled kernel
  // (32-column units with zero-padded activations), the dequantize kernel.
  const BCQMatrixView view = bcq_matrix_view(packed);
  std::vector<float> xpad(static_cast<std::size_t>(view.words * 32), 0.0f);
  std::copy(x.begin(), x.end(), xpad.begin());
  std::vector<float> warp(rows), unit(rows);
  for (index_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (index_t lane = 0; lane < 32; ++lane) sum += bcq_row_partial_dot<bits>(view, r, x.data(), lane, 32);
    warp[r] = sum;
    float acc = 0.0f;
    for (index_t u = 0; u < view.words; ++u) {
      const float* xv = xpad.data() + u * 32;
      float xsum = 0.0f;
      for (int j = 0; j < 32; ++j) xsum += xv[j];
      const index_t g = u * 32 / view.group_size;
      std::uint32_t words[bits];
      float alpha[bits];
      for (int i = 0; i < bits; ++i) {
        words[i] = view.plane<bits>(r, i)[u];
        alpha[i] = view.alpha<bits>(r, g, i);
      }
      acc += bcq_unit_dot<bits>(words, xv, xsum, alpha, view.offset(r, g));
    }
    unit[r] = acc;
  }
  expect_close("cuda row_partial_dot (host)", warp, ref);
  expect_close("cuda unit_dot (host)", unit, ref);
  index_t bad = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c = 0; c < cols; ++c) bad += bcq_view_weight<bits>(view, r, c) != w_hat[r * cols + c];
  CHECK_MESSAGE(bad == 0, shape, ": bcq_view_weight differs from dequantize at ", bad, " elements");
}

template <class Format>
void check_format(std::uint64_t seed) {
  for (index_t rows : kRows)
    for (index_t cols : kCols) {
      if (rows == 576 && cols > 576) continue;  // the large rows·cols products are covered below
      check_all_paths<Format>(rows, cols, seed++);
    }
}

template <int Bits>
void check_bits(std::uint64_t seed) {
  check_format<BCQ<Bits, 32>>(seed);
  check_format<BCQ<Bits, 64>>(seed + 100);
  check_format<BCQ<Bits, 128>>(seed + 200);
  check_format<BCQ<Bits, whole_row>>(seed + 300);
}

}  // namespace

TEST_CASE("bcq kernels: every path equals the reference and dequantize+GEMV, 1 bit") { check_bits<1>(1000); }
TEST_CASE("bcq kernels: every path equals the reference and dequantize+GEMV, 2 bits") { check_bits<2>(2000); }
TEST_CASE("bcq kernels: every path equals the reference and dequantize+GEMV, 3 bits") { check_bits<3>(3000); }
TEST_CASE("bcq kernels: every path equals the reference and dequantize+GEMV, 4 bits") { check_bits<4>(4000); }

TEST_CASE("bcq kernels: large shapes (576 rows x 1536 and 4096 columns)") {
  check_all_paths<BCQ<3, 128>>(576, 4096, 11);
  check_all_paths<BCQ<3, whole_row>>(576, 4096, 12);
  check_all_paths<BCQ<2, 64>>(576, 1536, 13);
  check_all_paths<BCQ<4, 32>>(576, 1536, 14);
  check_all_paths<BCQ<1, whole_row>>(576, 1536, 15);
  check_all_paths<BCQ<4, whole_row>>(17, 4097, 16);  // one column into a new word
}

TEST_CASE("bcq kernels: the result does not depend on the thread count") {
  using Q = Quantizer<BCQ<3, 128>>;
  Rng rng(7);
  const index_t rows = 300, cols = 1000;
  const auto w = random_vector(rows * cols, rng, false);
  const auto x = random_vector(cols, rng, false);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const int saved = max_threads();
  std::vector<float> one(rows), two(rows);
  set_num_threads(1);
  Q::matvec(packed, x.data(), one.data());
  set_num_threads(2);
  Q::matvec(packed, x.data(), two.data());
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("bcq kernels: lookup tables equal direct signed sums") {
  using F = BCQ<2, 64>;
  Rng rng(21);
  const index_t cols = 200;  // 7 words: the last 24 columns of the tables are padding
  const auto x = random_vector(cols, rng, true);
  const BCQPacked<F> packed(3, cols);
  auto xc = [&](index_t c) { return c < cols ? x[c] : 0.0f; };

  cpu::BCQTables byte_tables;
  byte_tables.build(packed, x.data());
  REQUIRE(byte_tables.chunks == packed.words_per_plane() * 4);
  for (index_t k = 0; k < byte_tables.chunks; ++k)
    for (int m = 0; m < 256; ++m) {
      double direct = 0.0, magnitude = 0.0;
      for (int j = 0; j < 8; ++j) {
        direct += ((m >> j) & 1) ? xc(8 * k + j) : -xc(8 * k + j);
        magnitude += std::fabs(xc(8 * k + j));
      }
      REQUIRE(std::fabs(byte_tables.lut[k * 256 + m] - direct) <= 1e-6 * magnitude);
    }

  cpu::BCQQuadTables quad_tables;
  quad_tables.build(packed, x.data());
  REQUIRE(quad_tables.quads == packed.words_per_plane() * 8);
  for (index_t q = 0; q < quad_tables.quads; ++q)
    for (int m = 0; m < 16; ++m) {
      float direct = 0.0f;  // in column order, in float: the tables promise exactly this
      for (int j = 0; j < 4; ++j) direct += ((m >> j) & 1) ? xc(4 * q + j) : -xc(4 * q + j);
      REQUIRE(quad_tables.quad[q * 16 + m] == direct);
    }
  for (const auto* t : {&byte_tables.group_sums, &quad_tables.group_sums}) {
    REQUIRE(t->size() == 4u);
    for (index_t g = 0; g < 4; ++g) {
      double direct = 0.0, magnitude = 0.0;
      for (index_t c = 64 * g; c < std::min<index_t>(cols, 64 * (g + 1)); ++c) direct += x[c], magnitude += std::fabs(x[c]);
      CHECK(std::fabs((*t)[g] - direct) <= 1e-6 * magnitude);
    }
  }
}

TEST_CASE("bcq kernels: bcq_word_signed_sum equals a direct sum") {
  Rng rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    const auto x = random_vector(32, rng, trial % 2 == 1);
    const auto word = static_cast<std::uint32_t>(rng.next_u64());
    const int count = 1 + trial % 32;
    double direct = 0.0, magnitude = 0.0;
    for (int j = 0; j < count; ++j) {
      direct += ((word >> j) & 1u) ? x[j] : -x[j];
      magnitude += std::fabs(x[j]);
    }
    REQUIRE(std::fabs(bcq_word_signed_sum(word, x.data(), count) - direct) <= 1e-6 * magnitude);
  }
  const float ones[32] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  CHECK(bcq_word_signed_sum(0xFFFFFFFFu, ones, 32) == 32.0f);
  CHECK(bcq_word_signed_sum(0u, ones, 32) == -32.0f);
  CHECK(bcq_word_signed_sum(0x0000FFFFu, ones, 32) == 0.0f);
  CHECK(bcq_word_signed_sum(0xFFFFFFFFu, ones, 5) == 5.0f);  // bits past count are ignored
}
