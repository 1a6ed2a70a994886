// Hugging Face LLaMA checkpoints: config.json plus one safetensors file or several shards listed in
// model.safetensors.index.json. Names are mapped onto lowbit's canonical names and q/k are kept in the
// Hugging Face (half-split) RoPE layout, so config.rope_layout = HalfSplit and no weight is permuted.
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../nn/weights.hpp"
#include "safetensors.hpp"

namespace lowbit::io {

namespace detail {

inline nlohmann::json read_json_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  LOWBIT_CHECK(in.good(), "cannot open '", p.string(), "'");
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    fail(p.string(), ": invalid JSON: ", e.what());
  }
}

inline int config_int(const nlohmann::json& j, const std::string& key, const std::string& source, bool required,
                      int fallback = 0) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    LOWBIT_CHECK(!required, source, ": key '", key, "' is missing");
    return fallback;
  }
  LOWBIT_CHECK(it->is_number_integer() && it->get<std::int64_t>() > 0 &&
                   it->get<std::int64_t>() <= std::numeric_limits<int>::max(),
               source, ": key '", key, "' is ", it->dump(), ", expected a positive integer");
  return static_cast<int>(it->get<std::int64_t>());
}

inline double config_float(const nlohmann::json& j, const std::string& key, const std::string& source, double fallback) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  LOWBIT_CHECK(it->is_number(), source, ": key '", key, "' is ", it->dump(), ", expected a number");
  return it->get<double>();
}

}  // namespace detail

// The model's hyper-parameters from a Hugging Face LLaMA config.json.
inline nn::ModelConfig hf_llama_config(const std::filesystem::path& config_path) {
  const std::string src = config_path.string();
  const auto j = detail::read_json_file(config_path);
  LOWBIT_CHECK(j.is_object(), src, ": config.json is not a JSON object");
  if (auto mt = j.find("model_type"); mt != j.end() && mt->is_string())
    LOWBIT_CHECK(*mt == "llama" || *mt == "mistral", src, ": model_type '", mt->get<std::string>(),
                 "' is not supported (expected 'llama')");
  nn::ModelConfig c;
  c.dim = detail::config_int(j, "hidden_size", src, true);
  c.hidden_dim = detail::config_int(j, "intermediate_size", src, true);
  c.n_layers = detail::config_int(j, "num_hidden_layers", src, true);
  c.n_heads = detail::config_int(j, "num_attention_heads", src, true);
  c.n_kv_heads = detail::config_int(j, "num_key_value_heads", src, false, c.n_heads);
  c.vocab_size = detail::config_int(j, "vocab_size", src, true);
  c.max_seq_len = detail::config_int(j, "max_position_embeddings", src, false, 2048);
  c.norm_eps = static_cast<float>(detail::config_float(j, "rms_norm_eps", src, 1e-6));
  c.rope_theta = static_cast<float>(detail::config_float(j, "rope_theta", src, 10000.0));
  c.rope_layout = nn::RopeLayout::HalfSplit;
  const auto tie = j.find("tie_word_embeddings");
  c.tied_embeddings = tie != j.end() && tie->is_boolean() && tie->get<bool>();
  if (auto rs = j.find("rope_scaling"); rs != j.end())
    LOWBIT_CHECK(rs->is_null(), src, ": rope_scaling ", rs->dump(), " is not supported");
  if (auto hd = j.find("head_dim"); hd != j.end() && !hd->is_null())
    LOWBIT_CHECK(hd->is_number_integer() && hd->get<std::int64_t>() * c.n_heads == c.dim, src, ": head_dim ",
                 hd->dump(), " differs from hidden_size / num_attention_heads");
  c.validate(src);
  return c;
}

