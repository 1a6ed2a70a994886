// The int8-activation BCQ kernels (kernels/cpu/bcq_matvec_q8.hpp): the AVX-512 and AVX2 paths equal the scalar
// reference of the same integer arithmetic bit for bit (tables and outputs), and the reference stays
// within the stated error bound of the exact matvec (double accumulation of dequantized weights), on odd
// shapes (1, 3, 17, 576 rows; 32..4096 columns, short last groups and words), 1..4 bits, groups of 32, 64,
// 128 and whole rows, Gaussian and heavy-tailed x; the quantized tables against their definition;
// zero, tiny and non-finite activations; thread-count independence; Quantizer dispatch.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/format/activation.hpp>
#include <lowbit/kernels/cpu/bcq_matvec_q8.hpp>
#include <lowbit/quantizer.hpp>
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

// The bound of the header for row r: 0.50005·Σ_k d_k·quads_k·Σ_i |α_{i,g(k)}|, plus the fp32 rounding of
// the group sums Σx and of the final sum, (group size + terms + 4)·2^−24 of the absolute size
// Σ_g (|o_g| + Σ_i |α_{i,g}|)·Σ_{c∈g} |x_c| (and of the lookup term).
template <class Format>
double q8_bound(const BCQPacked<Format>& packed, const cpu::BCQQ8Activations& xa, const std::vector<float>& x,
                index_t r) {
  constexpr int bits = Format::bits;
  double lookup = 0.0, mass = 0.0;
  for (const auto& b : xa.blocks) {
    const auto p = packed.params(r, b.group);
    double a = 0.0;
    for (int i = 0; i < bits; ++i) a += std::fabs(p.alpha[i]);
    lookup += 0.50005 * b.d * static_cast<double>(8 * (b.w1 - b.w0)) * a;
  }
  for (index_t g = 0; g < packed.groups_per_row(); ++g) {
    const auto p = packed.params(r, g);
    double a = std::fabs(p.offset), xs = 0.0;
    for (int i = 0; i < bits; ++i) a += std::fabs(p.alpha[i]);
    for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) xs += std::fabs(x[c]);
    mass += a * xs;
  }
  // the fp32 sums Σx of each group (their length) and the final sum (its terms)
  const double terms = static_cast<double>(packed.group_size() + packed.groups_per_row() +
                                           bits * static_cast<index_t>(xa.blocks.size()));
  return lookup + (terms + 4.0) * std::ldexp(1.0, -24) * (mass + lookup) + 1e-30;
}

template <class Format>
void check_q8(index_t rows, index_t cols, std::uint64_t seed) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  const auto w = random_vector(rows * cols, rng, seed % 2 == 1);
  const auto x = random_vector(cols, rng, seed % 3 == 2);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const std::string shape = Q::name() + " " + std::to_string(rows) + "x" + std::to_string(cols);
  INFO(shape);
  std::vector<float> exact(rows), ref(rows), got(rows);
  cpu::bcq_matvec_reference(packed, x.data(), exact.data());
  cpu::BCQQ8Activations xa;
  cpu::bcq_prepare_q8_scalar(packed, x.data(), xa);
  cpu::bcq_matvec_q8_reference(packed, xa, ref.data());
  index_t over = 0;
  double worst = 0.0;
  for (index_t r = 0; r < rows; ++r) {
    const double bound = q8_bound(packed, xa, x, r), err = std::fabs(double(ref[r]) - exact[r]);
    over += !(err <= bound);
    worst = std::max(worst, err / bound);
  }
  CHECK_MESSAGE(over == 0, shape, ": ", over, " rows past the bound (worst err/bound ", worst, ")");
