// lowbit's quantized model file: a plain safetensors container, so any safetensors reader can list and
// load it. Every quantized linear is stored as a few named tensors (codes, scales, zeros, ...), and so
// are the token table and the head when they are quantized too (the CLI's default: 8 bits); the RMSNorm
// gains, and fp32 tables, are F32 tensors. The metadata carries the
// model hyper-parameters, a format descriptor per linear, a `quantization_config` and a checksum per
// tensor. The loader recomputes every expected shape and dtype from the descriptor and refuses anything
// that does not match. Byte layout: docs/quantized-file.md. Nothing here is format-specific: a layer
// lists its own stored tensors (nn::Linear::stored_tensors) and is rebuilt from them through the format
// registry (nn/stored_linear.hpp, formats.hpp).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/hash.hpp"
#include "../core/stored_tensor.hpp"
#include "../core/tensor.hpp"
#include "../nn/config.hpp"
#include "../nn/encoded_linear.hpp"
#include "../nn/model.hpp"
#include "../nn/stored_linear.hpp"
#include "safetensors.hpp"

namespace lowbit::io {

// ---- writing ------------------------------------------------------------------------------------

inline constexpr const char* kQuantizedFileKind = "lowbit-quantized";
// Version 2 adds token tables and heads in weight formats; a file whose tables are fp32 is written as
// version 1, byte for byte what earlier lowbit wrote, and both versions are read.
inline constexpr int kQuantizedFileVersion = 2;
inline constexpr int kQuantizedFileVersionFp32Tables = 1;

// Metadata/tensor names of the token table and the head when they are stored in a weight format (a
// tied model stores one table, under the embedding's name).
inline constexpr const char* kTokenTableName = "tok_embeddings";
inline constexpr const char* kHeadName = "output";


inline nlohmann::json model_config_json(const nn::ModelConfig& c) { return c; }

inline nn::ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source) {
  nn::ModelConfig c;
  try {
    c = j.get<nn::ModelConfig>();
  } catch (const Error& e) {
    fail(source, ": metadata 'lowbit.model_config': ", e.what());
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": metadata 'lowbit.model_config' is malformed (", e.what(), ")");
  }
  c.validate(source);
  return c;
}

namespace detail {

// The fewest bits per weight any weight format stores (a bound for checks before allocation).
inline constexpr double kMinStoredBitsPerWeight = 0.5;

inline SafeDtype safe_dtype_of(StoredType t) {
  switch (t) {
    case StoredType::U8: return SafeDtype::U8;
    case StoredType::U16: return SafeDtype::U16;
    case StoredType::U32: return SafeDtype::U32;
    case StoredType::F16: return SafeDtype::F16;
    case StoredType::F32: return SafeDtype::F32;
  }
  fail("unknown stored tensor type");
}

// Adds one linear's tensors under `name` (e.g. "layers.0.attention.wq"); returns its descriptor entry.
// A layer in its trainable form is written as its inference form (held alive in `keep_alive`).
inline nlohmann::json add_linear(SafetensorsWriter& writer, const std::string& name, const nn::Linear& linear,
                                 std::vector<nn::LinearPtr>& keep_alive, nlohmann::json& checksums) {
  const nn::Linear* stored = &linear;
  if (auto inference = linear.inference_form()) {
    keep_alive.push_back(std::move(inference));
    stored = keep_alive.back().get();
  }
  nlohmann::json entry = {{"format", stored->format()}, {"shape", {stored->out_features(), stored->in_features()}}};
  for (const auto& t : stored->stored_tensors()) {
    writer.add_view(name + "." + t.suffix, safe_dtype_of(t.type), t.shape, t.data);
    checksums[name + "." + t.suffix] = fnv1a64_hex(t.data, t.bytes);
  }
  if (stored->format() != "f32") entry["bytes"] = stored->bytes();
  return entry;
}

inline void add_f32(SafetensorsWriter& writer, const std::string& name, std::vector<index_t> shape,
                    const std::vector<float>& data, nlohmann::json& checksums) {
  writer.add_view(name, SafeDtype::F32, std::move(shape), data.data());
  checksums[name] = fnv1a64_hex(data.data(), data.size() * 4);
}

inline void write_metadata(SafetensorsWriter& writer, const nlohmann::json& formats, const nlohmann::json& checksums,
                           const nlohmann::json& extra) {
  const bool tables = formats.contains(kTokenTableName) || formats.contains(kHeadName);
  writer.set_metadata("format", "pt");  // what Hugging Face loaders look for; the tensors are plain
  writer.set_metadata("lowbit.kind", kQuantizedFileKind);
  writer.set_metadata("lowbit.version",
                      std::to_string(tables ? kQuantizedFileVersion : kQuantizedFileVersionFp32Tables));
  writer.set_metadata("lowbit.tensor_formats", formats.dump());
  writer.set_metadata("lowbit.checksums", checksums.dump());
  for (auto& [key, value] : extra.items()) writer.set_metadata(key, value.is_string() ? value.get<std::string>() : value.dump());
}

}  // namespace detail


