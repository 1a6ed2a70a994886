// GGUF reader and loader: block dequantization against the `gguf` Python package (tests/data) and an
// element-wise formula written here, metadata of every value type, a synthetic llama GGUF mapped onto
// canonical [out, in] tensors, the real SmolLM2 file against values read with gguf/numpy, and
// robustness: truncated and header-corrupted copies must raise lowbit::Error, never crash.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lowbit/core/half.hpp"
#include "lowbit/core/rng.hpp"
#include "lowbit/io/gguf.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace lowbit::io;

namespace {

fs::path temp_dir(const std::string& tag) {
  // /dev/shm when present: thousands of small rewrites are ~100x faster there than on an overlay disk
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  auto d = base / ("lowbit_test_io_gguf_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

void write_all(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

std::vector<std::uint8_t> from_hex(const std::string& hex) {
  std::vector<std::uint8_t> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  return out;
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// A GGUF byte builder that remembers where each header field sits, so the robustness test can flip them.
struct GgufBuilder {
  std::vector<std::uint8_t> b;
  struct Field {
    std::string what;
    std::size_t offset;
    int size;  // 4 or 8
  };
  std::vector<Field> fields;

  template <class T>
  void put(T v, const std::string& field = {}) {
    if (!field.empty()) fields.push_back({field, b.size(), static_cast<int>(sizeof(T))});
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
  }
  void str(const std::string& s, const std::string& field = {}) {
    put<std::uint64_t>(s.size(), field.empty() ? "" : field + " length");
    b.insert(b.end(), s.begin(), s.end());
  }
  void kv_u32(const std::string& k, std::uint32_t v) {
    str(k, "key " + k);
    put<std::uint32_t>(4, "type of " + k);
    put(v);
  }
  void kv_f32(const std::string& k, float v) {
    str(k, "key " + k);
    put<std::uint32_t>(6, "type of " + k);
    put(v);
  }
  void kv_str(const std::string& k, const std::string& v) {
    str(k, "key " + k);
    put<std::uint32_t>(8, "type of " + k);
    str(v, "value of " + k);
  }
  void pad(std::size_t alignment) {
    while (b.size() % alignment) b.push_back(0);
  }
};

struct SynthTensor {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order
  std::uint32_t type;
  std::vector<std::uint8_t> data;
};

// F32 tensor whose element e (row-major over the reversed dims) is base + e.
SynthTensor f32_tensor(const std::string& name, std::vector<std::uint64_t> dims, float base) {
  std::uint64_t n = 1;
  for (auto d : dims) n *= d;
  SynthTensor t{name, std::move(dims), 0, std::vector<std::uint8_t>(n * 4)};
  for (std::uint64_t e = 0; e < n; ++e) {
    const float v = base + static_cast<float>(e);
    std::memcpy(t.data.data() + 4 * e, &v, 4);
  }
  return t;
}

constexpr int kDim = 64, kHidden = 96, kHeads = 4, kKvHeads = 2, kVocab = 40, kLayers = 2;

// A small llama GGUF: every metadata type (including nested arrays), F32/F16/Q8_0/Q4_0 tensors.
GgufBuilder synthetic_llama_gguf(bool untied, std::uint32_t version = 3) {
  const std::uint64_t kv = kDim / kHeads * kKvHeads;
  std::vector<SynthTensor> tensors;
  tensors.push_back(f32_tensor("token_embd.weight", {kDim, kVocab}, 0.0f));
  for (int l = 0; l < kLayers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const float base = 10000.0f * static_cast<float>(l + 1);
    tensors.push_back(f32_tensor(p + "attn_norm.weight", {kDim}, base + 1));
    tensors.push_back(f32_tensor(p + "attn_q.weight", {kDim, kDim}, base + 2));
    tensors.push_back(f32_tensor(p + "attn_k.weight", {kDim, kv}, base + 3));
    tensors.push_back(f32_tensor(p + "attn_v.weight", {kDim, kv}, base + 4));
    tensors.push_back(f32_tensor(p + "attn_output.weight", {kDim, kDim}, base + 5));
    tensors.push_back(f32_tensor(p + "ffn_norm.weight", {kDim}, base + 6));
    tensors.push_back(f32_tensor(p + "ffn_gate.weight", {kDim, kHidden}, base + 7));
    tensors.push_back(f32_tensor(p + "ffn_down.weight", {kHidden, kDim}, base + 8));
    tensors.push_back(f32_tensor(p + "ffn_up.weight", {kDim, kHidden}, base + 9));
  }
  // Quantized and half tensors with hand-checkable values.
  {  // F16 output norm: all 0.5
    SynthTensor t{"output_norm.weight", {kDim}, 1, {}};
    for (int i = 0; i < kDim; ++i) {
      const auto h = lowbit::float_to_half_bits(0.5f);
      t.data.push_back(static_cast<std::uint8_t>(h & 0xff));
      t.data.push_back(static_cast<std::uint8_t>(h >> 8));
    }
    tensors.push_back(std::move(t));
  }
  if (untied) {  // Q8_0 output: block b of row r has d = 0.25 and qs[j] = j - 16
    SynthTensor t{"output.weight", {kDim, kVocab}, 8, {}};
    for (int blk = 0; blk < kVocab * kDim / 32; ++blk) {
      const auto h = lowbit::float_to_half_bits(0.25f);
      t.data.push_back(static_cast<std::uint8_t>(h & 0xff));
      t.data.push_back(static_cast<std::uint8_t>(h >> 8));
      for (int j = 0; j < 32; ++j) t.data.push_back(static_cast<std::uint8_t>(static_cast<std::int8_t>(j - 16)));
    }
    tensors.push_back(std::move(t));
  }
  {  // an extra Q4_0 tensor (not part of the model): nibble j holds j % 16, d = 1
    SynthTensor t{"extra.q4_0", {64}, 2, {}};
    for (int blk = 0; blk < 2; ++blk) {
      const auto h = lowbit::float_to_half_bits(1.0f);
      t.data.push_back(static_cast<std::uint8_t>(h & 0xff));
      t.data.push_back(static_cast<std::uint8_t>(h >> 8));
      for (int j = 0; j < 16; ++j) t.data.push_back(static_cast<std::uint8_t>((j & 15) | (((j + 3) & 15) << 4)));
    }
    tensors.push_back(std::move(t));
  }

  GgufBuilder g;
  g.put<std::uint32_t>(kGgufMagic, "magic");
  g.put<std::uint32_t>(version, "version");
  g.put<std::uint64_t>(tensors.size(), "tensor count");
  const std::uint64_t n_kv = 16;
  g.put<std::uint64_t>(n_kv, "kv count");
  g.kv_str("general.architecture", "llama");
  g.kv_u32("general.alignment", 64);
  g.kv_u32("llama.embedding_length", kDim);
  g.kv_u32("llama.feed_forward_length", kHidden);
  g.kv_u32("llama.block_count", kLayers);
  g.kv_u32("llama.attention.head_count", kHeads);
  g.kv_u32("llama.attention.head_count_kv", kKvHeads);
  g.kv_f32("llama.attention.layer_norm_rms_epsilon", 1e-6f);
  g.kv_f32("llama.rope.freq_base", 500000.0f);
  g.kv_u32("llama.context_length", 256);
  // Remaining value types: int8 / int16 / uint64 / int64 / float64 / bool / uint16, arrays of strings,
  // floats and nested int arrays.
  g.str("test.scalars", "key test.scalars");
  g.put<std::uint32_t>(9, "type of test.scalars");  // array of int64
  g.put<std::uint32_t>(11, "element type of test.scalars");
  g.put<std::uint64_t>(3, "count of test.scalars");
  g.put<std::int64_t>(-5);
  g.put<std::int64_t>(1LL << 40);
  g.put<std::int64_t>(7);
  g.str("test.f64", "key test.f64");
  g.put<std::uint32_t>(12, "type of test.f64");
  g.put<double>(2.5);
  g.str("test.flag", "key test.flag");
  g.put<std::uint32_t>(7, "type of test.flag");
  g.put<std::uint8_t>(1);
  g.str("tokenizer.ggml.tokens", "key tokens");
  g.put<std::uint32_t>(9, "type of tokens");
  g.put<std::uint32_t>(8, "element type of tokens");
  g.put<std::uint64_t>(3, "count of tokens");
  g.str("<s>", "token 0");
  g.str("hello");
  g.str("\xe2\x96\x81world");
  g.str("tokenizer.ggml.scores", "key scores");
  g.put<std::uint32_t>(9, "type of scores");
  g.put<std::uint32_t>(6, "element type of scores");
  g.put<std::uint64_t>(3, "count of scores");
  g.put<float>(0.0f);
  g.put<float>(-1.5f);
  g.put<float>(-2.25f);
  g.str("test.nested", "key test.nested");
  g.put<std::uint32_t>(9, "type of test.nested");
  g.put<std::uint32_t>(9, "element type of test.nested");
  g.put<std::uint64_t>(2, "count of test.nested");
  for (int i = 0; i < 2; ++i) {
    g.put<std::uint32_t>(1, "inner element type " + std::to_string(i));  // int8
    g.put<std::uint64_t>(2, "inner count " + std::to_string(i));
    g.put<std::int8_t>(static_cast<std::int8_t>(-i));
    g.put<std::int8_t>(static_cast<std::int8_t>(i + 100));
  }
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    g.str(t.name, "name of " + t.name);
    g.put<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size()), "n_dims of " + t.name);
    for (std::size_t d = 0; d < t.dims.size(); ++d) g.put<std::uint64_t>(t.dims[d], "dim " + std::to_string(d) + " of " + t.name);
    g.put<std::uint32_t>(t.type, "type of " + t.name);
    g.put<std::uint64_t>(offset, "offset of " + t.name);
    offset += (t.data.size() + 63) / 64 * 64;
  }
  g.pad(64);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    g.b.insert(g.b.end(), tensors[i].data.begin(), tensors[i].data.end());
    if (i + 1 < tensors.size()) g.pad(64);
  }
  return g;
}

}  // namespace

