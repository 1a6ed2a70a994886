# Sourced by the CLI tests: arguments LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR, the stories260K files,
# a skip (printed "[skipped]", which CTest reports as skipped) when shared/data lacks them, and a fresh
# scratch folder as the working directory; `fail MESSAGE` and `expect_exit CODE PATTERN CMD...` for the tests.
lowbit=$1 data=$2 work=$3
model=$data/models/stories260K.bin tok=$data/models/tok512.bin text=$data/text/tinystories_valid_prefix.txt
for f in "$model" "$tok" "$text"; do
  [ -f "$f" ] || { echo "[skipped] $f is missing (shared/data)"; exit 0; }
done
rm -rf "$work" && mkdir -p "$work" && cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_exit() {  # CODE PATTERN CMD...: runs CMD, expects exit CODE and PATTERN in its stderr
  local code=$1 pattern=$2; shift 2
  set +e; "$@" > out.txt 2> err.txt; local rc=$?; set -e
  [ "$rc" -eq "$code" ] || { cat err.txt >&2; fail "exit $rc (expected $code): $*"; }
  grep -q -- "$pattern" err.txt || { cat err.txt >&2; fail "no '$pattern' in the message of: $*"; }
}
