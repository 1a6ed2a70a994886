// Hyper-parameters of a LLaMA-family model, as read from a checkpoint. Everything architecture-
// dependent (epsilon, rope theta and layout, tied head) comes from the file, never from defaults
// silently assumed by the model code.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "../core/error.hpp"

namespace lowbit::nn {

// How RoPE pairs dimensions within a head:
//   Interleaved: (0,1), (2,3), ... as in llama2.c and GGUF (llama.cpp permutes HF q/k weights at
//                conversion time);
//   HalfSplit:   (i, i + head_dim/2) as in Hugging Face checkpoints.
enum class RopeLayout { Interleaved, HalfSplit };

struct ModelConfig {
  int dim = 0;          // residual width
  int hidden_dim = 0;   // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int max_seq_len = 0;
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeLayout rope_layout = RopeLayout::Interleaved;
  bool tied_embeddings = true;

  int head_dim() const { return n_heads > 0 ? dim / n_heads : 0; }
  int kv_dim() const { return head_dim() * n_kv_heads; }

  // Throws lowbit::Error naming `source` when the hyper-parameters are inconsistent.
  void validate(const std::string& source) const {
    LOWBIT_CHECK(dim > 0 && hidden_dim > 0 && n_layers > 0 && n_heads > 0 && n_kv_heads > 0 &&
                     vocab_size > 0 && max_seq_len > 0,
                 source, ": model hyper-parameters must be positive (dim=", dim, ", hidden_dim=", hidden_dim,
                 ", n_layers=", n_layers, ", n_heads=", n_heads, ", n_kv_heads=", n_kv_heads,
                 ", vocab_size=", vocab_size, ", seq_len=", max_seq_len, ")");
    LOWBIT_CHECK(dim % n_heads == 0, source, ": dim ", dim, " is not a multiple of n_heads ", n_heads);
    LOWBIT_CHECK(n_heads % n_kv_heads == 0, source, ": n_heads ", n_heads, " is not a multiple of n_kv_heads ",
                 n_kv_heads);
    LOWBIT_CHECK(head_dim() % 2 == 0, source, ": head_dim ", head_dim(), " must be even for RoPE");
    LOWBIT_CHECK(norm_eps > 0 && rope_theta > 0, source, ": norm_eps and rope_theta must be positive");
  }
};

// ---- JSON (the one definition; the quantized model file's "lowbit.model_config") ---------------------
// nlohmann's customization points, found by ADL: `nlohmann::json j = config;` and `j.get<ModelConfig>()`.
// Reading checks every field's presence, type and range (an integer field must be a whole number that
// fits an int) and throws lowbit::Error; the caller adds the source and runs validate().

inline void to_json(nlohmann::json& j, const ModelConfig& c) {
  j = {{"dim", c.dim},
       {"hidden_dim", c.hidden_dim},
       {"n_layers", c.n_layers},
       {"n_heads", c.n_heads},
       {"n_kv_heads", c.n_kv_heads},
       {"vocab_size", c.vocab_size},
       {"max_seq_len", c.max_seq_len},
       {"norm_eps", c.norm_eps},
       {"rope_theta", c.rope_theta},
       {"rope_layout", c.rope_layout == RopeLayout::Interleaved ? "interleaved" : "half_split"},
       {"tied_embeddings", c.tied_embeddings}};
}

inline void from_json(const nlohmann::json& j, ModelConfig& c) {
  LOWBIT_CHECK(j.is_object(), "model config is not a JSON object");
  auto field = [&](const char* key) -> const nlohmann::json& {
    LOWBIT_CHECK(j.contains(key), "model config has no '", key, "'");
    return j.at(key);
  };
  auto integer = [&](const char* key) {
    const auto& v = field(key);
    LOWBIT_CHECK(v.is_number_integer() || (v.is_number_float() && std::trunc(v.get<double>()) == v.get<double>()),
                 "model config '", key, "' is not an integer: ", v.dump());
    const double d = v.get<double>();
    LOWBIT_CHECK(d >= std::numeric_limits<int>::min() && d <= std::numeric_limits<int>::max(), "model config '", key,
                 "' = ", v.dump(), " does not fit an int");
    return v.is_number_integer() ? static_cast<int>(v.get<std::int64_t>()) : static_cast<int>(d);
  };
  auto real = [&](const char* key) {
    const auto& v = field(key);
    LOWBIT_CHECK(v.is_number() && std::isfinite(v.get<double>()), "model config '", key, "' is not a finite number: ",
                 v.dump());
    return v.get<float>();
  };
  c.dim = integer("dim");
  c.hidden_dim = integer("hidden_dim");
  c.n_layers = integer("n_layers");
  c.n_heads = integer("n_heads");
  c.n_kv_heads = integer("n_kv_heads");
  c.vocab_size = integer("vocab_size");
  c.max_seq_len = integer("max_seq_len");
  c.norm_eps = real("norm_eps");
  c.rope_theta = real("rope_theta");
  const auto& layout = field("rope_layout");
  LOWBIT_CHECK(layout.is_string() && (layout == "interleaved" || layout == "half_split"),
               "model config 'rope_layout' must be \"interleaved\" or \"half_split\", found ", layout.dump());
  c.rope_layout = layout == "interleaved" ? RopeLayout::Interleaved : RopeLayout::HalfSplit;
  const auto& tied = field("tied_embeddings");
  LOWBIT_CHECK(tied.is_boolean(), "model config 'tied_embeddings' is not a boolean: ", tied.dump());
  c.tied_embeddings = tied.get<bool>();
}

}  // namespace lowbit::nn