TEST_CASE("gguf quants: dequantization matches the gguf Python package bit for bit") {
  const fs::path ref = fs::path(LOWBIT_SOURCE_DIR) / "tests/data/gguf_quant_blocks.json";
  REQUIRE(fs::exists(ref));
  std::ifstream in(ref);
  const auto j = nlohmann::json::parse(in);
  const std::map<std::string, GgmlType> types = {
      {"F16", GgmlType::F16},   {"BF16", GgmlType::BF16}, {"Q4_0", GgmlType::Q4_0}, {"Q4_1", GgmlType::Q4_1},
      {"Q5_0", GgmlType::Q5_0}, {"Q5_1", GgmlType::Q5_1}, {"Q8_0", GgmlType::Q8_0}, {"Q4_K", GgmlType::Q4_K},
      {"Q6_K", GgmlType::Q6_K}};
  int checked_types = 0;
  for (const auto& [name, type] : types) {
    CAPTURE(name);
    REQUIRE(j["types"].contains(name));
    const auto raw = from_hex(j["types"][name]["raw_hex"].get<std::string>());
    const auto& expected = j["types"][name]["values_f32_hex"];
    std::vector<float> out(expected.size());
    const auto* info = ggml_type_info(static_cast<std::uint32_t>(type));
    REQUIRE(raw.size() == expected.size() / info->block_elems * info->block_bytes);
    dequantize_ggml(static_cast<std::uint32_t>(type), raw.data(), out.data(), static_cast<lowbit::index_t>(out.size()));
    int mismatches = 0;
    for (std::size_t i = 0; i < out.size(); ++i)
      if (bits(out[i]) != std::stoul(expected[i].get<std::string>(), nullptr, 16)) ++mismatches;
    CHECK(mismatches == 0);
    ++checked_types;
  }
  CHECK(checked_types == 9);
}