// Writes the whole model: quantized linears as their packed tensors; the token table and the head in
// their format (fp32 as "<name>.weight" F32 tensors, anything else through the format's tensors and a
// descriptor entry); the RMSNorm gains as F32. `quantization_config` is stored verbatim (as JSON text)
// under the metadata key of that name.
inline void write_quantized_model(const std::filesystem::path& path, nn::Llama& model,
                                  const nlohmann::json& quantization_config, const std::string& source_model = {}) {
  const auto& c = model.config();
  SafetensorsWriter writer;
  nlohmann::json formats = nlohmann::json::object(), checksums = nlohmann::json::object();
  std::vector<nn::LinearPtr> keep_alive;
  if (const auto* table = model.token_embedding())
    formats[kTokenTableName] = detail::add_linear(writer, kTokenTableName, *table, keep_alive, checksums);
  else
    detail::add_f32(writer, "tok_embeddings.weight", {c.vocab_size, c.dim}, model.tok_embeddings(), checksums);
  for (int l = 0; l < c.n_layers; ++l) {
    detail::add_f32(writer, nn::ModelWeights::layer_name(l, "attention_norm.weight"), {c.dim}, model.attention_norm(l),
                    checksums);
    detail::add_f32(writer, nn::ModelWeights::layer_name(l, "ffn_norm.weight"), {c.dim}, model.ffn_norm(l), checksums);
    for (auto role : nn::kAllLinearRoles) {
      const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
      formats[name] = detail::add_linear(writer, name, model.linear(l, role), keep_alive, checksums);
    }
  }
  detail::add_f32(writer, "norm.weight", {c.dim}, model.final_norm(), checksums);
  if (!c.tied_embeddings) {
    if (const auto* head = model.output_head())
      formats[kHeadName] = detail::add_linear(writer, kHeadName, *head, keep_alive, checksums);
    else
      detail::add_f32(writer, "output.weight", {c.vocab_size, c.dim}, model.output_weight(), checksums);
  }
  nlohmann::json extra = {{"lowbit.model_config", model_config_json(c).dump()},
                          {"quantization_config", quantization_config.dump()}};
  if (!source_model.empty()) extra["lowbit.source_model"] = source_model;
  detail::write_metadata(writer, formats, checksums, extra);
  writer.write(path);
}

// ---- reading ------------------------------------------------------------------------------------

namespace detail {

inline nlohmann::json metadata_json(const SafetensorsFile& f, const std::string& key) {
  auto it = f.metadata().find(key);
  LOWBIT_CHECK(it != f.metadata().end(), f.path(), ": metadata key '", key,
               "' is missing (not a lowbit quantized model file, or written by another tool)");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail(f.path(), ": metadata '", key, "' is not valid JSON (", e.what(), ")");
  }
}