#if defined(LOWBIT_HAVE_BCQ_Q8_AVX512)
  cpu::BCQQ8Activations xs;
  cpu::bcq_prepare_q8(packed, x.data(), xs);
  REQUIRE(xs.t8.size() == xa.t8.size());
  CHECK_MESSAGE(std::equal(xs.t8.begin(), xs.t8.end(), xa.t8.begin()), shape, ": SIMD tables differ");
  REQUIRE(xs.blocks.size() == xa.blocks.size());
  for (std::size_t k = 0; k < xs.blocks.size(); ++k) CHECK(xs.blocks[k].d == xa.blocks[k].d);
  std::fill(got.begin(), got.end(), std::nanf(""));
  cpu::bcq_matvec_q8_avx512(packed, x.data(), got.data());
  index_t differ = 0;
  for (index_t r = 0; r < rows; ++r) differ += !(got[r] == ref[r]);
  CHECK_MESSAGE(differ == 0, shape, ": avx512 differs from the reference in ", differ, " rows");
#endif
#if defined(LOWBIT_HAVE_BCQ_Q8_AVX2)
  std::fill(got.begin(), got.end(), std::nanf(""));
  cpu::bcq_matvec_q8_avx2(packed, x.data(), got.data());
  index_t differ2 = 0;
  for (index_t r = 0; r < rows; ++r) differ2 += !(got[r] == ref[r]);
  CHECK_MESSAGE(differ2 == 0, shape, ": avx2 differs from the reference in ", differ2, " rows");
#endif
  std::fill(got.begin(), got.end(), std::nanf(""));
  Q::template matvec<Int8Activations>(packed, x.data(), got.data());
  if constexpr (cpu::bcq_q8_supported()) {
    CHECK(got == ref);
  } else {
    std::vector<float> f32(rows);
    Q::matvec(packed, x.data(), f32.data());
    CHECK(got == f32);
  }
}

