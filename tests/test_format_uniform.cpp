// Uniform<Bits, GroupSize>: the per-group arithmetic against hand-computed values, the packed layout
// and its byte count, RTN error bounded per bit width (per element by half a step, in Frobenius norm by
// the uniform-noise model) on Gaussian and Student-t matrices, the exact quantize → dequantize →
// quantize round trip, bad input, and QuantizedLinear against a dense product of the dequantized weights.
#include <doctest/doctest.h>

#include <cmath>
#include <lowbit/core/rng.hpp>
#include <lowbit/format/uniform.hpp>
#include <lowbit/nn/quantized_linear.hpp>
#include <lowbit/quantizer.hpp>
#include <limits>
#include <type_traits>
#include <vector>

using namespace lowbit;

// The views Quantizer::quantize and dequantize take: a mutable view converts to a view of const
// elements, never back, and a const view has no conversion operator of its own (core/tensor.hpp; an
// operator converting a type to itself drew nvcc warning #554).
static_assert(std::is_convertible_v<MatrixView<float>, MatrixView<const float>>);
static_assert(std::is_convertible_v<MatrixView<float>, TensorView<const float, 2>>);
static_assert(std::is_convertible_v<TensorView<float, 3>, TensorView<const float, 3>>);
static_assert(!std::is_convertible_v<MatrixView<const float>, MatrixView<float>>);
static_assert(!std::is_convertible_v<TensorView<const float, 3>, TensorView<float, 3>>);
static_assert(!std::is_convertible_v<MatrixView<float>, MatrixView<const double>>);
static_assert(std::is_copy_constructible_v<MatrixView<const float>>);

namespace {

std::vector<float> gaussian(index_t n, std::uint64_t seed, float sigma = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = sigma * static_cast<float>(rng.normal());
  return v;
}

// Student-t with `dof` degrees of freedom: N(0,1) / sqrt(χ²_dof / dof).
std::vector<float> student_t(index_t n, std::uint64_t seed, int dof) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) {
    double chi2 = 0;
    for (int k = 0; k < dof; ++k) {
      const double z = rng.normal();
      chi2 += z * z;
    }
    x = static_cast<float>(rng.normal() / std::sqrt(chi2 / dof));
  }
  return v;
}

template <class Format>
std::vector<float> dequantized(const UniformPacked<Format>& p) {
  std::vector<float> out(static_cast<std::size_t>(p.rows() * p.cols()));
  Quantizer<Format>::dequantize(p, MatrixView<float>(out.data(), p.rows(), p.cols()));
  return out;
}

