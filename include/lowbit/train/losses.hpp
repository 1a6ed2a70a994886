// Training and distillation losses over next-token logits [tokens, vocab] and over activations, each
// returning the mean loss and its gradient with respect to the student logits (or both MSE inputs).
// Softmaxes are never materialized: each row is reduced with a max-shifted log-sum-exp and the
// probabilities are recomputed on the fly, so extra memory is O(tokens), and rows run in parallel
// chunks. Templated on the scalar so tests check gradients by finite differences in double.
//
//   cross-entropy       −log p_S[y]                                  d/ds = p_S − onehot(y)
//   forward KL          KL(p_T‖p_S) = Σ p_T (log p_T − log p_S)      d/ds = p_S − p_T
//   reverse KL          KL(p_S‖p_T) = Σ p_S (log p_S − log p_T)      d/ds = p_S ⊙ (log p_S − log p_T − KL)
//   CAKLD (BitDistiller) β·KL(p_S‖p_T) + (1−β)·KL(p_T‖p_S), β = the teacher's mean top-1 probability
//   MSE                 mean((x − y)²)                               d/dx = 2(x − y)/N = −d/dy
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/tensor.hpp"

namespace lowbit::train {

// Rows per parallel chunk: a few rows of a 50k vocabulary are already ~1 MB of streaming work.
inline constexpr index_t kLossRowsPerChunk = 4;

// log Σ exp(x_j), shifted by the maximum so it never overflows.
template <class T>
double log_sum_exp(const T* x, index_t n) {
  T max_value = x[0];
  for (index_t j = 1; j < n; ++j) max_value = std::max(max_value, x[j]);
  double sum = 0.0;
  for (index_t j = 0; j < n; ++j) sum += static_cast<double>(std::exp(x[j] - max_value));
  return static_cast<double>(max_value) + std::log(sum);
}

namespace detail {
template <class T>
void check_same_shape(MatrixView<const T> a, MatrixView<const T> b, const char* what) {
  LOWBIT_CHECK(a.rows() == b.rows() && a.cols() == b.cols(), what, ": student logits are [", a.rows(), ", ",
               a.cols(), "] but teacher logits are [", b.rows(), ", ", b.cols(), "]");
}
template <class T>
void check_grad_shape(MatrixView<const T> logits, MatrixView<T> grad, const char* what) {
  LOWBIT_CHECK(grad.data == nullptr || (grad.rows() == logits.rows() && grad.cols() == logits.cols()), what,
               ": gradient is [", grad.rows(), ", ", grad.cols(), "], expected [", logits.rows(), ", ",
               logits.cols(), "]");
}
inline double sum_in_order(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}
}  // namespace detail

// Mean cross-entropy over rows whose target is not `ignore_index`. When `dlogits.data` is set it is
// overwritten with grad_scale · ∂loss/∂logits (ignored rows get zeros).
template <class T>
double cross_entropy(MatrixView<const T> logits, const std::int32_t* targets, MatrixView<T> dlogits = {},
                     double grad_scale = 1.0, std::int32_t ignore_index = -1) {
  detail::check_grad_shape(logits, dlogits, "cross_entropy");
  const index_t n = logits.rows(), vocab = logits.cols();
  index_t counted = 0;
  for (index_t r = 0; r < n; ++r) {
    if (targets[r] == ignore_index) continue;
    LOWBIT_CHECK(targets[r] >= 0 && targets[r] < vocab, "cross_entropy: target ", targets[r], " at row ", r,
                 " is outside the vocabulary [0, ", vocab, ")");
    ++counted;
  }
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
  const double scale = counted > 0 ? grad_scale / static_cast<double>(counted) : 0.0;
  parallel_for(
      0, n,
      [&](index_t lo, index_t hi) {
        for (index_t r = lo; r < hi; ++r) {
          const T* s = logits.row(r);
          T* g = dlogits.data ? dlogits.row(r) : nullptr;
          if (targets[r] == ignore_index) {
            if (g) std::fill(g, g + vocab, T(0));
            continue;
          }
          const double lse = log_sum_exp(s, vocab);
          row_loss[static_cast<std::size_t>(r)] = lse - static_cast<double>(s[targets[r]]);
          if (g) {
            for (index_t j = 0; j < vocab; ++j) g[j] = static_cast<T>(scale * std::exp(static_cast<double>(s[j]) - lse));
            g[targets[r]] -= static_cast<T>(scale);
          }
        }
      },
      kLossRowsPerChunk);
  return counted > 0 ? detail::sum_in_order(row_loss) / static_cast<double>(counted) : 0.0;
}

// CE is not a distillation loss but the ablation's baseline: the student's cross-entropy on the data's next
// tokens, the teacher unused.
enum class DistillLoss { ForwardKL, ReverseKL, CAKLD, CE };

inline DistillLoss parse_distill_loss(const std::string& name) {
  if (name == "kl" || name == "forward_kl" || name == "fkl") return DistillLoss::ForwardKL;
  if (name == "reverse_kl" || name == "rkl") return DistillLoss::ReverseKL;
  if (name == "cakld") return DistillLoss::CAKLD;
  if (name == "ce") return DistillLoss::CE;
  fail("unknown distillation loss '", name, "' (expected cakld, kl, reverse_kl or ce)");
}

// Mean over rows of β·KL(p_S‖p_T) + (1−β)·KL(p_T‖p_S): β = 0 is forward KL, β = 1 reverse KL.
// When `dstudent.data` is set it is overwritten with grad_scale · ∂loss/∂student.
template <class T>
double mixed_kl(MatrixView<const T> student, MatrixView<const T> teacher, double beta, MatrixView<T> dstudent = {},
                double grad_scale = 1.0) {
  detail::check_same_shape(student, teacher, "kl");
  detail::check_grad_shape(student, dstudent, "kl");
  const index_t n = student.rows(), vocab = student.cols();
  if (n == 0) return 0.0;
  std::vector<double> row_loss(static_cast<std::size_t>(n), 0.0);
  const double scale = grad_scale / static_cast<double>(n);
  parallel_for(
      0, n,
      [&](index_t lo, index_t hi) {
        for (index_t r = lo; r < hi; ++r) {
          const T* s = student.row(r);
          const T* t = teacher.row(r);
          const double lse_s = log_sum_exp(s, vocab), lse_t = log_sum_exp(t, vocab);
          double forward = 0.0, reverse = 0.0;
          for (index_t j = 0; j < vocab; ++j) {
            const double log_ps = static_cast<double>(s[j]) - lse_s, log_pt = static_cast<double>(t[j]) - lse_t;
            const double ps = std::exp(log_ps), pt = std::exp(log_pt);
            forward += pt * (log_pt - log_ps);
            reverse += ps * (log_ps - log_pt);
          }
          row_loss[static_cast<std::size_t>(r)] = beta * reverse + (1.0 - beta) * forward;
          if (T* g = dstudent.data ? dstudent.row(r) : nullptr) {
            for (index_t j = 0; j < vocab; ++j) {
              const double log_ps = static_cast<double>(s[j]) - lse_s, log_pt = static_cast<double>(t[j]) - lse_t;
              const double ps = std::exp(log_ps), pt = std::exp(log_pt);
              const double d_forward = ps - pt;
              const double d_reverse = ps * (log_ps - log_pt - reverse);
              g[j] = static_cast<T>(scale * (beta * d_reverse + (1.0 - beta) * d_forward));
            }
          }
        }
      },
      kLossRowsPerChunk);
  return detail::sum_in_order(row_loss) / static_cast<double>(n);
}

template <class T>
double forward_kl(MatrixView<const T> student, MatrixView<const T> teacher, MatrixView<T> dstudent = {},
                  double grad_scale = 1.0) {
  return mixed_kl(student, teacher, 0.0, dstudent, grad_scale);
}
template <class T>
double reverse_kl(MatrixView<const T> student, MatrixView<const T> teacher, MatrixView<T> dstudent = {},
                  double grad_scale = 1.0) {
  return mixed_kl(student, teacher, 1.0, dstudent, grad_scale);
}
// BitDistiller's confidence-aware KL; `beta` from teacher_mean_top1_probability().
template <class T>
double cakld(MatrixView<const T> student, MatrixView<const T> teacher, double beta, MatrixView<T> dstudent = {},
             double grad_scale = 1.0) {
  LOWBIT_CHECK(beta >= 0.0 && beta <= 1.0, "cakld: beta ", beta, " is outside [0, 1]");
  return mixed_kl(student, teacher, beta, dstudent, grad_scale);
}

// Σ over rows of the teacher's largest softmax probability, and the row count, so estimates over many
// batches can be pooled; β = sum / rows.
struct Top1Probability {
  double sum = 0.0;
  index_t rows = 0;
  double mean() const { return rows > 0 ? sum / static_cast<double>(rows) : 0.0; }
  void add(const Top1Probability& o) {
    sum += o.sum;
    rows += o.rows;
  }
};

template <class T>
Top1Probability teacher_top1_probability(MatrixView<const T> teacher) {
  const index_t n = teacher.rows(), vocab = teacher.cols();
  std::vector<double> top(static_cast<std::size_t>(n), 0.0);
  parallel_for(
      0, n,
      [&](index_t lo, index_t hi) {
        for (index_t r = lo; r < hi; ++r) {
          const T* t = teacher.row(r);
          const double max_value = static_cast<double>(*std::max_element(t, t + vocab));
          top[static_cast<std::size_t>(r)] = std::exp(max_value - log_sum_exp(t, vocab));
        }
      },
      kLossRowsPerChunk);
  return {detail::sum_in_order(top), n};
}

// `targets` (next tokens, -1 ignored) are read by CE only.
template <class T>
double distill_loss(DistillLoss kind, MatrixView<const T> student, MatrixView<const T> teacher, double cakld_beta,
                    MatrixView<T> dstudent = {}, double grad_scale = 1.0, const std::int32_t* targets = nullptr) {
  switch (kind) {
    case DistillLoss::CE:
      LOWBIT_CHECK(targets, "distill_loss: cross-entropy needs the next tokens");
      return cross_entropy(student, targets, dstudent, grad_scale);
    case DistillLoss::ForwardKL: return mixed_kl(student, teacher, 0.0, dstudent, grad_scale);
    case DistillLoss::ReverseKL: return mixed_kl(student, teacher, 1.0, dstudent, grad_scale);
    case DistillLoss::CAKLD: return cakld(student, teacher, cakld_beta, dstudent, grad_scale);
  }
  return 0.0;
}

// mean((x − y)²) over `count` elements; dx and/or dy (when non-null) are overwritten with
// grad_scale · ∂loss/∂x and grad_scale · ∂loss/∂y.
template <class T>
double mse(const T* x, const T* y, index_t count, T* dx = nullptr, T* dy = nullptr, double grad_scale = 1.0) {
  if (count == 0) return 0.0;
  constexpr index_t kChunk = 1 << 14;
  const index_t chunks = (count + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
  const double scale = 2.0 * grad_scale / static_cast<double>(count);
  parallel_for(0, chunks, [&](index_t c_lo, index_t c_hi) {
    for (index_t c = c_lo; c < c_hi; ++c) {
      double sum = 0.0;
      const index_t end = std::min(count, (c + 1) * kChunk);
      for (index_t i = c * kChunk; i < end; ++i) {
        const double diff = static_cast<double>(x[i]) - static_cast<double>(y[i]);
        sum += diff * diff;
        if (dx) dx[i] = static_cast<T>(scale * diff);
        if (dy) dy[i] = static_cast<T>(-scale * diff);
      }
      partial[static_cast<std::size_t>(c)] = sum;
    }
  });
  return detail::sum_in_order(partial) / static_cast<double>(count);
}

}  // namespace lowbit::train
