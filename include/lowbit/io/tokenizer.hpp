// Choosing and building a model's tokenizer: `load_tokenizer(model, tokenizer)` picks the right
// implementation from the files given (llama2.c tokenizer.bin, a GGUF's embedded vocabulary, a
// Hugging Face tokenizer.json, a SentencePiece .model), so every command takes the same two options.
// BOS/EOS ids and the add-BOS convention come from the file's own metadata.
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../core/error.hpp"
#include "gguf.hpp"
#include "tokenizer_base.hpp"
#include "tokenizer_bpe.hpp"
#include "tokenizer_llama2c.hpp"
#include "tokenizer_sentencepiece.hpp"
#include "tokenizer_spm.hpp"
#include "tokenizer_vocab.hpp"

namespace lowbit::io {

// The tokenizer.ggml.* keys of a GGUF file.
inline VocabSpec vocab_from_gguf(const GgufFile& f) {
  VocabSpec v;
  v.source = f.path();
  v.model = f.get_string("tokenizer.ggml.model");
  v.tokens = f.get_string_array("tokenizer.ggml.tokens");
  if (f.has("tokenizer.ggml.scores")) v.scores = f.get_float_array("tokenizer.ggml.scores");
  if (f.has("tokenizer.ggml.token_type"))
    for (auto t : f.get_int_array("tokenizer.ggml.token_type")) v.token_types.push_back(static_cast<std::int32_t>(t));
  if (f.has("tokenizer.ggml.merges")) v.merges = f.get_string_array("tokenizer.ggml.merges");
  v.pre = f.get_string_or("tokenizer.ggml.pre", "default");
  v.bos_id = static_cast<std::int32_t>(f.get_int_or("tokenizer.ggml.bos_token_id", -1));
  v.eos_id = static_cast<std::int32_t>(f.get_int_or("tokenizer.ggml.eos_token_id", -1));
  v.unk_id = static_cast<std::int32_t>(f.get_int_or("tokenizer.ggml.unknown_token_id", -1));
  const bool spm = v.model == "llama";
  v.add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", spm);  // llama.cpp's defaults per model type
  v.add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix", spm);
  v.parse_special = !spm;  // SentencePiece semantics for "llama", Hugging Face semantics for "gpt2"
  const auto n = v.tokens.size();
  LOWBIT_CHECK(v.token_types.empty() || v.token_types.size() == n, f.path(), ": tokenizer.ggml.token_type has ",
               v.token_types.size(), " entries, expected ", n);
  LOWBIT_CHECK(v.scores.empty() || v.scores.size() == n, f.path(), ": tokenizer.ggml.scores has ", v.scores.size(),
               " entries, expected ", n);
  return v;
}

inline std::unique_ptr<Tokenizer> tokenizer_from_vocab(const VocabSpec& v) {
  if (v.model == "llama") return std::make_unique<SpmTokenizer>(v);
  if (v.model == "gpt2") return std::make_unique<BpeTokenizer>(v);
  fail(v.source, ": tokenizer model '", v.model, "' is not supported (expected 'llama' or 'gpt2')");
}

namespace detail {

inline std::string escape_regex(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (std::string_view("\\^$.|?*+()[]{}").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// Appends the regexes of a Hugging Face pre_tokenizer (Sequence / Split / Digits / ByteLevel).
inline void hf_pre_tokenizer_regexes(const nlohmann::json& p, const std::string& source, std::vector<std::string>& out) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& q : p.at("pretokenizers")) hf_pre_tokenizer_regexes(q, source, out);
  } else if (type == "ByteLevel") {
    LOWBIT_CHECK(!p.value("add_prefix_space", false), source,
                 ": ByteLevel pre-tokenizer with add_prefix_space = true is not supported");
    if (p.value("use_regex", true)) out.push_back(kGpt2Regex);
  } else if (type == "Digits") {
    out.push_back(p.value("individual_digits", false) ? "\\p{N}" : "\\p{N}+");
  } else if (type == "Split") {
    const std::string behavior = p.value("behavior", "Isolated");
    LOWBIT_CHECK(behavior == "Isolated" && !p.value("invert", false), source, ": Split pre-tokenizer with behavior '",
                 behavior, "' is not supported (only Isolated)");
    const auto& pat = p.at("pattern");
    if (pat.contains("Regex"))
      out.push_back(pat.at("Regex").get<std::string>());
    else
      out.push_back(escape_regex(pat.at("String").get<std::string>()));
  } else {
    fail(source, ": pre_tokenizer type '", type, "' is not supported (Sequence, Split, Digits, ByteLevel are)");
  }
}

}  // namespace detail