// Loads a Hugging Face LLaMA: `path` is a folder (config.json + model.safetensors or
// model.safetensors.index.json), a .safetensors file, or an index .json; config.json is taken from the
// same folder. F32/F16/BF16 weights become fp32.
inline nn::ModelWeights load_hf_llama(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  if (dir.empty()) dir = ".";
  std::vector<fs::path> shards;
  std::map<std::string, fs::path> weight_map;  // tensor -> shard, when an index is present
  fs::path index;
  if (fs::is_directory(path)) {
    if (fs::exists(dir / "model.safetensors.index.json")) index = dir / "model.safetensors.index.json";
    else if (fs::exists(dir / "model.safetensors")) shards.push_back(dir / "model.safetensors");
    else fail(path.string(), ": folder holds neither model.safetensors nor model.safetensors.index.json");
  } else if (path.extension() == ".json") {
    index = path;
  } else {
    shards.push_back(path);
  }
  if (!index.empty()) {
    const auto j = detail::read_json_file(index);
    const auto wm = j.find("weight_map");
    LOWBIT_CHECK(wm != j.end() && wm->is_object(), index.string(), ": no 'weight_map' object");
    for (auto it = wm->begin(); it != wm->end(); ++it) {
      LOWBIT_CHECK(it.value().is_string(), index.string(), ": weight_map entry '", it.key(), "' is not a file name");
      const fs::path shard = dir / it.value().get<std::string>();
      weight_map[it.key()] = shard;
      if (std::find(shards.begin(), shards.end(), shard) == shards.end()) shards.push_back(shard);
    }
  }
  nn::ModelWeights w;
  w.source = path.string();
  w.config = hf_llama_config(dir / "config.json");
  const auto& c = w.config;

  std::vector<std::unique_ptr<SafetensorsFile>> files;
  std::map<std::string, const SafetensorsFile*> owner;  // tensor -> file that holds it
  for (const auto& s : shards) {
    files.push_back(std::make_unique<SafetensorsFile>(s));
    for (const auto& t : files.back()->tensors()) {
      LOWBIT_CHECK(owner.count(t.name) == 0, s.string(), ": tensor '", t.name, "' also appears in another shard");
      owner[t.name] = files.back().get();
    }
  }
  for (const auto& [name, shard] : weight_map) {
    auto it = owner.find(name);
    LOWBIT_CHECK(it != owner.end() && fs::path(it->second->path()) == shard, index.string(), ": tensor '", name,
                 "' is listed in ", shard.string(), " but not stored there");
  }

  const index_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const index_t q_dim = static_cast<index_t>(c.n_heads) * c.head_dim(), kv = c.kv_dim();
  auto add = [&](const std::string& hf_name, const std::string& canonical, std::vector<index_t> shape) {
    auto it = owner.find(hf_name);
    LOWBIT_CHECK(it != owner.end(), w.source, ": tensor '", hf_name, "' is missing");
    const auto& t = it->second->tensor(hf_name);
    if (t.shape != shape) {
      std::string got, want;
      for (auto d : t.shape) got.append(got.empty() ? "" : "x").append(std::to_string(d));
      for (auto d : shape) want.append(want.empty() ? "" : "x").append(std::to_string(d));
      fail(it->second->path(), ": tensor '", hf_name, "' has shape [", got, "], expected [", want, "]");
    }
    nn::Tensor out;
    out.shape = std::move(shape);
    out.data = it->second->to_f32(t);
    w.tensors.emplace(canonical, std::move(out));
  };
  add("model.embed_tokens.weight", "tok_embeddings.weight", {vocab, dim});
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto L = [&](const char* s) { return nn::ModelWeights::layer_name(i, s); };
    add(p + "input_layernorm.weight", L("attention_norm.weight"), {dim});
    add(p + "self_attn.q_proj.weight", L("attention.wq.weight"), {q_dim, dim});
    add(p + "self_attn.k_proj.weight", L("attention.wk.weight"), {kv, dim});
    add(p + "self_attn.v_proj.weight", L("attention.wv.weight"), {kv, dim});
    add(p + "self_attn.o_proj.weight", L("attention.wo.weight"), {dim, q_dim});
    add(p + "post_attention_layernorm.weight", L("ffn_norm.weight"), {dim});
    add(p + "mlp.gate_proj.weight", L("feed_forward.w1.weight"), {hidden, dim});
    add(p + "mlp.down_proj.weight", L("feed_forward.w2.weight"), {dim, hidden});
    add(p + "mlp.up_proj.weight", L("feed_forward.w3.weight"), {hidden, dim});
  }
  add("model.norm.weight", "norm.weight", {dim});
  // A missing lm_head means the head is the embedding, whatever tie_word_embeddings says.
  if (!c.tied_embeddings && owner.count("lm_head.weight")) add("lm_head.weight", "output.weight", {vocab, dim});
  else w.config.tied_embeddings = true;
  return w;
}

}  // namespace lowbit::io
