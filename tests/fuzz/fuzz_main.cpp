// The one libFuzzer executable of lowbit's fuzz targets: every fuzz_<target>.cpp registers itself with
// LOWBIT_FUZZ_TARGET (fuzz_common.hpp), and this file picks the target from the name the executable is
// run as (build/fuzz/tests/fuzz/fuzz_gguf is a symlink to lowbit_fuzz) or from $LOWBIT_FUZZ_TARGET.
// CMake compiles all harnesses as one translation unit (UNITY_BUILD), so the header-only library is
// instantiated once instead of once per target.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_common.hpp"

namespace {
lowbit_fuzz::TargetFn selected = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  std::string name;
  if (const char* env = std::getenv("LOWBIT_FUZZ_TARGET"); env && *env) {
    name = env;
  } else if (*argc > 0) {
    name = (*argv)[0];
    if (const auto slash = name.rfind('/'); slash != std::string::npos) name.erase(0, slash + 1);
    if (name.rfind("fuzz_", 0) == 0) name.erase(0, 5);
  }
  const auto& all = lowbit_fuzz::targets();
  if (const auto it = all.find(name); it != all.end()) {
    selected = it->second;
    return 0;
  }
  std::fprintf(stderr, "lowbit_fuzz: unknown target '%s'; run as fuzz_<target> or set LOWBIT_FUZZ_TARGET to one of:",
               name.c_str());
  for (const auto& [target, fn] : all) std::fprintf(stderr, " %s", target.c_str());
  std::fprintf(stderr, "\n");
  std::exit(2);
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) { return selected(data, size); }
