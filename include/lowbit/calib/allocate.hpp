// Mixed-precision bit allocation (ALGORITHMS.md §5, docs/allocation.md): measure how much each tensor's
// quantization hurts the model in every candidate format, then choose one format per tensor under a
// budget of bytes.
//
//   1. Sensitivity. Every linear is quantized by every candidate (method + format) on the FP model's own
//      calibration inputs (the pipeline of calib/pipeline.hpp with FP propagation and a probe method), and
//      each result gets a cheap proxy: its mean output error tr(ΔW·XᵀX·ΔWᵀ)/n. Then the FP model with only
//      that one tensor swapped in is run over calibration windows (from the tensor's block on: the blocks
//      before it see FP inputs) and its KL divergence to the FP model is measured: for one reference
//      candidate per tensor (`measure_all` false), whose KL / proxy ratio α scales the proxy of the others
//      (HIGGS' linearity: the loss grows linearly in each tensor's output error), or for all of them. The
//      token table / output head is a tensor too, with RTN candidates measured directly.
//   2. Allocation. Predicted loss = Σ per-tensor KL. `knapsack` minimizes it exactly under the budget
//      (calib/knapsack.hpp); `uniform`, `block-adversary` (the seed's rule with its FP reference fixed
//      and the budget binding) and `role-depth` (llama.cpp's use_more_bits rule) are the baselines, all
//      two-level: the dearest candidate whose uniform plan fits, and the cheapest one a whole bit above it.
//   3. An AllocationPlan (JSON) names each tensor's method and format; `lowbit quantize --plan` runs it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../core/progress.hpp"
#include "../eval/log_softmax.hpp"
#include "../formats.hpp"
#include "../nn/model.hpp"
#include "../nn/stored_linear.hpp"
#include "knapsack.hpp"
#include "method.hpp"
#include "pipeline.hpp"
#include "tables.hpp"

namespace lowbit::calib {

// ---- candidates ---------------------------------------------------------------------------------

struct Candidate {
  std::string method;  // a calibration method name ("gptq"); "rtn" for the token table / head
  std::string format;  // a registered format, or "f32" (tables only)
  std::string label() const { return method + ":" + format; }
  bool operator==(const Candidate&) const = default;
};

// "gptq:uniform:2:128,rtn:uniform:4:64" (comma-separated METHOD:FORMAT).
inline std::vector<Candidate> parse_candidates(const std::string& text, const char* what) {
  std::vector<Candidate> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const auto end = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, end - start);
    const auto colon = item.find(':');
    LOWBIT_CHECK(colon != std::string::npos && colon > 0 && colon + 1 < item.size(), what, ": '", item,
                 "' is not METHOD:FORMAT (e.g. gptq:uniform:3:128)");
    Candidate c{item.substr(0, colon), item.substr(colon + 1)};
    LOWBIT_CHECK(c.format == "f32" || is_registered_format(c.format), what, ": unknown format '", c.format,
                 "' (registered: ", lowbit::detail::joined(format_names()), ")");
    LOWBIT_CHECK(std::find(out.begin(), out.end(), c) == out.end(), what, ": '", item, "' is listed twice");
    out.push_back(std::move(c));
    start = end + 1;
  }
  LOWBIT_CHECK(!out.empty(), what, ": no candidate");
  return out;
}

