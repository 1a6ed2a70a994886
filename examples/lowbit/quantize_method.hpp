// The calibration methods `lowbit quantize` offers. Each method_*.cpp registers itself here, as the
// subcommands do with cli::Registration: the method names it provides, its own CLI11 option group, and a
// factory that builds the library's calib::Method (which declares the formats it can fill) plus the
// optional steps around the block pass (a block fine-tune, a whole-model step after it). cmd_quantize.cpp
// knows no method by name.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <lowbit/calib/method.hpp>
#include <lowbit/nn/model.hpp>

namespace lowbit::cli {

// What a whole-model step after the block pass gets.
struct QuantizeContext {
  std::string model_path;                            // the FP model (a teacher is loaded from it)
  std::string tokenizer;                             // the tokenizer's describe()
  const std::vector<std::int32_t>* tokens = nullptr;  // calibration windows [nsamples, seqlen]
  int seqlen = 0;
  bool quiet = false;
  std::string run_dir;  // checkpoints of long steps go here when set
  // Draws n calibration windows of seqlen tokens from the same text and seed (the first nsamples of
  // them are `tokens`), for a phase that wants more data than the block pass.
  std::function<std::vector<std::int32_t>(int n)> draw_windows;
};

struct QuantizeMethod {
  calib::Method method;
  calib::BlockFinetune finetune;  // optional: after each block's linears were replaced
  // optional: after all blocks, on the whole quantized model; returns its report (or null)
  std::function<nlohmann::json(nn::Llama&, const QuantizeContext&)> after_calibration;
  bool fp_stream = false;  // its finetune reads the FP activation stream (calib::PipelineHooks::fp_stream)
  // optional: checks of the method's own inputs against the model and its tokenizer (describe()), run
  // after they are loaded and before any calibration, so a mismatch fails in seconds
  std::function<void(const nn::ModelConfig&, const std::string& tokenizer)> preflight;
};

// Builds a configured method by name (one of the spec's names), after the command line was parsed.
using QuantizeMethodFactory = std::function<QuantizeMethod(const std::string& name)>;

struct QuantizeMethodSpec {
  std::vector<std::string> names;  // the --method / --tensor-format names this spec provides
  std::string summary;             // one line for --help
  // Declares the spec's option group on the quantize subcommand; returns its factory.
  std::function<QuantizeMethodFactory(CLI::App&)> setup;
};

inline std::vector<QuantizeMethodSpec>& quantize_methods() {
  static std::vector<QuantizeMethodSpec> specs;
  return specs;
}

struct QuantizeMethodRegistration {
  explicit QuantizeMethodRegistration(QuantizeMethodSpec spec) { quantize_methods().push_back(std::move(spec)); }
};

}  // namespace lowbit::cli
