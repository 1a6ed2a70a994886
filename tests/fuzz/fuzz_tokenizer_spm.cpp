// Fuzz target `tokenizer_spm`: a SentencePiece .model (a protobuf ModelProto) as raw bytes.
// Covers io::load_tokenizer's .model path: SentencePieceTokenizer, i.e. libsentencepiece's own parser
// and the wrapper around it (decode_token, vocab_spec), then encodes and decodes awkward text. Built only
// when libsentencepiece is available (LOWBIT_WITH_SENTENCEPIECE). The library itself is not
// instrumented, so coverage guidance stops at its boundary; crashes inside it still show.
#include <lowbit/io/tokenizer.hpp>

#include "fuzz_common.hpp"

LOWBIT_FUZZ_TARGET(tokenizer_spm) {
  [[maybe_unused]] const auto tok = lowbit_fuzz::load_and_exercise_tokenizer("tokenizer.model", data, size);
#if defined(LOWBIT_WITH_SENTENCEPIECE)
  if (const auto* spm = dynamic_cast<const lowbit::io::SentencePieceTokenizer*>(tok.get()))
    lowbit_fuzz::expect_error_only([&] {
      const auto spec = spm->vocab_spec();
      lowbit_fuzz::expect_error_only([&] { lowbit_fuzz::exercise_tokenizer(lowbit::io::SpmTokenizer(spec)); });
    });
#endif
  return 0;
}
