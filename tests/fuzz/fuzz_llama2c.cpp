// Fuzz target `llama2c`: a llama2.c checkpoint (7 int32 header + fp32 tensors, no magic, no names).
// Covers detection by content (io::detect_model_format / describe_file), io::open_model and
// io::load_llama2c on the raw bytes. The format's only integrity check is the exact file size, which
// byte mutations rarely hit, so the harness also resizes the input to the size its header implies
// (when that is at most 4 MiB; the tensor bytes repeat the input) and loads that file too: this reaches
// the tensor layout and copy code for every header the fuzzer invents.
#include <lowbit/io/llama2c.hpp>
#include <lowbit/io/open_model.hpp>

#include "fuzz_common.hpp"

using namespace lowbit;

namespace fuzz_llama2c {

constexpr std::uint64_t kMaxResizedBytes = 4u << 20;

// The input padded or truncated to what its header implies; empty when the header is invalid or big.
std::string resized_to_header(const std::uint8_t* data, std::size_t size) {
  if (size < io::Llama2cHeader::bytes) return {};
  const std::string head(reinterpret_cast<const char*>(data), io::Llama2cHeader::bytes);
  std::uint64_t implied = 0;
  (void)io::detail::llama2c_shaped(head, 0, &implied);
  if (implied == 0 || implied > kMaxResizedBytes || implied == size) return {};
  std::string out(reinterpret_cast<const char*>(data), size < implied ? size : implied);
  const std::size_t body = size - io::Llama2cHeader::bytes;
  for (std::size_t i = 0; out.size() < implied; ++i)
    out.push_back(body ? static_cast<char>(data[io::Llama2cHeader::bytes + i % body]) : '\0');
  return out;
}

void load_all_ways(const std::filesystem::path& path) {
  (void)io::detect_model_format(path);
  (void)io::describe_file(path);
  lowbit_fuzz::expect_error_only([&] { (void)io::load_llama2c(path); });
  lowbit_fuzz::expect_error_only([&] { (void)io::open_model(path); });
}

}  // namespace fuzz_llama2c

LOWBIT_FUZZ_TARGET(llama2c) {
  using namespace fuzz_llama2c;
  load_all_ways(lowbit_fuzz::write_file("model.bin", {reinterpret_cast<const char*>(data), size}));
  if (const auto resized = resized_to_header(data, size); !resized.empty())
    load_all_ways(lowbit_fuzz::write_file("model.bin", resized));
  return 0;
}
