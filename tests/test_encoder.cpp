// 1-bit activation encoders (issue 17) beyond their gradients (test_nn_gradcheck.cpp checks those): the
// encoder spec, one shared encoder against three copies, the memo of a shared encoder, exactly two values
// per channel at every linear input of an encoded stories260K, and the layer-wise trainer.
#include <doctest/doctest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "lowbit/calib/calibration_data.hpp"
#include "lowbit/eval/text_input.hpp"
#include "lowbit/io/llama2c.hpp"
#include "lowbit/io/quantized_model.hpp"
#include "lowbit/io/tokenizer_llama2c.hpp"
#include "lowbit/nn/encoded_linear.hpp"
#include "lowbit/nn/stored_linear.hpp"
#include "lowbit/train/encoder.hpp"
#include "test_util.hpp"

using namespace lowbit;
using namespace lowbit::nn;

TEST_CASE("encoder specs: names round-trip, bad ones are refused, cost is counted") {
  for (const char* s : {"none", "diag", "lowrank:8", "mlp"}) CHECK(EncoderSpec::parse(s).name() == s);
  for (const char* s : {"lowrank", "lowrank:0", "lowrank:x", "dense", ""})
    CHECK_THROWS_AS((void)EncoderSpec::parse(s), Error);
  CHECK_THROWS_AS(ActivationEncoder(EncoderSpec::parse("lowrank:65"), 64), Error);
  CHECK(ActivationEncoder(EncoderSpec::parse("none"), 64).parameter_count() == 0);
  CHECK(ActivationEncoder(EncoderSpec::parse("diag"), 64).parameter_count() == 128);
  CHECK(ActivationEncoder(EncoderSpec::parse("diag"), 64).macs_per_token() == 0);
  CHECK(ActivationEncoder(EncoderSpec::parse("lowrank:4"), 64).macs_per_token() == 2 * 4 * 64);
  CHECK(ActivationEncoder(EncoderSpec::parse("mlp"), 64).macs_per_token() == 64 * 64);
}

TEST_CASE("one encoder shared by q/k/v and gate/up gives the outputs of separate copies, computed once") {
  Rng rng(3);
  ModelConfig c;
  c.dim = 32;
  c.hidden_dim = 48;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.vocab_size = 40;
  c.max_seq_len = 16;
  for (const char* kind : {"diag", "lowrank:4", "mlp"}) {
    auto shared = Llama::random_init(c, rng, 0.2);
    auto copies = Llama::random_init(c, rng, 0.2);
    for (auto r : kAllLinearRoles) {  // same weights in both
      std::vector<float> w(static_cast<std::size_t>(shared.block(0).linear(r).out_features() *
                                                    shared.block(0).linear(r).in_features()));
      shared.block(0).linear(r).dequantize(MatrixView<float>(w.data(), shared.block(0).linear(r).out_features(),
                                                             shared.block(0).linear(r).in_features()));
      copies.block(0).set_linear(r, std::make_unique<DenseLinear>(shared.block(0).linear(r).out_features(),
                                                                  shared.block(0).linear(r).in_features(), w));
    }
    copies.block(0).attn_norm = shared.block(0).attn_norm;
    copies.block(0).ffn_norm = shared.block(0).ffn_norm;
    encode_block(shared.block(0), EncoderSpec::parse(kind), 11, true);
    encode_block(copies.block(0), EncoderSpec::parse(kind), 11, false);
    int owners_shared = 0, owners_copies = 0;
    for (auto r : kAllLinearRoles) {
      owners_shared += dynamic_cast<EncodedLinear&>(shared.block(0).linear(r)).owns_encoder();
      owners_copies += dynamic_cast<EncodedLinear&>(copies.block(0).linear(r)).owns_encoder();
    }
    CHECK(owners_shared == 4);
    CHECK(owners_copies == 7);
    auto& q = dynamic_cast<EncodedLinear&>(shared.block(0).linear(LinearRole::Q));
    auto& v = dynamic_cast<EncodedLinear&>(shared.block(0).linear(LinearRole::V));
    CHECK(&q.encoder() == &v.encoder());
    const int T = 6;
    std::vector<float> x(static_cast<std::size_t>(T * c.dim));
    for (auto& e : x) e = static_cast<float>(rng.normal());
    std::vector<float> xa = x, xb = x;
    const auto before = q.encoder().times_computed();
    shared.block_forward(0, xa.data(), 1, T);
    copies.block_forward(0, xb.data(), 1, T);
    CHECK(q.encoder().times_computed() == before + 1);  // q, k and v read one encoding
    for (std::size_t i = 0; i < xa.size(); ++i) REQUIRE(xa[i] == xb[i]);
    // a changed parameter is seen by the memo (same input buffer and values)
    q.encoder().beta()[0] += 0.5f;
    std::vector<float> in(x.begin(), x.begin() + c.dim), o1(static_cast<std::size_t>(q.out_features()));
    q.forward(MatrixView<const float>(in.data(), 1, c.dim), MatrixView<float>(o1.data(), 1, q.out_features()));
    const auto n1 = q.encoder().times_computed();
    q.encoder().beta()[0] += 0.5f;
    q.forward(MatrixView<const float>(in.data(), 1, c.dim), MatrixView<float>(o1.data(), 1, q.out_features()));
    CHECK(q.encoder().times_computed() == n1 + 1);
  }
}

