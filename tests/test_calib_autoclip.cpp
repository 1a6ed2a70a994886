// AutoClip against its definition evaluated the slow way, token by token: the error of a (row, group)
// is the mean over tokens of (x_g·w − x_g·Q(clamp(w)))². The chosen clip is never worse than no clip,
// it is the grid's argmin, and composing it with GPTQ quantizes the clamped weights.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "lowbit/calib/autoclip.hpp"
#include "lowbit/calib/gptq.hpp"
#include "lowbit/calib/hessian.hpp"
#include "lowbit/core/rng.hpp"
#include "test_calib_formats.hpp"

using namespace lowbit;

namespace {

struct Problem {
  index_t rows = 24, cols = 256, tokens = 512;
  std::vector<float> W, X;
};

Problem make_problem(std::uint64_t seed) {
  Problem p;
  Rng rng(seed);
  p.W.resize(static_cast<std::size_t>(p.rows * p.cols));
  for (auto& w : p.W) {
    w = static_cast<float>(0.02 * rng.normal());
    if (rng.uniform() < 0.02) w *= 6.0f;
  }
  p.X.resize(static_cast<std::size_t>(p.tokens * p.cols));
  for (index_t t = 0; t < p.tokens; ++t) {
    const double shared = rng.normal();
    for (index_t c = 0; c < p.cols; ++c)
      p.X[t * p.cols + c] = static_cast<float>(rng.normal() * (1.0 + (c % 7)) + 0.5 * shared);
  }
  return p;
}

// Token-by-token objective of one (row, group) when the group is clamped to [lo, hi] and fake-quantized.
template <class Format>
double token_error(const Problem& p, index_t r, index_t c0, index_t count, float lo, float hi) {
  using Grid = calib::GroupGrid<Format>;
  const auto params = Grid::fit(lo, hi);
  std::vector<double> q(static_cast<std::size_t>(count));
  for (index_t k = 0; k < count; ++k)
    q[k] = Grid::decode(Grid::encode(std::clamp(p.W[r * p.cols + c0 + k], lo, hi), params), params);
  double sum = 0;
  for (index_t t = 0; t < p.tokens; ++t) {
    double exact = 0, quant = 0;
    for (index_t k = 0; k < count; ++k) {
      const double x = p.X[t * p.cols + c0 + k];
      exact += x * p.W[r * p.cols + c0 + k];
      quant += x * q[k];
    }
    sum += (exact - quant) * (exact - quant);
  }
  return sum / static_cast<double>(p.tokens);
}

template <class Format>
void check_autoclip(std::uint64_t seed) {
  using Grid = calib::GroupGrid<Format>;
  const Problem p = make_problem(seed);
  std::vector<float> clipped = p.W;
  const Eigen::MatrixXd C = calib::gram_from_tokens(MatrixView<const float>(p.X.data(), p.tokens, p.cols));
  const auto stats = calib::autoclip_apply<Format>(MatrixView<float>(clipped.data(), p.rows, p.cols), C);
  const index_t group = Grid::group_size(p.cols);
  double before = 0, after = 0;
  index_t worse = 0, not_argmin = 0;
  for (index_t r = 0; r < p.rows; ++r)
    for (index_t c0 = 0; c0 < p.cols; c0 += group) {
      const index_t count = std::min(group, p.cols - c0);
      const float* w = p.W.data() + r * p.cols + c0;
      const float* wc = clipped.data() + r * p.cols + c0;
      const float lo0 = *std::min_element(w, w + count), hi0 = *std::max_element(w, w + count);
      const float lo = *std::min_element(wc, wc + count), hi = *std::max_element(wc, wc + count);
      const double e_none = token_error<Format>(p, r, c0, count, lo0, hi0);
      const double e_chosen = token_error<Format>(p, r, c0, count, lo, hi);
      before += e_none;
      after += e_chosen;
      worse += e_chosen > e_none * (1 + 1e-5) + 1e-12;
      // The chosen pair is the minimum over the whole 10x10 grid, evaluated token by token.
      double best = e_none;
      for (int i = 0; i < 10; ++i)
        for (int j = 0; j < 10; ++j) {
          float clo = 0, chi = 0;
          calib::clip_range(lo0, hi0, 1.0f - j / 20.0f, 1.0f - i / 20.0f, clo, chi);
          best = std::min(best, token_error<Format>(p, r, c0, count, clo, chi));
        }
      not_argmin += e_chosen > best * (1 + 1e-4) + 1e-12;
    }
  MESSAGE(Grid::Packed::bits, "-bit: partial-output MSE without clip ", before, ", with autoclip ", after,
          " (", stats.clipped_groups, " groups clipped)");
  CHECK(worse == 0);
  CHECK(not_argmin == 0);
  CHECK(after < 0.95 * before);
  CHECK(stats.error_after <= stats.error_before);
  CHECK(stats.clipped_groups > 0);
  CHECK(std::abs(stats.error_after - after) < 1e-3 * after);  // the Gram form equals the token form
}

}  // namespace

