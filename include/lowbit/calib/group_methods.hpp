// The group-grid calibration methods: RTN, GPTQ, AutoClip and AutoClip+GPTQ, for every registered
// format with the GroupGridFormat capability (uniform and NF3 grids; format/concepts.hpp). AutoClip
// (BitDistiller's clipping search) first shrinks each group's range against sampled inputs, then RTN or
// GPTQ fills the grid. A BCQ format is a group grid too (its fit is the uniform grid), but its `rtn` is its
// own default quantization, the greedy residual fit (quantizer/bcq.hpp).
#pragma once

#include <algorithm>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../formats.hpp"
#include "../nn/quantized_linear.hpp"
#include "autoclip.hpp"
#include "gptq.hpp"
#include "method.hpp"
#include "rtn.hpp"

namespace lowbit::calib {

struct GroupMethodOptions {
  GptqOptions gptq;
  AutoClipOptions autoclip;
  bool autoclip_qk = false;  // BitDistiller skips q/k projections

  // What changes the result of `method` (unused knobs are left out, so they do not split fingerprints).
  nlohmann::json to_json(const std::string& method) const {
    nlohmann::json j = nlohmann::json::object();
    if (method == "gptq" || method == "autoclip+gptq") {
      j["damp"] = gptq.percdamp;
      j["gptq_block_size"] = gptq.block_size;
      j["act_order"] = gptq.act_order;
      j["static_groups"] = gptq.static_groups;
    }
    if (method == "autoclip" || method == "autoclip+gptq") {
      j["autoclip_n_grid"] = autoclip.n_grid;
      j["autoclip_max_shrink"] = autoclip.max_shrink;
      j["autoclip_qk"] = autoclip_qk;
    }
    return j;
  }
};

inline constexpr auto group_grid_formats = []<class F>() { return GroupGridFormat<F>; };

namespace detail {

// The job's weight, clamped to AutoClip's ranges when `method` clips (q/k projections skipped unless asked);
// the search's errors go to `stats`.
template <class Format>
std::vector<float> clipped_weight(const std::string& method, const GroupMethodOptions& o, const LinearJob& job,
                                  nlohmann::json& stats) {
  const index_t rows = job.weight.rows(), cols = job.weight.cols();
  std::vector<float> W(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r) std::copy_n(job.weight.row(r), cols, W.data() + r * cols);
  const bool clip = method == "autoclip" || method == "autoclip+gptq";
  const bool skip_clip = !o.autoclip_qk && (job.role == nn::LinearRole::Q || job.role == nn::LinearRole::K);
  if (clip && !skip_clip) {
    LOWBIT_CHECK(job.sample_inputs.rows() > 0, job.name, ": autoclip needs sampled inputs");
    const auto C = gram_from_tokens(job.sample_inputs);
    const auto s = autoclip_apply<Format>(MatrixView<float>(W.data(), rows, cols), C, o.autoclip);
    stats["autoclip_error_before"] = s.error_before;
    stats["autoclip_error_after"] = s.error_after;
    stats["autoclip_clipped_groups"] = s.clipped_groups;
  }
  return W;
}

template <class Format>
LinearOutcome run_group_method(const std::string& method, const GroupMethodOptions& o, const LinearJob& job) {
  const index_t rows = job.weight.rows(), cols = job.weight.cols();
  LinearOutcome out;
  const std::vector<float> W = clipped_weight<Format>(method, o, job, out.stats);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  if (method == "gptq" || method == "autoclip+gptq") {
    LOWBIT_CHECK(job.hessian && job.hessian->rows() > 0, job.name, ": gptq needs the input Hessian");
    GptqStats s;
    auto packed = gptq_quantize<Format>(Wv, job.hessian->gptq_hessian(), o.gptq, &s);
    out.stats["gptq_proxy_loss"] = s.proxy_loss;
    out.stats["dead_columns"] = s.dead_columns;
    if (s.dampening_retries) out.stats["dampening_retries"] = s.dampening_retries;
    out.layer = std::make_unique<nn::QuantizedLinear<Format>>(std::move(packed));
  } else if constexpr (BCQFormat<Format>) {
    out.layer = std::make_unique<nn::QuantizedLinear<Format>>(
        method == "rtn" ? Quantizer<Format>::quantize(Wv) : rtn_quantize<Format>(Wv));
  } else {
    out.layer = std::make_unique<nn::QuantizedLinear<Format>>(rtn_quantize<Format>(Wv));
  }
  return out;
}

}  // namespace detail

// `method` is rtn, gptq, autoclip or autoclip+gptq.
inline Method group_method(const std::string& method, const GroupMethodOptions& options = {}) {
  LOWBIT_CHECK(method == "rtn" || method == "gptq" || method == "autoclip" || method == "autoclip+gptq",
               "unknown calibration method '", method, "' (known: rtn, gptq, autoclip, autoclip+gptq)");
  Method m;
  m.name = method;
  m.capability = "group-grid format";
  m.accepts = accepts_formats_where(group_grid_formats);
  m.needs_hessian = method == "gptq" || method == "autoclip+gptq";
  m.needs_samples = method == "autoclip" || method == "autoclip+gptq";
  m.options = options.to_json(method);
  m.run = [method, options](const LinearJob& job) {
    return visit_format_if(
        job.format, group_grid_formats,
        [&]<class F>(FormatTag<F>) { return detail::run_group_method<F>(method, options, job); },
        "group-grid format");
  };
  return m;
}

}  // namespace lowbit::calib
