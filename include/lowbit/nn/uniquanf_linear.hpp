// UniQuanF's trainable layer (ALGORITHMS.md §3.1-3.2) for a BCQ<Bits, Group> format: the FP weight W stays
// frozen and the layer trains
//   δ1 [rows, groups]  log of the group's scale s = e^δ1,
//   δ2 [rows, cols]    element-wise log-scale (FlexRound), δ3 [rows] per-row log-scale,
//   a  [rows, groups, Bits]  the BCQ scales in the integer domain,
// with a fixed zero point z per group. Each weight maps to the integer domain u = W/e^(δ1+δ2+δ3) + z, is
// represented by a level L(b) = Σ_i a_i b_i + c (c = (2^n − 1)/2, sign vector b = its code) and decodes to
//   Ŵ = (L(b) − z)·e^δ1.
// Codes are re-assigned every `period` training steps (backward passes), each only to the nearest of its
// current level and the two levels beside it in sorted order (local periodic mapping). Gradients pass
// through the level choice as identity (∂L/∂u = 1, straight-through) only where u lies within min|a| of its
// level (the clipping-aware STE); everywhere else only δ1 and a get the direct gradient.
//
// Unification: Ŵ = Σ_i (e^δ1 a_i) b_i + e^δ1 (c − z) is a plain BCQ layer with α_i = e^δ1 a_i and offset
// e^δ1 (c − z); δ2 and δ3 only decide which level a weight takes. inference_form() folds the layer so
// (fp16-rounded, scales made positive and sorted). A layer built from a BCQ fit starts exactly on it:
// s = the largest α / 2^(n−2) (2α for one bit), a = α/s, z = c − offset/s, δ2 = δ3 = 0.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../format/bcq.hpp"
#include "gemm.hpp"
#include "linear.hpp"
#include "quantized_linear.hpp"

namespace lowbit::nn {

// What every UniQuanFLinear<Format> is, whatever its format (calib/uniquanf.hpp finds them by it).
class UniQuanFTraining {
 public:
  virtual ~UniQuanFTraining() = default;
  virtual std::int64_t remapped_codes() const = 0;
};

template <class Format>
class UniQuanFLinear final : public Linear, public UniQuanFTraining {
  static_assert(is_bcq_format<Format>, "UniQuanFLinear: Format must be a lowbit::BCQ<...>");
  static constexpr int Bits = Format::bits;
  static constexpr std::uint32_t kLevels = 1u << Bits;
  static constexpr float kCenter = 0.5f * static_cast<float>(kLevels - 1u);

 public:
  // W [rows, cols] the FP weight, `init` a BCQ fit of it; codes re-assigned every `period` steps (0: never).
  UniQuanFLinear(MatrixView<const float> W, const BCQPacked<Format>& init, int period)
      : rows_(W.rows()), cols_(W.cols()), period_(period) {
    LOWBIT_CHECK(init.rows() == rows_ && init.cols() == cols_, "UniQuanFLinear: the BCQ fit is ", init.rows(), "x",
                 init.cols(), ", the weight ", rows_, "x", cols_);
    LOWBIT_CHECK(period >= 0, "UniQuanFLinear: the remapping period must be >= 0, got ", period);
    gs_ = init.group_size();
    groups_ = init.groups_per_row();
    w_.resize(static_cast<std::size_t>(rows_ * cols_));
    for (index_t r = 0; r < rows_; ++r) std::copy_n(W.row(r), cols_, w_.data() + r * cols_);
    d1_.assign(static_cast<std::size_t>(rows_ * groups_), 0.0f);
    z_.assign(d1_.size(), 0.0f);
    a_.assign(d1_.size() * Bits, 0.0f);
    d2_.assign(w_.size(), 0.0f);
    d3_.assign(static_cast<std::size_t>(rows_), 0.0f);
    codes_.resize(w_.size());
    for (index_t r = 0; r < rows_; ++r)
      for (index_t g = 0; g < groups_; ++g) {
        const auto p = init.params(r, g);
        float amax = 0.0f;
        for (int i = 0; i < Bits; ++i) amax = std::max(amax, std::fabs(p.alpha[i]));
        float s = Bits >= 2 ? amax / static_cast<float>(1 << (Bits - 2)) : 2.0f * amax;
        if (!(s > 1e-12f)) s = 1e-12f;
        const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
        d1_[k] = std::log(s);
        for (int i = 0; i < Bits; ++i) a_[k * Bits + i] = p.alpha[i] / s;
        z_[k] = kCenter - p.offset / s;
        for (index_t c = init.group_begin(g); c < init.group_end(g); ++c)
          codes_[static_cast<std::size_t>(r * cols_ + c)] = static_cast<std::uint8_t>(init.code(r, c));
      }
    g1_.assign(d1_.size(), 0.0f);
    g2_.assign(d2_.size(), 0.0f);
    g3_.assign(d3_.size(), 0.0f);
    ga_.assign(a_.size(), 0.0f);
  }

