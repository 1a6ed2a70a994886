// GGUF (v2/v3) reader: the file format of llama.cpp. It parses the header, the typed metadata (every
// value type, nested arrays included), the tensor infos and the aligned data section of a memory-
// mapped file, validating every count, length, dimension, type and offset against the file size, so
// a damaged file raises lowbit::Error instead of reading out of bounds. `load_gguf` turns a `llama`
// architecture file into canonical fp32 nn::ModelWeights. Byte layout: docs/file-formats.md.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/parallel.hpp"
#include "../nn/weights.hpp"
#include "gguf_quants.hpp"
#include "mapped_file.hpp"

namespace lowbit::io {

inline constexpr std::uint32_t kGgufMagic = 0x46554747u;  // "GGUF" read as a little-endian uint32

// Metadata value types; the numbering is the file's, and also the index of GgufValue's variant.
enum class GgufType : std::uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

inline const char* gguf_type_name(GgufType t) {
  static const char* names[] = {"uint8", "int8",  "uint16", "int16",  "uint32", "int32", "float32",
                                "bool",  "string", "array", "uint64", "int64",  "float64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? names[i] : "invalid";
}

struct GgufValue;
struct GgufArray {
  GgufType element_type = GgufType::UINT8;
  std::vector<GgufValue> items;
};

struct GgufValue {
  // Alternatives in GgufType order, so v.index() == static_cast<size_t>(type()).
  std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t, std::int32_t, float, bool,
               std::string, GgufArray, std::uint64_t, std::int64_t, double>
      v;
  GgufType type() const { return static_cast<GgufType>(v.index()); }
  bool is_integer() const {
    const auto t = type();
    return t == GgufType::UINT8 || t == GgufType::INT8 || t == GgufType::UINT16 || t == GgufType::INT16 ||
           t == GgufType::UINT32 || t == GgufType::INT32 || t == GgufType::UINT64 || t == GgufType::INT64;
  }
  bool is_float() const { return type() == GgufType::FLOAT32 || type() == GgufType::FLOAT64; }
};

// One tensor's description. dims are ggml order (dims[0] is the fastest-varying, i.e. the row length).
struct GgufTensorInfo {
  std::string name;
  std::vector<std::uint64_t> dims;
  std::uint32_t type = 0;
  std::uint64_t offset = 0;      // relative to the data section
  std::uint64_t n_elements = 0;
  std::uint64_t n_bytes = 0;     // 0 when the type is unknown to lowbit
  const std::uint8_t* data = nullptr;

  // Row-major shape (slowest first): a [n_out, n_in] matrix has dims {n_in, n_out}.
  std::vector<index_t> shape() const {
    std::vector<index_t> s;
    for (auto it = dims.rbegin(); it != dims.rend(); ++it) s.push_back(static_cast<index_t>(*it));
    return s;
  }
};

class GgufFile {
 public:
  explicit GgufFile(const std::filesystem::path& path) : file_(path) { parse(); }

  const std::string& path() const { return file_.path(); }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  std::uint64_t data_offset() const { return data_offset_; }
  std::size_t file_size() const { return file_.size(); }

  // ---- metadata --------------------------------------------------------------------------------
  const std::vector<std::string>& keys() const { return key_order_; }
  bool has(const std::string& key) const { return metadata_.count(key) != 0; }
  const GgufValue& value(const std::string& key) const {
    auto it = metadata_.find(key);
    LOWBIT_CHECK(it != metadata_.end(), path(), ": GGUF metadata key '", key, "' is missing");
    return it->second;
  }
  GgufType type_of(const std::string& key) const { return value(key).type(); }

  std::string get_string(const std::string& key) const {
    const auto& v = value(key);
    expect_type(key, v, GgufType::STRING);
    return std::get<std::string>(v.v);
  }
  // Any integer type, range-checked into int64.
  std::int64_t get_int(const std::string& key) const {
    const auto& v = value(key);
    LOWBIT_CHECK(v.is_integer(), path(), ": GGUF key '", key, "' has type ", gguf_type_name(v.type()),
                 ", expected an integer");
    return as_int(v, key);
  }
  // float32 or float64.
  double get_float(const std::string& key) const {
    const auto& v = value(key);
    LOWBIT_CHECK(v.is_float(), path(), ": GGUF key '", key, "' has type ", gguf_type_name(v.type()),
                 ", expected float32 or float64");
    return v.type() == GgufType::FLOAT32 ? std::get<float>(v.v) : std::get<double>(v.v);
  }
  bool get_bool(const std::string& key) const {
    const auto& v = value(key);
    expect_type(key, v, GgufType::BOOL);
    return std::get<bool>(v.v);
  }
  const GgufArray& get_array(const std::string& key) const {
    const auto& v = value(key);
    expect_type(key, v, GgufType::ARRAY);
    return std::get<GgufArray>(v.v);
  }
  std::vector<std::string> get_string_array(const std::string& key) const {
    const auto& a = get_array(key);
    expect_element(key, a, a.element_type == GgufType::STRING, "string");
    std::vector<std::string> out;
    out.reserve(a.items.size());
    for (const auto& item : a.items) out.push_back(std::get<std::string>(item.v));
    return out;
  }
  std::vector<float> get_float_array(const std::string& key) const {
    const auto& a = get_array(key);
    expect_element(key, a, a.element_type == GgufType::FLOAT32 || a.element_type == GgufType::FLOAT64, "float");
    std::vector<float> out;
    out.reserve(a.items.size());
    for (const auto& item : a.items)
      out.push_back(item.type() == GgufType::FLOAT32 ? std::get<float>(item.v)
                                                     : static_cast<float>(std::get<double>(item.v)));
    return out;
  }
  std::vector<std::int64_t> get_int_array(const std::string& key) const {
    const auto& a = get_array(key);
    expect_element(key, a,
                   a.element_type != GgufType::STRING && a.element_type != GgufType::ARRAY &&
                       a.element_type != GgufType::BOOL && a.element_type != GgufType::FLOAT32 &&
                       a.element_type != GgufType::FLOAT64,
                   "integer");
    std::vector<std::int64_t> out;
    out.reserve(a.items.size());
    for (const auto& item : a.items) out.push_back(as_int(item, key));
    return out;
  }

  // Defaults for optional keys (a present key of the wrong type still throws).
  std::string get_string_or(const std::string& key, const std::string& fallback) const {
    return has(key) ? get_string(key) : fallback;
  }
  std::int64_t get_int_or(const std::string& key, std::int64_t fallback) const {
    return has(key) ? get_int(key) : fallback;
  }
  double get_float_or(const std::string& key, double fallback) const { return has(key) ? get_float(key) : fallback; }
  bool get_bool_or(const std::string& key, bool fallback) const { return has(key) ? get_bool(key) : fallback; }

  // ---- tensors ---------------------------------------------------------------------------------
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const {
    auto it = tensor_index_.find(name);
    return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
  }
  const GgufTensorInfo& tensor(const std::string& name) const {
    const auto* t = find_tensor(name);
    LOWBIT_CHECK(t, path(), ": GGUF tensor '", name, "' is missing");
    return *t;
  }

  // The tensor dequantized to fp32 (row-major, shape()). Rows are expanded in parallel.
  std::vector<float> dequantize(const GgufTensorInfo& t) const {
    const auto* info = ggml_type_info(t.type);
    LOWBIT_CHECK(info && info->dequantizable, path(), ": tensor '", t.name, "' has unsupported type ",
                 ggml_type_name(t.type), " (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q6_K)");
    std::vector<float> out(static_cast<std::size_t>(t.n_elements));
    const index_t row = static_cast<index_t>(t.dims[0]);
    const index_t rows = static_cast<index_t>(t.n_elements) / row;
    const index_t row_bytes = row / info->block_elems * info->block_bytes;
    parallel_for(
        0, rows,
        [&](index_t lo, index_t hi) {
          for (index_t r = lo; r < hi; ++r) dequantize_ggml(t.type, t.data + r * row_bytes, out.data() + r * row, row);
        },
        16);
    return out;
  }
  std::vector<float> dequantize(const std::string& name) const { return dequantize(tensor(name)); }

 private:
  static constexpr int kMaxArrayDepth = 8;
  static constexpr std::uint64_t kMaxArrayElements = 1u << 24;

  void expect_type(const std::string& key, const GgufValue& v, GgufType want) const {
    LOWBIT_CHECK(v.type() == want, path(), ": GGUF key '", key, "' has type ", gguf_type_name(v.type()),
                 ", expected ", gguf_type_name(want));
  }
  void expect_element(const std::string& key, const GgufArray& a, bool ok, const char* want) const {
    LOWBIT_CHECK(ok, path(), ": GGUF key '", key, "' is an array of ", gguf_type_name(a.element_type),
                 ", expected an array of ", want);
  }
  std::int64_t as_int(const GgufValue& v, const std::string& key) const {
    return std::visit(
        [&](const auto& x) -> std::int64_t {
          using T = std::decay_t<decltype(x)>;
          if constexpr (std::is_same_v<T, std::uint64_t>) {
            LOWBIT_CHECK(x <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), path(),
                         ": GGUF key '", key, "' value ", x, " does not fit in int64");
            return static_cast<std::int64_t>(x);
          } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            return static_cast<std::int64_t>(x);
          } else {
            fail(path(), ": GGUF key '", key, "' holds a non-integer element");
          }
        },
        v.v);
  }

