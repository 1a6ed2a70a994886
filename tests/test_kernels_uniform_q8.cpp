// The int8-activation Uniform matvec (kernels/cpu/uniform_matvec_q8.hpp): activation quantization
// against its definition, the AVX-512 VNNI kernel against the scalar reference of the same int8
// arithmetic on odd shapes (rows not a multiple of anything, short last groups and blocks, whole-row
// groups, symmetric mode, every Bits 1..8), its error against the exact fp32 matvec within the bound the
// activation rounding implies, the fallback of formats without an int8 kernel, and thread independence.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <lowbit/core/parallel.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/kernels/cpu/uniform_matvec.hpp>
#include <lowbit/kernels/cpu/uniform_matvec_q8.hpp>
#include <lowbit/quantizer.hpp>
#include <string>
#include <vector>

#include "test_kernels_util.hpp"

using namespace lowbit;
namespace cpu = lowbit::kernels::cpu;
using lowbit::test::random_vector;

namespace {

// Per-element bound of the activation rounding: x8 = round(fl(x·fl(127/m))), d = fl(m/127), so
// d·x8 − x = d·(rounding ≤ 1/2) + x·((1+ε)³ − 1) with ε = 2^−24 and |x| ≤ m = 127·d·(1 + ε):
// |d·x8 − x| ≤ d·(0.5 + 127·3.01·2^−24) < 0.50003·d.
constexpr double kHalfStep = 0.50003;

template <class Format>
void check_q8(index_t rows, index_t cols, std::uint64_t seed) {
  using Q = Quantizer<Format>;
  Rng rng(seed);
  const auto w = random_vector(rows * cols, rng, seed % 2 == 1);
  auto x = random_vector(cols, rng, seed % 3 == 2);
  if (cols > 70) std::fill(x.begin() + 3, x.begin() + 67, 0.0f);  // an all-zero 64-value stretch
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const std::string what = Q::name() + " " + std::to_string(rows) + "x" + std::to_string(cols);

  cpu::Q8Activations xa;
  const index_t block = cpu::uniform_q8_block<Format>(cols);
  cpu::quantize_activations_q8(x.data(), cols, block, xa);
  std::vector<float> ref(rows), got(rows), exact(rows);
  cpu::uniform_matvec_q8_reference(packed, xa, ref.data());
  cpu::uniform_matvec_reference(packed, x.data(), exact.data());

  // Scales of the two comparisons, per row. fp: Σ over blocks of |f|·(|dot| + |zero·Σx8|), which bounds
  // every partial sum either order forms. The kernels' integer sums are exact (|lane| < 2^24, so also
  // their conversion to fp32); what differs is fp32 rounding of the products f·dot and of a sum over at
  // most (16 lanes + blocks) ≤ 100 terms here: ≤ 100·2^−24 ≈ 6e-6 of that scale, so 1e-5 of it.
  // act: Σ_c |ŵ_c|·d_block(c)/2, the activation rounding.
  std::vector<double> fp_scale(rows, 0.0), act_bound(rows, 0.0), prod_scale(rows, 0.0);
  const index_t gs = packed.group_size();
  for (index_t r = 0; r < rows; ++r) {
    for (index_t c = 0; c < cols;) {
      const index_t g = c / gs, b = c / block;
      const index_t end = std::min({cols, (g + 1) * gs, (b + 1) * block});
      double dot = 0.0, sx = 0.0;
      for (index_t k = c; k < end; ++k) {
        dot += double(packed.code(r, k)) * xa.x8[k];
        sx += xa.x8[k];
      }
      const double f = double(packed.scale(r, g)) * xa.scale[b];
      fp_scale[r] += std::fabs(f) * (std::fabs(dot) + std::fabs(double(packed.zero(r, g)) * sx));
      c = end;
    }
    for (index_t c = 0; c < cols; ++c) {
      act_bound[r] += std::fabs(double(packed.weight(r, c))) * kHalfStep * xa.scale[c / block];
      prod_scale[r] += std::fabs(double(packed.weight(r, c)) * x[c]);
    }
  }
  // The reference (double accumulation) differs from the exact result only by the activation rounding,
  // fp32 products f = scale·d and its final rounding to fp32.
  for (index_t r = 0; r < rows; ++r) {
    const double err = std::fabs(double(ref[r]) - double(exact[r]));
    if (err > act_bound[r] + 1e-6 * (fp_scale[r] + prod_scale[r]) + 1e-30) {
      FAIL_CHECK(what, " row ", r, ": int8 reference ", ref[r], " vs exact ", exact[r], ", bound ", act_bound[r]);
      break;
    }
  }
  // The bound is not vacuous: it is within two orders of magnitude of the error seen on the whole matrix.
  double err_sum = 0.0, bound_sum = 0.0;
  for (index_t r = 0; r < rows; ++r) {
    err_sum += std::fabs(double(ref[r]) - double(exact[r]));
    bound_sum += act_bound[r];
  }
  if (rows * cols >= 4096) CHECK_MESSAGE(err_sum * 200.0 > bound_sum, what);

  auto expect_same = [&](const std::string& path) {
    for (index_t r = 0; r < rows; ++r) {
      if (std::fabs(double(got[r]) - double(ref[r])) > 1e-5 * fp_scale[r] + 1e-30) {
        FAIL_CHECK(what, " path ", path, " row ", r, ": ", got[r], " vs int8 reference ", ref[r]);
        return;
      }
    }
  };
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  if constexpr (cpu::uniform_q8_avx512_supports<Format>()) {
    std::fill(got.begin(), got.end(), -1.0f);
    cpu::uniform_matvec_q8_avx512(packed, xa, got.data());
    expect_same("avx512-vnni (quantized x)");
    std::fill(got.begin(), got.end(), -1.0f);
    cpu::uniform_matvec_q8_avx512(packed, x.data(), got.data());
    expect_same("avx512-vnni");
  }
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  if constexpr (cpu::uniform_q8_avx2_supports<Format>()) {
    std::fill(got.begin(), got.end(), -1.0f);
    cpu::uniform_matvec_q8_avx2<Format, false>(packed, xa, got.data());
    expect_same("avx2 (vpmaddubsw)");
    if constexpr (cpu::kQ8HaveAvxVnni) {
      std::fill(got.begin(), got.end(), -1.0f);
      cpu::uniform_matvec_q8_avx2<Format, cpu::kQ8HaveAvxVnni>(packed, x.data(), got.data());
      expect_same("avx2-vnni");
    }
  }
#endif
  std::fill(got.begin(), got.end(), -1.0f);
  Q::template matvec<Int8Activations>(packed, x.data(), got.data());
  if (cpu::uniform_q8_supported<Format>()) {
    expect_same(cpu::uniform_matvec_q8_path<Format>());
  } else {
    // Fallback: exactly the exact path.
    std::vector<float> fp32(rows);
    Q::matvec(packed, x.data(), fp32.data());
    CHECK_MESSAGE(got == fp32, what, " fallback differs from the exact path");
  }
  std::fill(got.begin(), got.end(), -1.0f);
  std::vector<float> fp32(rows);
  Q::template matvec<F32Activations>(packed, x.data(), got.data());
  Q::matvec(packed, x.data(), fp32.data());
  CHECK(got == fp32);
}

template <class Format>
void check_shapes(std::uint64_t seed) {
  const index_t q8_shapes[][2] = {{19, 64}, {23, 320}, {2, 640}};  // block-boundary cases of the int8 path
  for (const auto& s : test::kOddShapes) check_q8<Format>(s[0], s[1], seed++);
  for (const auto& s : q8_shapes) check_q8<Format>(s[0], s[1], seed++);
}

}  // namespace

