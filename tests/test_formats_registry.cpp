// Every registered format (formats.hpp), tested the same way, as ggml's tests loop over its type table:
// the descriptor resolves back to the format; its storage lists tensors that add up to its bytes;
// quantize -> dequantize -> matvec agree (and the int8-activation path stays within its bound); a model
// whose linears all use the format survives the quantized-model file byte for byte; the trainable form,
// where there is one, returns to identical storage. A format added to the registry is covered with no
// edit here. This file is built twice: as is, and with the test-only format of tests/formats/ registered
// (LOWBIT_USER_FORMATS_HEADER), which proves the "adding a format" guide.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <unistd.h>
#include <vector>

#include <lowbit/core/rng.hpp>
#include <lowbit/formats.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/nn/model.hpp>
#include <lowbit/nn/quantized_linear.hpp>
#include <lowbit/train/pretrain.hpp>

#include "test_util.hpp"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

template <class List>
struct AsTuple;
template <class... F>
struct AsTuple<FormatList<F...>> {
  using type = std::tuple<F...>;
};
using AllRegistered = AsTuple<RegisteredFormats>::type;

std::vector<float> gaussian(index_t n, std::uint64_t seed, double sigma = 0.05) {
  Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = static_cast<float>(sigma * rng.normal());
  return v;
}

// Storage of `packed` filled with deterministic bytes (file round trips compare bytes, not values).
template <class Packed>
void fill_storage(Packed& packed, std::uint64_t seed) {
  Rng rng(seed);
  for (const auto& t : packed.stored_tensors()) {
    auto* bytes = static_cast<unsigned char*>(t.data);
    for (std::size_t i = 0; i < t.bytes; ++i) bytes[i] = static_cast<unsigned char>(rng.below(256));
  }
}

template <class Packed>
std::vector<std::string> stored_bytes(const Packed& packed) {
  std::vector<std::string> out;
  for (const auto& t : packed.stored_tensors()) out.emplace_back(static_cast<const char*>(t.data), t.bytes);
  return out;
}

std::vector<std::string> stored_bytes_of(const nn::Linear& linear) {
  std::vector<std::string> out;
  for (const auto& t : linear.stored_tensors()) out.emplace_back(static_cast<const char*>(t.data), t.bytes);
  return out;
}

}  // namespace

TEST_CASE("registry: descriptors are unique, resolve, and unknown or incapable ones are refused by name") {
  const auto names = format_names();
  CHECK(std::set<std::string>(names.begin(), names.end()).size() == names.size());
  CHECK(names.size() == RegisteredFormats::size);
  for (const auto& n : names) CHECK(is_registered_format(n));
  CHECK_FALSE(is_registered_format("uniform:5:128"));
  // The built-in families are all there.
  for (const char* n : {"uniform:4:128", "uniform:4:32", "nf3:128", "additive:2:8:8", "additive:1:16:8"})
    CHECK(is_registered_format(n));
  const auto group_grid = format_names([]<class F>() { return GroupGridFormat<F>; });
  const auto additive = format_names([]<class F>() { return AdditiveFormat<F>; });
  CHECK(std::find(group_grid.begin(), group_grid.end(), "nf3:64") != group_grid.end());
  CHECK(std::find(group_grid.begin(), group_grid.end(), "additive:2:8:8") == group_grid.end());
  CHECK(std::find(additive.begin(), additive.end(), "additive:4:6:8") != additive.end());
  try {
    visit_format("uniform:9:128", []<class F>(FormatTag<F>) { return 0; });
    FAIL("an unknown descriptor was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("unknown format 'uniform:9:128'") != std::string::npos);
    CHECK(std::string(e.what()).find("uniform:4:128") != std::string::npos);  // lists what exists
  }
  try {
    visit_format_if("additive:2:8:8", []<class F>() { return GroupGridFormat<F>; }, []<class F>(FormatTag<F>) { return 0; },
                    "group-grid format");
    FAIL("a format without the capability was accepted");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("'additive:2:8:8' is not a group-grid format") != std::string::npos);
  }
#if defined(LOWBIT_USER_FORMATS_HEADER)
  CHECK(names.back() == "sign:64");  // the test-only format, registered by one line in its own header
  CHECK(std::find(group_grid.begin(), group_grid.end(), "sign:64") != group_grid.end());
#endif
}

