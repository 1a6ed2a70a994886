// The Uniform matvec kernels against the slow reference (double accumulation of decoded weights): every
// CPU path this build has (scalar, AVX2, AVX-512) on odd shapes — rows and columns that are multiples of
// nothing, columns not a multiple of the group, whole-row groups, symmetric mode — plus thread-count
// independence, and the LOWBIT_HD row routine that the CUDA kernel runs, executed here on the host.
#include <doctest/doctest.h>

#include <cmath>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/uniform_matvec.hpp>
#include <lowbit/quantizer.hpp>
#include <string>
#include <vector>

#include "test_kernels_util.hpp"

using namespace lowbit;
namespace cpu = lowbit::kernels::cpu;
using lowbit::test::random_vector;

namespace {

// Σ_c |ŵ[r, c]·x[c]| per row: the scale of the rounding error of any summation order.
template <class Format>
std::vector<double> abs_products(const UniformPacked<Format>& p, const float* x) {
  std::vector<double> s(static_cast<std::size_t>(p.rows()), 0.0);
  for (index_t r = 0; r < p.rows(); ++r)
    for (index_t c = 0; c < p.cols(); ++c) s[r] += std::fabs(double(p.weight(r, c)) * x[c]);
  return s;
}

template <class Format>
void check_all_paths(index_t rows, index_t cols, std::uint64_t seed) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  const auto w = random_vector(rows * cols, rng, seed % 2 == 1);
  const auto x = random_vector(cols, rng, false);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  std::vector<float> ref(rows), got(rows);
  cpu::uniform_matvec_reference(packed, x.data(), ref.data());
  const auto scale = abs_products(packed, x.data());
  auto expect_close = [&](const std::string& path) {
    for (index_t r = 0; r < rows; ++r) {
      const double tol = 1e-5 * scale[r] + 1e-6;
      if (std::fabs(double(got[r]) - ref[r]) > tol) {
        FAIL_CHECK(Q::name(), " ", rows, "x", cols, " path ", path, " row ", r, ": ", got[r], " vs reference ",
                   ref[r]);
        return;
      }
    }
  };
  cpu::uniform_matvec_scalar(packed, x.data(), got.data());
  expect_close("scalar");
#if defined(LOWBIT_HAVE_UNIFORM_AVX2)
  if constexpr (cpu::uniform_avx2_supports<Format>()) {
    std::fill(got.begin(), got.end(), 0.0f);
    cpu::uniform_matvec_avx2(packed, x.data(), got.data());
    expect_close("avx2");
  }
#endif
#if defined(LOWBIT_HAVE_UNIFORM_AVX512)
  if constexpr (cpu::uniform_avx512_supports<Format>()) {
    std::fill(got.begin(), got.end(), 0.0f);
    cpu::uniform_matvec_avx512(packed, x.data(), got.data());
    expect_close("avx512");
  }
#endif
  std::fill(got.begin(), got.end(), 0.0f);
  Q::matvec(packed, x.data(), got.data());
  expect_close(cpu::uniform_matvec_path<Format>());

  // The CUDA kernel's per-row routine, one warp of 32 lanes emulated on the host.
  const auto view = packed.view();
  for (index_t r = 0; r < rows; ++r) {
    float sum = 0.0f;
    for (index_t lane = 0; lane < 32; ++lane)
      sum += uniform_row_partial_dot<Format::bits, Format::group_size>(view, r, x.data(), lane, 32);
    REQUIRE(std::fabs(double(sum) - ref[r]) <= 1e-5 * scale[r] + 1e-6);
  }

  // The tiled CUDA kernel's step (32-code units, format/uniform.hpp), where the shape allows it.
  if (uniform_unit_aligned(view.cols, view.group_size)) {
    for (index_t r = 0; r < rows; ++r) {
      float sum = 0.0f;
      for (index_t u = 0; u < cols / uniform_unit_codes; ++u) {
        const index_t g = u * uniform_unit_codes / view.group_size;
        sum += view.scale(r, g) * uniform_unit_dot<Format::bits>(view.codes + r * view.code_words_per_row + u * Format::bits,
                                                                 x.data() + u * uniform_unit_codes,
                                                                 view.template zero<Format::bits>(r, g));
      }
      REQUIRE(std::fabs(double(sum) - ref[r]) <= 1e-5 * scale[r] + 1e-6);
    }
  }
}

