// Fuzz target `safetensors`: a Hugging Face checkpoint, i.e. config.json + model.safetensors
// (+ optionally model.safetensors.index.json), given as one input split into pieces:
//
//   <config.json> \n=====\n <model.safetensors bytes> \n=====\n <model.safetensors.index.json>
//
// Covers SafetensorsFile's parser (header length, JSON header, dtypes, shapes, offsets, coverage of
// the data section) and to_f32 of every tensor; hf_llama_config; load_hf_llama for a single file and
// for an index (when the third piece is present); and io::open_model on the .safetensors file, which
// also routes a lowbit quantized file (metadata lowbit.kind) to its loader.
#include <lowbit/io/hf_llama.hpp>
#include <lowbit/io/open_model.hpp>
#include <lowbit/io/safetensors.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

LOWBIT_FUZZ_TARGET(safetensors) {
  const auto parts = lowbit_fuzz::split_parts(data, size, 3);
  lowbit_fuzz::write_file("config.json", parts[0]);
  const auto file = lowbit_fuzz::write_file("model.safetensors", parts[1]);
  if (parts[2].empty()) lowbit_fuzz::remove_file("model.safetensors.index.json");
  else lowbit_fuzz::write_file("model.safetensors.index.json", parts[2]);

  lowbit_fuzz::expect_error_only([&] {
    const io::SafetensorsFile f(file);
    for (const auto& t : f.tensors()) lowbit_fuzz::expect_error_only([&] { (void)f.to_f32(t); });
  });
  lowbit_fuzz::expect_error_only([&] { (void)io::hf_llama_config(lowbit_fuzz::scratch_dir() / "config.json"); });
  lowbit_fuzz::expect_error_only([&] { (void)io::open_model(file); });
  if (!parts[2].empty())  // the folder: its index names the shards
    lowbit_fuzz::expect_error_only([&] { (void)io::open_model(lowbit_fuzz::scratch_dir()); });
  return 0;
}
