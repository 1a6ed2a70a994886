// BitDistiller (calib/bitdistiller.hpp, nn/fake_quant_linear.hpp, train/teacher_data.hpp):
// - the fake-quant forward weight is exactly dequantize(rtn_quantize(W)) of the format, and the layer packs
//   into that same layer;
// - the straight-through gradient equals the finite-difference gradient of the loss with respect to the
//   forward weight Ŵ (where the loss is differentiable: it is smooth in Ŵ), and the clipping-aware variant
//   stops it outside the clip range;
// - CAKLD's β is the teacher's mean top-1 probability on the probe batches, CE is the cross-entropy;
// - best-held-out selection keeps the best measured parameters and resumes bit-identically;
// - teacher data: proportional source counts, prompts cut at UTF-8 boundaries, generation resumable to the
//   same bytes after a cut line, bad files refused with the line named;
// - on stories260K: QAT lowers the perplexity of the AutoClip start, and a run killed by SIGKILL during QAT
//   resumes from its run directory to a byte-identical file.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/calib/bitdistiller.hpp"
#include "lowbit/calib/pipeline.hpp"
#include "lowbit/eval/chat.hpp"
#include "lowbit/eval/model_source.hpp"
#include "lowbit/eval/perplexity.hpp"
#include "lowbit/eval/text_input.hpp"
#include "lowbit/io/llama2c.hpp"
#include "lowbit/io/open_model.hpp"
#include "lowbit/io/quantized_model.hpp"
#include "lowbit/io/tokenizer_llama2c.hpp"
#include "lowbit/train/pretrain.hpp"
#include "test_spawn.hpp"
#include "test_util.hpp"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

std::vector<float> random_matrix(index_t rows, index_t cols, std::uint64_t seed, double scale = 1.0) {
  Rng rng(seed);
  std::vector<float> w(static_cast<std::size_t>(rows * cols));
  for (auto& x : w) x = static_cast<float>(scale * rng.normal());
  return w;
}

std::vector<float> dequantized(const nn::Linear& l) {
  std::vector<float> w(static_cast<std::size_t>(l.out_features() * l.in_features()));
  l.dequantize(MatrixView<float>(w.data(), l.out_features(), l.in_features()));
  return w;
}

template <class F>
void check_fake_quant_forward() {
  CAPTURE(F::name());
  const index_t rows = 6, cols = 300;  // 300: a short last group for every group size
  const auto W = random_matrix(rows, cols, 3);
  const MatrixView<const float> Wv(W.data(), rows, cols);
  for (auto mode : {nn::FakeQuantGradient::straight_through, nn::FakeQuantGradient::through_range,
                    nn::FakeQuantGradient::clipping_aware}) {
    CAPTURE(nn::to_string(mode));
    nn::FakeQuantLinear<F> fq(Wv, mode);
    const nn::QuantizedLinear<F> ref(calib::rtn_quantize<F>(Wv));
    CHECK(dequantized(fq) == dequantized(ref));
    CHECK(dequantized(*fq.inference_form()) == dequantized(ref));
    CHECK(fq.format() == F::name());
    CHECK(fq.bytes() == ref.bytes());
    // forward is X·Ŵᵀ with that weight
    const auto X = random_matrix(3, cols, 4);
    std::vector<float> y(3 * rows), y_ref(3 * rows);
    fq.forward(MatrixView<const float>(X.data(), 3, cols), MatrixView<float>(y.data(), 3, rows));
    const auto Wh = dequantized(ref);
    for (index_t t = 0; t < 3; ++t)
      for (index_t r = 0; r < rows; ++r) {
        double s = 0;
        for (index_t c = 0; c < cols; ++c) s += double(X[t * cols + c]) * Wh[r * cols + c];
        y_ref[t * rows + r] = static_cast<float>(s);
      }
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(y[i] == doctest::Approx(y_ref[i]).epsilon(1e-4));
  }
}

}  // namespace

TEST_CASE("fake-quant forward weight equals dequantize(rtn_quantize(W)) exactly, and packs into it") {
  set_num_threads(2);
  check_fake_quant_forward<Uniform<2, 128>>();
  check_fake_quant_forward<Uniform<3, 128>>();
  check_fake_quant_forward<Uniform<4, 32>>();
  check_fake_quant_forward<NF3<128>>();
  check_fake_quant_forward<Uniform<4, 128, UniformMode::Symmetric>>();
}

