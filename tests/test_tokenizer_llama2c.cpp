// llama2.c tokenizer.bin: encode must equal run.c's encode on the committed reference ids (which the
// stories260K perplexity depends on), decode must invert it, and broken files must fail cleanly.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>

#include <lowbit/io/tokenizer_llama2c.hpp>

#include "test_util.hpp"

using lowbit::test::read_ids;
using lowbit::test::read_text;

namespace {

std::string_view strip(std::string_view s) {
  const char* ws = " \t\n\r\v\f";
  const auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

}  // namespace

TEST_CASE("llama2.c tok512 encode equals run.c on 100 TinyStories") {
  auto tok_path = lowbit::test::shared_file("models/tok512.bin");
  auto text_path = lowbit::test::shared_file("text/tinystories_v2_valid_first100.txt");
  auto ids_path = lowbit::test::shared_file("models/tinystories_v2_valid_first100.tok512.ids.txt");
  if (tok_path.empty() || text_path.empty() || ids_path.empty()) LOWBIT_SKIP("shared/data not found");
  lowbit::io::Llama2cTokenizer tok(tok_path.string(), 512);
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.max_token_length() == 7);

  const std::string text = read_text(text_path);
  std::vector<std::string> stories;
  const std::string sep = "<|endoftext|>";
  for (std::size_t start = 0;;) {
    const auto at = text.find(sep, start);
    auto story = strip(std::string_view(text).substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (!story.empty()) stories.emplace_back(story);
    if (at == std::string::npos) break;
    start = at + sep.size();
  }
  REQUIRE(stories.size() == 100);

  std::ifstream ids_in(ids_path);
  std::string line;
  std::size_t total = 0, story = 0, mismatched = 0;
  while (std::getline(ids_in, line)) {
    std::istringstream ls(line);
    std::vector<std::int32_t> want;
    for (std::int32_t id; ls >> id;) want.push_back(id);
    REQUIRE(story < stories.size());
    const auto got = tok.encode(stories[story], true, false);
    if (got != want) ++mismatched;
    // Decoding strips the dummy-prefix space after BOS and gives the story back byte for byte.
    CHECK(tok.decode(got) == std::string(tok.decode_token(-1, 1)) + stories[story]);
    total += want.size();
    ++story;
  }
  CHECK(story == 100);
  CHECK(mismatched == 0);
  CHECK(total == 39345);
}

TEST_CASE("llama2.c tokenizer: byte fallback, dummy prefix, eos") {
  auto tok_path = lowbit::test::shared_file("models/tok512.bin");
  if (tok_path.empty()) LOWBIT_SKIP("shared/data not found");
  lowbit::io::Llama2cTokenizer tok(tok_path.string());
  CHECK(tok.vocab_size() == 512);
  CHECK(tok.encode("", true, false) == std::vector<std::int32_t>{1});  // no dummy prefix on empty text
  CHECK(tok.encode("", false, true) == std::vector<std::int32_t>{2});
  // "世" (E4 B8 96) is not in the 512 vocabulary: three byte tokens, decoded back to the same bytes.
  const auto ids = tok.encode("世", false, false);
  REQUIRE(ids.size() == 4);
  CHECK(ids[1] == 0xE4 + 3);
  CHECK(ids[2] == 0xB8 + 3);
  CHECK(ids[3] == 0x96 + 3);
  CHECK(tok.decode(ids) == " 世");
  CHECK(tok.decode_token(1, ids[0]) == "");  // the dummy " " after BOS decodes to nothing
  const std::string mixed = "Hello, 世界! 🙂 tab\tnew\nline  two  spaces";
  auto with_bos = tok.encode(mixed, true, true);
  CHECK(with_bos.front() == 1);
  CHECK(with_bos.back() == 2);
  with_bos.pop_back();
  CHECK(tok.decode(with_bos) == tok.decode_token(-1, 1) + mixed);
  CHECK_THROWS_AS(tok.decode_token(-1, 512), lowbit::Error);
}

TEST_CASE("llama2.c tokenizer: truncated or inconsistent files raise lowbit::Error") {
  auto tok_path = lowbit::test::shared_file("models/tok512.bin");
  if (tok_path.empty()) LOWBIT_SKIP("shared/data not found");
  const std::string bytes = read_text(tok_path);
  for (std::size_t cut : {0ul, 3ul, 4ul, 9ul, 100ul, bytes.size() - 1}) {
    std::vector<char> part(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(cut));
    CHECK_THROWS_AS(lowbit::io::Llama2cTokenizer(part, "cut", 512), lowbit::Error);
  }
  std::vector<char> bad(bytes.begin(), bytes.end());
  bad[3] = -128;  // negative max_token_length
  CHECK_THROWS_AS(lowbit::io::Llama2cTokenizer(bad, "bad", 512), lowbit::Error);
  std::vector<char> long_len(bytes.begin(), bytes.end());
  long_len[8] = 100;  // first token's length beyond max_token_length
  CHECK_THROWS_AS(lowbit::io::Llama2cTokenizer(long_len, "long", 512), lowbit::Error);
  CHECK_THROWS_AS(lowbit::io::Llama2cTokenizer("/nonexistent/tok.bin"), lowbit::Error);
}