template <class Format>
void check_format(std::uint64_t seed) {
  for (index_t rows : kRows)
    for (index_t cols : kCols) {
      if (rows == 576 && cols > 576) continue;  // the large products are covered below
      check_q8<Format>(rows, cols, seed++);
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

TEST_CASE("bcq int8 kernels: SIMD equals the reference, reference within the bound, 1 bit") { check_bits<1>(1000); }
TEST_CASE("bcq int8 kernels: SIMD equals the reference, reference within the bound, 2 bits") { check_bits<2>(2000); }
TEST_CASE("bcq int8 kernels: SIMD equals the reference, reference within the bound, 3 bits") { check_bits<3>(3000); }
TEST_CASE("bcq int8 kernels: SIMD equals the reference, reference within the bound, 4 bits") { check_bits<4>(4000); }

TEST_CASE("bcq int8 kernels: large shapes and groups longer than one block") {
  check_q8<BCQ<3, 128>>(576, 4096, 11);
  check_q8<BCQ<3, whole_row>>(576, 4096, 12);
  check_q8<BCQ<2, 64>>(576, 1536, 13);
  check_q8<BCQ<4, 32>>(576, 1536, 14);
  check_q8<BCQ<1, whole_row>>(576, 1536, 15);
  check_q8<BCQ<4, whole_row>>(17, 4097, 16);  // one column into a new word
  check_q8<BCQ<2, 384>>(33, 1000, 17);        // groups of 12 words: blocks of 8 and 4 words
  check_q8<BCQ<3, 288>>(20, 900, 18);         // 9 words: 8 + 1, a block across a 16-word chunk
}

TEST_CASE("bcq int8 kernels: quantized tables match their definition") {
  using F = BCQ<2, 64>;
  Rng rng(21);
  const index_t cols = 200;  // 7 words: the last 24 columns of the tables are padding
  const auto x = random_vector(cols, rng, true);
  const BCQPacked<F> packed(3, cols);
  cpu::BCQQ8Activations xa;
  cpu::bcq_prepare_q8_scalar(packed, x.data(), xa);
  auto xc = [&](index_t c) { return c < cols ? static_cast<double>(x[c]) : 0.0; };
  REQUIRE(xa.blocks.size() == 4u);  // groups of 2 words, the last one padded
  for (const auto& b : xa.blocks) {
    double amax = 0.0;
    for (index_t q = 8 * b.w0; q < 8 * b.w1; ++q)
      amax = std::max(amax, std::fabs(xc(4 * q)) + std::fabs(xc(4 * q + 1)) + std::fabs(xc(4 * q + 2)) +
                                std::fabs(xc(4 * q + 3)));
    REQUIRE(b.d == doctest::Approx(amax / 127.0).epsilon(1e-6));
    for (index_t q = 8 * b.w0; q < 8 * b.w1; ++q)
      for (int m = 0; m < 16; ++m) {
        double direct = 0.0;
        for (int j = 0; j < 4; ++j) direct += ((m >> j) & 1) ? xc(4 * q + j) : -xc(4 * q + j);
        const int e = xa.entry(q)[m];
        REQUIRE(std::abs(e) <= 127);
        REQUIRE(std::fabs(e * static_cast<double>(b.d) - direct) <= 0.50005 * b.d);
        REQUIRE(e == -xa.entry(q)[15 - m]);  // round-to-nearest-even is symmetric
      }
  }
  REQUIRE(xa.group_sums.size() == 4u);
}

TEST_CASE("bcq int8 kernels: zero, tiny and non-finite activations") {
  using F = BCQ<3, 64>;
  using Q = Quantizer<F>;
  Rng rng(5);
  const index_t rows = 19, cols = 256;
  const auto w = random_vector(rows * cols, rng, false);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> x(static_cast<std::size_t>(cols), 0.0f), y(rows), ref(rows);
  // a zero block, a block of subnormals (127/A overflows), a normal block, a block with a NaN
  for (index_t c = 64; c < 128; ++c) x[c] = (c % 2 ? 1 : -1) * 1e-44f * static_cast<float>(c % 5 + 1);
  for (index_t c = 128; c < 192; ++c) x[c] = 0.01f * static_cast<float>(c - 160);
  auto run = [&] {
    cpu::bcq_matvec_q8_reference(packed, x.data(), ref.data());
    std::fill(y.begin(), y.end(), 0.0f);
    Q::matvec<Int8Activations>(packed, x.data(), y.data());
  };
  run();
  std::vector<float> exact(rows);
  cpu::bcq_matvec_reference(packed, x.data(), exact.data());
  cpu::BCQQ8Activations xa;
  cpu::bcq_prepare_q8_scalar(packed, x.data(), xa);
  CHECK(xa.blocks[0].d == 0.0f);
  CHECK(xa.blocks[1].d > 0.0f);
  for (index_t r = 0; r < rows; ++r) {
    CHECK(std::isfinite(y[r]));
    CHECK(std::fabs(double(ref[r]) - exact[r]) <= q8_bound(packed, xa, x, r));
    if constexpr (cpu::bcq_q8_supported()) CHECK(y[r] == ref[r]);
  }
  x[200] = std::numeric_limits<float>::quiet_NaN();
  run();
  for (index_t r = 0; r < rows; ++r) CHECK(std::isnan(y[r]));
  x[200] = std::numeric_limits<float>::infinity();
  run();
  for (index_t r = 0; r < rows; ++r) CHECK(!std::isfinite(y[r]));
}

TEST_CASE("bcq int8 kernels: the result does not depend on the thread count") {
  using Q = Quantizer<BCQ<3, 128>>;
  Rng rng(7);
  const index_t rows = 300, cols = 1000;
  const auto w = random_vector(rows * cols, rng, false);
  const auto x = random_vector(cols, rng, false);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const int saved = max_threads();
  std::vector<float> one(rows), two(rows);
  set_num_threads(1);
  Q::matvec<Int8Activations>(packed, x.data(), one.data());
  set_num_threads(2);
  Q::matvec<Int8Activations>(packed, x.data(), two.data());
  set_num_threads(saved);
  CHECK(one == two);
}

TEST_CASE("bcq int8 kernels: Quantizer dispatch and capability") {
  using F = BCQ<3, 128>;
  CHECK(Quantizer<F>::has_kernel_for<Int8Activations>() == cpu::bcq_q8_supported());
  CHECK(Quantizer<F>::has_kernel_for<F32Activations>());
  CHECK(has_activation_kernel<F, Int8Activations>() == cpu::bcq_q8_supported());
  MESSAGE("bcq int8 path: ", std::string(cpu::bcq_matvec_q8_path()));
}
