// A vocabulary as model files describe it (GGUF tokenizer.ggml.* keys, or a Hugging Face
// tokenizer.json): tokens, scores, token types, merges, special ids and flags. The GGUF/JSON readers
// fill it and the SentencePiece-style and BPE tokenizers are built from it, so each tokenizer is
// testable without a model file and each reader without a tokenizer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::io {

// GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : std::int32_t {
  Undefined = 0,
  Normal = 1,
  Unknown = 2,
  Control = 3,
  UserDefined = 4,
  Unused = 5,
  Byte = 6,
};

struct VocabSpec {
  std::string source;               // file it came from, for error messages
  std::string model;                // "llama" (SentencePiece-style) or "gpt2" (byte-level BPE)
  std::string pre;                  // GGUF tokenizer.ggml.pre ("smollm", "llama3", ...), BPE only
  std::vector<std::string> tokens;  // [vocab]
  std::vector<float> scores;        // [vocab] or empty (BPE)
  std::vector<std::int32_t> token_types;  // [vocab] TokenType values, or empty (all Normal)
  std::vector<std::string> merges;  // "left right" in rank order (BPE)
  // Pre-tokenizer regexes applied in sequence, each isolating its matches (BPE). Empty: derive from
  // `pre`. A Hugging Face tokenizer.json sets them from its pre_tokenizer.
  std::vector<std::string> pre_regexes;
  std::int32_t bos_id = -1, eos_id = -1, unk_id = -1;
  bool add_bos = false, add_eos = false;
  bool add_space_prefix = true;  // SentencePiece dummy prefix
  bool byte_fallback = true;     // SentencePiece <0xXX> fallback
  // Whether control/user-defined tokens written literally in the text become their ids. Hugging Face
  // `tokenizers` always does this for added tokens (BPE default); SentencePiece and llama.cpp's
  // perplexity tool treat them as plain text (SentencePiece-style default).
  bool parse_special = true;

  TokenType type(std::size_t id) const {
    return id < token_types.size() ? static_cast<TokenType>(token_types[id]) : TokenType::Normal;
  }
};

}  // namespace lowbit::io