template <class Format>
void check_shapes(std::uint64_t seed) {
  for (const auto& s : test::kOddShapes) check_all_paths<Format>(s[0], s[1], seed++);
}

}  // namespace

TEST_CASE("uniform: matvec paths agree with the reference: 4 bits") {
  check_shapes<Uniform<4, 128>>(1);
  check_shapes<Uniform<4, 64>>(10);
  check_shapes<Uniform<4, 32>>(20);
  check_shapes<Uniform<4, 100>>(30);  // groups straddle words: scalar path
  check_shapes<Uniform<4, whole_row>>(40);
  check_shapes<Uniform<4, 128, UniformMode::Symmetric>>(50);
}

TEST_CASE("uniform: matvec paths agree with the reference: 2 and 1 bits") {
  check_shapes<Uniform<2, 128>>(60);
  check_shapes<Uniform<2, 64>>(70);
  check_shapes<Uniform<2, whole_row, UniformMode::Symmetric>>(80);
  check_shapes<Uniform<1, 128>>(90);
  check_shapes<Uniform<1, 64>>(100);
}

TEST_CASE("uniform: matvec paths agree with the reference: 3, 5-8 bits") {
  check_shapes<Uniform<3, 128>>(110);
  check_shapes<Uniform<3, 64>>(120);
  check_shapes<Uniform<3, whole_row>>(130);
  check_shapes<Uniform<3, 128, UniformMode::Symmetric>>(140);
  check_shapes<Uniform<5, 64>>(150);
  check_shapes<Uniform<6, 128>>(160);
  check_shapes<Uniform<7, 64>>(170);
  check_shapes<Uniform<8, 128>>(180);
  check_shapes<Uniform<8, whole_row>>(190);
}

TEST_CASE("uniform: the fast paths are the ones this CPU build should take") {
#if defined(__AVX512F__) && defined(__AVX512BW__)
  CHECK(std::string(cpu::uniform_matvec_path<Uniform<4, 128>>()) == "avx512");
  CHECK(std::string(cpu::uniform_matvec_path<Uniform<2, 64>>()) == "avx512");
#if defined(__AVX512VBMI__)
  CHECK(std::string(cpu::uniform_matvec_path<Uniform<3, 128>>()) == "avx512");
#endif
#elif defined(__AVX2__)
  CHECK(std::string(cpu::uniform_matvec_path<Uniform<4, 128>>()) == "avx2");
#endif
  CHECK(std::string(cpu::uniform_matvec_path<Uniform<4, 100>>()) == "scalar");
}

TEST_CASE("uniform: matvec results do not depend on the thread count") {
  using Q = Quantizer<Uniform<3, 128>>;
  using Q4 = Quantizer<Uniform<4, 128>>;
  Rng rng(5);
  const index_t rows = 1003, cols = 777;
  const auto w = random_vector(rows * cols, rng, true);
  const auto x = random_vector(cols, rng, false);
  const auto p3 = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const auto p4 = Q4::quantize(MatrixView<const float>(w.data(), rows, cols));
  const int saved = max_threads();
  std::vector<float> one3(rows), two3(rows), one4(rows), two4(rows);
  set_num_threads(1);
  Q::matvec(p3, x.data(), one3.data());
  Q4::matvec(p4, x.data(), one4.data());
  set_num_threads(2);
  Q::matvec(p3, x.data(), two3.data());
  Q4::matvec(p4, x.data(), two4.data());
  set_num_threads(saved);
  CHECK(one3 == two3);
  CHECK(one4 == two4);
}

TEST_CASE("uniform: bad matvec input raises lowbit::Error") {
  UniformPacked<Uniform<4, 128>> empty;
  float x = 0, y = 0;
  CHECK_THROWS_AS(cpu::uniform_matvec(empty, &x, &y), lowbit::Error);
  CHECK_THROWS_AS(cpu::uniform_matvec_reference(empty, &x, &y), lowbit::Error);
  UniformPacked<Uniform<4, 128>> p(2, 3);
  CHECK_THROWS_AS(cpu::uniform_matvec(p, nullptr, &y), lowbit::Error);
}
