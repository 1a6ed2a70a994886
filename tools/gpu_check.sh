#!/usr/bin/env bash
# Every CUDA check lowbit has, in one call, sized for a short lease on a borrowed GPU (~8 minutes):
#   1. the card and toolkit (nvidia-smi, nvcc);
#   2. the CUDA targets: prebuilt ones from tools/gpu_pack.sh (carried in .gpu/bin, built on a CPU
#      machine with nvcc for sm_80 and sm_90) when they load here, otherwise configure with CUDA and build
#      them (deps from .gpu/deps when the machine has no Eigen/doctest/nlohmann-json of its own);
#   3. every CUDA test (tests/cuda/test_*.cu), each against its CPU reference;
#   4. every CUDA benchmark (bench/cuda/bench_*.cu), ratios against cuBLAS and the copy bandwidth;
#   5. compute-sanitizer memcheck (and racecheck on the beam kernel) over the CUDA tests, when it works;
# then prints a summary table. Logs and CSVs go to $OUT (the device tool's return folder) or
# build/gpu-check/.
#
# Usage: tools/gpu_check.sh [--build] [--quick] [--tune] [--no-sanitize]
#   --build        ignore .gpu/bin and configure + build here
#   --quick        two benchmark shapes instead of six
#   --tune         also time the general kernels and other tile shapes
#   --no-sanitize  skip compute-sanitizer
# Exit status: 0 when every test passed (benchmarks and sanitizers are reported, not gated... except a
# sanitizer error, which fails the run), 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
force_build=0 quick=0 tune=0 sanitize=1
for a in "$@"; do
  case $a in
    --build) force_build=1 ;;
    --quick) quick=1 ;;
    --tune) tune=1 ;;
    --no-sanitize) sanitize=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $a" >&2; exit 2 ;;
  esac
done
out=${OUT:-$root/build/gpu-check}
mkdir -p "$out"
log=$out/gpu_check.log
: >"$log"
summary=()
status=0
say() { echo "== $*" | tee -a "$log"; }
record() { summary+=("$(printf '| %-34s | %-8s | %6ss | %s |' "$1" "$2" "$3" "${4:-}")"); }

tests=(); benches=()
for f in tests/cuda/test_*.cu; do tests+=("$(basename "$f" .cu)"); done
for f in bench/cuda/bench_*.cu; do benches+=("$(basename "$f" .cu)"); done

say "card and toolkit"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem,power.draw \
  --format=csv 2>&1 | tee -a "$log"
(command -v nvcc && nvcc --version | tail -1) 2>&1 | tee -a "$log"
echo "host: $(nproc) cores, $(uname -r)" | tee -a "$log"

# ---- the binaries ---------------------------------------------------------------------------------
bindir=""
loads() {  # every binary is there and its shared libraries resolve
  local d=$1 b
  for b in "${tests[@]}" "${benches[@]}"; do
    [ -x "$d/$b" ] || { echo "gpu_check: $d/$b missing" | tee -a "$log"; return 1; }
    if ldd "$d/$b" 2>&1 | grep -q "not found"; then
      echo "gpu_check: $d/$b: $(ldd "$d/$b" | grep 'not found' | tr '\n' ' ')" | tee -a "$log"; return 1
    fi
  done
}
if [ $force_build = 0 ] && [ -d .gpu/bin ] && loads .gpu/bin; then
  bindir=$root/.gpu/bin
  say "using prebuilt binaries from .gpu/bin ($(cat .gpu/bin/BUILT 2>/dev/null || echo 'no provenance'))"
  record "binaries" "prebuilt" 0 "$(cat .gpu/bin/BUILT 2>/dev/null | head -c 60)"
else
  say "configure and build the CUDA targets"
  t0=$SECONDS
  build=$root/build/gpu-check-build
  prefix=()
  [ -d .gpu/deps ] && prefix=(-DCMAKE_PREFIX_PATH="$root/.gpu/deps")
  arch=${LOWBIT_CUDA_ARCHITECTURES:-90}
  if cmake -S . -B "$build" -G "$(command -v ninja >/dev/null && echo Ninja || echo 'Unix Makefiles')" \
       -DCMAKE_BUILD_TYPE=Release -DLOWBIT_CUDA=ON -DLOWBIT_CUDA_ARCHITECTURES="$arch" -DLOWBIT_NATIVE=OFF \
       -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_CPU_BENCH=OFF -DLOWBIT_FETCH_MISSING=OFF -DLOWBIT_INSTALL=OFF \
       "${prefix[@]}" >>"$log" 2>&1 &&
     cmake --build "$build" -j "$(nproc)" --target "${tests[@]}" "${benches[@]}" >>"$log" 2>&1; then
    mkdir -p "$build/cuda-bin"
    for b in "${tests[@]}"; do cp "$build/tests/$b" "$build/cuda-bin/"; done
    for b in "${benches[@]}"; do cp "$build/bench/$b" "$build/cuda-bin/"; done
    bindir=$build/cuda-bin
    record "build (sm_$arch)" "ok" $((SECONDS - t0))
  else
    tail -40 "$log"
    record "build (sm_$arch)" "FAILED" $((SECONDS - t0)) "see gpu_check.log"
    status=1
  fi
