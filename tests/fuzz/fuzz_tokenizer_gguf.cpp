// Fuzz target `tokenizer_gguf`: a GGUF file used as a tokenizer (its tokenizer.ggml.* keys).
// Covers io::load_tokenizer's GGUF path: vocab_from_gguf (tokens, scores, token types, merges, special
// ids, flags) and the SentencePiece-style ("llama") and byte-level BPE ("gpt2") tokenizers built from
// it, then encodes and decodes awkward text with whatever loaded.
#include <lowbit/io/tokenizer.hpp>

#include "fuzz_common.hpp"

LOWBIT_FUZZ_TARGET(tokenizer_gguf) {
  lowbit_fuzz::load_and_exercise_tokenizer("vocab.gguf", data, size);
  return 0;
}