namespace {

bool have_stories() {
  return !test::shared_file("models/stories260K.bin").empty() && !test::shared_file("models/tok512.bin").empty() &&
         !test::shared_file("text/tinystories_v2_valid_first100.txt").empty();
}

// 8 calibration windows of `seqlen` tokens of the TinyStories text (seed 0), as the trainer tests use them.
std::vector<std::int32_t> stories_windows(int seqlen) {
  io::Llama2cTokenizer tok(test::shared_file("models/tok512.bin").string());
  const auto calib_path = test::shared_file("text/tinystories_v2_valid_first100.txt").string();
  return calib::draw_calibration_tokens(eval::read_documents(calib_path), tok, 8, seqlen, 0, calib_path);
}

}  // namespace

namespace {
// Real activations at every encoded input: run the model on a window with taps and apply each layer's
// effective input; every column holds exactly the two values ±α_c (or one, if all signs agree).
void check_two_values_per_channel(Llama& model, const std::vector<std::int32_t>& tokens) {
  const int T = 32;
  std::vector<float> x(static_cast<std::size_t>(T) * model.config().dim);
  model.embed(tokens.data(), T, x.data());
  for (int l = 0; l < model.config().n_layers; ++l) {
    BlockTaps taps;
    model.block_forward(l, x.data(), 1, T, &taps);
    for (auto role : kAllLinearRoles) {
      auto& e = dynamic_cast<EncodedLinear&>(model.block(l).linear(role));
      const int input = role == LinearRole::O ? 1 : role == LinearRole::Down ? 3 : (role == LinearRole::Gate || role == LinearRole::Up) ? 2 : 0;
      const auto& X = train::tap_of(taps, input);
      const index_t w = e.in_features();
      std::vector<float> enc(static_cast<std::size_t>(T * w));
      e.effective_input(MatrixView<const float>(X.data(), T, w), MatrixView<float>(enc.data(), T, w));
      for (index_t c = 0; c < w; ++c) {
        std::set<float> values;
        for (int t = 0; t < T; ++t) values.insert(enc[static_cast<std::size_t>(t * w + c)]);
        const float a = e.encoder().alpha()[static_cast<std::size_t>(c)];
        REQUIRE(values.size() <= 2u);
        for (float v : values) REQUIRE((v == a || v == -a));
      }
    }
  }
}
}  // namespace

TEST_CASE("encoded stories260K: every linear input takes exactly two values per channel, the trainer lowers the error") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text are missing from shared/data");
  set_num_threads(1);
  const auto model_path = test::shared_file("models/stories260K.bin");
  const int seqlen = 64;
  const auto tokens = stories_windows(seqlen);
  train::EncoderTrainOptions o;
  o.encoder = "diag";
  o.steps_per_block = 40;
  o.batch_rows = 128;
  o.lr = 1e-2f;
  o.final_lr = 1e-3f;
  o.quiet = true;
  Llama model(io::load_llama2c(model_path));
  const auto r = train::train_encoders(model, tokens, seqlen, o);
  REQUIRE(r.first_loss.size() == 5u);
  for (std::size_t l = 0; l < 5; ++l) {
    INFO("block " << l << ": " << r.first_loss[l] << " -> " << r.last_loss[l]);
    CHECK(r.last_loss[l] < 0.95 * r.first_loss[l]);
  }
  CHECK(r.encoder_parameters == 5 * 2 * (64 + 64 + 64 + 172));
  CHECK(r.encoder_macs_per_token == 0);
  // deterministic for a seed
  Llama again(io::load_llama2c(model_path));
  const auto r2 = train::train_encoders(again, tokens, seqlen, o);
  CHECK(r2.last_loss == r.last_loss);
  check_two_values_per_channel(model, tokens);
}

