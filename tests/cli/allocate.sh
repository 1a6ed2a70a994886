#!/usr/bin/env bash
# CLI test `cli.allocate` (stories260K, ~1 min): `lowbit allocate` measures every linear's sensitivity to
# three GPTQ candidates (and the token table's to three RTN formats), writes a knapsack plan within a
# bits/weight budget, and `lowbit quantize --plan` executes it: the file records each linear's planned
# format and its stored bytes equal the plan's, tensor by tensor. The saved sensitivity serves the
# baselines, a second budget and the whole-model scope without measuring again (the same plan as the
# measuring run's); the knapsack's predicted KL is never
# above a baseline's at the same budget. Bad input: budgets outside [cheapest, dearest], a candidate
# whose groups are longer than a row, a plan or sensitivity file made for another model, --plan with
# --embedding-format when the plan chooses the table.
# Usage: allocate.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"

common=(--model "$model" --tokenizer "$tok" --quiet)
cands=gptq:uniform:2:32,gptq:uniform:3:32,gptq:uniform:4:32

echo "== allocate: measure, then a knapsack plan at 3 bits/weight"
"$lowbit" allocate "${common[@]}" --calib "$text" --nsamples 8 --seqlen 128 --kl-samples 2 --kl-seqlen 64 \
  --candidates "$cands" --table-candidates rtn:f32,rtn:uniform:8:row:sym,rtn:uniform:4:32 \
  --sensitivity-out sens.json --target-bpw 3.0 --out plan.json 2> allocate.log
grep -q "measured KL" allocate.log || { cat allocate.log >&2; fail "the whole plan's KL was not measured"; }

echo "== baselines and the whole-model scope from the saved sensitivity"
"$lowbit" allocate "${common[@]}" --sensitivity sens.json --target-bpw 3.0 --strategy uniform,block-adversary,role-depth \
  --out 'plan_{strategy}.json' 2>/dev/null
"$lowbit" allocate "${common[@]}" --sensitivity sens.json --target-bpw 3.0,3.2 --out 'sweep_{bpw}.json' 2>/dev/null
cmp <(python3 -c "import json; print(json.load(open('sweep_3.json'))['tensors'])") \
    <(python3 -c "import json; print(json.load(open('plan.json'))['tensors'])") || fail "a reread sensitivity plans differently"
[ -f sweep_3.2.json ] || fail "no plan for the second budget"
"$lowbit" allocate "${common[@]}" --sensitivity sens.json --scope model --target-bpw 4.0 --out plan_model.json 2>/dev/null
python3 - <<'PY' || fail "plans exceed their budget or the knapsack is not the best predicted"
import json
k = json.load(open("plan.json"))
assert len(k["tensors"]) == 35 and k["linear_bits_per_weight"] <= 3.0, k["linear_bits_per_weight"]
assert sum(t["bytes"] for t in k["tensors"]) <= k["budget_bytes"]
assert len({t["format"] for t in k["tensors"]}) >= 2, "a 3-bit budget between 2.5 and 4.5 should mix formats"
assert k["measured_kl"] > 0 and k["predicted_kl"] > 0
for s in ["uniform", "block-adversary", "role-depth"]:
    b = json.load(open(f"plan_{s}.json"))
    assert b["strategy"] == s and b["linear_bits_per_weight"] <= 3.0, (s, b["linear_bits_per_weight"])
    assert k["predicted_kl"] <= b["predicted_kl"] + 1e-12, (s, k["predicted_kl"], b["predicted_kl"])
    print(f"{s}: predicted KL {b['predicted_kl']:.4f} (knapsack {k['predicted_kl']:.4f})")
m = json.load(open("plan_model.json"))
assert m["model_bits_per_weight"] <= 4.0 and any(t["name"] == "tok_embeddings" for t in m["tensors"])
print("model scope: table", [t["format"] for t in m["tensors"] if t["name"] == "tok_embeddings"][0],
      "%.3f bits/weight overall" % m["model_bits_per_weight"])
PY

echo "== quantize --plan: formats and bytes on disk as planned"
"$lowbit" quantize "${common[@]}" --calib "$text" --nsamples 8 --seqlen 128 --plan plan.json --embedding-format f32 \
  --out mixed.safetensors --report-json report.json >/dev/null
"$lowbit" quantize "${common[@]}" --calib "$text" --nsamples 8 --seqlen 128 --plan plan_model.json \
  --out mixed_model.safetensors --report-json report_model.json >/dev/null
python3 - <<'PY' || fail "the quantized file does not hold the plan"
import json, struct
def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in h.items() if k != "__metadata__"}
for plan_file, out, report in [("plan.json", "mixed.safetensors", "report.json"),
                               ("plan_model.json", "mixed_model.safetensors", "report_model.json")]:
    plan = json.load(open(plan_file))
    r = json.load(open(report))
    sizes = tensors(out)
    linears = r["quantization_config"]["linears"]
    for t in plan["tensors"]:
        if t["name"] == "tok_embeddings":
            assert r["token_table_format"] == t["format"], (r["token_table_format"], t["format"])
            continue
        assert linears[t["name"]]["format"] == t["format"], (t["name"], linears[t["name"]], t["format"])
        on_disk = sum(v for k, v in sizes.items() if k.startswith(t["name"] + "."))
        assert on_disk == t["bytes"], (t["name"], on_disk, t["bytes"])
    assert abs(r["bits_per_weight"] - plan["linear_bits_per_weight"]) < 1e-9, (r["bits_per_weight"], plan["linear_bits_per_weight"])
    print(plan_file, ": every linear's format and bytes as planned,", "%.4f bits/weight" % r["bits_per_weight"])
PY

echo "== bad input"
expect_exit 1 "below the cheapest plan" "$lowbit" allocate "${common[@]}" --sensitivity sens.json --target-bpw 1.0 --out x.json
expect_exit 1 "above the dearest plan" "$lowbit" allocate "${common[@]}" --sensitivity sens.json --target-bpw 9 --out x.json
expect_exit 1 "need '{bpw}'" "$lowbit" allocate "${common[@]}" --sensitivity sens.json --target-bpw 3,3.5 --out x.json
expect_exit 1 "cannot apply to layers.0.attention.wq" "$lowbit" allocate "${common[@]}" --calib "$text" --nsamples 2 \
  --seqlen 64 --kl-samples 1 --kl-seqlen 32 --candidates gptq:uniform:2:128,gptq:uniform:4:32 --target-bpw 3 --out x.json
expect_exit 1 "a plan for" "$lowbit" quantize --model mixed.safetensors --tokenizer "$tok" --calib "$text" --nsamples 2 \
  --seqlen 64 --plan plan.json --out x.safetensors
expect_exit 1 "measured on" "$lowbit" allocate --model mixed.safetensors --tokenizer "$tok" --sensitivity sens.json \
  --target-bpw 3 --out x.json
expect_exit 1 "leave out --embedding-format" "$lowbit" quantize "${common[@]}" --calib "$text" --nsamples 2 --seqlen 64 \
  --plan plan_model.json --embedding-format f32 --out x.safetensors
[ ! -e x.json ] && [ ! -e x.safetensors ] || fail "a refused run left an output file"
echo "ok"