fi

# cuBLAS for the benchmark baselines (dlopen'ed): add every folder that holds it to the search path.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64 \
         $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, "cublas", "lib") for p in nvidia.__path__))' 2>/dev/null); do
  ls "$d"/libcublas.so* >/dev/null 2>&1 && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

# ---- tests, benchmarks, sanitizers -----------------------------------------------------------------
if [ -n "$bindir" ]; then
  for b in "${tests[@]}"; do
    say "test $b"
    t0=$SECONDS
    if timeout 300 "$bindir/$b" 2>&1 | tee "$out/$b.log" | tee -a "$log" | tail -25; then
      if grep -q "\[skipped\]" "$out/$b.log"; then record "$b" "SKIPPED" $((SECONDS - t0)) "no device seen"; status=1
      else record "$b" "passed" $((SECONDS - t0)) "$(grep -o 'test cases:.*' "$out/$b.log" | head -1)"; fi
    else
      record "$b" "FAILED" $((SECONDS - t0)) "$(grep -o 'test cases:.*' "$out/$b.log" | head -1)"; status=1
    fi
  done
  for b in "${benches[@]}"; do
    say "benchmark $b"
    t0=$SECONDS
    args=(--csv "$out/$b.csv"); [ $quick = 1 ] && args+=(--quick); [ $tune = 1 ] && args+=(--variants)
    if timeout 300 "$bindir/$b" "${args[@]}" 2>&1 | tee "$out/$b.log" | tee -a "$log"; then
      record "$b" "ran" $((SECONDS - t0)) "table in $b.log"
    else
      record "$b" "FAILED" $((SECONDS - t0)); status=1
    fi
  done
  if [ $sanitize = 1 ] && command -v compute-sanitizer >/dev/null; then
    for b in "${tests[@]}"; do
      say "compute-sanitizer memcheck $b"
      t0=$SECONDS
      timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$bindir/$b" >"$out/$b.memcheck.log" 2>&1
      rc=$?
      tail -4 "$out/$b.memcheck.log" | tee -a "$log"
      case $rc in
        0) record "memcheck $b" "clean" $((SECONDS - t0)) ;;
        124) record "memcheck $b" "timeout" $((SECONDS - t0)) "150 s limit" ;;
        9) record "memcheck $b" "ERRORS" $((SECONDS - t0)) "$b.memcheck.log"; status=1 ;;
        *) record "memcheck $b" "rc=$rc" $((SECONDS - t0)) "$(grep -m1 -i 'error\|not supported' "$out/$b.memcheck.log" | head -c 60)" ;;
      esac
    done
    if printf '%s\n' "${tests[@]}" | grep -qx test_cuda_additive; then
      say "compute-sanitizer racecheck (beam top-k, shared-memory sort)"
      t0=$SECONDS
      timeout 150 compute-sanitizer --tool racecheck --error-exitcode 9 "$bindir/test_cuda_additive" -tc='*beam*' \
        >"$out/racecheck.log" 2>&1
      rc=$?
      tail -4 "$out/racecheck.log" | tee -a "$log"
      case $rc in
        0) record "racecheck beam top-k" "clean" $((SECONDS - t0)) ;;
        9) record "racecheck beam top-k" "RACES" $((SECONDS - t0)) "racecheck.log"; status=1 ;;
        *) record "racecheck beam top-k" "rc=$rc" $((SECONDS - t0)) ;;
      esac
    fi
  fi
fi

echo
echo "| step                               | result   |   time | detail |" | tee -a "$log"
echo "|------------------------------------|----------|--------|--------|" | tee -a "$log"
printf '%s\n' "${summary[@]}" | tee -a "$log"
for b in "${benches[@]}"; do [ -f "$out/$b.log" ] && grep '^|' "$out/$b.log"; done
exit $status
