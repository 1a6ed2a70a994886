#!/usr/bin/env bash
# CLI test `cli.run_model` (stories260K, ~20 s): compress and run. Checks that fail fast do so before
# any calibration (an --out folder that is missing or a folder as --out: exit 1 in under a second;
# --ctx 0 and -5: usage error, exit 2); `lowbit quantize` stores the whole model in low bits (8-bit
# token table by default, reported over the linears and over the whole file); `generate` runs both
# families' files with the same greedy tokens at 1 and 2 threads; a wrong file is named for what it
# looks like; re-quantizing a quantized file says so; --chat refuses a vocabulary without ChatML
# tokens; `bench-decode` measures a quantized file against its source model.
# Usage: run_model.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"

common=(--model "$model" --tokenizer "$tok" --calib "$text" --nsamples 4 --seqlen 64 --quiet)
echo "== checks that fail fast"
start=$(date +%s%N)
expect_exit 1 "does not exist" "$lowbit" quantize "${common[@]}" --method rtn --out missing/q.safetensors
mkdir -p a_folder
expect_exit 1 "is a directory" "$lowbit" quantize "${common[@]}" --method rtn --out a_folder
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$elapsed_ms" -lt 2000 ] || fail "the two --out checks took ${elapsed_ms} ms"
expect_exit 2 "ctx" "$lowbit" perplexity --model "$model" --tokenizer "$tok" --text "$text" --ctx 0
expect_exit 2 "ctx" "$lowbit" perplexity --model "$model" --tokenizer "$tok" --text "$text" --ctx -5
expect_exit 2 "nsamples" "$lowbit" quantize "${common[@]}" --nsamples 0 --out q.safetensors
expect_exit 1 "looks like" "$lowbit" generate --model "$tok" --prompt-ids 1 -n 4
expect_exit 1 "unknown format" "$lowbit" quantize "${common[@]}" --embedding-format uniform:9:9 --out q.safetensors
"$lowbit" --help | grep -q "Exit codes" || fail "--help does not document the exit codes"

echo "== quantize with one format per family; the token table in 8 bits"
"$lowbit" quantize "${common[@]}" --method rtn --format uniform:4:32 --out q_uniform.safetensors \
  --report-json r_uniform.json > /dev/null
"$lowbit" quantize "${common[@]}" --method aqlm --format additive:1:8:8 --aqlm-finetune-epochs 0 \
  --out q_additive.safetensors --report-json r_additive.json > /dev/null
python3 - <<'PY' || fail "the reports do not give the whole-file size"
import json, os
for name in ("uniform", "additive"):
    r = json.load(open(f"r_{name}.json"))
    assert r["token_table_format"] == "uniform:8:row:sym" and r["head_format"] == "uniform:8:row:sym", r
    assert r["norm_format"] == "f32"
    size = os.path.getsize(f"q_{name}.safetensors")
    assert r["file_bytes"] == size and abs(r["file_mb"] - size / 1e6) < 1e-9
    # stories260K's table is a fifth of it; 8 bits instead of 32 keep the whole file small
    assert r["model_bits_per_weight"] < 9 and r["file_bits_per_weight"] < r["model_bits_per_weight"] + 2, r
    print(name, "linears", round(r["bits_per_weight"], 3), "all", round(r["model_bits_per_weight"], 3),
          "file", round(r["file_bits_per_weight"], 3))
PY

echo "== generate reads both families; greedy tokens do not depend on the thread count"
for f in q_uniform q_additive; do
  a=$("$lowbit" generate --model $f.safetensors --temperature 0 --prompt-ids 1 -n 24 --print-ids --threads 1 2>/dev/null)
  b=$("$lowbit" generate --model $f.safetensors --temperature 0 --prompt-ids 1 -n 24 --print-ids --threads 2 2>/dev/null)
  [ "$(echo "$a" | wc -w)" -eq 24 ] || fail "$f: expected 24 ids, got '$a'"
  [ "$a" = "$b" ] || fail "$f: 1 and 2 threads differ: '$a' vs '$b'"
  story=$("$lowbit" generate --model $f.safetensors --tokenizer "$tok" --temperature 0 --prompt "Once upon a time" \
    -n 16 2>/dev/null)
  [[ $story == "Once upon a time"* ]] || fail "$f: the prompt is not echoed: '$story'"
  echo "$f: $story"
done
expect_exit 1 "im_start" "$lowbit" generate --model q_uniform.safetensors --tokenizer "$tok" --chat --prompt "hi" -n 4

echo "== re-quantizing a quantized file says so"
"$lowbit" quantize --model q_uniform.safetensors --tokenizer "$tok" --calib "$text" --nsamples 4 --seqlen 64 --quiet --method rtn \
  --format uniform:4:32 --out requant.safetensors > /dev/null 2> requant.err
grep -q "is a lowbit quantized file" requant.err || fail "no re-quantization note"

echo "== bench-decode against the source model"
"$lowbit" bench-decode --model q_uniform.safetensors --prompt-tokens 8 --tokens 8 --repeats 1 --quiet --json \
  | tail -1 > bench.json
python3 - <<'PY' || fail "bench-decode JSON"
import json
b = json.load(open("bench.json"))
for key in ("model", "baseline"):
    assert b[key]["decode_tok_s"] > 0 and b[key]["decode_tok_cpu_s"] > 0 and b[key]["prefill_tok_s"] > 0, b
assert b["baseline"]["model"].endswith("stories260K.bin"), b["baseline"]["model"]
print("decode tok/s", round(b["model"]["decode_tok_s"]), "baseline", round(b["baseline"]["decode_tok_s"]))
PY
echo "cli.run_model: ok"
