#!/usr/bin/env bash
# CLI test `cli.qat` (stories260K, ~45 s): BitDistiller from the command line. `teacher-data` warns when
# the prompts come from the evaluation text, and a rerun keeps a finished file; `qat` refuses a bad
# teacher-data file (malformed, or made with another tokenizer), loss or gradient before any calibration, distills with every
# loss of the ablation and every gradient variant, and writes
# a file that `perplexity` and `generate` open, with the QAT record in its report. AQLM's end-to-end phase
# trains on the same teacher data (`--aqlm-e2e-teacher-data`).
# Usage: qat.sh LOWBIT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"
prompts=$data/text/tinystories_v2_valid_first100.txt
[ -f "$prompts" ] || { echo "[skipped] $prompts is missing (shared/data)"; exit 0; }

echo "== teacher data"
td=(teacher-data --model "$model" --tokenizer "$tok" --samples 30 --max-new-tokens 120 --prompt-chars 48
    --min-paragraph-chars 100 --quiet)
"$lowbit" "${td[@]}" --prompts "$text" --eval-text "$text" --out overlap.jsonl 2> err.txt
grep -q "occur verbatim in the evaluation text" err.txt || fail "no warning for prompts taken from the evaluation text"
"$lowbit" "${td[@]}" --prompts "$prompts:3" --prompts "$text:1" --eval-text "$text" --out teacher.jsonl 2> err.txt
grep -q "occur verbatim" err.txt || fail "no warning when one of the mixed sources is the evaluation text"
[ "$(wc -l < teacher.jsonl)" -eq 31 ] || fail "teacher.jsonl does not hold a header and 30 samples"
cp teacher.jsonl first.jsonl
"$lowbit" "${td[@]}" --prompts "$prompts:3" --prompts "$text:1" --out teacher.jsonl 2> err.txt
grep -q "30 samples kept from an earlier run, 0 generated" err.txt || { cat err.txt; fail "a finished file was not kept"; }
cmp -s teacher.jsonl first.jsonl || fail "the rerun changed a finished file"
expect_exit 1 "another run" "$lowbit" "${td[@]}" --prompts "$prompts" --out teacher.jsonl --temperature 1.0
expect_exit 2 "top-p" "$lowbit" "${td[@]}" --prompts "$prompts" --out x.jsonl --top-p 2
expect_exit 1 "im_start" "$lowbit" "${td[@]}" --prompts "$prompts" --out x.jsonl --chat  # no ChatML in tok512

echo "== qat fails fast"
common=(--model "$model" --tokenizer "$tok" --calib "$prompts" --nsamples 8 --seqlen 64 --format uniform:2:32
        --qat-steps 20 --qat-seqlen 64 --qat-lr 1e-3 --qat-eval-every 10 --quiet)
head -3 teacher.jsonl > bad.jsonl && echo '{"index": 2, "source": "x"}' >> bad.jsonl
start=$(date +%s%N)
expect_exit 1 "bad.jsonl:4" "$lowbit" qat "${common[@]}" --teacher-data bad.jsonl --out q.safetensors
sed '1s/"tokenizer":"[^"]*"/"tokenizer":"another tokenizer"/' teacher.jsonl > other_tok.jsonl
expect_exit 1 "tokenized by another tokenizer" "$lowbit" qat "${common[@]}" --teacher-data other_tok.jsonl --out q.safetensors
expect_exit 1 "unknown distillation loss" "$lowbit" qat "${common[@]}" --teacher-data teacher.jsonl --qat-loss mse --out q.safetensors
expect_exit 2 "qat-gradient" "$lowbit" qat "${common[@]}" --teacher-data teacher.jsonl --qat-gradient lsq --out q.safetensors
expect_exit 2 "excludes" "$lowbit" qat "${common[@]}" --teacher-data teacher.jsonl --qat-gradient range --qat-clip-ste --out q.safetensors
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$elapsed_ms" -lt 3000 ] || fail "the fail-fast checks took ${elapsed_ms} ms"
[ ! -e q.safetensors ] || fail "a failed run wrote its output"

