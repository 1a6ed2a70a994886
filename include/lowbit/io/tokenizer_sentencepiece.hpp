// SentencePiece .model files through libsentencepiece itself (compiled in when
// LOWBIT_WITH_SENTENCEPIECE is defined), so a model shipped with a .model tokenizer is encoded exactly
// as its authors' Python code does, normalizer included. Also exports the pieces as a VocabSpec so
// lowbit's own SentencePiece-style tokenizer can be checked against the library.
#pragma once

#if defined(LOWBIT_WITH_SENTENCEPIECE)

#include <sentencepiece_processor.h>

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_llama2c.hpp"
#include "tokenizer_vocab.hpp"

namespace lowbit::io {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) : path_(path) {
    // The library reports most bad files through its status, but some (an empty piece: Darts's
    // "zero-length key") as a std::exception thrown from inside Load: both become lowbit::Error.
    sentencepiece::util::Status status;
    try {
      status = processor_.Load(path);
    } catch (const std::exception& e) {
      fail("SentencePiece model ", path, ": the library rejected it: ", e.what());
    }
    LOWBIT_CHECK(status.ok(), "SentencePiece model ", path, ": ", status.ToString());
  }

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const override {
    std::vector<int> pieces;
    const auto status = processor_.Encode(text, &pieces);
    LOWBIT_CHECK(status.ok(), "SentencePiece model ", path_, ": encode failed: ", status.ToString());
    std::vector<std::int32_t> ids;
    if (add_bos && bos_id() >= 0) ids.push_back(bos_id());
    ids.insert(ids.end(), pieces.begin(), pieces.end());
    return ids;
  }

  std::string decode_token(std::int32_t prev, std::int32_t id) const override {
    LOWBIT_CHECK(id >= 0 && id < vocab_size(), path_, ": token id ", id, " outside [0, ", vocab_size(), ")");
    if (processor_.IsControl(id)) return {};
    const std::string piece = processor_.IdToPiece(id);
    if (processor_.IsByte(id))
      if (auto b = Llama2cTokenizer::parse_byte_piece(piece)) return std::string(1, static_cast<char>(*b));
    std::string out;
    const std::string_view space = "\xE2\x96\x81";
    for (std::size_t i = 0; i < piece.size();) {
      if (piece.compare(i, space.size(), space) == 0) {
        out += ' ';
        i += space.size();
      } else {
        out += piece[i++];
      }
    }
    if ((prev < 0 || prev == bos_id()) && !out.empty() && out[0] == ' ') out.erase(0, 1);
    return out;
  }

  // The library's own decoder (it also undoes normalization-invariant details such as byte runs).
  std::string decode(const std::vector<std::int32_t>& ids) const override {
    std::vector<int> pieces(ids.begin(), ids.end());
    std::string out;
    const auto status = processor_.Decode(pieces, &out);
    LOWBIT_CHECK(status.ok(), "SentencePiece model ", path_, ": decode failed: ", status.ToString());
    return out;
  }

  std::int32_t bos_id() const override { return processor_.bos_id(); }
  std::int32_t eos_id() const override { return processor_.eos_id(); }
  int vocab_size() const override { return processor_.GetPieceSize(); }
  std::string describe() const override {
    return "SentencePiece " + path_ + " (" + std::to_string(vocab_size()) + " pieces)";
  }

  // Pieces, scores and types in GGUF's terms (what llama.cpp's converter would write).
  VocabSpec vocab_spec() const {
    VocabSpec v;
    v.source = path_;
    v.model = "llama";
    for (int i = 0; i < vocab_size(); ++i) {
      v.tokens.push_back(processor_.IdToPiece(i));
      v.scores.push_back(processor_.GetScore(i));
      TokenType t = TokenType::Normal;
      if (processor_.IsUnknown(i)) t = TokenType::Unknown;
      else if (processor_.IsControl(i)) t = TokenType::Control;
      else if (processor_.IsUnused(i)) t = TokenType::Unused;
      else if (processor_.IsByte(i)) t = TokenType::Byte;
      v.token_types.push_back(static_cast<std::int32_t>(t));
    }
    v.bos_id = bos_id();
    v.eos_id = eos_id();
    v.unk_id = processor_.unk_id();
    v.add_bos = true;
    v.parse_special = false;  // the library encodes "<s>" written in the text as characters
    return v;
  }

 private:
  std::string path_;
  sentencepiece::SentencePieceProcessor processor_;
};

}  // namespace lowbit::io

#endif  // LOWBIT_WITH_SENTENCEPIECE
