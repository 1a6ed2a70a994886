// Fine-tuning a real checkpoint (llama2.c stories260K) with lowbit's backward: a short run on TinyStories
// text must lower the loss on that text, while the perplexity of a separate TinyStories file stays within
// 2%. The separate file's starting NLL must equal what llama2.c's own forward gives (1.36500), which pins
// the evaluation protocol. The full-size run is `lowbit pretrain --init ...` in docs/training.md.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include <lowbit/io/llama2c.hpp>
#include <lowbit/io/tokenizer_llama2c.hpp>
#include <lowbit/train/pretrain.hpp>

#include "test_util.hpp"

using namespace lowbit;
using namespace lowbit::train;

namespace {

std::string strip(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of(" \t\r\n") - b + 1);
}

// Pieces of `text` split on `sep`, stripped, each encoded as BOS + text, concatenated. With chunk_chars,
// pieces are re-joined with "\n" into chunks of at least that many characters first.
std::vector<std::int32_t> encode_pieces(const io::Tokenizer& tok, const std::string& text, const std::string& sep,
                                        std::size_t max_tokens = 0, std::size_t chunk_chars = 0) {
  std::vector<std::int32_t> ids;
  std::string chunk;
  auto flush = [&] {
    if (chunk.empty()) return;
    auto part = tok.encode(chunk, true);
    ids.insert(ids.end(), part.begin(), part.end());
    chunk.clear();
  };
  std::size_t pos = 0;
  while (pos < text.size() && (max_tokens == 0 || ids.size() < max_tokens)) {
    auto next = text.find(sep, pos);
    const auto piece = strip(text.substr(pos, next == std::string::npos ? std::string::npos : next - pos));
    if (!piece.empty()) {
      chunk += (chunk.empty() ? "" : "\n") + piece;
      if (chunk.size() >= chunk_chars) flush();
    }
    if (next == std::string::npos) break;
    pos = next + sep.size();
  }
  flush();
  return ids;
}

}  // namespace

TEST_CASE("fine-tuning stories260K lowers its loss on the text and keeps TinyStories perplexity") {
  const auto model_path = test::shared_file("models/stories260K.bin");
  const auto tok_path = test::shared_file("models/tok512.bin");
  const auto train_text = test::shared_file("text/tinystories_valid_prefix.txt");
  const auto eval_text = test::shared_file("text/tinystories_v2_valid_first100.txt");
  if (model_path.empty() || tok_path.empty() || train_text.empty() || eval_text.empty())
    LOWBIT_SKIP("shared data (stories260K, tok512, TinyStories texts) not found");
  set_num_threads(1);
  nn::Llama model(io::load_llama2c(model_path));
  io::Llama2cTokenizer tok(tok_path.string());

  const auto eval_ids = encode_pieces(tok, read_text_file(eval_text), "<|endoftext|>");
  REQUIRE(eval_ids.size() == 39345u);
  const double eval_before = heldout_loss(model, eval_ids, 512, 0);
  CHECK(eval_before == doctest::Approx(1.36500).epsilon(0.00005 / 1.365));

  // ~60k tokens of the fine-tuning text; the loss is measured on its first 8 windows of 256.
  // Its paragraphs are separated by blank lines where TinyStories has single newlines: re-join them.
  auto ids = encode_pieces(tok, read_text_file(train_text), "\n\n", 60000, 4000);
  TokenData data;
  data.vocab_size = 512;
  data.heldout.assign(ids.begin(), ids.begin() + 8 * 256 + 1);
  data.train = std::move(ids);
  data.finalize();
  const double text_before = heldout_loss(model, data.heldout, 256, 0);

  PretrainOptions o;
  o.batch_size = 4;
  o.seq_len = 256;
  o.steps = 40;
  o.schedule = LrSchedule{ScheduleKind::Constant, 5e-5f, 5, 40, 1.0f};
  o.adam.weight_decay = 0.0f;
  o.eval_every = 0;
  o.eval_tokens = 0;
  o.quiet = true;
  o.seed = 3;
  o.masked_target = tok.bos_id();  // paragraphs are not stories: "BOS comes next" is not a target
  pretrain(model, data, o);

  const double text_after = heldout_loss(model, data.heldout, 256, 0);
  const double eval_after = heldout_loss(model, eval_ids, 512, 0);
  MESSAGE("fine-tuning text NLL ", text_before, " -> ", text_after, "; TinyStories first100 NLL ", eval_before, " -> ",
          eval_after, " (ppl ", std::exp(eval_before), " -> ", std::exp(eval_after), ")");
  CHECK(text_after < text_before - 0.01);
  CHECK(std::exp(eval_after) < 1.02 * std::exp(eval_before));
}
