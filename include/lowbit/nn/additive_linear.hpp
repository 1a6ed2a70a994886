// The trainable form of AQLM layers, for block and end-to-end fine-tuning: codes are frozen, codebooks
// and per-row scales are fp32 parameters. Ŵ[o, G·j + d] = s_o·Σ_m C_m[c_ojm][d], so with dŴ = dYᵀX:
//   dX += dY·Ŵ,   dC_m[k] += Σ_{o,j: c_ojm = k} s_o·dŴ[o, block j],   ds_o += ⟨dŴ_o, u_o⟩ (u = Ŵ/s).
// QuantizedLinear<Additive<M,B,G>>::trainable_form() makes one (TrainableForm below); its
// inference_form() rounds back to the stored fp16 format as QuantizedLinear<Additive<M,B,G>>.
#pragma once

#include <string>
#include <vector>

#include "../core/bitpack.hpp"
#include "../core/error.hpp"
#include "../format/additive.hpp"
#include "../kernels/cpu/additive_matvec.hpp"
#include "../quantizer.hpp"
#include "gemm.hpp"
#include "linear.hpp"
#include "quantized_linear.hpp"

namespace lowbit::nn {

class AdditiveLinear final : public Linear {
 public:
  // Builds the packed layer this one returns to; set by TrainableForm, null for a free-standing layer.
  using InferenceFactory = LinearPtr (*)(const AdditiveCodes&);

  explicit AdditiveLinear(AdditiveCodes codes, std::string name = "additive", InferenceFactory to_inference = nullptr)
      : a_(std::move(codes)), name_(std::move(name)), to_inference_(to_inference) {
    a_.shape.validate("AdditiveLinear " + name_);
    const auto& s = a_.shape;
    words_per_row_ = packed_words(s.codes_per_row(), s.code_bits);
    packed_codes_.assign(static_cast<std::size_t>(s.rows * words_per_row_), 0u);
    for (index_t o = 0; o < s.rows; ++o)
      for (index_t i = 0; i < s.codes_per_row(); ++i)
        pack_code(packed_codes_.data() + o * words_per_row_, i, s.code_bits,
                  a_.codes[static_cast<std::size_t>(o * s.codes_per_row() + i)]);
    codebook_grad_.assign(a_.codebooks.size(), 0.0f);
    scale_grad_.assign(a_.scales.size(), 0.0f);
  }

  index_t in_features() const override { return a_.shape.cols; }
  index_t out_features() const override { return a_.shape.rows; }

  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    check(X.rows(), X.cols(), Y.rows(), Y.cols(), "forward");
    if (X.rows() == 1) {
      additive_matvec(view(), X.row(0), Y.row(0));
      return;
    }
    const auto W = dense();
    matmul_xwt<float>(X, MatrixView<const float>(W.data(), out_features(), in_features()), Y);
  }

  void backward(MatrixView<const float> X, MatrixView<const float> dY, MatrixView<float> dX) override {
    check(X.rows(), X.cols(), dY.rows(), dY.cols(), "backward");
    const auto& s = a_.shape;
    const index_t rows = s.rows, cols = s.cols, groups = s.groups(), K = s.codebook_size();
    const int G = s.group_size, M = s.num_codebooks;
    if (dX.data) {
      const auto W = dense();
      matmul_add_dyw<float>(dY, MatrixView<const float>(W.data(), rows, cols), dX);
    }
    std::vector<float> dW(static_cast<std::size_t>(rows * cols), 0.0f);
    matmul_add_dytx<float>(dY, X, MatrixView<float>(dW.data(), rows, cols));
    // Scale gradients in parallel over rows; codebook gradients serially (rows share codewords).
    parallel_for(0, rows, [&](index_t r0, index_t r1) {
      std::vector<float> u(static_cast<std::size_t>(s.padded_cols()));
      for (index_t o = r0; o < r1; ++o) {
        additive_unscaled_row_reference(a_, o, u.data());
        double g = 0.0;
        for (index_t c = 0; c < cols; ++c) g += static_cast<double>(dW[static_cast<std::size_t>(o * cols + c)]) * u[static_cast<std::size_t>(c)];
        scale_grad_[static_cast<std::size_t>(o)] += static_cast<float>(g);
      }
    });
    for (index_t o = 0; o < rows; ++o) {
      const float sc = a_.scales[static_cast<std::size_t>(o)];
      for (index_t j = 0; j < groups; ++j) {
        const index_t width = std::min<index_t>(G, cols - j * G);
        const float* g = dW.data() + o * cols + j * G;
        for (int m = 0; m < M; ++m) {
          float* dst = codebook_grad_.data() + (m * K + a_.code(o, j, m)) * G;
          for (index_t d = 0; d < width; ++d) dst[d] += sc * g[d];
        }
      }
    }
  }

