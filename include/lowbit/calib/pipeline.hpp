// Block-by-block post-training calibration (DESIGN.md, "How data flows through a calibration run").
// N seeded windows of L calibration tokens are embedded once; then for each block the FP block runs
// over the cached inputs to collect every linear's input statistics (H = XᵀX per distinct input, a
// strided token sample for AutoClip) and its FP outputs, a pluggable Calibrator replaces each linear,
// an optional fine-tune hook adjusts the block, and the block's quantized (or FP) outputs become the
// next block's inputs. After every block a checkpoint (the block's layers + the propagated activations)
// is written atomically under a run directory, so a killed run resumes exactly where it stopped.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/error.hpp"
#include "../core/progress.hpp"
#include "../core/rng.hpp"
#include "../core/tensor.hpp"
#include "../io/quantized_model.hpp"
#include "../io/tokenizer_base.hpp"
#include "../nn/model.hpp"
#include "autoclip.hpp"
#include "gptq.hpp"
#include "hessian.hpp"
#include "rtn.hpp"

namespace lowbit::calib {

// ---- configuration ------------------------------------------------------------------------------

struct CalibrationConfig {
  std::string method = "gptq";            // rtn | gptq | autoclip | autoclip+gptq (or a custom name)
  std::string format = "uniform:4:128";   // a descriptor known to io/quantized_model.hpp's registry
  int nsamples = 128;                     // calibration sequences
  int seqlen = 512;                       // tokens per sequence
  std::uint64_t seed = 0;
  GptqOptions gptq;
  AutoClipOptions autoclip;
  int autoclip_tokens = 512;    // sampled token rows per linear input for the AutoClip objective
  bool autoclip_qk = false;     // BitDistiller skips q/k projections
  bool propagate_quantized = true;  // next block sees the quantized block's outputs (GPTQ) or FP ones
  int batch_sequences = 8;      // sequences per block forward
  bool quiet = false;

  // Everything that changes the result (the fingerprint and the file's quantization_config).
  nlohmann::json to_json() const {
    return {{"method", method},
            {"format", format},
            {"nsamples", nsamples},
            {"seqlen", seqlen},
            {"seed", seed},
            {"damp", gptq.percdamp},
            {"gptq_block_size", gptq.block_size},
            {"act_order", gptq.act_order},
            {"static_groups", gptq.static_groups},
            {"autoclip_n_grid", autoclip.n_grid},
            {"autoclip_max_shrink", autoclip.max_shrink},
            {"autoclip_tokens", autoclip_tokens},
            {"autoclip_qk", autoclip_qk},
            {"propagate", propagate_quantized ? "quantized" : "fp"}};
  }
};

// ---- calibration data ---------------------------------------------------------------------------

// Draws `n` windows of `length` tokens (row-major [n, length]) the way GPTQ's loaders do: pick a random
// document whose encoding is longer than the window, then a random start inside it. When no document is
// long enough (e.g. one short text file), windows are cut from all documents joined with "\n\n".
inline std::vector<std::int32_t> draw_calibration_tokens(const std::vector<std::string>& documents,
                                                         const io::Tokenizer& tokenizer, int n, int length,
                                                         std::uint64_t seed, const std::string& source = "calibration") {
  LOWBIT_CHECK(n > 0 && length > 1, source, ": need a positive number of samples and a length > 1 (got ", n, " x ",
               length, ")");
  LOWBIT_CHECK(!documents.empty(), source, ": no documents");
  Rng rng(seed);
  std::vector<std::int32_t> out;
  out.reserve(static_cast<std::size_t>(n) * length);
  std::unordered_map<std::size_t, std::vector<std::int32_t>> cache;
  auto encoded = [&](std::size_t d) -> const std::vector<std::int32_t>& {
    auto it = cache.find(d);
    if (it == cache.end()) it = cache.emplace(d, tokenizer.encode(documents[d], false)).first;
    return it->second;
  };
  int drawn = 0;
  const int max_attempts = 64 * n + 1024;
  for (int attempt = 0; attempt < max_attempts && drawn < n; ++attempt) {
    const auto d = static_cast<std::size_t>(rng.below(documents.size()));
    const auto& ids = encoded(d);
    if (static_cast<int>(ids.size()) <= length) continue;
    const auto start = rng.below(ids.size() - static_cast<std::size_t>(length));
    out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
               ids.begin() + static_cast<std::ptrdiff_t>(start) + length);
    ++drawn;
  }
  if (drawn < n) {  // too few long documents: sample from the joined stream instead
    std::string joined;
    for (std::size_t d = 0; d < documents.size(); ++d) joined += (d ? "\n\n" : "") + documents[d];
    const auto ids = tokenizer.encode(joined, false);
    LOWBIT_CHECK(static_cast<int>(ids.size()) > length, source, ": only ", ids.size(),
                 " tokens in total, fewer than one calibration window of ", length);
    for (; drawn < n; ++drawn) {
      const auto start = rng.below(ids.size() - static_cast<std::size_t>(length));
      out.insert(out.end(), ids.begin() + static_cast<std::ptrdiff_t>(start),
                 ids.begin() + static_cast<std::ptrdiff_t>(start) + length);
    }
  }
  return out;
}

