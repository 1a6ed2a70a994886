#!/usr/bin/env bash
# The README's test command: installs what is missing, fetches the SmolLM2 test model (tests that need
# it skip when it cannot be fetched), configures and builds everything (tests, examples, benchmarks,
# and the CUDA kernels when nvcc is present), checks that single_include/ is up to date, builds and runs
# the downstream consumers (find_package from an install tree, add_subdirectory, the single header),
# runs the whole CTest suite, then the tests that handle untrusted bytes under ASan+UBSan
# (tools/sanitize.sh: built there instead of in the release build) and the fuzzers for a short time
# when clang is present (tools/fuzz.sh).
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see docs/benchmarks.md: spinning OpenMP waiters starve a shared 2-core machine
cd "$(dirname "$0")/.."
root=$PWD
preset=release
build=$root/build/$preset

tools/install_deps.sh
tools/fetch_smollm2.sh || echo "lowbit: SmolLM2 could not be fetched; tests that need it will be skipped" >&2

sanitized=$(tools/sanitize.sh --selection)  # built and run under sanitizers below, not twice
cmake --preset "$preset" -DLOWBIT_TEST_EXCLUDE="$sanitized"
cmake --build --preset "$preset"

python3 tools/amalgamate.py --check

echo "== consumer: find_package(lowbit) from an install tree"
rm -rf "$build/install" "$build/consumer-package" "$build/consumer-subdir"
cmake --install "$build" --prefix "$build/install" >/dev/null
cmake -S tests/consumer -B "$build/consumer-package" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLOWBIT_CONSUME=package -DCMAKE_PREFIX_PATH="$build/install" >/dev/null
cmake --build "$build/consumer-package"
"$build/consumer-package/consumer"

echo "== consumer: add_subdirectory(lowbit)"
cmake -S tests/consumer -B "$build/consumer-subdir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DLOWBIT_CONSUME=subdirectory -DLOWBIT_SOURCE="$root" >/dev/null
cmake --build "$build/consumer-subdir"
"$build/consumer-subdir/consumer"

echo "== consumer: single_include/lowbit/lowbit.hpp alone"
c++ -std=c++20 -O2 -Wall -Wextra -fopenmp -I single_include -isystem /usr/include/eigen3 \
  tests/consumer/consumer.cpp -o "$build/consumer-single"
"$build/consumer-single"

echo "== test suite"
ctest --preset "$preset"

echo "== tests of untrusted input under ASan+UBSan"
tools/sanitize.sh

echo "== fuzzers"
tools/fuzz.sh --seconds "${LOWBIT_CI_FUZZ_SECONDS:-30}" --jobs 2