  std::vector<Parameter> parameters() override {
    // Plain names: the block prefixes them ("layers.3.attention.wq.codebooks").
    return {Parameter{"codebooks", a_.codebooks.data(), codebook_grad_.data(), static_cast<index_t>(a_.codebooks.size())},
            Parameter{"scales", a_.scales.data(), scale_grad_.data(), static_cast<index_t>(a_.scales.size())}};
  }

  void dequantize(MatrixView<float> W) const override { additive_dequantize(view(), W); }

  // Bytes of the stored (fp16) form.
  std::size_t bytes() const override {
    return packed_codes_.size() * 4 + a_.codebooks.size() * 2 + a_.scales.size() * 2;
  }
  std::string format() const override { return a_.shape.format_name(); }
  LinearPtr inference_form() const override { return to_inference_ ? to_inference_(a_) : nullptr; }

  const AdditiveCodes& codes() const { return a_; }
  AdditivePacked to_packed() const { return AdditivePacked(a_); }

 private:
  AdditiveKernelView view() const {
    return AdditiveKernelView{a_.shape, packed_codes_.data(), words_per_row_, a_.codebooks.data(), a_.scales.data()};
  }
  std::vector<float> dense() const {
    std::vector<float> W(static_cast<std::size_t>(out_features() * in_features()));
    additive_dequantize(view(), MatrixView<float>(W.data(), out_features(), in_features()));
    return W;
  }
  void check(index_t in_rows, index_t in_cols, index_t out_rows, index_t out_cols, const char* what) const {
    LOWBIT_CHECK(in_cols == in_features() && out_cols == out_features() && in_rows == out_rows, "AdditiveLinear ",
                 name_, "::", what, ": got ", in_rows, "x", in_cols, " and ", out_rows, "x", out_cols, " for a ",
                 out_features(), "x", in_features(), " weight");
  }

  AdditiveCodes a_;
  std::string name_;
  InferenceFactory to_inference_ = nullptr;
  index_t words_per_row_ = 0;
  std::vector<std::uint32_t> packed_codes_;
  std::vector<float> codebook_grad_, scale_grad_;
};

// QuantizedLinear<Additive<M,B,G>> <-> AdditiveLinear: codebooks and scales become fp32 parameters, and
// return rounded to fp16.
template <int M, int B, int G>
struct TrainableForm<Additive<M, B, G>> {
  using Format = Additive<M, B, G>;
  static LinearPtr make(const typename Quantizer<Format>::Packed& packed) {
    return std::make_unique<AdditiveLinear>(packed.unpack(), Format::name(), &to_inference);
  }
  static LinearPtr to_inference(const AdditiveCodes& codes) {
    return std::make_unique<QuantizedLinear<Format>>(Quantizer<Format>::pack(codes));
  }
};

// Unpacked codes of an AQLM layer in either form: a trainable AdditiveLinear, or a packed layer of an
// additive format (through its trainable form; fp16 codebooks and scales as stored).
inline AdditiveCodes additive_codes(const Linear& linear) {
  if (const auto* trainable = dynamic_cast<const AdditiveLinear*>(&linear)) return trainable->codes();
  const auto trainable = linear.trainable_form();
  const auto* additive = dynamic_cast<const AdditiveLinear*>(trainable.get());
  LOWBIT_CHECK(additive != nullptr, "layer of format '", linear.format(), "' is not an additive (AQLM) layer");
  return additive->codes();
}

}  // namespace lowbit::nn
