// BitDistiller's student layer (ALGORITHMS.md §2.4) for any group-grid format (uniform int2/3/4, NF3; not
// BCQ, whose own quantizer is not a min/max grid): the latent fp32 weight W is what trains, and every forward
// re-fits each group's grid to the group's current min and max and rounds, exactly as the format's RTN
// quantizer does, so the forward weight is Ŵ = dequantize(rtn_quantize(W)) bit for bit (fp16 scales included)
// and the layer packs into that format at the end with nothing changed.
//
// Gradients (straight-through): ∂L/∂W = ∂L/∂Ŵ. The clipping-aware variant keeps the range each group had
// when the layer was built (AutoClip's clipped range: the latent weights start clamped to it) as a fixed
// bound: the forward clamps to it and the gradient stops for latent weights outside it, so a weight pushed
// past the clip no longer moves the grid. Without it (the paper's default) the range is free: it follows
// the latent weights' min and max.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "../calib/rtn.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../format/bcq.hpp"
#include "../format/concepts.hpp"
#include "gemm.hpp"
#include "linear.hpp"
#include "quantized_linear.hpp"

namespace lowbit::nn {

// What every FakeQuantLinear<Format> is, whatever its format (the QAT driver finds them by it).
class FakeQuantTraining {
 public:
  virtual ~FakeQuantTraining() = default;
  virtual bool clipping_aware() const = 0;
};

template <class Format>
  requires(GroupGridFormat<Format> && !BCQFormat<Format>)
class FakeQuantLinear final : public Linear, public FakeQuantTraining {
  using Grid = calib::GroupGrid<Format>;

 public:
  // W [rows, cols]: the starting latent weight (AutoClip's clamped weight, or any other start).
  FakeQuantLinear(MatrixView<const float> W, bool clipping_aware)
      : rows_(W.rows()), cols_(W.cols()), clip_aware_(clipping_aware) {
    LOWBIT_CHECK(rows_ > 0 && cols_ > 0, "FakeQuantLinear: empty weight ", rows_, "x", cols_);
    group_ = Grid::group_size(cols_);
    groups_ = (cols_ + group_ - 1) / group_;
    w_.resize(static_cast<std::size_t>(rows_ * cols_));
    for (index_t r = 0; r < rows_; ++r) std::copy_n(W.row(r), cols_, w_.data() + r * cols_);
    g_.assign(w_.size(), 0.0f);
    lo_.resize(static_cast<std::size_t>(rows_ * groups_));
    hi_.resize(lo_.size());
    for (index_t r = 0; r < rows_; ++r)
      for (index_t g = 0; g < groups_; ++g) {
        const float* w = w_.data() + r * cols_ + g * group_;
        const index_t n = std::min(group_, cols_ - g * group_);
        lo_[static_cast<std::size_t>(r * groups_ + g)] = *std::min_element(w, w + n);
        hi_[static_cast<std::size_t>(r * groups_ + g)] = *std::max_element(w, w + n);
      }
    bytes_ = Grid::make(rows_, cols_).bytes();
  }

  index_t in_features() const override { return cols_; }
  index_t out_features() const override { return rows_; }

  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    refresh();
    matmul_xwt<float>(X, weight_view(), Y);
  }

  void backward(MatrixView<const float> X, MatrixView<const float> dY, MatrixView<float> dX) override {
    LOWBIT_CHECK(what_.size() == w_.size(), "FakeQuantLinear::backward before forward");
    if (dX.data) matmul_add_dyw<float>(dY, weight_view(), dX);
    if (!clip_aware_) {
      matmul_add_dytx<float>(dY, X, MatrixView<float>(g_.data(), rows_, cols_));
      return;
    }
    std::vector<float> G(w_.size(), 0.0f);
    matmul_add_dytx<float>(dY, X, MatrixView<float>(G.data(), rows_, cols_));
    parallel_for(0, rows_, [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        for (index_t c = 0; c < cols_; ++c) {
          const std::size_t e = static_cast<std::size_t>(r * cols_ + c), k = static_cast<std::size_t>(r * groups_ + c / group_);
          if (w_[e] >= lo_[k] && w_[e] <= hi_[k]) g_[e] += G[e];
        }
    });
  }

  // "fq_weight": the QAT driver's trainable predicate selects on it.
  std::vector<Parameter> parameters() override {
    return {Parameter{"fq_weight", w_.data(), g_.data(), static_cast<index_t>(w_.size())}};
  }

  void dequantize(MatrixView<float> W) const override {
    LOWBIT_CHECK(W.rows() == rows_ && W.cols() == cols_, "FakeQuantLinear::dequantize: output is ", W.rows(), "x",
                 W.cols(), ", expected ", rows_, "x", cols_);
    refresh();
    for (index_t r = 0; r < rows_; ++r) std::copy_n(what_.data() + r * cols_, cols_, W.row(r));
  }
  std::size_t bytes() const override { return bytes_; }
  std::string format() const override { return Format::name(); }
  void release_workspace() override {
    what_.clear();
    what_.shrink_to_fit();
  }
  bool clipping_aware() const override { return clip_aware_; }

  // The latent weight as the forward sees it (clamped to the fixed bounds in the clipping-aware variant).
  std::vector<float> effective_latent() const {
    std::vector<float> w = w_;
    if (clip_aware_)
      for (index_t r = 0; r < rows_; ++r)
        for (index_t c = 0; c < cols_; ++c) {
          const std::size_t k = static_cast<std::size_t>(r * groups_ + c / group_);
          float& x = w[static_cast<std::size_t>(r * cols_ + c)];
          x = std::clamp(x, lo_[k], hi_[k]);
        }
    return w;
  }

  // The packed layer: RTN of the (effective) latent weight, the forward's own arithmetic.
  LinearPtr inference_form() const override {
    const auto w = effective_latent();
    return std::make_unique<QuantizedLinear<Format>>(calib::rtn_quantize<Format>(MatrixView<const float>(w.data(), rows_, cols_)));
  }

 private:
  MatrixView<const float> weight_view() const { return MatrixView<const float>(what_.data(), rows_, cols_); }

  void refresh() const {
    what_.resize(w_.size());
    parallel_for(0, rows_, [&](index_t r0, index_t r1) {
      std::vector<float> tmp(static_cast<std::size_t>(group_));
      for (index_t r = r0; r < r1; ++r)
        for (index_t g = 0; g < groups_; ++g) {
          const index_t c0 = g * group_, n = std::min(group_, cols_ - c0);
          const float* w = w_.data() + r * cols_ + c0;
          if (clip_aware_) {
            const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
            for (index_t c = 0; c < n; ++c) tmp[static_cast<std::size_t>(c)] = std::clamp(w[c], lo_[k], hi_[k]);
            w = tmp.data();
          }
          calib::rtn_group<Format>(w, n, what_.data() + r * cols_ + c0);
        }
    }, 8);
  }

  index_t rows_ = 0, cols_ = 0, group_ = 0, groups_ = 0;
  bool clip_aware_ = false;
  std::size_t bytes_ = 0;
  std::vector<float> w_, g_, lo_, hi_;
  mutable std::vector<float> what_;
};

}  // namespace lowbit::nn
