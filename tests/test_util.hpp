// Helpers shared by the tests: where the external data lives, and a way to skip a test with a printed
// reason that CTest reports as skipped (tests/CMakeLists.txt sets SKIP_REGULAR_EXPRESSION).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

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

}  // namespace lowbit::test

// Ends the current test case with a reason; CTest reports it as skipped.
#define LOWBIT_SKIP(reason)                                   \
  do {                                                        \
    std::printf("[skipped] %s\n", std::string(reason).c_str()); \
    return;                                                   \
  } while (0)