  index_t in_features() const override { return cols_; }
  index_t out_features() const override { return rows_; }

  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    refresh();
    matmul_xwt<float>(X, MatrixView<const float>(what_.data(), rows_, cols_), Y);
  }

  void backward(MatrixView<const float> X, MatrixView<const float> dY, MatrixView<float> dX) override {
    refresh();
    if (dX.data) matmul_add_dyw<float>(dY, MatrixView<const float>(what_.data(), rows_, cols_), dX);
    std::vector<float> G(w_.size(), 0.0f);
    matmul_add_dytx<float>(dY, X, MatrixView<float>(G.data(), rows_, cols_));
    parallel_for(0, rows_, [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r) {
        double g3 = 0.0;
        for (index_t g = 0; g < groups_; ++g) {
          const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
          const float s = std::exp(d1_[k]), z = z_[k], amin = min_abs_a(k);
          double g1 = 0.0;
          std::array<double, Bits> ga{};
          for (index_t c = g * gs_; c < std::min(cols_, (g + 1) * gs_); ++c) {
            const std::size_t e = static_cast<std::size_t>(r * cols_ + c);
            const float u = to_integer_domain(e, k, r);
            const std::uint32_t code = codes_[e];
            const float L = level(k, code);
            const double gs = static_cast<double>(G[e]) * s;  // ∂loss/∂Ŵ · e^δ1
            g1 += gs * (L - z);                              // through the dequantization scale
            for (int i = 0; i < Bits; ++i) ga[static_cast<std::size_t>(i)] += ((code >> i) & 1u) ? gs : -gs;
            if (std::fabs(u - L) <= amin) {                 // clipping-aware STE through u
              const double gu = -gs * (u - z);               // ∂u/∂δ1 = ∂u/∂δ2 = ∂u/∂δ3 = −(u − z)
              g1 += gu;
              g2_[e] += static_cast<float>(gu);
              g3 += gu;
            }
          }
          g1_[k] += static_cast<float>(g1);
          for (int i = 0; i < Bits; ++i) ga_[k * Bits + i] += static_cast<float>(ga[static_cast<std::size_t>(i)]);
        }
        g3_[static_cast<std::size_t>(r)] += static_cast<float>(g3);
      }
    });
    ++steps_;
  }

  // Names: the trainable predicates and learning-rate groups of calib/uniquanf.hpp select on them.
  std::vector<Parameter> parameters() override {
    return {Parameter{"uq_delta1", d1_.data(), g1_.data(), static_cast<index_t>(d1_.size())},
            Parameter{"uq_delta2", d2_.data(), g2_.data(), static_cast<index_t>(d2_.size())},
            Parameter{"uq_delta3", d3_.data(), g3_.data(), static_cast<index_t>(d3_.size())},
            Parameter{"bcq_alpha", a_.data(), ga_.data(), static_cast<index_t>(a_.size())}};
  }

  void dequantize(MatrixView<float> W) const override {
    LOWBIT_CHECK(W.rows() == rows_ && W.cols() == cols_, "UniQuanFLinear::dequantize: output is ", W.rows(), "x",
                 W.cols(), ", expected ", rows_, "x", cols_);
    refresh();
    for (index_t r = 0; r < rows_; ++r) std::copy_n(what_.data() + r * cols_, cols_, W.row(r));
  }
  std::size_t bytes() const override { return BCQPacked<Format>(rows_, cols_).bytes(); }
  std::string format() const override { return Format::name(); }
  void release_workspace() override {
    what_.clear();
    what_.shrink_to_fit();
  }

  // The folded BCQ parameters of group (r, g) in fp32: α_i = e^δ1 a_i, offset = e^δ1 (c − z).
  BCQParams<Bits> folded_params(index_t r, index_t g) const {
    const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
    const float s = std::exp(d1_[k]);
    BCQParams<Bits> p;
    for (int i = 0; i < Bits; ++i) p.alpha[i] = s * a_[k * Bits + i];
    p.offset = s * (kCenter - z_[k]);
    return p;
  }
  std::uint32_t code(index_t r, index_t c) const { return codes_[static_cast<std::size_t>(r * cols_ + c)]; }

  // The plain BCQ layer (scales positive and ascending, fp16).
  LinearPtr inference_form() const override {
    refresh();
    BCQPacked<Format> packed(rows_, cols_);
    std::vector<std::uint32_t> codes(static_cast<std::size_t>(gs_));
    for (index_t r = 0; r < rows_; ++r)
      for (index_t g = 0; g < groups_; ++g) {
        const index_t c0 = g * gs_, n = std::min(cols_, c0 + gs_) - c0;
        for (index_t c = 0; c < n; ++c) codes[static_cast<std::size_t>(c)] = code(r, c0 + c);
        auto p = folded_params(r, g);
        bcq_canonicalize<Bits>(p, codes.data(), n);
        packed.set_params(r, g, p);
        for (index_t c = 0; c < n; ++c) packed.set_code(r, c0 + c, codes[static_cast<std::size_t>(c)]);
      }
    return std::make_unique<QuantizedLinear<Format>>(std::move(packed));
  }

  std::int64_t steps() const { return steps_; }
  std::int64_t remapped_codes() const override { return remapped_; }

 private:
  float level(std::size_t k, std::uint32_t code) const {
    float L = kCenter;
    for (int i = 0; i < Bits; ++i) L += ((code >> i) & 1u) ? a_[k * Bits + i] : -a_[k * Bits + i];
    return L;
  }
  float min_abs_a(std::size_t k) const {
    float m = INFINITY;
    for (int i = 0; i < Bits; ++i) m = std::min(m, std::fabs(a_[k * Bits + i]));
    return m;
  }
  float to_integer_domain(std::size_t e, std::size_t k, index_t r) const {
    return w_[e] / std::exp(d1_[k] + d2_[e] + d3_[static_cast<std::size_t>(r)]) + z_[k];
  }

  // Local periodic mapping when due, then Ŵ from the current parameters.
  void refresh() const {
    if (period_ > 0 && steps_ >= next_remap_) {
      remap();
      next_remap_ = steps_ + period_;
    }
    what_.resize(w_.size());
    parallel_for(0, rows_, [&](index_t r0, index_t r1) {
      for (index_t r = r0; r < r1; ++r)
        for (index_t g = 0; g < groups_; ++g) {
          const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
          const float s = std::exp(d1_[k]), z = z_[k];
          for (index_t c = g * gs_; c < std::min(cols_, (g + 1) * gs_); ++c) {
            const std::size_t e = static_cast<std::size_t>(r * cols_ + c);
            what_[e] = (level(k, codes_[e]) - z) * s;
          }
        }
    });
  }

  // Every code moves to the nearest of its level and the two beside it (levels sorted by value).
  void remap() const {
    std::int64_t moved = 0;
    for (index_t r = 0; r < rows_; ++r)
      for (index_t g = 0; g < groups_; ++g) {
        const std::size_t k = static_cast<std::size_t>(r * groups_ + g);
        std::array<std::uint32_t, kLevels> order{};
        std::array<float, kLevels> value{};
        std::array<int, kLevels> rank{};
        std::iota(order.begin(), order.end(), 0u);
        for (std::uint32_t q = 0; q < kLevels; ++q) value[q] = level(k, q);
        std::stable_sort(order.begin(), order.end(), [&](std::uint32_t x, std::uint32_t y) { return value[x] < value[y]; });
        for (std::uint32_t i = 0; i < kLevels; ++i) rank[order[i]] = static_cast<int>(i);
        for (index_t c = g * gs_; c < std::min(cols_, (g + 1) * gs_); ++c) {
          const std::size_t e = static_cast<std::size_t>(r * cols_ + c);
          const float u = to_integer_domain(e, k, r);
          const int at = rank[codes_[e]];
          std::uint32_t best = codes_[e];
          float best_d = std::fabs(u - value[best]);
          for (int j : {at - 1, at + 1}) {
            if (j < 0 || j >= static_cast<int>(kLevels)) continue;
            const std::uint32_t q = order[static_cast<std::size_t>(j)];
            const float d = std::fabs(u - value[q]);
            if (d < best_d) {
              best_d = d;
              best = q;
            }
          }
          if (best != codes_[e]) {
            codes_[e] = static_cast<std::uint8_t>(best);
            ++moved;
          }
        }
      }
    remapped_ += moved;
  }

  index_t rows_ = 0, cols_ = 0, gs_ = 0, groups_ = 0;
  int period_ = 1;
  std::vector<float> w_, d1_, d2_, d3_, a_, z_;
  std::vector<float> g1_, g2_, g3_, ga_;
  mutable std::vector<std::uint8_t> codes_;
  mutable std::vector<float> what_;
  std::int64_t steps_ = 0;
  mutable std::int64_t next_remap_ = 0, remapped_ = 0;
};

}  // namespace lowbit::nn