TEST_CASE("an encoded model (any inner format) round-trips through the quantized file with the same logits") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text are missing from shared/data");
  set_num_threads(1);
  const auto model_path = test::shared_file("models/stories260K.bin");
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_test_enc_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::vector<std::int32_t> tokens = {1, 403, 407, 261, 378, 434, 270, 261, 468, 281, 306, 410};
  for (const char* kind : {"none", "diag", "lowrank:4", "mlp"}) {
    Llama model(io::load_llama2c(model_path));
    // one block over 4-bit weights: encoders combine with any inner format
    for (auto r : kAllLinearRoles) {
      auto& lin = model.block(2).linear(r);
      std::vector<float> w(static_cast<std::size_t>(lin.out_features() * lin.in_features()));
      lin.dequantize(MatrixView<float>(w.data(), lin.out_features(), lin.in_features()));
      model.set_linear(2, r, make_rtn_linear("uniform:4:32", MatrixView<const float>(w.data(), lin.out_features(), lin.in_features())));
    }
    Rng rng(9);
    for (int l = 0; l < model.config().n_layers; ++l) {
      encode_block(model.block(l), EncoderSpec::parse(kind), 100 + l);
      for (auto r : kAllLinearRoles) {  // trained-looking values, so the file must carry them
        auto& e = dynamic_cast<EncodedLinear&>(model.block(l).linear(r));
        if (!e.owns_encoder()) continue;
        for (auto& a : e.encoder().alpha()) a = static_cast<float>(0.1 + rng.uniform());
        for (auto& b : e.encoder().beta()) b = static_cast<float>(0.05 * rng.normal());
        for (auto& u : e.encoder().up()) u = static_cast<float>(0.1 * rng.normal());
      }
    }
    const auto path = dir / (std::string("enc_") + (kind[0] == 'l' ? "lowrank" : kind) + ".safetensors");
    io::write_quantized_model(path, model, {{"method", "test"}});
    Llama back = io::load_quantized_model(path);
    CHECK(back.linear(2, LinearRole::K).format() == std::string("binary:heaviside:") + kind + ":shared|uniform:4:32");
    CHECK(back.linear(0, LinearRole::Q).format() == std::string("binary:heaviside:") + kind + "|f32");
    auto& bq = dynamic_cast<EncodedLinear&>(back.block(1).linear(LinearRole::Q));
    auto& bv = dynamic_cast<EncodedLinear&>(back.block(1).linear(LinearRole::V));
    CHECK(&bq.encoder() == &bv.encoder());
    const int T = static_cast<int>(tokens.size());
    std::vector<float> a(static_cast<std::size_t>(T) * model.config().vocab_size), b(a.size());
    model.forward(tokens.data(), 1, T, a.data());
    back.forward(tokens.data(), 1, T, b.data());
    CHECK(a == b);
  }
  // every linear owning its own encoder is refused: one encoder per input
  Llama copies(io::load_llama2c(model_path));
  encode_block(copies.block(0), EncoderSpec::parse("diag"), 1, false);
  io::write_quantized_model(dir / "copies.safetensors", copies, {{"method", "test"}});
  CHECK_THROWS_WITH_AS((void)io::load_quantized_model(dir / "copies.safetensors"),
                       doctest::Contains("one encoder per input"), Error);
  std::filesystem::remove_all(dir);
}

namespace {
struct Interrupted {};

// The logits of `model` on the first window (the whole model's output: every encoder takes part).
std::vector<float> window_logits(Llama& model, const std::vector<std::int32_t>& tokens, int seqlen) {
  std::vector<float> out(static_cast<std::size_t>(seqlen) * model.config().vocab_size);
  model.forward(tokens.data(), 1, seqlen, out.data());
  return out;
}
}  // namespace

TEST_CASE("annealed surrogate sharpness: linear from k to k_final over the steps, constant without k_final") {
  CHECK(train::annealed_k(4.0f, 0.0f, 7, 10) == 4.0f);
  CHECK(train::annealed_k(4.0f, 12.0f, 0, 10) == 4.0f);
  CHECK(train::annealed_k(4.0f, 12.0f, 9, 10) == 12.0f);
  CHECK(train::annealed_k(4.0f, 12.0f, 3, 5) == doctest::Approx(10.0f));
  CHECK(train::annealed_k(4.0f, 12.0f, 0, 1) == 4.0f);
}

