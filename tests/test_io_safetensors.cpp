// safetensors reader/writer and the Hugging Face LLaMA loader: a file written by the reference Python
// package, writer -> reader round trips for every dtype, a sharded synthetic HF checkpoint, load_model
// dispatch, and robustness: truncated and header-corrupted files raise lowbit::Error, never crash.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lowbit/core/atomic_file.hpp"
#include "lowbit/core/half.hpp"
#include "lowbit/core/rng.hpp"
#include "lowbit/io/hf_llama.hpp"
#include "lowbit/io/model_loader.hpp"
#include "lowbit/io/safetensors.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using namespace lowbit::io;
using lowbit::index_t;

namespace {

fs::path temp_dir(const std::string& tag) {
  // /dev/shm when present: thousands of small rewrites are ~100x faster there than on an overlay disk
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  auto d = base / ("lowbit_test_io_st_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::vector<std::uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p) << s; }

template <class T>
T element(const SafeTensorInfo& t, std::size_t i) {
  T v;
  std::memcpy(&v, t.data + i * sizeof(T), sizeof(T));
  return v;
}

// A tiny HF LLaMA (dim 16, 2 layers, 4 heads, 2 KV heads, vocab 24); element e of each tensor = base + e.
struct TinyHf {
  static constexpr int dim = 16, hidden = 24, layers = 2, heads = 4, kv_heads = 2, vocab = 24;
  std::vector<std::pair<std::string, std::vector<index_t>>> tensors() const {
    const index_t kv = dim / heads * kv_heads;
    std::vector<std::pair<std::string, std::vector<index_t>>> t = {{"model.embed_tokens.weight", {vocab, dim}}};
    for (int l = 0; l < layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      t.push_back({p + "input_layernorm.weight", {dim}});
      t.push_back({p + "self_attn.q_proj.weight", {dim, dim}});
      t.push_back({p + "self_attn.k_proj.weight", {kv, dim}});
      t.push_back({p + "self_attn.v_proj.weight", {kv, dim}});
      t.push_back({p + "self_attn.o_proj.weight", {dim, dim}});
      t.push_back({p + "post_attention_layernorm.weight", {dim}});
      t.push_back({p + "mlp.gate_proj.weight", {hidden, dim}});
      t.push_back({p + "mlp.up_proj.weight", {hidden, dim}});
      t.push_back({p + "mlp.down_proj.weight", {dim, hidden}});
    }
    t.push_back({"model.norm.weight", {dim}});
    t.push_back({"lm_head.weight", {vocab, dim}});
    return t;
  }
  std::string config(bool tied) const {
    return nlohmann::json{{"model_type", "llama"},
                          {"hidden_size", dim},
                          {"intermediate_size", hidden},
                          {"num_hidden_layers", layers},
                          {"num_attention_heads", heads},
                          {"num_key_value_heads", kv_heads},
                          {"vocab_size", vocab},
                          {"max_position_embeddings", 128},
                          {"rms_norm_eps", 1e-6},
                          {"rope_theta", 50000.0},
                          {"tie_word_embeddings", tied},
                          {"rope_scaling", nullptr}}
        .dump(2);
  }
  // Writes the model into `dir` as `n_shards` shards (BF16 for the MLP, F16 for attention, F32 otherwise).
  void write(const fs::path& dir, int n_shards, bool tied) const {
    write_text(dir / "config.json", config(tied));
    std::vector<SafetensorsWriter> shards(static_cast<std::size_t>(n_shards));
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", nlohmann::json::object()}};
    int k = 0;
    for (const auto& [name, shape] : tensors()) {
      if (tied && name == "lm_head.weight") continue;
      index_t n = 1;
      for (auto d : shape) n *= d;
      std::vector<float> v(static_cast<std::size_t>(n));
      for (index_t e = 0; e < n; ++e) v[static_cast<std::size_t>(e)] = static_cast<float>(k) + 0.015625f * static_cast<float>(e % 64);
      const SafeDtype dt = name.find("mlp") != std::string::npos         ? SafeDtype::BF16
                           : name.find("self_attn") != std::string::npos ? SafeDtype::F16
                                                                         : SafeDtype::F32;
      const int s = k % n_shards;
      shards[static_cast<std::size_t>(s)].add_f32_as(name, dt, shape, v.data());
      const std::string file = n_shards == 1 ? "model.safetensors"
                                             : "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(n_shards) + ".safetensors";
      index["weight_map"][name] = file;
      ++k;
    }
    for (int s = 0; s < n_shards; ++s) {
      shards[static_cast<std::size_t>(s)].set_metadata("format", "pt");
      const std::string file = n_shards == 1 ? "model.safetensors"
                                             : "model-0000" + std::to_string(s + 1) + "-of-0000" + std::to_string(n_shards) + ".safetensors";
      shards[static_cast<std::size_t>(s)].write(dir / file);
    }
    if (n_shards > 1) write_text(dir / "model.safetensors.index.json", index.dump(2));
  }
};

}  // namespace

TEST_CASE("safetensors: reads a file written by the Python safetensors package") {
  const fs::path p = fs::path(LOWBIT_SOURCE_DIR) / "tests/data/python_written.safetensors";
  REQUIRE(fs::exists(p));
  const SafetensorsFile f(p);
  CHECK(f.metadata().at("format") == "pt");
  CHECK(f.metadata().at("lowbit.note") == "written by safetensors (python)");
  CHECK(f.tensors().size() == 6);
  const auto a = f.to_f32("a_f32");
  CHECK(f.tensor("a_f32").shape == std::vector<index_t>{2, 3});
  for (int i = 0; i < 6; ++i) CHECK(a[static_cast<std::size_t>(i)] == 0.5f * static_cast<float>(i) - 1.0f);
  CHECK(f.to_f32("b_f16") == std::vector<float>{1.0f, -2.5f, 65504.0f, std::ldexp(1.0f, -24)});
  const auto& c = f.tensor("c_i32");
  CHECK(c.dtype == SafeDtype::I32);
  CHECK(element<std::int32_t>(c, 0) == -7);
  CHECK(element<std::int32_t>(c, 2) == 2147483647);
  const auto& d = f.tensor("d_u8");
  CHECK(d.dtype == SafeDtype::U8);
  CHECK(d.bytes() == 4);
  CHECK(d.data[3] == 250);
  CHECK(element<std::int64_t>(f.tensor("e_i64"), 0) == -(1LL << 40));
  CHECK(f.tensor("f_empty").shape == std::vector<index_t>{0, 4});
  CHECK(f.tensor("f_empty").bytes() == 0);
  CHECK_THROWS_WITH_AS(f.to_f32("c_i32"), doctest::Contains("c_i32"), lowbit::Error);
  CHECK_THROWS_WITH_AS(f.tensor("nope"), doctest::Contains("nope"), lowbit::Error);
}

TEST_CASE("safetensors: writer -> reader round trip for every dtype, atomically") {
  const auto dir = temp_dir("roundtrip");
  lowbit::Rng rng(99);
  std::vector<float> f32(7 * 5);
  for (auto& v : f32) v = static_cast<float>(rng.normal());
  std::vector<std::uint8_t> u8 = {0, 1, 2, 255};
  std::vector<std::int16_t> i16 = {-32768, -1, 0, 32767};
  std::vector<std::uint16_t> u16 = {0, 65535};
  std::vector<std::int32_t> i32 = {INT32_MIN, 5, INT32_MAX};
  std::vector<std::uint32_t> u32(100);
  for (auto& v : u32) v = rng.next_u32();
  std::vector<std::int64_t> i64 = {INT64_MIN, 0, INT64_MAX};
  std::vector<double> f64 = {1e300, -0.1};

  SafetensorsWriter w;
  w.add_f32("weights.f32", {7, 5}, f32.data());
  w.add_f32_as("weights.f16", SafeDtype::F16, {7, 5}, f32.data());
  w.add_f32_as("weights.bf16", SafeDtype::BF16, {5, 7}, f32.data());
  w.add("codes", SafeDtype::U8, {2, 2}, u8.data());
  w.add("i16", SafeDtype::I16, {4}, i16.data());
  w.add("u16", SafeDtype::U16, {2}, u16.data());
  w.add("i32", SafeDtype::I32, {3}, i32.data());
  w.add_view("packed", SafeDtype::U32, {10, 10}, u32.data());
  w.add("i64", SafeDtype::I64, {3}, i64.data());
  w.add("f64", SafeDtype::F64, {2}, f64.data());
  w.add("empty", SafeDtype::F32, {0}, nullptr);
  w.set_metadata("quantization_config", R"({"format":"uniform:4:128"})");
  w.set_metadata("lowbit.version", "0.1.0");
  CHECK_THROWS_AS(w.add("codes", SafeDtype::U8, {1}, u8.data()), lowbit::Error);  // duplicate name
  w.write(dir / "out.safetensors");
  // Nothing but the final file is left in the folder.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  CHECK(files == 1);

  const SafetensorsFile f(dir / "out.safetensors");
  CHECK(f.data_offset() % 8 == 0);
  CHECK(f.metadata().at("quantization_config") == R"({"format":"uniform:4:128"})");
  CHECK(f.metadata().at("lowbit.version") == "0.1.0");
  CHECK(f.tensors().size() == 11);
  CHECK(f.to_f32("weights.f32") == f32);
  const auto h = f.to_f32("weights.f16");
  const auto b = f.to_f32("weights.bf16");
  for (std::size_t i = 0; i < f32.size(); ++i) {
    CHECK(h[i] == lowbit::half_bits_to_float(lowbit::float_to_half_bits(f32[i])));
    CHECK(b[i] == lowbit::bf16_bits_to_float(lowbit::float_to_bf16_bits(f32[i])));
  }
  CHECK(f.tensor("weights.bf16").shape == std::vector<index_t>{5, 7});
  CHECK(std::memcmp(f.tensor("codes").data, u8.data(), 4) == 0);
  CHECK(std::memcmp(f.tensor("i16").data, i16.data(), 8) == 0);
  CHECK(std::memcmp(f.tensor("u16").data, u16.data(), 4) == 0);
  CHECK(std::memcmp(f.tensor("i32").data, i32.data(), 12) == 0);
  CHECK(std::memcmp(f.tensor("packed").data, u32.data(), 400) == 0);
  CHECK(f.tensor("packed").dtype == SafeDtype::U32);
  CHECK(std::memcmp(f.tensor("i64").data, i64.data(), 24) == 0);
  CHECK(f.to_f32("f64") == std::vector<float>{static_cast<float>(1e300), -0.1f});
  CHECK(f.tensor("empty").numel() == 0);

  // Same input, same bytes (deterministic), and overwriting an existing file is atomic too.
  const auto first = read_all(dir / "out.safetensors");
  w.write(dir / "out.safetensors");
  CHECK(read_all(dir / "out.safetensors") == first);
  // Writing into a folder that does not exist fails cleanly.
  CHECK_THROWS_AS(w.write(dir / "missing" / "x.safetensors"), lowbit::Error);
  fs::remove_all(dir);
}

TEST_CASE("atomic writes remove the temporaries of killed writers, never a live writer's") {
  const auto dir = temp_dir("stale");
  // A pid that no longer runs: a child that has exited and been reaped.
  const pid_t dead = fork();
  if (dead == 0) _exit(0);
  REQUIRE(dead > 0);
  int status = 0;
  REQUIRE(waitpid(dead, &status, 0) == dead);
  const auto stale = dir / (".out.safetensors.tmp." + std::to_string(dead));
  const auto live = dir / (".out.safetensors.tmp." + std::to_string(getppid()));  // our parent runs
  const auto other = dir / (".other.safetensors.tmp." + std::to_string(dead));  // another destination
  for (const auto& p : {stale, live, other}) lowbit::write_file_atomically(p, "debris");
  lowbit::write_file_atomically(dir / "out.safetensors", "new bytes");
  const auto written = read_all(dir / "out.safetensors");
  CHECK(std::string(written.begin(), written.end()) == "new bytes");
  CHECK_FALSE(fs::exists(stale));
  CHECK(fs::exists(live));
  CHECK(fs::exists(other));
  fs::remove_all(dir);
}

TEST_CASE("hf llama: sharded and single-file checkpoints load with canonical names") {
  const auto dir = temp_dir("hf");
  const TinyHf m;
  for (int shards : {1, 3}) {
    for (bool tied : {false, true}) {
      fs::remove_all(dir);
      fs::create_directories(dir);
      m.write(dir, shards, tied);
      CAPTURE(shards);
      CAPTURE(tied);
      CHECK(detect_model_format(dir) == ModelFormat::HfFolder);
      const auto w = load_model(dir);
      const auto& c = w.config;
      CHECK(c.dim == 16);
      CHECK(c.hidden_dim == 24);
      CHECK(c.n_layers == 2);
      CHECK(c.n_heads == 4);
      CHECK(c.n_kv_heads == 2);
      CHECK(c.vocab_size == 24);
      CHECK(c.max_seq_len == 128);
      CHECK(c.norm_eps == 1e-6f);
      CHECK(c.rope_theta == 50000.0f);
      CHECK(c.rope_layout == lowbit::nn::RopeLayout::HalfSplit);
      CHECK(c.tied_embeddings == tied);
      CHECK(w.tensors.size() == (tied ? 2u : 3u) + 9u * 2u);
      // Tensor k in the writer's order holds k + e/64: check the mapping of a few names and dtypes.
      CHECK(w.get("tok_embeddings.weight", {24, 16}).data[5] == 0.078125f);
      CHECK(w.get("layers.0.attention_norm.weight", {16}).data[0] == 1.0f);
      CHECK(w.get("layers.0.attention.wk.weight", {8, 16}).data[3] == 3.046875f);           // F16
      CHECK(w.get("layers.1.feed_forward.w1.weight", {24, 16}).data[8] == 16.125f);        // BF16 gate
      CHECK(w.get("layers.1.feed_forward.w3.weight", {24, 16}).data[0] == 17.0f);          // up
      CHECK(w.get("layers.1.feed_forward.w2.weight", {16, 24}).data[0] == 18.0f);          // down
      CHECK(w.get("norm.weight", {16}).data[0] == 19.0f);
      if (!tied) CHECK(w.get("output.weight", {24, 16}).data[1] == 20.015625f);
    }
  }
  // A .safetensors file directly, with config.json beside it.
  fs::remove_all(dir);
  fs::create_directories(dir);
  m.write(dir, 1, false);
  CHECK(detect_model_format(dir / "model.safetensors") == ModelFormat::Safetensors);
  CHECK(load_model(dir / "model.safetensors").config.n_layers == 2);
  // Config errors name the key.
  write_text(dir / "config.json", R"({"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2})");
  CHECK_THROWS_WITH_AS(load_hf_llama(dir), doctest::Contains("num_attention_heads"), lowbit::Error);
  write_text(dir / "config.json", R"({"hidden_size": "16"})");
  CHECK_THROWS_WITH_AS(load_hf_llama(dir), doctest::Contains("hidden_size"), lowbit::Error);
  write_text(dir / "config.json", "{not json");
  CHECK_THROWS_AS(load_hf_llama(dir), lowbit::Error);
  // An index naming a shard that does not hold the tensor.
  fs::remove_all(dir);
  fs::create_directories(dir);
  m.write(dir, 3, false);
  auto index = nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  // model.norm.weight is tensor 19, stored in shard 19 % 3 = 1 (file 00002); point the index elsewhere
  index["weight_map"]["model.norm.weight"] = "model-00001-of-00003.safetensors";
  write_text(dir / "model.safetensors.index.json", index.dump());
  CHECK_THROWS_WITH_AS(load_hf_llama(dir), doctest::Contains("model.norm.weight"), lowbit::Error);
  fs::remove_all(dir);
}

TEST_CASE("model_loader: dispatch by magic and extension, clear error otherwise") {
  const auto dir = temp_dir("dispatch");
  write_text(dir / "notes.txt", "hello world, not a model");
  CHECK(detect_model_format(dir / "notes.txt") == ModelFormat::Unknown);
  CHECK_THROWS_WITH_AS(load_model(dir / "notes.txt"), doctest::Contains("looks like a text file"), lowbit::Error);
  CHECK_THROWS_WITH_AS(load_model(dir / "absent.gguf"), doctest::Contains("does not exist"), lowbit::Error);
  CHECK(detect_model_format(dir) == ModelFormat::Unknown);
  CHECK_THROWS_AS(load_model(dir), lowbit::Error);
  write_all(dir / "fake.gguf", {'G', 'G', 'U', 'F', 3, 0, 0, 0});
  CHECK(detect_model_format(dir / "fake.gguf") == ModelFormat::Gguf);
  CHECK_THROWS_AS(load_model(dir / "fake.gguf"), lowbit::Error);
  if (auto p = lowbit::test::shared_file("models/stories260K.bin"); !p.empty()) {
    CHECK(detect_model_format(p) == ModelFormat::Llama2c);
    CHECK(load_model(p).config.vocab_size == 512);
  }
  if (auto p = lowbit::test::smollm2_gguf(); !p.empty()) CHECK(detect_model_format(p) == ModelFormat::Gguf);
  fs::remove_all(dir);
}

TEST_CASE("safetensors: truncated and corrupted files raise lowbit::Error") {
  const auto dir = temp_dir("robust");
  SafetensorsWriter w;
  std::vector<float> a(48, 1.5f);
  std::vector<std::uint16_t> b(10, 7);
  w.add_f32("a", {6, 8}, a.data());
  w.add("b", SafeDtype::U16, {10}, b.data());
  w.set_metadata("k", "v");
  w.write(dir / "good.safetensors");
  const auto original = read_all(dir / "good.safetensors");
  const auto bad = dir / "bad.safetensors";
  REQUIRE_NOTHROW(SafetensorsFile(dir / "good.safetensors"));

  int cases = 0;
  for (std::size_t cut = 0; cut < original.size(); ++cut) {
    write_all(bad, std::vector<std::uint8_t>(original.begin(), original.begin() + static_cast<long>(cut)));
    CAPTURE(cut);
    CHECK_THROWS_AS(SafetensorsFile{bad}, lowbit::Error);
    ++cases;
  }
  // Header length field: zero, one more/less, huge.
  std::uint64_t header_len;
  std::memcpy(&header_len, original.data(), 8);
  for (std::uint64_t v : {std::uint64_t{0}, header_len - 1, header_len + 1, std::uint64_t{1} << 40, ~std::uint64_t{0}}) {
    auto copy = original;
    std::memcpy(copy.data(), &v, 8);
    write_all(bad, copy);
    CHECK_THROWS_AS(SafetensorsFile{bad}, lowbit::Error);
    ++cases;
  }
  // Header JSON edits of the same length (so the header length stays right): each must be rejected.
  const std::string header(original.begin() + 8, original.begin() + 8 + static_cast<long>(header_len));
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"\"F32\"", "\"F31\""},                  // unknown dtype
      {"\"F32\"", "\"U16\""},                  // dtype of a different size
      {"\"U16\"", "\"U32\""},                  // dtype of a different size
      {"[6,8]", "[8,6]"},                      // same numel: still consistent, so patched below instead
      {"[6,8]", "[7,8]"},                      // shape larger than its bytes
      {"[6,8]", "[6,-8"},                      // negative / broken
      {"\"data_offsets\":[0,192]", "\"data_offsets\":[0,193]"},  // bytes disagree with shape
      {"\"data_offsets\":[0,192]", "\"data_offsets\":[2,194]"},  // hole + overlap
      {"\"data_offsets\":[192,212]", "\"data_offsets\":[190,210]"},  // overlap
      {"\"data_offsets\":[192,212]", "\"data_offsets\":[212,192]"},  // begin > end
      {"{\"k\":\"v\"}", "{\"k\":  1}"},       // non-string metadata
      {"\"dtype\"", "\"dtypX\""},              // missing dtype
      {"\"shape\"", "\"shapX\""},              // missing shape
      {"{", "["},                              // not an object
      {"}", "]"},                              // broken JSON
  };
  int applied = 0;
  for (const auto& [from, to] : edits) {
    if (from == "[6,8]" && to == "[8,6]") continue;  // a legal reshape, not corruption
    const auto pos = header.find(from);
    REQUIRE_MESSAGE(pos != std::string::npos, from);
    std::string edited = header;
    edited.replace(pos, from.size(), to);
    while (edited.size() < header.size()) edited.push_back(' ');
    if (edited.size() > header.size()) continue;
    auto copy = original;
    std::memcpy(copy.data() + 8, edited.data(), edited.size());
    write_all(bad, copy);
    CAPTURE(edited);
    CHECK_THROWS_AS(SafetensorsFile{bad}, lowbit::Error);
    ++applied;
  }
  CHECK(applied >= 12);
  // Trailing garbage after the last tensor.
  auto longer = original;
  longer.push_back(0);
  write_all(bad, longer);
  CHECK_THROWS_AS(SafetensorsFile{bad}, lowbit::Error);
  // Random byte flips anywhere in the header: an error or a valid parse, never a crash.
  lowbit::Rng rng(5);
  for (int i = 0; i < 300; ++i) {
    auto copy = original;
    const auto pos = static_cast<std::size_t>(rng.below(8 + header_len));
    copy[pos] = static_cast<std::uint8_t>(rng.below(256));
    write_all(bad, copy);
    try {
      SafetensorsFile f(bad);
      for (const auto& t : f.tensors()) CHECK(t.begin + t.bytes() <= original.size());
    } catch (const lowbit::Error&) {
    }
  }
  CHECK(cases > 100);
  fs::remove_all(dir);
}