// ---- the calibrator interface -------------------------------------------------------------------

// Which input a linear reads; q/k/v share attn_in, gate/up share ffn_in.
enum class LinearInput { AttnIn = 0, AttnOut = 1, FfnIn = 2, FfnHidden = 3 };
inline LinearInput input_of(nn::LinearRole r) {
  switch (r) {
    case nn::LinearRole::Q:
    case nn::LinearRole::K:
    case nn::LinearRole::V: return LinearInput::AttnIn;
    case nn::LinearRole::O: return LinearInput::AttnOut;
    case nn::LinearRole::Gate:
    case nn::LinearRole::Up: return LinearInput::FfnIn;
    case nn::LinearRole::Down: return LinearInput::FfnHidden;
  }
  return LinearInput::AttnIn;
}

struct LinearJob {
  int layer = 0;
  nn::LinearRole role = nn::LinearRole::Q;
  std::string name;                       // canonical tensor name, e.g. "layers.3.attention.wq"
  MatrixView<const float> weight;         // FP weight [out, in]
  const HessianAccumulator* hessian = nullptr;  // XᵀX of this linear's input (when requested)
  MatrixView<const float> sample_inputs;  // sampled input rows [S, in] (when requested)
  const CalibrationConfig* config = nullptr;
};

struct LinearOutcome {
  nn::LinearPtr layer;
  nlohmann::json stats = nlohmann::json::object();
};

// A per-linear quantization strategy. AQLM or any other method plugs in here.
struct Calibrator {
  std::string name;
  bool needs_hessian = true;
  bool needs_samples = false;
  std::function<LinearOutcome(const LinearJob&)> run;
};

// The block handed to an optional fine-tune step after its linears were replaced: cached inputs and FP
// targets [nsamples·seqlen, dim]. Returns stats for the log (the train helper's block trainer fits here).
struct BlockContext {
  int layer = 0;
  nn::Llama* model = nullptr;
  MatrixView<const float> inputs;
  MatrixView<const float> targets;
  int nsamples = 0, seqlen = 0;
};
using BlockFinetune = std::function<nlohmann::json(BlockContext&)>;