echo "== qat with each loss"
for loss in cakld kl reverse_kl ce; do
  "$lowbit" qat "${common[@]}" --teacher-data teacher.jsonl --qat-loss $loss --out q_$loss.safetensors \
    --report-json r_$loss.json > /dev/null
done
for gradient in range clip; do
  "$lowbit" qat "${common[@]}" --teacher-data teacher.jsonl --qat-gradient $gradient --out q_$gradient.safetensors \
    --report-json r_$gradient.json > /dev/null
done
python3 - <<'PY' || fail "the QAT reports are wrong"
import json
for gradient in ("range", "clip"):
    q = json.load(open(f"r_{gradient}.json"))["qat"]
    assert q["options"]["gradient"] == gradient and q["options"]["loss"] == "cakld", q["options"]
    assert q["heldout_after"] < q["heldout_before"], (gradient, q["heldout_before"], q["heldout_after"])
    print("gradient", gradient, "held-out", round(q["heldout_before"], 4), "->", round(q["heldout_after"], 4))
for loss in ("cakld", "kl", "reverse_kl", "ce"):
    r = json.load(open(f"r_{loss}.json"))
    q = r["qat"]
    assert r["method"] == "bitdistiller" and r["format"] == "uniform:2:32", r["method"]
    assert q["steps"] == 20 and q["options"]["loss"] == loss, q
    assert q["heldout_after"] < q["heldout_before"], (loss, q["heldout_before"], q["heldout_after"])
    assert len(q["heldout_curve"]) == 3, q["heldout_curve"]
    beta = q["beta"]
    assert (0 < beta < 1) if loss == "cakld" else beta == (1.0 if loss == "reverse_kl" else 0.0), (loss, beta)
    print(loss, "beta", round(beta, 3), "held-out", round(q["heldout_before"], 4), "->", round(q["heldout_after"], 4))
PY
"$lowbit" perplexity --model q_cakld.safetensors --tokenizer "$tok" --text "$text" --limit-tokens 4096 --quiet > /dev/null
"$lowbit" generate --model q_cakld.safetensors --tokenizer "$tok" --prompt "Once upon a time" -n 20 --temperature 0 > gen.txt
[ "$(wc -c < gen.txt)" -gt 30 ] || fail "generate on the QAT file printed too little"

echo "== aqlm end-to-end fine-tuning on the same teacher data"
aq=(quantize --model "$model" --tokenizer "$tok" --calib "$prompts" --nsamples 8 --seqlen 64 --method aqlm
    --format additive:2:8:8 --aqlm-kmeans-iters 5 --aqlm-max-epochs 2 --aqlm-e2e-steps 20 --aqlm-e2e-lr 1e-4 --quiet)
expect_exit 1 "tokenized by another tokenizer" "$lowbit" "${aq[@]}" --aqlm-e2e-teacher-data other_tok.jsonl --out a.safetensors
expect_exit 1 "exclude each other" "$lowbit" "${aq[@]}" --aqlm-e2e-teacher-data teacher.jsonl --aqlm-e2e-nsamples 16 --out a.safetensors
"$lowbit" "${aq[@]}" --aqlm-e2e-teacher-data teacher.jsonl --run-dir aqlm.run --out a.safetensors --report-json ra.json > /dev/null
python3 - <<'PY' || fail "the AQLM end-to-end report on teacher data is wrong"
import json
e = json.load(open("ra.json"))["end_to_end"]
assert e["data"] == "teacher.jsonl" and e["steps"] == 20, e
assert e["heldout_tokens"] > 0 and e["train_tokens"] > 4 * e["heldout_tokens"], e
assert "teacher_data_fnv1a64" in e["options"], e["options"]
assert e["heldout_kl_after"] < e["heldout_kl_before"], (e["heldout_kl_before"], e["heldout_kl_after"])
print("aqlm e2e on teacher data: held-out KL", round(e["heldout_kl_before"], 4), "->", round(e["heldout_kl_after"], 4))
PY
ls aqlm.run/end_to_end-*.ckpt > /dev/null || fail "no end-to-end checkpoint in the run directory"
echo "cli.qat: ok"
