// UniQuanF through the calibration pipeline on stories260K (seconds): the unified initialization and
// block-wise reconstruction with the QDrop input mix (the FP activation stream kept beside the quantized
// one) lower every block's held-out output error and fold into plain BCQ layers; a run killed with
// SIGKILL mid-block resumes from its checkpoints (the FP stream included) and writes a file
// byte-identical to an uninterrupted run.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "lowbit/calib/pipeline.hpp"
#include "lowbit/calib/uniquanf.hpp"
#include "lowbit/eval/text_input.hpp"
#include "lowbit/io/llama2c.hpp"
#include "lowbit/io/quantized_model.hpp"
#include "lowbit/io/tokenizer_llama2c.hpp"
#include "test_spawn.hpp"
#include "test_util.hpp"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

const char* kKillEnv = "LOWBIT_TEST_UQ_KILL_RUN_DIR";

calib::UniQuanFOptions small_uniquanf() {
  calib::UniQuanFOptions o;
  o.fit.rounds = 4;
  o.epochs = 2;
  o.batch_sequences = 2;
  o.u_lr = 5e-3f;
  o.b_lr = 5e-4f;
  return o;
}

nlohmann::json run_to_file(const fs::path& run_dir, const fs::path& out, calib::PipelineHooks hooks = {}) {
  const auto model_path = test::shared_file("models/stories260K.bin");
  calib::CalibrationConfig cfg;
  cfg.method = "uniquanf";
  cfg.format = "bcq:2:row";
  cfg.nsamples = 8;
  cfg.seqlen = 32;
  cfg.seed = 5;
  cfg.batch_sequences = 4;
  cfg.quiet = true;
  const auto o = small_uniquanf();
  nn::Llama model(io::load_llama2c(model_path));
  io::Llama2cTokenizer tok(test::shared_file("models/tok512.bin").string());
  auto text = eval::read_file_bytes(test::shared_file("text/tinystories_valid_prefix.txt").string()).substr(0, 100000);
  const auto tokens = calib::draw_calibration_tokens({text}, tok, cfg.nsamples, cfg.seqlen, cfg.seed);
  hooks.finetune = [o](calib::BlockContext& ctx) { return calib::uniquanf_finetune_block(ctx, o); };
  hooks.fp_stream = true;
  const auto report = calib::calibrate_model(model, tokens, cfg, calib::QuantizationPlan(calib::uniquanf_method(o), cfg.format),
                                             {{"uniquanf", o.to_json()}}, run_dir.string(), hooks);
  io::write_quantized_model(out, model, cfg.to_json(), model_path.string());
  return report.to_json();
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool have_stories() {
  return !test::shared_file("models/stories260K.bin").empty() && !test::shared_file("models/tok512.bin").empty() &&
         !test::shared_file("text/tinystories_valid_prefix.txt").empty();
}

}  // namespace

TEST_CASE("uniquanf pipeline child: interrupted calibration run") {
  const char* run_dir = std::getenv(kKillEnv);
  if (!run_dir) LOWBIT_SKIP("helper process for the UniQuanF SIGKILL resume test; runs only when spawned by it");
  calib::PipelineHooks hooks;
  hooks.after_linear = [](int layer, nn::LinearRole role) {
    if (layer == 2 && role == nn::LinearRole::Up) ::raise(SIGKILL);
  };
  run_to_file(run_dir, fs::path(run_dir) / "never_written.safetensors", hooks);
}

TEST_CASE("uniquanf pipeline: block training lowers the output error, folds to BCQ, resumes byte-identically") {
  if (!have_stories()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text is missing from shared/data");
  const auto base = fs::temp_directory_path() / ("lowbit_test_uq_" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base);
  const auto report = run_to_file(base / "run_full", base / "full.safetensors");
  for (int l = 0; l < 5; ++l) {
    const auto& s = report["per_linear"][nn::ModelWeights::layer_name(l, "finetune")];
    INFO("block " << l << ": " << s.dump());
    CHECK(s["uniquanf_steps"].get<int>() > 0);
    CHECK(s["uniquanf_final_heldout_mse"].get<double>() < s["uniquanf_initial_heldout_mse"].get<double>());
  }

  const fs::path killed_dir = base / "run_killed";
  fs::create_directories(killed_dir);
  const int status = test::run_test_case_in_child("uniquanf pipeline child: interrupted calibration run",
                                                  std::string(kKillEnv) + "=" + killed_dir.string());
  REQUIRE(status != -1);  // the child started
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(fs::exists(killed_dir / "block_001.safetensors"));
  CHECK(fs::exists(killed_dir / "activations_fp.bin"));
  CHECK(!fs::exists(killed_dir / "block_002.safetensors"));
  run_to_file(killed_dir, base / "resumed.safetensors");
  const auto a = read_bytes(base / "full.safetensors"), b = read_bytes(base / "resumed.safetensors");
  CHECK(a.size() > 10000);
  CHECK(a == b);

  auto model = io::load_quantized_model(base / "full.safetensors");
  CHECK(model.linear(0, nn::LinearRole::Q).format() == "bcq:2:row");
  CHECK(model.linear(4, nn::LinearRole::Down).format() == "bcq:2:row");

  // A corrupted BCQ file: a flipped byte, a descriptor edited to another bit width (the planes and scales
  // no longer fit it), an unsupported width. Each is a lowbit::Error that says what is wrong.
  const auto load_error = [&](const std::string& bytes) {
    const auto path = base / "bad.safetensors";
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    try {
      io::load_quantized_model(path);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string flipped = a;
  flipped[flipped.size() - 5] ^= 0x10;
  CHECK(load_error(flipped).find("corrupted or was modified") != std::string::npos);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, a.data(), 8);
  const auto at = a.substr(8, header_len).find("bcq:2:row");
  REQUIRE(at != std::string::npos);
  std::string edited = a;
  edited.replace(8 + at, 9, "bcq:3:row");
  const auto err = load_error(edited);
  MESSAGE("edited descriptor: " << err);
  CHECK(err.find("expected") != std::string::npos);
  edited.replace(8 + at, 9, "bcq:5:row");
  CHECK(load_error(edited).find("bcq:5:row") != std::string::npos);
  fs::remove_all(base);
}
