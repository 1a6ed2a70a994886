#!/usr/bin/env bash
# CLI test `cli.mixed_plan` (stories260K, ~30 s): one `lowbit quantize` run gives the linears of one model
# three formats (uniform, nf3, additive) through three methods (gptq, rtn, aqlm) with
# --tensor-format rules; the file records each linear's method and format, and perplexity, eval and
# generate read it back; a run killed with SIGKILL mid-calibration resumes from --run-dir and writes a
# byte-identical file; `lowbit formats --json` lists the three families from the registry.
# Usage: mixed_plan.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"

args=(--model "$model" --tokenizer "$tok" --calib "$text" --nsamples 8 --seqlen 128 --quiet
      --tensor-format 'feed_forward\.w2=gptq:uniform:4:64'
      --tensor-format 'attention\.w[qk]=rtn:nf3:64'
      --tensor-format '.*=aqlm:additive:1:8:8' --aqlm-finetune-epochs 1)

echo "== quantize with a mixed plan"
"$lowbit" quantize "${args[@]}" --out full.safetensors --run-dir run_full --report-json report.json >/dev/null
python3 - <<'PY' || fail "quantization_config does not record the plan"
import json
q = json.load(open("report.json"))["quantization_config"]
expect = {"feed_forward.w2": ("gptq", "uniform:4:64"), "attention.wq": ("rtn", "nf3:64"),
          "attention.wk": ("rtn", "nf3:64"), "attention.wv": ("aqlm", "additive:1:8:8"),
          "attention.wo": ("aqlm", "additive:1:8:8"), "feed_forward.w1": ("aqlm", "additive:1:8:8"),
          "feed_forward.w3": ("aqlm", "additive:1:8:8")}
assert len(q["linears"]) == 35, len(q["linears"])
for name, entry in q["linears"].items():
    role = name.split(".", 2)[2]
    assert (entry["method"], entry["format"]) == expect[role], (name, entry)
assert [r["method"] for r in q["plan"]] == ["gptq", "rtn", "aqlm"]
print("plan recorded for", len(q["linears"]), "linears")
PY

echo "== perplexity, eval and generate read the mixed file"
"$lowbit" perplexity --model full.safetensors --tokenizer "$tok" --text "$text" --limit-tokens 4096 --quiet --json \
  | tail -1 > ppl.json
python3 -c "import json,math; p=json.load(open('ppl.json'))['ppl']; assert math.isfinite(p) and 1 < p < 1e4, p; print('ppl', p)"
"$lowbit" eval --model full.safetensors --tokenizer "$tok" --tasks piqa --limit 8 --quiet --json | tail -1 > eval.json
python3 -c "import json; r=json.load(open('eval.json')); print('eval', json.dumps(r)[:120])"
out=$("$lowbit" generate --model full.safetensors --tokenizer "$tok" --temperature 0 --steps 24 2>/dev/null)
[ -n "$out" ] || fail "generate printed nothing"
echo "generate: $out"

echo "== SIGKILL mid-calibration, then resume"
"$lowbit" quantize "${args[@]}" --out killed.safetensors --run-dir run_killed >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 2000); do
  [ -f run_killed/block_001.safetensors ] && break
  kill -0 $pid 2>/dev/null || break
  sleep 0.01
done
kill -0 $pid 2>/dev/null || fail "the run finished before it could be killed"
kill -9 $pid
wait $pid 2>/dev/null || true
[ ! -f killed.safetensors ] || fail "a killed run left an output file"
"$lowbit" quantize "${args[@]}" --out killed.safetensors --run-dir run_killed --report-json resumed.json >/dev/null
python3 -c "
import json; r = json.load(open('resumed.json'))['calibration']['resumed_from_layer']
assert r >= 1, r; print('resumed at block', r)" || fail "the second run did not resume from the run directory"
cmp full.safetensors killed.safetensors || fail "resumed file differs from the uninterrupted one"
echo "resumed run is byte-identical"

echo "== lowbit formats --json"
"$lowbit" formats --json > formats.json
python3 - <<'PY' || fail "lowbit formats --json misses a family"
import json
f = {e["format"]: e for e in json.load(open("formats.json"))["formats"]}
for name in ("uniform:4:128", "nf3:64", "additive:2:8:8"):
    assert name in f, name
assert abs(f["uniform:4:128"]["bits_per_weight"] - 4.15625) < 1e-9, f["uniform:4:128"]
assert any("group-grid" in c for c in f["nf3:64"]["capabilities"])
assert any("trainable" in c for c in f["additive:2:8:8"]["capabilities"])
print(len(f), "formats listed")
PY
echo "PASS"