TEST_CASE("fake-quant gradient: straight-through inside the clip range (finite differences in W-hat), zero outside with the clipping-aware STE") {
  set_num_threads(1);
  using F = Uniform<2, 64>;
  const index_t rows = 4, cols = 130, T = 5;
  auto W = random_matrix(rows, cols, 7);
  const auto X = random_matrix(T, cols, 8);
  const auto target = random_matrix(T, rows, 9);
  for (bool clip : {false, true}) {
    CAPTURE(clip);
    nn::FakeQuantLinear<F> fq(MatrixView<const float>(W.data(), rows, cols),
                              clip ? nn::FakeQuantGradient::clipping_aware : nn::FakeQuantGradient::straight_through);
    auto params = fq.parameters();
    REQUIRE(params.size() == 1);
    CHECK(params[0].name == "fq_weight");
    // Push some latent weights outside their group's starting range (the clip range of the variant).
    std::vector<std::size_t> outside = {3, 70, 2 * cols + 5, 3 * cols + 129};
    for (auto e : outside) params[0].value[e] += (params[0].value[e] >= 0 ? 10.0f : -10.0f);
    // L = ½‖X·Ŵᵀ − target‖²; dL/dY = Y − target.
    std::vector<float> Y(T * rows), dY(T * rows), dX(T * cols, 0.0f);
    fq.forward(MatrixView<const float>(X.data(), T, cols), MatrixView<float>(Y.data(), T, rows));
    for (std::size_t i = 0; i < Y.size(); ++i) dY[i] = Y[i] - target[i];
    std::fill(params[0].grad, params[0].grad + params[0].size, 0.0f);
    fq.backward(MatrixView<const float>(X.data(), T, cols), MatrixView<const float>(dY.data(), T, rows),
                MatrixView<float>(dX.data(), T, cols));
    // Finite differences of L as a function of Ŵ (smooth there), element by element, in double.
    const auto Wh = dequantized(fq);
    auto loss = [&](const std::vector<double>& w) {
      double L = 0;
      for (index_t t = 0; t < T; ++t)
        for (index_t r = 0; r < rows; ++r) {
          double y = 0;
          for (index_t c = 0; c < cols; ++c) y += double(X[t * cols + c]) * w[r * cols + c];
          L += 0.5 * (y - target[t * rows + r]) * (y - target[t * rows + r]);
        }
      return L;
    };
    std::vector<double> w(Wh.begin(), Wh.end());
    int inside_checked = 0;
    for (std::size_t e = 0; e < w.size(); e += 7) {
      const bool is_outside = std::find(outside.begin(), outside.end(), e) != outside.end();
      const double h = 1e-4, keep = w[e];
      w[e] = keep + h;
      const double up = loss(w);
      w[e] = keep - h;
      const double down = loss(w);
      w[e] = keep;
      const double fd = (up - down) / (2 * h);
      CAPTURE(e);
      if (clip && is_outside) continue;
      CHECK(params[0].grad[e] == doctest::Approx(fd).epsilon(1e-3).scale(1.0));
      ++inside_checked;
    }
    CHECK(inside_checked > 50);
    for (auto e : outside) {
      CAPTURE(e);
      if (clip) CHECK(params[0].grad[e] == 0.0f);
      else CHECK(params[0].grad[e] != 0.0f);
    }
    // dX = dY·Ŵ
    for (index_t t = 0; t < T; ++t)
      for (index_t c = 0; c < cols; c += 13) {
        double s = 0;
        for (index_t r = 0; r < rows; ++r) s += double(dY[t * rows + r]) * Wh[r * cols + c];
        CHECK(dX[t * cols + c] == doctest::Approx(s).epsilon(1e-4).scale(1.0));
      }
    // The clipping-aware forward clamps to the starting range: the pushed weights sit at its ends and the
    // grid of every group, so every other weight's Ŵ, is unchanged.
    if (clip) {
      nn::FakeQuantLinear<F> start(MatrixView<const float>(W.data(), rows, cols), nn::FakeQuantGradient::clipping_aware);
      const auto a = dequantized(fq), b = dequantized(start);
      for (std::size_t e = 0; e < a.size(); ++e)
        if (std::find(outside.begin(), outside.end(), e) == outside.end()) CHECK(a[e] == b[e]);
    }
  }
}

