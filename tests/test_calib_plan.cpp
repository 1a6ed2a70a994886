// Quantization plans (calib/method.hpp) and the pipeline's per-linear methods and formats: rule text
// parsing, first-match-wins selection and the errors a user sees; calibration statistics taken on a
// layer's effective input when it transforms its input; and block fine-tuning on a block that mixes
// format families (the trainable forms train, the others stay exactly as calibrated). The CLI side of
// mixed plans (three formats, SIGKILL resume) is tests/cli/mixed_plan.sh.
#include <doctest/doctest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <lowbit/calib/additive_pipeline.hpp>
#include <lowbit/calib/group_methods.hpp>
#include <lowbit/calib/pipeline.hpp>
#include <lowbit/core/rng.hpp>
#include <lowbit/nn/dense_linear.hpp>
#include <lowbit/train/pretrain.hpp>

#include "test_util.hpp"

using namespace lowbit;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

nn::Llama tiny_model(std::uint64_t seed, double std = 0.02) {
  Rng rng(seed);
  return nn::Llama::random_init(train::byte_model_config(64, 128, 2, 4, 2, 64), rng, std);
}

std::vector<std::int32_t> random_tokens(int n, int vocab, std::uint64_t seed) {
  Rng rng(seed);
  std::vector<std::int32_t> t(static_cast<std::size_t>(n));
  for (auto& v : t) v = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(vocab)));
  return t;
}

calib::CalibrationConfig tiny_config() {
  calib::CalibrationConfig cfg;
  cfg.nsamples = 4;
  cfg.seqlen = 32;
  cfg.seed = 1;
  cfg.quiet = true;
  return cfg;
}

std::vector<std::string> stored_bytes(const nn::Linear& linear) {
  std::vector<std::string> out;
  for (const auto& t : linear.stored_tensors()) out.emplace_back(static_cast<const char*>(t.data), t.bytes);
  return out;
}

// A dense layer that doubles its input before the product: its effective input is 2X.
class InputDoubler final : public nn::Linear {
 public:
  explicit InputDoubler(std::unique_ptr<nn::Linear> inner) : inner_(std::move(inner)) {}
  index_t in_features() const override { return inner_->in_features(); }
  index_t out_features() const override { return inner_->out_features(); }
  void forward(MatrixView<const float> X, MatrixView<float> Y) const override {
    std::vector<float> x2(static_cast<std::size_t>(X.rows() * X.cols()));
    effective_input(X, MatrixView<float>(x2.data(), X.rows(), X.cols()));
    inner_->forward(MatrixView<const float>(x2.data(), X.rows(), X.cols()), Y);
  }
  void backward(MatrixView<const float>, MatrixView<const float>, MatrixView<float>) override {}
  void dequantize(MatrixView<float> W) const override { inner_->dequantize(W); }
  std::size_t bytes() const override { return inner_->bytes(); }
  std::string format() const override { return "doubled " + inner_->format(); }
  bool transforms_input() const override { return true; }
  void effective_input(MatrixView<const float> X, MatrixView<float> out) const override {
    for (index_t r = 0; r < X.rows(); ++r)
      for (index_t c = 0; c < X.cols(); ++c) out(r, c) = 2.0f * X(r, c);
  }

 private:
  std::unique_ptr<nn::Linear> inner_;
};

}  // namespace

TEST_CASE("plan rules: REGEX=METHOD:FORMAT text, first match wins, and errors name the problem") {
  auto r = calib::parse_rule_text("feed_forward\\.w2=gptq:uniform:4:128");
  CHECK(r.pattern == "feed_forward\\.w2");
  CHECK(r.method == "gptq");
  CHECK(r.format == "uniform:4:128");
  r = calib::parse_rule_text("layers\\.(?=0\\.)=rtn:nf3:64");  // '=' inside the regex: the last one splits
  CHECK(r.pattern == "layers\\.(?=0\\.)");
  CHECK(r.format == "nf3:64");
  CHECK_THROWS_AS(calib::parse_rule_text("gptq:uniform:4:128"), Error);
  CHECK_THROWS_AS(calib::parse_rule_text(".*=gptq"), Error);

  calib::QuantizationPlan plan;
  plan.add("feed_forward\\.w2", calib::group_method("gptq"), "uniform:4:128");
  plan.add("attention", calib::group_method("rtn"), "nf3:64");
  plan.add(".*", calib::aqlm_method({}), "additive:2:8:8");
  CHECK(plan.rule_for("layers.3.feed_forward.w2").format == "uniform:4:128");
  CHECK(plan.rule_for("layers.3.attention.wq").method.name == "rtn");
  CHECK(plan.rule_for("layers.3.feed_forward.w1").method.name == "aqlm");
  CHECK(plan.to_json().size() == 3);

  calib::QuantizationPlan partial;
  partial.add("attention", calib::group_method("rtn"), "uniform:4:64");
  CHECK(error_of([&] { partial.rule_for("layers.0.feed_forward.w1"); }).find("no tensor rule matches 'layers.0.feed_forward.w1'") !=
        std::string::npos);
  CHECK(error_of([&] { plan.add("(", calib::group_method("rtn"), "uniform:4:64"); }).find("not a valid regular") !=
        std::string::npos);
  CHECK(error_of([&] { plan.add(".*", calib::group_method("rtn"), "uniform:5:64"); }).find("unknown format 'uniform:5:64'") !=
        std::string::npos);
  const auto e = error_of([&] { plan.add(".*", calib::group_method("gptq"), "additive:2:8:8"); });
  CHECK(e.find("method 'gptq' cannot produce format 'additive:2:8:8'") != std::string::npos);
  CHECK(e.find("uniform:4:128") != std::string::npos);  // lists what it can produce
  CHECK(error_of([&] { plan.add(".*", calib::aqlm_method({}), "nf3:64"); }).find("cannot produce") != std::string::npos);
}

