// SentencePiece-style vocabulary embedded in GGUF files (tokenizer.ggml.model = "llama": pieces with
// "▁" for spaces, scores, token types, <0xXX> byte fallback), as used by Llama 1/2, Mistral and
// TinyLlama. Encoding as SentencePiece's BPE does at inference: spaces become "▁", a dummy-prefix "▁"
// is prepended, characters merge pairwise by best piece score (leftmost on ties), and characters
// that end up outside the vocabulary fall back to byte pieces. Control/user-defined pieces that occur
// literally in the text are cut out first (llama.cpp's special-token handling).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_llama2c.hpp"
#include "tokenizer_score_merge.hpp"
#include "tokenizer_vocab.hpp"

namespace lowbit::io {

class SpmTokenizer final : public Tokenizer {
 public:
  static constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK "▁"

  explicit SpmTokenizer(const VocabSpec& spec) : spec_(spec) {
    const auto n = spec.tokens.size();
    LOWBIT_CHECK(n > 0, spec.source, ": SentencePiece vocabulary is empty");
    LOWBIT_CHECK(spec.scores.empty() || spec.scores.size() == n, spec.source, ": tokenizer.ggml.scores has ",
                 spec.scores.size(), " entries, expected ", n, " (one per token)");
    LOWBIT_CHECK(spec.token_types.empty() || spec.token_types.size() == n, spec.source,
                 ": tokenizer.ggml.token_type has ", spec.token_types.size(), " entries, expected ", n);
    for (int id : {spec.bos_id, spec.eos_id, spec.unk_id})
      LOWBIT_CHECK(id < static_cast<int>(n), spec.source, ": special token id ", id, " outside the vocabulary of ", n);
    byte_ids_.fill(-1);
    for (std::size_t i = 0; i < n; ++i) {
      const auto id = static_cast<std::int32_t>(i);
      const auto type = spec.type(i);
      if (type == TokenType::Normal || type == TokenType::Undefined) mergeable_.emplace(spec.tokens[i], id);
      if (type == TokenType::Control || type == TokenType::UserDefined) specials_.push_back(id);
      if (type == TokenType::Byte || type == TokenType::Undefined || type == TokenType::Normal)
        if (auto b = Llama2cTokenizer::parse_byte_piece(spec.tokens[i]); b && (type == TokenType::Byte || byte_ids_[*b] < 0))
          byte_ids_[*b] = id;
    }
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<std::int32_t> ids;
    if (add_bos && spec_.bos_id >= 0) ids.push_back(spec_.bos_id);
    std::size_t pos = 0;
    bool first = true;
    while (pos < text.size()) {
      auto [at, len, special] = next_special(text, pos);
      encode_ordinary(text.substr(pos, at - pos), first, ids);
      first = false;
      if (special < 0) break;
      ids.push_back(special);
      pos = at + len;
    }
    if (spec_.add_eos && spec_.eos_id >= 0) ids.push_back(spec_.eos_id);
    return ids;
  }

  // Byte pieces become their byte, "▁" a space; the dummy-prefix space of the first piece (or of the
  // first piece after BOS) is dropped; control pieces decode to nothing.
  std::string decode_token(std::int32_t prev, std::int32_t id) const override {
    LOWBIT_CHECK(id >= 0 && id < vocab_size(), spec_.source, ": token id ", id, " outside [0, ", vocab_size(), ")");
    const auto type = spec_.type(static_cast<std::size_t>(id));
    if (type == TokenType::Control) return {};
    const auto& piece = spec_.tokens[static_cast<std::size_t>(id)];
    if (type == TokenType::Byte)
      if (auto b = Llama2cTokenizer::parse_byte_piece(piece)) return std::string(1, static_cast<char>(*b));
    std::string out;
    for (std::size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        out += ' ';
        i += kSpace.size();
      } else {
        out += piece[i++];
      }
    }
    if (spec_.add_space_prefix && (prev < 0 || prev == spec_.bos_id) && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  std::int32_t bos_id() const override { return spec_.bos_id; }
  std::int32_t eos_id() const override { return spec_.eos_id; }
  int vocab_size() const override { return static_cast<int>(spec_.tokens.size()); }
  bool adds_bos_by_default() const override { return spec_.add_bos && spec_.bos_id >= 0; }
  std::string describe() const override {
    return "SentencePiece-style vocabulary (" + std::to_string(vocab_size()) + " pieces) from " + spec_.source;
  }

 private:
  struct SpecialHit {
    std::size_t at, len;
    std::int32_t id;
  };
  SpecialHit next_special(std::string_view text, std::size_t pos) const {
    SpecialHit best{text.size(), 0, -1};
    if (!spec_.parse_special) return best;
    for (auto id : specials_) {
      const auto& s = spec_.tokens[static_cast<std::size_t>(id)];
      if (s.empty()) continue;
      const auto at = text.find(s, pos);
      if (at == std::string_view::npos) continue;
      if (at < best.at || (at == best.at && s.size() > best.len)) best = {at, s.size(), id};
    }
    return best;
  }

  void encode_ordinary(std::string_view text, bool at_start, std::vector<std::int32_t>& ids) const {
    if (text.empty()) return;
    std::string escaped;
    if (spec_.add_space_prefix && at_start) escaped += kSpace;
    for (char c : text) {
      if (c == ' ')
        escaped += kSpace;
      else
        escaped += c;
    }
    std::vector<detail::MergeSymbol> symbols;
    for (auto unit : detail::utf8_units(escaped)) symbols.push_back({std::string(unit), find(unit)});
    std::string key;
    auto merged = detail::score_merge(std::move(symbols), [&](std::string_view a, std::string_view b) {
      std::optional<std::pair<std::int32_t, float>> hit;
      key.assign(a);
      key.append(b);
      auto it = mergeable_.find(key);
      if (it != mergeable_.end())
        hit.emplace(it->second, spec_.scores.empty() ? 0.0f : spec_.scores[static_cast<std::size_t>(it->second)]);
      return hit;
    });
    for (const auto& s : merged) {
      if (s.id >= 0) {
        ids.push_back(s.id);
        continue;
      }
      bool all_bytes = spec_.byte_fallback;
      for (unsigned char b : s.text) all_bytes = all_bytes && byte_ids_[b] >= 0;
      if (all_bytes) {
        for (unsigned char b : s.text) ids.push_back(byte_ids_[b]);
      } else {
        LOWBIT_CHECK(spec_.unk_id >= 0, spec_.source, ": character '", s.text,
                     "' is not in the vocabulary, has no byte fallback and there is no unknown token");
        ids.push_back(spec_.unk_id);
      }
    }
  }

  std::int32_t find(std::string_view s) const {
    auto it = mergeable_.find(std::string(s));
    return it == mergeable_.end() ? -1 : it->second;
  }

  VocabSpec spec_;
  std::unordered_map<std::string, std::int32_t> mergeable_;
  std::vector<std::int32_t> specials_;
  std::array<std::int32_t, 256> byte_ids_{};
};

}  // namespace lowbit::io
