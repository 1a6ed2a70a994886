// Opening any model file an evaluation is pointed at, as an nn::Llama ready for forward(): one entry
// point, `load_any_model`, over io::open_model (io/open_model.hpp), which recognizes every format by
// content. Also reports the storage cost (bits per weight over the block linears, over every weight,
// and the file size), and finds the tokenizer of a quantized file through its source model.
#pragma once

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <system_error>

#include "../core/error.hpp"
#include "../nn/model.hpp"
#include "../nn/weights.hpp"
#include "language_model.hpp"

#include "../io/open_model.hpp"
#include "../io/tokenizer.hpp"

namespace lowbit::eval {

// fp32 weights of the model at `path` (any format io::open_model reads; a quantized file's are its
// dequantized weights, and `was_quantized` says so).
inline nn::ModelWeights load_any_weights(const std::string& path, bool* was_quantized = nullptr) {
  return io::load_weights(path, was_quantized);
}

// The tokenizer for `model_path`: the explicit `tokenizer_path` when given; for a lowbit quantized
// file, the tokenizer of the model it was quantized from (recorded as "source_model" in its metadata),
// followed through files made from quantized files (encoders trained on a quantized model) up to 8 deep.
inline std::unique_ptr<io::Tokenizer> load_any_tokenizer(const std::string& model_path,
                                                         const std::string& tokenizer_path = {}, int depth = 0) {
  if (tokenizer_path.empty() && io::detect_model_format(model_path) == io::ModelFormat::LowbitQuantized) {
    const auto info = io::quantized_model_info(model_path);
    const std::string source = info.value("source_model", std::string{});
    LOWBIT_CHECK(!source.empty() && std::filesystem::exists(source), model_path,
                 ": quantized file records no readable source model (found '", source,
                 "'); pass --tokenizer FILE");
    LOWBIT_CHECK(depth < 8, model_path, ": its chain of source models is more than 8 files long (a cycle?); pass "
                 "--tokenizer FILE");
    return load_any_tokenizer(source, {}, depth + 1);
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

// Storage of the whole model: every linear, the token table and the head as stored (a tied table
// once), the RMSNorm gains as fp32.
struct ModelStorage {
  double linear_bits_per_weight = 0;  // over the blocks' linears (the papers' tables)
  double model_bits_per_weight = 0;   // over every weight: linears, tables, norms
  double parameters = 0;              // weights counted (a tied table once)
  std::string table_format, head_format;
};

template <class Model>
ModelStorage model_storage(Model& model) {
  const auto& c = model.config();
  ModelStorage s;
  double bits = 0, weights = 0;
  for (int l = 0; l < c.n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      auto& linear = model.linear(l, role);
      bits += 8.0 * static_cast<double>(linear.bytes());
      weights += static_cast<double>(linear.in_features()) * static_cast<double>(linear.out_features());
    }
  s.linear_bits_per_weight = weights > 0 ? bits / weights : 0.0;  // = linear_bits_per_weight(model), one walk
  const double table = static_cast<double>(c.vocab_size) * static_cast<double>(c.dim);
  auto table_bits = [&](const nn::Linear* stored) { return stored ? 8.0 * static_cast<double>(stored->bytes()) : 32.0 * table; };
  bits += table_bits(model.token_embedding());
  weights += table;
  if (!c.tied_embeddings) {
    bits += table_bits(model.output_head());
    weights += table;
  }
  const double norms = static_cast<double>(c.dim) * (2.0 * c.n_layers + 1);
  bits += 32.0 * norms;
  weights += norms;
  s.parameters = weights;
  s.model_bits_per_weight = bits / weights;
  s.table_format = model.token_embedding_format();
  s.head_format = model.output_head_format();
  return s;
}

// A loaded model plus the adapter the evaluations use (the adapter points into `model`).
struct LoadedModel {
  std::unique_ptr<nn::Llama> model;
  LanguageModel lm;
  std::string path;
  io::ModelFormat format = io::ModelFormat::Unknown;
  double bits_per_weight = 0;       // of the block linears
  ModelStorage storage;             // of the whole model
  double file_bits_per_weight = 0;  // file size over every weight (0 for a folder)
  double file_mb = 0;               // file size in MB (10^6 bytes)
};

inline LoadedModel load_any_model(const std::string& path) {
  LoadedModel m;
  m.path = path;
  m.model = std::make_unique<nn::Llama>(io::open_model(path, &m.format));
  m.bits_per_weight = linear_bits_per_weight(*m.model);
  m.storage = model_storage(*m.model);
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    const auto bytes = static_cast<double>(std::filesystem::file_size(path, ec));
    m.file_mb = bytes / 1e6;
    m.file_bits_per_weight = 8.0 * bytes / m.storage.parameters;
  }
  m.lm = wrap_model(*m.model, std::filesystem::path(path).filename().string());
  return m;
}

}  // namespace lowbit::eval