TEST_CASE("uniform q8: activation quantization matches its definition") {
  Rng rng(3);
  for (index_t cols : {1, 5, 63, 64, 65, 300, 1000}) {
    for (index_t block : {32, 64, 100, 256}) {
      auto x = random_vector(cols, rng, true);
      if (cols > 40) std::fill(x.begin(), x.begin() + 40, 0.0f);
      cpu::Q8Activations xa;
      cpu::quantize_activations_q8(x.data(), cols, block, xa);
      REQUIRE(xa.blocks == (cols + block - 1) / block);
      REQUIRE(xa.x8.size() % 64 == 0);
      REQUIRE(static_cast<index_t>(xa.x8.size()) >= cols);
      for (std::size_t c = static_cast<std::size_t>(cols); c < xa.x8.size(); ++c) REQUIRE(xa.x8[c] == 0);
      for (index_t b = 0; b < xa.blocks; ++b) {
        const index_t c0 = b * block, c1 = std::min(cols, c0 + block);
        double amax = 0.0;
        std::int32_t sum = 0;
        bool hit127 = false;
        for (index_t c = c0; c < c1; ++c) {
          amax = std::max(amax, std::fabs(double(x[c])));
          sum += xa.x8[c];
          hit127 = hit127 || std::abs(int(xa.x8[c])) == 127;
        }
        CHECK(xa.sum[b] == sum);
        CHECK(std::fabs(xa.scale[b] - amax / 127.0) <= 1e-6 * amax / 127.0);
        if (amax == 0.0) {
          CHECK(xa.scale[b] == 0.0f);
          continue;
        }
        CHECK(hit127);  // the largest |x| maps to ±127
        for (index_t c = c0; c < c1; ++c) {
          REQUIRE(std::abs(int(xa.x8[c])) <= 127);
          REQUIRE(std::fabs(double(xa.scale[b]) * xa.x8[c] - x[c]) <= kHalfStep * xa.scale[b]);
        }
      }
    }
  }
  // subnormal blocks (127/max|x| overflows) and non-finite input
  cpu::Q8Activations xa;
  const std::vector<float> tiny = {1e-40f, -3e-41f, 0.0f, 5e-41f};
  cpu::quantize_activations_q8(tiny.data(), 4, 4, xa);
  CHECK(xa.x8[0] == 127);
  CHECK(std::fabs(double(xa.scale[0]) * xa.x8[1] - tiny[1]) <= kHalfStep * xa.scale[0] + 1e-45);
  const std::vector<float> bad = {1.0f, std::numeric_limits<float>::quiet_NaN(), 2.0f, 3.0f};
  cpu::quantize_activations_q8(bad.data(), 4, 2, xa);
  CHECK(std::isnan(xa.scale[0]));
  CHECK(std::isfinite(xa.scale[1]));
  std::vector<float> x(4);
  CHECK_THROWS_AS(cpu::quantize_activations_q8(x.data(), 0, 64, xa), lowbit::Error);
  CHECK_THROWS_AS(cpu::quantize_activations_q8(x.data(), 4, 0, xa), lowbit::Error);
}

