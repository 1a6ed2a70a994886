// Fidelity of the fp32 model against llama2.c's own run.c on Karpathy's stories260K checkpoint: the 64
// greedy steps from BOS (ids, the chosen token's logit and log-softmax, all from run.c's forward, in
// shared/data/models/stories260K.greedy.ids.tsv) must be reproduced within 1e-4, and the decoded text
// must equal stories260K.greedy.txt. Also: batched forward, chunked prefill and token-by-token decoding
// give the same logits, and each sequence of a batch is independent of the others.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "lowbit/io/llama2c.hpp"
#include "lowbit/io/tokenizer_llama2c.hpp"
#include "lowbit/nn/model.hpp"
#include "lowbit/nn/sampler.hpp"
#include "test_util.hpp"

using namespace lowbit;

namespace {

struct GreedyStep {
  int pos;
  std::int32_t input, next;
  double logit, logprob;
};

std::vector<GreedyStep> read_reference(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::string line;
  std::getline(in, line);  // header
  std::vector<GreedyStep> steps;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::istringstream s(line);
    GreedyStep g{};
    s >> g.pos >> g.input >> g.next >> g.logit >> g.logprob;
    REQUIRE(!s.fail());
    steps.push_back(g);
  }
  return steps;
}

}  // namespace

TEST_CASE("stories260K greedy decoding matches llama2.c run.c") {
  const auto model_path = test::shared_file("models/stories260K.bin");
  const auto ref_path = test::shared_file("models/stories260K.greedy.ids.tsv");
  if (model_path.empty() || ref_path.empty()) LOWBIT_SKIP("shared/data/models/stories260K.* not found");
  const auto steps = read_reference(ref_path);
  REQUIRE(steps.size() == 64);

  nn::Llama model(io::load_llama2c(model_path));
  const auto& c = model.config();
  CHECK(c.dim == 64);
  CHECK(c.n_kv_heads == 4);
  auto cache = model.make_cache(c.max_seq_len);
  std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
  std::int32_t token = 1;  // BOS
  double worst_logit = 0, worst_logprob = 0;
  std::vector<std::int32_t> generated;
  for (const auto& step : steps) {
    REQUIRE(step.input == token);
    model.forward_token(token, step.pos, cache, logits.data());
    const auto next = static_cast<std::int32_t>(nn::argmax(logits.data(), c.vocab_size));
    REQUIRE(next == step.next);
    worst_logit = std::max(worst_logit, std::abs(logits[static_cast<std::size_t>(next)] - step.logit));
    worst_logprob = std::max(worst_logprob, std::abs(nn::log_softmax_at(logits.data(), c.vocab_size, next) - step.logprob));
    generated.push_back(next);
    token = next;
  }
  std::printf("stories260K: max |logit - run.c| = %.2e, max |log-softmax - run.c| = %.2e\n", worst_logit,
              worst_logprob);
  CHECK(worst_logit < 1e-4);
  CHECK(worst_logprob < 1e-4);

  // decoded text equals run.c's stdout (which ends with one '\n')
  const auto tok_path = test::shared_file("models/tok512.bin");
  const auto txt_path = test::shared_file("models/stories260K.greedy.txt");
  if (tok_path.empty() || txt_path.empty()) LOWBIT_SKIP("tok512.bin or stories260K.greedy.txt not found");
  io::Llama2cTokenizer tok(tok_path.string(), c.vocab_size);
  std::string text;
  std::int32_t prev = 1;
  for (auto id : generated) {
    text += tok.decode_token(prev, id);
    prev = id;
  }
  CHECK(text + "\n" == test::read_text(txt_path));
}

