#!/usr/bin/env bash
# CLI test `cli.user_format`: the `lowbit` tool built with the test-only format of tests/formats/ (one
# header, one registry line, LOWBIT_USER_FORMATS_HEADER) lists it, quantizes stories260K into it with rtn
# and gptq, and reads the file back, with no other edit anywhere; `qat` trains it (straight-through gradient).
# Usage: user_format.sh LOWBIT_TESTFMT_BINARY SHARED_DATA_DIR SCRATCH_DIR
set -euo pipefail
source "$(dirname "$0")/stories260k.sh"
"$lowbit" formats --json | tail -1 > formats.json
python3 -c "
import json
f = {e['format']: e for e in json.load(open('formats.json'))['formats']}
assert 'sign:64' in f, sorted(f)
print('sign:64', f['sign:64'])"
"$lowbit" quantize --model "$model" --tokenizer "$tok" --calib "$text" --nsamples 4 --seqlen 64 --quiet \
  --tensor-format 'feed_forward=gptq:sign:64' --tensor-format '.*=rtn:sign:64' --out sign.safetensors >/dev/null
"$lowbit" perplexity --model sign.safetensors --tokenizer "$tok" --text "$text" --limit-tokens 2048 --quiet --json \
  | tail -1 > ppl.json
python3 -c "import json,math; p=json.load(open('ppl.json'))['ppl']; assert math.isfinite(p), p; print('sign:64 ppl', p)"
# QAT of a user format: the straight-through gradient works, the gradient through the range (defined for
# uniform and NF3 grids only) is refused with a message naming the format.
"$lowbit" qat --model "$model" --tokenizer "$tok" --calib "$text" --nsamples 4 --seqlen 64 --format sign:64 --quiet \
  --qat-steps 2 --qat-seqlen 32 --qat-batch 2 --qat-eval-every 0 --out qat_sign.safetensors > /dev/null
expect_exit 1 "sign:64 has no closed-form grid scale" "$lowbit" qat --model "$model" --tokenizer "$tok" --calib "$text" \
  --nsamples 4 --seqlen 64 --format sign:64 --quiet --qat-steps 2 --qat-seqlen 32 --qat-gradient range --out qat_range.safetensors
[ ! -e qat_range.safetensors ] || fail "the refused run wrote its output"
echo "PASS"
