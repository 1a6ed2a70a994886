// Fuzz target `tokenizer_llama2c`: a llama2.c tokenizer.bin as raw bytes.
// Covers Llama2cTokenizer's parser through io::load_tokenizer (read to EOF) and through the in-memory
// constructor with a model vocabulary size taken from the first input byte (the form a model loader
// uses: exactly that many tokens), then encodes and decodes awkward text with whatever loaded.
#include <lowbit/io/tokenizer.hpp>

#include "fuzz_common.hpp"

LOWBIT_FUZZ_TARGET(tokenizer_llama2c) {
  lowbit_fuzz::load_and_exercise_tokenizer("tokenizer.bin", data, size);

  const std::vector<char> bytes(data, data + size);
  const int vocab_size = size > 0 ? data[0] * 2 : 0;
  lowbit_fuzz::expect_error_only([&] {
    const lowbit::io::Llama2cTokenizer sized(bytes, "tokenizer.bin (sized)", vocab_size);
    lowbit_fuzz::exercise_tokenizer(sized);
  });
  return 0;
}
