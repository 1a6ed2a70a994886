#!/usr/bin/env bash
# The README's main job: installs what is missing, builds the `lowbit` tool, and runs `lowbit demo`,
# which pretrains the built-in default model (about a minute, cached in ~/.cache/lowbit), quantizes it
# with every working method and prints the perplexity / bits-per-weight table. Extra arguments are
# passed to `lowbit demo` (see `lowbit demo --help`).
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see docs/benchmarks.md: spinning OpenMP waiters starve a shared 2-core machine
cd "$(dirname "$0")/.."
tools/install_deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target lowbit_cli
exec build/release/examples/lowbit demo "$@"