namespace {

// The through_range gradient is the exact gradient of the surrogate the paper's autograd differentiates:
// ŵ_j(w') = w'_j + d_j·S(w')/S(w), d_j = ŵ_j − w_j fixed at the current point (the rounding's
// straight-through residual) and S the group's continuous scale function of its extreme weights (per sign
// side for NF3). Checked by central differences of Σ G_j·ŵ_j(w') at every group's max, min and a middle weight.
template <class F>
void check_range_gradient(std::function<double(const std::vector<double>&, double)> scale) {
  CAPTURE(F::name());
  set_num_threads(1);
  const index_t rows = 3, cols = 300, T = 4;  // 300: short last groups
  const auto W = random_matrix(rows, cols, 21);
  const auto X = random_matrix(T, cols, 22), dY = random_matrix(T, rows, 23);
  nn::FakeQuantLinear<F> fq(MatrixView<const float>(W.data(), rows, cols), nn::FakeQuantGradient::through_range);
  std::vector<float> Y(T * rows);
  fq.forward(MatrixView<const float>(X.data(), T, cols), MatrixView<float>(Y.data(), T, rows));
  auto params = fq.parameters();
  std::fill(params[0].grad, params[0].grad + params[0].size, 0.0f);
  fq.backward(MatrixView<const float>(X.data(), T, cols), MatrixView<const float>(dY.data(), T, rows), MatrixView<float>());
  const auto Wh = dequantized(fq);
  const index_t group = std::min<index_t>(F::group_size, cols);
  int extremes = 0;
  for (index_t r = 0; r < rows; ++r)
    for (index_t c0 = 0; c0 < cols; c0 += group) {
      const index_t n = std::min(group, cols - c0);
      std::vector<double> w(W.begin() + r * cols + c0, W.begin() + r * cols + c0 + n), G(n), d(n);
      for (index_t j = 0; j < n; ++j) {
        for (index_t t = 0; t < T; ++t) G[j] += double(dY[t * rows + r]) * X[t * cols + c0 + j];
        d[j] = double(Wh[r * cols + c0 + j]) - w[j];
      }
      auto L = [&](const std::vector<double>& v) {
        double l = 0;
        for (index_t j = 0; j < n; ++j) l += G[j] * (v[j] + d[j] * scale(v, w[j]) / scale(w, w[j]));
        return l;
      };
      const index_t imax = std::max_element(w.begin(), w.end()) - w.begin();
      const index_t imin = std::min_element(w.begin(), w.end()) - w.begin();
      for (index_t j : {imax, imin, n / 2}) {
        CAPTURE(r);
        CAPTURE(c0 + j);
        auto v = w;
        const double h = 1e-4;
        v[j] = w[j] + h;
        const double up = L(v);
        v[j] = w[j] - h;
        const double fd = (up - L(v)) / (2 * h);
        const double got = params[0].grad[r * cols + c0 + j];
        CHECK(got == doctest::Approx(fd).epsilon(2e-3).scale(1.0));
        if (j != n / 2) extremes += std::abs(got - G[j]) > 1e-3;  // the range term is there, not only G
      }
    }
  CHECK(extremes > 0);
}

}  // namespace

TEST_CASE("fake-quant gradient through the range: the extreme weights get the scale's share (finite differences of the paper's surrogate)") {
  // The scale as a function of the group's weights v, for the weight with value `wj` (NF3: its sign side).
  check_range_gradient<Uniform<2, 128>>([](const std::vector<double>& v, double) {
    return std::max(*std::max_element(v.begin(), v.end()), 0.0) - std::min(*std::min_element(v.begin(), v.end()), 0.0);
  });
  check_range_gradient<Uniform<3, 64>>([](const std::vector<double>& v, double) {
    return std::max(*std::max_element(v.begin(), v.end()), 0.0) - std::min(*std::min_element(v.begin(), v.end()), 0.0);
  });
  check_range_gradient<Uniform<4, 128, UniformMode::Symmetric>>([](const std::vector<double>& v, double) {
    double a = 0;
    for (double x : v) a = std::max(a, std::abs(x));
    return a;
  });
  check_range_gradient<NF3<128>>([](const std::vector<double>& v, double wj) {
    return wj >= 0 ? *std::max_element(v.begin(), v.end()) : -*std::min_element(v.begin(), v.end());
  });
}