TEST_CASE_TEMPLATE("autoclip: never worse than no clip, and the grid argmin, on its own objective", Format,
                   LOWBIT_TEST_UNIFORM_FORMATS, NF3<128>) {
  check_autoclip<Format>(21);
}

TEST_CASE("autoclip then gptq: GPTQ quantizes the clamped weights, and the pair beats RTN on the proxy loss") {
  using Format = Uniform<3, 128>;
  const Problem p = make_problem(4);
  std::vector<float> clipped = p.W;
  const auto C = calib::gram_from_tokens(MatrixView<const float>(p.X.data(), p.tokens, p.cols));
  calib::autoclip_apply<Format>(MatrixView<float>(clipped.data(), p.rows, p.cols), C);
  calib::HessianAccumulator acc(p.cols);
  acc.add(MatrixView<const float>(p.X.data(), p.tokens, p.cols));
  const auto H = acc.gptq_hessian();
  calib::GptqOptions options;
  options.static_groups = true;  // group ranges fitted from the clamped W before any update
  const auto packed =
      calib::gptq_quantize<Format>(MatrixView<const float>(clipped.data(), p.rows, p.cols), H, options);
  // So no weight decodes outside its clamped group's range (widened to contain 0) by more than the
  // half a step (the zero point is rounded to an integer).
  std::vector<float> hat, rtn_hat;
  test::dequantize_into<Format>(packed, hat, p.rows, p.cols);
  test::dequantize_into<Format>(calib::rtn_quantize<Format>(MatrixView<const float>(p.W.data(), p.rows, p.cols)),
                                rtn_hat, p.rows, p.cols);
  auto loss = [&](const std::vector<float>& q) {
    Eigen::MatrixXd D(p.rows, p.cols);
    for (index_t r = 0; r < p.rows; ++r)
      for (index_t c = 0; c < p.cols; ++c) D(r, c) = double(p.W[r * p.cols + c]) - q[r * p.cols + c];
    return (D * H * D.transpose()).trace();
  };
  index_t outside = 0;
  for (index_t r = 0; r < p.rows; ++r)
    for (index_t c0 = 0; c0 < p.cols; c0 += 128) {
      const float* wc = clipped.data() + r * p.cols + c0;
      const float lo = std::min(0.0f, *std::min_element(wc, wc + 128));
      const float hi = std::max(0.0f, *std::max_element(wc, wc + 128));
      const float step = (hi - lo) / 7.0f;
      for (index_t k = 0; k < 128; ++k) {
        const float v = hat[r * p.cols + c0 + k];
        outside += v < lo - 0.51f * step || v > hi + 0.51f * step;
      }
    }
  CHECK(outside == 0);
  MESSAGE("proxy loss: rtn ", loss(rtn_hat), ", autoclip+gptq ", loss(hat));
  CHECK(loss(hat) < loss(rtn_hat));
}
