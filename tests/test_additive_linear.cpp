// AdditiveLinear: forward equals the reference reconstruction (one token and batched), backward's dX,
// codebook and scale gradients equal central finite differences of a scalar loss, and to_packed()
// yields a QuantizedLinear-compatible packed matrix with the same bytes.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/nn/additive_linear.hpp>
#include <lowbit/nn/quantized_linear.hpp>

using namespace lowbit;

namespace {

AdditiveCodes random_codes(const AdditiveShape& s, std::uint64_t seed) {
  Rng rng(seed);
  AdditiveCodes a(s);
  for (auto& c : a.codes) c = static_cast<std::uint32_t>(rng.below(static_cast<std::uint64_t>(s.codebook_size())));
  for (auto& v : a.codebooks) v = static_cast<float>(rng.normal() * 0.3);
  for (auto& v : a.scales) v = static_cast<float>(0.5 + rng.uniform());
  return a;
}

std::vector<float> gaussian(index_t n, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(rng.normal());
  return v;
}

// loss = Σ R ⊙ (X·Ŵᵀ) in double, through the reference reconstruction.
double loss_of(const AdditiveCodes& a, const std::vector<float>& X, const std::vector<float>& R, index_t n) {
  const index_t out = a.shape.rows, in = a.shape.cols;
  std::vector<float> W(static_cast<std::size_t>(out * in));
  additive_dequantize_reference(a, as_matrix(W, out, in));
  double loss = 0.0;
  for (index_t t = 0; t < n; ++t)
    for (index_t o = 0; o < out; ++o) {
      double y = 0.0;
      for (index_t c = 0; c < in; ++c) y += static_cast<double>(X[t * in + c]) * W[o * in + c];
      loss += y * R[t * out + o];
    }
  return loss;
}

}  // namespace

TEST_CASE("AdditiveLinear forward matches the reference for one token and for a batch") {
  const AdditiveShape s{20, 36, 2, 4, 8};  // 36 columns: last group padded
  const AdditiveCodes a = random_codes(s, 1);
  nn::AdditiveLinear layer(a);
  CHECK(layer.format() == "additive:2:4:8");
  const index_t n = 6;
  const auto X = gaussian(n * s.cols, 2);
  std::vector<float> Y(static_cast<std::size_t>(n * s.rows)), y1(static_cast<std::size_t>(s.rows));
  layer.forward(as_matrix(X, n, s.cols), as_matrix(Y, n, s.rows));
  layer.forward(MatrixView<const float>(X.data(), 1, s.cols), MatrixView<float>(y1.data(), 1, s.rows));
  std::vector<float> ref(static_cast<std::size_t>(s.rows));
  for (index_t t = 0; t < n; ++t) {
    additive_matvec_reference(a, X.data() + t * s.cols, ref.data());
    for (index_t o = 0; o < s.rows; ++o) CHECK(Y[t * s.rows + o] == doctest::Approx(ref[o]).epsilon(1e-4));
    if (t == 0)
      for (index_t o = 0; o < s.rows; ++o) CHECK(y1[o] == doctest::Approx(ref[o]).epsilon(1e-4));
  }
}

TEST_CASE("AdditiveLinear backward equals finite differences for dX, codebooks and scales") {
  const AdditiveShape s{10, 20, 2, 3, 4};
  const AdditiveCodes a = random_codes(s, 3);
  nn::AdditiveLinear layer(a);
  const index_t n = 5;
  const auto X = gaussian(n * s.cols, 4), R = gaussian(n * s.rows, 5);
  std::vector<float> dX(static_cast<std::size_t>(n * s.cols), 0.0f);
  layer.backward(as_matrix(X, n, s.cols), as_matrix(R, n, s.rows), as_matrix(dX, n, s.cols));
  auto params = layer.parameters();
  REQUIRE(params.size() == 2);
  const double h = 1e-3;
  // Codebook and scale gradients.
  for (int which = 0; which < 2; ++which) {
    const auto& p = params[static_cast<std::size_t>(which)];
    for (index_t i = 0; i < p.size; ++i) {
      AdditiveCodes plus = a, minus = a;
      auto& vp = which == 0 ? plus.codebooks : plus.scales;
      auto& vm = which == 0 ? minus.codebooks : minus.scales;
      vp[static_cast<std::size_t>(i)] += static_cast<float>(h);
      vm[static_cast<std::size_t>(i)] -= static_cast<float>(h);
      const double fd = (loss_of(plus, X, R, n) - loss_of(minus, X, R, n)) / (2 * h);
      INFO(p.name << "[" << i << "]");
      CHECK(p.grad[i] == doctest::Approx(fd).epsilon(2e-3).scale(1.0));
    }
  }
  // dX = dY·Ŵ: the loss is linear in X, so the derivative is exact.
  std::vector<float> W(static_cast<std::size_t>(s.rows * s.cols));
  additive_dequantize_reference(a, as_matrix(W, s.rows, s.cols));
  for (index_t t = 0; t < n; ++t)
    for (index_t c = 0; c < s.cols; ++c) {
      double ref = 0.0;
      for (index_t o = 0; o < s.rows; ++o) ref += static_cast<double>(R[t * s.rows + o]) * W[o * s.cols + c];
      CHECK(dX[t * s.cols + c] == doctest::Approx(ref).epsilon(1e-4));
    }
}

TEST_CASE("AdditiveLinear converts to QuantizedLinear<Additive<2,8,8>> with identical output") {
  const AdditiveShape s{32, 64, 2, 8, 8};
  nn::AdditiveLinear layer(random_codes(s, 6));
  using Q = Quantizer<Additive<2, 8, 8>>;
  nn::QuantizedLinear<Additive<2, 8, 8>> q(Q::pack(layer.codes()));
  CHECK(q.bytes() == layer.bytes());
  CHECK(q.format() == layer.format());
  const auto x = gaussian(64, 7);
  std::vector<float> y(32), ref(32);
  q.forward(MatrixView<const float>(x.data(), 1, 64), MatrixView<float>(y.data(), 1, 32));
  additive_matvec_reference(q.packed().unpack(), x.data(), ref.data());
  // One token takes the AVX-512 int16-table kernel where available: each of the 16 lookups per row is
  // within Δ/2 = max|lut|/65534, so compare against a bound of that size rather than fp32 rounding.
  double max_abs = 0.0;
  for (float v : ref) max_abs = std::max<double>(max_abs, std::abs(v));
  for (int o = 0; o < 32; ++o) CHECK(std::abs(y[o] - ref[o]) <= 2e-3 * (max_abs + 1.0));
}