TEST_CASE("encoder training killed and resumed ends byte-identical (layer-wise and end to end)") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text are missing from shared/data");
  set_num_threads(1);
  const auto model_path = test::shared_file("models/stories260K.bin");
  const int seqlen = 64;
  const auto tokens = stories_windows(seqlen);
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit_encoder_resume_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  train::EncoderTrainOptions o;
  o.encoder = "lowrank:4";
  o.steps_per_block = 12;
  o.batch_rows = 64;
  o.lr = 1e-2f;
  o.final_lr = 1e-3f;
  o.warmup = 3;
  o.quiet = true;
  o.checkpoint_every = 5;
  o.k_final = 8.0f;  // annealed k: a resumed run must take up the schedule where it stopped

  Llama straight(io::load_llama2c(model_path));
  const auto r = train::train_encoders(straight, tokens, seqlen, o);
  const auto want = window_logits(straight, tokens, seqlen);

  // killed after step 28 of 60 (inside block 2, after the checkpoint at 25), then again after 41 (block 3)
  o.checkpoint = dir / "layerwise.ckpt";
  for (std::int64_t kill : {28, 41}) {
    o.on_step = [kill](std::int64_t step) {
      if (step == kill) throw Interrupted{};
    };
    Llama victim(io::load_llama2c(model_path));
    CHECK_THROWS_AS((void)train::train_encoders(victim, tokens, seqlen, o), Interrupted);
    CHECK(std::filesystem::exists(o.checkpoint));
  }
  o.on_step = nullptr;
  Llama resumed(io::load_llama2c(model_path));
  const auto r2 = train::train_encoders(resumed, tokens, seqlen, o);
  CHECK(r2.resumed);
  CHECK(r2.resumed_from_step == 40);  // the last checkpoint before step 41: block 3 ends at 48, so every 5
  CHECK(r2.first_loss == r.first_loss);
  CHECK(r2.last_loss == r.last_loss);
  check_two_values_per_channel(resumed, tokens);  // lowrank: the mixing happens before the step
  const auto got = window_logits(resumed, tokens, seqlen);
  REQUIRE(got.size() == want.size());
  CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);

  // a checkpoint of another run is refused, with its path in the message
  {
    auto other = o;
    other.seed = 9;
    Llama m(io::load_llama2c(model_path));
    CHECK_THROWS_WITH_AS((void)train::train_encoders(m, tokens, seqlen, other),
                         doctest::Contains("written by another run"), Error);
  }

  // End to end: 6 steps straight against 6 steps killed after 4 (checkpoints every 2) and resumed.
  Llama teacher(io::load_llama2c(model_path));
  const auto data = train::split_tokens(tokens, 0.25, teacher.config().vocab_size, "calibration windows");
  train::EncoderEndToEndOptions e;
  e.steps = 6;
  e.batch = 2;
  e.seq_len = 32;
  e.lr = 1e-2f;
  e.warmup = 2;
  e.quiet = true;
  e.checkpoint_every = 2;
  e.k_final = 8.0f;
  e.ce_weight = 0.3;
  const auto before = window_logits(straight, tokens, seqlen);
  const auto d = train::finetune_encoders_end_to_end(straight, teacher, data, e);
  CHECK(d.heldout_after < d.heldout_before);
  const auto e2e_want = window_logits(straight, tokens, seqlen);
  CHECK(std::memcmp(e2e_want.data(), before.data(), before.size() * sizeof(float)) != 0);
  e.checkpoint = dir / "e2e.ckpt";
  e.on_step = [](std::int64_t step, double) {
    if (step == 5) throw Interrupted{};
  };
  CHECK_THROWS_AS((void)train::finetune_encoders_end_to_end(resumed, teacher, data, e), Interrupted);
  e.on_step = nullptr;
  Llama again(io::load_llama2c(model_path));
  (void)train::train_encoders(again, tokens, seqlen, o);  // restored from the finished layer-wise checkpoint
  const auto d2 = train::finetune_encoders_end_to_end(again, teacher, data, e);
  CHECK(d2.resumed);
  CHECK(d2.resumed_from_step == 4);
  CHECK(d2.heldout_after == d.heldout_after);
  const auto e2e_got = window_logits(again, tokens, seqlen);
  CHECK(std::memcmp(e2e_got.data(), e2e_want.data(), e2e_want.size() * sizeof(float)) == 0);
  std::filesystem::remove_all(dir);
}