namespace detail {

template <class Format>
LinearOutcome run_group_calibrator(const std::string& method, const LinearJob& job) {
  const auto& cfg = *job.config;
  const index_t rows = job.weight.rows(), cols = job.weight.cols();
  std::vector<float> W(static_cast<std::size_t>(rows * cols));
  for (index_t r = 0; r < rows; ++r) std::copy_n(job.weight.row(r), cols, W.data() + r * cols);
  LinearOutcome out;
  const bool clip = method == "autoclip" || method == "autoclip+gptq";
  const bool skip_clip = !cfg.autoclip_qk && (job.role == nn::LinearRole::Q || job.role == nn::LinearRole::K);
  if (clip && !skip_clip) {
    LOWBIT_CHECK(job.sample_inputs.rows() > 0, job.name, ": autoclip needs sampled inputs");
    const auto C = gram_from_tokens(job.sample_inputs);
    const auto s = autoclip_apply<Format>(MatrixView<float>(W.data(), rows, cols), C, cfg.autoclip);
    out.stats["autoclip_error_before"] = s.error_before;
    out.stats["autoclip_error_after"] = s.error_after;
    out.stats["autoclip_clipped_groups"] = s.clipped_groups;
  }
  const MatrixView<const float> Wv(W.data(), rows, cols);
  if (method == "gptq" || method == "autoclip+gptq") {
    LOWBIT_CHECK(job.hessian && job.hessian->rows() > 0, job.name, ": gptq needs the input Hessian");
    GptqStats s;
    auto packed = gptq_quantize<Format>(Wv, job.hessian->gptq_hessian(), cfg.gptq, &s);
    out.stats["gptq_proxy_loss"] = s.proxy_loss;
    out.stats["dead_columns"] = s.dead_columns;
    if (s.dampening_retries) out.stats["dampening_retries"] = s.dampening_retries;
    out.layer = std::make_unique<nn::QuantizedLinear<Format>>(std::move(packed));
  } else {
    out.layer = std::make_unique<nn::QuantizedLinear<Format>>(rtn_quantize<Format>(Wv));
  }
  return out;
}

}  // namespace detail

// RTN, GPTQ, AutoClip and AutoClip+GPTQ for every group-wise format in the registry.
inline Calibrator group_calibrator(const std::string& method) {
  LOWBIT_CHECK(method == "rtn" || method == "gptq" || method == "autoclip" || method == "autoclip+gptq",
               "unknown calibration method '", method, "' (known: rtn, gptq, autoclip, autoclip+gptq)");
  Calibrator c;
  c.name = method;
  c.needs_hessian = method == "gptq" || method == "autoclip+gptq";
  c.needs_samples = method == "autoclip" || method == "autoclip+gptq";
  c.run = [method](const LinearJob& job) {
    return io::visit_group_format(job.config->format, [&](auto tag) {
      using Format = typename decltype(tag)::type;
      return detail::run_group_calibrator<Format>(method, job);
    });
  };
  return c;
}

// ---- resource accounting ------------------------------------------------------------------------

inline double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // ru_maxrss is in KiB on Linux
}

struct MemoryEstimate {
  double model_mib = 0, activations_mib = 0, statistics_mib = 0, workspace_mib = 0;
  double total_mib() const { return model_mib + activations_mib + statistics_mib + workspace_mib; }
  std::string describe() const {
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "memory estimate: %.0f MiB (model %.0f, cached activations %.0f, Hessians/samples %.0f, "
                  "block workspace %.0f)",
                  total_mib(), model_mib, activations_mib, statistics_mib, workspace_mib);
    return buf;
  }
};

inline MemoryEstimate estimate_memory(const nn::ModelConfig& c, const CalibrationConfig& cfg, bool needs_targets) {
  constexpr double MiB = 1024.0 * 1024.0;
  const double dim = c.dim, hid = c.hidden_dim, qdim = double(c.n_heads) * c.head_dim(), kv = c.kv_dim();
  const double per_block = dim * (qdim + 2 * kv) + qdim * dim + 3 * dim * hid;
  MemoryEstimate m;
  m.model_mib = 4.0 * (per_block * c.n_layers + double(c.vocab_size) * dim * (c.tied_embeddings ? 1 : 2)) / MiB;
  const double tokens = double(cfg.nsamples) * cfg.seqlen;
  m.activations_mib = 4.0 * tokens * dim * (needs_targets ? 2 : 1) / MiB;
  m.statistics_mib = (8.0 + 4.0) * (2 * dim * dim + qdim * qdim + hid * hid) / MiB +
                     4.0 * cfg.autoclip_tokens * (2 * dim + qdim + hid) / MiB;
  const double batch_tokens = double(std::min(cfg.batch_sequences, cfg.nsamples)) * cfg.seqlen;
  // block workspace + taps: norms, q/k/v, attention out, gate/up/hidden, per-head scores
  m.workspace_mib = 4.0 * batch_tokens * (2 * (3 * dim + qdim + 2 * kv + 3 * hid) + c.n_heads * double(cfg.seqlen)) / MiB;
  return m;
}