// The group length (input columns per scale) a descriptor names, 0 for whole rows or none.
inline index_t format_group_size(const std::string& descriptor) {
  std::vector<std::string> f;
  for (std::size_t s = 0, e; s <= descriptor.size(); s = e + 1) {
    e = std::min(descriptor.find(':', s), descriptor.size());
    f.push_back(descriptor.substr(s, e - s));
  }
  std::size_t field = 0;
  if (f[0] == "uniform" || f[0] == "bcq") field = 2;
  else if (f[0] == "nf3") field = 1;
  else if (f[0] == "additive") field = 3;
  if (field == 0 || field >= f.size() || f[field].empty() ||
      !std::all_of(f[field].begin(), f[field].end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return 0;
  return static_cast<index_t>(std::stoll(f[field]));
}

// A candidate cannot apply to a tensor whose rows are shorter than its groups.
inline void check_candidate_fits(const Candidate& c, const std::string& tensor, index_t cols) {
  const index_t g = format_group_size(c.format);
  LOWBIT_CHECK(g <= cols, "candidate ", c.label(), " cannot apply to ", tensor, ": its groups of ", g,
               " columns are longer than the tensor's rows of ", cols, " (use a smaller group size)");
}

// ---- the sensitivity table ----------------------------------------------------------------------

inline constexpr double kNotMeasured = std::numeric_limits<double>::quiet_NaN();

struct SensitivityEntry {
  std::uint64_t bytes = 0;        // the tensor's bytes in this candidate, as stored
  double proxy = kNotMeasured;    // tr(ΔW·XᵀX·ΔWᵀ)/n: mean squared output error per token (linears)
  double measured = kNotMeasured; // KL(FP ‖ FP with only this tensor quantized), nats per token
  double predicted = 0;           // `measured`, or α·proxy
};

struct TensorSensitivity {
  std::string name;  // "layers.3.attention.wq", or "tok_embeddings" / "output" for the tables
  int layer = -1;    // -1 for a table
  std::string role;  // "attention.wq" ... "feed_forward.w2", or "table" / "head"
  index_t rows = 0, cols = 0;
  double alpha = kNotMeasured;  // KL per unit of proxy, from the reference candidate
  int reference = -1;           // the candidate whose KL was measured to fit alpha
  std::vector<SensitivityEntry> entries;  // one per candidate of its kind (linear or table candidates)
  bool is_table() const { return layer < 0; }
  // The linear's role (a linear only: `role` is one of nn::linear_role_name's names).
  nn::LinearRole linear_role() const {
    for (auto r : nn::kAllLinearRoles)
      if (role == nn::linear_role_name(r)) return r;
    fail("sensitivity: tensor ", name, " has no linear role ('", role, "')");
  }
};

struct SensitivityTable {
  nlohmann::json source = nlohmann::json::object();  // model, fingerprint, calibration settings
  std::vector<Candidate> candidates;        // for the linears
  std::vector<Candidate> table_candidates;  // for the token table / head (method "rtn")
  std::vector<TensorSensitivity> tensors;   // linears in model order, then the table(s)
  std::uint64_t norm_bytes = 0;             // fp32 norms: a fixed cost in the whole-model scope
  double table_weights = 0;                 // weights of the token table and head (a tied table once)
  bool tied = true;

  const std::vector<Candidate>& candidates_of(const TensorSensitivity& t) const {
    return t.is_table() ? table_candidates : candidates;
  }
  double linear_weights() const {
    double n = 0;
    for (const auto& t : tensors)
      if (!t.is_table()) n += static_cast<double>(t.rows) * static_cast<double>(t.cols);
    return n;
  }
  double all_weights() const {  // every weight as eval::model_storage counts it (a tied table once)
    return static_cast<double>(norm_bytes) / 4.0 + table_weights + linear_weights();
  }

  nlohmann::json to_json() const {
    auto cand = [](const std::vector<Candidate>& v) {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& c : v) a.push_back(c.label());
      return a;
    };
    auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : tensors) {
      nlohmann::json es = nlohmann::json::array();
      for (const auto& e : t.entries)
        es.push_back({{"bytes", e.bytes}, {"proxy", num(e.proxy)}, {"measured_kl", num(e.measured)},
                      {"predicted_kl", e.predicted}});
      ts.push_back({{"name", t.name}, {"layer", t.layer}, {"role", t.role}, {"rows", t.rows}, {"cols", t.cols},
                    {"alpha", num(t.alpha)}, {"reference", t.reference}, {"entries", es}});
    }
    return {{"kind", "lowbit-sensitivity"}, {"version", 1},  {"source", source},
            {"candidates", cand(candidates)}, {"table_candidates", cand(table_candidates)},
            {"norm_bytes", norm_bytes}, {"table_weights", table_weights}, {"tied", tied}, {"tensors", ts}};
  }

  static SensitivityTable from_json(const nlohmann::json& j, const std::string& where) {
    try {
      LOWBIT_CHECK(j.value("kind", std::string()) == "lowbit-sensitivity" && j.value("version", 0) == 1, where,
                   ": not a lowbit sensitivity file (kind 'lowbit-sensitivity', version 1)");
      SensitivityTable s;
      s.source = j.at("source");
      auto cand = [&](const char* key) {
        std::string text;
        for (const auto& c : j.at(key)) {
          if (!text.empty()) text += ',';
          text += c.get<std::string>();
        }
        return text.empty() ? std::vector<Candidate>{} : parse_candidates(text, key);
      };
      s.candidates = cand("candidates");
      s.table_candidates = cand("table_candidates");
      s.norm_bytes = j.at("norm_bytes").get<std::uint64_t>();
      s.table_weights = j.at("table_weights").get<double>();
      s.tied = j.at("tied").get<bool>();
      auto num = [](const nlohmann::json& v) { return v.is_null() ? kNotMeasured : v.get<double>(); };
      for (const auto& tj : j.at("tensors")) {
        TensorSensitivity t;
        t.name = tj.at("name").get<std::string>();
        t.layer = tj.at("layer").get<int>();
        t.role = tj.at("role").get<std::string>();
        t.rows = tj.at("rows").get<index_t>();
        t.cols = tj.at("cols").get<index_t>();
        t.alpha = num(tj.at("alpha"));
        t.reference = tj.at("reference").get<int>();
        for (const auto& ej : tj.at("entries"))
          t.entries.push_back({ej.at("bytes").get<std::uint64_t>(), num(ej.at("proxy")), num(ej.at("measured_kl")),
                               ej.at("predicted_kl").get<double>()});
        LOWBIT_CHECK(t.entries.size() == s.candidates_of(t).size(), where, ": tensor ", t.name, " has ",
                     t.entries.size(), " entries for ", s.candidates_of(t).size(), " candidates");
        for (const auto& e : t.entries)
          LOWBIT_CHECK(std::isfinite(e.predicted) && e.predicted >= 0, where, ": tensor ", t.name,
                       " has a negative or non-finite predicted KL");
        s.tensors.push_back(std::move(t));
      }
      LOWBIT_CHECK(!s.tensors.empty(), where, ": no tensors");
      return s;
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": malformed sensitivity file (", e.what(), ")");
    }
  }
};