  std::string read_gguf_string(ByteReader& r, const std::string& what) {
    const auto len = r.read<std::uint64_t>(what + " length");
    return r.read_string(len, what);
  }

  // Smallest encoded size of one value of type t (to bound array counts before allocating).
  static std::uint64_t min_encoded_size(GgufType t) {
    switch (t) {
      case GgufType::UINT8: case GgufType::INT8: case GgufType::BOOL: return 1;
      case GgufType::UINT16: case GgufType::INT16: return 2;
      case GgufType::UINT32: case GgufType::INT32: case GgufType::FLOAT32: return 4;
      case GgufType::UINT64: case GgufType::INT64: case GgufType::FLOAT64: case GgufType::STRING: return 8;
      case GgufType::ARRAY: return 12;
    }
    return 1;
  }

  GgufValue read_value(ByteReader& r, std::uint32_t raw_type, const std::string& key, int depth) {
    LOWBIT_CHECK(raw_type <= 12, path(), ": GGUF key '", key, "' has invalid value type ", raw_type,
                 " at offset ", r.offset(), " (expected 0..12)");
    const auto type = static_cast<GgufType>(raw_type);
    const std::string what = "value of key '" + key + "'";
    GgufValue out;
    switch (type) {
      case GgufType::UINT8: out.v.emplace<0>(r.read<std::uint8_t>(what)); break;
      case GgufType::INT8: out.v.emplace<1>(r.read<std::int8_t>(what)); break;
      case GgufType::UINT16: out.v.emplace<2>(r.read<std::uint16_t>(what)); break;
      case GgufType::INT16: out.v.emplace<3>(r.read<std::int16_t>(what)); break;
      case GgufType::UINT32: out.v.emplace<4>(r.read<std::uint32_t>(what)); break;
      case GgufType::INT32: out.v.emplace<5>(r.read<std::int32_t>(what)); break;
      case GgufType::FLOAT32: out.v.emplace<6>(r.read<float>(what)); break;
      case GgufType::BOOL: {
        const auto b = r.read<std::uint8_t>(what);
        LOWBIT_CHECK(b <= 1, path(), ": GGUF key '", key, "' has bool byte ", int(b), " (expected 0 or 1)");
        out.v.emplace<7>(b != 0);
        break;
      }
      case GgufType::STRING: out.v.emplace<8>(read_gguf_string(r, what)); break;
      case GgufType::ARRAY: {
        LOWBIT_CHECK(depth < kMaxArrayDepth, path(), ": GGUF key '", key, "' nests arrays deeper than ",
                     kMaxArrayDepth);
        const auto elem_type = r.read<std::uint32_t>(what + " element type");
        LOWBIT_CHECK(elem_type <= 12, path(), ": GGUF key '", key, "' has invalid array element type ", elem_type,
                     " (expected 0..12)");
        const auto count = r.read<std::uint64_t>(what + " element count");
        const auto et = static_cast<GgufType>(elem_type);
        LOWBIT_CHECK(count <= r.remaining() / min_encoded_size(et), path(), ": GGUF key '", key, "' claims ",
                     count, " elements of ", gguf_type_name(et), " but only ", r.remaining(),
                     " bytes remain at offset ", r.offset());
        // Each element becomes a GgufValue (~40 bytes): cap arrays so a tiny-element array cannot make a
        // file of N bytes cost 40N of memory. Real vocabularies hold a few 100k entries.
        LOWBIT_CHECK(count <= kMaxArrayElements, path(), ": GGUF key '", key, "' has ", count,
                     " array elements, more than lowbit's limit of ", kMaxArrayElements);
        GgufArray arr;
        arr.element_type = et;
        arr.items.reserve(static_cast<std::size_t>(count));
        for (std::uint64_t i = 0; i < count; ++i) arr.items.push_back(read_value(r, elem_type, key, depth + 1));
        out.v.emplace<9>(std::move(arr));
        break;
      }
      case GgufType::UINT64: out.v.emplace<10>(r.read<std::uint64_t>(what)); break;
      case GgufType::INT64: out.v.emplace<11>(r.read<std::int64_t>(what)); break;
      case GgufType::FLOAT64: out.v.emplace<12>(r.read<double>(what)); break;
    }
    return out;
  }