// ---- checkpoints --------------------------------------------------------------------------------

// 64-bit FNV-1a: a fast, non-cryptographic fingerprint of files, token streams and configurations.
inline std::uint64_t fnv1a64(const void* data, std::size_t bytes, std::uint64_t h = 0xcbf29ce484222325ULL) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}
inline std::string hex64(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
inline std::string file_fingerprint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in, "cannot open ", path, " to fingerprint it");
  std::vector<char> buf(1 << 20);
  std::uint64_t h = 0xcbf29ce484222325ULL, size = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = static_cast<std::size_t>(in.gcount());
    h = fnv1a64(buf.data(), got, h);
    size += got;
  }
  return hex64(h) + ":" + std::to_string(size);
}

class CheckpointDir {
 public:
  CheckpointDir() = default;
  explicit CheckpointDir(std::string dir) : dir_(std::move(dir)) {}
  bool enabled() const { return !dir_.empty(); }
  std::string block_path(int layer) const {
    char name[64];
    std::snprintf(name, sizeof name, "block_%03d.safetensors", layer);
    return (std::filesystem::path(dir_) / name).string();
  }
  std::string state_path() const { return (std::filesystem::path(dir_) / "activations.bin").string(); }
  std::string fingerprint_path() const { return (std::filesystem::path(dir_) / "fingerprint.json").string(); }

  // Creates the directory and records the fingerprint, or checks it against an existing run.
  void open(const nlohmann::json& fingerprint) {
    std::filesystem::create_directories(dir_);
    const auto path = fingerprint_path();
    if (std::filesystem::exists(path)) {
      std::ifstream in(path);
      nlohmann::json existing;
      try {
        existing = nlohmann::json::parse(in);
      } catch (const nlohmann::json::exception& e) {
        fail("run directory ", dir_, ": ", path, " is not valid JSON (", e.what(), ")");
      }
      if (existing != fingerprint) {
        std::string diffs;
        for (auto& [key, value] : fingerprint.items())
          if (!existing.contains(key) || existing[key] != value)
            diffs += "\n  " + key + ": run has " + (existing.contains(key) ? existing[key].dump() : "nothing") +
                     ", this invocation has " + value.dump();
        fail("run directory ", dir_, " belongs to a different calibration run; refusing to resume.", diffs,
             "\nUse a fresh --run-dir (or delete this one) to start over.");
      }
      return;
    }
    write_atomic(path, fingerprint.dump(2) + "\n");
  }

  // The activations after block `layer` (inputs of layer + 1), [tokens, dim] float32.
  void save_state(int next_layer, const std::vector<float>& x, index_t tokens, index_t dim) const {
    std::string bytes;
    const std::uint64_t header[4] = {0x54434b504c42574cULL /* "LWBLPKCT" */, static_cast<std::uint64_t>(next_layer),
                                     static_cast<std::uint64_t>(tokens), static_cast<std::uint64_t>(dim)};
    bytes.append(reinterpret_cast<const char*>(header), sizeof header);
    bytes.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
    const std::uint64_t check = fnv1a64(bytes.data(), bytes.size());
    bytes.append(reinterpret_cast<const char*>(&check), sizeof check);
    write_atomic(state_path(), bytes);
  }

