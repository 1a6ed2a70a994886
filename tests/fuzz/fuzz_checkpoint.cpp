// Fuzz target `checkpoint`: a calibration run's per-block checkpoint (block_NNN.safetensors, read by
// io::load_block_checkpoint when a run resumes), structure-aware (lowbit_file_recipe.hpp). Piece 0
// describes the host model the checkpoint is loaded into, which in a real run comes from the trusted
// source model: {"model": <ModelConfig JSON>, "layer": N}; a missing or unusable piece 0 gives a small
// default model and layer 0 (host models are capped at 128K parameters: one is built per input).
// Covers load_block_checkpoint (check_kind, the format descriptors of the block's seven linears, every
// stored tensor's dtype, shape, size and checksum, the two RMSNorm gains), then runs the host model
// over two tokens: a checkpoint that loads must be safe to compute with.
#include <lowbit/core/rng.hpp>
#include <lowbit/io/quantized_model.hpp>
#include <lowbit/nn/kv_cache.hpp>

#include "lowbit_file_recipe.hpp"

using namespace lowbit;

namespace fuzz_checkpoint {

struct Host {
  nn::ModelConfig config;
  int layer = 0;
};

Host host_from(const std::string& piece) {
  Host h;
  h.config = {.dim = 16, .hidden_dim = 32, .n_layers = 2, .n_heads = 2, .n_kv_heads = 1, .vocab_size = 32,
              .max_seq_len = 16};
  const auto j = nlohmann::json::parse(piece, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return h;
  if (j.contains("layer") && j["layer"].is_number_integer()) h.layer = static_cast<int>(j["layer"].get<std::int64_t>());
  if (j.contains("model")) {
    nn::ModelConfig c;
    const bool ok = lowbit_fuzz::expect_error_only([&] {
      c = j["model"].get<nn::ModelConfig>();
      c.validate("host model");
    });
    if (ok && c.max_seq_len <= 4096 && lowbit_fuzz::small_model(c)) h.config = c;
  }
  return h;
}

}  // namespace fuzz_checkpoint

LOWBIT_FUZZ_TARGET(checkpoint) {
  using namespace fuzz_checkpoint;
  const auto recipe = lowbit_fuzz::parse_recipe(data, size);
  const Host host = host_from(recipe.piece0);
  auto metadata = lowbit_fuzz::lowbit_metadata(recipe.tensor_formats);
  metadata["lowbit.block"] = std::to_string(host.layer);
  const auto bytes = lowbit_fuzz::build_lowbit_safetensors(recipe, metadata);
  if (!bytes) return 0;
  const auto path = lowbit_fuzz::write_file("block_000.safetensors", *bytes);

  Rng rng(1);
  auto model = nn::Llama::random_init(host.config, rng);
  if (!lowbit_fuzz::expect_error_only([&] { io::load_block_checkpoint(path, model, host.layer); })) return 0;
  const auto& c = model.config();
  nn::KVCache cache(c, 2);
  std::vector<float> logits(static_cast<std::size_t>(c.vocab_size));
  lowbit_fuzz::expect_error_only([&] {
    model.forward_token(1, 0, cache, logits.data());
    model.forward_token(c.vocab_size - 1, 1, cache, logits.data());
  });
  return 0;
}
