// safetensors: the Hugging Face tensor container, read and written. Reading maps the file and
// validates the JSON header (dtype, shape, offsets: in bounds, sized exactly, no overlaps, no holes)
// before exposing any tensor; tensors are available raw (bytes + dtype + shape) or as fp32. Writing is
// atomic (temporary file in the same folder, fsync, rename), so a killed process never leaves a half-
// written model; lowbit's quantized model file is built on this writer. Byte layout: docs/file-formats.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "../core/atomic_file.hpp"
#include "../core/error.hpp"
#include "../core/half.hpp"
#include "../core/tensor.hpp"
#include "mapped_file.hpp"

namespace lowbit::io {

enum class SafeDtype { BOOL, U8, I8, F8_E4M3, F8_E5M2, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

inline const char* safe_dtype_name(SafeDtype d) {
  switch (d) {
    case SafeDtype::BOOL: return "BOOL";
    case SafeDtype::U8: return "U8";
    case SafeDtype::I8: return "I8";
    case SafeDtype::F8_E4M3: return "F8_E4M3";
    case SafeDtype::F8_E5M2: return "F8_E5M2";
    case SafeDtype::I16: return "I16";
    case SafeDtype::U16: return "U16";
    case SafeDtype::F16: return "F16";
    case SafeDtype::BF16: return "BF16";
    case SafeDtype::I32: return "I32";
    case SafeDtype::U32: return "U32";
    case SafeDtype::F32: return "F32";
    case SafeDtype::I64: return "I64";
    case SafeDtype::U64: return "U64";
    case SafeDtype::F64: return "F64";
  }
  return "?";
}

inline std::size_t safe_dtype_size(SafeDtype d) {
  switch (d) {
    case SafeDtype::BOOL: case SafeDtype::U8: case SafeDtype::I8: case SafeDtype::F8_E4M3: case SafeDtype::F8_E5M2:
      return 1;
    case SafeDtype::I16: case SafeDtype::U16: case SafeDtype::F16: case SafeDtype::BF16: return 2;
    case SafeDtype::I32: case SafeDtype::U32: case SafeDtype::F32: return 4;
    case SafeDtype::I64: case SafeDtype::U64: case SafeDtype::F64: return 8;
  }
  return 1;
}

// Parses a dtype string; false when unknown.
inline bool parse_safe_dtype(const std::string& s, SafeDtype& out) {
  static const SafeDtype all[] = {SafeDtype::BOOL, SafeDtype::U8,   SafeDtype::I8,  SafeDtype::F8_E4M3, SafeDtype::F8_E5M2,
                                  SafeDtype::I16,  SafeDtype::U16,  SafeDtype::F16, SafeDtype::BF16,    SafeDtype::I32,
                                  SafeDtype::U32,  SafeDtype::F32,  SafeDtype::I64, SafeDtype::U64,     SafeDtype::F64};
  for (auto d : all)
    if (s == safe_dtype_name(d)) {
      out = d;
      return true;
    }
  return false;
}

struct SafeTensorInfo {
  std::string name;
  SafeDtype dtype = SafeDtype::F32;
  std::vector<index_t> shape;          // row-major, slowest first
  std::uint64_t begin = 0, end = 0;    // data_offsets, relative to the data section
  const std::uint8_t* data = nullptr;  // into the mapped file
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : shape) n *= static_cast<std::uint64_t>(d);
    return n;
  }
  std::uint64_t bytes() const { return end - begin; }
};

class SafetensorsFile {
 public:
  // Header limit as in the reference implementation: a larger header is almost surely corruption.
  static constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

  explicit SafetensorsFile(const std::filesystem::path& path) : file_(path) { parse(); }

  const std::string& path() const { return file_.path(); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  std::uint64_t data_offset() const { return data_offset_; }

  // Tensors in data order.
  const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }
  const SafeTensorInfo* find(const std::string& name) const {
    auto it = index_.find(name);
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  const SafeTensorInfo& tensor(const std::string& name) const {
    const auto* t = find(name);
    LOWBIT_CHECK(t, path(), ": safetensors tensor '", name, "' is missing");
    return *t;
  }

  // F32/F16/BF16/F64 tensors converted to fp32.
  std::vector<float> to_f32(const SafeTensorInfo& t) const {
    const auto n = static_cast<std::size_t>(t.numel());
    std::vector<float> out(n);
    switch (t.dtype) {
      case SafeDtype::F32:
        if (n) std::memcpy(out.data(), t.data, n * 4);
        break;
      case SafeDtype::F16:
      case SafeDtype::BF16:
        for (std::size_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, t.data + 2 * i, 2);
          out[i] = t.dtype == SafeDtype::F16 ? half_bits_to_float(h) : bf16_bits_to_float(h);
        }
        break;
      case SafeDtype::F64:
        for (std::size_t i = 0; i < n; ++i) {
          double v;
          std::memcpy(&v, t.data + 8 * i, 8);
          out[i] = static_cast<float>(v);
        }
        break;
      default:
        fail(path(), ": tensor '", t.name, "' has dtype ", safe_dtype_name(t.dtype),
             ", expected a floating-point dtype (F32, F16, BF16, F64)");
    }
    return out;
  }
  std::vector<float> to_f32(const std::string& name) const { return to_f32(tensor(name)); }