  // Returns the next layer to calibrate (0 when there is nothing to resume) and fills x.
  int load_state(std::vector<float>& x, index_t tokens, index_t dim) const {
    const auto path = state_path();
    if (!std::filesystem::exists(path)) return 0;
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::size_t expected = 32 + static_cast<std::size_t>(tokens * dim) * sizeof(float) + 8;
    LOWBIT_CHECK(bytes.size() == expected, path, ": checkpoint has ", bytes.size(), " bytes, expected ", expected,
                 " (truncated or from another configuration)");
    std::uint64_t header[4], check;
    std::memcpy(header, bytes.data(), sizeof header);
    std::memcpy(&check, bytes.data() + bytes.size() - 8, 8);
    LOWBIT_CHECK(header[0] == 0x54434b504c42574cULL, path, ": not a lowbit activation checkpoint");
    LOWBIT_CHECK(fnv1a64(bytes.data(), bytes.size() - 8) == check, path, ": checksum mismatch (corrupted checkpoint)");
    LOWBIT_CHECK(header[2] == static_cast<std::uint64_t>(tokens) && header[3] == static_cast<std::uint64_t>(dim), path,
                 ": activations are ", header[2], "x", header[3], ", expected ", tokens, "x", dim);
    x.resize(static_cast<std::size_t>(tokens * dim));
    std::memcpy(x.data(), bytes.data() + 32, x.size() * sizeof(float));
    return static_cast<int>(header[1]);
  }

  static void write_atomic(const std::string& path, const std::string& bytes) {
    const std::string tmp = path + ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      LOWBIT_CHECK(out, "cannot write ", tmp);
      out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      out.flush();
      LOWBIT_CHECK(out, "write to ", tmp, " failed (disk full?)");
    }
    std::filesystem::rename(tmp, path);
  }

 private:
  std::string dir_;
};

// ---- the pipeline -------------------------------------------------------------------------------

struct CalibrationReport {
  double seconds = 0;
  double peak_rss_mib = 0;
  MemoryEstimate estimate;
  int resumed_from_layer = 0;
  nlohmann::json per_linear = nlohmann::json::object();  // name -> stats (this process's linears)
  nlohmann::json to_json() const {
    return {{"seconds", seconds},
            {"peak_rss_mib", peak_rss_mib},
            {"memory_estimate_mib", estimate.total_mib()},
            {"resumed_from_layer", resumed_from_layer},
            {"per_linear", per_linear}};
  }
};

struct PipelineHooks {
  BlockFinetune finetune;  // optional block fine-tune after the linears were replaced
  // Called after each linear is replaced (layer, role); tests use it to interrupt a run.
  std::function<void(int, nn::LinearRole)> after_linear;
};