TEST_CASE("gguf quants: K-quants and Q4_1 equal an element-wise formula on random blocks") {
  lowbit::Rng rng(7);
  auto random_bytes = [&](std::size_t n) {
    std::vector<std::uint8_t> v(n);
    for (auto& x : v) x = static_cast<std::uint8_t>(rng.below(256));
    return v;
  };
  auto set_half = [](std::uint8_t* p, float f) {
    const auto h = lowbit::float_to_half_bits(f);
    std::memcpy(p, &h, 2);
  };
  auto get_half = [](const std::uint8_t* p) {
    std::uint16_t h;
    std::memcpy(&h, p, 2);
    return lowbit::half_bits_to_float(h);
  };
  for (int trial = 0; trial < 50; ++trial) {
    // Q4_K: element e of a block: chunk c = e / 64, sub-block s = e / 32, nibble of byte 32c + e % 32.
    auto q4k = random_bytes(144);
    set_half(q4k.data(), static_cast<float>(rng.uniform() - 0.5));
    set_half(q4k.data() + 2, static_cast<float>(rng.uniform() - 0.5));
    std::vector<float> got(256);
    dequantize_ggml(12, q4k.data(), got.data(), 256);
    const float d = get_half(q4k.data()), dmin = get_half(q4k.data() + 2);
    const std::uint8_t* sc = q4k.data() + 4;
    for (int e = 0; e < 256; ++e) {
      const int s = e / 32, c = e / 64;
      const int byte = q4k[16 + 32 * c + e % 32];
      const int q = (s % 2 == 0) ? (byte & 15) : (byte >> 4);
      // 6-bit scale/min of sub-block s, from the 12-byte packing described in docs/file-formats.md
      const int scale = s < 4 ? (sc[s] & 63) : ((sc[s + 4] & 15) | ((sc[s - 4] >> 6) << 4));
      const int mn = s < 4 ? (sc[s + 4] & 63) : ((sc[s + 4] >> 4) | ((sc[s] >> 6) << 4));
      REQUIRE(got[e] == doctest::Approx(d * scale * q - dmin * mn).epsilon(1e-6));
    }
    // Q6_K: element e: half h = e / 128, r = e % 128, quarter k = r / 32, l = r % 32.
    auto q6k = random_bytes(210);
    set_half(q6k.data() + 208, static_cast<float>(rng.uniform() - 0.5));
    dequantize_ggml(14, q6k.data(), got.data(), 256);
    const float d6 = get_half(q6k.data() + 208);
    for (int e = 0; e < 256; ++e) {
      const int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
      const int low_byte = q6k[64 * h + l + (k % 2) * 32];
      const int low = (k < 2) ? (low_byte & 15) : (low_byte >> 4);
      const int high = (q6k[128 + 32 * h + l] >> (2 * k)) & 3;
      const int scale = static_cast<std::int8_t>(q6k[192 + 8 * h + 2 * k + l / 16]);
      REQUIRE(got[e] == doctest::Approx(d6 * scale * ((low | (high << 4)) - 32)).epsilon(1e-6));
    }
    // Q4_1: element e of a 32-block: nibble (e < 16 ? low : high) of qs[e % 16], times d plus m.
    auto q41 = random_bytes(20);
    set_half(q41.data(), static_cast<float>(rng.uniform() - 0.5));
    set_half(q41.data() + 2, static_cast<float>(rng.uniform() - 0.5));
    dequantize_ggml(3, q41.data(), got.data(), 32);
    for (int e = 0; e < 32; ++e) {
      const int byte = q41[4 + e % 16];
      const int q = e < 16 ? (byte & 15) : (byte >> 4);
      REQUIRE(got[e] == doctest::Approx(q * get_half(q41.data()) + get_half(q41.data() + 2)).epsilon(1e-6));
    }
  }
  CHECK_THROWS_AS(dequantize_ggml(10, nullptr, nullptr, 256), lowbit::Error);  // Q2_K: sized, not supported
  CHECK_THROWS_AS(dequantize_ggml(77, nullptr, nullptr, 32), lowbit::Error);   // unknown id
}