// A sensitivity file read back must describe `c`'s tensors, in the order measure_sensitivity writes
// them, with costs a tensor of that shape can have (≤ 64 bits per weight plus 1 MiB): a file for another
// model, or a forged one, is refused before its numbers size anything.
inline void check_sensitivity_matches(const SensitivityTable& s, const nn::ModelConfig& c, const std::string& where) {
  const std::size_t linears = static_cast<std::size_t>(c.n_layers) * nn::kLinearRoles;
  const std::size_t tables = s.table_candidates.empty() ? 0 : (c.tied_embeddings ? 1 : 2);
  LOWBIT_CHECK(s.tensors.size() == linears + tables, where, ": ", s.tensors.size(), " tensors, the model has ", linears,
               " linears", tables ? " and its token table / head" : "");
  LOWBIT_CHECK(s.tied == c.tied_embeddings && s.table_weights == static_cast<double>(c.vocab_size) * c.dim * (c.tied_embeddings ? 1 : 2) &&
                   s.norm_bytes == static_cast<std::uint64_t>(c.dim) * (2 * static_cast<std::uint64_t>(c.n_layers) + 1) * 4,
               where, ": its token table, head or norms differ from the model's");
  for (std::size_t i = 0; i < s.tensors.size(); ++i) {
    const auto& t = s.tensors[i];
    std::string name;
    std::pair<index_t, index_t> shape{c.vocab_size, c.dim};
    if (i < linears) {
      const auto role = nn::kAllLinearRoles[i % nn::kLinearRoles];
      name = nn::ModelWeights::layer_name(static_cast<int>(i / nn::kLinearRoles), nn::linear_role_name(role));
      shape = nn::linear_role_shape(c, role);
    } else {
      name = i == linears ? "tok_embeddings" : "output";
    }
    LOWBIT_CHECK(t.name == name && t.rows == shape.first && t.cols == shape.second &&
                     t.layer == (i < linears ? static_cast<int>(i / nn::kLinearRoles) : -1),
                 where, ": tensor ", i, " is ", t.name, " [", t.rows, ", ", t.cols, "], the model's is ", name, " [",
                 shape.first, ", ", shape.second, "]");
    const double most = static_cast<double>(t.rows) * static_cast<double>(t.cols) * 8.0 + (1 << 20);
    for (const auto& e : t.entries)
      LOWBIT_CHECK(e.bytes > 0 && static_cast<double>(e.bytes) <= most, where, ": ", t.name, " has a cost of ", e.bytes,
                   " bytes, impossible for its shape");
    LOWBIT_CHECK(t.reference < static_cast<int>(t.entries.size()), where, ": ", t.name, " names a reference candidate ",
                 t.reference, " of ", t.entries.size());
  }
}

// ---- the KL probe -------------------------------------------------------------------------------

// KL(FP ‖ model) over fixed calibration windows, from any block on: the FP inputs of every block and the
// FP log-probabilities are computed once, so a model that differs from FP only from block b on runs
// blocks b.. and the head (first_layer -1: from the embedding, for a changed token table).
class KlProbe {
 public:
  KlProbe(nn::Llama& fp, std::vector<std::int32_t> tokens, int seqlen, int batch_sequences)
      : tokens_(std::move(tokens)), T_(seqlen), dim_(fp.config().dim), V_(fp.config().vocab_size) {
    LOWBIT_CHECK(seqlen > 0 && !tokens_.empty() && tokens_.size() % static_cast<std::size_t>(seqlen) == 0,
                 "KL probe: ", tokens_.size(), " tokens are not whole windows of ", seqlen);
    N_ = static_cast<int>(tokens_.size() / static_cast<std::size_t>(seqlen));
    batch_ = std::max(1, std::min(batch_sequences, N_));
    const index_t n = static_cast<index_t>(tokens_.size());
    inputs_.resize(static_cast<std::size_t>(fp.config().n_layers));
    std::vector<float> x(static_cast<std::size_t>(n * dim_));
    fp.embed(tokens_.data(), n, x.data());
    for (int l = 0; l < fp.config().n_layers; ++l) {
      inputs_[static_cast<std::size_t>(l)] = x;
      for_batches([&](int s0, int B) { fp.block_forward(l, x.data() + static_cast<index_t>(s0) * T_ * dim_, B, T_); });
    }
    reference_.resize(static_cast<std::size_t>(n * V_));
    fp.head_forward(x.data(), n, reference_.data());
    parallel_for(0, n, [&](index_t b, index_t e) {
      for (index_t r = b; r < e; ++r) {
        float* row = reference_.data() + r * V_;
        const double lse = eval::log_sum_exp(row, static_cast<int>(V_));
        for (index_t v = 0; v < V_; ++v) row[v] = static_cast<float>(row[v] - lse);
      }
    });
  }

  // Mean KL(FP ‖ model) per token; `model` must equal the FP model before block `first_layer`.
  double kl(nn::Llama& model, int first_layer) {
    const index_t n = static_cast<index_t>(tokens_.size());
    double total = 0;
    std::vector<float> x, logits;
    for_batches([&](int s0, int B) {
      const index_t rows = static_cast<index_t>(B) * T_, r0 = static_cast<index_t>(s0) * T_;
      if (first_layer < 0) {
        x.resize(static_cast<std::size_t>(rows * dim_));
        model.embed(tokens_.data() + r0, rows, x.data());
      } else {
        const auto& in = inputs_[static_cast<std::size_t>(first_layer)];
        x.assign(in.begin() + r0 * dim_, in.begin() + (r0 + rows) * dim_);
      }
      for (int l = std::max(0, first_layer); l < model.config().n_layers; ++l) model.block_forward(l, x.data(), B, T_);
      logits.resize(static_cast<std::size_t>(rows * V_));
      model.head_forward(x.data(), rows, logits.data());
      std::vector<double> part(static_cast<std::size_t>(rows));
      parallel_for(0, rows, [&](index_t b, index_t e) {
        for (index_t r = b; r < e; ++r) {
          const float* m = logits.data() + r * V_;
          const float* ref = reference_.data() + (r0 + r) * V_;
          const double lse = eval::log_sum_exp(m, static_cast<int>(V_));
          double k = 0;
          for (index_t v = 0; v < V_; ++v) k += std::exp(double(ref[v])) * (double(ref[v]) - (double(m[v]) - lse));
          part[static_cast<std::size_t>(r)] = k;
        }
      });
      for (double p : part) total += p;  // fixed order: independent of the thread count
    });
    return std::max(0.0, total / static_cast<double>(n));
  }