// A Hugging Face tokenizer.json holding a byte-level BPE model.
inline VocabSpec vocab_from_hf_json(const std::string& path) {
  std::ifstream in(path);
  LOWBIT_CHECK(in.good(), "tokenizer file ", path, ": cannot open");
  nlohmann::json j;
  try {
    in >> j;
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer file ", path, ": not valid JSON (", e.what(), ")");
  }
  VocabSpec v;
  v.source = path;
  v.model = "gpt2";
  try {
    const auto& model = j.at("model");
    LOWBIT_CHECK(model.value("type", "BPE") == "BPE", path, ": model type '", model.value("type", ""),
                 "' is not supported (byte-level BPE only; use the SentencePiece .model for Llama-2 style vocabularies)");
    // Ids are checked before they size anything: non-negative integers, and below twice the number of
    // entries (a vocabulary may have holes, not a table of 10^12 empty slots).
    const auto& vocab = model.at("vocab");
    LOWBIT_CHECK(vocab.is_object(), path, ": model.vocab is not an object of token -> id");
    const std::size_t added = j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0;
    const std::size_t id_limit = 2 * (vocab.size() + added) + 256;
    auto checked_id = [&](const nlohmann::json& value, const std::string& what) -> std::size_t {
      LOWBIT_CHECK(value.is_number_unsigned() || (value.is_number_integer() && value.get<std::int64_t>() >= 0), path,
                   ": ", what, " has id ", value.dump(), "; expected a non-negative integer");
      const auto id = value.get<std::uint64_t>();
      LOWBIT_CHECK(id < id_limit, path, ": ", what, " has id ", id, ", far past the ", vocab.size() + added,
                   " tokens the file lists (ids must be below ", id_limit, ")");
      return static_cast<std::size_t>(id);
    };
    std::size_t n = 0;
    for (auto it = vocab.begin(); it != vocab.end(); ++it)
      n = std::max<std::size_t>(n, checked_id(it.value(), "vocab token '" + it.key() + "'") + 1);
    if (added)
      for (const auto& a : j["added_tokens"]) n = std::max<std::size_t>(n, checked_id(a.at("id"), "an added token") + 1);
    v.tokens.assign(n, std::string());
    v.token_types.assign(n, static_cast<std::int32_t>(TokenType::Unused));
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      const auto id = checked_id(it.value(), "vocab token '" + it.key() + "'");
      v.tokens[id] = it.key();
      v.token_types[id] = static_cast<std::int32_t>(TokenType::Normal);
    }
    for (const auto& m : model.at("merges")) {
      if (m.is_string())
        v.merges.push_back(m.get<std::string>());
      else
        v.merges.push_back(m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    }
    if (j.contains("added_tokens"))
      for (const auto& a : j["added_tokens"]) {
        const auto id = checked_id(a.at("id"), "an added token");
        v.tokens[id] = a.at("content").get<std::string>();
        v.token_types[id] = static_cast<std::int32_t>(a.value("special", false) ? TokenType::Control : TokenType::UserDefined);
      }
    if (j.contains("pre_tokenizer")) detail::hf_pre_tokenizer_regexes(j["pre_tokenizer"], path, v.pre_regexes);
    v.pre = "tokenizer.json";
    if (v.pre_regexes.empty()) v.pre_regexes.push_back("(?!)");  // no split at all (never matches)
    auto find = [&](const std::string& s) -> std::int32_t {
      for (std::size_t i = 0; i < v.tokens.size(); ++i)
        if (v.tokens[i] == s) return static_cast<std::int32_t>(i);
      return -1;
    };
    // BOS is what the post-processor prepends (Llama 3); else the usual names.
    if (j.contains("post_processor") && j["post_processor"].is_object() && j["post_processor"].contains("single")) {
      const auto& single = j["post_processor"]["single"];
      if (!single.empty() && single[0].contains("SpecialToken")) {
        v.bos_id = find(single[0]["SpecialToken"].at("id").get<std::string>());
        v.add_bos = v.bos_id >= 0;
      }
    }
    for (const char* name : {"<|begin_of_text|>", "<|im_start|>", "<s>"})
      if (v.bos_id < 0) v.bos_id = find(name);
    for (const char* name : {"<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "</s>"})
      if (v.eos_id < 0) v.eos_id = find(name);
    if (model.contains("unk_token") && model["unk_token"].is_string()) v.unk_id = find(model["unk_token"].get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer file ", path, ": unexpected structure (", e.what(), ")");
  }
  return v;
}

// Loads the tokenizer for `model_path`: `tokenizer_path` when given (kind chosen by extension and
// magic), otherwise the vocabulary inside a GGUF model, or a tokenizer.json / tokenizer.model /
// tokenizer.bin next to the model.
inline std::unique_ptr<Tokenizer> load_tokenizer(const std::string& model_path, const std::string& tokenizer_path = {}) {
  namespace fs = std::filesystem;
  auto has_magic = [](const std::string& p, const char* magic) {
    std::ifstream in(p, std::ios::binary);
    char buf[4] = {};
    in.read(buf, 4);
    return in.gcount() == 4 && std::string(buf, 4) == magic;
  };
  auto from_file = [&](const std::string& p) -> std::unique_ptr<Tokenizer> {
    LOWBIT_CHECK(fs::exists(p), "tokenizer file ", p, " does not exist");
    LOWBIT_CHECK(fs::is_regular_file(p), "tokenizer file ", p, " is not a regular file (a folder?)");
    const auto ext = fs::path(p).extension().string();
    if (ext == ".gguf" || has_magic(p, "GGUF")) return tokenizer_from_vocab(vocab_from_gguf(GgufFile(p)));
    if (ext == ".json") return std::make_unique<BpeTokenizer>(vocab_from_hf_json(p));
    if (ext == ".model") {
#if defined(LOWBIT_WITH_SENTENCEPIECE)
      return std::make_unique<SentencePieceTokenizer>(p);
#else
      fail("tokenizer file ", p, ": SentencePiece .model files need libsentencepiece (rebuild with it installed)");
#endif
    }
    return std::make_unique<Llama2cTokenizer>(p);
  };
  if (!tokenizer_path.empty()) return from_file(tokenizer_path);
  LOWBIT_CHECK(!model_path.empty(), "load_tokenizer: neither a model nor a tokenizer file was given");
  if (fs::is_regular_file(model_path) && (fs::path(model_path).extension() == ".gguf" || has_magic(model_path, "GGUF")))
    return from_file(model_path);
  const fs::path dir = fs::is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer.bin"})
    if (fs::exists(dir / name)) return from_file((dir / name).string());
  fail("model ", model_path, ": no tokenizer inside it and none beside it (tokenizer.json, tokenizer.model, ",
       "tokenizer.bin); pass --tokenizer FILE");
}

}  // namespace lowbit::io