TEST_CASE("gguf: synthetic file, metadata of every type and tensor mapping") {
  const auto dir = temp_dir("synth");
  for (std::uint32_t version : {2u, 3u}) {
    const auto g = synthetic_llama_gguf(/*untied=*/true, version);
    write_all(dir / "m.gguf", g.b);
    const GgufFile f(dir / "m.gguf");
    CHECK(f.version() == version);
    CHECK(f.alignment() == 64);
    CHECK(f.data_offset() % 64 == 0);
    CHECK(f.get_string("general.architecture") == "llama");
    CHECK(f.get_int("llama.block_count") == kLayers);
    CHECK(f.get_float("llama.rope.freq_base") == 500000.0);
    CHECK(f.get_float("test.f64") == 2.5);
    CHECK(f.get_bool("test.flag"));
    CHECK(f.get_int_array("test.scalars") == std::vector<std::int64_t>{-5, 1LL << 40, 7});
    CHECK(f.get_string_array("tokenizer.ggml.tokens") == std::vector<std::string>{"<s>", "hello", "\xe2\x96\x81world"});
    CHECK(f.get_float_array("tokenizer.ggml.scores") == std::vector<float>{0.0f, -1.5f, -2.25f});
    const auto& nested = f.get_array("test.nested");
    REQUIRE(nested.items.size() == 2);
    CHECK(nested.element_type == GgufType::ARRAY);
    CHECK(std::get<std::int8_t>(std::get<GgufArray>(nested.items[1].v).items[1].v) == 101);
    CHECK(f.keys().size() == 16);
    CHECK(f.keys().front() == "general.architecture");
    // Wrong type or missing key: clear errors naming the key.
    CHECK_THROWS_WITH_AS(f.get_string("llama.block_count"), doctest::Contains("llama.block_count"), lowbit::Error);
    CHECK_THROWS_WITH_AS(f.get_int("no.such.key"), doctest::Contains("no.such.key"), lowbit::Error);
    CHECK_THROWS_AS(f.get_float("llama.block_count"), lowbit::Error);
    CHECK_THROWS_AS(f.get_bool("general.architecture"), lowbit::Error);
    CHECK_THROWS_AS(f.get_string_array("tokenizer.ggml.scores"), lowbit::Error);
    CHECK_THROWS_AS(f.get_int_array("tokenizer.ggml.tokens"), lowbit::Error);
    CHECK(f.get_int_or("no.such.key", 42) == 42);
    CHECK(f.get_string_or("general.architecture", "x") == "llama");
    // The Q4_0 extra tensor: element j (< 16) = j - 8, element j + 16 = ((j + 3) % 16) - 8.
    const auto q = f.dequantize("extra.q4_0");
    REQUIRE(q.size() == 64);
    for (int j = 0; j < 16; ++j) {
      CHECK(q[j] == static_cast<float>(j - 8));
      CHECK(q[j + 16] == static_cast<float>((j + 3) % 16 - 8));
    }

    const auto w = load_gguf(dir / "m.gguf");
    const auto& c = w.config;
    CHECK(c.dim == kDim);
    CHECK(c.hidden_dim == kHidden);
    CHECK(c.n_layers == kLayers);
    CHECK(c.n_heads == kHeads);
    CHECK(c.n_kv_heads == kKvHeads);
    CHECK(c.vocab_size == kVocab);
    CHECK(c.max_seq_len == 256);
    CHECK(c.norm_eps == 1e-6f);
    CHECK(c.rope_theta == 500000.0f);
    CHECK(c.rope_layout == lowbit::nn::RopeLayout::Interleaved);
    CHECK_FALSE(c.tied_embeddings);
    // ggml dims {in, out} map to row-major [out, in]: element (r, c) is base + r * in + c.
    const auto& wk = w.get("layers.1.attention.wk.weight", {32, kDim});
    CHECK(wk.data[5 * kDim + 7] == 20003.0f + 5 * kDim + 7);
    const auto& w2 = w.get("layers.0.feed_forward.w2.weight", {kDim, kHidden});
    CHECK(w2.data[63 * kHidden + 95] == 10008.0f + 63 * kHidden + 95);
    CHECK(w.get("norm.weight", {kDim}).data[3] == 0.5f);
    const auto& out = w.get("output.weight", {kVocab, kDim});
    CHECK(out.data[0] == -4.0f);
    CHECK(out.data[kDim + 31] == 3.75f);
    CHECK(w.tensors.size() == 3 + 9 * kLayers);
  }
  // Tied: no output tensor.
  write_all(dir / "tied.gguf", synthetic_llama_gguf(false).b);
  CHECK(load_gguf(dir / "tied.gguf").config.tied_embeddings);
  fs::remove_all(dir);
}

