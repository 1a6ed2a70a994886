#!/usr/bin/env bash
# The README's test command: installs what is missing, fetches the SmolLM2 test model (tests that need
# it skip when it cannot be fetched), configures and builds everything (tests, examples, benchmarks,
# and the CUDA kernels when nvcc is present), checks that single_include/ is up to date, builds and runs
# the downstream consumers (find_package from an install tree, add_subdirectory, the single header),
# and finally runs the whole CTest suite.
set -euo pipefail
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}  # see docs/benchmarks.md: spinning OpenMP waiters starve a shared 2-core machine
cd "$(dirname "$0")/.."
root=$PWD
preset=release
build=$root/build/$preset

tools/install_deps.sh
tools/fetch_smollm2.sh || echo "lowbit: SmolLM2 could not be fetched; tests that need it will be skipped" >&2

cmake --preset "$preset"
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