  index_t tokens() const { return static_cast<index_t>(tokens_.size()); }

 private:
  template <class Fn>
  void for_batches(Fn&& fn) {
    for (int s0 = 0; s0 < N_; s0 += batch_) fn(s0, std::min(batch_, N_ - s0));
  }
  std::vector<std::int32_t> tokens_;
  int T_ = 0, N_ = 0, batch_ = 1;
  index_t dim_ = 0, V_ = 0;
  std::vector<std::vector<float>> inputs_;  // [layer] -> that block's FP input [n, dim]
  std::vector<float> reference_;            // FP log-probabilities [n, V]
};

// tr(ΔW·S·ΔWᵀ)/rows with S = Σ xᵀx over `rows` input rows: the mean over tokens of ‖ΔW x‖².
inline double output_error(MatrixView<const float> dW, const HessianAccumulator& h) {
  LOWBIT_CHECK(dW.cols() == h.features() && h.rows() > 0, "output_error: ", dW.cols(), " columns against a ",
               h.features(), "-feature Hessian of ", h.rows(), " rows");
  const Eigen::MatrixXf S = h.sum().cast<float>();
  Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0, Eigen::OuterStride<>> D(
      dW.data, dW.rows(), dW.cols(), Eigen::OuterStride<>(dW.row_stride()));
  const Eigen::MatrixXf DS = D * S;
  return static_cast<double>(DS.cwiseProduct(D).sum()) / static_cast<double>(h.rows());
}

// ---- measuring ----------------------------------------------------------------------------------

struct SensitivityOptions {
  std::vector<std::pair<Candidate, Method>> candidates;  // linear candidates with their built methods
  std::vector<std::string> table_formats;                // RTN formats for the token table / head ("f32" allowed)
  bool measure_all = false;  // measure the KL of every candidate, not only the reference's
  int kl_samples = 4;        // calibration windows the KL is measured on (the first ones drawn)
  int kl_seqlen = 256;       // their length (a prefix of each window)
  bool quiet = false;
};

// What the sensitivity pass leaves besides the table: every candidate layer, to measure whole plans.
struct CandidateLayers {
  std::map<std::string, std::vector<nn::LinearPtr>> layers;  // tensor name -> one layer per candidate
};

// The windows the KL is measured on: the first kl_samples calibration windows, cut to kl_seqlen.
inline std::vector<std::int32_t> kl_windows(const std::vector<std::int32_t>& tokens, int seqlen,
                                            const SensitivityOptions& opt) {
  std::vector<std::int32_t> out;
  for (int s = 0; s < opt.kl_samples; ++s)
    out.insert(out.end(), tokens.begin() + static_cast<std::ptrdiff_t>(s) * seqlen,
               tokens.begin() + static_cast<std::ptrdiff_t>(s) * seqlen + opt.kl_seqlen);
  return out;
}

// The reference candidate of a tensor: the cheapest (the largest error, the clearest KL signal).
inline int reference_candidate(const TensorSensitivity& t) {
  int best = 0;
  for (std::size_t k = 1; k < t.entries.size(); ++k)
    if (t.entries[k].bytes < t.entries[static_cast<std::size_t>(best)].bytes) best = static_cast<int>(k);
  return best;
}

// Fills `predicted` from the measurements: measured where measured, else alpha·proxy.
inline void predict_from_reference(TensorSensitivity& t) {
  const auto& ref = t.entries[static_cast<std::size_t>(t.reference)];
  t.alpha = ref.proxy > 0 ? ref.measured / ref.proxy : 0.0;
  for (auto& e : t.entries)
    e.predicted = !std::isnan(e.measured) ? e.measured : (std::isnan(e.proxy) ? 0.0 : t.alpha * e.proxy);
}