TEST_CASE("uniform q8: the int8 kernels agree with the int8 reference and stay within the rounding bound") {
  check_shapes<Uniform<4, 128>>(1);
  check_shapes<Uniform<4, 64>>(20);
  check_shapes<Uniform<4, 32>>(40);  // blocks of 32: several per 64-byte chunk
  check_shapes<Uniform<4, 256>>(60);
  check_shapes<Uniform<4, 512>>(80);
  check_shapes<Uniform<4, whole_row>>(100);
  check_shapes<Uniform<4, 128, UniformMode::Symmetric>>(120);
  check_shapes<Uniform<2, 128>>(140);
  check_shapes<Uniform<2, 64>>(160);
  check_shapes<Uniform<2, 32>>(180);
  check_shapes<Uniform<2, whole_row, UniformMode::Symmetric>>(200);
  check_shapes<Uniform<3, 128>>(220);
  check_shapes<Uniform<3, 64>>(240);
  check_shapes<Uniform<3, 32>>(260);  // no int8 kernel for groups of 32 at 3 bits: exact fallback
  check_shapes<Uniform<3, 128, UniformMode::Symmetric>>(280);
  check_shapes<Uniform<8, 128>>(300);
  check_shapes<Uniform<8, 64>>(320);
  check_shapes<Uniform<8, 32>>(340);  // exact fallback
  check_shapes<Uniform<8, whole_row>>(360);
  check_shapes<Uniform<8, whole_row, UniformMode::Symmetric>>(370);  // token tables and heads
  check_q8<Uniform<8, whole_row, UniformMode::Symmetric>>(61, 576, 375);  // SmolLM2's rows: blocks 256, 256, 64
  check_q8<Uniform<4, 128>>(37, 576, 376);                               // 5 groups, the last one 64 wide
  check_q8<Uniform<4, 128>>(11, 1536, 377);                              // 12 groups: two 8-group factor steps
  // a last 32-byte chunk at most half used (128-bit tail step): 576 = 4.5 chunks of 128 2-bit codes,
  // 544 = 8.5 chunks of 64 4-bit codes, 1152 = 4.5 chunks of 256 1-bit codes
  check_q8<Uniform<2, 128>>(37, 576, 378);
  check_q8<Uniform<2, 64, UniformMode::Symmetric>>(9, 576, 379);  // groups < chunk: the full-width path on the same rows
  check_q8<Uniform<4, 128>>(13, 544, 381);
  check_q8<Uniform<1, 64>>(7, 1152, 382);
  check_shapes<Uniform<1, 64>>(380);
  check_shapes<Uniform<1, 32>>(390);
  check_shapes<Uniform<5, 128>>(400);
  check_shapes<Uniform<6, 64>>(420);
  check_shapes<Uniform<7, 128>>(440);
  check_shapes<Uniform<4, 100>>(460);  // groups that are not whole 64-code units: exact fallback
  check_shapes<Uniform<4, 320>>(480);  // blocks of 256 would straddle groups: exact fallback
}

