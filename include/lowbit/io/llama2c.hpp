// Loader for llama2.c legacy checkpoints (.bin): a 7-int32 header followed by fp32 tensors in a fixed
// order. The format carries no names and no checksums, so the only defence against a wrong or damaged
// file is the size: it must equal exactly what the header implies. Byte layout: docs/file-formats.md.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../nn/weights.hpp"
#include "mapped_file.hpp"

namespace lowbit::io {

struct Llama2cHeader {
  std::int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  static constexpr std::size_t bytes = 7 * sizeof(std::int32_t);
};

namespace detail {

// Header fields as a checked nn::ModelConfig (vocab sign decides the tied classifier).
inline nn::ModelConfig llama2c_config(const Llama2cHeader& h, const std::string& source) {
  LOWBIT_CHECK(h.dim > 0 && h.hidden_dim > 0 && h.n_layers > 0 && h.n_heads > 0 && h.n_kv_heads > 0 &&
                   h.vocab_size != 0 && h.vocab_size != INT32_MIN && h.seq_len > 0,
               source, ": llama2.c header has a non-positive field (dim=", h.dim, ", hidden_dim=", h.hidden_dim,
               ", n_layers=", h.n_layers, ", n_heads=", h.n_heads, ", n_kv_heads=", h.n_kv_heads,
               ", vocab_size=", h.vocab_size, ", seq_len=", h.seq_len, ")");
  nn::ModelConfig c;
  c.dim = h.dim;
  c.hidden_dim = h.hidden_dim;
  c.n_layers = h.n_layers;
  c.n_heads = h.n_heads;
  c.n_kv_heads = h.n_kv_heads;
  c.vocab_size = h.vocab_size < 0 ? -h.vocab_size : h.vocab_size;
  c.max_seq_len = h.seq_len;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0f;
  c.rope_layout = nn::RopeLayout::Interleaved;
  c.tied_embeddings = h.vocab_size > 0;
  c.validate(source);
  LOWBIT_CHECK(h.n_kv_heads <= h.n_heads, source, ": n_kv_heads ", h.n_kv_heads, " exceeds n_heads ", h.n_heads);
  return c;
}

struct Llama2cSlot {
  std::string name;                 // canonical name, or empty for skipped legacy tensors
  std::vector<index_t> shape;       // shape of one layer's (or the global) tensor
  bool per_layer = false;           // one copy per layer, stored layer-major
};

// The tensors in file order; per-layer tensors are stored layer-major ([n_layers, ...]).
inline std::vector<Llama2cSlot> llama2c_layout(const nn::ModelConfig& c) {
  const index_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const index_t q_dim = static_cast<index_t>(c.n_heads) * c.head_dim(), kv = c.kv_dim();
  const index_t half_rope = static_cast<index_t>(c.max_seq_len) * c.head_dim() / 2;
  std::vector<Llama2cSlot> s = {
      {"tok_embeddings.weight", {vocab, dim}, false},
      {"attention_norm.weight", {dim}, true},
      {"attention.wq.weight", {q_dim, dim}, true},
      {"attention.wk.weight", {kv, dim}, true},
      {"attention.wv.weight", {kv, dim}, true},
      {"attention.wo.weight", {dim, q_dim}, true},
      {"ffn_norm.weight", {dim}, true},
      {"feed_forward.w1.weight", {hidden, dim}, true},
      {"feed_forward.w2.weight", {dim, hidden}, true},
      {"feed_forward.w3.weight", {hidden, dim}, true},
      {"norm.weight", {dim}, false},
      {"", {half_rope}, false},  // freq_cis_real (legacy, unused)
      {"", {half_rope}, false},  // freq_cis_imag (legacy, unused)
  };
  if (!c.tied_embeddings) s.push_back({"output.weight", {vocab, dim}, false});
  return s;
}

}  // namespace detail

// Total file size in bytes that a header implies (header + all fp32 tensors).
inline std::uint64_t llama2c_expected_bytes(const nn::ModelConfig& c, const std::string& source) {
  std::uint64_t floats = 0;
  for (const auto& slot : detail::llama2c_layout(c)) {
    std::uint64_t n = slot.per_layer ? static_cast<std::uint64_t>(c.n_layers) : 1;
    for (auto d : slot.shape) n = checked_mul(n, static_cast<std::uint64_t>(d), source);
    floats = checked_add(floats, n, source);
  }
  return checked_add(Llama2cHeader::bytes, checked_mul(floats, sizeof(float), source), source);
}

inline Llama2cHeader read_llama2c_header(ByteReader& r) {
  Llama2cHeader h;
  h.dim = r.read<std::int32_t>("header field dim");
  h.hidden_dim = r.read<std::int32_t>("header field hidden_dim");
  h.n_layers = r.read<std::int32_t>("header field n_layers");
  h.n_heads = r.read<std::int32_t>("header field n_heads");
  h.n_kv_heads = r.read<std::int32_t>("header field n_kv_heads");
  h.vocab_size = r.read<std::int32_t>("header field vocab_size");
  h.seq_len = r.read<std::int32_t>("header field seq_len");
  return h;
}

// Loads a llama2.c checkpoint into canonical fp32 tensors (see nn/weights.hpp). Throws lowbit::Error
// when the header is inconsistent or the file size differs from what the header implies.
inline nn::ModelWeights load_llama2c(const std::filesystem::path& path) {
  const MappedFile file(path);
  const std::string source = file.path();
  ByteReader r(file);
  const Llama2cHeader h = read_llama2c_header(r);
  nn::ModelWeights w;
  w.source = source;
  w.config = detail::llama2c_config(h, source);
  const std::uint64_t expected = llama2c_expected_bytes(w.config, source);
  LOWBIT_CHECK(expected == file.size(), source, ": llama2.c file size is ", file.size(),
               " bytes, but its header (dim=", h.dim, ", hidden_dim=", h.hidden_dim, ", n_layers=", h.n_layers,
               ", n_heads=", h.n_heads, ", n_kv_heads=", h.n_kv_heads, ", vocab_size=", h.vocab_size,
               ", seq_len=", h.seq_len, ") implies ", expected, " bytes");
  for (const auto& slot : detail::llama2c_layout(w.config)) {
    index_t per = 1;
    for (auto d : slot.shape) per *= d;
    const int copies = slot.per_layer ? w.config.n_layers : 1;
    for (int copy = 0; copy < copies; ++copy) {
      const std::string name = slot.per_layer ? nn::ModelWeights::layer_name(copy, slot.name) : slot.name;
      const auto* bytes = r.take(static_cast<std::uint64_t>(per) * sizeof(float),
                                 slot.name.empty() ? std::string("freq_cis") : name);
      if (slot.name.empty()) continue;
      nn::Tensor t;
      t.shape = slot.shape;
      t.data.resize(static_cast<std::size_t>(per));
      std::memcpy(t.data.data(), bytes, static_cast<std::size_t>(per) * sizeof(float));
      w.tensors.emplace(name, std::move(t));
    }
  }
  LOWBIT_CHECK(r.remaining() == 0, source, ": ", r.remaining(), " unexpected trailing bytes");
  return w;
}

}  // namespace lowbit::io