// The sensitivity pass. `work` is the FP model the probe calibration runs on (its linears are replaced
// by throwaway RTN layers); `load_fp` loads a fresh FP model (the KL reference, and the base of every
// table candidate). `tokens` are the calibration windows [cfg.nsamples, cfg.seqlen].
inline SensitivityTable measure_sensitivity(nn::Llama& work, const std::function<nn::Llama()>& load_fp,
                                            const std::vector<std::int32_t>& tokens, CalibrationConfig cfg,
                                            const SensitivityOptions& opt, CandidateLayers* keep = nullptr) {
  const auto& mc = work.config();
  LOWBIT_CHECK(!opt.candidates.empty(), "sensitivity: no candidate");
  LOWBIT_CHECK(opt.kl_samples >= 1 && opt.kl_samples <= cfg.nsamples, "sensitivity: --kl-samples ", opt.kl_samples,
               " must be in [1, --nsamples ", cfg.nsamples, "]");
  LOWBIT_CHECK(opt.kl_seqlen >= 2 && opt.kl_seqlen <= cfg.seqlen, "sensitivity: --kl-seqlen ", opt.kl_seqlen,
               " must be in [2, --seqlen ", cfg.seqlen, "]");
  SensitivityTable table;
  table.tied = mc.tied_embeddings;
  table.norm_bytes = static_cast<std::uint64_t>(mc.dim) * (2 * static_cast<std::uint64_t>(mc.n_layers) + 1) * 4;
  table.table_weights = static_cast<double>(mc.vocab_size) * mc.dim * (mc.tied_embeddings ? 1 : 2);
  for (const auto& [c, m] : opt.candidates) table.candidates.push_back(c);
  for (const auto& f : opt.table_formats) table.table_candidates.push_back({"rtn", f});
  for (int l = 0; l < mc.n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      const auto& lin = work.linear(l, role);
      const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
      for (const auto& c : table.candidates) check_candidate_fits(c, name, lin.in_features());
      table.tensors.push_back({name, l, nn::linear_role_name(role), lin.out_features(), lin.in_features(), kNotMeasured,
                               -1, std::vector<SensitivityEntry>(table.candidates.size())});
    }
  if (!table.table_candidates.empty()) {
    const std::vector<std::pair<const char*, const char*>> tabs =
        table.tied ? std::vector<std::pair<const char*, const char*>>{{"tok_embeddings", "table"}}
                   : std::vector<std::pair<const char*, const char*>>{{"tok_embeddings", "table"}, {"output", "head"}};
    for (const auto& [name, role] : tabs) {
      for (const auto& c : table.table_candidates) check_candidate_fits(c, name, mc.dim);
      table.tensors.push_back({name, -1, role, mc.vocab_size, mc.dim, kNotMeasured, -1,
                               std::vector<SensitivityEntry>(table.table_candidates.size())});
    }
  }
  std::map<std::string, std::size_t> index;
  for (std::size_t i = 0; i < table.tensors.size(); ++i) index[table.tensors[i].name] = i;

  // 1. Every candidate on every linear, on the FP inputs (a probe method inside the pipeline).
  CandidateLayers local;
  CandidateLayers& layers = keep ? *keep : local;
  Method probe;
  probe.name = "sensitivity-probe";
  probe.needs_hessian = true;
  for (const auto& [c, m] : opt.candidates) probe.needs_samples = probe.needs_samples || m.needs_samples;
  probe.run = [&](const LinearJob& job) {
    auto& t = table.tensors[index.at(job.name)];
    auto& slot = layers.layers[job.name];
    slot.clear();
    std::vector<float> dW(static_cast<std::size_t>(job.weight.rows() * job.weight.cols()));
    for (std::size_t k = 0; k < opt.candidates.size(); ++k) {
      const auto& [c, m] = opt.candidates[k];
      LinearJob j = job;
      j.format = c.format;
      if (!m.needs_hessian) j.hessian = nullptr;
      LinearOutcome out = m.run(j);
      LOWBIT_CHECK(out.layer && out.layer->format() == c.format, job.name, ": candidate ", c.label(),
                   " produced format '", out.layer ? out.layer->format() : std::string("none"), "'");
      MatrixView<float> D(dW.data(), job.weight.rows(), job.weight.cols());
      out.layer->dequantize(D);
      for (index_t r = 0; r < D.rows(); ++r)
        for (index_t i = 0; i < D.cols(); ++i) D(r, i) -= job.weight(r, i);
      t.entries[k].bytes = out.layer->bytes();
      t.entries[k].proxy = output_error(MatrixView<const float>(dW.data(), D.rows(), D.cols()), *job.hessian);
      out.layer->release_workspace();
      slot.push_back(std::move(out.layer));
    }
    return LinearOutcome{nn::make_rtn_linear(opt.candidates[0].first.format, job.weight), {}};
  };
  QuantizationPlan plan;
  plan.add(".*", probe, opt.candidates[0].first.format);
  cfg.propagate_quantized = false;
  calibrate_model(work, tokens, cfg, plan);

  // 2. The KL of single-tensor changes, from each tensor's block on.
  nn::Llama fp = load_fp();
  KlProbe kl(fp, kl_windows(tokens, cfg.seqlen, opt), opt.kl_seqlen, cfg.batch_sequences);
  index_t total = 0;
  for (auto& t : table.tensors) {
    if (t.is_table()) continue;
    t.reference = reference_candidate(t);
    total += opt.measure_all ? static_cast<index_t>(t.entries.size()) : 1;
  }
  Progress progress("sensitivity", total, "KL", opt.quiet, 10.0);
  for (auto& t : table.tensors) {
    if (t.is_table()) continue;
    const auto role = t.linear_role();
    auto& slot = layers.layers.at(t.name);
    for (std::size_t k = 0; k < t.entries.size(); ++k) {
      if (!opt.measure_all && static_cast<int>(k) != t.reference) continue;
      auto original = fp.block(t.layer).release_linear(role);
      fp.set_linear(t.layer, role, std::move(slot[k]));
      t.entries[k].measured = kl.kl(fp, t.layer);
      slot[k] = fp.block(t.layer).release_linear(role);
      fp.set_linear(t.layer, role, std::move(original));
      progress.update(1, t.name);
    }
    predict_from_reference(t);
  }
  progress.finish();
  // 3. The table candidates (RTN), each on a fresh FP model; fp32 costs its bytes and no KL.
  for (auto& t : table.tensors) {
    if (!t.is_table()) continue;
    for (std::size_t k = 0; k < t.entries.size(); ++k) {
      const auto& f = table.table_candidates[k].format;
      auto& e = t.entries[k];
      if (f == "f32") {
        e.bytes = static_cast<std::uint64_t>(t.rows) * static_cast<std::uint64_t>(t.cols) * 4;
        e.measured = 0;
      } else {
        nn::Llama m = load_fp();
        const bool head = t.role == "head";
        quantize_tables(m, table.tied || !head ? f : "f32", table.tied || head ? f : "f32");
        e.bytes = (head || table.tied ? m.output_head() : m.token_embedding())->bytes();
        e.measured = kl.kl(m, -1);
      }
      e.predicted = e.measured;
      if (!opt.quiet)
        std::fprintf(stderr, "[sensitivity] %s %s: KL %.3g\n", t.name.c_str(), f.c_str(), e.measured);
    }
  }
  return table;
}