  void parse() {
    ByteReader r(file_);
    const auto magic = r.read<std::uint32_t>("GGUF magic");
    LOWBIT_CHECK(magic == kGgufMagic, path(), ": not a GGUF file (magic 0x", to_hex(magic), ", expected 0x",
                 to_hex(kGgufMagic), " = \"GGUF\")");
    version_ = r.read<std::uint32_t>("GGUF version");
    LOWBIT_CHECK(version_ == 2 || version_ == 3, path(), ": unsupported GGUF version ", version_,
                 " (expected 2 or 3)");
    const auto n_tensors = r.read<std::uint64_t>("tensor count");
    const auto n_kv = r.read<std::uint64_t>("metadata key/value count");
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at least 8 +
    // 4 + 8 + 4 + 8 bytes: counts that cannot fit in the file are rejected before any allocation.
    LOWBIT_CHECK(n_kv <= r.remaining() / 13, path(), ": metadata count ", n_kv, " cannot fit in ", r.remaining(),
                 " bytes");
    LOWBIT_CHECK(n_tensors <= r.remaining() / 32, path(), ": tensor count ", n_tensors, " cannot fit in ",
                 r.remaining(), " bytes");
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      const std::string key = read_gguf_string(r, "metadata key #" + std::to_string(i));
      const auto type = r.read<std::uint32_t>("type of key '" + key + "'");
      GgufValue v = read_value(r, type, key, 0);
      LOWBIT_CHECK(metadata_.count(key) == 0, path(), ": duplicate GGUF metadata key '", key, "'");
      key_order_.push_back(key);
      metadata_.emplace(key, std::move(v));
    }
    alignment_ = 32;
    if (has("general.alignment")) {
      const auto a = get_int("general.alignment");
      LOWBIT_CHECK(a > 0 && (a & (a - 1)) == 0 && a <= (1 << 20), path(), ": general.alignment is ", a,
                   ", expected a power of two");
      alignment_ = static_cast<std::uint64_t>(a);
    }
    tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      GgufTensorInfo t;
      t.name = read_gguf_string(r, "name of tensor #" + std::to_string(i));
      const std::string what = "tensor '" + t.name + "'";
      const auto n_dims = r.read<std::uint32_t>(what + " dimension count");
      LOWBIT_CHECK(n_dims >= 1 && n_dims <= 4, path(), ": ", what, " has ", n_dims, " dimensions (expected 1..4)");
      t.n_elements = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto dim = r.read<std::uint64_t>(what + " dimension");
        LOWBIT_CHECK(dim >= 1 && dim < (1ull << 40), path(), ": ", what, " has dimension ", d, " = ", dim);
        t.dims.push_back(dim);
        t.n_elements = checked_mul(t.n_elements, dim, path() + ": " + what + " element count");
      }
      t.type = r.read<std::uint32_t>(what + " type");
      t.offset = r.read<std::uint64_t>(what + " data offset");
      LOWBIT_CHECK(t.offset % alignment_ == 0, path(), ": ", what, " data offset ", t.offset,
                   " is not a multiple of the alignment ", alignment_);
      if (const auto* info = ggml_type_info(t.type)) {
        LOWBIT_CHECK(t.dims[0] % info->block_elems == 0, path(), ": ", what, " of type ", info->name,
                     " has row length ", t.dims[0], ", not a multiple of its block size ", info->block_elems);
        t.n_bytes = checked_mul(t.n_elements / info->block_elems, info->block_bytes, path() + ": " + what);
      }
      LOWBIT_CHECK(tensor_index_.count(t.name) == 0, path(), ": duplicate GGUF tensor '", t.name, "'");
      tensor_index_.emplace(t.name, tensors_.size());
      tensors_.push_back(std::move(t));
    }
    data_offset_ = (r.offset() + alignment_ - 1) / alignment_ * alignment_;
    if (!tensors_.empty())
      LOWBIT_CHECK(data_offset_ <= file_.size(), path(), ": data section would start at ", data_offset_,
                   " past the end of the file (", file_.size(), " bytes)");
    const std::uint64_t data_size = data_offset_ <= file_.size() ? file_.size() - data_offset_ : 0;
    // Bounds and overlap of every tensor's bytes.
    std::vector<std::pair<std::uint64_t, std::size_t>> by_offset;
    for (std::size_t i = 0; i < tensors_.size(); ++i) {
      auto& t = tensors_[i];
      const std::uint64_t end = checked_add(t.offset, t.n_bytes, path() + ": tensor '" + t.name + "'");
      LOWBIT_CHECK(end <= data_size, path(), ": tensor '", t.name, "' (", ggml_type_name(t.type), ", ", t.n_bytes,
                   " bytes at data offset ", t.offset, ") ends past the end of the file (data section holds ",
                   data_size, " bytes)");
      t.data = file_.data() + data_offset_ + t.offset;
      by_offset.emplace_back(t.offset, i);
    }
    std::sort(by_offset.begin(), by_offset.end());
    for (std::size_t k = 1; k < by_offset.size(); ++k) {
      const auto& prev = tensors_[by_offset[k - 1].second];
      const auto& cur = tensors_[by_offset[k].second];
      LOWBIT_CHECK(prev.offset + prev.n_bytes <= cur.offset, path(), ": tensors '", prev.name, "' and '", cur.name,
                   "' overlap in the data section");
    }
    // Writers (llama.cpp, gguf-py) pack tensors back to back, each padded to the alignment. A gap of a
    // whole alignment unit means a size field (dims or type) disagrees with the offsets, which is how a
    // corrupted dimension or type shows up; this check is skipped when a tensor's type is unknown.
    const bool all_sized = std::all_of(tensors_.begin(), tensors_.end(), [](const auto& t) { return t.n_bytes > 0; });
    if (all_sized && !by_offset.empty()) {
      std::uint64_t expected_next = 0;
      for (const auto& [offset, index] : by_offset) {
        const auto& t = tensors_[index];
        LOWBIT_CHECK(offset - expected_next < alignment_, path(), ": tensor '", t.name, "' starts at data offset ",
                     offset, " but the previous tensor ends at ", expected_next,
                     " (a size field disagrees with the offsets)");
        expected_next = offset + t.n_bytes;
      }
      LOWBIT_CHECK(data_size - expected_next < alignment_, path(), ": ", data_size - expected_next,
                   " bytes after the last tensor (a size field disagrees with the file size)");
    }
  }

  static std::string to_hex(std::uint32_t v) {
    static const char* digits = "0123456789abcdef";
    std::string s(8, '0');
    for (int i = 7; i >= 0; --i, v >>= 4) s[static_cast<std::size_t>(i)] = digits[v & 15];
    return s;
  }

  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<std::string> key_order_;
  std::unordered_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> tensor_index_;
};

