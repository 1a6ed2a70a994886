// Fuzz target `train_checkpoint`: a training checkpoint ("LBTRAIN" files of train/checkpoint.hpp, also
// loadable as a model through load_pretrained), as raw bytes. The harness rewrites the trailing FNV-1a
// checksum to match the bytes before it, so the parser behind the checksum check is reached.
// Covers read_checkpoint (header, model config and its fingerprint, tensor names, ranks and dims,
// optimizer state) and load_pretrained + building an nn::Llama from the result.
#include <lowbit/core/hash.hpp>
#include <lowbit/nn/model.hpp>
#include <lowbit/train/checkpoint.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

LOWBIT_FUZZ_TARGET(train_checkpoint) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.size() >= 8) {
    const std::uint64_t sum = fnv1a64(bytes.data(), bytes.size() - 8);
    std::memcpy(bytes.data() + bytes.size() - 8, &sum, 8);
  }
  const auto path = lowbit_fuzz::write_file("train.ckpt", bytes);
  lowbit_fuzz::expect_error_only([&] { (void)train::read_checkpoint(path); });
  lowbit_fuzz::expect_error_only([&] { (void)nn::Llama(train::load_pretrained(path)); });
  return 0;
}
