// SentencePiece-style vocabularies: lowbit's own implementation (the one GGUF "llama" vocabularies use)
// must equal libsentencepiece on tok512.model, and llama2.c's run.c encoding of tok512.bin is compared
// with the Python sentencepiece ids committed in tests/data. The one known difference: tok512.model's
// normalizer removes extra spaces (leading, trailing, repeated), which run.c and GGUF vocabularies do not.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <lowbit/io/tokenizer.hpp>

#include "test_util.hpp"

using lowbit::test::read_ids;
using lowbit::test::read_text;
using lowbit::test::test_data;
using lowbit::test::wikitext_200k;

namespace {

// SentencePiece's remove_extra_whitespaces: drop leading/trailing spaces, collapse runs of spaces.
std::string collapse_spaces(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += c;
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> lines;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

#if defined(LOWBIT_WITH_SENTENCEPIECE)
TEST_CASE("SpmTokenizer equals libsentencepiece on tok512.model") {
  auto model = lowbit::test::shared_file("models/tok512.model");
  if (model.empty()) LOWBIT_SKIP("shared/data not found");
  lowbit::io::SentencePieceTokenizer sp(model.string());
  CHECK(sp.vocab_size() == 512);
  lowbit::io::SpmTokenizer ours(sp.vocab_spec());
  std::vector<std::string> texts = lines_of(read_text(test_data("tokenizer_edge_cases.txt")));
  for (const auto& l : lines_of(wikitext_200k())) texts.push_back(l);
  std::size_t compared = 0, mismatched = 0, tokens = 0;
  for (const auto& raw : texts) {
    const auto text = collapse_spaces(raw);
    const auto want = sp.encode(text, true);
    const auto got = ours.encode(text, true);
    tokens += want.size();
    ++compared;
    if (got != want) {
      if (++mismatched <= 3) MESSAGE("differs on: ", text);
    }
    CHECK(ours.decode(got) == text);
  }
  MESSAGE(compared, " lines, ", tokens, " tokens, ", mismatched, " lines differ");
  CHECK(compared > 1000);
  CHECK(mismatched == 0);
}

TEST_CASE("a SentencePiece model the library throws on is a lowbit::Error, not an escaped exception") {
  // Two unigram pieces "\0" (zero-length keys to Darts, which throws from inside Load): the fuzzer's
  // finding tests/fuzz/regressions/tokenizer_spm/unigram_empty_piece, written here byte for byte.
  const unsigned char bytes[] = {0x0a, 0x0a, 0x0a, 0x01, 0x00, 0x15, 0x20, 0x00, 0x28, 0x01, 0x18, 0x02,
                                 0x0a, 0x0a, 0x0a, 0x01, 0x00, 0x15, 0x70, 0x01, 0x20, 0x00, 0x28, 0x01};
  const auto path = std::filesystem::temp_directory_path() / "lowbit_spm_empty_piece.model";
  {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes), sizeof bytes);
  }
  std::string err;
  try {
    lowbit::io::load_tokenizer("", path.string());
  } catch (const lowbit::Error& e) {
    err = e.what();
  }
  std::filesystem::remove(path);
  MESSAGE(err);
  CHECK(err.find("lowbit_spm_empty_piece.model") != std::string::npos);
}
#endif

TEST_CASE("llama2.c tok512.bin versus Python sentencepiece on tok512.model") {
  auto bin = lowbit::test::shared_file("models/tok512.bin");
  if (bin.empty()) LOWBIT_SKIP("shared/data not found");
  lowbit::io::Llama2cTokenizer run_c(bin.string());
  // Whole files, exactly as tools/reference/tokenizer_reference.py encoded them.
  for (auto [text, ids_file] :
       {std::pair{read_text(test_data("tokenizer_edge_cases.txt")), std::string("tok512_spm_edge_cases.ids.txt")},
        std::pair{wikitext_200k(), std::string("tok512_spm_wikitext2_200k.ids.txt")}}) {
    if (text.empty()) continue;
    const auto want = read_ids(test_data(ids_file));
    auto got = run_c.encode(text, false, false);
    const bool identical = got == want;
    // run.c keeps every space; sentencepiece's normalizer collapsed them. On the collapsed text the
    // two must agree exactly.
    auto collapsed = run_c.encode(collapse_spaces(text), false, false);
    MESSAGE(ids_file, ": run.c ", got.size(), " ids vs sentencepiece ", want.size(), " ids (identical: ", identical,
            "); after collapsing spaces run.c gives ", collapsed.size(), " ids");
    CHECK(collapsed == want);
  }
}
