// Block-level training and end-to-end distillation: a block whose norm gains were perturbed recovers its
// FP outputs when only the gains train (and nothing else moves), keep-best restores the initial
// parameters when training only makes things worse, runs are deterministic, and distilling a perturbed
// student towards its teacher lowers the held-out KL / CAKLD, and an interrupted distillation resumes
// from its checkpoint to the same bits as an uninterrupted one.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include <lowbit/train/block_trainer.hpp>
#include <lowbit/train/distill.hpp>
#include <lowbit/train/pretrain.hpp>

using namespace lowbit;
using namespace lowbit::train;

namespace {

nn::ModelConfig tiny_config() { return byte_model_config(32, 64, 2, 4, 2, 16); }

nn::Llama make_model(std::uint64_t seed, double std) {
  set_num_threads(1);
  Rng rng(seed);
  return nn::Llama::random_init(tiny_config(), rng, std);
}

struct BlockProblem {
  std::vector<float> inputs, targets;
  int N = 12, T = 16;
};

// Inputs: embeddings of synthetic text; targets: the block with gains g ← g·(1 + 0.3·noise).
BlockProblem make_problem(nn::Llama& model, int layer) {
  BlockProblem p;
  const auto data = synthetic_token_data(1, 1u << 12, 1u << 10);
  const index_t per = static_cast<index_t>(p.T) * model.config().dim;
  p.inputs.resize(static_cast<std::size_t>(p.N * per));
  for (int s = 0; s < p.N; ++s) model.embed(data.train.data() + s * p.T, p.T, p.inputs.data() + s * per);
  for (auto& x : p.inputs) x *= 20.0f;  // embeddings have std 0.02·std-scale; give the block real inputs
  auto saved_attn = model.attention_norm(layer), saved_ffn = model.ffn_norm(layer);
  Rng rng(77);
  for (auto& g : model.attention_norm(layer)) g *= static_cast<float>(1.0 + 0.3 * rng.normal());
  for (auto& g : model.ffn_norm(layer)) g *= static_cast<float>(1.0 + 0.3 * rng.normal());
  p.targets = p.inputs;
  model.block_forward(layer, p.targets.data(), p.N, p.T);
  model.attention_norm(layer) = saved_attn;
  model.ffn_norm(layer) = saved_ffn;
  return p;
}

}  // namespace

TEST_CASE("block training of norm gains recovers perturbed block outputs, touching nothing else") {
  auto model = make_model(3, 0.2);
  const int layer = 1;
  auto p = make_problem(model, layer);
  std::vector<std::vector<float>> before;
  for (auto& prm : model.parameters()) before.emplace_back(prm.value, prm.value + prm.size);

  BlockTrainOptions o;
  o.epochs = 40;
  o.batch_sequences = 2;
  o.heldout_sequences = 2;
  o.patience = 5;
  o.adam.lr = 1e-2f;
  o.trainable = names_containing({"norm"});
  const auto r = train_block(model, layer, p.inputs.data(), p.targets.data(), p.N, p.T, o);
  MESSAGE("block MSE ", r.initial_train_mse, " -> ", r.final_train_mse, " (held-out ", r.initial_heldout_mse, " -> ",
          r.best_heldout_mse, ", ", r.epochs_run, " epochs)");
  CHECK(r.trained_values == 64u);
  CHECK(r.final_train_mse < 0.05 * r.initial_train_mse);
  CHECK(r.best_heldout_mse < 0.05 * r.initial_heldout_mse);
  CHECK(r.best_epoch > 0);
  // only layer 1's norm gains moved
  auto after = model.parameters();
  for (std::size_t i = 0; i < after.size(); ++i) {
    const bool moved = std::vector<float>(after[i].value, after[i].value + after[i].size) != before[i];
    CAPTURE(after[i].name);
    CHECK(moved == (after[i].name.rfind("layers.1.", 0) == 0 && after[i].name.find("norm") != std::string::npos));
  }

  // Deterministic: the same run from the same start gives the same gains.
  auto again = make_model(3, 0.2);
  train_block(again, layer, p.inputs.data(), p.targets.data(), p.N, p.T, o);
  CHECK(again.ffn_norm(layer) == model.ffn_norm(layer));
}