// ---- allocation ---------------------------------------------------------------------------------

enum class Scope { Blocks, Model };
enum class Strategy { Knapsack, Uniform, BlockAdversary, RoleDepth };

inline Scope parse_scope(const std::string& s) {
  if (s == "blocks") return Scope::Blocks;
  if (s == "model") return Scope::Model;
  fail("--scope: '", s, "' is not blocks or model");
}
inline const char* scope_name(Scope s) { return s == Scope::Blocks ? "blocks" : "model"; }
inline Strategy parse_strategy(const std::string& s) {
  if (s == "knapsack") return Strategy::Knapsack;
  if (s == "uniform") return Strategy::Uniform;
  if (s == "block-adversary") return Strategy::BlockAdversary;
  if (s == "role-depth") return Strategy::RoleDepth;
  fail("--strategy: '", s, "' is not knapsack, uniform, block-adversary or role-depth");
}
inline const char* strategy_name(Strategy s) {
  switch (s) {
    case Strategy::Knapsack: return "knapsack";
    case Strategy::Uniform: return "uniform";
    case Strategy::BlockAdversary: return "block-adversary";
    case Strategy::RoleDepth: return "role-depth";
  }
  return "?";
}

struct PlannedTensor {
  std::string name, method, format;
  std::uint64_t bytes = 0;
  double predicted_kl = 0;
};

struct AllocationPlan {
  nlohmann::json source = nlohmann::json::object();  // the sensitivity table's source (model fingerprint)
  std::string scope = "blocks", strategy = "knapsack";
  double target_bits_per_weight = 0;
  std::uint64_t budget_bytes = 0;
  std::vector<PlannedTensor> tensors;  // linears in model order, then the table(s) in the model scope
  double linear_bits_per_weight = 0;   // over the block linears, as planned
  double model_bits_per_weight = 0;    // over every weight (tables as planned, or at the caller's fixed cost)
  double predicted_kl = 0;             // Σ of the tensors' predicted KL
  double measured_kl = kNotMeasured;   // KL of the whole plan on the calibration windows, when measured
  bool exact = true;                   // the knapsack was exact (not rounded)

  const PlannedTensor* find(const std::string& name) const {
    for (const auto& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }

  nlohmann::json to_json() const {
    nlohmann::json ts = nlohmann::json::array();
    for (const auto& t : tensors)
      ts.push_back({{"name", t.name}, {"method", t.method}, {"format", t.format}, {"bytes", t.bytes},
                    {"predicted_kl", t.predicted_kl}});
    return {{"kind", "lowbit-plan"},
            {"version", 1},
            {"source", source},
            {"scope", scope},
            {"strategy", strategy},
            {"target_bits_per_weight", target_bits_per_weight},
            {"budget_bytes", budget_bytes},
            {"linear_bits_per_weight", linear_bits_per_weight},
            {"model_bits_per_weight", model_bits_per_weight},
            {"predicted_kl", predicted_kl},
            {"measured_kl", std::isnan(measured_kl) ? nlohmann::json(nullptr) : nlohmann::json(measured_kl)},
            {"exact", exact},
            {"tensors", ts}};
  }

  static AllocationPlan from_json(const nlohmann::json& j, const std::string& where) {
    try {
      LOWBIT_CHECK(j.value("kind", std::string()) == "lowbit-plan" && j.value("version", 0) == 1, where,
                   ": not a lowbit plan file (kind 'lowbit-plan', version 1)");
      AllocationPlan p;
      p.source = j.at("source");
      p.scope = j.at("scope").get<std::string>();
      parse_scope(p.scope);
      p.strategy = j.at("strategy").get<std::string>();
      p.target_bits_per_weight = j.at("target_bits_per_weight").get<double>();
      p.budget_bytes = j.at("budget_bytes").get<std::uint64_t>();
      p.linear_bits_per_weight = j.at("linear_bits_per_weight").get<double>();
      p.model_bits_per_weight = j.at("model_bits_per_weight").get<double>();
      p.predicted_kl = j.at("predicted_kl").get<double>();
      p.measured_kl = j.at("measured_kl").is_null() ? kNotMeasured : j.at("measured_kl").get<double>();
      p.exact = j.at("exact").get<bool>();
      for (const auto& t : j.at("tensors")) {
        PlannedTensor pt{t.at("name").get<std::string>(), t.at("method").get<std::string>(),
                         t.at("format").get<std::string>(), t.at("bytes").get<std::uint64_t>(),
                         t.at("predicted_kl").get<double>()};
        LOWBIT_CHECK(pt.format == "f32" || is_registered_format(pt.format), where, ": tensor ", pt.name,
                     " has the unknown format '", pt.format, "'");
        LOWBIT_CHECK(!p.find(pt.name), where, ": tensor ", pt.name, " is planned twice");
        p.tensors.push_back(std::move(pt));
      }
      LOWBIT_CHECK(!p.tensors.empty(), where, ": the plan names no tensor");
      return p;
    } catch (const nlohmann::json::exception& e) {
      fail(where, ": malformed plan file (", e.what(), ")");
    }
  }
};

namespace detail {

// llama.cpp's use_more_bits(i, n): the first and last eighth of the blocks and every third in between.
inline bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

// Bit-reversal order of 0..n-1: spreads upgrades evenly over depth and roles without using sensitivity.
inline std::vector<std::size_t> spread_order(std::size_t n) {
  std::size_t bits = 0;
  while ((std::size_t{1} << bits) < n) ++bits;
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < (std::size_t{1} << bits); ++i) {
    std::size_t r = 0;
    for (std::size_t b = 0; b < bits; ++b)
      if (i >> b & 1) r |= std::size_t{1} << (bits - 1 - b);
    if (r < n) order.push_back(r);
  }
  return order;
}

}  // namespace detail

