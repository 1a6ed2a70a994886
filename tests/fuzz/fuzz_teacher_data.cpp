// Fuzz target `teacher_data`: a `lowbit teacher-data` JSONL file (train/teacher_data.hpp), read the way
// `lowbit qat` reads it: read_teacher_data (UTF-8, JSON per line, header version and vocabulary size,
// sample indices in order, token ids inside the vocabulary, a cut last line ignored), then
// teacher_token_data (vocabulary and tokenizer compared with the model's, the held-out split).
#include <lowbit/calib/bitdistiller.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

LOWBIT_FUZZ_TARGET(teacher_data) {
  const auto path = lowbit_fuzz::write_file("teacher.jsonl", std::string_view(reinterpret_cast<const char*>(data), size));
  lowbit_fuzz::expect_error_only([&] {
    const auto t = train::read_teacher_data(path.string());
    (void)train::teacher_token_data(t, path.string(), 512, "spm:512", 0.2);
  });
  return 0;
}
