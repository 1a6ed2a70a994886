// `lowbit`: quantize, evaluate, train and benchmark LLaMA-family models from the command line.
// Subcommands live in cmd_*.cpp; run `lowbit --help` or `lowbit SUBCOMMAND --help`.
#include <algorithm>
#include <cstdio>
#include <exception>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <lowbit/config.hpp>
#include <lowbit/core/error.hpp>

#include "cli.hpp"

int main(int argc, char** argv) {
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
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const lowbit::Error& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowbit: unexpected error: %s\n", e.what());
    return 2;
  }
  return 0;
}
