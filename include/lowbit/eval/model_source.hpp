// Opening any model file an evaluation is pointed at, as an nn::Llama ready for forward(). One entry
// point, `load_any_model`, so the evaluation commands gain new formats in one place: lowbit quantized
// files (io/quantized_model.hpp) load with their quantized linears; everything else goes through
// io/model_loader.hpp's load_model (GGUF, llama2.c, safetensors, HF folders). Also reports the
// linears' bits per weight, and finds the tokenizer of a quantized file through its source model.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "../core/error.hpp"
#include "../nn/model.hpp"
#include "../nn/weights.hpp"
#include "language_model.hpp"

#include "../io/model_loader.hpp"
#include "../io/quantized_model.hpp"
#include "../io/tokenizer.hpp"

namespace lowbit::eval {

// fp32 weights of the model at `path` (GGUF, llama2.c .bin, or whatever io::load_model accepts).
inline nn::ModelWeights load_any_weights(const std::string& path) {
  LOWBIT_CHECK(std::filesystem::exists(path), "model file ", path, " does not exist");
  return io::load_model(path);
}

// The tokenizer for `model_path`: the explicit `tokenizer_path` when given; for a lowbit quantized
// file, the tokenizer of the model it was quantized from (recorded as "source_model" in its metadata).
inline std::unique_ptr<io::Tokenizer> load_any_tokenizer(const std::string& model_path,
                                                         const std::string& tokenizer_path = {}) {
  if (tokenizer_path.empty() && io::is_quantized_model_file(model_path)) {
    const auto info = io::quantized_model_info(model_path);
    const std::string source = info.value("source_model", std::string{});
    LOWBIT_CHECK(!source.empty() && std::filesystem::exists(source), model_path,
                 ": quantized file records no readable source model (found '", source,
                 "'); pass --tokenizer FILE");
    return io::load_tokenizer(source, {});
  }
  return io::load_tokenizer(model_path, tokenizer_path);
}

// Storage bits per weight over the transformer blocks' linears (codes, scales, zeros and codebooks as
// stored; 32 for dense fp32). Embeddings and the head are not counted, as in the papers' tables.
template <class Model>
double linear_bits_per_weight(Model& model) {
  double bits = 0, weights = 0;
  for (int l = 0; l < model.config().n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      auto& linear = model.linear(l, role);
      bits += 8.0 * static_cast<double>(linear.bytes());
      weights += static_cast<double>(linear.in_features()) * static_cast<double>(linear.out_features());
    }
  return weights > 0 ? bits / weights : 0.0;
}

// A loaded model plus the adapter the evaluations use (the adapter points into `model`).
struct LoadedModel {
  std::unique_ptr<nn::Llama> model;
  LanguageModel lm;
  std::string path;
  double bits_per_weight = 0;  // of the block linears
};

inline LoadedModel load_any_model(const std::string& path) {
  LoadedModel m;
  m.path = path;
  if (io::is_quantized_model_file(path))
    m.model = std::make_unique<nn::Llama>(io::load_quantized_model(path));
  else
    m.model = std::make_unique<nn::Llama>(load_any_weights(path));
  m.bits_per_weight = linear_bits_per_weight(*m.model);
  m.lm = wrap_model(*m.model, std::filesystem::path(path).filename().string());
  return m;
}

}  // namespace lowbit::eval
