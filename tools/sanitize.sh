#!/usr/bin/env bash
# ASan+UBSan run of lowbit's tests (preset `sanitize`, build/sanitize): any memory error, leak or
# undefined behaviour aborts the test that hit it.
#
#   tools/sanitize.sh              the tests that handle untrusted bytes: io, tokenizer, format, kernels,
#                                  core, eval (what CI runs, instead of building them in its release build)
#   tools/sanitize.sh --all        every test (the whole suite; an hour or more on 2 cores)
#   tools/sanitize.sh -R REGEX     only the CTest tests matching REGEX (after the build)
#   tools/sanitize.sh --selection  prints the regex of the test files the default run builds
set -euo pipefail
cd "$(dirname "$0")/.."
selection='^test_(io|tokenizer|format|formats|additive_format|kernels|core|eval)(_|$)'
only=$selection
ctest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --all) only= ;;
    --selection) echo "$selection"; exit 0 ;;
    -R) ctest_args+=(-R "$2"); shift ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "sanitize.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
start=$(date +%s)
cmake --preset sanitize -DLOWBIT_TEST_ONLY="$only" > /dev/null
cmake --build --preset sanitize
built=$(date +%s)
ctest --preset sanitize "${ctest_args[@]}"
echo "sanitize: build $((built - start)) s, tests $(($(date +%s) - built)) s"
