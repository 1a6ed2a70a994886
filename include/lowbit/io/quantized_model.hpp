// lowbit's quantized model file: a plain safetensors container, so any safetensors reader can list and
// load it. Every quantized linear is stored as a few named tensors (codes, scales, zeros, ...), the
// tensors that stay in floating point (embeddings, norms, head) as F32, and the metadata carries the
// model hyper-parameters, a format descriptor per linear, a `quantization_config` and a checksum per
// tensor. The loader recomputes every expected shape and dtype from the descriptor and refuses anything
// that does not match. Byte layout: docs/quantized-file.md. The format registry below is the one place
// a new format family is added (see `OtherFormats` and `PackedTensors`).
#pragma once

#include <cstdint>
#include <cstdio>
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../format/additive.hpp"  // AQLM formats (aqlm helper)
#include "../format/nf3.hpp"
#include "../format/uniform.hpp"
#include "../nn/model.hpp"
#include "../nn/quantized_linear.hpp"
#include "../quantizer.hpp"
#include "safetensors.hpp"

namespace lowbit::io {

// ---- format registry ----------------------------------------------------------------------------

template <class... Formats>
struct FormatList {};
template <class Format>
struct FormatTag {
  using type = Format;
};

// Formats the group-wise calibrators (RTN, GPTQ, AutoClip) can produce.
using GroupFormats = FormatList<Uniform<2, 64>, Uniform<2, 128>, Uniform<3, 64>, Uniform<3, 128>, Uniform<4, 64>,
                                Uniform<4, 128>, Uniform<8, 128>, NF3<64>, NF3<128>>;
// Other families the file can hold (AQLM adds Additive<M, B, G> instantiations here, plus a
// PackedTensors specialization below).
// The additive formats `lowbit quantize --method aqlm` can write. 3x7 and 4x6 (g8) spend 21 and 24
// code bits per 8 weights with 6 and 4 KiB of codebooks per matrix (3x8: 12 KiB), so on SmolLM2-sized
// matrices they land at ~2.75 and ~3.09 bits/weight where 3x8 lands at 3.22 (docs/aqlm.md).
using OtherFormats = FormatList<Additive<1, 8, 8>, Additive<2, 8, 8>, Additive<3, 8, 8>, Additive<4, 8, 8>,
                                Additive<8, 8, 8>, Additive<2, 8, 4>, Additive<1, 16, 8>, Additive<2, 15, 8>,
                                Additive<1, 16, 16>, Additive<2, 8, 16>, Additive<3, 7, 8>, Additive<4, 6, 8>>;

// The named tensors of one packed matrix: suffix, dtype, shape, and the storage bytes inside Packed.
struct PackedTensorView {
  std::string suffix;
  SafeDtype dtype;
  std::vector<index_t> shape;
  void* data;
  std::size_t bytes;
};

template <class Format>
struct PackedTensors;  // specialize per family: static std::vector<PackedTensorView> views(Packed&)

template <int Bits, int Group, UniformMode Mode>
struct PackedTensors<Uniform<Bits, Group, Mode>> {
  static std::vector<PackedTensorView> views(UniformPacked<Uniform<Bits, Group, Mode>>& p) {
    std::vector<PackedTensorView> v;
    v.push_back({"codes", SafeDtype::U32, {p.rows(), p.code_words_per_row()}, p.codes().data(),
                 p.codes().size() * 4});
    v.push_back({"scales", SafeDtype::F16, {p.rows(), p.groups_per_row()}, p.scales().data(), p.scales().size() * 2});
    if (p.zero_words_per_row() > 0)
      v.push_back({"zeros", SafeDtype::U32, {p.rows(), p.zero_words_per_row()}, p.zero_words().data(),
                   p.zero_words().size() * 4});
    return v;
  }
};

template <int Group>
struct PackedTensors<NF3<Group>> {
  static std::vector<PackedTensorView> views(NF3Packed<Group>& p) {
    return {{"codes", SafeDtype::U32, {p.rows(), p.words_per_row()}, p.codes().data(), p.codes().size() * 4},
            {"max", SafeDtype::F16, {p.rows(), p.groups_per_row()}, p.maxes().data(), p.maxes().size() * 2},
            {"min", SafeDtype::F16, {p.rows(), p.groups_per_row()}, p.mins().data(), p.mins().size() * 2}};
  }
};

// ---- AQLM (aqlm helper): codes [rows, words_per_row] u32, codebooks [M, 2^B, G] f16, scales [rows] f16 ----
template <int M, int B, int G>
struct PackedTensors<Additive<M, B, G>> {
  static std::vector<PackedTensorView> views(AdditivePackedOf<M, B, G>& p) {
    const index_t K = index_t{1} << B;
    return {{"codes", SafeDtype::U32, {p.rows(), p.words_per_row()}, p.codes().data(), p.codes().size() * 4},
            {"codebooks", SafeDtype::F16, {M, K, G}, p.codebooks().data(), p.codebooks().size() * 2},
            {"scales", SafeDtype::F16, {p.rows()}, p.scales().data(), p.scales().size() * 2}};
  }
};
// ---- end AQLM ----

namespace detail {
template <class Fn, class First, class... Rest>
auto visit_in(const std::string& descriptor, Fn& fn, FormatList<First, Rest...>, const char* what) {
  if (Quantizer<First>::name() == descriptor) return fn(FormatTag<First>{});
  if constexpr (sizeof...(Rest) > 0) {
    return visit_in(descriptor, fn, FormatList<Rest...>{}, what);
  } else {
    std::string known;
    auto list = [&]<class... F>(FormatList<F...>) { ((known += (known.empty() ? "" : ", ") + Quantizer<F>::name()), ...); };
    list(GroupFormats{});
    list(OtherFormats{});
    fail("unknown or unsupported ", what, " '", descriptor, "' (supported: ", known, ")");
  }
}
template <class... A, class... B>
FormatList<A..., B...> concat(FormatList<A...>, FormatList<B...>) {
  return {};
}
}  // namespace detail

using AllFormats = decltype(detail::concat(GroupFormats{}, OtherFormats{}));

// Calls fn(FormatTag<F>{}) for the registered format whose Quantizer<F>::name() is `descriptor`.
template <class Fn>
auto visit_format(const std::string& descriptor, Fn&& fn) {
  return detail::visit_in(descriptor, fn, AllFormats{}, "format");
}
// The same over the formats with per-group min/max parameters (what RTN/GPTQ/AutoClip calibrate).
template <class Fn>
auto visit_group_format(const std::string& descriptor, Fn&& fn) {
  return detail::visit_in(descriptor, fn, GroupFormats{}, "group-wise format");
}

// ---- writing ------------------------------------------------------------------------------------

inline constexpr const char* kQuantizedFileKind = "lowbit-quantized";
inline constexpr int kQuantizedFileVersion = 1;

inline std::string fnv1a64_hex(const void* data, std::size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (std::size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

inline nlohmann::json model_config_json(const nn::ModelConfig& c) {
  return {{"dim", c.dim},
          {"hidden_dim", c.hidden_dim},
          {"n_layers", c.n_layers},
          {"n_heads", c.n_heads},
          {"n_kv_heads", c.n_kv_heads},
          {"vocab_size", c.vocab_size},
          {"max_seq_len", c.max_seq_len},
          {"norm_eps", c.norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_layout", c.rope_layout == nn::RopeLayout::Interleaved ? "interleaved" : "half_split"},
          {"tied_embeddings", c.tied_embeddings}};
}

inline nn::ModelConfig model_config_from_json(const nlohmann::json& j, const std::string& source) {
  nn::ModelConfig c;
  try {
    c.dim = j.at("dim").get<int>();
    c.hidden_dim = j.at("hidden_dim").get<int>();
    c.n_layers = j.at("n_layers").get<int>();
    c.n_heads = j.at("n_heads").get<int>();
    c.n_kv_heads = j.at("n_kv_heads").get<int>();
    c.vocab_size = j.at("vocab_size").get<int>();
    c.max_seq_len = j.at("max_seq_len").get<int>();
    c.norm_eps = j.at("norm_eps").get<float>();
    c.rope_theta = j.at("rope_theta").get<float>();
    const auto layout = j.at("rope_layout").get<std::string>();
    LOWBIT_CHECK(layout == "interleaved" || layout == "half_split", source, ": unknown rope_layout '", layout, "'");
    c.rope_layout = layout == "interleaved" ? nn::RopeLayout::Interleaved : nn::RopeLayout::HalfSplit;
    c.tied_embeddings = j.at("tied_embeddings").get<bool>();
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": metadata 'lowbit.model_config' is incomplete or has a wrong type (", e.what(), ")");
  }
  c.validate(source);
  return c;
}

namespace detail {

// Adds one linear's tensors under `name` (e.g. "layers.0.attention.wq"); returns its descriptor entry.
inline nlohmann::json add_linear(SafetensorsWriter& writer, const std::string& name, nn::Linear& linear,
                                 std::vector<std::vector<float>>& keep_alive, nlohmann::json& checksums) {
  const std::string format = linear.format();
  nlohmann::json entry = {{"format", format}, {"shape", {linear.out_features(), linear.in_features()}}};
  if (format == "f32") {
    keep_alive.emplace_back(static_cast<std::size_t>(linear.out_features() * linear.in_features()));
    auto& w = keep_alive.back();
    linear.dequantize(MatrixView<float>(w.data(), linear.out_features(), linear.in_features()));
    writer.add_view(name + ".weight", SafeDtype::F32, {linear.out_features(), linear.in_features()}, w.data());
    checksums[name + ".weight"] = fnv1a64_hex(w.data(), w.size() * 4);
    return entry;
  }
  visit_format(format, [&](auto tag) {
    using Format = typename decltype(tag)::type;
    auto* q = dynamic_cast<nn::QuantizedLinear<Format>*>(&linear);
    LOWBIT_CHECK(q != nullptr, name, ": layer reports format '", format,
                 "' but is not a QuantizedLinear of that format; it cannot be serialized");
    auto& packed = const_cast<typename Quantizer<Format>::Packed&>(q->packed());
    for (const auto& v : PackedTensors<Format>::views(packed)) {
      writer.add_view(name + "." + v.suffix, v.dtype, v.shape, v.data);
      checksums[name + "." + v.suffix] = fnv1a64_hex(v.data, v.bytes);
    }
    entry["bytes"] = packed.bytes();
    return 0;
  });
  return entry;
}

inline void add_f32(SafetensorsWriter& writer, const std::string& name, std::vector<index_t> shape,
                    const std::vector<float>& data, nlohmann::json& checksums) {
  writer.add_view(name, SafeDtype::F32, std::move(shape), data.data());
  checksums[name] = fnv1a64_hex(data.data(), data.size() * 4);
}

inline void write_metadata(SafetensorsWriter& writer, const nlohmann::json& formats, const nlohmann::json& checksums,
                           const nlohmann::json& extra) {
  writer.set_metadata("format", "pt");  // what Hugging Face loaders look for; the tensors are plain
  writer.set_metadata("lowbit.kind", kQuantizedFileKind);
  writer.set_metadata("lowbit.version", std::to_string(kQuantizedFileVersion));
  writer.set_metadata("lowbit.tensor_formats", formats.dump());
  writer.set_metadata("lowbit.checksums", checksums.dump());
  for (auto& [key, value] : extra.items()) writer.set_metadata(key, value.is_string() ? value.get<std::string>() : value.dump());
}

}  // namespace detail

// Writes the whole model: quantized linears as their packed tensors, everything else as F32.
// `quantization_config` is stored verbatim (as JSON text) under the metadata key of that name.
inline void write_quantized_model(const std::filesystem::path& path, nn::Llama& model,
                                  const nlohmann::json& quantization_config, const std::string& source_model = {}) {
  const auto& c = model.config();
  SafetensorsWriter writer;
  nlohmann::json formats = nlohmann::json::object(), checksums = nlohmann::json::object();
  std::vector<std::vector<float>> keep_alive;
  keep_alive.reserve(static_cast<std::size_t>(c.n_layers) * nn::kLinearRoles);
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
  if (!c.tied_embeddings) detail::add_f32(writer, "output.weight", {c.vocab_size, c.dim}, model.output_weight(), checksums);
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
  LOWBIT_CHECK(checksums.contains(name), f.path(), ": tensor '", name, "' has no checksum in 'lowbit.checksums'");
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

// Rebuilds one linear from its descriptor entry.
inline nn::LinearPtr read_linear(const SafetensorsFile& f, const std::string& name, const nlohmann::json& entry,
                                 index_t out, index_t in, const nlohmann::json& checksums, std::set<std::string>& seen) {
  LOWBIT_CHECK(entry.is_object() && entry.contains("format") && entry["format"].is_string() && entry.contains("shape"),
               f.path(), ": format descriptor of '", name, "' is malformed: ", entry.dump());
  const auto format = entry["format"].get<std::string>();
  const std::vector<index_t> shape = entry["shape"].get<std::vector<index_t>>();
  LOWBIT_CHECK(shape == std::vector<index_t>({out, in}), f.path(), ": '", name, "' is described as ",
               shape_string(shape), " but the model needs [", out, ", ", in, "]");
  if (format == "f32") {
    auto w = read_f32(f, name + ".weight", {out, in}, checksums, seen);
    return std::make_unique<nn::DenseLinear>(out, in, std::move(w));
  }
  return visit_format(format, [&](auto tag) -> nn::LinearPtr {
    using Format = typename decltype(tag)::type;
    using Packed = typename Quantizer<Format>::Packed;
    Packed packed(out, in);
    for (const auto& v : PackedTensors<Format>::views(packed)) {
      const auto& t = expect_tensor(f, name + "." + v.suffix, v.dtype, v.shape, checksums, seen);
      LOWBIT_CHECK(t.bytes() == v.bytes, f.path(), ": tensor '", name, ".", v.suffix, "' holds ", t.bytes(),
                   " bytes, expected ", v.bytes);
      std::memcpy(v.data, t.data, v.bytes);
    }
    return std::make_unique<nn::QuantizedLinear<Format>>(std::move(packed));
  });
}

// A ModelWeights with the FP tensors of the file and zero placeholders for the linears (replaced next).
inline nn::ModelWeights skeleton_weights(const nn::ModelConfig& c, const std::string& source) {
  nn::ModelWeights w;
  w.config = c;
  w.source = source;
  auto zeros = [](std::vector<index_t> shape) {
    nn::Tensor t;
    t.shape = std::move(shape);
    t.data.assign(static_cast<std::size_t>(t.numel()), 0.0f);
    return t;
  };
  w.tensors["tok_embeddings.weight"] = zeros({c.vocab_size, c.dim});
  w.tensors["norm.weight"] = zeros({c.dim});
  if (!c.tied_embeddings) w.tensors["output.weight"] = zeros({c.vocab_size, c.dim});
  for (int l = 0; l < c.n_layers; ++l) {
    w.tensors[nn::ModelWeights::layer_name(l, "attention_norm.weight")] = zeros({c.dim});
    w.tensors[nn::ModelWeights::layer_name(l, "ffn_norm.weight")] = zeros({c.dim});
    for (auto r : nn::kAllLinearRoles) {
      auto [out, in] = nn::linear_role_shape(c, r);
      w.tensors[nn::ModelWeights::layer_name(l, std::string(nn::linear_role_name(r)) + ".weight")] = zeros({out, in});
    }
  }
  return w;
}

inline void check_kind(const SafetensorsFile& f) {
  auto it = f.metadata().find("lowbit.kind");
  LOWBIT_CHECK(it != f.metadata().end() && it->second == kQuantizedFileKind, f.path(),
               ": not a lowbit quantized model file (metadata 'lowbit.kind' is ",
               it == f.metadata().end() ? std::string("missing") : "'" + it->second + "'", ")");
  auto v = f.metadata().find("lowbit.version");
  LOWBIT_CHECK(v != f.metadata().end() && v->second == std::to_string(kQuantizedFileVersion), f.path(),
               ": quantized file version ", v == f.metadata().end() ? std::string("missing") : v->second,
               " is not supported (this lowbit reads version ", kQuantizedFileVersion, ")");
}

}  // namespace detail

// Whether `path` looks like a lowbit quantized model (a safetensors file with lowbit.kind metadata).
inline bool is_quantized_model_file(const std::filesystem::path& path) {
  try {
    if (!std::filesystem::is_regular_file(path)) return false;
    SafetensorsFile f(path);
    auto it = f.metadata().find("lowbit.kind");
    return it != f.metadata().end() && it->second == kQuantizedFileKind;
  } catch (const Error&) {
    return false;
  }
}

// Loads a quantized model file as an nn::Llama with QuantizedLinear layers; every tensor is checked.
inline nn::Llama load_quantized_model(const std::filesystem::path& path) {
  SafetensorsFile f(path);
  detail::check_kind(f);
  const auto config = model_config_from_json(detail::metadata_json(f, "lowbit.model_config"), f.path());
  const auto formats = detail::metadata_json(f, "lowbit.tensor_formats");
  const auto checksums = detail::metadata_json(f, "lowbit.checksums");
  std::set<std::string> seen;
  nn::ModelWeights w = detail::skeleton_weights(config, f.path());
  const auto& c = config;
  w.tensors["tok_embeddings.weight"].data = detail::read_f32(f, "tok_embeddings.weight", {c.vocab_size, c.dim}, checksums, seen);
  w.tensors["norm.weight"].data = detail::read_f32(f, "norm.weight", {c.dim}, checksums, seen);
  if (!c.tied_embeddings)
    w.tensors["output.weight"].data = detail::read_f32(f, "output.weight", {c.vocab_size, c.dim}, checksums, seen);
  for (int l = 0; l < c.n_layers; ++l)
    for (const char* norm : {"attention_norm.weight", "ffn_norm.weight"}) {
      const auto name = nn::ModelWeights::layer_name(l, norm);
      w.tensors[name].data = detail::read_f32(f, name, {c.dim}, checksums, seen);
    }
  nn::Llama model(w);
  w.tensors.clear();
  for (int l = 0; l < c.n_layers; ++l)
    for (auto role : nn::kAllLinearRoles) {
      const auto name = nn::ModelWeights::layer_name(l, nn::linear_role_name(role));
      LOWBIT_CHECK(formats.contains(name), f.path(), ": no format descriptor for '", name, "' in 'lowbit.tensor_formats'");
      auto [out, in] = nn::linear_role_shape(c, role);
      model.set_linear(l, role, detail::read_linear(f, name, formats[name], out, in, checksums, seen));
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
  std::vector<std::vector<float>> keep_alive;
  keep_alive.reserve(nn::kLinearRoles);
  for (auto role : nn::kAllLinearRoles) {
    const auto name = nn::ModelWeights::layer_name(layer, nn::linear_role_name(role));
    formats[name] = detail::add_linear(writer, name, model.linear(layer, role), keep_alive, checksums);
  }
  const auto dim = static_cast<index_t>(model.config().dim);
  writer.add_f32(nn::ModelWeights::layer_name(layer, "attention_norm.weight"), {dim}, model.attention_norm(layer).data());
  writer.add_f32(nn::ModelWeights::layer_name(layer, "ffn_norm.weight"), {dim}, model.ffn_norm(layer).data());
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
  const auto dim = static_cast<std::size_t>(model.config().dim);
  for (const char* norm : {"attention_norm.weight", "ffn_norm.weight"}) {
    const auto name = nn::ModelWeights::layer_name(layer, norm);
    const auto gains = f.to_f32(name);
    LOWBIT_CHECK(gains.size() == dim, f.path(), ": block checkpoint tensor '", name, "' has ", gains.size(),
                 " values, expected ", dim);
    auto& target = std::string(norm) == "ffn_norm.weight" ? model.ffn_norm(layer) : model.attention_norm(layer);
    std::copy(gains.begin(), gains.end(), target.begin());
  }
}

}  // namespace lowbit::io