// Chooses one candidate per tensor in scope within `target_bpw` (bits per weight over the scope: the
// block linears, or every weight with the tables and the fp32 norms). `fixed_table_bytes` is the
// tables' cost in the block scope (for the whole-model bits/weight it reports).
inline AllocationPlan allocate(const SensitivityTable& s, double target_bpw, Scope scope, Strategy strategy,
                               std::uint64_t fixed_table_bytes) {
  std::vector<std::size_t> items;  // indices into s.tensors
  for (std::size_t i = 0; i < s.tensors.size(); ++i)
    if (scope == Scope::Model || !s.tensors[i].is_table()) items.push_back(i);
  if (scope == Scope::Model)
    LOWBIT_CHECK(!s.table_candidates.empty(), "--scope model: the sensitivity table has no token-table candidates "
                                              "(measure it with --table-candidates)");
  LOWBIT_CHECK(std::isfinite(target_bpw) && target_bpw > 0, "--target-bpw must be a positive number");
  LOWBIT_CHECK(strategy == Strategy::Knapsack || scope == Scope::Blocks, "--strategy ", strategy_name(strategy),
               " allocates the block linears only: use --scope blocks");
  const double weights = scope == Scope::Blocks ? s.linear_weights() : s.all_weights();
  const std::uint64_t fixed = scope == Scope::Model ? s.norm_bytes : 0;
  const double budget_total = target_bpw * weights / 8.0;
  std::uint64_t lo = fixed, hi = fixed;
  for (auto i : items) {
    std::uint64_t a = UINT64_MAX, b = 0;
    for (const auto& e : s.tensors[i].entries) a = std::min(a, e.bytes), b = std::max(b, e.bytes);
    lo += a;
    hi += b;
  }
  const auto bpw = [&](std::uint64_t bytes) { return 8.0 * static_cast<double>(bytes) / weights; };
  LOWBIT_CHECK(budget_total >= static_cast<double>(lo), "impossible budget: --target-bpw ", target_bpw,
               " is below the cheapest plan (every tensor in its cheapest candidate: ", bpw(lo),
               " bits/weight over the ", scope_name(scope) == std::string("blocks") ? "block linears" : "whole model",
               "); add a cheaper candidate or raise the budget");
  LOWBIT_CHECK(budget_total <= static_cast<double>(hi), "impossible budget: --target-bpw ", target_bpw,
               " is above the dearest plan (every tensor in its dearest candidate: ", bpw(hi),
               " bits/weight): there is nothing to choose; quantize every tensor in the dearest candidate, or add a "
               "dearer one");
  const std::uint64_t budget = static_cast<std::uint64_t>(std::floor(budget_total)) - fixed;

  std::vector<int> choice(items.size(), 0);
  bool exact = true;
  if (strategy == Strategy::Knapsack) {
    std::vector<std::vector<KnapsackOption>> ks;
    for (auto i : items) {
      std::vector<KnapsackOption> opts;
      for (const auto& e : s.tensors[i].entries) opts.push_back({e.bytes, e.predicted});
      ks.push_back(std::move(opts));
    }
    const auto sol = solve_knapsack(ks, budget);
    choice = sol.choice;
    exact = sol.exact;
  } else {
    // Two levels: the dearest candidate whose uniform plan fits, and the cheapest one a whole bit above
    // it (b and b+1 bits, as the seed and llama.cpp raise tensors); the next dearer one if none is.
    std::vector<std::pair<std::uint64_t, int>> uniform_cost;
    for (std::size_t k = 0; k < s.candidates.size(); ++k) {
      std::uint64_t c = 0;
      for (auto i : items) c += s.tensors[i].entries[k].bytes;
      uniform_cost.emplace_back(c, static_cast<int>(k));
    }
    std::sort(uniform_cost.begin(), uniform_cost.end());
    std::size_t low = 0;
    while (low + 1 < uniform_cost.size() && uniform_cost[low + 1].first <= budget) ++low;
    LOWBIT_CHECK(uniform_cost[low].first <= budget, "impossible budget for --strategy ", strategy_name(strategy),
                 ": no single candidate fits every tensor within ", target_bpw, " bits/weight");
    const int lo_k = uniform_cost[low].second;
    const auto whole_bits = [&](std::size_t i) { return std::floor(8.0 * double(uniform_cost[i].first) / weights); };
    std::size_t high = low + 1 < uniform_cost.size() ? low + 1 : low;
    for (std::size_t i = uniform_cost.size(); i-- > low + 1;)
      if (whole_bits(i) > whole_bits(low)) high = i;
    const int hi_k = uniform_cost[high].second;
    std::fill(choice.begin(), choice.end(), lo_k);
    // The order in which tensors are raised to the dearer candidate.
    std::vector<std::size_t> order;
    const int n_layers = s.tensors.empty() ? 0 : s.tensors[items.back()].layer + 1;
    if (strategy == Strategy::Uniform) {
      order = detail::spread_order(items.size());
    } else if (strategy == Strategy::BlockAdversary) {
      // ε_l: the block MLP's output error at the low candidate (Σ over gate, up, down of tr(ΔW H ΔWᵀ)/n),
      // against the FP MLP; the most damaged blocks are raised first, whole blocks at a time.
      std::vector<double> eps(static_cast<std::size_t>(n_layers), 0.0);
      for (std::size_t p = 0; p < items.size(); ++p) {
        const auto& t = s.tensors[items[p]];
        if (t.role.rfind("feed_forward.", 0) == 0)
          eps[static_cast<std::size_t>(t.layer)] += t.entries[static_cast<std::size_t>(lo_k)].proxy;
      }
      std::vector<int> blocks(static_cast<std::size_t>(n_layers));
      std::iota(blocks.begin(), blocks.end(), 0);
      std::stable_sort(blocks.begin(), blocks.end(), [&](int a, int b) { return eps[size_t(a)] > eps[size_t(b)]; });
      for (int b : blocks)
        for (std::size_t p = 0; p < items.size(); ++p)
          if (s.tensors[items[p]].layer == b) order.push_back(p);
    } else {  // RoleDepth: attn_v and ffn_down in use_more_bits blocks, then elsewhere, then the rest likewise
      for (int pass = 0; pass < 4; ++pass)
        for (std::size_t p = 0; p < items.size(); ++p) {
          const auto& t = s.tensors[items[p]];
          const bool key = t.role == "attention.wv" || t.role == "feed_forward.w2";
          const bool more = detail::use_more_bits(t.layer, n_layers);
          if ((pass == 0 && key && more) || (pass == 1 && key && !more) || (pass == 2 && !key && more) ||
              (pass == 3 && !key && !more))
            order.push_back(p);
        }
    }
    std::uint64_t used = uniform_cost[low].first;
    for (auto p : order) {
      const auto& e = s.tensors[items[p]].entries;
      const std::uint64_t extra = e[static_cast<std::size_t>(hi_k)].bytes - e[static_cast<std::size_t>(lo_k)].bytes;
      if (used + extra <= budget) {
        choice[p] = hi_k;
        used += extra;
      }
    }
  }

  AllocationPlan plan;
  plan.source = s.source;
  plan.scope = scope_name(scope);
  plan.strategy = strategy_name(strategy);
  plan.target_bits_per_weight = target_bpw;
  plan.budget_bytes = budget + fixed;
  plan.exact = exact;
  std::uint64_t linear_bytes = 0, table_bytes = 0;
  for (std::size_t p = 0; p < items.size(); ++p) {
    const auto& t = s.tensors[items[p]];
    const auto k = static_cast<std::size_t>(choice[p]);
    const auto& c = s.candidates_of(t)[k];
    plan.tensors.push_back({t.name, c.method, c.format, t.entries[k].bytes, t.entries[k].predicted});
    plan.predicted_kl += t.entries[k].predicted;
    (t.is_table() ? table_bytes : linear_bytes) += t.entries[k].bytes;
  }
  if (scope == Scope::Blocks) table_bytes = fixed_table_bytes;
  plan.linear_bits_per_weight = 8.0 * static_cast<double>(linear_bytes) / s.linear_weights();
  plan.model_bits_per_weight = 8.0 * static_cast<double>(linear_bytes + table_bytes + s.norm_bytes) / s.all_weights();
  return plan;
}

