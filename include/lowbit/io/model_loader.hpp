// Recognizing a model file by its content, and loading the fp32 checkpoint formats. `detect_model_format`
// reads the first bytes: GGUF's magic; safetensors' 8-byte header length followed by '{' (a lowbit
// quantized file when its metadata says so); a llama2.c header whose seven fields are a valid model and
// whose implied size is the file's size (llama2.c has no magic); a folder with config.json (Hugging
// Face). The extension is never consulted. `describe_file` names what an unrecognized file looks like,
// so an error can say "this is a tokenizer JSON, expected a model". `load_model` returns canonical fp32
// weights (nn/weights.hpp); io/open_model.hpp opens every format, quantized files included, as a model.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>

#include "../core/error.hpp"
#include "../nn/weights.hpp"
#include "gguf.hpp"
#include "hf_llama.hpp"
#include "llama2c.hpp"
#include "safetensors.hpp"

namespace lowbit::io {

enum class ModelFormat { Gguf, Llama2c, Safetensors, HfFolder, LowbitQuantized, Unknown };

inline const char* model_format_name(ModelFormat f) {
  switch (f) {
    case ModelFormat::Gguf: return "gguf";
    case ModelFormat::Llama2c: return "llama2.c";
    case ModelFormat::Safetensors: return "safetensors";
    case ModelFormat::HfFolder: return "hugging-face folder";
    case ModelFormat::LowbitQuantized: return "lowbit quantized";
    case ModelFormat::Unknown: break;
  }
  return "unknown";
}

// What every model-opening call accepts, for error messages.
inline constexpr const char* kAcceptedModelFiles =
    "a GGUF file, a llama2.c checkpoint, a .safetensors file with config.json beside it, a Hugging Face folder "
    "with config.json, or a lowbit quantized file";

namespace detail {

inline std::string read_head(const std::filesystem::path& path, std::size_t n) {
  std::ifstream in(path, std::ios::binary);
  std::string head(n, '\0');
  if (!in) return {};
  in.read(head.data(), static_cast<std::streamsize>(n));
  head.resize(static_cast<std::size_t>(in.gcount()));
  return head;
}

inline bool safetensors_shaped(const std::string& head) {
  if (head.size() < 9 || head[8] != '{') return false;
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, head.data(), 8);
  return header_len >= 2 && header_len <= SafetensorsFile::kMaxHeaderBytes;
}

// Whether the first 28 bytes are a llama2.c header that describes a model of exactly `file_bytes`.
inline bool llama2c_shaped(const std::string& head, std::uint64_t file_bytes, std::uint64_t* implied = nullptr) {
  if (head.size() < Llama2cHeader::bytes) return false;
  Llama2cHeader h;
  std::int32_t f[7];
  std::memcpy(f, head.data(), sizeof f);
  h.dim = f[0], h.hidden_dim = f[1], h.n_layers = f[2], h.n_heads = f[3], h.n_kv_heads = f[4], h.vocab_size = f[5];
  h.seq_len = f[6];
  try {
    const auto bytes = llama2c_expected_bytes(llama2c_config(h, "header"), "header");
    if (implied) *implied = bytes;
    return bytes == file_bytes;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace detail

// Detects the format from the content (never throws for a path that exists).
inline ModelFormat detect_model_format(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_directory(path, ec))
    return fs::exists(path / "config.json", ec) ? ModelFormat::HfFolder : ModelFormat::Unknown;
  if (!fs::is_regular_file(path, ec)) return ModelFormat::Unknown;
  const std::string head = detail::read_head(path, 64);
  if (head.size() >= 4 && std::memcmp(head.data(), "GGUF", 4) == 0) return ModelFormat::Gguf;
  if (detail::safetensors_shaped(head)) {
    try {
      SafetensorsFile f(path);
      const auto it = f.metadata().find("lowbit.kind");
      if (it != f.metadata().end()) return ModelFormat::LowbitQuantized;
    } catch (const Error&) {
      // A damaged header: a quantized file's loader reports the parse error itself (rather than the
      // Hugging Face path asking for a config.json).
      std::uint64_t header_len = 0;
      std::memcpy(&header_len, head.data(), 8);
      const std::string header = detail::read_head(path, static_cast<std::size_t>(8 + header_len));
      if (header.find("lowbit.kind") != std::string::npos) return ModelFormat::LowbitQuantized;
    }
    return ModelFormat::Safetensors;
  }
  if (detail::llama2c_shaped(head, static_cast<std::uint64_t>(fs::file_size(path, ec)))) return ModelFormat::Llama2c;
  return ModelFormat::Unknown;
}

// A short description of what the file at `path` looks like, for "expected a model" errors.
inline std::string describe_file(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(path, ec)) return "nothing (the path does not exist)";
  if (fs::is_directory(path, ec)) return "a directory without config.json";
  if (!fs::is_regular_file(path, ec)) return "not a regular file";
  const auto size = static_cast<std::uint64_t>(fs::file_size(path, ec));
  if (size == 0) return "an empty file";
  const std::string head = detail::read_head(path, 512);
  if (head.empty()) return "an unreadable file";
  auto starts = [&](const char* magic) { return head.rfind(magic, 0) == 0; };
  if (starts("PK\x03\x04")) return "a zip archive (a PyTorch .pt/.pth checkpoint or a .zip: convert it to safetensors or GGUF)";
  if (starts("\x1f\x8b")) return "a gzip archive (unpack it first)";
  if (starts("\x7f" "ELF")) return "an executable";
  if (starts("\x80\x02") || starts("\x80\x04") || starts("\x80\x05")) return "a Python pickle (convert it to safetensors)";
  std::size_t i = 0;
  while (i < head.size() && std::isspace(static_cast<unsigned char>(head[i]))) ++i;
  if (i < head.size() && (head[i] == '{' || head[i] == '[')) {
    if (head.find("\"model\"") != std::string::npos || head.find("\"added_tokens\"") != std::string::npos)
      return "a tokenizer JSON (pass it as --tokenizer)";
    if (head.find("\"hidden_size\"") != std::string::npos || head.find("\"architectures\"") != std::string::npos)
      return "a Hugging Face config.json (pass its folder)";
    return "a JSON text file";
  }
  bool text = true;
  for (unsigned char ch : head) text = text && (ch >= 0x20 || ch == '\n' || ch == '\r' || ch == '\t');
  if (text) return "a text file";
  std::uint64_t implied = 0;
  if (detail::llama2c_shaped(head, size, &implied) || implied != 0)
    return "a llama2.c header that implies " + std::to_string(implied) + " bytes, but the file has " +
           std::to_string(size) + " (truncated or padded)";
  char first[40];
  std::snprintf(first, sizeof first, "%02x %02x %02x %02x", static_cast<unsigned char>(head[0]),
                static_cast<unsigned char>(head.size() > 1 ? head[1] : 0),
                static_cast<unsigned char>(head.size() > 2 ? head[2] : 0),
                static_cast<unsigned char>(head.size() > 3 ? head[3] : 0));
  return std::string("unrecognized binary data (first bytes ") + first + ")";
}

[[noreturn]] inline void fail_unknown_model(const std::filesystem::path& path) {
  fail("model '", path.string(), "' looks like ", describe_file(path), "; expected ", kAcceptedModelFiles);
}

// Loads a fp32 checkpoint (GGUF, llama2.c, safetensors, HF folder) into canonical fp32 weights. A lowbit
// quantized file is refused here (io/open_model.hpp opens it, or dequantizes it on request).
inline nn::ModelWeights load_model(const std::filesystem::path& path) {
  std::error_code ec;
  LOWBIT_CHECK(std::filesystem::exists(path, ec), "model '", path.string(), "' does not exist");
  switch (detect_model_format(path)) {
    case ModelFormat::Gguf: return load_gguf(path);
    case ModelFormat::Llama2c: return load_llama2c(path);
    case ModelFormat::Safetensors:
    case ModelFormat::HfFolder: return load_hf_llama(path);
    case ModelFormat::LowbitQuantized:
      fail("model '", path.string(), "' is a lowbit quantized file; open it with io::open_model (or "
           "io::load_weights to dequantize it)");
    case ModelFormat::Unknown: break;
  }
  fail_unknown_model(path);
}

}  // namespace lowbit::io