TEST_CASE("stories260K: batched forward, chunked prefill and incremental decoding agree") {
  const auto model_path = test::shared_file("models/stories260K.bin");
  const auto ref_path = test::shared_file("models/stories260K.greedy.ids.tsv");
  if (model_path.empty() || ref_path.empty()) LOWBIT_SKIP("shared/data/models/stories260K.* not found");
  const auto steps = read_reference(ref_path);
  nn::Llama model(io::load_llama2c(model_path));
  const int V = model.config().vocab_size;
  const int T = static_cast<int>(steps.size());
  std::vector<std::int32_t> seq;
  for (const auto& s : steps) seq.push_back(s.input);

  // batched: two sequences, the second a shifted copy, so rows must not see each other
  std::vector<std::int32_t> batch(seq);
  for (int t = 0; t < T; ++t) batch.push_back(seq[static_cast<std::size_t>((t + 7) % T)]);
  std::vector<float> batched(static_cast<std::size_t>(2 * T) * V);
  model.forward(batch.data(), 2, T, batched.data());

  auto cache = model.make_cache(T);
  std::vector<float> step_logits(static_cast<std::size_t>(V));
  double worst = 0;
  for (int t = 0; t < T; ++t) {
    model.forward_token(seq[static_cast<std::size_t>(t)], t, cache, step_logits.data());
    for (int j = 0; j < V; ++j)
      worst = std::max(worst, static_cast<double>(std::abs(step_logits[static_cast<std::size_t>(j)] -
                                                           batched[static_cast<std::size_t>(t) * V + j])));
    CHECK(nn::argmax(step_logits.data(), V) == steps[static_cast<std::size_t>(t)].next);
  }
  std::printf("batched vs incremental: max |diff| = %.2e\n", worst);
  CHECK(worst < 1e-4);

  // second batch row equals the sequence run alone
  std::vector<float> alone(static_cast<std::size_t>(T) * V);
  model.forward(batch.data() + T, 1, T, alone.data());
  double worst_row = 0;
  for (std::size_t i = 0; i < alone.size(); ++i)
    worst_row = std::max(worst_row, static_cast<double>(std::abs(alone[i] - batched[static_cast<std::size_t>(T) * V + i])));
  CHECK(worst_row < 1e-4);

  // prefill of 20 tokens, then token by token, logits of every position
  auto cache2 = model.make_cache(T);
  std::vector<float> prefill(static_cast<std::size_t>(20) * V);
  model.forward_prefill(seq.data(), 20, 0, cache2, prefill.data(), false);
  double worst_prefill = 0;
  for (std::size_t i = 0; i < prefill.size(); ++i)
    worst_prefill = std::max(worst_prefill, static_cast<double>(std::abs(prefill[i] - batched[i])));
  model.forward_prefill(seq.data() + 20, 15, 20, cache2, prefill.data(), true);  // a second chunk, last row only
  for (int j = 0; j < V; ++j)
    worst_prefill = std::max(worst_prefill, static_cast<double>(std::abs(prefill[static_cast<std::size_t>(j)] -
                                                                         batched[static_cast<std::size_t>(34) * V + j])));
  CHECK(worst_prefill < 1e-4);

  // the training forward gives the same logits as inference
  std::vector<float> train_logits(batched.size());
  model.forward_train(batch.data(), 2, T, train_logits.data());
  double worst_train = 0;
  for (std::size_t i = 0; i < batched.size(); ++i)
    worst_train = std::max(worst_train, static_cast<double>(std::abs(train_logits[i] - batched[i])));
  CHECK(worst_train < 1e-4);  // same math; the saved-probabilities path uses a different GEMM stride
}

TEST_CASE("errors name the problem") {
  nn::ModelConfig c;
  c.dim = 8;
  c.hidden_dim = 8;
  c.n_layers = 1;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.vocab_size = 10;
  c.max_seq_len = 8;
  Rng rng(1);
  auto m = nn::Llama::random_init(c, rng);
  std::vector<float> logits(10);
  std::int32_t bad = 12;
  auto cache = m.make_cache(4);
  CHECK_THROWS_WITH_AS(m.forward_token(bad, 0, cache, logits.data()), doctest::Contains("outside the vocabulary"),
                       Error);
  CHECK_THROWS_WITH_AS(m.forward_token(1, 4, cache, logits.data()), doctest::Contains("KV cache"), Error);
  CHECK_THROWS_AS(m.set_linear(0, nn::LinearRole::Q, std::make_unique<nn::DenseLinear>(3, 8)), Error);
}
