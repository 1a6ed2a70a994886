// Zero-shot scoring: lm-eval's context/continuation split, acc/acc_norm/greedy/perplexity against a
// direct computation with an analytic bigram model over a byte tokenizer, task readers on the real
// files (item counts from shared/data/README.md) and clear errors for malformed lines.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include <lowbit/core/rng.hpp>
#include <lowbit/eval/zeroshot.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

// One token per byte (id = byte value), no BOS; EOS id 0.
class ByteTokenizer final : public io::Tokenizer {
 public:
  std::vector<std::int32_t> encode(std::string_view text, bool) const override {
    std::vector<std::int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode_token(std::int32_t, std::int32_t id) const override { return std::string(1, static_cast<char>(id)); }
  std::int32_t bos_id() const override { return -1; }
  std::int32_t eos_id() const override { return 0; }
  int vocab_size() const override { return 256; }
  std::string describe() const override { return "bytes"; }
};

struct Bigram {
  std::vector<double> logp = std::vector<double>(256 * 256);
  explicit Bigram(std::uint64_t seed) {
    Rng rng(seed);
    for (int a = 0; a < 256; ++a) {
      std::vector<double> w(256);
      double z = 0;
      for (auto& x : w) z += (x = std::exp(3 * rng.uniform()));
      for (int b = 0; b < 256; ++b) logp[static_cast<std::size_t>(a * 256 + b)] = std::log(w[static_cast<std::size_t>(b)] / z);
    }
  }
  double at(int a, int b) const { return logp[static_cast<std::size_t>(a * 256 + b)]; }
  eval::LanguageModel model() const {
    eval::LanguageModel lm;
    lm.name = "bigram";
    lm.vocab_size = 256;
    lm.forward = [this](const std::int32_t* tokens, int B, int T, float* logits) {
      for (int i = 0; i < B * T; ++i)
        for (int v = 0; v < 256; ++v) logits[i * 256 + v] = static_cast<float>(at(tokens[i], v));
    };
    return lm;
  }
  // log P(continuation | context) computed directly on the bytes.
  double score(const std::string& context, const std::string& continuation) const {
    std::string all = context + continuation;
    double s = 0;
    for (std::size_t k = context.size(); k < all.size(); ++k)
      s += at(static_cast<unsigned char>(all[k - 1]), static_cast<unsigned char>(all[k]));
    return s;
  }
};

}  // namespace

TEST_CASE("lm-eval request encoding") {
  ByteTokenizer tok;
  auto e = eval::encode_request(tok, {"Question: x?\nAnswer: ", "yes", 3}, 2048);
  // The trailing space moves into the continuation.
  CHECK(e.continuation == std::vector<std::int32_t>{' ', 'y', 'e', 's'});
  CHECK(e.input.size() == std::string("Question: x?\nAnswer:").size() + 3);
  e = eval::encode_request(tok, {"abcdef", "gh", 2}, 4);  // truncated from the left to max_length + 1
  CHECK(e.input == std::vector<std::int32_t>{'d', 'e', 'f', 'g'});
  e = eval::encode_request(tok, {"", "hi", 2}, 16);  // empty context: EOS prefix
  CHECK(e.input == std::vector<std::int32_t>{0, 'h'});
  CHECK_THROWS_AS(eval::encode_request(tok, {"abc", "", 0}, 16), lowbit::Error);
}

