// Byte-level BPE (SmolLM2's GGUF vocabulary, and the same vocabulary as a Hugging Face tokenizer.json)
// must match the Hugging Face `tokenizers` package token for token on the first 200 KiB of WikiText-2
// and on the multilingual/emoji/whitespace edge-case file (ids in tests/data, made by
// tools/reference/tokenizer_reference.py), and decode back to the input bytes.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <lowbit/io/tokenizer.hpp>

#include "test_util.hpp"

using lowbit::test::read_ids;
using lowbit::test::read_text;
using lowbit::test::test_data;
using lowbit::test::wikitext_200k;

namespace {

// First index where the two id sequences differ (or the shorter length), for readable failures.
std::size_t first_difference(const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
  std::size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return i;
}

void check_against_reference(const lowbit::io::Tokenizer& tok, const std::string& text, const std::string& ids_file) {
  const auto want = read_ids(test_data(ids_file));
  REQUIRE(!want.empty());
  const auto got = tok.encode(text, false);
  INFO(ids_file, ": first difference at token ", first_difference(got, want), " of ", want.size());
  CHECK(got.size() == want.size());
  CHECK(got == want);
  CHECK(tok.decode(got) == text);
}

}  // namespace

TEST_CASE("SmolLM2 GGUF BPE equals Hugging Face tokenizers") {
  auto gguf = lowbit::test::smollm2_gguf();
  if (gguf.empty()) LOWBIT_SKIP("SmolLM2 GGUF not cached (tools/fetch_smollm2.sh)");
  auto tok = lowbit::io::load_tokenizer(gguf.string());
  CHECK(tok->vocab_size() == 49152);
  CHECK(tok->bos_id() == 1);
  CHECK(tok->eos_id() == 2);
  CHECK(!tok->adds_bos_by_default());
  const auto edge = read_text(test_data("tokenizer_edge_cases.txt"));
  check_against_reference(*tok, edge, "smollm2_edge_cases.ids.txt");
  const auto wiki = wikitext_200k();
  if (wiki.empty()) LOWBIT_SKIP("shared/data not found");
  check_against_reference(*tok, wiki, "smollm2_wikitext2_200k.ids.txt");
  // Special tokens in the text become their ids; BOS is prepended only on request.
  const auto chat = tok->encode("<|im_start|>user\nHi<|im_end|>", true);
  REQUIRE(chat.size() >= 4);
  CHECK(chat[0] == 1);
  CHECK(chat[1] == 1);  // <|im_start|> is id 1 in SmolLM2 (also its BOS)
  CHECK(chat.back() == 2);
}

TEST_CASE("the same vocabulary as a Hugging Face tokenizer.json") {
  auto gguf = lowbit::test::smollm2_gguf();
  if (gguf.empty()) LOWBIT_SKIP("SmolLM2 GGUF not cached (tools/fetch_smollm2.sh)");
  const auto spec = lowbit::io::vocab_from_gguf(lowbit::io::GgufFile(gguf));
  nlohmann::json j;
  j["model"] = {{"type", "BPE"}, {"vocab", nlohmann::json::object()}, {"merges", spec.merges}};
  j["added_tokens"] = nlohmann::json::array();
  for (std::size_t i = 0; i < spec.tokens.size(); ++i) {
    if (spec.type(i) == lowbit::io::TokenType::Control)
      j["added_tokens"].push_back({{"id", i}, {"content", spec.tokens[i]}, {"special", true}});
    else
      j["model"]["vocab"][spec.tokens[i]] = i;
  }
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Digits"}, {"individual_digits", true}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}}}};
  const auto path = std::filesystem::temp_directory_path() / "lowbit_test_tokenizer.json";
  std::ofstream(path) << j.dump();
  auto tok = lowbit::io::load_tokenizer("", path.string());
  check_against_reference(*tok, read_text(test_data("tokenizer_edge_cases.txt")), "smollm2_edge_cases.ids.txt");
  std::filesystem::remove(path);

  std::ofstream(path) << "{\"model\": ";  // truncated JSON
  CHECK_THROWS_AS(lowbit::io::load_tokenizer("", path.string()), lowbit::Error);
  std::ofstream(path) << R"({"model": {"type": "Unigram", "vocab": []}})";
  CHECK_THROWS_AS(lowbit::io::load_tokenizer("", path.string()), lowbit::Error);
  std::filesystem::remove(path);
}

TEST_CASE("tokenizer.json ids are checked before they size anything") {
  const auto dir = std::filesystem::temp_directory_path() / "lowbit_tokenizer_ids";
  std::filesystem::create_directories(dir);
  const auto path = dir / "tokenizer.json";
  auto load = [&](const std::string& vocab_id, const std::string& added_id) {
    std::ofstream(path) << R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": )" << vocab_id
                        << R"(}, "merges": []}, "added_tokens": [{"id": )" << added_id
                        << R"(, "content": "<s>", "special": true}]})";
    return lowbit::io::load_tokenizer("", path.string());
  };
  CHECK(load("1", "2")->vocab_size() == 3);
  // a negative id used to wrap to SIZE_MAX and write before the table; floats, huge ids and strings
  // were undefined behaviour, terabyte allocations or library exceptions
  for (const auto& [vocab_id, added_id] : std::vector<std::pair<std::string, std::string>>{
           {"-1", "2"}, {"1", "-3"}, {"1e30", "2"}, {"1", "1000000000000"}, {"\"x\"", "2"}, {"1", "2.5"}}) {
    CAPTURE(vocab_id);
    CAPTURE(added_id);
    CHECK_THROWS_AS(load(vocab_id, added_id), lowbit::Error);
  }
  CHECK_THROWS_WITH_AS(lowbit::io::load_tokenizer("", dir.string()), doctest::Contains("not a regular file"),
                       lowbit::Error);
  std::filesystem::remove_all(dir);
}

TEST_CASE("byte-level BPE on a hand-made vocabulary") {
  // Bytes map through GPT-2's table (space -> "Ġ"); merges apply lowest rank first.
  lowbit::io::VocabSpec v;
  v.source = "hand-made";
  v.model = "gpt2";
  v.pre = "gpt2";
  for (int c = 0; c < 256; ++c) v.tokens.push_back(lowbit::io::detail::byte_to_unicode()[static_cast<std::size_t>(c)]);
  v.tokens.push_back("Ġl");     // 256
  v.tokens.push_back("ow");     // 257
  v.tokens.push_back("Ġlow");   // 258
  v.tokens.push_back("lo");     // 259
  v.merges = {"o w", "Ġ l", "Ġl ow", "l o"};
  lowbit::io::BpeTokenizer tok(v);
  CHECK(tok.encode(" low", false) == std::vector<std::int32_t>{258});
  CHECK(tok.encode("low", false) == std::vector<std::int32_t>{'l', 257});  // "o w" outranks "l o"
  CHECK(tok.encode("lo", false) == std::vector<std::int32_t>{259});
  CHECK(tok.decode({258, 259, 10}) == " lowlo\n");
  // Pre-tokenization splits "a  b" into "a", " ", " b": byte ids are the byte values here.
  CHECK(tok.encode("a  b", false) == std::vector<std::int32_t>{'a', ' ', ' ', 'b'});
  CHECK(tok.encode(" lo low", false) == std::vector<std::int32_t>{256, 'o', 258});
  v.merges.push_back("broken");
  CHECK_THROWS_AS(lowbit::io::BpeTokenizer{v}, lowbit::Error);
  v.merges.pop_back();
  v.pre = "no-such-pre";
  CHECK_THROWS_AS(lowbit::io::BpeTokenizer{v}, lowbit::Error);
}