TEST_CASE("gguf: SmolLM2-135M Q4_1 loads with the right config and values") {
  const auto path = lowbit::test::smollm2_gguf();
  if (path.empty()) LOWBIT_SKIP("SmolLM2 GGUF not cached (run tools/fetch_smollm2.sh)");
  const GgufFile f(path);
  CHECK(f.version() == 3);
  CHECK(f.tensors().size() == 272);
  CHECK(f.keys().size() == 33);
  CHECK(f.data_offset() == 1785664);
  CHECK(f.get_string("tokenizer.ggml.model") == "gpt2");
  CHECK(f.get_string_array("tokenizer.ggml.tokens").size() == 49152);
  CHECK(f.get_string_array("tokenizer.ggml.merges").size() == 48900);
  CHECK(f.get_int_array("tokenizer.ggml.token_type").size() == 49152);
  CHECK(f.get_int("tokenizer.ggml.eos_token_id") == 2);
  CHECK(f.tensor("token_embd.weight").type == static_cast<std::uint32_t>(GgmlType::Q8_0));
  CHECK(f.tensor("blk.0.attn_q.weight").type == static_cast<std::uint32_t>(GgmlType::Q4_1));

  // Expected bit patterns: gguf.GGUFReader + gguf.quants.dequantize (gguf 0.19.0, numpy), reshaped to
  // the reversed ggml dims, then .view(uint32); index is [row, col] of the row-major [out, in] matrix.
  struct Pick {
    const char* name;
    std::size_t index;
    std::uint32_t expected;
  };
  const Pick picks[] = {
      {"token_embd.weight", 0, 0xbdda3400u},
      {"token_embd.weight", 49151u * 576 + 575, 0xbd2ad000u},
      {"token_embd.weight", 1234u * 576 + 321, 0xbcf96000u},
      {"blk.0.attn_q.weight", 5 * 576 + 7, 0xbec88000u},
      {"blk.0.attn_k.weight", 191 * 576 + 575, 0x3eba3000u},
      {"blk.7.ffn_down.weight", 575 * 1536 + 1535, 0x3d69c000u},
      {"blk.29.ffn_gate.weight", 1000 * 576 + 100, 0x3d8de000u},
      {"blk.13.attn_output.weight", 300 * 576 + 301, 0xbd901000u},
      {"blk.29.ffn_norm.weight", 575, 0x3eac0000u},
      {"output_norm.weight", 0, 0x3fe10000u},
      {"blk.3.attn_v.weight", 17 * 576 + 33, 0x3d585000u},
  };
  for (const auto& p : picks) {
    CAPTURE(p.name);
    CAPTURE(p.index);
    CHECK(bits(f.dequantize(p.name)[p.index]) == p.expected);
  }

  const auto w = load_gguf(path);
  const auto& c = w.config;
  CHECK(c.dim == 576);
  CHECK(c.hidden_dim == 1536);
  CHECK(c.n_layers == 30);
  CHECK(c.n_heads == 9);
  CHECK(c.n_kv_heads == 3);
  CHECK(c.vocab_size == 49152);
  CHECK(c.max_seq_len == 8192);
  CHECK(c.norm_eps == 1e-5f);
  CHECK(c.rope_theta == 100000.0f);
  CHECK(c.tied_embeddings);
  CHECK(c.rope_layout == lowbit::nn::RopeLayout::Interleaved);
  CHECK(w.tensors.size() == 2 + 30 * 9);
  CHECK(bits(w.get("layers.0.attention.wq.weight", {576, 576}).data[5 * 576 + 7]) == 0xbec88000u);
  CHECK(bits(w.get("layers.7.feed_forward.w2.weight", {576, 1536}).data[575 * 1536 + 1535]) == 0x3d69c000u);
}

