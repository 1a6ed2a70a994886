// Helpers shared by the tests: where the external data lives, and a way to skip a test with a printed
// reason that CTest reports as skipped (tests/CMakeLists.txt sets SKIP_REGULAR_EXPRESSION).
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace lowbit::test {

// ../shared/data, or $LOWBIT_DATA when set. Empty when neither exists.
inline std::filesystem::path shared_data() {
  if (const char* env = std::getenv("LOWBIT_DATA"); env && *env) return env;
#ifdef LOWBIT_SHARED_DATA_DEFAULT
  std::filesystem::path p = LOWBIT_SHARED_DATA_DEFAULT;
  if (std::filesystem::exists(p)) return std::filesystem::weakly_canonical(p);
#endif
  return {};
}

// A file under shared/data, or empty when it is missing.
inline std::filesystem::path shared_file(const std::string& relative) {
  auto root = shared_data();
  if (root.empty()) return {};
  auto p = root / relative;
  return std::filesystem::exists(p) ? p : std::filesystem::path{};
}

// The cache folder for downloaded models ($LOWBIT_CACHE or ~/.cache/lowbit).
inline std::filesystem::path cache_dir() {
  if (const char* env = std::getenv("LOWBIT_CACHE"); env && *env) return env;
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home ? home : "/tmp") / ".cache" / "lowbit";
}

// SmolLM2-135M-Instruct Q4_1 GGUF fetched by tools/fetch_smollm2.sh, or empty.
inline std::filesystem::path smollm2_gguf() {
  auto p = cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : std::filesystem::path{};
}

// The whole file as bytes (empty when it cannot be read).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Whitespace-separated token ids (the reference files under tests/data and shared/data).
inline std::vector<std::int32_t> read_ids(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<std::int32_t> ids;
  for (std::int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

// A file committed under tests/data.
inline std::filesystem::path test_data(const std::string& name) {
  return std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests" / "data" / name;
}

// The first 200 KiB of WikiText-2 test, cut back to a UTF-8 character boundary (as
// tools/reference/tokenizer_reference.py does); empty when shared/data is missing.
inline std::string wikitext_200k() {
  auto p = shared_file("text/wikitext2_test.txt");
  if (p.empty()) return {};
  std::string s = read_text(p).substr(0, 200 * 1024);
  while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();
  if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
  return s;
}

}  // namespace lowbit::test

// Ends the current test case with a reason; CTest reports it as skipped.
#define LOWBIT_SKIP(reason)                                   \
  do {                                                        \
    std::printf("[skipped] %s\n", std::string(reason).c_str()); \
    return;                                                   \
  } while (0)
