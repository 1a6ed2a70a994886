// The block-by-block pipeline and the quantized model file on stories260K (seconds): a run killed with
// SIGKILL in the middle of a block resumes from its checkpoints and writes a file byte-identical to an
// uninterrupted run; a mismatched resume is refused; the file loads back into a model whose logits equal
// the calibrated model's; truncated or tampered files are rejected with a message naming the problem.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/calib/pipeline.hpp"
#include "lowbit/eval/text_input.hpp"
#include "lowbit/io/llama2c.hpp"
#include "lowbit/io/quantized_model.hpp"
#include "lowbit/io/tokenizer_llama2c.hpp"
#include "test_spawn.hpp"
#include "test_util.hpp"


using namespace lowbit;
namespace fs = std::filesystem;

namespace {

struct Stories {
  fs::path model, tokenizer, text;
  bool ok() const { return !model.empty() && !tokenizer.empty() && !text.empty(); }
};
Stories stories() {
  return {test::shared_file("models/stories260K.bin"), test::shared_file("models/tok512.bin"),
          test::shared_file("text/tinystories_valid_prefix.txt")};
}

calib::CalibrationConfig small_config() {
  calib::CalibrationConfig cfg;
  cfg.method = "gptq";
  cfg.format = "uniform:4:64";
  cfg.nsamples = 8;
  cfg.seqlen = 64;
  cfg.seed = 5;
  cfg.batch_sequences = 3;  // batches that do not divide nsamples
  cfg.quiet = true;
  return cfg;
}

std::vector<std::int32_t> calibration_tokens(const Stories& s, const calib::CalibrationConfig& cfg) {
  io::Llama2cTokenizer tok(s.tokenizer.string());
  auto text = eval::read_file_bytes(s.text.string()).substr(0, 200000);
  return calib::draw_calibration_tokens({text}, tok, cfg.nsamples, cfg.seqlen, cfg.seed);
}

// Calibrates a fresh model into `out` (checkpoints under run_dir); returns the report.
calib::CalibrationReport run_to_file(const Stories& s, const calib::CalibrationConfig& cfg, const fs::path& run_dir,
                                     const fs::path& out, const calib::PipelineHooks& hooks = {}) {
  nn::Llama model(io::load_llama2c(s.model));
  const auto tokens = calibration_tokens(s, cfg);
  nlohmann::json fingerprint = {{"model", file_fingerprint(s.model.string())}};
  auto report = calib::calibrate_model(model, tokens, cfg, calib::group_method(cfg.method), fingerprint,
                                       run_dir.string(), hooks);
  io::write_quantized_model(out, model, cfg.to_json(), s.model.string());
  return report;
}

std::string read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_bytes(const fs::path& p, const std::string& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}
std::string sha256_of(const fs::path& p) {
  std::string cmd = "sha256sum '" + p.string() + "' 2>/dev/null";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return "?";
  char buf[128] = {};
  const bool got = std::fgets(buf, sizeof buf, pipe) != nullptr;
  pclose(pipe);
  return got ? std::string(buf).substr(0, 64) : "?";
}

std::string load_error(const fs::path& p) {
  try {
    io::load_quantized_model(p);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

fs::path scratch(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("lowbit_test_calib_" + std::to_string(::getpid())) / name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

}  // namespace

// Runs only as the child process of the resume test (it kills itself with SIGKILL mid-block).
TEST_CASE("pipeline child: interrupted calibration run") {
  const char* run_dir = std::getenv("LOWBIT_TEST_KILL_RUN_DIR");
  if (!run_dir) LOWBIT_SKIP("helper process for the SIGKILL resume test; runs only when spawned by it");
  const auto s = stories();
  calib::PipelineHooks hooks;
  hooks.after_linear = [](int layer, nn::LinearRole role) {
    if (layer == 2 && role == nn::LinearRole::Up) ::raise(SIGKILL);  // in the middle of block 2
  };
  run_to_file(s, small_config(), run_dir, fs::path(run_dir) / "never_written.safetensors", hooks);
}

TEST_CASE("pipeline: SIGKILL mid-calibration, then resume, gives a byte-identical file") {
  const auto s = stories();
  if (!s.ok()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text is missing from shared/data");
  const auto base = scratch("resume");
  const auto cfg = small_config();

  const auto full = run_to_file(s, cfg, base / "run_full", base / "full.safetensors");
  CHECK(full.resumed_from_layer == 0);

  // Interrupted run in a child process (fork after OpenMP has run is unsafe, so spawn a fresh one).
  const fs::path killed_dir = base / "run_killed";
  fs::create_directories(killed_dir);
  const int status = test::run_test_case_in_child("pipeline child: interrupted calibration run",
                                                  "LOWBIT_TEST_KILL_RUN_DIR=" + killed_dir.string());
  REQUIRE(status != -1);  // the child started
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(fs::exists(killed_dir / "block_001.safetensors"));
  CHECK(!fs::exists(killed_dir / "block_002.safetensors"));
  CHECK(!fs::exists(killed_dir / "never_written.safetensors"));

  const auto resumed = run_to_file(s, cfg, killed_dir, base / "resumed.safetensors");
  CHECK(resumed.resumed_from_layer == 2);
  const auto a = read_bytes(base / "full.safetensors"), b = read_bytes(base / "resumed.safetensors");
  MESSAGE("uninterrupted sha256 ", sha256_of(base / "full.safetensors"), ", resumed sha256 ",
          sha256_of(base / "resumed.safetensors"), " (", a.size(), " bytes)");
  CHECK(a.size() > 10000);
  CHECK(a == b);

  // Same run directory, different configuration: refused with the differing key named.
  auto other = cfg;
  other.seed = 6;
  try {
    run_to_file(s, other, killed_dir, base / "other.safetensors");
    FAIL("a mismatched resume was accepted");
  } catch (const Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("different calibration run") != std::string::npos);
    CHECK(msg.find("config") != std::string::npos);
  }
  fs::remove_all(base.parent_path());
}

TEST_CASE("quantized file: loads back exactly, truncated or tampered files are rejected clearly") {
  const auto s = stories();
  if (!s.ok()) LOWBIT_SKIP("stories260K, tok512.bin or the TinyStories text is missing from shared/data");
  const auto base = scratch("file");
  auto cfg = small_config();
  cfg.method = "autoclip+gptq";
  cfg.sample_tokens = 128;
  nn::Llama model(io::load_llama2c(s.model));
  const auto tokens = calibration_tokens(s, cfg);
  calib::calibrate_model(model, tokens, cfg, calib::group_method(cfg.method));
  // Mix formats per layer: one NF3 layer and one layer left dense.
  {
    const index_t out = model.linear(1, nn::LinearRole::Down).out_features();
    const index_t in = model.linear(1, nn::LinearRole::Down).in_features();
    std::vector<float> W(static_cast<std::size_t>(out * in));
    model.linear(1, nn::LinearRole::Down).dequantize(MatrixView<float>(W.data(), out, in));
    model.set_linear(1, nn::LinearRole::Down,
                     std::make_unique<nn::QuantizedLinear<NF3<64>>>(
                         Quantizer<NF3<64>>::quantize(MatrixView<const float>(W.data(), out, in))));
    nn::Llama fp(io::load_llama2c(s.model));
    auto& q = fp.linear(0, nn::LinearRole::Q);
    std::vector<float> Wq(static_cast<std::size_t>(q.out_features() * q.in_features()));
    q.dequantize(MatrixView<float>(Wq.data(), q.out_features(), q.in_features()));
    model.set_linear(0, nn::LinearRole::Q, std::make_unique<nn::DenseLinear>(q.out_features(), q.in_features(), Wq));
  }
  const auto path = base / "model.safetensors";
  io::write_quantized_model(path, model, cfg.to_json(), s.model.string());

  nn::Llama loaded = io::load_quantized_model(path);
  CHECK(loaded.linear(0, nn::LinearRole::Q).format() == "f32");
  CHECK(loaded.linear(1, nn::LinearRole::Down).format() == "nf3:64");
  CHECK(loaded.linear(2, nn::LinearRole::K).format() == "uniform:4:64");
  const int T = 32;
  std::vector<std::int32_t> ids(tokens.begin(), tokens.begin() + T);
  const int V = model.config().vocab_size;
  std::vector<float> a(static_cast<std::size_t>(T * V)), b(a.size());
  model.forward(ids.data(), 1, T, a.data());
  loaded.forward(ids.data(), 1, T, b.data());
  CHECK(a == b);
  const auto info = io::quantized_model_info(path);
  CHECK(info["quantization_config"] == cfg.to_json());  // what write_quantized_model was given
  CHECK(info["source_model"] == s.model.string());

  const std::string bytes = read_bytes(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);

  // Truncated: the data section is shorter than the tensors need.
  write_bytes(base / "truncated.safetensors", bytes.substr(0, bytes.size() - 1000));
  auto err = load_error(base / "truncated.safetensors");
  MESSAGE("truncated: ", err);
  CHECK(err.find("truncated.safetensors") != std::string::npos);
  CHECK(!err.empty());

  // One flipped byte in a tensor's data: the checksum names the tensor.
  std::string flipped = bytes;
  flipped[flipped.size() - 3] ^= 0x40;
  write_bytes(base / "flipped.safetensors", flipped);
  err = load_error(base / "flipped.safetensors");
  MESSAGE("flipped byte: ", err);
  CHECK(err.find("corrupted or was modified") != std::string::npos);

  // A format descriptor edited (4-bit -> 2-bit for one layer): the stored tensors no longer fit it.
  std::string edited = bytes;
  const auto header = edited.substr(8, header_len);
  const auto at = header.find("uniform:4:64");
  REQUIRE(at != std::string::npos);
  edited.replace(8 + at, 12, "uniform:2:64");
  write_bytes(base / "edited.safetensors", edited);
  err = load_error(base / "edited.safetensors");
  MESSAGE("edited descriptor: ", err);
  CHECK(err.find("expected") != std::string::npos);
  CHECK(err.find("shape") != std::string::npos);

  // An unknown format name is listed against the supported ones.
  std::string unknown = bytes;
  unknown.replace(8 + at, 12, "uniform:5:64");
  write_bytes(base / "unknown.safetensors", unknown);
  err = load_error(base / "unknown.safetensors");
  MESSAGE("unknown format: ", err);
  CHECK(err.find("uniform:5:64") != std::string::npos);
  CHECK(err.find("does not know") != std::string::npos);
  CHECK(err.find("registered: f32") != std::string::npos);

  // A plain safetensors file that is not a lowbit model.
  io::SafetensorsWriter w;
  const float one = 1.0f;
  w.add_f32("x", {1}, &one);
  w.write(base / "plain.safetensors");
  err = load_error(base / "plain.safetensors");
  CHECK(err.find("not a lowbit quantized model") != std::string::npos);
  fs::remove_all(base.parent_path());
}

TEST_CASE("block checkpoint: every tensor it holds is checksummed, the norm gains included") {
  const auto s = stories();
  if (!s.ok()) LOWBIT_SKIP("stories260K is missing from shared/data");
  const auto base = scratch("block_ckpt");
  nn::Llama model(io::load_llama2c(s.model));
  const int layer = 2;
  const auto path = base / "block_002.safetensors";
  io::save_block_checkpoint(path, model, layer);
  const std::string bytes = read_bytes(path);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  const auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  for (const char* norm : {"attention_norm.weight", "ffn_norm.weight"}) {
    const std::string name = nn::ModelWeights::layer_name(layer, norm);
    REQUIRE(header.contains(name));
    const std::size_t at = 8 + header_len + header[name]["data_offsets"][0].get<std::size_t>();
    std::string flipped = bytes;
    flipped[at + 1] ^= 0x01;  // one bit of the first gain's mantissa: the values stay plausible
    write_bytes(base / "flipped.safetensors", flipped);
    nn::Llama target(io::load_llama2c(s.model));
    std::string err;
    try {
      io::load_block_checkpoint(base / "flipped.safetensors", target, layer);
    } catch (const lowbit::Error& e) {
      err = e.what();
    }
    MESSAGE(std::string(norm), ": ", err);
    CHECK(err.find(name) != std::string::npos);
    CHECK(err.find("corrupted or was modified") != std::string::npos);
  }
  nn::Llama target(io::load_llama2c(s.model));
  io::load_block_checkpoint(path, target, layer);  // the untouched checkpoint loads
  CHECK(target.ffn_norm(layer) == model.ffn_norm(layer));
}
