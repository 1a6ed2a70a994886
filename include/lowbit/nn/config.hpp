// Hyper-parameters of a LLaMA-family model, as read from a checkpoint. Everything architecture-
// dependent (epsilon, rope theta and layout, tied head) comes from the file, never from defaults
// silently assumed by the model code.
#pragma once

#include <cstdint>
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

}  // namespace lowbit::nn
