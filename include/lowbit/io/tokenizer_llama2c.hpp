// llama2.c's tokenizer.bin with run.c's exact semantics, so perplexities and generations match
// Karpathy's reference token for token. File layout: int32 max_token_length, then per token
// float32 score, int32 byte length, bytes. Ids 0/1/2 are <unk>, BOS, EOS; byte tokens <0xXX> are id
// XX + 3. Encoding: optional BOS, a dummy-prefix " " for non-empty text, one token per UTF-8 character
// (bytes as fallback), then greedy merging of the best-scoring adjacent pair (leftmost on ties).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_score_merge.hpp"

namespace lowbit::io {

class Llama2cTokenizer final : public Tokenizer {
 public:
  static constexpr std::int32_t kBos = 1;
  static constexpr std::int32_t kEos = 2;
  static constexpr std::int32_t kByteOffset = 3;  // <0xXX> has id XX + 3

  // Reads `path`; `vocab_size` is the model's (the file itself does not store it): -1 reads to EOF.
  explicit Llama2cTokenizer(const std::string& path, int vocab_size = -1) : path_(path) {
    std::ifstream in(path, std::ios::binary);
    LOWBIT_CHECK(in.good(), "tokenizer file ", path, ": cannot open");
    in.seekg(0, std::ios::end);
    const auto file_size = static_cast<std::size_t>(in.tellg());
    in.seekg(0);
    std::vector<char> bytes(file_size);
    in.read(bytes.data(), static_cast<std::streamsize>(file_size));
    LOWBIT_CHECK(in.good() || in.eof(), "tokenizer file ", path, ": read failed");
    parse(bytes, vocab_size);
  }

  // From an in-memory copy of the file (tests, embedded vocabularies).
  Llama2cTokenizer(const std::vector<char>& bytes, std::string name, int vocab_size = -1) : path_(std::move(name)) {
    parse(bytes, vocab_size);
  }

  // run.c's encode(text, bos, eos).
  std::vector<std::int32_t> encode(std::string_view text, bool bos, bool eos) const {
    // run.c reads a C string: stop at the first NUL.
    if (auto nul = text.find('\0'); nul != std::string_view::npos) text = text.substr(0, nul);
    std::vector<detail::MergeSymbol> symbols;
    symbols.reserve(text.size() + 2);
    auto push_id = [&](std::int32_t id) { symbols.push_back({vocab_[static_cast<std::size_t>(id)], id}); };
    if (bos) push_id(kBos);
    if (!text.empty()) {
      const std::int32_t space = find(" ");
      LOWBIT_CHECK(space >= 0, "tokenizer file ", path_, ": has no \" \" token for the dummy prefix");
      push_id(space);
    }
    for (auto unit : detail::utf8_units(text)) {
      const std::int32_t id = find(unit);
      if (id >= 0) {
        push_id(id);
      } else {
        for (unsigned char b : unit) {
          const std::int32_t byte_id = static_cast<std::int32_t>(b) + kByteOffset;
          LOWBIT_CHECK(byte_id < vocab_size(), "tokenizer file ", path_, ": byte fallback id ", byte_id,
                       " outside the vocabulary of ", vocab_size());
          push_id(byte_id);
        }
      }
    }
    std::string key;
    auto merged = detail::score_merge(std::move(symbols), [this, &key](std::string_view a, std::string_view b) {
      std::optional<std::pair<std::int32_t, float>> hit;
      key.assign(a);
      key.append(b);
      const std::int32_t id = find(key);
      if (id >= 0) hit.emplace(id, scores_[static_cast<std::size_t>(id)]);
      return hit;
    });
    std::vector<std::int32_t> ids;
    ids.reserve(merged.size() + 1);
    for (const auto& s : merged) ids.push_back(s.id);
    if (eos) ids.push_back(kEos);
    return ids;
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const override {
    return encode(text, add_bos, false);
  }

  // run.c's decode: strip the leading space of the first piece after BOS, map <0xXX> to the byte.
  std::string decode_token(std::int32_t prev, std::int32_t id) const override {
    LOWBIT_CHECK(id >= 0 && id < vocab_size(), "tokenizer ", path_, ": token id ", id, " outside [0, ",
                 vocab_size(), ")");
    std::string_view piece = vocab_[static_cast<std::size_t>(id)];
    if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    if (auto byte = parse_byte_piece(piece)) return std::string(1, static_cast<char>(*byte));
    return std::string(piece);
  }

  std::int32_t bos_id() const override { return kBos; }
  std::int32_t eos_id() const override { return kEos; }
  int vocab_size() const override { return static_cast<int>(vocab_.size()); }
  std::string describe() const override {
    return "llama2.c tokenizer " + path_ + " (" + std::to_string(vocab_size()) + " tokens)";
  }

  const std::string& piece(std::int32_t id) const { return vocab_.at(static_cast<std::size_t>(id)); }
  float score(std::int32_t id) const { return scores_.at(static_cast<std::size_t>(id)); }
  int max_token_length() const { return max_token_length_; }

  // "<0xAB>" -> 0xAB (run.c's sscanf "<0x%02hhX>" accepts exactly this shape for its byte pieces).
  static std::optional<unsigned char> parse_byte_piece(std::string_view piece) {
    if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      return -1;
    };
    const int hi = hex(piece[3]), lo = hex(piece[4]);
    if (hi < 0 || lo < 0) return std::nullopt;
    return static_cast<unsigned char>(hi * 16 + lo);
  }