inline std::string shape_string(const std::vector<index_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Checks one stored tensor against what the descriptor implies, then its checksum.
inline const SafeTensorInfo& expect_tensor(const SafetensorsFile& f, const std::string& name, SafeDtype dtype,
                                           const std::vector<index_t>& shape, const nlohmann::json& checksums,
                                           std::set<std::string>& seen) {
  const auto* t = f.find(name);
  LOWBIT_CHECK(t != nullptr, f.path(), ": tensor '", name, "' is missing");
  LOWBIT_CHECK(t->dtype == dtype, f.path(), ": tensor '", name, "' has dtype ", safe_dtype_name(t->dtype), ", expected ",
               safe_dtype_name(dtype));
  LOWBIT_CHECK(t->shape == shape, f.path(), ": tensor '", name, "' has shape ", shape_string(t->shape), ", expected ",
               shape_string(shape));
  LOWBIT_CHECK(checksums.contains(name) && checksums[name].is_string(), f.path(), ": tensor '", name,
               "' has no checksum string in 'lowbit.checksums'");
  const auto found = fnv1a64_hex(t->data, t->bytes());
  LOWBIT_CHECK(checksums[name].get<std::string>() == found, f.path(), ": tensor '", name,
               "' is corrupted or was modified (checksum ", found, ", expected ", checksums[name].get<std::string>(),
               ")");
  seen.insert(name);
  return *t;
}

inline std::vector<float> read_f32(const SafetensorsFile& f, const std::string& name, const std::vector<index_t>& shape,
                                   const nlohmann::json& checksums, std::set<std::string>& seen) {
  const auto& t = expect_tensor(f, name, SafeDtype::F32, shape, checksums, seen);
  return f.to_f32(t);
}

// Bytes of every tensor whose name starts with `prefix`.
inline std::uint64_t bytes_under(const SafetensorsFile& f, const std::string& prefix) {
  std::uint64_t held = 0;
  for (const auto& t : f.tensors())
    if (t.name.compare(0, prefix.size(), prefix) == 0) held += t.bytes();
  return held;
}

// Copies tensor `tensor_name` into a slot a reader allocated, after checking dtype, shape, checksum and size.
inline void fill_slot(const SafetensorsFile& f, const std::string& tensor_name, const StoredTensorSlot& slot,
                      const nlohmann::json& checksums, std::set<std::string>& seen) {
  const auto& t = expect_tensor(f, tensor_name, safe_dtype_of(slot.type), slot.shape, checksums, seen);
  LOWBIT_CHECK(t.bytes() == slot.bytes, f.path(), ": tensor '", tensor_name, "' holds ", t.bytes(), " bytes, expected ",
               slot.bytes);
  std::memcpy(slot.data, t.data, slot.bytes);
}

// Rebuilds one linear from its descriptor entry: the registry allocates the format's storage for the
// shape the model needs, and every tensor it lists is checked (dtype, shape, size, checksum) and copied.
inline nn::LinearPtr read_linear(const SafetensorsFile& f, const std::string& name, const nlohmann::json& entry,
                                 index_t out, index_t in, const nlohmann::json& checksums, std::set<std::string>& seen) {
  LOWBIT_CHECK(entry.is_object() && entry.contains("format") && entry["format"].is_string() && entry.contains("shape"),
               f.path(), ": format descriptor of '", name, "' is malformed: ", entry.dump());
  const auto format = entry["format"].get<std::string>();
  LOWBIT_CHECK(entry["shape"] == nlohmann::json({out, in}), f.path(), ": '", name, "' is described as ",
               entry["shape"].dump(), " but the model needs [", out, ", ", in, "]");
  LOWBIT_CHECK(format == "f32" || is_registered_format(format), f.path(), ": '", name, "' has format '", format,
               "', which this lowbit does not know (registered: f32, ", lowbit::detail::joined(format_names()), ")");
  // The format's storage is allocated for [out, in] before its tensors are compared slot by slot, so
  // first make sure the file holds enough bytes under this name for such a matrix: no registered format
  // stores less than kMinStoredBitsPerWeight (1-bit codes, 16-weight vector codes). A configuration
  // that claims a larger matrix than the file holds fails here, not in the allocator.
  const std::uint64_t held = bytes_under(f, name + ".");
  const double needed = static_cast<double>(out) * static_cast<double>(in) * kMinStoredBitsPerWeight / 8.0;
  LOWBIT_CHECK(static_cast<double>(held) >= needed, f.path(), ": '", name, "' is described as a [", out, ", ", in,
               "] matrix, but the file holds only ", held, " bytes of its tensors (at least ",
               static_cast<std::uint64_t>(needed), " expected)");
  return nn::make_stored_linear(format, out, in, [&](const StoredTensorSlot& slot) {
    fill_slot(f, name + "." + slot.suffix, slot, checksums, seen);
  });
}

inline void check_kind(const SafetensorsFile& f) {
  auto it = f.metadata().find("lowbit.kind");
  LOWBIT_CHECK(it != f.metadata().end() && it->second == kQuantizedFileKind, f.path(),
               ": not a lowbit quantized model file (metadata 'lowbit.kind' is ",
               it == f.metadata().end() ? std::string("missing") : "'" + it->second + "'", ")");
  auto v = f.metadata().find("lowbit.version");
  LOWBIT_CHECK(v != f.metadata().end() && (v->second == std::to_string(kQuantizedFileVersion) ||
                                             v->second == std::to_string(kQuantizedFileVersionFp32Tables)),
               f.path(),
               ": quantized file version ", v == f.metadata().end() ? std::string("missing") : v->second,
               " is not supported (this lowbit reads versions ", kQuantizedFileVersionFp32Tables, " and ",
               kQuantizedFileVersion, ")");
}

}  // namespace detail