TEST_CASE("CAKLD's beta is the teacher's mean top-1 probability on the probe batches, CE the data's cross-entropy") {
  set_num_threads(1);
  const auto cfg = train::byte_model_config(32, 64, 2, 4, 2, 16);
  Rng r1(5), r2(6);
  auto teacher = nn::Llama::random_init(cfg, r1, 0.3);
  auto student = nn::Llama::random_init(cfg, r2, 0.3);
  const auto data = train::synthetic_token_data(2, 1u << 13, 1u << 11);
  train::DistillOptions o;
  o.loss = train::DistillLoss::CAKLD;
  o.steps = 1;
  o.batch_size = 2;
  o.seq_len = 16;
  o.beta_batches = 3;
  o.eval_tokens = 64;
  o.schedule.peak_lr = 0.0f;
  const auto r = train::distill(student, teacher, data, o);
  // direct: the same probe batches, softmax by hand
  train::BatchSampler probe(data.train, 2, 16, Rng(o.seed).fork(2));
  std::vector<std::int32_t> in, tg;
  std::vector<float> logits(static_cast<std::size_t>(32 * cfg.vocab_size));
  double sum = 0;
  int rows = 0;
  for (int b = 0; b < 3; ++b) {
    probe.next(in, tg);
    teacher.forward(in.data(), 2, 16, logits.data());
    for (int i = 0; i < 32; ++i) {
      const float* l = logits.data() + static_cast<std::size_t>(i) * cfg.vocab_size;
      double mx = l[0], z = 0;
      for (int v = 1; v < cfg.vocab_size; ++v) mx = std::max(mx, double(l[v]));
      for (int v = 0; v < cfg.vocab_size; ++v) z += std::exp(double(l[v]) - mx);
      sum += 1.0 / z;
      ++rows;
    }
  }
  CHECK(r.beta == doctest::Approx(sum / rows).epsilon(1e-9));
  CHECK(r.beta > 0.0);
  CHECK(r.beta < 1.0);
  // CE through distill_loss is the cross-entropy on the targets; the teacher is not read.
  std::vector<float> s(logits.size());
  student.forward(in.data(), 2, 16, s.data());
  const MatrixView<const float> sv(s.data(), 32, cfg.vocab_size);
  CHECK(train::distill_loss(train::DistillLoss::CE, sv, MatrixView<const float>{}, 0.0, MatrixView<float>{}, 1.0, tg.data()) ==
        train::cross_entropy(sv, tg.data()));
  CHECK(train::parse_distill_loss("ce") == train::DistillLoss::CE);
  CHECK_THROWS_AS(train::parse_distill_loss("mse"), Error);
}

TEST_CASE("ce_weight mixes next-token cross-entropy into the divergence: w = 1 trains exactly as CE, 0.3 in between") {
  set_num_threads(1);
  const auto cfg = train::byte_model_config(32, 64, 2, 4, 2, 16);
  const auto data = train::synthetic_token_data(2, 1u << 13, 1u << 11);
  Rng r1(5);
  auto teacher = nn::Llama::random_init(cfg, r1, 0.3);
  auto run = [&](train::DistillLoss loss, double w) {
    Rng r2(6);
    auto student = nn::Llama::random_init(cfg, r2, 0.3);
    train::DistillOptions o;
    o.loss = loss;
    o.ce_weight = w;
    o.steps = 4;
    o.batch_size = 2;
    o.seq_len = 16;
    o.eval_tokens = 64;
    o.schedule.peak_lr = 1e-2f;
    const auto r = train::distill(student, teacher, data, o);
    std::vector<float> out(static_cast<std::size_t>(16 * cfg.vocab_size));
    student.forward(data.heldout.data(), 1, 16, out.data());
    return std::make_pair(r, out);
  };
  const auto [ce, ce_out] = run(train::DistillLoss::CE, 0.0);
  const auto [all_ce, all_ce_out] = run(train::DistillLoss::ForwardKL, 1.0);
  const auto [kl, kl_out] = run(train::DistillLoss::ForwardKL, 0.0);
  const auto [mix, mix_out] = run(train::DistillLoss::ForwardKL, 0.3);
  CHECK(all_ce.first_loss == ce.first_loss);  // the training loss: the same CE
  CHECK(all_ce_out == ce_out);                // the same updates, bit for bit
  CHECK(mix_out != kl_out);
  CHECK(mix_out != ce_out);
  // the first step's loss is the mix of the two losses at the same (starting) parameters and batch
  CHECK(mix.first_loss == doctest::Approx(0.7 * kl.first_loss + 0.3 * ce.first_loss).epsilon(1e-6));
  CHECK(mix.heldout_before == kl.heldout_before);  // the held-out measurement stays the divergence
  Rng r3(6);
  auto student = nn::Llama::random_init(cfg, r3, 0.3);
  train::DistillOptions bad;
  bad.loss = train::DistillLoss::CE;
  bad.ce_weight = 0.5;
  CHECK_THROWS_AS((void)train::distill(student, teacher, data, bad), Error);
  bad.loss = train::DistillLoss::ForwardKL;
  bad.ce_weight = 1.5;
  CHECK_THROWS_AS((void)train::distill(student, teacher, data, bad), Error);
}