TEST_CASE("uniform q8: paths this CPU build takes") {
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__AVX512VBMI__)
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<4, 128>>()) == "avx512-vnni");
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<2, 128>>()) == "avx512-vnni");
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<3, 64>>()) == "avx512-vnni");
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<4, 32>>()) == "avx512-vnni");
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<3, 32>>()) == "exact");
#elif defined(__AVX2__) && defined(__FMA__)
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<4, 128>>()) == (cpu::kQ8HaveAvxVnni ? "avx2-vnni" : "avx2"));
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<3, 128>>()) == "exact");
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<8, whole_row, UniformMode::Symmetric>>()) ==
        (cpu::kQ8HaveAvxVnni ? "avx2-vnni" : "avx2"));
#endif
  CHECK(std::string(cpu::uniform_matvec_q8_path<Uniform<4, 100>>()) == "exact");
  CHECK(!cpu::uniform_q8_supported<Uniform<4, 320>>());
}

TEST_CASE("uniform q8: results do not depend on the thread count") {
  using Q = Quantizer<Uniform<4, 128>>;
  using Q2 = Quantizer<Uniform<2, 64>>;
  Rng rng(9);
  const index_t rows = 1003, cols = 777;
  const auto w = random_vector(rows * cols, rng, true);
  const auto x = random_vector(cols, rng, false);
  const auto p4 = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  const auto p2 = Q2::quantize(MatrixView<const float>(w.data(), rows, cols));
  const int saved = max_threads();
  std::vector<float> one4(rows), two4(rows), one2(rows), two2(rows);
  set_num_threads(1);
  Q::template matvec<Int8Activations>(p4, x.data(), one4.data());
  Q2::template matvec<Int8Activations>(p2, x.data(), one2.data());
  set_num_threads(2);
  Q::template matvec<Int8Activations>(p4, x.data(), two4.data());
  Q2::template matvec<Int8Activations>(p2, x.data(), two2.data());
  set_num_threads(saved);
  CHECK(one4 == two4);
  CHECK(one2 == two2);
}

TEST_CASE("uniform q8: bad input raises lowbit::Error") {
  UniformPacked<Uniform<4, 128>> empty;
  float x = 0, y = 0;
  CHECK_THROWS_AS(cpu::uniform_matvec_q8(empty, &x, &y), lowbit::Error);
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_reference(empty, &x, &y), lowbit::Error);
  UniformPacked<Uniform<4, 128>> p(2, 300);
  std::vector<float> xs(300, 1.0f), ys(2);
  CHECK_THROWS_AS(cpu::uniform_matvec_q8(p, nullptr, ys.data()), lowbit::Error);
  cpu::Q8Activations xa;
  cpu::quantize_activations_q8(xs.data(), 299, 128, xa);  // wrong column count
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_reference(p, xa, ys.data()), lowbit::Error);
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_avx512(p, xa, ys.data()), lowbit::Error);
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_avx2(p, xa, ys.data()), lowbit::Error);
#endif
  cpu::quantize_activations_q8(xs.data(), 300, 64, xa);  // wrong block
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX512)
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_avx512(p, xa, ys.data()), lowbit::Error);
#endif
#if defined(LOWBIT_HAVE_UNIFORM_Q8_AVX2)
  CHECK_THROWS_AS(cpu::uniform_matvec_q8_avx2(p, xa, ys.data()), lowbit::Error);
#endif
}
