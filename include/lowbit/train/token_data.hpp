// Token streams for language-model training: a training stream and a held-out stream, plus a sampler that
// draws random windows of T + 1 tokens from a seeded generator whose state (and the count of batches
// drawn) goes into checkpoints, so a resumed run sees exactly the batches it would have seen.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/rng.hpp"
#include "byte_vocab.hpp"
#include "checkpoint.hpp"
#include "synthetic_corpus.hpp"

namespace lowbit::train {

struct TokenData {
  std::vector<std::int32_t> train, heldout;
  int vocab_size = 0;
  std::string description;
  std::uint64_t fingerprint = 0;  // of both streams; part of the run fingerprint

  void finalize() {
    fingerprint = fnv1a64(train.data(), train.size() * sizeof(std::int32_t));
    fingerprint = fnv1a64(heldout.data(), heldout.size() * sizeof(std::int32_t), fingerprint);
  }
};

// Byte tokens of documents from the synthetic grammar, BOS before each document; the held-out stream
// comes from an independent generator so no document is shared.
inline TokenData synthetic_token_data(std::uint64_t seed, std::size_t train_bytes, std::size_t heldout_bytes) {
  TokenData d;
  d.vocab_size = ByteVocabulary::size;
  auto fill = [](std::vector<std::int32_t>& out, std::uint64_t s, std::size_t bytes) {
    SyntheticCorpus corpus(s);
    out.reserve(bytes + 512);
    while (out.size() < bytes) {
      auto ids = ByteVocabulary::encode(corpus.document(), true);
      out.insert(out.end(), ids.begin(), ids.end());
    }
  };
  fill(d.train, seed, train_bytes);
  fill(d.heldout, seed ^ 0x5eed0fde1d0a7ULL, heldout_bytes);
  d.description = "synthetic corpus (seed " + std::to_string(seed) + ", " + std::to_string(d.train.size()) +
                  " train / " + std::to_string(d.heldout.size()) + " held-out byte tokens)";
  d.finalize();
  return d;
}

inline std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  LOWBIT_CHECK(in.good(), path.string(), ": cannot open text file");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Splits `tokens` so the last `heldout_fraction` is held out.
inline TokenData split_tokens(std::vector<std::int32_t> tokens, double heldout_fraction, int vocab_size,
                              std::string description) {
  LOWBIT_CHECK(heldout_fraction > 0 && heldout_fraction < 1, description, ": held-out fraction ", heldout_fraction,
               " must be in (0, 1)");
  TokenData d;
  d.vocab_size = vocab_size;
  const auto cut = static_cast<std::size_t>(static_cast<double>(tokens.size()) * (1.0 - heldout_fraction));
  d.heldout.assign(tokens.begin() + static_cast<std::ptrdiff_t>(cut), tokens.end());
  tokens.resize(cut);
  d.train = std::move(tokens);
  d.description = std::move(description);
  d.finalize();
  return d;
}

// A text file as byte tokens (BOS first), the last `heldout_fraction` held out.
inline TokenData byte_text_data(const std::filesystem::path& path, double heldout_fraction) {
  auto ids = ByteVocabulary::encode(read_text_file(path), true);
  std::string description = path.string() + " (" + std::to_string(ids.size()) + " byte tokens)";
  return split_tokens(std::move(ids), heldout_fraction, ByteVocabulary::size, std::move(description));
}

class BatchSampler {
 public:
  // Targets equal to `masked_target` (e.g. BOS where documents are arbitrary paragraphs, so "a new
  // document starts" is not something to learn) are replaced by -1, which the loss ignores.
  BatchSampler(const std::vector<std::int32_t>& tokens, int batch, int seq_len, Rng rng,
               std::int32_t masked_target = -1)
      : tokens_(tokens), batch_(batch), seq_len_(seq_len), masked_target_(masked_target), rng_(rng) {
    LOWBIT_CHECK(tokens.size() > static_cast<std::size_t>(seq_len) + 1, "training data has ", tokens.size(),
                 " tokens, fewer than one window of ", seq_len + 1);
  }

  // inputs, targets: [batch * seq_len]; targets are the inputs shifted by one.
  void next(std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets) {
    const std::size_t n = static_cast<std::size_t>(batch_) * seq_len_;
    inputs.resize(n);
    targets.resize(n);
    const std::uint64_t starts = tokens_.size() - static_cast<std::size_t>(seq_len_) - 1;
    for (int b = 0; b < batch_; ++b) {
      const std::size_t start = rng_.below(starts + 1);
      for (int t = 0; t < seq_len_; ++t) {
        inputs[static_cast<std::size_t>(b) * seq_len_ + t] = tokens_[start + t];
        const std::int32_t target = tokens_[start + t + 1];
        targets[static_cast<std::size_t>(b) * seq_len_ + t] = target == masked_target_ ? -1 : target;
      }
    }
    ++position_;
  }

  const Rng& rng() const { return rng_; }
  void restore(const Rng::State& state, std::uint64_t position) {
    rng_.set_state(state);
    position_ = position;
  }
  std::uint64_t position() const { return position_; }

 private:
  const std::vector<std::int32_t>& tokens_;
  int batch_, seq_len_;
  std::int32_t masked_target_;
  Rng rng_;
  std::uint64_t position_ = 0;
};

}  // namespace lowbit::train
