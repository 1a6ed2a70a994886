// Perplexity: window planning per protocol, the scoring loop against an analytic model whose exact NLL
// is known in closed form, UTF-8/jsonl input errors, and the real stories260K figure that llama2.c's own
// forward gives (39345 tokens, 38912 predictions, mean NLL 1.365003, ppl 3.9157).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include <lowbit/eval/model_source.hpp>
#include <lowbit/eval/perplexity.hpp>
#include <lowbit/io/tokenizer.hpp>

#include "test_util.hpp"

using namespace lowbit;

TEST_CASE("window plans per protocol") {
  auto gptq = eval::perplexity_preset("gptq", 4);
  auto w = eval::plan_windows(10, gptq);  // 2 full windows of 4, 3 predictions each
  REQUIRE(w.size() == 2);
  CHECK(w[0].start == 0);
  CHECK(w[1].start == 4);
  CHECK(w[1].first == 0);
  CHECK(w[1].last == 3);

  auto l2c = eval::perplexity_preset("llama2.c", 512);  // the stories260K numbers: 76 windows
  CHECK(eval::plan_windows(39345, l2c).size() == 76);

  auto cpp = eval::perplexity_preset("llama.cpp", 8);
  w = eval::plan_windows(17, cpp);
  REQUIRE(w.size() == 2);
  CHECK(w[0].first == 4);
  CHECK(w[0].last == 7);  // llama.cpp scores n_ctx/2 - 1 tokens per chunk

  // Sliding windows score every target exactly once after the first window.
  eval::PerplexityProtocol slide;
  slide.ctx = 8;
  slide.stride = 3;
  w = eval::plan_windows(30, slide);
  std::vector<int> scored(30, 0);
  for (const auto& win : w)
    for (int j = win.first; j < win.last; ++j) ++scored[static_cast<std::size_t>(win.start + j + 1)];
  for (int t = 1; t < 30; ++t) CHECK(scored[static_cast<std::size_t>(t)] <= 1);
  CHECK(scored[1] == 1);
  CHECK(std::count(scored.begin(), scored.end(), 1) == w.back().start + w.back().last);

  CHECK_THROWS_AS(eval::perplexity_preset("nope"), lowbit::Error);
  slide.stride = 9;
  CHECK_THROWS_AS(eval::plan_windows(30, slide), lowbit::Error);
}

TEST_CASE("perplexity of an analytic bigram model equals the closed form") {
  // logits[v] = log P(v | prev) for a fixed random bigram table: the mean NLL over scored targets can
  // be computed directly, independent of windows and batching.
  const int V = 7;
  Rng rng(3);
  std::vector<double> logp(V * V);
  for (int a = 0; a < V; ++a) {
    double z = 0;
    std::vector<double> w(V);
    for (auto& x : w) z += (x = 0.1 + rng.uniform());
    for (int b = 0; b < V; ++b) logp[static_cast<std::size_t>(a * V + b)] = std::log(w[static_cast<std::size_t>(b)] / z);
  }
  eval::LanguageModel lm;
  lm.name = "bigram";
  lm.vocab_size = V;
  lm.forward = [&](const std::int32_t* tokens, int B, int T, float* logits) {
    for (int i = 0; i < B * T; ++i)
      for (int v = 0; v < V; ++v)
        logits[i * V + v] = static_cast<float>(logp[static_cast<std::size_t>(tokens[i] * V + v)]) + 5.0f;  // shift-invariant
  };
  std::vector<std::int32_t> tokens(1000);
  for (auto& t : tokens) t = static_cast<std::int32_t>(rng.below(V));
  for (int batch : {1, 3, 0}) {
    auto p = eval::perplexity_preset("gptq", 64);
    eval::PerplexityOptions opt;
    opt.batch = batch;
    opt.quiet = true;
    const auto r = eval::perplexity(lm, tokens, p, -1, opt);
    double want = 0;
    int n = 0;
    for (int s = 0; s + 64 <= 1000; s += 64)
      for (int j = 0; j < 63; ++j, ++n) want -= logp[static_cast<std::size_t>(tokens[s + j] * V + tokens[s + j + 1])];
    CHECK(r.predictions == n);
    CHECK(r.windows == 15);
    CHECK(r.nll == doctest::Approx(want / n).epsilon(1e-6));
    CHECK(r.ppl == doctest::Approx(std::exp(want / n)).epsilon(1e-6));
    CHECK(r.nll_stderr > 0);
    CHECK(r.nll_stderr < 0.1);
  }
  // A token outside the vocabulary is a tokenizer/model mismatch, reported as such.
  tokens[5] = V;
  CHECK_THROWS_AS(eval::perplexity(lm, tokens, eval::perplexity_preset("gptq", 64), -1, {0, 1e9, true}), lowbit::Error);
}

