// Fuzz target `quantized`: lowbit's quantized model file, structure-aware (lowbit_file_recipe.hpp:
// piece 0 is the text of 'lowbit.model_config'; the harness builds the safetensors container and the
// checksums, so mutations reach the logic behind the checksum checks).
// Covers io::open_model on the built file (detection, check_kind, model_config_from_json, the format
// descriptors, every format's stored tensors through the registry, expected dtypes and shapes, token
// table and head in weight formats), io::quantized_model_info, and, when the model loaded and is small,
// a two-token forward pass and dequantization of every layer: a file that loads must also be safe to
// run (codes, codebook indices and scales come from the file).
#include <lowbit/io/open_model.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/nn/kv_cache.hpp>

#include "lowbit_file_recipe.hpp"

using namespace lowbit;

namespace fuzz_quantized {

void run(nn::Llama& model) {
  const auto& c = model.config();
  nn::KVCache cache(c, 2);
  std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
  model.forward_token(0, 0, cache, logits.data());
  model.forward_token(c.vocab_size - 1, 1, cache, logits.data());
  (void)io::dequantized_weights(model);
}

}  // namespace fuzz_quantized

LOWBIT_FUZZ_TARGET(quantized) {
  using namespace fuzz_quantized;
  const auto recipe = lowbit_fuzz::parse_recipe(data, size);
  auto metadata = lowbit_fuzz::lowbit_metadata(recipe.tensor_formats);
  metadata["lowbit.model_config"] = recipe.piece0;
  metadata["quantization_config"] = "{\"method\":\"fuzz\"}";
  const auto bytes = lowbit_fuzz::build_lowbit_safetensors(recipe, metadata);
  if (!bytes) return 0;
  const auto path = lowbit_fuzz::write_file("model.safetensors", *bytes);
  lowbit_fuzz::expect_error_only([&] { (void)io::quantized_model_info(path); });
  lowbit_fuzz::expect_error_only([&] {
    auto model = io::open_model(path);
    if (lowbit_fuzz::small_model(model.config())) lowbit_fuzz::expect_error_only([&] { run(model); });
  });
  return 0;
}