// ---- measuring a whole plan ----------------------------------------------------------------------

// KL(FP ‖ the plan) on the probe's windows, with the candidate layers the sensitivity pass kept: how
// well the sum of single-tensor effects predicts the joint one. The layers go back into `layers`.
inline double measure_plan_kl(const AllocationPlan& plan, const SensitivityTable& s, CandidateLayers& layers,
                              const std::function<nn::Llama()>& load_fp, KlProbe& probe) {
  nn::Llama m = load_fp();
  struct Swap {
    int layer;
    nn::LinearRole role;
    std::size_t k;
  };
  std::vector<Swap> swaps;
  std::string table_format = "f32", head_format = "f32";
  for (const auto& t : s.tensors) {
    const auto* p = plan.find(t.name);
    if (!p) continue;
    const auto& cands = s.candidates_of(t);
    const auto it = std::find(cands.begin(), cands.end(), Candidate{p->method, p->format});
    LOWBIT_CHECK(it != cands.end(), "plan: ", t.name, " has ", p->method, ":", p->format, ", not a measured candidate");
    const auto k = static_cast<std::size_t>(it - cands.begin());
    if (t.is_table()) {
      (t.role == "head" ? head_format : table_format) = p->format;
      if (s.tied) head_format = p->format;
      continue;
    }
    auto& slot = layers.layers.at(t.name);
    LOWBIT_CHECK(k < slot.size() && slot[k], "plan: the candidate layers of ", t.name, " are not in memory");
    m.set_linear(t.layer, t.linear_role(), std::move(slot[k]));
    swaps.push_back({t.layer, t.linear_role(), k});
  }
  if (table_format != "f32" || head_format != "f32") quantize_tables(m, table_format, head_format);
  const double kl = probe.kl(m, -1);
  for (const auto& w : swaps)
    layers.layers.at(nn::ModelWeights::layer_name(w.layer, nn::linear_role_name(w.role)))[w.k] =
        m.block(w.layer).release_linear(w.role);
  return kl;
}

}  // namespace lowbit::calib
