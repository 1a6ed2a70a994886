// What a calibration run will hold in memory, estimated from the model shape and the run's settings
// before it starts (printed, and compared with the measured peak in the report).
#pragma once

#include <algorithm>
#include <cstdio>
#include <string>

#include "../nn/config.hpp"

namespace lowbit::calib {

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

// nsamples x seqlen calibration tokens, `sample_tokens` sampled rows per input (0 when no method needs
// samples), `batch_sequences` per block forward; targets are kept when a fine-tune step or FP
// propagation needs the FP block outputs.
inline MemoryEstimate estimate_memory(const nn::ModelConfig& c, int nsamples, int seqlen, int sample_tokens,
                                      int batch_sequences, bool needs_targets) {
  constexpr double MiB = 1024.0 * 1024.0;
  const double dim = c.dim, hid = c.hidden_dim, qdim = double(c.n_heads) * c.head_dim(), kv = c.kv_dim();
  const double per_block = dim * (qdim + 2 * kv) + qdim * dim + 3 * dim * hid;
  MemoryEstimate m;
  m.model_mib = 4.0 * (per_block * c.n_layers + double(c.vocab_size) * dim * (c.tied_embeddings ? 1 : 2)) / MiB;
  const double tokens = double(nsamples) * seqlen;
  m.activations_mib = 4.0 * tokens * dim * (needs_targets ? 2 : 1) / MiB;
  m.statistics_mib = (8.0 + 4.0) * (2 * dim * dim + qdim * qdim + hid * hid) / MiB +
                     4.0 * sample_tokens * (2 * dim + qdim + hid) / MiB;
  const double batch_tokens = double(std::min(batch_sequences, nsamples)) * seqlen;
  // block workspace + taps: norms, q/k/v, attention out, gate/up/hidden, per-head scores
  m.workspace_mib = 4.0 * batch_tokens * (2 * (3 * dim + qdim + 2 * kv + 3 * hid) + c.n_heads * double(seqlen)) / MiB;
  return m;
}

}  // namespace lowbit::calib