 private:
  void parse() {
    ByteReader r(file_);
    const auto header_len = r.read<std::uint64_t>("safetensors header length");
    LOWBIT_CHECK(header_len >= 2 && header_len <= kMaxHeaderBytes, path(), ": safetensors header length ", header_len,
                 " is out of range (expected 2..", kMaxHeaderBytes, ")");
    const std::string header = r.read_string(header_len, "safetensors JSON header");
    data_offset_ = r.offset();
    const std::uint64_t data_size = file_.size() - data_offset_;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(header);
    } catch (const nlohmann::json::exception& e) {
      fail(path(), ": safetensors header is not valid JSON: ", e.what());
    }
    LOWBIT_CHECK(j.is_object(), path(), ": safetensors header is not a JSON object");
    for (auto it = j.begin(); it != j.end(); ++it) {
      const std::string& name = it.key();
      const auto& v = it.value();
      if (name == "__metadata__") {
        LOWBIT_CHECK(v.is_object(), path(), ": __metadata__ must be an object of strings");
        for (auto m = v.begin(); m != v.end(); ++m) {
          LOWBIT_CHECK(m.value().is_string(), path(), ": __metadata__ value of '", m.key(), "' is not a string");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      LOWBIT_CHECK(v.is_object(), path(), ": entry '", name, "' is not an object");
      SafeTensorInfo t;
      t.name = name;
      const auto dt = v.find("dtype");
      LOWBIT_CHECK(dt != v.end() && dt->is_string(), path(), ": tensor '", name, "' has no dtype string");
      LOWBIT_CHECK(parse_safe_dtype(dt->get<std::string>(), t.dtype), path(), ": tensor '", name,
                   "' has unknown dtype '", dt->get<std::string>(), "'");
      const auto sh = v.find("shape");
      LOWBIT_CHECK(sh != v.end() && sh->is_array() && sh->size() <= 8, path(), ": tensor '", name,
                   "' has no valid shape array");
      std::uint64_t numel = 1;
      for (const auto& d : *sh) {
        LOWBIT_CHECK(d.is_number_unsigned() && d.get<std::uint64_t>() < (1ull << 48), path(), ": tensor '", name,
                     "' has invalid dimension ", d.dump());
        t.shape.push_back(static_cast<index_t>(d.get<std::uint64_t>()));
        numel = checked_mul(numel, d.get<std::uint64_t>(), path() + ": tensor '" + name + "'");
      }
      const auto off = v.find("data_offsets");
      LOWBIT_CHECK(off != v.end() && off->is_array() && off->size() == 2 && (*off)[0].is_number_unsigned() &&
                       (*off)[1].is_number_unsigned(),
                   path(), ": tensor '", name, "' has no valid data_offsets [begin, end]");
      t.begin = (*off)[0].get<std::uint64_t>();
      t.end = (*off)[1].get<std::uint64_t>();
      LOWBIT_CHECK(t.begin <= t.end && t.end <= data_size, path(), ": tensor '", name, "' data_offsets [", t.begin,
                   ", ", t.end, "] are outside the data section (", data_size, " bytes)");
      const std::uint64_t want = checked_mul(numel, safe_dtype_size(t.dtype), path() + ": tensor '" + name + "'");
      LOWBIT_CHECK(t.end - t.begin == want, path(), ": tensor '", name, "' (", safe_dtype_name(t.dtype), ", ",
                   numel, " elements) needs ", want, " bytes, but its data_offsets span ", t.end - t.begin);
      t.data = file_.data() + data_offset_ + t.begin;
      tensors_.push_back(std::move(t));
    }
    std::sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    // The data section must be covered exactly: no overlaps, no holes, nothing after the last tensor.
    std::uint64_t expected = 0;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      const auto& t = tensors_[i];
      LOWBIT_CHECK(t.begin == expected, path(), ": tensor '", t.name, "' starts at data offset ", t.begin,
                   " but the previous tensor ends at ", expected, t.begin < expected ? " (overlap)" : " (hole)");
      expected = t.end;
      index_.emplace(t.name, i);
    }
    LOWBIT_CHECK(expected == data_size, path(), ": the data section holds ", data_size,
                 " bytes but the tensors cover ", expected);
  }

