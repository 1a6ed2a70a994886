#!/usr/bin/env bash
# Prepares .gpu/ for tools/gpu_check.sh on a borrowed GPU machine, so that no lease time goes to
# compiling: builds the CUDA tests and benchmarks here with nvcc (sm_80 and sm_90, no -march=native,
# static CUDA runtime, so they need only libc and libstdc++ there), copies them to .gpu/bin, and puts the
# header-only build dependencies (Eigen, nlohmann-json, doctest, with relocatable CMake configs) in
# .gpu/deps for the fallback build when a binary does not load there. .gpu/ is git-ignored; carry it.
#
# Usage: tools/gpu_pack.sh        (then, on the GPU machine: tools/gpu_check.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/build/gpu
command -v nvcc >/dev/null || { echo "gpu_pack: nvcc not found" >&2; exit 1; }

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DLOWBIT_NATIVE=OFF \
  -DLOWBIT_CUDA_ARCHITECTURES="80;90" -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_CPU_BENCH=OFF >/dev/null
targets=()
for f in tests/cuda/test_*.cu bench/cuda/bench_*.cu; do targets+=("$(basename "$f" .cu)"); done
cmake --build "$build" --target "${targets[@]}"

rm -rf .gpu
mkdir -p .gpu/bin .gpu/deps/include .gpu/deps/share/cmake .gpu/deps/lib/cmake
for f in tests/cuda/test_*.cu; do cp "$build/tests/$(basename "$f" .cu)" .gpu/bin/; done
for f in bench/cuda/bench_*.cu; do cp "$build/bench/$(basename "$f" .cu)" .gpu/bin/; done
echo "built $(date -u +%FT%TZ) from $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- include tests bench || echo '+changes'), nvcc $(nvcc --version | grep -o 'release [0-9.]*')" \
  >.gpu/bin/BUILT

# Header-only dependencies with CMake configs that find their headers relative to themselves.
cp -r /usr/include/eigen3 /usr/include/nlohmann /usr/include/doctest .gpu/deps/include/
mkdir -p .gpu/deps/share/eigen3
cp -r /usr/share/eigen3/cmake .gpu/deps/share/eigen3/
cp -r /usr/share/cmake/nlohmann_json .gpu/deps/share/cmake/
sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
  .gpu/deps/share/cmake/nlohmann_json/nlohmann_jsonTargets.cmake
cp -r /usr/lib/cmake/doctest .gpu/deps/lib/cmake/
grep -q '_IMPORT_PREFIX "/usr"' .gpu/deps/lib/cmake/doctest/doctestTargets.cmake &&
  sed -i 's|^set(_IMPORT_PREFIX "/usr")|get_filename_component(_IMPORT_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)|' \
    .gpu/deps/lib/cmake/doctest/doctestTargets.cmake
du -sh .gpu/bin .gpu/deps
cat .gpu/bin/BUILT
