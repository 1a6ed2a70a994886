// Training checkpoints: everything needed to continue a run bit-identically (weights, AdamW state, step,
// data-sampler RNG state and position) plus the model hyper-parameters, so the same file also loads as a
// model (load_pretrained). Writes are atomic: a temporary file in the same folder is written, fsync'ed and
// renamed over the target, so a run killed at any instant leaves either the old or the new checkpoint.
//
// Layout (little-endian): "LBTRAIN\0" magic, u32 version, ModelConfig (7 × i32, 2 × f32, 2 × u8),
// u64 config fingerprint, u64 run fingerprint, i64 step, i64 total steps, 4 × u64 data RNG state,
// u64 data position (batches drawn), f64 last training loss, u32 tensor count, tensors (u32 name length,
// name, u32 rank, rank × i64 dims, f32 values), u8 has-optimizer, AdamW state, u64 FNV-1a checksum of all
// preceding bytes.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/hash.hpp"
#include "../core/rng.hpp"
#include "../nn/config.hpp"
#include "../nn/parameter.hpp"
#include "../nn/weights.hpp"
#include "adamw.hpp"
#include "schedule.hpp"

namespace lowbit::train {

inline constexpr char kCheckpointMagic[8] = {'L', 'B', 'T', 'R', 'A', 'I', 'N', '\0'};
inline constexpr std::uint32_t kCheckpointVersion = 1;

// The optimizer part of a run fingerprint (pretrain, distill): the schedule and AdamW settings as text.
inline void write_optimizer_fingerprint(std::ostream& s, const LrSchedule& schedule, const AdamWOptions& adam) {
  s << static_cast<int>(schedule.kind) << ',' << schedule.peak_lr << ',' << schedule.warmup_steps << ','
    << schedule.total_steps << ',' << schedule.min_ratio << '|' << adam.beta1 << ',' << adam.beta2 << ',' << adam.eps
    << ',' << adam.weight_decay << ',' << adam.amsgrad;
}

inline std::uint64_t config_fingerprint(const nn::ModelConfig& c) {
  std::ostringstream s;
  s << c.dim << ',' << c.hidden_dim << ',' << c.n_layers << ',' << c.n_heads << ',' << c.n_kv_heads << ','
    << c.vocab_size << ',' << c.max_seq_len << ',' << c.norm_eps << ',' << c.rope_theta << ','
    << static_cast<int>(c.rope_layout) << ',' << c.tied_embeddings;
  const std::string text = s.str();
  return fnv1a64(text.data(), text.size());
}

// The shape of a canonical tensor name (nn/weights.hpp) under `c`; {size} for names it does not know.
inline std::vector<index_t> canonical_shape(const std::string& name, const nn::ModelConfig& c, index_t size) {
  auto ends = [&](const char* s) {
    const std::size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  const index_t dim = c.dim, hidden = c.hidden_dim, q = static_cast<index_t>(c.n_heads) * c.head_dim(),
                kv = c.kv_dim(), vocab = c.vocab_size;
  std::vector<index_t> shape;
  if (name == "tok_embeddings.weight" || name == "output.weight") shape = {vocab, dim};
  else if (ends("norm.weight")) shape = {dim};
  else if (ends("attention.wq.weight")) shape = {q, dim};
  else if (ends("attention.wk.weight") || ends("attention.wv.weight")) shape = {kv, dim};
  else if (ends("attention.wo.weight")) shape = {dim, q};
  else if (ends("feed_forward.w1.weight") || ends("feed_forward.w3.weight")) shape = {hidden, dim};
  else if (ends("feed_forward.w2.weight")) shape = {dim, hidden};
  index_t n = 1;
  for (auto d : shape) n *= d;
  if (shape.empty() || n != size) shape = {size};
  return shape;
}

struct TrainingState {
  std::int64_t step = 0;         // updates done
  std::int64_t total_steps = 0;  // planned updates
  Rng::State data_rng{};         // the batch sampler's generator
  std::uint64_t data_position = 0;  // batches drawn so far
  std::uint64_t run_fingerprint = 0;  // options + data; a resume must match it
  double last_loss = 0.0;
};

struct Checkpoint {
  nn::ModelConfig config;
  TrainingState state;
  std::vector<std::pair<std::string, nn::Tensor>> tensors;  // in parameter order
  std::string optimizer_state;                              // AdamW::write bytes, empty when absent
  std::string source;
};

namespace detail {
class ByteWriter {
 public:
  template <class T>
  void pod(const T& x) {
    bytes_.append(reinterpret_cast<const char*>(&x), sizeof(T));
  }
  void raw(const void* p, std::size_t n) { bytes_.append(static_cast<const char*>(p), n); }
  void str(const std::string& s) {
    pod(static_cast<std::uint32_t>(s.size()));
    raw(s.data(), s.size());
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

class ByteReader {
 public:
  ByteReader(const std::string& bytes, std::string source) : bytes_(bytes), source_(std::move(source)) {}
  template <class T>
  T pod(const char* what) {
    T x{};
    raw(&x, sizeof(T), what);
    return x;
  }
  void raw(void* p, std::size_t n, const char* what) {
    LOWBIT_CHECK(n <= bytes_.size() - pos_, source_, ": checkpoint is truncated while reading ", what, " (needs ", n,
                 " bytes at offset ", pos_, ", file has ", bytes_.size(), ")");
    std::memcpy(p, bytes_.data() + pos_, n);
    pos_ += n;
  }
  std::string str(const char* what, std::size_t max_len) {
    const auto n = pod<std::uint32_t>(what);
    LOWBIT_CHECK(n <= max_len, source_, ": checkpoint ", what, " has length ", n, ", at most ", max_len, " expected");
    std::string s(n, '\0');
    raw(s.data(), n, what);
    return s;
  }
  std::size_t position() const { return pos_; }

 private:
  const std::string& bytes_;
  std::string source_;
  std::size_t pos_ = 0;
};
}  // namespace detail

// Serializes a checkpoint of `params` (named canonically) and the optimizer (may be null).
inline std::string checkpoint_bytes(const nn::ModelConfig& config, const std::vector<nn::Parameter>& params,
                                    const TrainingState& state, const AdamW* optimizer) {
  detail::ByteWriter w;
  w.raw(kCheckpointMagic, sizeof kCheckpointMagic);
  w.pod(kCheckpointVersion);
  for (int v : {config.dim, config.hidden_dim, config.n_layers, config.n_heads, config.n_kv_heads, config.vocab_size,
                config.max_seq_len})
    w.pod(static_cast<std::int32_t>(v));
  w.pod(config.norm_eps);
  w.pod(config.rope_theta);
  w.pod(static_cast<std::uint8_t>(config.rope_layout == nn::RopeLayout::HalfSplit));
  w.pod(static_cast<std::uint8_t>(config.tied_embeddings));
  w.pod(config_fingerprint(config));
  w.pod(state.run_fingerprint);
  w.pod(state.step);
  w.pod(state.total_steps);
  for (auto s : state.data_rng) w.pod(s);
  w.pod(state.data_position);
  w.pod(state.last_loss);
  w.pod(static_cast<std::uint32_t>(params.size()));
  for (const auto& p : params) {
    w.str(p.name);
    const auto shape = canonical_shape(p.name, config, p.size);
    w.pod(static_cast<std::uint32_t>(shape.size()));
    for (auto d : shape) w.pod(static_cast<std::int64_t>(d));
    w.raw(p.value, static_cast<std::size_t>(p.size) * sizeof(float));
  }
  w.pod(static_cast<std::uint8_t>(optimizer != nullptr));
  if (optimizer) {
    std::ostringstream out;
    optimizer->write(out);
    w.raw(out.str().data(), out.str().size());
  }
  w.pod(fnv1a64(w.bytes().data(), w.bytes().size()));
  return std::move(w.bytes());
}

inline void save_checkpoint(const std::filesystem::path& path, const nn::ModelConfig& config,
                            const std::vector<nn::Parameter>& params, const TrainingState& state,
                            const AdamW* optimizer) {
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path());
  write_file_atomically(path, checkpoint_bytes(config, params, state, optimizer));
}

inline Checkpoint read_checkpoint(const std::filesystem::path& path) {
  const std::string source = path.string();
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), source, ": cannot open checkpoint");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LOWBIT_CHECK(bytes.size() >= sizeof kCheckpointMagic + 12 &&
                   std::memcmp(bytes.data(), kCheckpointMagic, sizeof kCheckpointMagic) == 0,
               source, ": not a lowbit training checkpoint (magic 'LBTRAIN' missing)");
  std::uint64_t stored_sum;
  std::memcpy(&stored_sum, bytes.data() + bytes.size() - 8, 8);
  const std::uint64_t sum = fnv1a64(bytes.data(), bytes.size() - 8);
  LOWBIT_CHECK(stored_sum == sum, source, ": checkpoint checksum mismatch (file is truncated or corrupted)");

  detail::ByteReader r(bytes, source);
  char magic[8];
  r.raw(magic, 8, "magic");
  const auto version = r.pod<std::uint32_t>("version");
  LOWBIT_CHECK(version == kCheckpointVersion, source, ": checkpoint version ", version, ", expected ",
               kCheckpointVersion);
  Checkpoint ck;
  ck.source = source;
  auto& c = ck.config;
  c.dim = r.pod<std::int32_t>("dim");
  c.hidden_dim = r.pod<std::int32_t>("hidden_dim");
  c.n_layers = r.pod<std::int32_t>("n_layers");
  c.n_heads = r.pod<std::int32_t>("n_heads");
  c.n_kv_heads = r.pod<std::int32_t>("n_kv_heads");
  c.vocab_size = r.pod<std::int32_t>("vocab_size");
  c.max_seq_len = r.pod<std::int32_t>("max_seq_len");
  c.norm_eps = r.pod<float>("norm_eps");
  c.rope_theta = r.pod<float>("rope_theta");
  c.rope_layout = r.pod<std::uint8_t>("rope_layout") ? nn::RopeLayout::HalfSplit : nn::RopeLayout::Interleaved;
  c.tied_embeddings = r.pod<std::uint8_t>("tied_embeddings") != 0;
  c.validate(source);
  const auto fingerprint = r.pod<std::uint64_t>("config fingerprint");
  LOWBIT_CHECK(fingerprint == config_fingerprint(c), source, ": config fingerprint ", fingerprint,
               " does not match the stored hyper-parameters (", config_fingerprint(c), ")");
  auto& s = ck.state;
  s.run_fingerprint = r.pod<std::uint64_t>("run fingerprint");
  s.step = r.pod<std::int64_t>("step");
  s.total_steps = r.pod<std::int64_t>("total steps");
  for (auto& x : s.data_rng) x = r.pod<std::uint64_t>("data RNG state");
  s.data_position = r.pod<std::uint64_t>("data position");
  s.last_loss = r.pod<double>("last loss");
  const auto count = r.pod<std::uint32_t>("tensor count");
  LOWBIT_CHECK(count < 100000, source, ": checkpoint claims ", count, " tensors");
  for (std::uint32_t i = 0; i < count; ++i) {
    std::string name = r.str("tensor name", 1024);
    nn::Tensor t;
    const auto rank = r.pod<std::uint32_t>("tensor rank");
    LOWBIT_CHECK(rank >= 1 && rank <= 4, source, ": tensor '", name, "' has rank ", rank, ", expected 1..4");
    // The product of up to four dimensions is bounded by the file's size as it is formed, so it can
    // neither overflow nor size an allocation larger than the file.
    const std::int64_t max_values = static_cast<std::int64_t>(bytes.size() / sizeof(float));
    std::int64_t numel = 1;
    for (std::uint32_t d = 0; d < rank; ++d) {
      const auto dim = r.pod<std::int64_t>("tensor dims");
      LOWBIT_CHECK(dim > 0 && dim < (std::int64_t{1} << 32), source, ": tensor '", name, "' has dimension ", dim);
      LOWBIT_CHECK(numel <= max_values / dim, source, ": tensor '", name, "': dimension ", d, " = ", dim,
                   " makes it hold more values than the file has bytes for (", bytes.size(), " bytes)");
      numel *= dim;
      t.shape.push_back(dim);
    }
    t.data.resize(static_cast<std::size_t>(t.numel()));
    r.raw(t.data.data(), t.data.size() * sizeof(float), "tensor values");
    ck.tensors.emplace_back(std::move(name), std::move(t));
  }
  if (r.pod<std::uint8_t>("optimizer flag")) {
    const std::size_t begin = r.position(), end = bytes.size() - 8;
    ck.optimizer_state = bytes.substr(begin, end - begin);
  }
  return ck;
}

// Copies the checkpoint's tensors into `params` (same names, order and sizes) and the optimizer state.
inline void restore_checkpoint(const Checkpoint& ck, const std::vector<nn::Parameter>& params, AdamW* optimizer) {
  LOWBIT_CHECK(ck.tensors.size() == params.size(), ck.source, ": checkpoint holds ", ck.tensors.size(),
               " tensors, the model has ", params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& [name, t] = ck.tensors[i];
    LOWBIT_CHECK(name == params[i].name, ck.source, ": tensor ", i, " is '", name, "', expected '", params[i].name, "'");
    LOWBIT_CHECK(t.numel() == params[i].size, ck.source, ": tensor '", name, "' has ", t.numel(), " values, expected ",
                 params[i].size);
    std::memcpy(params[i].value, t.data.data(), t.data.size() * sizeof(float));
  }
  if (optimizer) {
    LOWBIT_CHECK(!ck.optimizer_state.empty(), ck.source, ": checkpoint has no optimizer state to resume from");
    std::istringstream in(ck.optimizer_state);
    optimizer->read(in, ck.source);
  }
}

// A training checkpoint (e.g. the built-in default model) as named fp32 weights for the model loaders.
inline nn::ModelWeights load_pretrained(const std::filesystem::path& path) {
  Checkpoint ck = read_checkpoint(path);
  nn::ModelWeights w;
  w.config = ck.config;
  w.source = ck.source;
  for (auto& [name, t] : ck.tensors) w.tensors.emplace(name, std::move(t));
  return w;
}

}  // namespace lowbit::train
