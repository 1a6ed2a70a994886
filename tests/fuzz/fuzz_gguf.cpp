// Fuzz target `gguf`: a GGUF file as raw bytes.
// Covers GgufFile's parser (header, every metadata value type, nested arrays, tensor infos, alignment,
// offsets, overlaps), the typed getters on every key, dequantization of every tensor whose type lowbit
// knows (F32/F16/BF16/Q4_0/Q4_1/Q5_0/Q5_1/Q8_0/Q4_K/Q6_K), gguf_llama_config, and the public entry
// point io::open_model (format detection, load_gguf, building the nn::Llama).
#include <lowbit/io/gguf.hpp>
#include <lowbit/io/open_model.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

namespace fuzz_gguf {

void read_every_key(const io::GgufFile& f) {
  for (const auto& key : f.keys()) {
    const auto& v = f.value(key);
    lowbit_fuzz::expect_error_only([&] {
      switch (v.type()) {
        case io::GgufType::STRING: (void)f.get_string(key); break;
        case io::GgufType::BOOL: (void)f.get_bool(key); break;
        case io::GgufType::FLOAT32:
        case io::GgufType::FLOAT64: (void)f.get_float(key); break;
        case io::GgufType::ARRAY: {
          const auto& a = f.get_array(key);
          if (a.element_type == io::GgufType::STRING) (void)f.get_string_array(key);
          else if (a.element_type == io::GgufType::FLOAT32 || a.element_type == io::GgufType::FLOAT64)
            (void)f.get_float_array(key);
          else
            lowbit_fuzz::expect_error_only([&] { (void)f.get_int_array(key); });
          break;
        }
        default: (void)f.get_int(key);
      }
    });
  }
}

}  // namespace fuzz_gguf

LOWBIT_FUZZ_TARGET(gguf) {
  using namespace fuzz_gguf;
  const auto path = lowbit_fuzz::write_file("model.gguf", {reinterpret_cast<const char*>(data), size});
  lowbit_fuzz::expect_error_only([&] {
    const io::GgufFile f(path);
    read_every_key(f);
    for (const auto& t : f.tensors())
      lowbit_fuzz::expect_error_only([&] { (void)f.dequantize(t); });
    lowbit_fuzz::expect_error_only([&] { (void)io::gguf_llama_config(f); });
  });
  lowbit_fuzz::expect_error_only([&] { (void)io::open_model(path); });
  return 0;
}
