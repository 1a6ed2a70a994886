// One entry point for every checkpoint format: `load_model(path)` looks at the file's magic bytes
// (GGUF), its shape (safetensors: 8-byte header length followed by '{'), the folder contents (Hugging
// Face), or the .bin extension (llama2.c, which has no magic) and calls the matching loader, so tools
// take --model FILE without a format flag. Unknown files get an error listing what is accepted.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "../core/error.hpp"
#include "../nn/weights.hpp"
#include "gguf.hpp"
#include "hf_llama.hpp"
#include "llama2c.hpp"
#include "safetensors.hpp"

namespace lowbit::io {

enum class ModelFormat { Gguf, Llama2c, Safetensors, HfFolder, Unknown };

inline const char* model_format_name(ModelFormat f) {
  switch (f) {
    case ModelFormat::Gguf: return "gguf";
    case ModelFormat::Llama2c: return "llama2.c";
    case ModelFormat::Safetensors: return "safetensors";
    case ModelFormat::HfFolder: return "hugging-face folder";
    case ModelFormat::Unknown: break;
  }
  return "unknown";
}

// Detects the format from the first bytes (and the extension for llama2.c); never throws for a
// readable path.
inline ModelFormat detect_model_format(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  if (fs::is_directory(path))
    return fs::exists(path / "config.json") ? ModelFormat::HfFolder : ModelFormat::Unknown;
  std::ifstream in(path, std::ios::binary);
  if (!in) return ModelFormat::Unknown;
  unsigned char head[9] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = in.gcount();
  if (got >= 4 && std::memcmp(head, "GGUF", 4) == 0) return ModelFormat::Gguf;
  if (got >= 9 && head[8] == '{') {
    std::uint64_t header_len = 0;
    std::memcpy(&header_len, head, 8);
    if (header_len >= 2 && header_len <= SafetensorsFile::kMaxHeaderBytes) return ModelFormat::Safetensors;
  }
  if (path.extension() == ".bin" && got >= 4) return ModelFormat::Llama2c;
  return ModelFormat::Unknown;
}

// Loads any supported checkpoint into canonical fp32 weights (nn/weights.hpp).
inline nn::ModelWeights load_model(const std::filesystem::path& path) {
  LOWBIT_CHECK(std::filesystem::exists(path), "model '", path.string(), "' does not exist");
  switch (detect_model_format(path)) {
    case ModelFormat::Gguf: return load_gguf(path);
    case ModelFormat::Llama2c: return load_llama2c(path);
    case ModelFormat::Safetensors:
    case ModelFormat::HfFolder: return load_hf_llama(path);
    case ModelFormat::Unknown: break;
  }
  fail("model '", path.string(),
       "': unknown format (expected a GGUF file, a llama2.c .bin checkpoint, a .safetensors file with "
       "config.json beside it, or a Hugging Face folder with config.json)");
}

}  // namespace lowbit::io
