#!/usr/bin/env bash
# Builds lowbit's libFuzzer targets (tests/fuzz/, clang, ASan + UBSan) in build/fuzz, generates their seed
# corpora (tools/fuzz_corpus.py), replays the regression inputs of tests/fuzz/regressions/<target>/, then
# fuzzes every target for N seconds and prints a summary. Exits nonzero on any finding (a crash, a
# sanitizer report, an exception other than lowbit::Error, an allocation over the limit, a timeout).
# Without clang it prints "skipped: clang not found" and exits 0. See docs/fuzzing.md.
#
# Usage: tools/fuzz.sh [--seconds N] [--jobs J] [--target NAME]...
#   --seconds N   fuzzing time per target (default 60)
#   --jobs J      targets fuzzed at the same time (default 1)
#   --target NAME only this target (repeatable; default: all)
# Environment: LOWBIT_FUZZ_BUILD_JOBS (build parallelism, default 2), CC/CXX (default clang/clang++).
set -euo pipefail

seconds=60
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --target) targets+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
build="$repo/build/fuzz"
cc=${CC:-clang}
cxx=${CXX:-clang++}
if ! command -v "$cxx" > /dev/null || ! "$cxx" --version 2>/dev/null | grep -q clang; then
  echo "skipped: clang not found (libFuzzer needs clang++; set CXX)"
  exit 0
fi
start=$(date +%s)

# ---- build ----------------------------------------------------------------------------------------
if [ ! -f "$build/build.ninja" ] && [ ! -f "$build/Makefile" ]; then
  generator=()
  command -v ninja > /dev/null && generator=(-G Ninja)
  CC=$cc CXX=$cxx cmake -S "$repo" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Fuzz \
    -DLOWBIT_FUZZ=ON -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_BUILD_EXAMPLES=OFF -DLOWBIT_BUILD_BENCH=OFF \
    -DLOWBIT_CUDA=OFF -DLOWBIT_INSTALL=OFF -DLOWBIT_NATIVE=OFF -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON > /dev/null
fi
cmake --build "$build" --target lowbit_fuzz -j "${LOWBIT_FUZZ_BUILD_JOBS:-2}"
bin="$build/tests/fuzz"
build_done=$(date +%s)

[ ${#targets[@]} -gt 0 ] || mapfile -t targets < "$build/fuzz_targets.txt"
for t in "${targets[@]}"; do
  [ -x "$bin/fuzz_$t" ] || { echo "fuzz.sh: unknown target '$t' (known: $(tr '\n' ' ' < "$build/fuzz_targets.txt"))" >&2; exit 2; }
done

# ---- corpora --------------------------------------------------------------------------------------
python3 "$repo/tools/fuzz_corpus.py" "$build/corpus"

# Options of every run: a malloc over 1 GiB or 2 GiB resident is a finding (sizes come from file
# metadata); an input that takes 30 s is a finding (a hang).
limits=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=30)
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# ---- regressions ----------------------------------------------------------------------------------
regress_failed=0
for t in "${targets[@]}"; do
  dir="$repo/tests/fuzz/regressions/$t"
  [ -d "$dir" ] && [ -n "$(ls -A "$dir")" ] || continue
  if "$bin/fuzz_$t" "${limits[@]}" "$dir"/* > "$build/logs-regress-$t.log" 2>&1; then
    echo "regressions $t: $(ls "$dir" | wc -l) inputs pass"
  else
    echo "regressions $t: FAILED (log: build/fuzz/logs-regress-$t.log)"
    regress_failed=1
  fi
done

# ---- fuzzing --------------------------------------------------------------------------------------
mkdir -p "$build/logs" "$build/artifacts"
fuzz_one() {  # TARGET: fuzzes it for $seconds, log in build/fuzz/logs/TARGET.log
  local t=$1 dict=()
  [ -f "$repo/tests/fuzz/$t.dict" ] && dict=(-dict="$repo/tests/fuzz/$t.dict")
  mkdir -p "$build/artifacts/$t"
  local rc=0
  "$bin/fuzz_$t" "${limits[@]}" "${dict[@]}" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$t/" "$build/corpus/$t" > "$build/logs/$t.log" 2>&1 || rc=$?
  echo "$rc" > "$build/logs/$t.rc"
}
running=0
for t in "${targets[@]}"; do
  rm -f "$build/logs/$t.rc"
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait || true

# ---- summary --------------------------------------------------------------------------------------
findings=0
printf '\n%-18s %12s %9s %7s  %s\n' target executions exec/s corpus result
for t in "${targets[@]}"; do
  log="$build/logs/$t.log"
  rc=$(cat "$build/logs/$t.rc" 2>/dev/null || echo 1)
  execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  rate=$(grep -a -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  corpus=$(ls "$build/corpus/$t" | wc -l)
  if [ "$rc" = 0 ]; then
    result=ok
  else
    findings=$((findings + 1))
    artifact=$(grep -a -o 'Test unit written to .*' "$log" | tail -1 | sed 's/Test unit written to //' || true)
    result="FINDING ${artifact:-(no artifact, see build/fuzz/logs/$t.log)}"
  fi
  printf '%-18s %12s %9s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$corpus" "$result"
done
end=$(date +%s)
echo "wall time: $((end - start)) s (build $((build_done - start)) s), logs in build/fuzz/logs/"
if [ "$findings" -gt 0 ] || [ "$regress_failed" -ne 0 ]; then
  echo "fuzz.sh: $findings finding(s)$([ "$regress_failed" -ne 0 ] && echo ', regression inputs failing'); reproduce with build/fuzz/tests/fuzz/fuzz_<target> <file> (docs/fuzzing.md)"
  exit 1
fi
