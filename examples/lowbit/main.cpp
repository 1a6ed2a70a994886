// `lowbit`: quantize, evaluate, train and benchmark LLaMA-family models from the command line.
// Subcommands live in cmd_*.cpp; run `lowbit --help` or `lowbit SUBCOMMAND --help`.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <new>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__linux__)
#include <unistd.h>
#endif

#include <lowbit/config.hpp>
#include <lowbit/core/error.hpp>

#include "cli.hpp"

#if !defined(LOWBIT_DEFAULT_SPINCOUNT)
#define LOWBIT_DEFAULT_SPINCOUNT "20000"  // ~10-50 us of spinning, then the thread sleeps
#endif

namespace {

// Exit codes (also in `lowbit --help`).
constexpr int kExitOk = 0, kExitError = 1, kExitUsage = 2, kExitInternal = 3;
constexpr const char* kExitCodesHelp =
    "Exit codes: 0 success; 1 error in the input (a file, a value, a missing resource; the message names it); "
    "2 usage error (unknown option, malformed or out-of-range value); 3 internal error (a bug: please report it).";

// OpenMP threads that spin while they wait for work starve each other on a shared machine (decoding on
// 2 threads fell from 19 to 2 tokens/s). libgomp reads its wait policy once, when it loads, so lowbit
// sets a bounded spin (then sleep) before that by re-executing itself once, unless the user chose a
// policy (OMP_WAIT_POLICY or GOMP_SPINCOUNT) or LOWBIT_KEEP_OMP_ENV is set.
void set_thread_wait_policy(char** argv) {
#if defined(__linux__) && defined(_OPENMP)
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT") || std::getenv("LOWBIT_KEEP_OMP_ENV")) return;
  setenv("GOMP_SPINCOUNT", LOWBIT_DEFAULT_SPINCOUNT, 0);
  setenv("LOWBIT_KEEP_OMP_ENV", "1", 0);
  execv("/proc/self/exe", argv);  // returns only on failure: run on with the default policy
#else
  (void)argv;
#endif
}

}  // namespace

int main(int argc, char** argv) {
  set_thread_wait_policy(argv);
#if defined(__GLIBC__)
  // Model forwards allocate and free the same multi-megabyte buffers (GEMM packing, activations) over
  // and over; glibc would hand each back to the kernel and page-fault it in again (~10% of a
  // perplexity run). Keep freed memory in the process instead.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest allowed value on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  CLI::App app{"lowbit " LOWBIT_VERSION_STRING
               ": 1-4 bit quantization of LLaMA-family models (AQLM, GPTQ, RTN, BitDistiller, UniQuanF, ...)"};
  app.require_subcommand(1);
  app.footer(kExitCodesHelp);
  app.set_version_flag("--version", LOWBIT_VERSION_STRING);

  auto& commands = lowbit::cli::registry();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  std::vector<std::pair<CLI::App*, lowbit::cli::Action>> actions;
  for (auto& spec : commands) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.description);
    actions.emplace_back(sub, spec.setup(*sub));
  }
  lowbit::cli::record_invocation(argc, argv);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, the version, or the parse error
    return code == 0 ? kExitOk : kExitUsage;
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const lowbit::Error& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "lowbit: error: out of memory\n");
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowbit: internal error: %s\n", e.what());
    return kExitInternal;
  }
  return kExitOk;
}