 private:
  std::int32_t find(std::string_view s) const {
    auto it = index_.find(std::string(s));
    return it == index_.end() ? -1 : it->second;
  }

  void parse(const std::vector<char>& bytes, int vocab_size) {
    std::size_t pos = 0;
    auto read = [&](void* dst, std::size_t n, const char* what, std::size_t token) {
      LOWBIT_CHECK(pos + n <= bytes.size(), "tokenizer file ", path_, ": truncated while reading ", what,
                   " of token ", token, " at byte ", pos, " (file has ", bytes.size(), " bytes)");
      std::memcpy(dst, bytes.data() + pos, n);
      pos += n;
    };
    std::int32_t max_len = 0;
    read(&max_len, 4, "max_token_length", 0);
    LOWBIT_CHECK(max_len > 0 && max_len < (1 << 16), "tokenizer file ", path_,
                 ": max_token_length is ", max_len, ", expected a small positive number");
    max_token_length_ = max_len;
    for (std::size_t t = 0; vocab_size < 0 ? pos < bytes.size() : t < static_cast<std::size_t>(vocab_size); ++t) {
      float score = 0;
      std::int32_t len = 0;
      read(&score, 4, "score", t);
      read(&len, 4, "length", t);
      LOWBIT_CHECK(len >= 0 && len <= max_len, "tokenizer file ", path_, ": token ", t, " has length ", len,
                   ", expected 0..", max_len, " (max_token_length)");
      std::string piece(static_cast<std::size_t>(len), '\0');
      if (len > 0) read(piece.data(), static_cast<std::size_t>(len), "bytes", t);
      scores_.push_back(score);
      vocab_.push_back(std::move(piece));
    }
    LOWBIT_CHECK(vocab_.size() > static_cast<std::size_t>(kEos), "tokenizer file ", path_, ": holds ",
                 vocab_.size(), " tokens, expected at least 3 (<unk>, BOS, EOS)");
    for (std::size_t i = 0; i < vocab_.size(); ++i)
      index_.emplace(vocab_[i], static_cast<std::int32_t>(i));  // first id wins for duplicates
  }

  std::string path_;
  int max_token_length_ = 0;
  std::vector<std::string> vocab_;
  std::vector<float> scores_;
  std::unordered_map<std::string, std::int32_t> index_;
};

}  // namespace lowbit::io