// Calibrates every linear of `model` in place. `tokens` is [nsamples, seqlen]; `fingerprint` identifies
// the model file and calibration data (the configuration and token stream are added here).
inline CalibrationReport calibrate_model(nn::Llama& model, const std::vector<std::int32_t>& tokens,
                                         const CalibrationConfig& cfg, const Calibrator& calibrator,
                                         nlohmann::json fingerprint = nlohmann::json::object(),
                                         const std::string& run_dir = {}, const PipelineHooks& hooks = {}) {
  const auto start_time = std::chrono::steady_clock::now();
  const auto& mc = model.config();
  const int N = cfg.nsamples, L = cfg.seqlen, dim = mc.dim;
  const index_t n_tok = static_cast<index_t>(N) * L;
  LOWBIT_CHECK(static_cast<index_t>(tokens.size()) == n_tok, "calibrate: got ", tokens.size(), " tokens, expected ",
               N, " x ", L);
  for (auto t : tokens)
    LOWBIT_CHECK(t >= 0 && t < mc.vocab_size, "calibrate: token id ", t, " outside the vocabulary of ", mc.vocab_size);
  const bool needs_targets = static_cast<bool>(hooks.finetune) || !cfg.propagate_quantized;

  CalibrationReport report;
  report.estimate = estimate_memory(mc, cfg, needs_targets);
  if (!cfg.quiet) std::fprintf(stderr, "[calibrate] %s\n", report.estimate.describe().c_str());

  fingerprint["config"] = cfg.to_json();
  fingerprint["calibrator"] = calibrator.name;
  fingerprint["tokens"] = hex64(fnv1a64(tokens.data(), tokens.size() * sizeof(std::int32_t))) + ":" +
                          std::to_string(tokens.size());
  CheckpointDir ckpt(run_dir);
  std::vector<float> x;  // [n_tok, dim] inputs of the current block
  int first_layer = 0;
  if (ckpt.enabled()) {
    ckpt.open(fingerprint);
    first_layer = ckpt.load_state(x, n_tok, dim);
    for (int l = 0; l < first_layer; ++l) {
      LOWBIT_CHECK(std::filesystem::exists(ckpt.block_path(l)), run_dir, ": activations are past block ", l,
                   " but ", ckpt.block_path(l), " is missing");
      io::load_block_checkpoint(ckpt.block_path(l), model, l);
    }
    if (first_layer > 0 && !cfg.quiet)
      std::fprintf(stderr, "[calibrate] resuming %s at block %d/%d\n", run_dir.c_str(), first_layer, mc.n_layers);
  }
  report.resumed_from_layer = first_layer;
  if (first_layer == 0) {
    x.resize(static_cast<std::size_t>(n_tok * dim));
    model.embed(tokens.data(), n_tok, x.data());
  }

  const int batch = std::max(1, std::min(cfg.batch_sequences, N));
  std::vector<float> targets;
  if (needs_targets) targets.resize(x.size());
  const index_t widths[4] = {dim, static_cast<index_t>(mc.n_heads) * mc.head_dim(), dim, mc.hidden_dim};
  const index_t sample_rows = calibrator.needs_samples ? std::min<index_t>(cfg.autoclip_tokens, n_tok) : 0;
  const index_t sample_step = sample_rows > 0 ? n_tok / sample_rows : 1;

  Progress blocks("calibrate", mc.n_layers, "block", cfg.quiet, 0.0);
  blocks.update(first_layer);
  std::vector<float> work;
  for (int layer = first_layer; layer < mc.n_layers; ++layer) {
    const auto block_start = std::chrono::steady_clock::now();
    // 1. FP block over the cached inputs: statistics of the four linear inputs, and FP outputs.
    std::vector<HessianAccumulator> hessians(4);
    if (calibrator.needs_hessian)
      for (int k = 0; k < 4; ++k) hessians[k].reset(widths[k]);
    std::vector<std::vector<float>> samples(4);
    for (int k = 0; k < 4; ++k) samples[k].resize(static_cast<std::size_t>(sample_rows * widths[k]));
    nn::BlockTaps taps;
    // A calibrator that reads no statistics (RTN) needs no forward passes at all.
    const bool needs_forward = calibrator.needs_hessian || calibrator.needs_samples || needs_targets;
    for (int s0 = 0; needs_forward && s0 < N; s0 += batch) {
      const int B = std::min(batch, N - s0);
      const index_t row0 = static_cast<index_t>(s0) * L, rows = static_cast<index_t>(B) * L;
      work.assign(x.begin() + row0 * dim, x.begin() + (row0 + rows) * dim);
      const bool want_taps = calibrator.needs_hessian || calibrator.needs_samples;
      model.block_forward(layer, work.data(), B, L, want_taps ? &taps : nullptr);
      if (needs_targets) std::copy(work.begin(), work.end(), targets.begin() + row0 * dim);
      if (!want_taps) continue;
      const std::vector<float>* tapped[4] = {&taps.attn_in, &taps.attn_out, &taps.ffn_in, &taps.ffn_hidden};
      for (int k = 0; k < 4; ++k) {
        LOWBIT_CHECK(static_cast<index_t>(tapped[k]->size()) == rows * widths[k], "calibrate: block ", layer,
                     " tap ", k, " holds ", tapped[k]->size(), " values, expected ", rows * widths[k]);
        if (calibrator.needs_hessian) hessians[k].add(MatrixView<const float>(tapped[k]->data(), rows, widths[k]));
        for (index_t i = 0; i < sample_rows; ++i) {
          const index_t global = i * sample_step;
          if (global >= row0 && global < row0 + rows)
            std::copy_n(tapped[k]->data() + (global - row0) * widths[k], widths[k],
                        samples[k].data() + i * widths[k]);
        }
      }
    }
    taps = nn::BlockTaps{};

    // 2. Replace every linear.
    for (auto role : nn::kAllLinearRoles) {
      const auto t0 = std::chrono::steady_clock::now();
      auto& dense = model.linear(layer, role);
      const index_t out = dense.out_features(), in = dense.in_features();
      std::vector<float> W(static_cast<std::size_t>(out * in));
      dense.dequantize(MatrixView<float>(W.data(), out, in));
      const int k = static_cast<int>(input_of(role));
      LinearJob job;
      job.layer = layer;
      job.role = role;
      job.name = nn::ModelWeights::layer_name(layer, nn::linear_role_name(role));
      job.weight = MatrixView<const float>(W.data(), out, in);
      job.hessian = calibrator.needs_hessian ? &hessians[k] : nullptr;
      job.sample_inputs = MatrixView<const float>(samples[k].data(), sample_rows, widths[k]);
      job.config = &cfg;
      LinearOutcome result = calibrator.run(job);
      LOWBIT_CHECK(result.layer != nullptr, job.name, ": calibrator '", calibrator.name, "' returned no layer");
      const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      result.stats["seconds"] = secs;
      result.stats["format"] = result.layer->format();
      result.stats["bits_per_weight"] = result.layer->bits_per_weight();
      if (!cfg.quiet) {
        std::string extra;
        if (result.stats.contains("gptq_proxy_loss"))
          extra += " gptq-loss " + std::to_string(result.stats["gptq_proxy_loss"].get<double>());
        if (result.stats.contains("autoclip_clipped_groups"))
          extra += " clipped " + std::to_string(result.stats["autoclip_clipped_groups"].get<index_t>()) + " groups";
        std::fprintf(stderr, "[calibrate] block %d/%d %-22s %s %s%s (%.2fs)\n", layer + 1, mc.n_layers,
                     nn::linear_role_name(role), calibrator.name.c_str(), result.layer->format().c_str(),
                     extra.c_str(), secs);
      }
      report.per_linear[job.name] = result.stats;
      model.set_linear(layer, role, std::move(result.layer));
      if (hooks.after_linear) hooks.after_linear(layer, role);
    }
    hessians.clear();

    // 3. Optional fine-tune of the quantized block against the FP targets.
    if (hooks.finetune) {
      BlockContext ctx{layer, &model, MatrixView<const float>(x.data(), n_tok, dim),
                       MatrixView<const float>(targets.data(), n_tok, dim), N, L};
      report.per_linear[nn::ModelWeights::layer_name(layer, "finetune")] = hooks.finetune(ctx);
    }

    // 4. Next block's inputs.
    if (cfg.propagate_quantized) {
      for (int s0 = 0; needs_forward && s0 < N; s0 += batch) {
        const int B = std::min(batch, N - s0);
        model.block_forward(layer, x.data() + static_cast<index_t>(s0) * L * dim, B, L, nullptr);
      }
    } else {
      x.swap(targets);
    }
    for (auto role : nn::kAllLinearRoles) model.linear(layer, role).release_workspace();

    // 5. Checkpoint: the block's layers first, then the activations that point past it.
    if (ckpt.enabled()) {
      io::save_block_checkpoint(ckpt.block_path(layer), model, layer);
      ckpt.save_state(layer + 1, x, n_tok, dim);
    }
    const double block_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - block_start).count();
    char status[96];
    std::snprintf(status, sizeof status, "block %.1fs, peak RSS %.0f MiB", block_secs, peak_rss_mib());
    blocks.update(1, status);
  }
  blocks.finish();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_time).count();
  report.peak_rss_mib = peak_rss_mib();
  if (!cfg.quiet)
    std::fprintf(stderr, "[calibrate] done in %s, peak RSS %.0f MiB\n", format_duration(report.seconds).c_str(),
                 report.peak_rss_mib);
  return report;
}

}  // namespace lowbit::calib