TEST_CASE_TEMPLATE_DEFINE("registered format: descriptor, stored tensors, quantize/dequantize/matvec", F, format_basics) {
  using Q = Quantizer<F>;
  INFO(F::name());
  CHECK(Q::name() == F::name());
  CHECK(visit_format(F::name(), []<class G>(FormatTag<G>) { return std::is_same_v<G, F>; }));

  // Storage: the listed tensors are exactly the stored bytes.
  const index_t rows = 24, cols = 96;
  typename Q::Packed empty(rows, cols);
  std::size_t listed = 0;
  for (const auto& t : empty.stored_tensors()) {
    index_t n = 1;
    for (auto d : t.shape) n *= d;
    CHECK(t.bytes == static_cast<std::size_t>(n) * stored_type_size(t.type));
    listed += t.bytes;
  }
  CHECK(listed == empty.bytes());

  // Quantize a Gaussian matrix; the matvec equals Ŵx from dequantize.
  const auto w = gaussian(rows * cols, 11);
  const auto packed = Q::quantize(MatrixView<const float>(w.data(), rows, cols));
  CHECK(Q::bits_per_weight(packed) == doctest::Approx(8.0 * static_cast<double>(packed.bytes()) / (rows * cols)));
  std::vector<float> w_hat(w.size());
  Q::dequantize(packed, MatrixView<float>(w_hat.data(), rows, cols));
  double err = 0, energy = 0;
  for (std::size_t i = 0; i < w.size(); ++i) {
    err += (w[i] - w_hat[i]) * (w[i] - w_hat[i]);
    energy += static_cast<double>(w[i]) * w[i];
  }
  CHECK(err < energy);  // better than predicting zero
  const auto x = gaussian(cols, 12, 1.0);
  std::vector<float> y(static_cast<std::size_t>(rows)), y8(static_cast<std::size_t>(rows));
  Q::matvec(packed, x.data(), y.data());
  matvec_with<F, Int8Activations>(packed, x.data(), y8.data());
  double xmax = 0;
  for (float v : x) xmax = std::max<double>(xmax, std::fabs(v));
  for (index_t r = 0; r < rows; ++r) {
    double ref = 0, mass = 0, wsum = 0;
    for (index_t c = 0; c < cols; ++c) {
      ref += static_cast<double>(w_hat[r * cols + c]) * x[c];
      mass += std::fabs(static_cast<double>(w_hat[r * cols + c]) * x[c]);
      wsum += std::fabs(static_cast<double>(w_hat[r * cols + c]));
    }
    CHECK(std::fabs(y[r] - ref) <= 2e-3 * mass + 1e-6);  // exact path (AQLM's int16 table: Δ/2 per lookup)
    CHECK(std::fabs(y8[r] - ref) <= wsum * xmax / 127.0 + 2e-3 * mass + 1e-6);  // |x̃ − x| ≤ step/2 per value
  }
}
TEST_CASE_TEMPLATE_APPLY(format_basics, AllRegistered);

TEST_CASE_TEMPLATE_DEFINE("registered format: a model of that format survives the file byte for byte", F, format_file) {
  using Q = Quantizer<F>;
  INFO(F::name());
  const auto config = train::byte_model_config(64, 96, 1, 4, 2, 32);
  Rng rng(3);
  nn::Llama model = nn::Llama::random_init(config, rng);
  std::vector<std::vector<std::string>> expected;
  std::uint64_t seed = 100;
  for (auto role : nn::kAllLinearRoles) {
    auto [out, in] = nn::linear_role_shape(config, role);
    typename Q::Packed p(out, in);
    fill_storage(p, seed++);
    expected.push_back(stored_bytes(p));
    model.set_linear(0, role, std::make_unique<nn::QuantizedLinear<F>>(std::move(p)));
  }
  const auto dir = fs::temp_directory_path() / ("lowbit_test_formats_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const auto path = dir / "model.safetensors";
  io::write_quantized_model(path, model, {{"test", "registry"}});
  nn::Llama loaded = io::load_quantized_model(path);
  std::size_t i = 0;
  for (auto role : nn::kAllLinearRoles) {
    const auto& lin = loaded.linear(0, role);
    CHECK(lin.format() == F::name());
    CHECK(stored_bytes_of(lin) == expected[i++]);
  }
  // Block checkpoints use the same path.
  io::save_block_checkpoint(dir / "block.safetensors", model, 0);
  nn::Llama other = nn::Llama::random_init(config, rng);
  io::load_block_checkpoint(dir / "block.safetensors", other, 0);
  i = 0;
  for (auto role : nn::kAllLinearRoles) CHECK(stored_bytes_of(other.linear(0, role)) == expected[i++]);
  fs::remove_all(dir);
}
TEST_CASE_TEMPLATE_APPLY(format_file, AllRegistered);

TEST_CASE_TEMPLATE_DEFINE("registered format: trainable form, where there is one, returns to identical storage", F,
                          format_trainable) {
  using Q = Quantizer<F>;
  INFO(F::name());
  const auto w = gaussian(16 * 64, 21);
  nn::QuantizedLinear<F> layer(Q::quantize(MatrixView<const float>(w.data(), 16, 64)));
  auto trainable = layer.trainable_form();
  if constexpr (nn::HasTrainableForm<F>) {
    REQUIRE(trainable != nullptr);
    CHECK(!trainable->parameters().empty());
    auto back = trainable->inference_form();
    REQUIRE(back != nullptr);
    CHECK(back->format() == F::name());
    CHECK(stored_bytes_of(*back) == stored_bytes(layer.packed()));
  } else {
    CHECK(trainable == nullptr);  // stays frozen in block fine-tuning
    CHECK(layer.parameters().empty());
  }
  CHECK(layer.inference_form() == nullptr);  // already the packed form
}
TEST_CASE_TEMPLATE_APPLY(format_trainable, AllRegistered);
