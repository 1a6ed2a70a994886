// Pretraining on the synthetic corpus: the corpus itself (determinism, correct arithmetic, entropy), a
// short run that must beat the corpus's unigram entropy on held-out text, checkpoints that reload into a
// model with identical logits and reject corruption, and a resume that is bit-identical to a straight run.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <lowbit/core/hash.hpp>
#include <lowbit/train/pretrain.hpp>

using namespace lowbit;
using namespace lowbit::train;

namespace {

nn::ModelConfig tiny_config() { return byte_model_config(32, 64, 2, 2, 1, 32); }

PretrainOptions tiny_options(std::int64_t steps) {
  set_num_threads(1);  // tiny matrices gain nothing from threads, and a loaded machine makes them slower
  PretrainOptions o;
  o.batch_size = 8;
  o.seq_len = 32;
  o.steps = steps;
  o.schedule = LrSchedule{ScheduleKind::Cosine, 1e-2f, 10, steps, 0.1f};
  o.eval_every = 0;
  o.eval_tokens = 4096;
  o.quiet = true;
  return o;
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::filesystem::path temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("lowbit_test_train_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

}  // namespace

TEST_CASE("synthetic corpus: deterministic, arithmetic correct, byte round trip") {
  const std::string a = SyntheticCorpus(42).text(20000), b = SyntheticCorpus(42).text(20000);
  CHECK(a == b);
  CHECK(a != SyntheticCorpus(43).text(20000));
  // Every "x + y = z." and "x - y = z." and "x times y is z." must be true.
  int checked = 0;
  std::smatch m;
  const std::regex sum(R"((\d+) ([+-]) (\d+) = (\d+)\.)"), prod(R"((\d+) times (\d+) is (\d+)\.)"),
      story(R"(has (\d+) (\w+)\. (\w+) gets (\d+) more\. now \3 has (\d+) \2\.)");
  for (auto it = std::sregex_iterator(a.begin(), a.end(), sum); it != std::sregex_iterator(); ++it, ++checked) {
    const int x = std::stoi((*it)[1]), y = std::stoi((*it)[3]), z = std::stoi((*it)[4]);
    CHECK(((*it)[2] == "+" ? x + y : x - y) == z);
  }
  for (auto it = std::sregex_iterator(a.begin(), a.end(), prod); it != std::sregex_iterator(); ++it, ++checked)
    CHECK(std::stoi((*it)[1]) * std::stoi((*it)[2]) == std::stoi((*it)[3]));
  for (auto it = std::sregex_iterator(a.begin(), a.end(), story); it != std::sregex_iterator(); ++it, ++checked)
    CHECK(std::stoi((*it)[1]) + std::stoi((*it)[4]) == std::stoi((*it)[5]));
  CHECK(checked > 100);
  const auto ids = ByteVocabulary::encode(a, true);
  CHECK(ids[0] == ByteVocabulary::bos);
  CHECK(ByteVocabulary::decode(ids) == a);
  CHECK_THROWS_AS(ByteVocabulary::decode({1, 300}), Error);
}

TEST_CASE("unigram entropy of a known distribution") {
  // p = (1/2, 1/4, 1/4): H = 1.5 bits = 1.5 ln 2 nats
  std::vector<std::int32_t> t = {0, 0, 1, 2};
  CHECK(unigram_entropy(t, 3) == doctest::Approx(1.5 * std::log(2.0)).epsilon(1e-12));
  CHECK(unigram_entropy({5, 5, 5}, 8) == doctest::Approx(0.0));
}

TEST_CASE("a short pretraining run beats the unigram entropy of the held-out data") {
  const auto data = synthetic_token_data(7, 1u << 18, 1u << 14);
  auto model = initial_model(tiny_config(), 7);
  auto r = pretrain(model, data, tiny_options(150));
  MESSAGE("held-out loss ", r.heldout_loss_before, " -> ", r.heldout_loss, ", unigram entropy ", r.unigram_entropy);
  CHECK(r.heldout_loss_before > 5.0);  // ~ log(257) = 5.55 at initialization
  CHECK(r.unigram_entropy > 2.5);
  CHECK(r.heldout_loss < r.unigram_entropy - 0.3);
  CHECK(r.last_loss < r.first_loss - 2.0);
}

TEST_CASE("checkpoints reload as a model with identical logits and reject corruption") {
  const auto data = synthetic_token_data(3, 1u << 16, 1u << 13);
  auto model = initial_model(tiny_config(), 3);
  auto o = tiny_options(5);
  o.checkpoint = temp_path("reload.bin");
  pretrain(model, data, o);
  auto weights = load_pretrained(o.checkpoint);
  CHECK(weights.config.dim == 32);
  CHECK(weights.get("layers.1.feed_forward.w2.weight", {32, 64}).data.size() == 2048u);
  nn::Llama reloaded(weights);
  std::vector<std::int32_t> tokens(data.heldout.begin(), data.heldout.begin() + 32);
  std::vector<float> a(32 * 257), b(32 * 257);
  model.forward(tokens.data(), 1, 32, a.data());
  reloaded.forward(tokens.data(), 1, 32, b.data());
  CHECK(a == b);

  const std::string bytes = file_bytes(o.checkpoint);
  auto write = [](const std::filesystem::path& p, const std::string& s) {
    std::ofstream(p, std::ios::binary).write(s.data(), static_cast<std::streamsize>(s.size()));
  };
  std::string flipped = bytes;
  flipped[bytes.size() / 2] ^= 0x10;
  write(temp_path("flipped.bin"), flipped);
  CHECK_THROWS_AS(load_pretrained(temp_path("flipped.bin")), Error);
  for (std::size_t cut : {std::size_t{4}, std::size_t{60}, bytes.size() / 3, bytes.size() - 1}) {
    write(temp_path("cut.bin"), bytes.substr(0, cut));
    CHECK_THROWS_AS(load_pretrained(temp_path("cut.bin")), Error);
  }
  // Dimensions whose product overflows (2^31 x 2^31 floats: 2^64 bytes, which wrapped to 0 and passed
  // the size check before the fuzzer's train_checkpoint finding) with a checksum that matches.
  std::string huge = bytes;
  const std::string first = "tok_embeddings.weight";
  const auto at = huge.find(first);
  REQUIRE(at != std::string::npos);
  const std::size_t dims = at + first.size() + 4;  // after the name, the rank (2), then the int64 dims
  for (int d = 0; d < 2; ++d) {
    const std::int64_t big = std::int64_t{1} << 31;
    std::memcpy(huge.data() + dims + 8 * d, &big, 8);
  }
  const std::uint64_t sum = fnv1a64(huge.data(), huge.size() - 8);
  std::memcpy(huge.data() + huge.size() - 8, &sum, 8);
  write(temp_path("huge.bin"), huge);
  std::string err;
  try {
    (void)load_pretrained(temp_path("huge.bin"));
  } catch (const Error& e) {
    err = e.what();
  }
  MESSAGE(err);
  CHECK(err.find("more values than the file has bytes for") != std::string::npos);
  // a resume with other options is refused
  auto other = tiny_options(6);
  other.checkpoint = o.checkpoint;
  other.resume = true;
  CHECK_THROWS_AS(pretrain(model, data, other), Error);
  std::filesystem::remove_all(o.checkpoint.parent_path());
}

TEST_CASE("stopping and resuming gives the same bytes as a straight run") {
  const auto data = synthetic_token_data(5, 1u << 16, 1u << 13);
  auto straight_options = tiny_options(24);
  straight_options.checkpoint = temp_path("straight.bin");
  auto straight = initial_model(tiny_config(), 5);
  pretrain(straight, data, straight_options);

  // First process: stops after step 13 (a checkpoint was written at step 10).
  auto resumed_options = straight_options;
  resumed_options.checkpoint = temp_path("resumed.bin");
  resumed_options.checkpoint_every = 5;
  resumed_options.resume = true;
  struct Stop {};
  resumed_options.on_step = [](std::int64_t step, double) {
    if (step == 13) throw Stop{};
  };
  {
    auto first = initial_model(tiny_config(), 5);
    CHECK_THROWS_AS(pretrain(first, data, resumed_options), Stop);
  }
  CHECK(read_checkpoint(resumed_options.checkpoint).state.step == 10);
  resumed_options.on_step = nullptr;
  auto second = initial_model(tiny_config(), 99);  // weights come from the checkpoint
  auto r = pretrain(second, data, resumed_options);
  CHECK(r.resumed);
  CHECK(r.steps_this_run == 14);
  // checkpoints differ only by nothing: same weights, optimizer, RNG, step
  CHECK(file_bytes(straight_options.checkpoint) == file_bytes(resumed_options.checkpoint));
  std::filesystem::remove_all(straight_options.checkpoint.parent_path());
}
