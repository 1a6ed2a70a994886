// Structure-aware input for the lowbit quantized model file and the block checkpoints (fuzz targets
// `quantized` and `checkpoint`). Both are safetensors containers whose metadata holds JSON documents
// inside JSON strings and an FNV-1a checksum per tensor, so mutating raw file bytes almost always breaks
// the header length, the outer JSON or a checksum before the loader's own logic runs. The fuzzer
// mutates a recipe instead, and the harness builds a valid container around it:
//
//   piece 0  harness-specific (quantized: the text of 'lowbit.model_config'; checkpoint: the host model)
//   piece 1  the text of 'lowbit.tensor_formats' (stored verbatim, may be any bytes)
//   piece 2  the tensors, in data order: {"name": ["DTYPE", [dims...]], ...}
//   piece 3  extra __metadata__ entries {"key": value} (strings verbatim, anything else as JSON text);
//            they override the defaults, so 'lowbit.kind', 'lowbit.version' or 'lowbit.checksums' can be
//            damaged on purpose
//   piece 4  raw tensor bytes, repeated to fill every tensor (all zero when empty)
//
// pieces separated by "\n=====\n". The harness writes a well-formed safetensors file with correct
// data_offsets and correct checksums ('lowbit.checksums') of the bytes it wrote. tools/fuzz_corpus.py
// turns real quantized files into recipes (the seeds).
#pragma once

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include <lowbit/core/hash.hpp>
#include <lowbit/io/safetensors.hpp>
#include <lowbit/nn/config.hpp>

#include "fuzz_common.hpp"

namespace lowbit_fuzz {

// Bytes of tensor data a recipe may ask for; larger recipes are skipped (a real file would have to be
// that large, so such inputs test nothing the safetensors target does not).
inline constexpr std::uint64_t kMaxRecipeDataBytes = 4u << 20;

struct Recipe {
  std::string piece0, tensor_formats, tensors, extra_metadata, data;
};

inline Recipe parse_recipe(const std::uint8_t* data, std::size_t size) {
  auto p = split_parts(data, size, 5);
  return {std::move(p[0]), std::move(p[1]), std::move(p[2]), std::move(p[3]), std::move(p[4])};
}

// The safetensors bytes for `r` with `base_metadata` (piece 3 overrides it); nullopt when the recipe
// itself is unusable (piece 2 is not a valid tensor list, or asks for too many bytes).
inline std::optional<std::string> build_lowbit_safetensors(const Recipe& r, nlohmann::json base_metadata) {
  using nlohmann::json;
  const json tensors = json::parse(r.tensors, nullptr, /*allow_exceptions=*/false);
  if (!tensors.is_object()) return std::nullopt;
  struct Entry {
    std::string name;
    lowbit::io::SafeDtype dtype;
    std::vector<std::uint64_t> shape;
    std::uint64_t bytes;
  };
  std::vector<Entry> entries;
  std::uint64_t total = 0;
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    const auto& v = it.value();
    if (it.key() == "__metadata__" || !v.is_array() || v.size() != 2 || !v[0].is_string() || !v[1].is_array())
      return std::nullopt;
    Entry e{it.key(), {}, {}, 0};
    if (!lowbit::io::parse_safe_dtype(v[0].get<std::string>(), e.dtype) || v[1].size() > 8) return std::nullopt;
    std::uint64_t numel = 1;
    for (const auto& d : v[1]) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > kMaxRecipeDataBytes) return std::nullopt;
      e.shape.push_back(d.get<std::uint64_t>());
      numel *= e.shape.back();
      if (numel > kMaxRecipeDataBytes) return std::nullopt;
    }
    e.bytes = numel * lowbit::io::safe_dtype_size(e.dtype);
    total += e.bytes;
    if (total > kMaxRecipeDataBytes) return std::nullopt;
    entries.push_back(std::move(e));
  }

  // Tensor bytes: piece 4 repeated (or zeros), then the checksums of exactly these bytes.
  std::string body(static_cast<std::size_t>(total), '\0');
  if (!r.data.empty())
    for (std::size_t i = 0; i < body.size(); ++i) body[i] = r.data[i % r.data.size()];
  json header = json::object();
  json checksums = json::object();
  std::uint64_t offset = 0;
  for (const auto& e : entries) {
    header[e.name] = {{"dtype", lowbit::io::safe_dtype_name(e.dtype)},
                      {"shape", e.shape},
                      {"data_offsets", {offset, offset + e.bytes}}};
    checksums[e.name] = lowbit::fnv1a64_hex(body.data() + offset, static_cast<std::size_t>(e.bytes));
    offset += e.bytes;
  }
  base_metadata["lowbit.checksums"] = checksums.dump();
  const json extra = json::parse(r.extra_metadata, nullptr, /*allow_exceptions=*/false);
  if (extra.is_object())
    for (auto it = extra.begin(); it != extra.end(); ++it)
      base_metadata[it.key()] = it.value().is_string()
                                     ? it.value().get<std::string>()
                                     : it.value().dump(-1, ' ', false, json::error_handler_t::replace);
  header["__metadata__"] = base_metadata;
  // Pieces may hold invalid UTF-8: replaced (U+FFFD) so that the container stays valid JSON.
  std::string text = header.dump(-1, ' ', false, json::error_handler_t::replace);
  while (text.size() % 8) text.push_back(' ');
  std::string file(8, '\0');
  const std::uint64_t len = text.size();
  std::memcpy(file.data(), &len, 8);
  file += text;
  file += body;
  return file;
}

// The default metadata of a lowbit file whose 'lowbit.tensor_formats' is `formats`.
inline nlohmann::json lowbit_metadata(const std::string& formats) {
  return {{"format", "pt"},
          {"lowbit.kind", "lowbit-quantized"},
          {"lowbit.version", "2"},
          {"lowbit.tensor_formats", formats}};
}

// Whether a model of this shape is cheap enough to build and run on every input (128K parameters).
inline bool small_model(const lowbit::nn::ModelConfig& c) {
  const double per_layer = 4.0 * c.dim * c.dim + 3.0 * c.dim * c.hidden_dim;
  return double(c.vocab_size) * c.dim + c.n_layers * per_layer <= double(1 << 17);
}

}  // namespace lowbit_fuzz
