// Opening any model file an evaluation is pointed at, as an nn::Llama ready for forward(). One entry
// point, `load_any_model`, so the evaluation commands gain new formats (safetensors, lowbit's quantized
// files) in one place: it defers to io/model_loader.hpp's load_model when that header exists, and
// otherwise recognizes GGUF (by magic) and llama2.c checkpoints itself.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "../core/error.hpp"
#include "../nn/model.hpp"
#include "../nn/weights.hpp"
#include "language_model.hpp"

#if __has_include("../io/model_loader.hpp")
#include "../io/model_loader.hpp"
#define LOWBIT_EVAL_HAS_MODEL_LOADER 1
#else
#include "../io/gguf.hpp"
#include "../io/llama2c.hpp"
#endif

namespace lowbit::eval {

// fp32 weights of the model at `path` (GGUF, llama2.c .bin, or whatever io::load_model accepts).
inline nn::ModelWeights load_any_weights(const std::string& path) {
  LOWBIT_CHECK(std::filesystem::exists(path), "model file ", path, " does not exist");
#if defined(LOWBIT_EVAL_HAS_MODEL_LOADER)
  return io::load_model(path);
#else
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  if (in.gcount() == 4 && std::string(magic, 4) == "GGUF") return io::load_gguf(path);
  return io::load_llama2c(path);
#endif
}

// A loaded model plus the adapter the evaluations use (the adapter points into `model`).
struct LoadedModel {
  std::unique_ptr<nn::Llama> model;
  LanguageModel lm;
  std::string path;
};

inline LoadedModel load_any_model(const std::string& path) {
  LoadedModel m;
  m.path = path;
  m.model = std::make_unique<nn::Llama>(load_any_weights(path));
  m.lm = wrap_model(*m.model, std::filesystem::path(path).filename().string());
  return m;
}

}  // namespace lowbit::eval
