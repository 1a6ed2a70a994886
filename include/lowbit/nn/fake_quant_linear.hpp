// BitDistiller's student layer (ALGORITHMS.md §2.4) for any group-grid format (uniform int2/3/4, NF3; not
// BCQ, whose own quantizer is not a min/max grid): the latent fp32 weight W is what trains, and every forward
// re-fits each group's grid to the group's current min and max and rounds, exactly as the format's RTN
// quantizer does, so the forward weight is Ŵ = dequantize(rtn_quantize(W)) bit for bit (fp16 scales included)
// and the layer packs into that format at the end with nothing changed.
//
// Gradients (FakeQuantGradient):
//  * straight_through: ∂L/∂W = ∂L/∂Ŵ; the range follows the latent weights' min and max but gets no gradient.
//  * through_range (the paper's quantizers under autograd): only the rounding is straight-through, so the
//    grid's scale s, a function of the group's extreme weights, passes a gradient to them too. With the
//    code's rounding an identity, ŵ_j = w_j + s·d_j with d_j = (ŵ_j − w_j)/s held fixed, hence
//    ∂ŵ_j/∂s = (ŵ_j − w_j)/s, and ∂L/∂(max or min) gains Σ_j ∂L/∂ŵ_j·(ŵ_j − w_j)/s·∂s/∂(max or min).
//  * clipping_aware: the range each group had when the layer was built (AutoClip's clipped range: the
//    latent weights start clamped to it) is a fixed bound: the forward clamps to it and the gradient stops
//    for latent weights outside it, so a weight pushed past the clip no longer moves the grid.
#pragma once

#include <algorithm>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "../calib/rtn.hpp"
#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../format/bcq.hpp"
#include "../format/concepts.hpp"
#include "../format/nf3.hpp"
#include "../format/uniform.hpp"
#include "gemm.hpp"
#include "linear.hpp"
#include "quantized_linear.hpp"

namespace lowbit::nn {

enum class FakeQuantGradient { straight_through, through_range, clipping_aware };

inline const char* to_string(FakeQuantGradient g) {
  switch (g) {
    case FakeQuantGradient::straight_through: return "straight_through";
    case FakeQuantGradient::through_range: return "through_range";
    case FakeQuantGradient::clipping_aware: return "clipping_aware";
  }
  return "?";
}

inline FakeQuantGradient parse_fake_quant_gradient(const std::string& s) {
  if (s == "ste" || s == "straight_through") return FakeQuantGradient::straight_through;
  if (s == "range" || s == "through_range") return FakeQuantGradient::through_range;
  if (s == "clip" || s == "clipping_aware") return FakeQuantGradient::clipping_aware;
  fail("unknown fake-quant gradient '", s, "' (known: ste, range, clip)");
}

namespace detail {

// Formats whose grid scale is known in closed form, so FakeQuantGradient::through_range is defined for them.
template <class Format>
inline constexpr bool has_range_gradient = is_uniform_format<Format> || is_nf3_format<Format>;

// Adds to g[0..n) the gradient that reaches one group's extreme latent weights w through its grid's scale
// (FakeQuantGradient::through_range), given G = ∂L/∂Ŵ and the forward's ŵ for the group. The fp16 rounding
// of the stored scale is straight-through as well.
template <class Format>
void add_range_gradient(const float* w, const float* what, const float* G, index_t n, float* g) {
  index_t imax = 0, imin = 0;
  for (index_t j = 1; j < n; ++j) {
    if (w[j] > w[imax]) imax = j;
    if (w[j] < w[imin]) imin = j;
  }
  const float hi = w[imax], lo = w[imin];
  if constexpr (is_uniform_format<Format>) {
    // ŵ = s·(code − zero); asymmetric s = (max − min)/max_code (the range widened to hold 0), symmetric
    // s = max|w| / (2^(b−1) − 1).
    const auto p = uniform_fit<Format>(lo, hi);
    const double s = half_bits_to_float(p.scale.bits);
    double t = 0;
    for (index_t j = 0; j < n; ++j) t += double(G[j]) * (double(what[j]) - w[j]);
    if constexpr (Format::symmetric) {
      const double steps = double((1u << (Format::bits - 1)) - 1u);
      const index_t a = -lo > hi ? imin : imax;
      if (w[a] != 0.0f) g[a] += static_cast<float>((w[a] > 0 ? t : -t) / (s * steps));
    } else {
      const double steps = double(Format::max_code);
      if (hi > 0.0f) g[imax] += static_cast<float>(t / (s * steps));
      if (lo < 0.0f) g[imin] -= static_cast<float>(t / (s * steps));
    }
  } else {
    static_assert(is_nf3_format<Format>, "add_range_gradient: uniform or NF3 formats (has_range_gradient)");
    // ŵ = max·level for w ≥ 0 and −min·level for w < 0: each side has its own scale.
    const auto p = nf3_fit(lo, hi);
    const double mx = half_bits_to_float(p.max.bits), mn = half_bits_to_float(p.min.bits);
    double tp = 0, tn = 0;
    for (index_t j = 0; j < n; ++j) (w[j] >= 0.0f ? tp : tn) += double(G[j]) * (double(what[j]) - w[j]);
    if (mx > 0) g[imax] += static_cast<float>(tp / mx);
    if (mn < 0) g[imin] += static_cast<float>(tn / mn);
  }
}

}  // namespace detail

// What every FakeQuantLinear<Format> is, whatever its format (the QAT driver finds them by it).
class FakeQuantTraining {
 public:
  virtual ~FakeQuantTraining() = default;
  virtual FakeQuantGradient gradient() const = 0;
};

template <class Format>
  requires(GroupGridFormat<Format> && !BCQFormat<Format>)
class FakeQuantLinear final : public Linear, public FakeQuantTraining {
  using Grid = calib::GroupGrid<Format>;

