// io::open_model, the one loader behind every command, and quantized files that hold the whole model in
// low bits: stories260K quantized per family (uniform RTN linears, additive linears) with an 8-bit
// token table decodes (eval::decode, what `lowbit generate` runs) to the greedy tokens of the
// batched forward (eval::wrap_model, what `lowbit perplexity` runs; near-ties may break either way),
// with logits that agree; untied tables in two formats round-trip through a file; files are recognized
// by content, not by name, and a wrong file is named for what it looks like.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <vector>

#include <lowbit/calib/tables.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/eval/decode.hpp>
#include <lowbit/eval/language_model.hpp>
#include <lowbit/eval/model_source.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/nn/stored_linear.hpp>

#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace lowbit;

namespace {

fs::path scratch(const std::string& tag) {
  const fs::path dir = fs::temp_directory_path() / ("lowbit_open_model_" + tag);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Every linear of `model` re-quantized to `format` by the format's own quantizer (RTN / k-means init).
void quantize_linears(nn::Llama& model, const std::string& format) {
  for (int l = 0; l < model.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      auto& lin = model.linear(l, role);
      std::vector<float> w(static_cast<std::size_t>(lin.out_features() * lin.in_features()));
      lin.dequantize(MatrixView<float>(w.data(), lin.out_features(), lin.in_features()));
      model.set_linear(l, role, nn::make_rtn_linear(format, as_matrix(w, lin.out_features(), lin.in_features())));
    }
}

// Greedy decoding through the KV cache must pick, at every step, the argmax of the batched forward over
// the same tokens, and the two logit vectors must agree closely.
void check_decode_matches_batched(nn::Llama& model, int steps) {
  const int vocab = model.config().vocab_size;
  std::vector<std::int32_t> prompt = {1, 403, 407, 261};  // BOS "Once upon a"
  auto cache = model.make_cache(static_cast<int>(prompt.size()) + steps);
  nn::Sampler greedy(vocab, 0.0f, 1.0f, 0);
  std::vector<std::vector<float>> step_logits;
  eval::DecodeOptions opt;
  opt.max_new_tokens = steps;
  const auto st = eval::decode(model, cache, prompt, greedy, opt);
  REQUIRE(st.generated == steps);

  std::vector<std::int32_t> all = prompt;
  all.insert(all.end(), st.tokens.begin(), st.tokens.end());
  auto lm = eval::wrap_model(model, "batched");
  const int T = static_cast<int>(all.size());
  std::vector<float> logits(static_cast<std::size_t>(T) * vocab);
  lm.forward(all.data(), 1, T, logits.data());
  // Decode's matvec kernels and the batched GEMM sum in different orders, so a near-tie may break either
  // way (under the sanitizer build's -O1, additive:1:8:8 step 20 picked a token 8e-4 below the argmax of
  // ~10): the decoded token must be the batched argmax, or within 1e-3 of the largest logit of it.
  for (int i = 0; i < steps; ++i) {
    const int pos = static_cast<int>(prompt.size()) - 1 + i;  // the position that predicts generated token i
    const float* row = logits.data() + static_cast<std::size_t>(pos) * vocab;
    const int best = nn::argmax(row, vocab);
    const int token = st.tokens[static_cast<std::size_t>(i)];
    float max_abs = 1.0f;
    for (int v = 0; v < vocab; ++v) max_abs = std::max(max_abs, std::fabs(row[v]));
    CHECK_MESSAGE(row[best] - row[token] <= 1e-3f * max_abs, "step ", i, ": decoded ", token, " (logit ", row[token],
                  "), batched argmax ", best, " (logit ", row[best], ")");
  }
  // the last step's logits, recomputed through the cache, against the batched row
  std::vector<float> last(static_cast<std::size_t>(vocab));
  auto cache2 = model.make_cache(T);
  model.forward_prefill(all.data(), T, 0, cache2, last.data(), true);
  const float* row = logits.data() + static_cast<std::size_t>(T - 1) * vocab;
  double max_diff = 0, max_abs = 0;
  for (int v = 0; v < vocab; ++v) {
    max_diff = std::max(max_diff, std::fabs(double(last[v]) - row[v]));
    max_abs = std::max(max_abs, std::fabs(double(row[v])));
  }
  CHECK(max_diff <= 1e-4 * std::max(1.0, max_abs));
}

}  // namespace

TEST_CASE("stories260K quantized per family with an 8-bit table: generate's decode = perplexity's forward") {
  const auto path = test::shared_file("models/stories260K.bin");
  if (path.empty()) {
    MESSAGE("[skipped] shared/data/models/stories260K.bin is missing");
    return;
  }
  const auto dir = scratch("families");
  for (const std::string format : {"uniform:4:32", "additive:1:8:8"}) {
    CAPTURE(format);
    nn::Llama model = io::open_model(path);
    quantize_linears(model, format);
    calib::quantize_tables(model, calib::kDefaultTableFormat, calib::kDefaultTableFormat);
    CHECK(model.token_embedding_format() == "uniform:8:row:sym");
    const auto file = dir / ("q_" + std::to_string(format.size()) + ".safetensors");
    io::write_quantized_model(file, model, {{"test", format}}, path.string());

    io::ModelFormat detected = io::ModelFormat::Unknown;
    nn::Llama loaded = io::open_model(file, &detected);
    CHECK(detected == io::ModelFormat::LowbitQuantized);
    CHECK(loaded.linear(0, nn::LinearRole::Q).format() == format);
    CHECK(loaded.output_head_format() == "uniform:8:row:sym");
    // the file holds exactly what the model stores: whole-model bits/weight far below fp32's
    const auto storage = eval::model_storage(loaded);
    CHECK(storage.model_bits_per_weight < 9.0);
    CHECK(8.0 * double(fs::file_size(file)) / storage.parameters < storage.model_bits_per_weight + 1.0);
    check_decode_matches_batched(loaded, 24);

    // the quantized table reads back the rows the RTN table holds
    std::vector<float> row(64), direct(64);
    loaded.token_embedding()->dequantize_row(407, row.data());
    model.token_embedding()->dequantize_row(407, direct.data());
    CHECK(row == direct);
    // load_weights dequantizes a quantized file (what re-quantizing starts from)
    bool was_quantized = false;
    const auto w = io::load_weights(file, &was_quantized);
    CHECK(was_quantized);
    const auto& t = w.get("tok_embeddings.weight", {512, 64});
    CHECK(std::equal(row.begin(), row.end(), t.data.begin() + 407 * 64));
  }
  fs::remove_all(dir);
}

TEST_CASE("untied tables in two formats round-trip through a quantized file, training refuses them") {
  nn::ModelConfig c;
  c.dim = 64, c.hidden_dim = 96, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2, c.vocab_size = 300;
  c.max_seq_len = 64, c.tied_embeddings = false;
  Rng rng(7);
  auto model = nn::Llama::random_init(c, rng, 0.05);
  const auto dir = scratch("untied");
  CHECK_THROWS_AS(calib::quantize_tables(model, "uniform:9:1", "f32"), Error);
  calib::quantize_tables(model, "uniform:4:64", "uniform:8:row:sym");
  CHECK(model.token_embedding_format() == "uniform:4:64");
  CHECK(model.output_head_format() == "uniform:8:row:sym");
  CHECK_THROWS_WITH_AS(model.tok_embeddings(), doctest::Contains("stored as uniform:4:64"), Error);
  std::vector<std::int32_t> tokens = {3, 17, 250, 9, 4, 100};
  std::vector<float> targets_logits(tokens.size() * 300);
  CHECK_THROWS_WITH_AS(model.forward_train(tokens.data(), 1, 6, targets_logits.data()), doctest::Contains("fp32"), Error);
  std::vector<float> before(tokens.size() * 300), after(before.size());
  model.forward(tokens.data(), 1, 6, before.data());
  io::write_quantized_model(dir / "u.safetensors", model, nlohmann::json::object());
  nn::Llama loaded = io::open_model(dir / "u.safetensors");
  CHECK(loaded.token_embedding_format() == "uniform:4:64");
  CHECK(loaded.output_head_format() == "uniform:8:row:sym");
  loaded.forward(tokens.data(), 1, 6, after.data());
  CHECK(before == after);
  // a tied model cannot store its one table twice
  c.tied_embeddings = true;
  auto tied = nn::Llama::random_init(c, rng, 0.05);
  CHECK_THROWS_WITH_AS(calib::quantize_tables(tied, "uniform:8:row:sym", "uniform:4:64"), doctest::Contains("tied"), Error);
  fs::remove_all(dir);
}

TEST_CASE("int8 decoding of an 8-bit head stays within the activation rounding of the exact head") {
  nn::ModelConfig c;
  c.dim = 128, c.hidden_dim = 192, c.n_layers = 1, c.n_heads = 4, c.n_kv_heads = 4, c.vocab_size = 1000;
  c.max_seq_len = 32;
  Rng rng(11);
  auto model = nn::Llama::random_init(c, rng, 0.05);
  calib::quantize_tables(model, "uniform:8:row:sym", "uniform:8:row:sym");
  std::vector<float> exact(1000), fast(1000);
  auto cache = model.make_cache(4);
  const std::int32_t tok = 42;
  model.forward_prefill(&tok, 1, 0, cache, exact.data(), true);
  CHECK(model.set_activations("int8") == 1);  // the 7 dense linears keep fp32; only the head switches
  auto cache2 = model.make_cache(4);
  model.forward_prefill(&tok, 1, 0, cache2, fast.data(), true);
  double err = 0, scale = 0;
  for (int v = 0; v < 1000; ++v) {
    err = std::max(err, std::fabs(double(exact[v]) - fast[v]));
    scale = std::max(scale, std::fabs(double(exact[v])));
  }
  CHECK(err > 0);                // it really took the int8 path
  CHECK(err < 0.02 * scale);     // and stays close
}

TEST_CASE("model files are recognized by content, a wrong file is named for what it looks like") {
  const auto dir = scratch("detect");
  if (auto p = test::shared_file("models/stories260K.bin"); !p.empty()) {
    fs::copy_file(p, dir / "weights.dat");  // no .bin extension
    CHECK(io::detect_model_format(dir / "weights.dat") == io::ModelFormat::Llama2c);
    CHECK(io::open_model(dir / "weights.dat").config().vocab_size == 512);
    fs::resize_file(dir / "weights.dat", fs::file_size(p) - 4);
    CHECK(io::detect_model_format(dir / "weights.dat") == io::ModelFormat::Unknown);
    CHECK_THROWS_WITH_AS(io::open_model(dir / "weights.dat"), doctest::Contains("llama2.c header that implies"), Error);
  }
  std::ofstream(dir / "tokenizer.json") << R"({"version": "1.0", "added_tokens": [], "model": {"type": "BPE"}})";
  CHECK_THROWS_WITH_AS(io::open_model(dir / "tokenizer.json"), doctest::Contains("looks like a tokenizer JSON"), Error);
  std::ofstream(dir / "empty.bin").close();
  CHECK_THROWS_WITH_AS(io::open_model(dir / "empty.bin"), doctest::Contains("an empty file"), Error);
  CHECK_THROWS_WITH_AS(io::open_model(dir / "absent.gguf"), doctest::Contains("does not exist"), Error);
  CHECK_THROWS_WITH_AS(io::open_model(dir), doctest::Contains("a directory without config.json"), Error);
  // a quantized file whose JSON header is damaged is still reported as one (not as a Hugging Face
  // safetensors file missing its config.json)
  nn::ModelConfig c;
  c.dim = 32, c.hidden_dim = 48, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2, c.vocab_size = 40, c.max_seq_len = 16;
  Rng rng(3);
  auto model = nn::Llama::random_init(c, rng);
  io::write_quantized_model(dir / "q.safetensors", model, nlohmann::json::object());
  CHECK_THROWS_WITH_AS(io::load_model(dir / "q.safetensors"), doctest::Contains("lowbit quantized file"), Error);
  {
    std::fstream f(dir / "q.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(9);
    f.put('#');  // breaks the JSON header
  }
  CHECK(io::detect_model_format(dir / "q.safetensors") == io::ModelFormat::LowbitQuantized);
  try {
    io::open_model(dir / "q.safetensors");
    FAIL("a damaged header loaded");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("config.json") == std::string::npos);
  }
  fs::remove_all(dir);
}