// Loads a quantized model file as an nn::Llama with QuantizedLinear layers; every tensor is checked
// (dtype, shape against the configuration, checksum) before it is copied, and the model is built from
// the tensors alone: nothing is allocated from the configuration before the file is seen to hold it.
inline nn::Llama load_quantized_model(const std::filesystem::path& path) {
  SafetensorsFile f(path);
  detail::check_kind(f);
  const auto c = model_config_from_json(detail::metadata_json(f, "lowbit.model_config"), f.path());
  const auto formats = detail::metadata_json(f, "lowbit.tensor_formats");
  const auto checksums = detail::metadata_json(f, "lowbit.checksums");
  LOWBIT_CHECK(formats.is_object() && checksums.is_object(), f.path(),
               ": metadata 'lowbit.tensor_formats' and 'lowbit.checksums' must be JSON objects");
  std::set<std::string> seen;
  // The configuration must match the tensors present before the model is sized from it.
  const auto has = [&](const std::string& name) { return f.find(name) != nullptr; };
  const std::string last_norm = nn::ModelWeights::layer_name(c.n_layers - 1, "ffn_norm.weight");
  LOWBIT_CHECK(has(last_norm) && !has(nn::ModelWeights::layer_name(c.n_layers, "ffn_norm.weight")), f.path(),
               ": the configuration says ", c.n_layers, " layers, but the file holds ",
               has(last_norm) ? "more" : "fewer", " (tensor '", last_norm, "' is ", has(last_norm) ? "present" : "missing",
               ")");
  auto read_table = [&](const char* name, std::vector<float>& fp32) -> nn::LinearPtr {
    if (formats.contains(name)) return detail::read_linear(f, name, formats[name], c.vocab_size, c.dim, checksums, seen);
    fp32 = detail::read_f32(f, std::string(name) + ".weight", {c.vocab_size, c.dim}, checksums, seen);
    return nullptr;
  };
  std::vector<float> table_f32, head_f32;
  auto table = read_table(kTokenTableName, table_f32);
  nn::LinearPtr head = c.tied_embeddings ? nullptr : read_table(kHeadName, head_f32);

  auto model = nn::Llama::unfilled(c, f.path());
  if (table) {
    if (c.tied_embeddings) model.set_output_head(std::move(table));
    else model.set_token_embedding(std::move(table));
  } else {
    model.tok_embeddings() = std::move(table_f32);
  }
  if (head) model.set_output_head(std::move(head));
  else if (!c.tied_embeddings) model.output_weight() = std::move(head_f32);
  model.final_norm() = detail::read_f32(f, "norm.weight", {c.dim}, checksums, seen);
  for (int l = 0; l < c.n_layers; ++l) {
    model.attention_norm(l) =
        detail::read_f32(f, nn::ModelWeights::layer_name(l, "attention_norm.weight"), {c.dim}, checksums, seen);
    model.ffn_norm(l) = detail::read_f32(f, nn::ModelWeights::layer_name(l, "ffn_norm.weight"), {c.dim}, checksums, seen);
    std::array<std::shared_ptr<nn::ActivationEncoder>, 4> encoders{};  // per distinct input (encoded models)
    for (auto role : nn::kAllLinearRoles) {
      const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
      LOWBIT_CHECK(formats.contains(name), f.path(), ": no format descriptor for '", name, "' in 'lowbit.tensor_formats'");
      auto [out, in] = nn::linear_role_shape(c, role);
      const auto& entry = formats[name];
      const auto format = entry.is_object() && entry.contains("format") && entry["format"].is_string()
                              ? entry["format"].get<std::string>()
                              : std::string();
      const auto enc = nn::parse_encoded_descriptor(format);
      if (!enc.encoded) {
        model.set_linear(l, role, detail::read_linear(f, name, entry, out, in, checksums, seen));
        continue;
      }
      // A 1-bit-activation layer (nn/encoded_linear.hpp): the inner layer, and the encoder of its input,
      // stored once under the input's first reader and shared by the others.
      auto inner_entry = entry;
      inner_entry["format"] = enc.inner;
      auto inner = detail::read_linear(f, name, inner_entry, out, in, checksums, seen);
      auto& shared = encoders[static_cast<std::size_t>(nn::encoded_input_of(role))];
      if (enc.shared) {
        LOWBIT_CHECK(shared && shared->spec().name() == enc.spec.name(), f.path(), ": '", name,
                     "' shares the encoder of its input (", enc.spec.name(), "), but no earlier linear of layer ", l,
                     " reading that input stores ", shared ? "that kind (it stores " + shared->spec().name() + ")" : "one");
        model.set_linear(l, role, std::make_unique<nn::EncodedLinear>(std::move(inner), shared, false));
      } else {
        LOWBIT_CHECK(!shared, f.path(), ": '", name, "' stores an encoder for an input whose encoder layer ", l,
                     " already has (one encoder per input: the others say ':shared')");
        LOWBIT_CHECK(enc.spec.kind != nn::EncoderKind::LowRank || enc.spec.rank <= in, f.path(), ": '", name, "' has a ",
                     enc.spec.name(), " encoder for a ", in, "-wide input");
        // the encoder's size must be held by the file before it is allocated
        const double h = enc.spec.kind == nn::EncoderKind::LowRank ? static_cast<double>(enc.spec.rank)
                         : enc.spec.kind == nn::EncoderKind::Mlp   ? static_cast<double>(in / 2)
                                                                   : 0.0;
        const double needed = enc.spec.kind == nn::EncoderKind::None ? 0.0 : (2.0 * in + 2.0 * in * h) * sizeof(float);
        const std::string prefix = name + ".encoder.";
        const std::uint64_t held = detail::bytes_under(f, prefix);
        LOWBIT_CHECK(static_cast<double>(held) >= needed, f.path(), ": '", name, "' has a ", enc.spec.name(),
                     " encoder of ", static_cast<std::uint64_t>(needed), " bytes, but the file holds ", held,
                     " bytes under '", prefix, "*'");
        shared = std::make_shared<nn::ActivationEncoder>(enc.spec, in);
        for (const auto& slot : shared->stored_slots())
          detail::fill_slot(f, prefix + slot.suffix, slot, checksums, seen);
        model.set_linear(l, role, std::make_unique<nn::EncodedLinear>(std::move(inner), shared, true));
      }
    }
  }
  for (const auto& t : f.tensors())
    LOWBIT_CHECK(seen.count(t.name), f.path(), ": unexpected tensor '", t.name,
                 "' (not implied by the model configuration and format descriptors)");
  return model;
}

