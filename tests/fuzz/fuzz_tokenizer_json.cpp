// Fuzz target `tokenizer_json`: a Hugging Face tokenizer.json as raw bytes.
// Covers io::load_tokenizer's JSON path: vocab_from_hf_json (model.vocab ids, merges in both the string
// and the pair form, added_tokens, pre_tokenizer Sequence/Split/Digits/ByteLevel with user-supplied
// regexes compiled by PCRE2, post_processor BOS) and the byte-level BPE tokenizer built from it, then
// encodes and decodes awkward text with whatever loaded.
#include <lowbit/io/tokenizer.hpp>

#include "fuzz_common.hpp"

LOWBIT_FUZZ_TARGET(tokenizer_json) {
  lowbit_fuzz::load_and_exercise_tokenizer("tokenizer.json", data, size);
  return 0;
}