TEST_CASE("best held-out selection keeps the best measured parameters and resumes to the same bits") {
  set_num_threads(1);
  const auto cfg = train::byte_model_config(32, 64, 2, 4, 2, 16);
  const auto data = train::synthetic_token_data(4, 1u << 13, 1u << 11);
  auto make = [&](std::uint64_t seed) {
    Rng rng(seed);
    return nn::Llama::random_init(cfg, rng, 0.3);
  };
  auto values = [](nn::Llama& m) {
    std::vector<float> v;
    for (auto& p : m.parameters()) v.insert(v.end(), p.value, p.value + p.size);
    return v;
  };
  auto teacher = make(5);
  train::DistillOptions o;
  o.loss = train::DistillLoss::ForwardKL;
  o.steps = 24;
  o.batch_size = 2;
  o.seq_len = 16;
  o.schedule.peak_lr = 0.05f;  // large enough that later steps can be worse than earlier ones
  o.schedule.kind = train::ScheduleKind::Constant;
  o.eval_every = 4;
  o.eval_tokens = 256;
  o.accumulation = 2;
  auto full = make(9);
  const auto r = train::distill(full, teacher, data, o);
  REQUIRE(r.heldout_curve.size() == 7);  // steps 0, 4, ..., 24
  double best = r.heldout_curve[0].second;
  std::int64_t best_step = 0;
  for (const auto& [step, v] : r.heldout_curve)
    if (v < best) {
      best = v;
      best_step = step;
    }
  CHECK(r.best_step == best_step);
  CHECK(r.heldout_after == best);
  CHECK(train::heldout_divergence(full, teacher, data.heldout, o.loss, 0.0, 16, 256) == doctest::Approx(best).epsilon(1e-12));

  const auto ckpt = fs::temp_directory_path() / ("lowbit_bd_best_" + std::to_string(::getpid()) + ".ckpt");
  fs::remove(ckpt);
  fs::remove(ckpt.string() + ".best");
  o.checkpoint = ckpt;
  o.checkpoint_every = 8;
  {
    auto killed = make(9);
    auto stop = o;
    stop.on_step = [](std::int64_t step, double) {
      if (step == 19) throw std::runtime_error("interrupted");
    };
    CHECK_THROWS_AS(train::distill(killed, teacher, data, stop), std::runtime_error);
  }
  CHECK(fs::exists(ckpt.string() + ".best"));
  auto resumed = make(9);
  const auto again = train::distill(resumed, teacher, data, o);
  CHECK(again.resumed_from_step == 16);
  CHECK(again.best_step == r.best_step);
  CHECK(values(resumed) == values(full));
  fs::remove(ckpt);
  fs::remove(ckpt.string() + ".best");
}

TEST_CASE("teacher data: source shares, UTF-8 prompt cuts, option checks") {
  CHECK(train::proportional_counts({3, 1}, 10) == std::vector<int>{8, 2});
  CHECK(train::proportional_counts({1, 1, 1}, 10) == std::vector<int>{4, 3, 3});
  CHECK(train::proportional_counts({1}, 7) == std::vector<int>{7});
  CHECK(train::utf8_prefix("ab\xC3\xA9z", 3) == "ab");  // é is two bytes: never cut in half
  CHECK(train::utf8_prefix("ab\xC3\xA9z", 4) == "ab\xC3\xA9");
  const auto s = train::parse_teacher_source("data/c4.jsonl:2.5");
  CHECK(s.path == "data/c4.jsonl");
  CHECK(s.weight == 2.5);
  CHECK(train::parse_teacher_source("C:/x.txt").path == "C:/x.txt");
  CHECK_THROWS_AS(train::parse_teacher_source("x.txt:-1"), Error);
  train::TeacherDataOptions o;
  o.min_paragraph_chars = 10;
  o.prompt_chars = 20;
  CHECK_THROWS_AS(train::check(o), Error);
  // a continuation cut inside a 4-byte character (SmolLM2 chat data hit this: "incomplete UTF-8 string")
  train::TeacherSample cut;
  cut.prompt = "p";
  cut.prompt_ids = {5};
  cut.continuation = "ok \xF0\x9F";
  cut.continuation_ids = {7, 8};
  const auto line = train::sample_line(cut);
  const auto back = nlohmann::json::parse(line);
  CHECK(back["continuation"] == "ok \xEF\xBF\xBD");  // the cut character becomes one U+FFFD
  CHECK(back["continuation_ids"] == nlohmann::json({7, 8}));
}