TEST_CASE("acc, acc_norm, greedy accuracy and perplexity equal a direct computation") {
  ByteTokenizer tok;
  Bigram bigram(11);
  const auto lm = bigram.model();
  Rng rng(5);
  auto random_text = [&](int len) {
    std::string s;
    for (int i = 0; i < len; ++i) s += static_cast<char>('a' + rng.below(6));
    return s;
  };
  eval::Task mc{"synthetic", "memory", {}};
  for (int i = 0; i < 60; ++i) {
    eval::TaskItem item;
    const auto ctx = random_text(5 + static_cast<int>(rng.below(20)));
    for (int c = 0; c < 4; ++c) item.choices.push_back(eval::make_request(ctx, random_text(1 + static_cast<int>(rng.below(12)))));
    item.gold = static_cast<int>(rng.below(4));
    mc.items.push_back(item);
  }
  double acc = 0, acc_norm = 0;
  int normalization_changes_choice = 0;
  for (const auto& item : mc.items) {
    int best = 0, best_norm = 0;
    std::vector<double> s, sn;
    for (const auto& c : item.choices) {
      s.push_back(bigram.score(c.context, c.continuation));
      sn.push_back(s.back() / static_cast<double>(c.continuation.size() - 1));
    }
    for (int c = 1; c < 4; ++c) {
      if (s[c] > s[best]) best = c;
      if (sn[c] > sn[best_norm]) best_norm = c;
    }
    acc += best == item.gold;
    acc_norm += best_norm == item.gold;
    normalization_changes_choice += best != best_norm;
  }
  eval::ZeroShotOptions opt;
  opt.quiet = true;
  opt.max_batch = 7;  // several padded batches of different lengths
  const auto r = eval::evaluate_task(lm, tok, mc, opt);
  CHECK(r.n == 60);
  CHECK(r.acc == doctest::Approx(acc / 60));
  CHECK(r.acc_norm == doctest::Approx(acc_norm / 60));
  CHECK(normalization_changes_choice > 5);  // the data set exercises the length normalization
  CHECK(r.acc_stderr == doctest::Approx(std::sqrt(r.acc * (1 - r.acc) / 59.0)));

  // LAMBADA-style: greedy match and exp(-mean log-likelihood).
  eval::Task lam{"lambada", "memory", {}};
  double ll = 0, greedy = 0;
  for (int i = 0; i < 40; ++i) {
    eval::TaskItem item;
    const auto ctx = random_text(8);
    std::string word;
    // Half the items continue with the bigram's argmax chain, so some greedy matches occur.
    if (i % 2 == 0) {
      int prev = ' ';
      for (int k = 0; k < 3; ++k) {
        int best = 0;
        for (int v = 1; v < 256; ++v)
          if (bigram.at(prev, v) > bigram.at(prev, best)) best = v;
        if (best < 32 || best > 126) break;
        word += static_cast<char>(best);
        prev = best;
      }
      if (word.empty()) word = "x";
    } else {
      word = random_text(3);
    }
    item.choices.push_back(eval::make_request(ctx, word));
    const std::string all = ctx + " " + word;
    bool g = true;
    for (std::size_t k = ctx.size(); k < all.size(); ++k) {
      int best = 0;
      for (int v = 1; v < 256; ++v)
        if (bigram.at(static_cast<unsigned char>(all[k - 1]), v) > bigram.at(static_cast<unsigned char>(all[k - 1]), best)) best = v;
      g = g && best == static_cast<unsigned char>(all[k]);
    }
    greedy += g;
    ll += bigram.score(ctx, " " + word);
    lam.items.push_back(item);
  }
  const auto lr = eval::evaluate_task(lm, tok, lam, opt);
  CHECK(lr.single_choice);
  CHECK(lr.acc == doctest::Approx(greedy / 40));
  CHECK(lr.ppl == doctest::Approx(std::exp(-ll / 40)).epsilon(1e-5));
  opt.limit = 10;
  CHECK(eval::evaluate_task(lm, tok, lam, opt).n == 10);
}

TEST_CASE("task readers: real files and malformed lines") {
  auto dir = test::shared_file("tasks");
  if (!dir.empty()) {
    const std::string d = dir.string();
    CHECK(eval::read_task("piqa", d).items.size() == 1838);
    CHECK(eval::read_task("arc_easy", d).items.size() == 2376);
    CHECK(eval::read_task("winogrande", d).items.size() == 1267);
    CHECK(eval::read_task("lambada", d).items.size() == 5153);
    const auto piqa = eval::read_task("piqa", d);
    CHECK(piqa.items[0].choices[0].context.substr(0, 10) == "Question: ");
    CHECK(piqa.items[0].choices[0].context.substr(piqa.items[0].choices[0].context.size() - 8) == "\nAnswer:");
#if defined(LOWBIT_WITH_BZIP2)
    const auto hs = eval::read_task("hellaswag", d);
    CHECK(hs.items.size() == 10042);
    CHECK(hs.items[0].gold == 3);
    CHECK(hs.items[0].choices[3].continuation == " starts pulling up roofing on a roof.");
#endif
  }
  const auto tmp = std::filesystem::temp_directory_path();
  auto expect_error_at = [](auto&& fn, const std::string& where) {
    try {
      fn();
      FAIL("expected lowbit::Error mentioning ", where);
    } catch (const lowbit::Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(where) != std::string::npos);
    }
  };
  const auto piqa = (tmp / "lowbit_piqa_bad.jsonl").string();
  std::ofstream(piqa) << R"({"query": "Question: a\n", "choices": ["x", "y"], "gold": 0})" << "\n"
                      << R"({"query": "Question: b\n", "choices": ["x", "y"], "gold": 2})" << "\n";
  expect_error_at([&] { eval::read_piqa(piqa); }, piqa + ":2:");
  std::ofstream(piqa) << R"({"query": "Question: a\n", "choices": ["x", "y"], "gold": 0})" << "\n{not json\n";
  expect_error_at([&] { eval::read_piqa(piqa); }, piqa + ":2:");
  std::ofstream(piqa) << R"({"question": "no query field", "choices": ["x", "y"], "gold": 0})" << "\n";
  expect_error_at([&] { eval::read_piqa(piqa); }, piqa + ":1:");
  std::ofstream(piqa) << "{\"context\": \"bad \xC3(\", \"continuation\": \"x\"}\n";
  expect_error_at([&] { eval::read_lambada(piqa); }, piqa + ":1:");
  const auto hs = (tmp / "lowbit_hs_bad.txt").string();
  std::ofstream(hs) << "ctx\n1\na\nb\nc\nd\nctx2\n7\na\nb\nc\nd\n";
  expect_error_at([&] { eval::read_hellaswag(hs); }, hs + ":8:");
  std::ofstream(hs) << "ctx\n1\na\nb\nc\n";
  expect_error_at([&] { eval::read_hellaswag(hs); }, "multiple of 6");
  std::filesystem::remove(piqa);
  std::filesystem::remove(hs);
  CHECK_THROWS_AS(eval::read_task("nope", "/tmp"), lowbit::Error);
}