double relative_frobenius(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(a[i]) * a[i];
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("uniform: group arithmetic matches hand-computed values") {
  // [-1, 2] at 2 bits: scale (2 - -1)/3 = 1 (exact in fp16), zero round(1/1) = 1.
  auto p = uniform_fit(-1.0f, 2.0f, 2, false);
  CHECK(to_float(p.scale) == 1.0f);
  CHECK(p.zero == 1u);
  CHECK(uniform_encode(-1.0f, p, 3) == 0u);
  CHECK(uniform_encode(0.4f, p, 3) == 1u);
  CHECK(uniform_encode(0.5f, p, 3) == 2u);  // half away from zero
  CHECK(uniform_encode(-0.5f, p, 3) == 0u);
  CHECK(uniform_encode(2.0f, p, 3) == 3u);
  CHECK(uniform_encode(50.0f, p, 3) == 3u);  // clamped
  CHECK(uniform_encode(-50.0f, p, 3) == 0u);
  CHECK(uniform_decode(3u, p) == 2.0f);
  CHECK(uniform_decode(0u, p) == -1.0f);

  // A range not containing 0 is widened to contain it: [3, 4] at 4 bits -> scale 4/15 rounded down.
  p = uniform_fit(3.0f, 4.0f, 4, false);
  CHECK(p.zero == 0u);
  const float s = to_float(p.scale);
  CHECK(s <= 4.0f / 15.0f);
  CHECK(half_bits_to_float(static_cast<std::uint16_t>(p.scale.bits + 1)) > 4.0f / 15.0f);  // the largest such fp16
  CHECK(uniform_encode(4.0f, p, 15) == 15u);

  // Symmetric 3 bits: zero 4, scale max|w| / 3.
  p = uniform_fit(-0.75f, 0.3f, 3, true);
  CHECK(p.zero == 4u);
  CHECK(to_float(p.scale) == 0.25f);
  CHECK(uniform_encode(-0.75f, p, 7) == 1u);
  CHECK(uniform_decode(7u, p) == 0.75f);

  // All-zero group: smallest positive scale, everything decodes to 0.
  p = uniform_fit(0.0f, 0.0f, 4, false);
  CHECK(p.scale.bits == 1);
  CHECK(uniform_decode(uniform_encode(0.0f, p, 15), p) == 0.0f);

  // Huge ranges saturate the fp16 scale at 65504 instead of overflowing to inf.
  p = uniform_fit(-1e9f, 1e9f, 2, false);
  CHECK(to_float(p.scale) == 65504.0f);

  const float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const std::uint32_t word = 0x3u | (0x1u << 4) | (0xfu << 8) | (0x2u << 28);  // codes 3,1,15,0,0,0,0,2
  // ŵ = (q − 2)·0.5: 0.5, −0.5, 6.5, −1, −1, −1, −1, 0
  CHECK(uniform_word_dot<4>(word, x, 8, 0.5f, 2u) == 0.5f * 1 - 0.5f * 2 + 6.5f * 3 - 4 - 5 - 6 - 7 + 0);
  CHECK(uniform_word_dot<4>(word, x, 3, 0.5f, 2u) == 0.5f * 1 - 0.5f * 2 + 6.5f * 3);
  const std::uint32_t word2 = 0x1u | (0x3u << 30);  // 2-bit codes 1, 0 x14, 3
  float x16[16];
  for (int j = 0; j < 16; ++j) x16[j] = 1.0f;
  CHECK(uniform_word_dot<2>(word2, x16, 16, 1.0f, 1u) == 0 - 14 + 2);
}

TEST_CASE("uniform: policy constants, names and the packed layout") {
  using F4 = Uniform<4, 128>;
  static_assert(F4::bits == 4 && F4::group_size == 128 && F4::max_code == 15 && !F4::symmetric);
  CHECK(Quantizer<F4>::name() == "uniform:4:128");
  CHECK(Quantizer<Uniform<3, whole_row>>::name() == "uniform:3:row");
  CHECK(Quantizer<Uniform<4, 64, UniformMode::Symmetric>>::name() == "uniform:4:64:sym");

  // 4096x4096 at 4 bits, g128: per row 512 code words, 32 fp16 scales, 32 4-bit zeros = 4 words.
  UniformPacked<F4> p4(4096, 4096);
  CHECK(p4.bytes() == 4096u * (512 * 4 + 32 * 2 + 4 * 4));
  CHECK(Quantizer<F4>::bits_per_weight(p4) == doctest::Approx(4.15625));
  UniformPacked<Uniform<2, 128>> p2(4096, 4096);
  CHECK(Quantizer<Uniform<2, 128>>::bits_per_weight(p2) == doctest::Approx(2.140625));
  UniformPacked<Uniform<2, 128, UniformMode::Symmetric>> ps(4096, 4096);  // no zeros stored
  CHECK(ps.bytes() == 4096u * (256 * 4 + 32 * 2));

  // Odd shape: 300 columns at 3 bits, g128 -> groups of 128, 128, 44; rows start on a word boundary.
  UniformPacked<Uniform<3, 128>> p3(5, 300);
  CHECK(p3.groups_per_row() == 3);
  CHECK(p3.group_end(2) - p3.group_begin(2) == 44);
  CHECK(p3.code_words_per_row() == (300 * 3 + 31) / 32);
  CHECK(p3.zero_words_per_row() == 1);
  Rng rng(3);
  std::vector<std::uint32_t> expect(5 * 300);
  for (index_t r = 0; r < 5; ++r)
    for (index_t c = 0; c < 300; ++c) {
      p3.set_code(r, c, 7);  // overwritten next: set_code must clear old bits, including straddling ones
      expect[r * 300 + c] = static_cast<std::uint32_t>(rng.below(8));
      p3.set_code(r, c, expect[r * 300 + c]);
    }
  for (index_t r = 0; r < 5; ++r) {
    // the row's words are exactly the documented bit stream of its codes
    auto words = pack_codes(expect.data() + r * 300, 300, 3);
    CHECK(std::equal(words.begin(), words.end(), p3.row_codes(r)));
  }
  p3.set_params(1, 2, UniformGroupParams{to_half(0.5f), 6});
  p3.set_params(1, 1, UniformGroupParams{to_half(0.25f), 7});
  CHECK(p3.zero(1, 2) == 6u);
  CHECK(p3.zero(1, 1) == 7u);
  CHECK(p3.scale(1, 2) == 0.5f);
  CHECK(p3.weight(1, 299) == uniform_decode(expect[300 + 299], 0.5f, 6));
}

TEST_CASE("uniform: RTN error is bounded per bit width on Gaussian and heavy-tailed matrices") {
  const index_t rows = 64, cols = 1000;  // 1000 = 7·128 + 104: a short last group
  const auto gauss = gaussian(rows * cols, 11);
  const auto heavy = student_t(rows * cols, 12, 3);
  double previous_gauss = 1e9;
  auto run = [&]<int Bits>(std::integral_constant<int, Bits>) {
    using F = Uniform<Bits, 128>;
    using Q = Quantizer<F>;
    for (const auto* w : {&gauss, &heavy}) {
      const auto packed = Q::quantize(MatrixView<const float>(w->data(), rows, cols));
      const auto w_hat = dequantized(packed);
      // per element: within half a step (plus the fp16 round-down slack at the clamped top code)
      for (index_t r = 0; r < rows; ++r)
        for (index_t g = 0; g < packed.groups_per_row(); ++g) {
          const double s = packed.scale(r, g);
          for (index_t c = packed.group_begin(g); c < packed.group_end(g); ++c) {
            const double err = std::fabs(double((*w)[r * cols + c]) - w_hat[r * cols + c]);
            REQUIRE(err <= s * (0.5 + F::max_code * 0x1p-10) + 1e-6);
          }
        }
      const double rel = relative_frobenius(*w, w_hat);
      // Uniform noise model: error ≈ step/√12 with step ≈ (group range)/(2^b − 1). A Gaussian group of 128
      // spans about ±2.6σ, so rel ≈ 5.2/((2^b − 1)·√12) = 1.5/(2^b − 1); allow 20% (2-bit: the model is loose).
      const double model = 1.5 / F::max_code;
      if (w == &gauss) {
        CHECK(rel < 1.2 * model + (Bits == 1 ? 0.5 : 0.0));
        CHECK(rel > 0.5 * model * (Bits == 1 ? 0.3 : 1.0));
        CHECK(rel < previous_gauss);  // more bits, less error
        previous_gauss = rel;
      } else {
        // heavy tails stretch the range: error relative to the norm is larger but still bounded
        CHECK(rel < 3.0 * model + (Bits == 1 ? 0.5 : 0.0));
      }
      MESSAGE("uniform:", Bits, ":128 ", std::string(w == &gauss ? "gaussian" : "student-t(3)"), " rel error ", rel,
              " bits/weight ", Q::bits_per_weight(packed));
    }
  };
  run(std::integral_constant<int, 1>{});
  run(std::integral_constant<int, 2>{});
  run(std::integral_constant<int, 3>{});
  run(std::integral_constant<int, 4>{});
  run(std::integral_constant<int, 8>{});

  // Smaller groups follow heavy tails better: g64 beats one group per row.
  using Small = Quantizer<Uniform<3, 64>>;
  using Row = Quantizer<Uniform<3, whole_row>>;
  const auto e_small = relative_frobenius(heavy, dequantized(Small::quantize(MatrixView<const float>(heavy.data(), rows, cols))));
  const auto e_row = relative_frobenius(heavy, dequantized(Row::quantize(MatrixView<const float>(heavy.data(), rows, cols))));
  CHECK(e_small < e_row);
}

TEST_CASE("uniform: quantize -> dequantize -> quantize reproduces the packed matrix exactly") {
  auto check = [&]<class F>(F, index_t rows, index_t cols, std::uint64_t seed) {
    using Q = Quantizer<F>;
    const auto w = seed % 2 ? gaussian(rows * cols, seed, 0.02f) : student_t(rows * cols, seed, 2);
    const auto first = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
    const auto w_hat = dequantized(first);
    const auto second = Q::quantize(MatrixView<const float>(w_hat.data(), rows, cols));
    CHECK_MESSAGE(first == second, Q::name(), " ", rows, "x", cols);
    CHECK(dequantized(second) == w_hat);
  };
  check(Uniform<1, 64>{}, 9, 200, 1);
  check(Uniform<2, 128>{}, 17, 333, 2);
  check(Uniform<3, 128>{}, 13, 1000, 3);
  check(Uniform<4, 128>{}, 7, 129, 4);
  check(Uniform<4, 100>{}, 7, 250, 5);
  check(Uniform<5, 32>{}, 5, 77, 6);
  check(Uniform<8, whole_row>{}, 5, 301, 7);
  check(Uniform<2, 64, UniformMode::Symmetric>{}, 11, 190, 8);
  check(Uniform<4, whole_row, UniformMode::Symmetric>{}, 11, 190, 9);
}

TEST_CASE("uniform: bad input raises lowbit::Error") {
  using Q = Quantizer<Uniform<4, 128>>;
  std::vector<float> w = gaussian(4 * 10, 5);
  auto view = MatrixView<const float>(w.data(), 4, 10);
  w[13] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_AS(Q::quantize(view), lowbit::Error);
  w[13] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(Q::quantize(view), lowbit::Error);
  w[13] = -std::numeric_limits<float>::infinity();
  CHECK_THROWS_WITH_AS(Q::quantize(view), doctest::Contains("weight (1, 3)"), lowbit::Error);
  w[13] = 0.5f;
  CHECK_THROWS_AS(Q::quantize(MatrixView<const float>(w.data(), 0, 10)), lowbit::Error);
  CHECK_THROWS_AS(Q::quantize(MatrixView<const float>(w.data(), 4, 0)), lowbit::Error);
  const auto packed = Q::quantize(view);
  std::vector<float> out(5 * 10);
  CHECK_THROWS_AS(Q::dequantize(packed, MatrixView<float>(out.data(), 5, 10)), lowbit::Error);
  CHECK_THROWS_AS(Q::dequantize(packed, MatrixView<float>(out.data(), 4, 9)), lowbit::Error);
  using P4 = UniformPacked<Uniform<4, 128>>;
  CHECK_THROWS_AS(P4(0, 5), lowbit::Error);
  auto p = packed;
  CHECK_THROWS_AS(p.set_code(0, 10, 1), lowbit::Error);
  CHECK_THROWS_AS(p.set_code(0, 0, 16), lowbit::Error);
  CHECK_THROWS_AS(p.set_params(0, 1, UniformGroupParams{to_half(1.0f), 0}), lowbit::Error);
  CHECK_THROWS_AS(p.set_params(0, 0, UniformGroupParams{to_half(1.0f), 16}), lowbit::Error);

  nn::QuantizedLinear<Uniform<4, 128>> layer(packed);
  std::vector<float> x(3 * 9), y(3 * 4);
  CHECK_THROWS_AS(layer.forward(MatrixView<const float>(x.data(), 3, 9), MatrixView<float>(y.data(), 3, 4)),
                  lowbit::Error);
}

TEST_CASE("uniform: QuantizedLinear: forward (one token and batches) and backward equal the dense products") {
  using F = Uniform<3, 64>;
  const index_t out = 45, in = 200, tokens = 7;
  const auto w = gaussian(out * in, 21, 0.05f);
  nn::QuantizedLinear<F> layer(Quantizer<F>::quantize(MatrixView<const float>(w.data(), out, in)));
  CHECK(layer.in_features() == in);
  CHECK(layer.out_features() == out);
  CHECK(layer.format() == "uniform:3:64");
  CHECK(layer.bytes() == layer.packed().bytes());
  std::vector<float> w_hat(out * in);
  layer.dequantize(MatrixView<float>(w_hat.data(), out, in));
  CHECK(w_hat == dequantized(layer.packed()));

  const auto x = gaussian(tokens * in, 22);
  const auto dy = gaussian(tokens * out, 23);
  for (index_t n : {index_t(1), tokens}) {
    std::vector<float> y(n * out);
    layer.forward(MatrixView<const float>(x.data(), n, in), MatrixView<float>(y.data(), n, out));
    std::vector<float> dx(n * in, 1.0f);  // backward accumulates
    layer.backward(MatrixView<const float>(x.data(), n, in), MatrixView<const float>(dy.data(), n, out),
                   MatrixView<float>(dx.data(), n, in));
    for (index_t t = 0; t < n; ++t) {
      for (index_t o = 0; o < out; ++o) {
        double ref = 0, scale = 0;
        for (index_t i = 0; i < in; ++i) {
          ref += double(w_hat[o * in + i]) * x[t * in + i];
          scale += std::fabs(double(w_hat[o * in + i]) * x[t * in + i]);
        }
        REQUIRE(std::fabs(y[t * out + o] - ref) <= 1e-5 * scale + 1e-7);
      }
      for (index_t i = 0; i < in; ++i) {
        double ref = 1.0, scale = 1.0;
        for (index_t o = 0; o < out; ++o) {
          ref += double(dy[t * out + o]) * w_hat[o * in + i];
          scale += std::fabs(double(dy[t * out + o]) * w_hat[o * in + i]);
        }
        REQUIRE(std::fabs(dx[t * in + i] - ref) <= 1e-5 * scale);
      }
    }
  }
  CHECK(layer.parameters().empty());
}

TEST_CASE("uniform: QuantizedLinear decodes through the int8-activation kernel when asked") {
  using F = Uniform<4, 128>;
  const index_t out = 33, in = 512;
  const auto w = gaussian(out * in, 31, 0.05f);
  nn::QuantizedLinear<F> layer(Quantizer<F>::quantize(MatrixView<const float>(w.data(), out, in)));
  CHECK(layer.activations() == "f32");
  const auto x = gaussian(in, 32);
  std::vector<float> exact(out), q8(out), y(out);
  Quantizer<F>::matvec(layer.packed(), x.data(), exact.data());
  Quantizer<F>::matvec<Int8Activations>(layer.packed(), x.data(), q8.data());
  // Where the build has an int8 kernel the two paths are distinguishable, so the routing below is
  // really tested; without one (LOWBIT_NATIVE=OFF) Int8Activations is documented to be the exact path.
  if constexpr (kernels::cpu::uniform_q8_supported<F>())
    CHECK(q8 != exact);
  else
    CHECK(q8 == exact);
  layer.forward(MatrixView<const float>(x.data(), 1, in), MatrixView<float>(y.data(), 1, out));
  CHECK(y == exact);
  layer.set_activations<Int8Activations>();
  layer.forward(MatrixView<const float>(x.data(), 1, in), MatrixView<float>(y.data(), 1, out));
  CHECK(y == q8);
  auto moved = std::move(layer);
  CHECK(moved.activations() == "int8");
}
