#!/usr/bin/env bash
# CLI test `cli.encoder` (stories260K, ~15 s): 1-bit activations from the command line. `train-encoder`
# refuses a bad encoder or output path before any work, trains diag encoders layer-wise and writes a file
# that `perplexity` and `generate` open with the same numbers; naive sign (`none`) is far worse than the
# trained encoders; encoders go on top of a quantized file's weights; a run killed in either phase (layer-wise
# or end to end) and rerun with the same --run-dir writes a byte-identical file.
# Usage: encoder.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"
train=$data/text/tinystories_v2_valid_first100.txt
[ -f "$train" ] || { echo "[skipped] $train is missing (shared/data)"; exit 0; }

opts=(--tokenizer "$tok" --train-text "$train" --nsamples 16 --seqlen 128 --steps 60 --lr 1e-2 --final-lr 1e-3
      --eval-text "$text" --eval-ctx 256 --eval-limit-tokens 16384 --quiet --json)
common=(--model "$model" "${opts[@]}")
echo "== fails fast"
expect_exit 1 "unknown encoder" "$lowbit" train-encoder "${common[@]}" --encoder dense --out e.safetensors
expect_exit 1 "lowrank:" "$lowbit" train-encoder "${common[@]}" --encoder lowrank:0 --out e.safetensors
expect_exit 1 "missing/" "$lowbit" train-encoder "${common[@]}" --encoder diag --out missing/e.safetensors
[ ! -e e.safetensors ] || fail "a failed run wrote its output"

echo "== none and diag"
"$lowbit" train-encoder "${common[@]}" --encoder none --out none.safetensors > none.json
"$lowbit" train-encoder "${common[@]}" --encoder diag --out diag.safetensors > diag.json
"$lowbit" perplexity --model diag.safetensors --tokenizer "$tok" --text "$text" --ctx 256 --limit-tokens 16384 --json \
  --quiet > diag_ppl.json
python3 - <<'PY' || fail "the encoder results are wrong"
import json
last = lambda f: json.loads(open(f).read().strip().splitlines()[-1])  # the JSON line after the report
none, diag, again = (last(f) for f in ("none.json", "diag.json", "diag_ppl.json"))
assert none["encoder_parameters"] == 0 and diag["encoder_parameters"] == 5 * 2 * (64 + 64 + 64 + 172), diag
assert abs(again["ppl"] - diag["perplexity"]) < 1e-6 * diag["perplexity"], (again["ppl"], diag["perplexity"])
assert diag["perplexity"] * 3 < none["perplexity"], (diag["perplexity"], none["perplexity"])
assert all(b < a for a, b in zip(diag["first_loss"], diag["last_loss"])), (diag["first_loss"], diag["last_loss"])
print("perplexity: none", round(none["perplexity"], 1), "diag", round(diag["perplexity"], 1))
PY
"$lowbit" generate --model diag.safetensors --tokenizer "$tok" --prompt "Once upon a time" -n 12 --temperature 0 > gen.txt
[ "$(wc -c < gen.txt)" -gt 16 ] || fail "generate on the encoded file printed too little"

echo "== on top of 4-bit weights"
"$lowbit" quantize --model "$model" --tokenizer "$tok" --calib "$train" --nsamples 4 --seqlen 64 --method rtn \
  --format uniform:4:32 --out w4.safetensors --quiet \
  > /dev/null
"$lowbit" train-encoder --model w4.safetensors "${opts[@]}" --encoder lowrank:4 --out w4_enc.safetensors > w4.json
python3 - <<'PY' || fail "the encoded 4-bit file is wrong"
import json, struct
with open("w4_enc.safetensors", "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
formats = json.loads(meta["lowbit.tensor_formats"])
assert formats["layers.0.attention.wq"]["format"] == "binary:heaviside:lowrank:4|uniform:4:32", formats["layers.0.attention.wq"]
assert formats["layers.0.attention.wk"]["format"] == "binary:heaviside:lowrank:4:shared|uniform:4:32"
print("w4 + lowrank:4 perplexity", round(json.loads(open("w4.json").read().strip().splitlines()[-1])["perplexity"], 1))
PY
echo "== the tokenizer is looked up through the chain of source files (encoded -> w4 -> stories260K)"
# stories260K keeps its tokenizer beside it under another name, so the chain ends at the original model's
# "no tokenizer" (before, the lookup stopped at w4.safetensors)
expect_exit 1 "stories260K.bin: no tokenizer" "$lowbit" perplexity --model w4_enc.safetensors --text "$text" --ctx 256 \
  --limit-tokens 512 --quiet

echo "== killed and resumed (layer-wise, then end to end) gives the same bytes"
resume=(--model "$model" --tokenizer "$tok" --train-text "$train" --nsamples 8 --seqlen 64 --steps 400 --lr 1e-2
        --final-lr 1e-3 --encoder lowrank:4 --e2e-steps 40 --e2e-batch 2 --e2e-seqlen 32 --e2e-nsamples 16
        --checkpoint-every 10 --threads 1 --quiet)
"$lowbit" train-encoder "${resume[@]}" --out straight.safetensors > /dev/null
# kill inside the layer-wise phase (5 x 400 steps), then inside the end-to-end phase
for phase in layerwise end_to_end; do
  "$lowbit" train-encoder "${resume[@]}" --run-dir run --out resumed.safetensors > /dev/null 2> resume.log &
  pid=$!
  for _ in $(seq 600); do ls run/$phase-*.ckpt > /dev/null 2>&1 && break; sleep 0.05; done
  kill -9 $pid 2> /dev/null || true
  wait $pid 2> /dev/null || true
  ls run/$phase-*.ckpt > /dev/null 2>&1 || fail "no $phase checkpoint appeared"
done
"$lowbit" train-encoder "${resume[@]}" --run-dir run --out resumed.safetensors > /dev/null 2> resume.log
grep -q "resumed at step" resume.log || fail "the rerun did not resume: $(cat resume.log)"
sed -n 's/.*\(resumed at step [0-9]*\).*/  \1/p' resume.log
python3 - <<'PY' || fail "the resumed file's tensors differ from the uninterrupted run's"
import json, struct
def tensors(path):  # the tensor table and bytes; the metadata differs in wall times
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        head.pop("__metadata__")
        return head, f.read()
a, b = tensors("straight.safetensors"), tensors("resumed.safetensors")
assert a[0] == b[0], "tensor tables differ"
assert a[1] == b[1], "tensor bytes differ"
print("  resumed file: same", len(a[0]), "tensors, byte-identical")
PY
echo "cli.encoder: ok"
