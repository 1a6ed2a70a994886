// Named fp32 tensors as the loaders produce them and the model consumes them. Every loader (llama2.c,
// GGUF, safetensors) maps its own names onto the canonical names below, dequantizes to fp32, and sets
// ModelConfig (including rope_layout: q/k weights are kept in the file's own RoPE layout, never
// permuted), so the model code has exactly one way to read weights.
//
// Canonical names and shapes ([out, in] for linears, row-major):
//   tok_embeddings.weight                 [vocab, dim]
//   layers.{i}.attention_norm.weight      [dim]
//   layers.{i}.attention.wq.weight        [n_heads*head_dim, dim]
//   layers.{i}.attention.wk.weight        [n_kv_heads*head_dim, dim]
//   layers.{i}.attention.wv.weight        [n_kv_heads*head_dim, dim]
//   layers.{i}.attention.wo.weight        [dim, n_heads*head_dim]
//   layers.{i}.ffn_norm.weight            [dim]
//   layers.{i}.feed_forward.w1.weight     [hidden, dim]   gate
//   layers.{i}.feed_forward.w2.weight     [dim, hidden]   down
//   layers.{i}.feed_forward.w3.weight     [hidden, dim]   up
//   norm.weight                           [dim]
//   output.weight                         [vocab, dim]    absent when embeddings are tied
#pragma once

#include <map>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "config.hpp"

namespace lowbit::nn {

struct Tensor {
  std::vector<index_t> shape;
  std::vector<float> data;

  index_t numel() const {
    index_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
};

using TensorMap = std::map<std::string, Tensor>;

struct ModelWeights {
  ModelConfig config;
  TensorMap tensors;
  std::string source;  // file the weights came from, for error messages

  // The tensor `name`, checked against the expected shape; throws lowbit::Error naming file and tensor.
  const Tensor& get(const std::string& name, const std::vector<index_t>& expected_shape) const {
    auto it = tensors.find(name);
    LOWBIT_CHECK(it != tensors.end(), source, ": tensor '", name, "' is missing");
    const auto& t = it->second;
    if (t.shape != expected_shape) {
      fail(source, ": tensor '", name, "' has shape [", shape_string(t.shape), "], expected [",
           shape_string(expected_shape), "]");
    }
    LOWBIT_CHECK(static_cast<index_t>(t.data.size()) == t.numel(), source, ": tensor '", name,
                 "' holds ", t.data.size(), " values for shape [", shape_string(t.shape), "]");
    return t;
  }

  static std::string layer_name(int layer, const std::string& suffix) {
    return "layers." + std::to_string(layer) + "." + suffix;
  }

 private:
  static std::string shape_string(const std::vector<index_t>& shape) {
    std::string s;
    for (auto d : shape) {
      if (!s.empty()) s.push_back('x');
      s.append(std::to_string(d));
    }
    return s;
  }
};

}  // namespace lowbit::nn
