// A minimal downstream program: quantize a random matrix to 4 bits with groups of 128, run the
// matvec, and check it against the dequantized weights; then the same through the format registry with
// a descriptor chosen at run time. Exits non-zero on any mismatch.
#include <cmath>
#include <cstdio>
#include <lowbit/lowbit.hpp>
#include <vector>

int main() {
  using Q = lowbit::Quantizer<lowbit::Uniform<4, 128>>;
  const lowbit::index_t rows = 64, cols = 300;
  lowbit::Rng rng(1);
  std::vector<float> w(rows * cols), x(cols), y(rows), w_hat(rows * cols);
  for (auto& v : w) v = static_cast<float>(rng.normal());
  for (auto& v : x) v = static_cast<float>(rng.normal());
  const auto packed = Q::quantize(lowbit::MatrixView<const float>(w.data(), rows, cols));
  Q::matvec(packed, x.data(), y.data());
  Q::dequantize(packed, lowbit::MatrixView<float>(w_hat.data(), rows, cols));
  double worst = 0;
  for (lowbit::index_t r = 0; r < rows; ++r) {
    double ref = 0;
    for (lowbit::index_t c = 0; c < cols; ++c) ref += double(w_hat[r * cols + c]) * x[c];
    worst = std::fmax(worst, std::fabs(ref - y[r]));
  }
  std::printf("consumer: %s, %.3f bits/weight, max |matvec - dequant·x| = %.2e\n", Q::name().c_str(),
              Q::bits_per_weight(packed), worst);
  const double nf3_bpw = lowbit::visit_format("nf3:128", [&]<class F>(lowbit::FormatTag<F>) {
    return lowbit::Quantizer<F>::bits_per_weight(
        lowbit::Quantizer<F>::quantize(lowbit::MatrixView<const float>(w.data(), rows, cols)));
  });
  std::printf("consumer: %zu registered formats; nf3:128 at %.3f bits/weight\n", lowbit::format_names().size(),
              nf3_bpw);
  return worst < 1e-3 && nf3_bpw > 3.0 && nf3_bpw < 4.0 ? 0 : 1;
}
