// Rebuilding a layer from what a file stores for it: its descriptor ("f32" or a registered format,
// formats.hpp), its shape, and its stored tensors (core/stored_tensor.hpp). The storage for the shape is
// allocated by the format, each of its tensors is handed to `fill` (which checks and copies the file's
// bytes into it), and the packed matrix becomes a QuantizedLinear. No per-family code: a format added to
// the registry is readable here as it is.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../core/stored_tensor.hpp"
#include "../formats.hpp"
#include "dense_linear.hpp"
#include "linear.hpp"
#include "quantized_linear.hpp"

namespace lowbit::nn {

using StoredTensorFill = std::function<void(const StoredTensorSlot&)>;

inline LinearPtr make_stored_linear(const std::string& descriptor, index_t out, index_t in, const StoredTensorFill& fill) {
  if (descriptor == "f32") {
    std::vector<float> w(static_cast<std::size_t>(out * in));
    fill(stored_tensor("weight", StoredType::F32, {out, in}, w));
    return std::make_unique<DenseLinear>(out, in, std::move(w));
  }
  return visit_format(descriptor, [&]<class F>(FormatTag<F>) -> LinearPtr {
    typename Quantizer<F>::Packed packed(out, in);
    for (const auto& slot : packed.stored_tensors()) fill(slot);
    return std::make_unique<QuantizedLinear<F>>(std::move(packed));
  });
}

// A dense matrix W [out, in] in the format `descriptor` by round-to-nearest (the format's own
// Quantizer::quantize), or kept dense for "f32".
inline LinearPtr make_rtn_linear(const std::string& descriptor, MatrixView<const float> W) {
  if (descriptor == "f32") {
    std::vector<float> w(static_cast<std::size_t>(W.rows() * W.cols()));
    for (index_t r = 0; r < W.rows(); ++r) std::copy_n(W.row(r), W.cols(), w.data() + r * W.cols());
    return std::make_unique<DenseLinear>(W.rows(), W.cols(), std::move(w));
  }
  return visit_format(descriptor, [&]<class F>(FormatTag<F>) -> LinearPtr {
    return std::make_unique<QuantizedLinear<F>>(Quantizer<F>::quantize(W));
  });
}

}  // namespace lowbit::nn
