// The one call that opens any model file as a runnable model: `io::open_model(path)` recognizes the
// file by its content (io/model_loader.hpp: GGUF, llama2.c, safetensors + config.json, Hugging Face
// folders, lowbit quantized files with any mix of formats per layer) and returns an nn::Llama whose
// linears, token table and head are in the file's formats. `io::load_weights` gives the fp32 weights of
// any of them, a quantized file's dequantized (re-quantizing one compounds the errors; callers say so).
// A file that is none of these gets an error that names what it looks like.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "../core/error.hpp"
#include "../nn/model.hpp"
#include "../nn/weights.hpp"
#include "model_loader.hpp"
#include "quantized_model.hpp"

namespace lowbit::io {

// The format of the model at `path`, or an error naming what the file looks like instead.
inline ModelFormat require_model_file(const std::filesystem::path& path) {
  std::error_code ec;
  LOWBIT_CHECK(std::filesystem::exists(path, ec), "model '", path.string(), "' does not exist");
  const auto format = detect_model_format(path);
  if (format == ModelFormat::Unknown) fail_unknown_model(path);
  return format;
}

// Any supported model file as an nn::Llama (fp32 checkpoints dense; quantized files as stored).
inline nn::Llama open_model(const std::filesystem::path& path, ModelFormat* format_out = nullptr) {
  const auto format = require_model_file(path);
  if (format_out) *format_out = format;
  if (format == ModelFormat::LowbitQuantized) return load_quantized_model(path);
  return nn::Llama(load_model(path));
}

// The fp32 weights the model computes with: Ŵ of every linear and table (a dense model's own weights).
inline nn::ModelWeights dequantized_weights(const nn::Llama& model) {
  const auto& c = model.config();
  nn::ModelWeights w;
  w.config = c;
  w.source = model.source();
  auto table = [&](const nn::Linear* stored, const std::vector<float>& fp32, const char* name) {
    nn::Tensor t;
    t.shape = {c.vocab_size, c.dim};
    if (stored) {
      t.data.resize(static_cast<std::size_t>(c.vocab_size) * static_cast<std::size_t>(c.dim));
      stored->dequantize(MatrixView<float>(t.data.data(), c.vocab_size, c.dim));
    } else {
      t.data = fp32;
    }
    w.tensors[name] = std::move(t);
  };
  const auto& m = model;
  table(model.token_embedding(), model.token_embedding() ? std::vector<float>{} : m.tok_embeddings(),
        "tok_embeddings.weight");
  if (!c.tied_embeddings)
    table(model.output_head(), model.output_head() ? std::vector<float>{} : m.output_weight(), "output.weight");
  w.tensors["norm.weight"] = nn::Tensor{{c.dim}, m.final_norm()};
  for (int l = 0; l < c.n_layers; ++l) {
    w.tensors[nn::ModelWeights::layer_name(l, "attention_norm.weight")] = nn::Tensor{{c.dim}, m.attention_norm(l)};
    w.tensors[nn::ModelWeights::layer_name(l, "ffn_norm.weight")] = nn::Tensor{{c.dim}, m.ffn_norm(l)};
    for (auto role : nn::kAllLinearRoles) {
      const auto& linear = model.linear(l, role);
      nn::Tensor t;
      t.shape = {linear.out_features(), linear.in_features()};
      t.data.resize(static_cast<std::size_t>(linear.out_features() * linear.in_features()));
      linear.dequantize(MatrixView<float>(t.data.data(), linear.out_features(), linear.in_features()));
      w.tensors[nn::ModelWeights::layer_name(l, std::string(nn::linear_role_name(role)) + ".weight")] = std::move(t);
    }
  }
  return w;
}

// fp32 weights of any supported model file; `was_quantized` (optional) tells whether they were
// dequantized from a lowbit quantized file.
inline nn::ModelWeights load_weights(const std::filesystem::path& path, bool* was_quantized = nullptr) {
  const auto format = require_model_file(path);
  if (was_quantized) *was_quantized = format == ModelFormat::LowbitQuantized;
  if (format == ModelFormat::LowbitQuantized) return dequantized_weights(load_quantized_model(path));
  return load_model(path);
}

}  // namespace lowbit::io