  MappedFile file_;
  std::uint64_t data_offset_ = 0;
  std::map<std::string, std::string> metadata_;
  std::vector<SafeTensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> index_;
};

// ---- writer ---------------------------------------------------------------------------------------

// Collects named tensors and string metadata, then writes one safetensors file atomically. Tensors are
// stored in the order they were added (deterministic output for identical input); `add` copies the
// bytes, `add_view` keeps a pointer that must stay valid until write().
class SafetensorsWriter {
 public:
  void add(const std::string& name, SafeDtype dtype, std::vector<index_t> shape, const void* data) {
    Entry e = make_entry(name, dtype, std::move(shape));
    const auto* p = static_cast<const std::uint8_t*>(data);
    e.owned.assign(p, p + e.bytes);
    e.data = nullptr;
    entries_.push_back(std::move(e));
  }
  void add_view(const std::string& name, SafeDtype dtype, std::vector<index_t> shape, const void* data) {
    Entry e = make_entry(name, dtype, std::move(shape));
    e.data = static_cast<const std::uint8_t*>(data);
    entries_.push_back(std::move(e));
  }
  void add_f32(const std::string& name, std::vector<index_t> shape, const float* data) {
    add(name, SafeDtype::F32, std::move(shape), data);
  }
  // fp32 values stored as F16 or BF16 (round to nearest even).
  void add_f32_as(const std::string& name, SafeDtype dtype, std::vector<index_t> shape, const float* data) {
    LOWBIT_CHECK(dtype == SafeDtype::F16 || dtype == SafeDtype::BF16 || dtype == SafeDtype::F32,
                 "safetensors writer: add_f32_as converts to F32, F16 or BF16 only (tensor '", name, "')");
    if (dtype == SafeDtype::F32) return add_f32(name, std::move(shape), data);
    Entry e = make_entry(name, dtype, std::move(shape));
    e.owned.resize(e.bytes);
    for (std::size_t i = 0; i < e.bytes / 2; ++i) {
      const std::uint16_t h = dtype == SafeDtype::F16 ? float_to_half_bits(data[i]) : float_to_bf16_bits(data[i]);
      std::memcpy(e.owned.data() + 2 * i, &h, 2);
    }
    entries_.push_back(std::move(e));
  }
  void set_metadata(const std::string& key, const std::string& value) { metadata_[key] = value; }

  // Writes `path` atomically (core/atomic_file.hpp): a temporary file, fsync, rename, fsync of the folder.
  void write(const std::filesystem::path& path) const {
    nlohmann::json header = nlohmann::json::object();
    if (!metadata_.empty()) header["__metadata__"] = metadata_;
    std::uint64_t offset = 0;
    for (const auto& e : entries_) {
      header[e.name] = {{"dtype", safe_dtype_name(e.dtype)}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.bytes}}};
      offset += e.bytes;
    }
    std::string text = header.dump();
    while (text.size() % 8) text.push_back(' ');  // data section starts 8-byte aligned
    AtomicFileWriter out(path);
    const std::uint64_t len = text.size();
    out.write(&len, 8);
    out.write(text);
    for (const auto& e : entries_) out.write(e.data ? e.data : e.owned.data(), e.bytes);
    out.commit();
  }

 private:
  struct Entry {
    std::string name;
    SafeDtype dtype;
    std::vector<index_t> shape;
    std::size_t bytes = 0;
    const std::uint8_t* data = nullptr;
    std::vector<std::uint8_t> owned;
  };

  Entry make_entry(const std::string& name, SafeDtype dtype, std::vector<index_t> shape) const {
    LOWBIT_CHECK(!name.empty() && name != "__metadata__", "safetensors writer: invalid tensor name '", name, "'");
    for (const auto& e : entries_)
      LOWBIT_CHECK(e.name != name, "safetensors writer: tensor '", name, "' added twice");
    std::size_t n = 1;
    for (auto d : shape) {
      LOWBIT_CHECK(d >= 0, "safetensors writer: tensor '", name, "' has negative dimension ", d);
      n *= static_cast<std::size_t>(d);
    }
    Entry e;
    e.name = name;
    e.dtype = dtype;
    e.shape = std::move(shape);
    e.bytes = n * safe_dtype_size(dtype);
    return e;
  }

  std::vector<Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace lowbit::io
