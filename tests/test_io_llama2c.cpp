// llama2.c checkpoint loader: the real stories260K file (config and weight values checked against an
// independent numpy read), a synthetic checkpoint with a separate classifier, and robustness: truncated
// and header-corrupted copies must raise lowbit::Error, never crash or read out of bounds.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/core/rng.hpp"
#include "lowbit/io/llama2c.hpp"
#include "test_util.hpp"

namespace fs = std::filesystem;
using lowbit::io::load_llama2c;

namespace {

std::vector<std::uint8_t> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_all(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

fs::path temp_dir(const std::string& tag) {
  // /dev/shm when present: thousands of small rewrites are ~100x faster there than on an overlay disk
  const fs::path base = fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  auto d = base / ("lowbit_test_io_llama2c_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  return d;
}

// A tiny checkpoint written field by field in llama2.c order, weights = running index * 0.001.
std::vector<std::uint8_t> synthetic_checkpoint(int dim, int hidden, int layers, int heads, int kv_heads, int vocab,
                                               int seq_len) {
  std::vector<std::uint8_t> bytes;
  auto put_i32 = [&](std::int32_t v) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(&v);
    bytes.insert(bytes.end(), p, p + 4);
  };
  for (int v : {dim, hidden, layers, heads, kv_heads, vocab, seq_len}) put_i32(v);
  const int head_dim = dim / heads, kv = head_dim * kv_heads, av = vocab < 0 ? -vocab : vocab;
  const long long floats = 1LL * av * dim + layers * (2LL * dim + 2LL * dim * dim + 2LL * kv * dim + 3LL * dim * hidden) +
                           dim + 1LL * seq_len * head_dim + (vocab < 0 ? 1LL * av * dim : 0);
  for (long long i = 0; i < floats; ++i) {
    const float f = static_cast<float>(i) * 0.001f;
    const auto* p = reinterpret_cast<const std::uint8_t*>(&f);
    bytes.insert(bytes.end(), p, p + 4);
  }
  return bytes;
}

}  // namespace

TEST_CASE("llama2c: stories260K loads with the header's config and the file's values") {
  const auto path = lowbit::test::shared_file("models/stories260K.bin");
  if (path.empty()) LOWBIT_SKIP("shared/data/models/stories260K.bin not found");
  const auto w = load_llama2c(path);
  const auto& c = w.config;
  CHECK(c.dim == 64);
  CHECK(c.hidden_dim == 172);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  CHECK(c.max_seq_len == 512);
  CHECK(c.tied_embeddings);
  CHECK(c.rope_layout == lowbit::nn::RopeLayout::Interleaved);
  CHECK(c.norm_eps == doctest::Approx(1e-5));
  CHECK(c.rope_theta == 10000.0f);
  CHECK(w.tensors.size() == 2 + 5 * 9);
  CHECK(w.tensors.count("output.weight") == 0);

  // Expected values: numpy.fromfile(path, float32, offset=28), sliced in llama2.c order (done once by
  // hand; bit patterns printed with .view(uint32)). Indices are [layer][row][col] of [out, in] matrices.
  auto bits = [](float f) {
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
  };
  CHECK(bits(w.get("tok_embeddings.weight", {512, 64}).data[3 * 64 + 5]) == 0x3e6ce516u);
  CHECK(bits(w.get("tok_embeddings.weight", {512, 64}).data[511 * 64 + 63]) == 0xbed91acdu);
  CHECK(bits(w.get("layers.2.attention_norm.weight", {64}).data[7]) == 0x3fad30e6u);
  CHECK(bits(w.get("layers.1.attention.wq.weight", {64, 64}).data[10 * 64 + 20]) == 0x3cb7170cu);
  CHECK(bits(w.get("layers.4.attention.wk.weight", {32, 64}).data[31 * 64 + 63]) == 0xbe87bf24u);
  CHECK(bits(w.get("layers.0.attention.wv.weight", {32, 64}).data[5 * 64 + 6]) == 0x3c089ca5u);
  CHECK(bits(w.get("layers.3.attention.wo.weight", {64, 64}).data[63 * 64 + 0]) == 0xbca96d75u);
  CHECK(bits(w.get("layers.4.ffn_norm.weight", {64}).data[1]) == 0x3f6cff8au);
  CHECK(bits(w.get("layers.2.feed_forward.w1.weight", {172, 64}).data[171 * 64 + 63]) == 0xbe1b462au);
  CHECK(bits(w.get("layers.4.feed_forward.w2.weight", {64, 172}).data[63 * 172 + 171]) == 0xbb65d38bu);
  CHECK(bits(w.get("layers.0.feed_forward.w3.weight", {172, 64}).data[100 * 64 + 30]) == 0xbd3d0593u);
  CHECK(bits(w.get("norm.weight", {64}).data[63]) == 0x3fda986fu);
}

TEST_CASE("llama2c: a negative vocab_size means a separate classifier after freq_cis") {
  const auto dir = temp_dir("untied");
  const auto bytes = synthetic_checkpoint(8, 12, 2, 2, 1, -10, 6);
  write_all(dir / "m.bin", bytes);
  const auto w = load_llama2c(dir / "m.bin");
  CHECK_FALSE(w.config.tied_embeddings);
  CHECK(w.config.vocab_size == 10);
  const auto& out = w.get("output.weight", {10, 8});
  // floats before wcls: emb 80 + 2 layers * (8+64+32+32+64+8+3*96 = 496) + norm 8 + freq_cis 2*12 = 1104
  CHECK(out.data[0] == doctest::Approx(1104 * 0.001f));
  const auto& wk1 = w.get("layers.1.attention.wk.weight", {4, 8});
  // emb 80, attn_norm 2*8, wq 2*64: wk of layer 0 starts at 224, layer 1 at 224 + 32
  CHECK(wk1.data[0] == doctest::Approx(256 * 0.001f));
  fs::remove_all(dir);
}

TEST_CASE("llama2c: truncated and corrupted files raise lowbit::Error") {
  const auto dir = temp_dir("robust");
  std::vector<std::vector<std::uint8_t>> originals;
  originals.push_back(synthetic_checkpoint(8, 12, 2, 2, 1, 10, 6));
  if (auto real = lowbit::test::shared_file("models/stories260K.bin"); !real.empty()) originals.push_back(read_all(real));
  lowbit::Rng rng(1234);
  int cases = 0;
  for (const auto& original : originals) {
    const auto bad = dir / "bad.bin";
    // Truncations: inside the header, at its end, and at many offsets in the weights.
    std::vector<std::size_t> cuts = {0, 1, 3, 4, 27, 28, 29, 32, original.size() / 2, original.size() - 4,
                                     original.size() - 1};
    for (int i = 0; i < 12; ++i) cuts.push_back(static_cast<std::size_t>(rng.below(original.size())));
    for (auto cut : cuts) {
      write_all(bad, std::vector<std::uint8_t>(original.begin(), original.begin() + static_cast<long>(cut)));
      CHECK_THROWS_AS(load_llama2c(bad), lowbit::Error);
      ++cases;
    }
    // An extra trailing byte is as wrong as a missing one.
    auto longer = original;
    longer.push_back(0);
    write_all(bad, longer);
    CHECK_THROWS_AS(load_llama2c(bad), lowbit::Error);
    // Header fields set to zero, negative, huge, or inconsistent values.
    const std::int32_t values[] = {0, -1, -7, 3, 1 << 30, INT32_MAX, INT32_MIN};
    for (int field = 0; field < 7; ++field) {
      for (auto v : values) {
        auto copy = original;
        std::int32_t old;
        std::memcpy(&old, copy.data() + 4 * field, 4);
        if (v == old || (field == 5 && v == -old)) continue;
        std::memcpy(copy.data() + 4 * field, &v, 4);
        write_all(bad, copy);
        CAPTURE(field);
        CAPTURE(v);
        CHECK_THROWS_AS(load_llama2c(bad), lowbit::Error);
        ++cases;
      }
    }
  }
  CHECK(cases > 60);
  CHECK_THROWS_AS(load_llama2c(dir / "does_not_exist.bin"), lowbit::Error);
  CHECK_THROWS_AS(load_llama2c(dir), lowbit::Error);  // a directory is not a checkpoint
  try {
    auto original = originals.front();
    original.resize(100);
    write_all(dir / "short.bin", original);
    load_llama2c(dir / "short.bin");
    FAIL("expected an error");
  } catch (const lowbit::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("short.bin") != std::string::npos);
    CHECK(msg.find("implies") != std::string::npos);
  }
  fs::remove_all(dir);
}