namespace detail {

// "576x1536": shapes in error messages.
inline std::string join_dims(const std::vector<index_t>& dims) {
  std::string out;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) out.push_back('x');
    out.append(std::to_string(dims[i]));
  }
  return out;
}

inline int gguf_positive_int(const GgufFile& f, const std::string& key) {
  const auto v = f.get_int(key);
  LOWBIT_CHECK(v > 0 && v <= std::numeric_limits<int>::max(), f.path(), ": GGUF key '", key, "' is ", v,
               ", expected a positive int");
  return static_cast<int>(v);
}

}  // namespace detail

// The hyper-parameters of a `llama` architecture GGUF (vocab size from token_embd's rows).
inline nn::ModelConfig gguf_llama_config(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  LOWBIT_CHECK(arch == "llama", f.path(), ": GGUF architecture '", arch, "' is not supported (expected 'llama')");
  nn::ModelConfig c;
  c.dim = detail::gguf_positive_int(f, "llama.embedding_length");
  c.hidden_dim = detail::gguf_positive_int(f, "llama.feed_forward_length");
  c.n_layers = detail::gguf_positive_int(f, "llama.block_count");
  c.n_heads = detail::gguf_positive_int(f, "llama.attention.head_count");
  c.n_kv_heads = f.has("llama.attention.head_count_kv") ? detail::gguf_positive_int(f, "llama.attention.head_count_kv")
                                                        : c.n_heads;
  c.norm_eps = static_cast<float>(f.get_float("llama.attention.layer_norm_rms_epsilon"));
  c.rope_theta = static_cast<float>(f.get_float_or("llama.rope.freq_base", 10000.0));
  c.max_seq_len = f.has("llama.context_length") ? detail::gguf_positive_int(f, "llama.context_length") : 2048;
  c.rope_layout = nn::RopeLayout::Interleaved;
  const auto& emb = f.tensor("token_embd.weight");
  LOWBIT_CHECK(emb.dims.size() == 2 && emb.dims[0] == static_cast<std::uint64_t>(c.dim), f.path(),
               ": tensor 'token_embd.weight' should be [vocab, ", c.dim, "]");
  LOWBIT_CHECK(emb.dims[1] <= static_cast<std::uint64_t>(std::numeric_limits<int>::max()), f.path(),
               ": token_embd.weight has too many rows");
  c.vocab_size = static_cast<int>(emb.dims[1]);
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.validate(f.path());
  if (f.has("llama.rope.dimension_count")) {
    const auto rot = f.get_int("llama.rope.dimension_count");
    LOWBIT_CHECK(rot == c.head_dim(), f.path(), ": llama.rope.dimension_count is ", rot,
                 ", but lowbit only supports full-head RoPE (head_dim ", c.head_dim(), ")");
  }
  if (f.has("llama.vocab_size")) {
    const auto v = f.get_int("llama.vocab_size");
    LOWBIT_CHECK(v == c.vocab_size, f.path(), ": llama.vocab_size is ", v, " but token_embd.weight has ",
                 c.vocab_size, " rows");
  }
  return c;
}