TEST_CASE("keep-best returns the initial parameters when every epoch is worse") {
  auto model = make_model(4, 0.2);
  auto p = make_problem(model, 0);
  // targets equal to the current block's outputs: the initial MSE is 0 and any step can only hurt
  p.targets = p.inputs;
  model.block_forward(0, p.targets.data(), p.N, p.T);
  const auto initial = model.linear(0, nn::LinearRole::Down).parameters()[0];
  const std::vector<float> w0(initial.value, initial.value + initial.size);
  BlockTrainOptions o;
  o.epochs = 3;
  o.adam.lr = 1e-2f;
  o.patience = 2;
  const auto r = train_block(model, 0, p.inputs.data(), p.targets.data(), p.N, p.T, o);
  CHECK(r.best_epoch == 0);
  CHECK(r.epochs_run == 2);  // stopped by patience
  CHECK(r.final_train_mse == doctest::Approx(0.0).epsilon(1e-12));
  CHECK(std::vector<float>(initial.value, initial.value + initial.size) == w0);
}

namespace {
// The teacher make_model(5, 0.3) with every non-norm weight perturbed by N(0, 0.1²) noise.
nn::Llama perturbed_student() {
  auto student = make_model(5, 0.3);
  Rng noise(9);
  for (auto& prm : student.parameters())
    if (prm.name.find("norm") == std::string::npos)
      for (index_t i = 0; i < prm.size; ++i) prm.value[i] += static_cast<float>(0.1 * noise.normal());
  return student;
}
}  // namespace

TEST_CASE("distillation lowers the held-out divergence to the teacher (forward KL and CAKLD)") {
  const auto data = synthetic_token_data(2, 1u << 14, 1u << 12);
  for (auto kind : {DistillLoss::ForwardKL, DistillLoss::CAKLD}) {
    CAPTURE(static_cast<int>(kind));
    auto teacher = make_model(5, 0.3);
    auto student = perturbed_student();
    DistillOptions o;
    o.loss = kind;
    o.steps = 40;
    o.batch_size = 4;
    o.seq_len = 16;
    o.schedule.peak_lr = 3e-3f;
    o.eval_tokens = 1024;
    const auto r = distill(student, teacher, data, o);
    MESSAGE("beta ", r.beta, " held-out ", r.heldout_before, " -> ", r.heldout_after);
    if (kind == DistillLoss::CAKLD) {
      CHECK(r.beta > 1.0 / 257);
      CHECK(r.beta < 1.0);
    }
    CHECK(r.heldout_after < 0.5 * r.heldout_before);
    CHECK(r.last_loss < r.first_loss);
  }
}

TEST_CASE("distillation interrupted after a checkpoint resumes to the same bits, other options are refused") {
  const auto data = synthetic_token_data(4, 1u << 13, 1u << 11);
  auto values = [](nn::Llama& m) {
    std::vector<float> v;
    for (auto& prm : m.parameters()) v.insert(v.end(), prm.value, prm.value + prm.size);
    return v;
  };
  DistillOptions o;
  o.loss = DistillLoss::ForwardKL;
  o.steps = 30;
  o.batch_size = 2;
  o.seq_len = 16;
  o.schedule.peak_lr = 3e-3f;
  o.eval_tokens = 256;
  o.trainable = names_containing({"attention", "norm"});
  auto teacher = make_model(5, 0.3);

  auto uninterrupted = perturbed_student();
  const auto full = distill(uninterrupted, teacher, data, o);

  const auto ckpt = std::filesystem::temp_directory_path() / ("lowbit_distill_" + std::to_string(::getpid()) + ".ckpt");
  std::filesystem::remove(ckpt);
  o.checkpoint = ckpt;
  o.checkpoint_every = 10;
  {
    auto killed = perturbed_student();
    auto stop = o;
    stop.on_step = [](std::int64_t step, double) {
      if (step == 15) throw std::runtime_error("interrupted");
    };
    CHECK_THROWS_AS(distill(killed, teacher, data, stop), std::runtime_error);
  }
  REQUIRE(std::filesystem::exists(ckpt));
  CHECK(read_checkpoint(ckpt).state.step == 10);

  auto resumed = perturbed_student();
  const auto again = distill(resumed, teacher, data, o);
  CHECK(again.resumed);
  CHECK(again.resumed_from_step == 10);
  CHECK(again.steps == 30);
  CHECK(values(resumed) == values(uninterrupted));
  CHECK(again.heldout_after == full.heldout_after);

  // The finished checkpoint belongs to this run only: other options are refused, nothing is changed.
  auto other = perturbed_student();
  const auto before = values(other);
  o.schedule.peak_lr = 1e-3f;
  CHECK_THROWS_AS(distill(other, teacher, data, o), Error);
  CHECK(values(other) == before);
  std::filesystem::remove(ckpt);
}
