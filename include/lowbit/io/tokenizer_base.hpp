// The Tokenizer interface every vocabulary implements (llama2.c tokenizer.bin, GGUF-embedded
// SentencePiece-style and byte-level BPE vocabularies, Hugging Face tokenizer.json, SentencePiece
// .model). Evaluation and generation only see this interface, so a model's text side can be swapped
// without touching them. Kept apart from tokenizer.hpp (the loader) so implementations can include it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`; with `add_bos` the BOS id comes first (when the vocabulary has one).
  virtual std::vector<std::int32_t> encode(std::string_view text, bool add_bos) const = 0;

  // The bytes token `id` contributes when it follows `prev` (-1 at the start of a sequence). Pieces
  // are raw bytes: a multi-byte UTF-8 character may be split across consecutive tokens.
  virtual std::string decode_token(std::int32_t prev, std::int32_t id) const = 0;

  // The text of a whole id sequence (concatenated decode_token calls, with per-tokenizer cleanup).
  virtual std::string decode(const std::vector<std::int32_t>& ids) const {
    std::string out;
    std::int32_t prev = -1;
    for (auto id : ids) {
      out += decode_token(prev, id);
      prev = id;
    }
    return out;
  }

  virtual std::int32_t bos_id() const = 0;  // -1 when the vocabulary has none
  virtual std::int32_t eos_id() const = 0;
  virtual int vocab_size() const = 0;

  // Whether the model's own convention prepends BOS to a fresh text (GGUF add_bos_token, HF
  // post-processor, llama2.c: always).
  virtual bool adds_bos_by_default() const { return bos_id() >= 0; }

  // Short description for reports: "llama2.c tok512.bin (512 tokens)", "gguf gpt2/smollm", ...
  virtual std::string describe() const = 0;
};

}  // namespace lowbit::io