namespace {

bool have_stories() {
  return !test::shared_file("models/stories260K.bin").empty() && !test::shared_file("models/tok512.bin").empty() &&
         !test::shared_file("text/tinystories_valid_prefix.txt").empty() &&
         !test::shared_file("text/tinystories_v2_valid_first100.txt").empty();
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct Stories {
  fs::path model_path = test::shared_file("models/stories260K.bin");
  io::Llama2cTokenizer tok{test::shared_file("models/tok512.bin").string()};
};

train::TeacherHeader header_for(const Stories& s, const train::TeacherDataOptions& o) {
  train::TeacherHeader h;
  h.options = o.to_json();
  h.model = s.model_path.string();
  h.model_fingerprint = "test";
  h.tokenizer = s.tok.describe();
  h.vocab_size = 512;
  return h;
}

train::TeacherDataOptions small_teacher_options() {
  train::TeacherDataOptions o;
  o.samples = 12;
  o.max_new_tokens = 60;
  o.prompt_chars = 48;
  o.min_paragraph_chars = 100;
  o.quiet = true;
  return o;
}

std::vector<train::TeacherPrompt> small_prompts(const train::TeacherDataOptions& o) {
  return train::draw_teacher_prompts({{test::shared_file("text/tinystories_v2_valid_first100.txt").string(), 1.0}}, o);
}

}  // namespace

TEST_CASE("teacher data on stories260K: deterministic, resumes to the same bytes after a cut line, bad files refused") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories texts are missing from shared/data");
  set_num_threads(1);
  Stories s;
  nn::Llama model(io::load_llama2c(s.model_path));
  const auto o = small_teacher_options();
  const auto prompts = small_prompts(o);
  REQUIRE(prompts.size() == 12);
  for (const auto& p : prompts) CHECK(p.text.size() <= 48);
  const auto base = fs::temp_directory_path() / ("lowbit_test_td_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base);
  const auto header = header_for(s, o);
  const auto r = train::generate_teacher_data(model, s.tok, prompts, header, o, base / "a.jsonl");
  CHECK(r.written == 12);
  CHECK(r.new_tokens > 12 * 10);
  const auto full = read_bytes(base / "a.jsonl");
  const auto data = train::read_teacher_data((base / "a.jsonl").string());
  REQUIRE(data.samples.size() == 12);
  for (const auto& smp : data.samples) {
    CHECK(smp.prompt_ids.front() == s.tok.bos_id());
    CHECK(smp.continuation_ids.size() <= 60u);
    CHECK(s.tok.decode(smp.continuation_ids) == smp.continuation);
  }
  // A run killed mid-line: 5 complete samples and half of the sixth. The rerun keeps the 5, drops the cut
  // line, and ends with the same bytes.
  std::size_t cut = 0;
  for (int line = 0; line < 6; ++line) cut = full.find('\n', cut) + 1;
  const std::string partial = full.substr(0, cut) + full.substr(cut, 40);
  std::ofstream(base / "b.jsonl", std::ios::binary) << partial;
  const auto r2 = train::generate_teacher_data(model, s.tok, prompts, header, o, base / "b.jsonl");
  CHECK(r2.kept == 5);
  CHECK(r2.written == 7);
  CHECK(read_bytes(base / "b.jsonl") == full);
  // Another run's options: refused, the file untouched.
  auto other = o;
  other.temperature = 1.0f;
  CHECK_THROWS_WITH_AS(train::generate_teacher_data(model, s.tok, prompts, header_for(s, other), other, base / "b.jsonl"),
                       doctest::Contains("another run"), Error);
  CHECK(read_bytes(base / "b.jsonl") == full);
  // Malformed files name the line.
  auto bad = [&](const std::string& text) {
    std::ofstream(base / "bad.jsonl", std::ios::binary) << text;
    try {
      train::read_teacher_data((base / "bad.jsonl").string());
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  const std::string head = full.substr(0, full.find('\n') + 1);
  CHECK(bad("{\"text\": \"hello\"}\n").find("not a lowbit teacher-data file") != std::string::npos);
  std::string big_id = full.substr(0, cut);
  const auto at = big_id.find("\"prompt_ids\":[1,");
  REQUIRE(at != std::string::npos);
  big_id.replace(at, 16, "\"prompt_ids\":[1,99999,");
  CHECK(bad(big_id).find("outside the vocabulary") != std::string::npos);
  CHECK(bad(big_id).find(":") != std::string::npos);
  CHECK(bad(head + "[1,2]\n").find(":2: a line must be a JSON object") != std::string::npos);
  // Token data: a vocabulary or tokenizer that differs is refused.
  CHECK_THROWS_WITH_AS(train::teacher_token_data(data, "a.jsonl", 32000, "", 0.2), doctest::Contains("vocabulary"), Error);
  CHECK_THROWS_WITH_AS(train::teacher_token_data(data, "a.jsonl", 512, "some other tokenizer", 0.2),
                       doctest::Contains("tokenized by"), Error);
  const auto td = train::teacher_token_data(data, "a.jsonl", 512, s.tok.describe(), 0.25);
  std::size_t total = 0;
  for (const auto& smp : data.samples) total += smp.prompt_ids.size() + smp.continuation_ids.size();
  CHECK(td.train.size() + td.heldout.size() == total);
  std::size_t held = 0;
  for (std::size_t i = 9; i < 12; ++i) held += data.samples[i].prompt_ids.size() + data.samples[i].continuation_ids.size();
  CHECK(td.heldout.size() == held);
  fs::remove_all(base);
}

namespace {

const char* kKillEnv = "LOWBIT_TEST_BD_KILL_RUN_DIR";

calib::BitDistillerOptions small_qat() {
  calib::BitDistillerOptions o;
  o.steps = 30;
  o.batch = 4;
  o.seq_len = 64;
  o.lr = 1e-3f;
  o.warmup = 3;
  o.eval_every = 10;
  o.checkpoint_every = 10;
  return o;
}

// AutoClip start, then QAT on teacher data; writes `out`, returns the QAT report.
nlohmann::json qat_to_file(const fs::path& run_dir, const fs::path& out, std::int64_t kill_at_step = 0) {
  Stories s;
  calib::CalibrationConfig cfg;
  cfg.method = "bitdistiller";
  cfg.format = "uniform:2:32";
  cfg.nsamples = 8;
  cfg.seqlen = 64;
  cfg.seed = 3;
  cfg.batch_sequences = 4;
  cfg.quiet = true;
  auto o = small_qat();
  nn::Llama model(io::load_llama2c(s.model_path)), teacher(io::load_llama2c(s.model_path));
  const auto text = eval::read_file_bytes(test::shared_file("text/tinystories_v2_valid_first100.txt").string());
  const auto tokens = calib::draw_calibration_tokens({text}, s.tok, cfg.nsamples, cfg.seqlen, cfg.seed);
  calib::calibrate_model(model, tokens, cfg, calib::QuantizationPlan(calib::bitdistiller_method(o), cfg.format),
                         {{"bitdistiller", o.to_json()}}, run_dir.string());
  const auto to = small_teacher_options();
  train::generate_teacher_data(teacher, s.tok, small_prompts(to), header_for(s, to), to, run_dir / "teacher.jsonl");
  const auto data = train::teacher_token_data(train::read_teacher_data((run_dir / "teacher.jsonl").string()), "teacher",
                                              512, s.tok.describe(), 0.25);
  std::function<void(std::int64_t, double)> on_step;
  if (kill_at_step > 0)
    on_step = [kill_at_step](std::int64_t step, double) {
      if (step == kill_at_step) ::raise(SIGKILL);
    };
  auto report = calib::bitdistiller_train(model, teacher, data, o, true, run_dir.string(), on_step);
  io::write_quantized_model(out, model, cfg.to_json(), s.model_path.string());
  return report;
}

double stories_ppl(const fs::path& file) {
  Stories s;
  auto model = io::load_quantized_model(file);
  const auto text = eval::read_file_bytes(test::shared_file("text/tinystories_valid_prefix.txt").string()).substr(0, 60000);
  auto preset = eval::perplexity_preset("gptq", 256);
  auto tokens = eval::protocol_tokens({text}, s.tok, preset);
  auto lm = eval::wrap_model(model, "q");
  eval::PerplexityOptions po;
  po.quiet = true;
  return eval::perplexity(lm, tokens, preset, s.tok.bos_id(), po).ppl;
}

}  // namespace

TEST_CASE("teacher data in chat mode (SmolLM2): the prompt is the ChatML user turn, the end-of-turn token stops the answer") {
  const auto gguf = test::smollm2_gguf();
  if (gguf.empty()) LOWBIT_SKIP("SmolLM2-135M-Instruct is not in the cache (tools/fetch_smollm2.sh)");
  set_num_threads(1);
  nn::Llama model = io::open_model(gguf.string());
  const auto tok = eval::load_any_tokenizer(gguf.string(), "");
  train::TeacherDataOptions o;
  o.samples = 2;
  o.max_new_tokens = 48;
  o.prompt_chars = 20;
  o.min_paragraph_chars = 20;
  o.temperature = 0;  // greedy, so the answer below is fixed
  o.chat = true;
  o.chat_template = eval::chat_template_of(gguf);
  CHECK(o.to_json().at("chat") == true);
  train::TeacherDataOptions plain = o;
  plain.chat = false;
  CHECK_FALSE(plain.to_json().contains("chat"));  // plain runs keep their old header
  const std::vector<train::TeacherPrompt> prompts = {{"q", "What is the capital of France?"}, {"q", "Name three colors."}};
  const auto base = fs::temp_directory_path() / ("lowbit_test_tdchat_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base);
  train::TeacherHeader h;
  h.options = o.to_json();
  h.model = gguf.string();
  h.model_fingerprint = "test";
  h.tokenizer = tok->describe();
  h.vocab_size = model.config().vocab_size;
  (void)train::generate_teacher_data(model, *tok, prompts, h, o, base / "chat.jsonl");
  const auto data = train::read_teacher_data((base / "chat.jsonl").string());
  REQUIRE(data.samples.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    const auto& smp = data.samples[i];
    const auto rendered = eval::chat_prompt(*tok, o.chat_template, prompts[i].text);
    CHECK(smp.prompt_ids == rendered.tokens);
    CHECK(smp.prompt == rendered.text);
    CHECK(smp.prompt.find("<|im_start|>user\n" + prompts[i].text + "<|im_end|>") != std::string::npos);
    REQUIRE_FALSE(smp.continuation_ids.empty());
    // the answer ends at the end-of-turn token (kept, as decode keeps a stop token) or at the length cap
    const auto eot = std::find(smp.continuation_ids.begin(), smp.continuation_ids.end(), rendered.end_of_turn);
    CHECK((eot == smp.continuation_ids.end() ? smp.continuation_ids.size() == 48u : eot + 1 == smp.continuation_ids.end()));
  }
  // the greedy answer to the first question
  CHECK(data.samples[0].continuation.find("Paris") != std::string::npos);
  fs::remove_all(base);
}

TEST_CASE("bitdistiller child: QAT run killed mid-training") {
  const char* run_dir = std::getenv(kKillEnv);
  if (!run_dir) LOWBIT_SKIP("helper process for the BitDistiller SIGKILL resume test; runs only when spawned by it");
  set_num_threads(1);
  qat_to_file(run_dir, fs::path(run_dir) / "never_written.safetensors", 17);
}

TEST_CASE("bitdistiller on stories260K: QAT beats its AutoClip start, packs to uniform:2:32, resumes byte-identically after SIGKILL") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories texts are missing from shared/data");
  set_num_threads(1);
  const auto base = fs::temp_directory_path() / ("lowbit_test_bd_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base / "full");
  const auto report = qat_to_file(base / "full", base / "full.safetensors");
  MESSAGE("QAT: " << report.dump());
  CHECK(report["beta"].get<double>() > 0.0);
  CHECK(report["heldout_after"].get<double>() < 0.8 * report["heldout_before"].get<double>());
  auto model = io::load_quantized_model(base / "full.safetensors");
  CHECK(model.linear(0, nn::LinearRole::Q).format() == "uniform:2:32");
  CHECK(model.linear(4, nn::LinearRole::Down).format() == "uniform:2:32");

  // The start alone (0 steps) is the AutoClip result: QAT must beat it.
  {
    Stories s;
    calib::CalibrationConfig cfg;
    cfg.nsamples = 8;
    cfg.seqlen = 64;
    cfg.seed = 3;
    cfg.batch_sequences = 4;
    cfg.quiet = true;
    nn::Llama start(io::load_llama2c(s.model_path));
    const auto text = eval::read_file_bytes(test::shared_file("text/tinystories_v2_valid_first100.txt").string());
    const auto tokens = calib::draw_calibration_tokens({text}, s.tok, cfg.nsamples, cfg.seqlen, cfg.seed);
    calib::calibrate_model(start, tokens, cfg, calib::QuantizationPlan(calib::group_method("autoclip"), "uniform:2:32"), {},
                           "");
    io::write_quantized_model(base / "autoclip.safetensors", start, cfg.to_json(), s.model_path.string());
  }
  const double ppl_start = stories_ppl(base / "autoclip.safetensors"), ppl_qat = stories_ppl(base / "full.safetensors");
  MESSAGE("stories260K uniform:2:32 perplexity: AutoClip " << ppl_start << ", QAT " << ppl_qat);
  CHECK(ppl_qat < 0.7 * ppl_start);

  fs::create_directories(base / "killed");
  const int status =
      test::run_test_case_in_child("bitdistiller child: QAT run killed mid-training", std::string(kKillEnv) + "=" + (base / "killed").string());
  REQUIRE(status != -1);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  bool has_ckpt = false;
  for (const auto& e : fs::directory_iterator(base / "killed")) has_ckpt = has_ckpt || e.path().extension() == ".ckpt";
  CHECK(has_ckpt);
  const auto again = qat_to_file(base / "killed", base / "resumed.safetensors");
  CHECK(again["resumed"].get<bool>());
  CHECK(again["resumed_from_step"].get<long long>() == 10);
  const auto a = read_bytes(base / "full.safetensors"), b = read_bytes(base / "resumed.safetensors");
  CHECK(a.size() > 10000);
  CHECK(a == b);
  fs::remove_all(base);
}