TEST_CASE("gguf: truncated and corrupted files raise lowbit::Error") {
  const auto dir = temp_dir("robust");
  const auto g = synthetic_llama_gguf(true);
  const auto& original = g.b;
  const auto bad = dir / "bad.gguf";
  write_all(bad, original);
  REQUIRE_NOTHROW(load_gguf(bad));
  const std::size_t data_start = GgufFile(bad).data_offset();

  // Every cut inside the header and the first tensor bytes, then a spread of cuts in the data.
  int truncations = 0;
  for (std::size_t cut = 0; cut < original.size(); cut += (cut < data_start + 64 ? 1 : 1999)) {
    write_all(bad, std::vector<std::uint8_t>(original.begin(), original.begin() + static_cast<long>(cut)));
    CAPTURE(cut);
    CHECK_THROWS_AS(load_gguf(bad), lowbit::Error);
    ++truncations;
  }
  write_all(bad, std::vector<std::uint8_t>(original.begin(), original.end() - 1));
  CHECK_THROWS_AS(load_gguf(bad), lowbit::Error);
  CHECK(truncations > 1000);

  // Every recorded header field replaced with invalid values.
  int corruptions = 0;
  for (const auto& field : g.fields) {
    std::vector<std::uint64_t> values;
    const std::string& w = field.what;
    if (w == "type of extra.q4_0") continue;  // not a model tensor: an unknown type there is legal
    if (w == "magic") values = {0x46554746u, 0, 0x47475546u};
    else if (w == "version") values = {0, 1, 4, 0xffffffffu};
    else if (w.rfind("type of ", 0) == 0 && w.find(".weight") == std::string::npos && w.find("extra") == std::string::npos)
      values = {13, 99, 0xffffffffu};  // metadata value types
    else if (w.rfind("type of ", 0) == 0)
      values = {3, 13, 99, 31, 0xffffffffu};  // tensor types: wrong size, unknown
    else if (w.find("element type") != std::string::npos) values = {13, 0xffffffffu};
    else if (w.find("count") != std::string::npos) values = {1ull << 40, ~0ull};
    else if (w.find("length") != std::string::npos) values = {1ull << 40, ~0ull, 1ull << 20};
    else if (w.rfind("n_dims", 0) == 0) values = {0, 5, 0xffffffffu};
    else if (w.rfind("dim ", 0) == 0) values = {0, 1ull << 40, ~0ull, 1ull << 30};
    else if (w.rfind("offset of", 0) == 0) values = {1, 1ull << 40, ~0ull - 63};
    if (w == "tensor count" || w == "kv count") values = {1ull << 40, ~0ull, 0x1000};
    for (auto v : values) {
      auto copy = original;
      if (field.size == 4) {
        const auto v32 = static_cast<std::uint32_t>(v);
        std::memcpy(copy.data() + field.offset, &v32, 4);
      } else {
        std::memcpy(copy.data() + field.offset, &v, 8);
      }
      if (copy == original) continue;
      write_all(bad, copy);
      CAPTURE(w);
      CAPTURE(v);
      CHECK_THROWS_AS(load_gguf(bad), lowbit::Error);
      ++corruptions;
    }
  }
  CHECK(corruptions > 150);

  // Semantic corruptions: dims and types that keep the file parseable but disagree with the model.
  auto flip_u64 = [&](const std::string& what, std::uint64_t v) {
    for (const auto& field : g.fields)
      if (field.what == what) {
        auto copy = original;
        std::memcpy(copy.data() + field.offset, &v, 8);
        return copy;
      }
    FAIL("no field ", what);
    return original;
  };
  auto flip_u32 = [&](const std::string& what, std::uint32_t v) {
    for (const auto& field : g.fields)
      if (field.what == what) {
        auto copy = original;
        std::memcpy(copy.data() + field.offset, &v, 4);
        return copy;
      }
    FAIL("no field ", what);
    return original;
  };
  const std::vector<std::vector<std::uint8_t>> semantic = {
      flip_u64("dim 0 of blk.0.attn_norm.weight", 32),            // smaller tensor: gap before the next
      flip_u64("dim 1 of blk.1.attn_k.weight", 16),               // [16, 64]: shape mismatch
      flip_u32("type of blk.0.ffn_norm.weight", 1),               // F32 -> F16: gap
      flip_u32("type of token_embd.weight", 8),                   // F32 -> Q8_0: gap
      flip_u32("type of output.weight", 10),                      // Q8_0 -> Q2_K (sized, not dequantizable)
      flip_u64("offset of blk.0.attn_q.weight", 0),               // overlaps token_embd
  };
  for (const auto& copy : semantic) {
    write_all(bad, copy);
    CHECK_THROWS_AS(load_gguf(bad), lowbit::Error);
  }
  // Not a llama: architecture key changed (same length, so the file still parses).
  {
    auto copy = original;
    for (const auto& field : g.fields)
      if (field.what == "value of general.architecture length") std::memcpy(copy.data() + field.offset + 8, "gemma", 5);
    write_all(bad, copy);
    CHECK_THROWS_WITH_AS(load_gguf(bad), doctest::Contains("gemma"), lowbit::Error);
  }
  CHECK_THROWS_AS(load_gguf(dir / "missing.gguf"), lowbit::Error);
  fs::remove_all(dir);
}

TEST_CASE("gguf: truncated copies of the real SmolLM2 header raise lowbit::Error") {
  const auto path = lowbit::test::smollm2_gguf();
  if (path.empty()) LOWBIT_SKIP("SmolLM2 GGUF not cached (run tools/fetch_smollm2.sh)");
  const auto dir = temp_dir("real");
  // The metadata (vocab, merges) and tensor infos fill the first ~1.8 MB; cut inside them.
  std::vector<std::uint8_t> head(2u << 20);
  {
    std::ifstream in(path, std::ios::binary);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  }
  lowbit::Rng rng(11);
  std::vector<std::size_t> cuts = {0, 3, 8, 20, 23, 24, 100, 1785663, 1785664, 1785700, head.size()};
  for (int i = 0; i < 10; ++i) cuts.push_back(static_cast<std::size_t>(rng.below(1785664)));
  for (auto cut : cuts) {
    write_all(dir / "cut.gguf", std::vector<std::uint8_t>(head.begin(), head.begin() + static_cast<long>(cut)));
    CAPTURE(cut);
    CHECK_THROWS_AS(GgufFile(dir / "cut.gguf"), lowbit::Error);
  }
  fs::remove_all(dir);
}