// Loads a `llama` GGUF into canonical fp32 weights (nn/weights.hpp). q/k stay in the file's
// interleaved RoPE layout (llama.cpp's converter permuted them), so config.rope_layout = Interleaved.
inline nn::ModelWeights load_gguf(const std::filesystem::path& path) {
  const GgufFile f(path);
  nn::ModelWeights w;
  w.source = f.path();
  w.config = gguf_llama_config(f);
  const auto& c = w.config;
  const index_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const index_t q_dim = static_cast<index_t>(c.n_heads) * c.head_dim(), kv = c.kv_dim();
  auto add = [&](const std::string& gguf_name, const std::string& canonical, std::vector<index_t> shape) {
    const auto& t = f.tensor(gguf_name);
    const auto got = t.shape();
    if (got != shape)
      fail(f.path(), ": tensor '", gguf_name, "' has shape [", detail::join_dims(got), "] (row-major), expected [",
           detail::join_dims(shape), "]");
    nn::Tensor out;
    out.shape = std::move(shape);
    out.data = f.dequantize(t);
    w.tensors.emplace(canonical, std::move(out));
  };
  add("token_embd.weight", "tok_embeddings.weight", {vocab, dim});
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string b = "blk." + std::to_string(i) + ".";
    auto L = [&](const char* s) { return nn::ModelWeights::layer_name(i, s); };
    add(b + "attn_norm.weight", L("attention_norm.weight"), {dim});
    add(b + "attn_q.weight", L("attention.wq.weight"), {q_dim, dim});
    add(b + "attn_k.weight", L("attention.wk.weight"), {kv, dim});
    add(b + "attn_v.weight", L("attention.wv.weight"), {kv, dim});
    add(b + "attn_output.weight", L("attention.wo.weight"), {dim, q_dim});
    add(b + "ffn_norm.weight", L("ffn_norm.weight"), {dim});
    add(b + "ffn_gate.weight", L("feed_forward.w1.weight"), {hidden, dim});
    add(b + "ffn_down.weight", L("feed_forward.w2.weight"), {dim, hidden});
    add(b + "ffn_up.weight", L("feed_forward.w3.weight"), {hidden, dim});
  }
  add("output_norm.weight", "norm.weight", {dim});
  if (!c.tied_embeddings) add("output.weight", "output.weight", {vocab, dim});
  return w;
}

}  // namespace lowbit::io