// The quantization_config and source model recorded in a quantized file.
inline nlohmann::json quantized_model_info(const std::filesystem::path& path) {
  SafetensorsFile f(path);
  detail::check_kind(f);
  nlohmann::json info = {{"quantization_config", detail::metadata_json(f, "quantization_config")},
                         {"model_config", detail::metadata_json(f, "lowbit.model_config")},
                         {"tensor_formats", detail::metadata_json(f, "lowbit.tensor_formats")}};
  auto it = f.metadata().find("lowbit.source_model");
  if (it != f.metadata().end()) info["source_model"] = it->second;
  return info;
}

// ---- per-block checkpoints (calibration resume) --------------------------------------------------

// The seven linears of one block, in the same tensor layout as the model file, and the block's two
// RMSNorm gains (block fine-tuning may train them, so a resume must restore them too).
inline void save_block_checkpoint(const std::filesystem::path& path, nn::Llama& model, int layer) {
  SafetensorsWriter writer;
  nlohmann::json formats = nlohmann::json::object(), checksums = nlohmann::json::object();
  std::vector<nn::LinearPtr> keep_alive;
  for (auto role : nn::kAllLinearRoles) {
    const auto name = nn::ModelWeights::layer_name(layer, nn::linear_role_name(role));
    formats[name] = detail::add_linear(writer, name, model.linear(layer, role), keep_alive, checksums);
  }
  const auto dim = static_cast<index_t>(model.config().dim);
  detail::add_f32(writer, nn::ModelWeights::layer_name(layer, "attention_norm.weight"), {dim},
                  model.attention_norm(layer), checksums);
  detail::add_f32(writer, nn::ModelWeights::layer_name(layer, "ffn_norm.weight"), {dim}, model.ffn_norm(layer),
                  checksums);
  detail::write_metadata(writer, formats, checksums, {{"lowbit.block", std::to_string(layer)}});
  writer.write(path);
}

inline void load_block_checkpoint(const std::filesystem::path& path, nn::Llama& model, int layer) {
  SafetensorsFile f(path);
  detail::check_kind(f);
  const auto formats = detail::metadata_json(f, "lowbit.tensor_formats");
  const auto checksums = detail::metadata_json(f, "lowbit.checksums");
  std::set<std::string> seen;
  for (auto role : nn::kAllLinearRoles) {
    const auto name = nn::ModelWeights::layer_name(layer, nn::linear_role_name(role));
    LOWBIT_CHECK(formats.contains(name), f.path(), ": block checkpoint has no '", name, "'");
    auto [out, in] = nn::linear_role_shape(model.config(), role);
    model.set_linear(layer, role, detail::read_linear(f, name, formats[name], out, in, checksums, seen));
  }
  const auto dim = static_cast<index_t>(model.config().dim);
  model.attention_norm(layer) =
      detail::read_f32(f, nn::ModelWeights::layer_name(layer, "attention_norm.weight"), {dim}, checksums, seen);
  model.ffn_norm(layer) = detail::read_f32(f, nn::ModelWeights::layer_name(layer, "ffn_norm.weight"), {dim}, checksums, seen);
}

}  // namespace lowbit::io