 public:
  // W [rows, cols]: the starting latent weight (AutoClip's clamped weight, or any other start).
  FakeQuantLinear(MatrixView<const float> W, FakeQuantGradient gradient = FakeQuantGradient::straight_through)
      : rows_(W.rows()), cols_(W.cols()), gradient_(gradient), clip_aware_(gradient == FakeQuantGradient::clipping_aware) {
    LOWBIT_CHECK(rows_ > 0 && cols_ > 0, "FakeQuantLinear: empty weight ", rows_, "x", cols_);
    LOWBIT_CHECK(gradient != FakeQuantGradient::through_range || detail::has_range_gradient<Format>, "FakeQuantLinear: ",
                 Format::name(), " has no closed-form grid scale, so the gradient through its range is not defined "
                 "(use ste or clip)");
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
    if (gradient_ == FakeQuantGradient::straight_through) {
      matmul_add_dytx<float>(dY, X, MatrixView<float>(g_.data(), rows_, cols_));
      return;
    }
    std::vector<float>& G = grad_workspace_;  // ∂L/∂Ŵ
    G.assign(w_.size(), 0.0f);
    matmul_add_dytx<float>(dY, X, MatrixView<float>(G.data(), rows_, cols_));
    parallel_for(0, rows_, [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        const std::size_t row = static_cast<std::size_t>(r * cols_);
        if (clip_aware_) {
          for (index_t c = 0; c < cols_; ++c) {
            const std::size_t e = row + static_cast<std::size_t>(c), k = static_cast<std::size_t>(r * groups_ + c / group_);
            if (w_[e] >= lo_[k] && w_[e] <= hi_[k]) g_[e] += G[e];
          }
          continue;
        }
        for (index_t c = 0; c < cols_; ++c) g_[row + static_cast<std::size_t>(c)] += G[row + static_cast<std::size_t>(c)];
        if constexpr (detail::has_range_gradient<Format>)
          for (index_t c0 = 0; c0 < cols_; c0 += group_) {
            const std::size_t e = row + static_cast<std::size_t>(c0);
            detail::add_range_gradient<Format>(w_.data() + e, what_.data() + e, G.data() + e, std::min(group_, cols_ - c0),
                                               g_.data() + e);
          }
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
    grad_workspace_.clear();
    grad_workspace_.shrink_to_fit();
  }
  FakeQuantGradient gradient() const override { return gradient_; }

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
  FakeQuantGradient gradient_ = FakeQuantGradient::straight_through;
  bool clip_aware_ = false;
  std::size_t bytes_ = 0;
  std::vector<float> w_, g_, lo_, hi_, grad_workspace_;
  mutable std::vector<float> what_;
};

}  // namespace lowbit::nn