TEST_CASE("pipeline: statistics are taken on a layer's effective input when it transforms its input") {
  nn::Llama model = tiny_model(5);
  auto& q = model.linear(0, nn::LinearRole::Q);
  std::vector<float> w(static_cast<std::size_t>(q.out_features() * q.in_features()));
  q.dequantize(MatrixView<float>(w.data(), q.out_features(), q.in_features()));
  model.set_linear(0, nn::LinearRole::Q,
                   std::make_unique<InputDoubler>(std::make_unique<nn::DenseLinear>(q.out_features(), q.in_features(), w)));
  // A probe method: records each linear's Hessian, then quantizes with RTN.
  std::map<std::string, Eigen::MatrixXd> seen;
  calib::Method probe = calib::group_method("rtn");
  probe.name = "probe";
  probe.needs_hessian = true;
  const auto rtn = probe.run;
  probe.run = [&seen, rtn](const calib::LinearJob& job) {
    seen[job.name] = job.hessian->sum();
    return rtn(job);
  };
  const auto cfg = tiny_config();
  calib::calibrate_model(model, random_tokens(cfg.nsamples * cfg.seqlen, 256, 7), cfg,
                         calib::QuantizationPlan(probe, "uniform:4:64"));
  const auto& hq = seen.at("layers.0.attention.wq");
  const auto& hk = seen.at("layers.0.attention.wk");  // reads the same block input, untransformed
  REQUIRE(hq.rows() == hk.rows());
  CHECK(hk.norm() > 0);
  CHECK((hq - 4.0 * hk).norm() == 0.0);  // (2X)ᵀ(2X) = 4·XᵀX, exactly (doubling is exact in floating point)
  CHECK((seen.at("layers.0.attention.wv") - hk).norm() == 0.0);
}

TEST_CASE("pipeline: block fine-tuning on a block that mixes format families trains only the trainable forms") {
  auto cfg = tiny_config();
  cfg.nsamples = 16;
  const auto tokens = random_tokens(cfg.nsamples * cfg.seqlen, 256, 9);
  calib::AqlmOptions aqlm;
  aqlm.calib.kmeans.iterations = 5;
  aqlm.calib.max_epochs = 3;
  calib::QuantizationPlan plan;
  plan.add("feed_forward", calib::group_method("rtn"), "uniform:4:64");
  plan.add(".*", calib::aqlm_method(aqlm), "additive:1:8:8");

  nn::Llama plain = tiny_model(11, 0.2);
  calib::calibrate_model(plain, tokens, cfg, plan);
  aqlm.finetune_epochs = 2;
  aqlm.finetune_batch = 1;
  aqlm.finetune_lr = 1e-3f;
  nn::Llama tuned = tiny_model(11, 0.2);
  const auto report = calib::calibrate_model(tuned, tokens, cfg, plan, nlohmann::json::object(), "", calib::aqlm_hooks(aqlm));
  const auto& ft = report.per_linear.at("layers.0.finetune");
  CHECK(ft.at("epochs_run").get<int>() >= 1);
  CHECK(ft.at("best_heldout_mse").get<double>() < ft.at("initial_heldout_mse").get<double>());
  for (int l = 0; l < 2; ++l)
    for (auto role : nn::kAllLinearRoles) {
      INFO("layer " << l << " " << nn::linear_role_name(role));
      const auto& a = plain.linear(l, role);
      const auto& b = tuned.linear(l, role);
      CHECK(a.format() == b.format());
      if (a.format() == "uniform:4:64")
        CHECK(stored_bytes(a) == stored_bytes(b));  // no trainable form: frozen, exactly as calibrated
      else
        CHECK(b.trainable_form() != nullptr);  // back in its packed form after fine-tuning
    }
  // The additive layers of block 0 were fine-tuned (their codebooks or scales moved).
  bool moved = false;
  for (auto role : {nn::LinearRole::Q, nn::LinearRole::K, nn::LinearRole::V, nn::LinearRole::O})
    moved = moved || stored_bytes(plain.linear(0, role)) != stored_bytes(tuned.linear(0, role));
  CHECK(moved);
}