TEST_CASE("text inputs: UTF-8 validation and jsonl errors name file and line") {
  CHECK(eval::find_invalid_utf8("plain ascii") == std::string_view::npos);
  CHECK(eval::find_invalid_utf8("naïve 🙂 世界") == std::string_view::npos);
  CHECK(eval::find_invalid_utf8("ab\xC3") == 2);           // truncated sequence
  CHECK(eval::find_invalid_utf8("\xC0\xAF") == 0);         // overlong '/'
  CHECK(eval::find_invalid_utf8("x\xED\xA0\x80") == 1);    // surrogate
  CHECK(eval::find_invalid_utf8("\xF4\x90\x80\x80") == 0); // above U+10FFFF
  const auto dir = std::filesystem::temp_directory_path();
  const auto bad_txt = (dir / "lowbit_bad_utf8.txt").string();
  std::ofstream(bad_txt) << "line one\nline two \xFF here\n";
  try {
    eval::read_documents(bad_txt);
    FAIL("expected an error");
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()).find(bad_txt + ":2:") != std::string::npos);
  }
  const auto bad_jsonl = (dir / "lowbit_bad.jsonl").string();
  std::ofstream(bad_jsonl) << "{\"text\": \"ok\"}\n\n{\"txt\": \"wrong field\"}\n";
  try {
    eval::read_documents(bad_jsonl);
    FAIL("expected an error");
  } catch (const lowbit::Error& e) {
    CHECK(std::string(e.what()).find(bad_jsonl + ":3:") != std::string::npos);
  }
  std::ofstream(bad_jsonl) << "{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
  CHECK(eval::read_documents(bad_jsonl) == std::vector<std::string>{"one", "two"});
  std::filesystem::remove(bad_txt);
  std::filesystem::remove(bad_jsonl);
}

TEST_CASE("stories260K perplexity equals llama2.c's forward on TinyStories") {
  auto model = test::shared_file("models/stories260K.bin");
  auto tok_path = test::shared_file("models/tok512.bin");
  auto text = test::shared_file("text/tinystories_v2_valid_first100.txt");
  if (model.empty() || tok_path.empty() || text.empty()) LOWBIT_SKIP("shared/data not found");
  auto loaded = eval::load_any_model(model.string());
  CHECK(loaded.bits_per_weight == 32.0);  // dense fp32 linears
  auto tok = io::load_tokenizer(model.string(), tok_path.string());
  // --doc-sep '<|endoftext|>' --bos-per-doc --ctx 512
  auto p = eval::perplexity_preset("llama2.c", 512);
  const auto tokens = eval::protocol_tokens(eval::read_documents(text.string()), *tok, p);
  CHECK(tokens.size() == 39345);
  eval::PerplexityOptions opt;
  opt.quiet = true;
  const auto r = eval::perplexity(loaded.lm, tokens, p, tok->bos_id(), opt);
  CHECK(r.tokens == 39345);
  CHECK(r.predictions == 38912);
  CHECK(r.nll == doctest::Approx(1.36500).epsilon(0.00005 / 1.365));
  CHECK(r.ppl == doctest::Approx(3.9157).epsilon(1e-4));
  // text_perplexity: the same recipe in one call, and its token limit
  const auto one = eval::text_perplexity(*loaded.model, *tok, text.string(), "llama2.c", 512);
  CHECK(one.predictions == r.predictions);
  CHECK(one.nll == r.nll);
  CHECK(eval::text_perplexity(*loaded.model, *tok, text.string(), "llama2.c", 512, 4096).tokens == 4096);
}
