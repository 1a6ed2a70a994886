// Quantizer<Additive<M, B, G>>: AQLM formats (format/additive.hpp) behind the Quantizer façade. The
// data-free quantize(W) runs additive quantization against the identity (calib/additive.hpp; the
// calibrated path with a Hessian is calib/additive_pipeline.hpp); dequantize and matvec run the CPU
// kernels of kernels/cpu/additive_matvec.hpp.
#pragma once

#include <string>

#include "../calib/additive.hpp"
#include "../core/bitpack.hpp"
#include "../core/tensor.hpp"
#include "../format/activation.hpp"
#include "../format/additive.hpp"
#include "../format/concepts.hpp"
#include "../kernels/cpu/additive_matvec.hpp"

namespace lowbit {

template <int M, int B, int G>
struct Quantizer<Additive<M, B, G>> {
  using Format = Additive<M, B, G>;
  using Packed = AdditivePackedOf<M, B, G>;

  // Defaults of the data-free quantize(W): AQ against the identity (plain weight MSE), a short schedule.
  static calib::AdditiveCalibOptions default_options() {
    calib::AdditiveCalibOptions o;
    o.num_codebooks = M;
    o.code_bits = B;
    o.group_size = G;
    o.kmeans.iterations = 25;
    o.max_epochs = 20;
    o.relative_mse_tolerance = 0.01;
    return o;
  }

  // Data-free additive quantization: H = identity.
  static Packed quantize(MatrixView<const float> W) { return quantize(W, MatrixView<const float>{}, default_options()); }

  // AQ against a proxy Hessian H = XᵀX [cols, cols] (H.data == nullptr: identity). The options' M, B
  // and G are overridden by the format's.
  static Packed quantize(MatrixView<const float> W, MatrixView<const float> H, calib::AdditiveCalibOptions options,
                         calib::AdditiveCalibReport* report = nullptr) {
    options.num_codebooks = M;
    options.code_bits = B;
    options.group_size = G;
    return Packed(calib::calibrate_additive(W, H, options, report));
  }

  static Packed pack(const AdditiveCodes& a) { return Packed(a); }

  static void dequantize(const Packed& p, MatrixView<float> out) { additive_dequantize(additive_kernel_view(p), out); }
  // Row r of Ŵ into out[cols] (a token table's lookup).
  static void dequantize_row(const Packed& p, index_t r, float* out) {
    additive_dequantize_row(additive_kernel_view(p), r, out);
  }
  // y = Ŵx through the CPU lookup-table kernels (kernels/cpu/additive_matvec.hpp); no int8-activation
  // kernel, so every activation format computes the exact product.
  template <ActivationFormat A = F32Activations>
  static void matvec(const Packed& p, const float* x, float* y) {
    additive_matvec(additive_kernel_view(p), x, y);
  }
  static double bits_per_weight(const Packed& p) {
    return 8.0 * static_cast<double>(p.bytes()) / static_cast<double>(p.rows() * p.cols());
  }
  // Closed form for a [rows, cols] matrix, before quantizing (codes padded per row to 32-bit words).
  static double bits_per_weight(index_t rows, index_t cols) {
    const AdditiveShape s = Format::shape(rows, cols);
    const double bytes = 4.0 * static_cast<double>(rows * packed_words(s.codes_per_row(), B)) +
                         2.0 * static_cast<double>(M * s.codebook_size() * G) + 2.0 * static_cast<double>(rows);
    return 8.0 * bytes / static_cast<double>(rows * cols);
  }
  static std::string name() { return Format::name(); }
};

static_assert(QuantizerFor<Quantizer<Additive<2, 8, 8>>>);

}  // namespace lowbit
